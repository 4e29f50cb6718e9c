"""Browser test of the built site (issue 13): every page in headless Chromium, as a reader sees it.

Usage: python tools/browser_check.py [_build/html] [--screenshots DIR] [--chromium /usr/bin/chromium]

Serves the built site on 127.0.0.1 (a free port), drives Debian's Chromium through Playwright
(never a browser that Playwright downloads) and checks, on every page of the book:

- console: no console message of type error, no uncaught exception;
- request: no request to another origin than the local server (each one is aborted, so the run never
  waits on the network, and reported), no local request that fails or answers an HTTP error;
- image: every ``img`` loaded (``complete`` and ``naturalWidth > 0``);
- math: where the page has math, MathJax ran and every math element holds its ``mjx-container``, MathJax
  shows no TeX error (``mjx-merror``), and no raw TeX (``\\frac``, ``\\(``, ``$$``, ``\\begin{``...) is left in
  the text outside ``pre, code``;
- solution: every solution is hidden until its toggle is clicked, and shown after;
- link: every link to this site resolves to a file of the build, and its ``#fragment`` to an id (or name);

then, once for the site:

- nav: at 390 px (phone) and 900 px (tablet), tapping the menu button shows the table of contents and
  tapping a chapter in it opens that chapter;
- search: search.html?q=TERM lists every page whose main text contains TERM, for 量化, 整数量化, 知识蒸馏
  and "zero point" (which must find the glossary and chapter 3's pages).

A viewport-sized screenshot (not full page: api.html alone is tens of thousands of pixels high) of every
page at 1280 px and 390 px goes to _build/screenshots/{1280,390}/. Prints a report per page and exits 1 on
any problem, 2 when it cannot run (no build, no Chromium, no Playwright).

The check functions take a Playwright page (or, for links, plain strings) and return a list of problems,
each a string starting with its check's name in brackets ("[math] ..."), so that tests can feed them a
deliberately broken site (tests/test_browser_checker.py).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import functools
import http.server
import os
import re
import sys
import threading
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SITE = ROOT / "_build" / "html"
CHROMIUM = os.environ.get("BROWSER_CHECK_CHROMIUM", "/usr/bin/chromium")   # Debian's package chromium
CHROMIUM_ARGS = [
    "--no-sandbox",                      # the tests run as root
    "--disable-background-networking",   # no update, safe-browsing or metrics traffic
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--disable-dev-shm-usage",
]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TABLET = {"width": 900, "height": 1200}

# Generated pages that are not documents: Sphinx does not put them in its search index, so they are left
# out of the pages that a search is expected to find (every other check runs on them like on any page).
NOT_INDEXED = {"genindex.html", "search.html", "py-modindex.html"}

# term -> pages (glob patterns) that its search must find, beyond every page whose main text contains it.
SEARCH_TERMS = {
    "量化": [],
    "整数量化": [],
    "知识蒸馏": [],
    "zero point": ["glossary.html", "chapters/03_*"],
}

# Raw TeX left in the text after MathJax ran (outside pre and code).
RAW_TEX = [
    (re.compile(r"\\frac"), r"\frac"),
    (re.compile(r"\\begin\{"), r"\begin{"),
    (re.compile(r"\\\(|\\\)"), r"\( or \)"),
    (re.compile(r"\\\[|\\\]"), r"\[ or \]"),
    (re.compile(r"\$\$"), "$$"),
    (re.compile(r"\$(?!\d)[^$\s][^$\n]{0,200}?\$"), "$...$"),   # dollars around a formula, left raw (not "$5")
    (re.compile(r"\$(?=[A-Za-z\\{])"), "$ before a formula"),  # an unbalanced one ("$x_1 + y"; "$5" is money)
    (re.compile(r"\\(?:mathrm|mathbf|text|operatorname|sum|prod|cdot|times|left|right|alpha|beta|Delta|"
                r"lfloor|rfloor|lceil|rceil|approx|le|ge|in|max|min|log|sqrt|hat|tilde|bar)(?![A-Za-z])"),
     "a TeX command"),
]


def _p(check: str, message: str) -> str:
    return f"[{check}] {message}"


# ---------------------------------------------------------------------------------------------------
# The site on disk: pages, ids and links (pure Python, no browser)
# ---------------------------------------------------------------------------------------------------

def html_pages(site: Path) -> list[str]:
    """The pages of a built site, as paths relative to it ("index.html", "chapters/01_background.html").

    Theme templates copied to _static (webpack-macros.html, ...) are not pages.
    """
    site = Path(site)
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not p.relative_to(site).as_posix().startswith("_static/"))


class _PageParser(HTMLParser):
    """Ids and names (anchors), hrefs of links, and the text of the main content of one HTML page."""

    _SKIP = {"script", "style", "template"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.main_parts: list[str] = []
        self.body_parts: list[str] = []
        self._main_tag = None        # "article" (sphinx-book-theme's article.bd-article) or "main"
        self._main_depth = 0
        self._skip_depth = 0
        self._in_body = False
        self.found_article = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        if tag == "a" and a.get("href") is not None:
            self.hrefs.append(a["href"])
        if tag == "body":
            self._in_body = True
        if tag in self._SKIP:
            self._skip_depth += 1
        if self._main_tag is None:
            classes = (a.get("class") or "").split()
            if tag == "article" and "bd-article" in classes:
                self._main_tag, self._main_depth, self.found_article = "article", 1, True
        elif tag == self._main_tag and self._main_depth:
            self._main_depth += 1

    def handle_endtag(self, tag):
        if tag in self._SKIP and self._skip_depth:
            self._skip_depth -= 1
        if tag == self._main_tag and self._main_depth:
            self._main_depth -= 1

    def handle_data(self, data):
        if self._skip_depth:
            return
        if self._main_depth:
            self.main_parts.append(data)
        if self._in_body:
            self.body_parts.append(data)

    @property
    def main_text(self) -> str:
        parts = self.main_parts if self.found_article else self.body_parts
        return " ".join(" ".join(parts).split())


class SiteIndex:
    """Parsed pages of a built site, cached per file: anchors, hrefs and main text."""

    def __init__(self, site: Path):
        self.site = Path(site).resolve()
        self._cache: dict[str, _PageParser | None] = {}

    def parsed(self, rel: str) -> _PageParser | None:
        if rel not in self._cache:
            path = self.site / rel
            if not path.is_file():
                self._cache[rel] = None
            else:
                parser = _PageParser()
                parser.feed(path.read_text(encoding="utf-8", errors="replace"))
                parser.close()
                self._cache[rel] = parser
        return self._cache[rel]

    def ids(self, rel: str) -> set[str]:
        parsed = self.parsed(rel)
        return parsed.ids if parsed else set()

    def main_text(self, rel: str) -> str:
        parsed = self.parsed(rel)
        return parsed.main_text if parsed else ""

    def static_hrefs(self, rel: str) -> list[str]:
        parsed = self.parsed(rel)
        return list(parsed.hrefs) if parsed else []

    def pages_containing(self, term: str, pages: list[str]) -> list[str]:
        """The pages whose main text contains term (case-insensitive, whitespace collapsed)."""
        t = " ".join(term.lower().split())
        return [p for p in pages if t in self.main_text(p).lower()]

    def resolve(self, page: str, href: str) -> tuple[str, str] | None:
        """(target file relative to the site, fragment) of a link on page, or None for an external link.

        A link is internal when it is relative (or absolute on the same host); "mailto:", "tel:",
        "javascript:" and "data:" links, and links with a scheme or host of their own, are external.
        """
        href = href.strip()
        parts = urlsplit(href)
        if parts.scheme or parts.netloc:
            return None
        fake = "http://site.invalid/"
        url = urlsplit(urljoin(fake + page, href))
        path = unquote(url.path).lstrip("/")
        if path == "" or path.endswith("/"):
            path += "index.html"
        return path, unquote(url.fragment)

    def check_links(self, page: str, hrefs: list[str]) -> list[str]:
        """Problems with the internal links of page: missing target files and anchors (deduplicated)."""
        problems, seen = [], set()
        for href in hrefs:
            if href in seen:
                continue
            seen.add(href)
            if href.strip() in ("", "#"):
                continue                       # a button's placeholder: no target
            target = self.resolve(page, href)
            if target is None:
                continue                       # external (no internet here) or mailto:
            rel, frag = target
            path = self.site / rel
            if ".." in Path(rel).parts or not path.resolve().is_relative_to(self.site):
                problems.append(_p("link", f"{href!r} points outside the site"))
                continue
            if path.is_dir():
                path, rel = path / "index.html", rel.rstrip("/") + "/index.html"
            if not path.is_file():
                problems.append(_p("link", f"{href!r}: no file {rel}"))
                continue
            if frag and rel.endswith(".html") and frag not in self.ids(rel):
                problems.append(_p("link", f"{href!r}: no id or name {frag!r} in {rel}"))
        return problems


# ---------------------------------------------------------------------------------------------------
# The local server
# ---------------------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):   # noqa: A002 (the base class's name)
        pass


@contextlib.contextmanager
def serve(site: Path):
    """Serve site on 127.0.0.1 at a free port, in a thread; yields the base URL ("http://127.0.0.1:N/")."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------------------------------------------
