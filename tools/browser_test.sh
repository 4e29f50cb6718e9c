#!/usr/bin/env bash
# make browser-test: make sure Debian's Chromium is there, then run tools/browser_check.py on the built site.
#
# Usage: bash tools/browser_test.sh PYTHON [SITE]     (make browser-test: .venv/bin/python _build/html)
#
# Without /usr/bin/chromium, as root with apt-get (CI, the book's machines), installs Debian's chromium
# (and a CJK font, so that the screenshots show the Chinese text). Where it cannot, prints a loud
# "browser test SKIPPED" and exits 0: the rest of make test still runs, and the skip is never silent.
# Playwright comes from requirements/lock.txt; it never downloads a browser here (no `playwright install`).
set -u
PY=${1:-.venv/bin/python}
SITE=${2:-_build/html}
CHROMIUM=${BROWSER_CHECK_CHROMIUM:-/usr/bin/chromium}

skip() {
    echo "################################################################################" >&2
    echo "browser test SKIPPED: chromium not available ($1)" >&2
    echo "################################################################################" >&2
    exit 0
}

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "$@"
}

if [ ! -x "$CHROMIUM" ]; then
    if [ "$CHROMIUM" != /usr/bin/chromium ]; then
        skip "BROWSER_CHECK_CHROMIUM=$CHROMIUM is not an executable"
    elif can_apt; then
        echo "browser test: installing Debian's chromium (apt-get update && apt-get install chromium)"
        apt-get update -qq -o DPkg::Lock::Timeout=300 || skip "apt-get update failed"
        apt_install chromium fonts-wqy-microhei || apt_install chromium || skip "apt-get install chromium failed"
    elif [ "$(id -u)" != 0 ]; then
        skip "no $CHROMIUM, and not root to apt-get install chromium; install it, or run as root"
    else
        skip "no $CHROMIUM, and no apt-get to install it"
    fi
    [ -x "$CHROMIUM" ] || skip "apt-get install chromium gave no $CHROMIUM"
fi

if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list :lang=zh 2>/dev/null)" ] && can_apt; then
    echo "browser test: installing a CJK font for the screenshots (fonts-wqy-microhei)"
    apt_install fonts-wqy-microhei >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt_install fonts-wqy-microhei >/dev/null 2>&1; } \
        || echo "browser test: no CJK font (the screenshots show boxes for Chinese; the checks do not depend on it)"
fi

exec "$PY" tools/browser_check.py "$SITE"