# The browser
# ---------------------------------------------------------------------------------------------------

def launch(playwright, executable: str = CHROMIUM):
    """Debian's Chromium, headless; Playwright's own browser downloads are never used."""
    return playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)


def new_context(browser, base_url: str, viewport: dict, touch: bool = False):
    """A context whose requests to anything but base_url's origin are aborted (and recorded by PageWatch)."""
    context = browser.new_context(viewport=viewport, has_touch=touch, is_mobile=touch,
                                  device_scale_factor=1, service_workers="block")
    origin = base_url.rstrip("/")

    def route(r):
        url = r.request.url
        if url == origin or url.startswith(origin + "/"):
            r.continue_()
        else:
            r.abort("blockedbyclient")

    context.route("**/*", route)
    # Every page as on a first visit (no theme mode or search terms stored by the pages checked before it),
    # so that what a page reports does not depend on the order of the pages.
    context.add_init_script("try { localStorage.clear(); sessionStorage.clear(); } catch (e) {}")
    context.set_default_timeout(15_000)
    context.set_default_navigation_timeout(30_000)
    return context


def _is_local(url: str, base_url: str) -> bool:
    if url.startswith(("data:", "blob:", "about:")):
        return True
    origin = base_url.rstrip("/")
    return url == origin or url.startswith(origin + "/")


class PageWatch:
    """Console errors, uncaught exceptions and bad requests of a page, collected until reset()."""

    def __init__(self, page, base_url: str):
        self.base_url = base_url
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", self._pageerror)
        page.on("request", self._request)
        page.on("requestfailed", self._requestfailed)
        page.on("response", self._response)

    def reset(self):
        self.problems = []

    def take(self) -> list[str]:
        out, self.problems = list(dict.fromkeys(self.problems)), []
        return out

    def _console(self, msg):
        if msg.type == "error":
            where = msg.location.get("url", "") if msg.location else ""
            where = where.replace(self.base_url, "/") if where else ""
            at = f" (at {where})" if where else ""
            self.problems.append(_p("console", f"console error: {msg.text[:300]}{at}"))

    def _pageerror(self, err):
        self.problems.append(_p("console", f"uncaught exception: {str(err)[:300]}"))

    def _request(self, request):
        if not _is_local(request.url, self.base_url):
            self.problems.append(_p("request", f"request to another host: {request.url[:200]} (blocked)"))

    def _requestfailed(self, request):
        # net::ERR_ABORTED: cancelled by the browser, as when the next page is opened before a late request ends.
        if request.failure and "ERR_ABORTED" in request.failure:
            return
        if _is_local(request.url, self.base_url) and not request.url.startswith(("data:", "blob:", "about:")):
            self.problems.append(_p("request", f"local request failed: {request.url.replace(self.base_url, '/')}"
                                               f" ({request.failure})"))

    def _response(self, response):
        if _is_local(response.url, self.base_url) and response.status >= 400:
            url = response.url.replace(self.base_url, "/")
            self.problems.append(_p("request", f"HTTP {response.status} for {url}"))


def goto(page, url: str) -> list[str]:
    """Open url and wait for its load event; a failed navigation is a problem."""
    try:
        response = page.goto(url, wait_until="load")
    except Exception as exc:   # noqa: BLE001 (Playwright's errors: report them, go on with the next page)
        return [_p("request", f"could not open {url}: {str(exc).splitlines()[0]}")]
    if response is not None and response.status >= 400:
        return [_p("request", f"HTTP {response.status} for the page itself")]
    return []


_IMAGES_JS = """async (timeoutMs) => {
  const imgs = [...document.images];
  for (const img of imgs) if (img.loading === "lazy") img.loading = "eager";
  const settle = (img) => img.complete ? Promise.resolve()
    : new Promise((ok) => {
        img.addEventListener("load", ok, {once: true});
        img.addEventListener("error", ok, {once: true});
      });
  await Promise.race([Promise.all(imgs.map(settle)), new Promise((ok) => setTimeout(ok, timeoutMs))]);
  return imgs.filter((img) => !(img.complete && img.naturalWidth > 0))
             .map((img) => img.getAttribute("src") || img.currentSrc || "(no src)");
}"""


def check_images(page, timeout_ms: int = 10_000) -> list[str]:
    """Every img element loaded (complete, naturalWidth > 0)."""
    broken = page.evaluate(_IMAGES_JS, timeout_ms)
    return [_p("image", f"image not loaded: {src}") for src in broken]


_MATHJAX_JS = """async (timeoutMs) => {
  const mj = window.MathJax;
  if (!(mj && mj.startup && mj.startup.promise)) return "absent";
  const timer = new Promise((ok) => setTimeout(() => ok("timeout"), timeoutMs));
  return await Promise.race([mj.startup.promise.then(() => "done", (e) => "failed: " + e), timer]);
}"""

# Visible text outside pre/code (and outside MathJax's own output), as innerText would show it.
_TEXT_JS = """() => {
  const skip = "pre, code, script, style, textarea, mjx-container, mjx-assistive-mml, .MathJax_Preview";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const out = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip)) continue;
    if (!el.checkVisibility({visibilityProperty: true})) continue;
    out.push(n.nodeValue);
  }
  return out.join("");
}"""

_MATH_ELEMENTS_JS = """() => {
  const els = [...document.querySelectorAll("span.math, div.math")];
  const bare = els.filter((e) => !e.querySelector("mjx-container"));
  const errors = [...document.querySelectorAll("mjx-merror")];
  return {total: els.length, containers: document.querySelectorAll("mjx-container").length,
          bare: bare.length, first: bare.length ? bare[0].textContent.trim().slice(0, 80) : "",
          errors: errors.length,
          firstError: errors.length
            ? (errors[0].getAttribute("data-mjx-error") || errors[0].textContent).slice(0, 120) : ""};
}"""


def wait_for_mathjax(page, timeout_ms: int = 20_000) -> str:
    """Wait for MathJax.startup.promise if MathJax is on the page: "done", "absent", "timeout" or "failed: ..."."""
    return page.evaluate(_MATHJAX_JS, timeout_ms)


def raw_tex(text: str) -> list[str]:
    """The raw TeX fragments of RAW_TEX found in text, each with a little context."""
    found = []
    for pattern, name in RAW_TEX:
        m = pattern.search(text)
        if m:
            a, b = max(0, m.start() - 30), min(len(text), m.end() + 30)
            found.append(f"{name}: ...{' '.join(text[a:b].split())}...")
    return found


def check_math(page, mathjax_state: str | None = None) -> list[str]:
    """Math typeset: MathJax output for every math element of the page and no raw TeX in its visible text."""
    state = mathjax_state if mathjax_state is not None else wait_for_mathjax(page)
    problems = []
    m = page.evaluate(_MATH_ELEMENTS_JS)
    if m["total"]:
        if state != "done":
            problems.append(_p("math", f"the page has {m['total']} math elements but MathJax {state}"
                               if state != "absent" else
                               f"the page has {m['total']} math elements but MathJax did not load"))
        if m["bare"]:
            problems.append(_p("math", f"{m['bare']} of {m['total']} math elements not typeset "
                               f"(no mjx-container), first: {m['first']!r}"))
    if m["errors"]:
        problems.append(_p("math", f"{m['errors']} TeX error(s) in MathJax's output, first: {m['firstError']!r}"))
    for hit in raw_tex(page.evaluate(_TEXT_JS)):
        problems.append(_p("math", f"raw TeX in the text: {hit}"))
    return problems


_SOLUTIONS_JS = """() => [...document.querySelectorAll(".solution")].map((s, i) => ({
  i, id: s.id || "", title: (s.querySelector(".admonition-title, summary") || s).textContent.trim().slice(0, 60)}))"""

# Is any part of solution i's body (everything but its title) visible?
_SOLUTION_SHOWN_JS = """(i) => {
  const s = document.querySelectorAll(".solution")[i];
  const body = [...s.children].filter((c) => !c.matches(".admonition-title, summary, button.toggle-button"));
  return body.some((c) => {
    const r = c.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && c.checkVisibility({visibilityProperty: true, opacityProperty: true});
  });
}"""


def check_solutions(page, timeout_ms: int = 3_000) -> list[str]:
    """Every solution hidden until its toggle is clicked, visible after (leaves the solutions open)."""
    problems = []
    solutions = page.evaluate(_SOLUTIONS_JS)
    for s in solutions:
        name = f"solution {s['i'] + 1} ({s['id'] or s['title']!r})"
        if page.evaluate(_SOLUTION_SHOWN_JS, s["i"]):
            problems.append(_p("solution", f"{name} is visible before its toggle is clicked"))
            continue
        sol = page.locator(".solution").nth(s["i"])
        toggle = sol.locator("button.toggle-button, summary, .admonition-title")
        if toggle.count() == 0:
            problems.append(_p("solution", f"{name} has no toggle"))
            continue
        try:
            toggle.first.click(timeout=timeout_ms)
            page.wait_for_function(_SOLUTION_SHOWN_JS, arg=s["i"], timeout=timeout_ms)
        except Exception as exc:   # noqa: BLE001
            problems.append(_p("solution", f"{name} still hidden after clicking its toggle "
                               f"({str(exc).splitlines()[0][:120]})"))
    return problems


def page_hrefs(page) -> list[str]:
    """The href attribute of every a[href] of the page as it is now (links added by scripts included)."""
    return page.evaluate("() => [...document.querySelectorAll('a[href]')].map((a) => a.getAttribute('href'))")


def check_page(page, watch: PageWatch, base_url: str, rel: str, site: SiteIndex,
               screenshot: Path | None = None) -> list[str]:
    """Every per-page check on the page at base_url + rel; saves a viewport screenshot if asked."""
    watch.reset()
    problems = goto(page, base_url + rel)
    if problems:
        return watch.take() + problems
    problems += check_images(page)
    state = wait_for_mathjax(page)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    problems += check_solutions(page)       # opens the solutions: their text is then checked for raw TeX
    problems += check_math(page, state)
    problems += site.check_links(rel, page_hrefs(page))
    page.wait_for_timeout(50)               # late console messages and requests
    return watch.take() + problems


# ---------------------------------------------------------------------------------------------------
# Navigation on a phone and a tablet
# ---------------------------------------------------------------------------------------------------

# Links of the primary sidebar (table of contents) that a tap at their centre would reach.
_TOC_LINKS_JS = """() => {
  const sel = [".bd-sidebar-primary", "#pst-primary-sidebar", "#pst-primary-sidebar-modal", "nav.bd-docs-nav"]
    .map((s) => s + " a[href]").join(", ");
  const out = [];
  for (const a of new Set(document.querySelectorAll(sel))) {
    const r = a.getBoundingClientRect();
    if (r.width <= 0 || r.height <= 0) continue;
    const x = r.left + Math.min(r.width / 2, 20), y = r.top + r.height / 2;
    if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight) continue;
    const hit = document.elementFromPoint(x, y);
    if (hit && (hit === a || a.contains(hit))) out.push(a.getAttribute("href"));
  }
  return out;
}"""


def _chapter_link(links: list[str], current: str) -> str | None:
    """The first link to a chapter (a page under chapters/) other than current, else to another page."""
    def target(href):
        return urlsplit(urljoin("http://site.invalid/" + current, href)).path.lstrip("/")

    pages = [h for h in links if target(h).endswith(".html") and target(h) != current
             and target(h).rsplit("/", 1)[-1] not in NOT_INDEXED]
    chapters = [h for h in pages if target(h).startswith("chapters/")]
    return (chapters or pages or [None])[0]


def check_navigation(page, base_url: str, start: str = "index.html", hops: int = 2) -> list[str]:
    """Tap the menu button, check the table of contents shows, tap a chapter in it, check it opens; twice."""
    width = page.viewport_size["width"]
    problems = goto(page, base_url + start)
    if problems:
        return problems
    current = start
    for _ in range(hops):
        where = f"at {width}px on {current}"
        before = page.evaluate(_TOC_LINKS_JS)
        if before:
            problems.append(_p("nav", f"{where}: the table of contents is shown before the menu is tapped"))
            links = before
        else:
            buttons = page.locator("button.primary-toggle, .sidebar-toggle.primary-toggle, label.sidebar-toggle")
            button = buttons.filter(visible=True)
            if button.count() == 0:
                problems.append(_p("nav", f"{where}: no visible menu button ({buttons.count()} hidden)"))
                return problems
            button.first.tap()
            links = []
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not links:
                page.wait_for_timeout(100)
                links = page.evaluate(_TOC_LINKS_JS)
            if not links:
                problems.append(_p("nav", f"{where}: tapping the menu button does not show the table of contents"))
                return problems
        href = _chapter_link(links, current)
        if href is None:
            problems.append(_p("nav", f"{where}: the table of contents shows no chapter link ({links[:5]})"))
            return problems
        link = page.locator(f"a[href={_css_string(href)}]").filter(visible=True).first
        target = urlsplit(urljoin(page.url, href)).path
        try:
            with page.expect_navigation(wait_until="load", timeout=10_000):
                link.tap()
        except Exception as exc:   # noqa: BLE001
            problems.append(_p("nav", f"{where}: tapping {href!r} in the table of contents does not navigate "
                               f"({str(exc).splitlines()[0][:120]})"))
            return problems
        if urlsplit(page.url).path != target:
            problems.append(_p("nav", f"{where}: tapping {href!r} opened {page.url}, not {target}"))
            return problems
        current = target.lstrip("/")
    return problems


def _css_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------------

_SEARCH_DONE_JS = """() => {
  const s = document.querySelector("#search-results .search-summary");
  return !!(s && s.textContent.trim());
}"""

_SEARCH_RESULTS_JS = """() => [...document.querySelectorAll("#search-results ul.search > li")]
  .map((li) => li.querySelector("a[href]")).filter(Boolean).map((a) => a.href)"""


def search_results(page, base_url: str, term: str, timeout_ms: int = 30_000) -> list[str] | None:
    """Pages (relative to the site) that the site's search lists for term, or None if it never finishes."""
    if goto(page, base_url + "search.html?q=" + quote(term)):
        return None
    try:
        page.wait_for_function(_SEARCH_DONE_JS, timeout=timeout_ms)
    except Exception:   # noqa: BLE001
        return None
    found = []
    for url in page.evaluate(_SEARCH_RESULTS_JS):
        path = unquote(urlsplit(url).path)
        base_path = urlsplit(base_url).path
        found.append(path[len(base_path):] if path.startswith(base_path) else path.lstrip("/"))
    return found


def check_search(page, base_url: str, term: str, expected: list[str], required: list[str] = ()) -> list[str]:
    """search.html?q=term lists every page of expected and, for each glob of required, a page matching it."""
    found = search_results(page, base_url, term)
    if found is None:
        return [_p("search", f"search for {term!r} did not finish (no result summary in 30 s)")]
    problems = []
    missing = [p for p in expected if p not in found]
    if missing:
        problems.append(_p("search", f"search for {term!r} lists {len(found)} pages and misses {len(missing)} "
                           f"of the {len(expected)} pages containing it: {', '.join(missing)}"))
    for pattern in required:
        if not any(fnmatch.fnmatch(p, pattern) for p in found):
            problems.append(_p("search", f"search for {term!r} does not find {pattern}"))
    return problems


# ---------------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------------

def _shot_name(rel: str) -> str:
    return rel.removesuffix(".html").replace("/", "__") + ".png"


def run(site: Path, screenshots: Path | None, executable: str = CHROMIUM, out=sys.stdout,
        pages: list[str] | None = None, search_terms: dict | None = SEARCH_TERMS, navigation: bool = True,
        browser=None) -> dict:
    """Run every check on the site; returns {page or "(site) what": [problems]} and prints the report.

    Launches Chromium (executable) unless given a browser (Playwright allows one sync_playwright() at a time).
    """
    if browser is None:
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            browser = launch(pw, executable)
            try:
                return run(site, screenshots, executable, out, pages, search_terms, navigation, browser)
            finally:
                browser.close()

    site = Path(site).resolve()
    index = SiteIndex(site)
    pages = html_pages(site) if pages is None else pages
    report: dict[str, list[str]] = {}

    def say(*a):
        print(*a, file=out, flush=True)

    with serve(site) as base_url:
        t0 = time.monotonic()
        desktop = new_context(browser, base_url, DESKTOP)
        page = desktop.new_page()
        watch = PageWatch(page, base_url)
        for rel in pages:
            shot = screenshots / str(DESKTOP["width"]) / _shot_name(rel) if screenshots else None
            t1 = time.monotonic()
            report[rel] = check_page(page, watch, base_url, rel, index, shot)
            _say_page(say, f"{rel} ({time.monotonic() - t1:.1f} s)", report[rel])
        desktop.close()
        say(f"-- {len(pages)} pages checked at {DESKTOP['width']}px in {time.monotonic() - t0:.0f} s")

        t0 = time.monotonic()
        phone = new_context(browser, base_url, PHONE, touch=True)
        page = phone.new_page()
        watch = PageWatch(page, base_url)
        for rel in pages:
            # At phone width: what a reader's phone loads (console and requests), and the screenshot.
            watch.reset()
            problems = goto(page, base_url + rel)
            if not problems:
                wait_for_mathjax(page)
                if screenshots:
                    shot = screenshots / str(PHONE["width"]) / _shot_name(rel)
                    shot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(shot))
            new = [f"{q} (at {PHONE['width']}px)" for q in watch.take() + problems
                   if q not in report.get(rel, [])]
            if new:
                report.setdefault(rel, []).extend(new)
                _say_page(say, f"{rel} at {PHONE['width']}px", new)
        if navigation:
            nav = check_navigation(page, base_url)
            report[f"(site) navigation at {PHONE['width']}px"] = nav
            _say_page(say, f"(site) navigation at {PHONE['width']}px", nav)
        phone.close()
        if navigation:
            tablet = new_context(browser, base_url, TABLET, touch=True)
            page = tablet.new_page()
            nav = check_navigation(page, base_url)
            report[f"(site) navigation at {TABLET['width']}px"] = nav
            _say_page(say, f"(site) navigation at {TABLET['width']}px", nav)
            tablet.close()
        say(f"-- phone and tablet in {time.monotonic() - t0:.0f} s")

        if search_terms:
            t0 = time.monotonic()
            searchable = [p for p in pages if p not in NOT_INDEXED]
            ctx = new_context(browser, base_url, DESKTOP)
            page = ctx.new_page()
            watch = PageWatch(page, base_url)
            for term, required in search_terms.items():
                expected = index.pages_containing(term, searchable)
                problems = check_search(page, base_url, term, expected, required)
                problems += [f"{q} (on the search page)" for q in watch.take()
                             if q not in report.get("search.html", [])]
                key = f"(site) search {term!r}"
                report[key] = problems
                _say_page(say, f"{key} ({len(expected)} pages contain it)", problems)
            ctx.close()
            say(f"-- search in {time.monotonic() - t0:.0f} s")
    return report


def _say_page(say, name: str, problems: list[str]):
    if not problems:
        say(f"ok    {name}")
        return
    say(f"FAIL  {name}: {len(problems)} problem(s)")
    for q in problems:
        say(f"      {q}")


def summary(report: dict) -> str:
    """Problems counted per check, with the pages that have them."""
    per_check: Counter = Counter()
    pages: dict[str, set] = {}
    for where, problems in report.items():
        for q in problems:
            check = q[1:q.index("]")] if q.startswith("[") else "?"
            per_check[check] += 1
            pages.setdefault(check, set()).add(where)
    if not per_check:
        return "browser check: no problem"
    lines = [f"browser check: {sum(per_check.values())} problem(s)"]
    for check, n in per_check.most_common():
        lines.append(f"  {check:9s} {n:4d} problem(s) on {len(pages[check])} page(s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", nargs="?", default=str(DEFAULT_SITE), help="the built site (default: _build/html)")
    ap.add_argument("--screenshots", default=None, help="where the screenshots go (default: SITE/../screenshots)")
    ap.add_argument("--chromium", default=CHROMIUM, help="the Chromium executable (default: /usr/bin/chromium)")
    ap.add_argument("--pages", nargs="*", default=None, help="only these pages (paths relative to the site)")
    args = ap.parse_args(argv)
    site = Path(args.site)
    if not (site / "index.html").is_file():
        print(f"browser check: no built site at {site} (run make book-check first)", file=sys.stderr)
        return 2
    if not Path(args.chromium).exists():
        print(f"browser check: no Chromium at {args.chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        print(f"browser check: Playwright is not installed ({exc}); it is pinned in requirements/lock.txt",
              file=sys.stderr)
        return 2
    screenshots = Path(args.screenshots) if args.screenshots else site.resolve().parent / "screenshots"
    t0 = time.monotonic()
    report = run(site, screenshots, args.chromium, pages=args.pages)
    print(summary(report))
    print(f"browser check: {len(report)} pages and site checks in {time.monotonic() - t0:.0f} s; "
          f"screenshots (viewport-sized) in {screenshots}")
    return 1 if any(report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
