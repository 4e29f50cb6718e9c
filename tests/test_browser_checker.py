"""tools/browser_check.py finds each kind of problem on a small, deliberately broken site, and none on a good page.

The link checker and the raw-TeX finder are plain Python and always run. The browser tests need Debian's
Chromium (/usr/bin/chromium; `make browser-test` installs it when run as root) and Playwright (pinned in
requirements/lock.txt); where either is missing they are skipped, with the reason.
"""

import importlib.util
import struct
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("browser_check", ROOT / "tools" / "browser_check.py")
bc = importlib.util.module_from_spec(_spec)
sys.modules["browser_check"] = bc
_spec.loader.exec_module(bc)


def _png(width=4, height=3):
    """A valid RGB PNG of width x height red pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _page(body, head=""):
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>t</title>'
            f'<link rel="icon" href="data:,">{head}</head>'
            f'<body><main><article class="bd-article">{body}</article></main></body></html>')


def _togglebutton_head():
    """sphinx-togglebutton's own script and style, configured as Sphinx configures them."""
    import sphinx_togglebutton
    static = Path(sphinx_togglebutton.__file__).parent / "_static"
    return ("<style>" + (static / "togglebutton.css").read_text(encoding="utf-8") + "</style>"
            "<script>let toggleHintShow = 'Click to show'; let toggleHintHide = 'Click to hide';"
            " let toggleOpenOnPrint = 'true';</script>"
            "<script>" + (static / "togglebutton.js").read_text(encoding="utf-8") + "</script>"
            "<script>var togglebuttonSelector = '.toggle, .admonition.dropdown';</script>")


# A stand-in for MathJax: typesets every math element into an mjx-container, as MathJax 3 does.
FAKE_MATHJAX = """<script>
window.MathJax = {startup: {promise: new Promise((ok) => document.addEventListener("DOMContentLoaded", () => {
  for (const e of document.querySelectorAll(".math")) e.innerHTML = "<mjx-container>x</mjx-container>";
  ok();
}))}};
</script>"""

SOLUTION = ('<div class="solution {cls} admonition" id="sol-1"><p class="admonition-title">Solution</p>'
            '<section id="solution-content"><p>The answer is 42.</p></section></div>')

BROKEN = {
    "math.html": _page('<p>A fraction left raw: \\frac{1}{2}.</p><p>An unbalanced dollar: $x_1 + y is text.</p>'
                       '<p>Math that nothing typesets: '
                       '<span class="math notranslate nohighlight">\\(x^2\\)</span></p><p>A TeX error: <span '
                       'class="math"><mjx-container><mjx-merror data-mjx-error="Undefined control sequence \\foo">'
                       '\\foo</mjx-merror></mjx-container></span></p>'),
    "image.html": _page('<p><img src="missing.png" alt="gone"></p>'),
    "links.html": _page('<p><a href="nowhere.html">a missing page</a> <a href="good.html#no-such-anchor">a missing '
                        'anchor</a> <a href="good.html#intro">fine</a> <a href="https://example.com/">external</a> '
                        '<a href="mailto:a@b.invalid">mail</a></p>'),
    "external.html": _page("<p>loads a script from elsewhere</p>", '<script src="http://example.invalid/x.js"></script>'),
    "console.html": _page('<p>logs an error</p><script>console.error("boom")</script>'),
    "exception.html": _page('<p>throws</p><script>throw new Error("kaboom")</script>'),
    "solution.html": _page("<h1>Exercise</h1>" + SOLUTION.format(cls="")),
    "good.html": _page('<h1 id="intro">Good</h1><p>It costs $5. Inline math: <span class="math notranslate '
                       'nohighlight">\\(x^2\\)</span>.</p><p><img src="_images/red.png" alt="red"></p>'
                       '<p><a href="good.html#intro">here</a> <a href="#intro">top</a> <a href="sub/">sub</a> '
                       '<a name="old-anchor"></a><a href="#old-anchor">old</a> <a href="#">button</a> '
                       '<a href="https://example.com/x">external</a></p><pre><code>\\frac{a}{b} $x$</code></pre>'
                       + SOLUTION.format(cls="dropdown"),
                       _togglebutton_head() + FAKE_MATHJAX),
    "sub/index.html": _page("<p>a folder's index</p>"),
    "_static/macros.html": "<p>a template, not a page</p>",
    # A menu button that does nothing (as sphinx-book-theme 1.3.0 below 992 px) and one that works.
    "nav_bad.html": _page('<button class="sidebar-toggle primary-toggle">menu</button>'
                          '<div class="bd-sidebar-primary" style="display:none"><a href="chapters/ch1.html">1</a>'
                          '</div>'),
    "nav_good.html": _page('<button class="sidebar-toggle primary-toggle" onclick="document.querySelector('
                           "'.bd-sidebar-primary').style.display='block'\">menu</button>"
                           '<div class="bd-sidebar-primary" style="display:none"><nav class="bd-docs-nav">'
                           '<a class="reference internal" href="chapters/ch1.html">Chapter 1</a></nav></div>'),
    "chapters/ch1.html": _page("<h1>Chapter 1</h1>"),
    # A search page that finds "alpha" on a.html only (b.html contains it too).
    "search.html": _page('<div id="search-results"></div><script>'
                         'const q = new URLSearchParams(location.search).get("q"); setTimeout(() => {'
                         'const out = document.getElementById("search-results");'
                         'out.innerHTML = \'<p class="search-summary">Search finished</p><ul class="search">\''
                         ' + (q === "alpha" ? \'<li><a href="a.html">A</a></li>\' : "") + "</ul>"; }, 200);'
                         "</script>"),
    "a.html": _page("<p>alpha</p>"),
    "b.html": _page("<p>alpha, again</p>"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    for rel, text in BROKEN.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "_images").mkdir()
    (root / "_images" / "red.png").write_bytes(_png())
    return root


# ----------------------------------------------------------------------------------------------
# Without a browser
# ----------------------------------------------------------------------------------------------

def test_pages_of_a_site_leave_out_static_templates(site):
    pages = bc.html_pages(site)
    assert "good.html" in pages and "sub/index.html" in pages and "chapters/ch1.html" in pages
    assert not any(p.startswith("_static/") for p in pages)


def test_link_checker_reports_a_missing_page_and_a_missing_anchor(site):
    index = bc.SiteIndex(site)
    problems = index.check_links("links.html", index.static_hrefs("links.html"))
    assert any("nowhere.html" in p and "no file" in p for p in problems), problems
    assert any("no-such-anchor" in p for p in problems), problems
    assert len(problems) == 2, problems          # the good anchor, the external link and mailto: pass
    assert all(p.startswith("[link]") for p in problems)


def test_link_checker_accepts_ids_names_folders_and_external_links(site):
    index = bc.SiteIndex(site)
    assert index.check_links("good.html", index.static_hrefs("good.html")) == []
    assert index.check_links("chapters/ch1.html", ["../good.html#intro", "../sub/index.html", "../a.html?x=1",
                                                   "//cdn.example/x.js", "tel:123", "javascript:void(0)"]) == []


def test_link_checker_resolves_relative_and_encoded_links(site, tmp_path):
    (tmp_path / "页.html").write_text(_page('<h2 id="零点">z</h2>'), encoding="utf-8")
    index = bc.SiteIndex(tmp_path)
    assert index.check_links("x/y.html", ["../%E9%A1%B5.html#%E9%9B%B6%E7%82%B9"]) == []
    assert index.check_links("x/y.html", ["../页.html#零点"]) == []
    assert index.check_links("x/y.html", ["../页.html#一"]) == ["[link] '../页.html#一': no id or name '一' in 页.html"]
    assert index.check_links("a.html", ["../../etc/passwd"])[0].startswith("[link]")


def test_main_text_and_pages_containing_a_term(site):
    index = bc.SiteIndex(site)
    assert index.pages_containing("alpha", ["a.html", "b.html", "good.html"]) == ["a.html", "b.html"]
    assert "fraction left raw" in index.main_text("math.html")
    assert "console.error" not in index.main_text("console.html")     # scripts are not text


def test_raw_tex_finder():
    for text in ["x = \\frac{1}{2}", "unbalanced $x_1 + y", "pair $a_i$ left", "display $$x$$", "\\(b\\)",
                 "\\begin{split}", "\\mathrm{round}(x)"]:
        assert bc.raw_tex(text), text
    for text in ["It costs $5 or $10.", "plain text, 量化 and 整数量化", "a\\b path"]:
        assert bc.raw_tex(text) == [], text


# ----------------------------------------------------------------------------------------------
# In Chromium
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not Path(bc.CHROMIUM).exists():
        pytest.skip(f"browser tests skipped: no Chromium at {bc.CHROMIUM} (apt-get install chromium; "
                    "make browser-test installs it when run as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"browser tests skipped: Playwright is not installed ({exc}); it is pinned in "
                    "requirements/lock.txt")
    with sync_playwright() as pw:
        b = bc.launch(pw)
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(site):
    with bc.serve(site) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def desktop(browser, served):
    context = bc.new_context(browser, served, bc.DESKTOP)
    page = context.new_page()
    yield page, bc.PageWatch(page, served), served
    context.close()


@pytest.fixture(scope="module")
def checked(desktop, site, tmp_path_factory):
    """Problems that check_page reports on each page of the broken site."""
    page, watch, base_url = desktop
    index = bc.SiteIndex(site)
    shots = tmp_path_factory.mktemp("shots")
    out = {rel: bc.check_page(page, watch, base_url, rel, index, shots / (rel + ".png"))
           for rel in ["math.html", "image.html", "links.html", "external.html", "console.html", "exception.html",
                       "solution.html", "good.html"]}
    out["(screenshots)"] = sorted(p.name for p in shots.iterdir())
    return out


def _has(problems, check, *words):
    return any(p.startswith(f"[{check}]") and all(w in p for w in words) for p in problems)


def test_good_page_has_no_problem(checked):
    assert checked["good.html"] == []


def test_raw_frac_and_unbalanced_dollar_are_reported(checked):
    p = checked["math.html"]
    assert _has(p, "math", "raw TeX", "\\frac"), p
    assert _has(p, "math", "raw TeX", "$ before a formula"), p
    assert _has(p, "math", "MathJax did not load"), p
    assert _has(p, "math", "1 of 2 math elements not typeset"), p
    assert _has(p, "math", "1 TeX error(s)", "Undefined control sequence"), p


def test_missing_image_is_reported(checked):
    p = checked["image.html"]
    assert _has(p, "image", "missing.png"), p
    assert _has(p, "request", "HTTP 404", "missing.png"), p


def test_missing_page_and_anchor_are_reported(checked):
    p = checked["links.html"]
    assert _has(p, "link", "nowhere.html"), p
    assert _has(p, "link", "no-such-anchor"), p
    assert len(p) == 2, p


def test_request_to_another_host_is_reported_and_blocked(checked):
    p = checked["external.html"]
    assert _has(p, "request", "another host", "http://example.invalid/x.js", "blocked"), p


def test_console_error_and_uncaught_exception_are_reported(checked):
    assert _has(checked["console.html"], "console", "boom"), checked["console.html"]
    assert _has(checked["exception.html"], "console", "uncaught exception", "kaboom"), checked["exception.html"]


def test_solution_visible_without_clicking_is_reported(checked):
    p = checked["solution.html"]
    assert _has(p, "solution", "visible before its toggle is clicked"), p


def test_solution_that_a_toggle_hides_and_shows_passes(desktop):
    page, watch, base_url = desktop
    bc.goto(page, base_url + "good.html")
    assert page.locator("#solution-content").is_visible() is False
    assert bc.check_solutions(page) == []
    assert page.locator("#solution-content").is_visible() is True


def test_a_screenshot_of_each_page(checked):
    assert "good.html.png" in checked["(screenshots)"] and len(checked["(screenshots)"]) == 8


def test_menu_button_that_does_nothing_fails_and_one_that_works_passes(browser, served):
    context = bc.new_context(browser, served, bc.PHONE, touch=True)
    page = context.new_page()
    try:
        bad = bc.check_navigation(page, served, start="nav_bad.html", hops=1)
        assert _has(bad, "nav", "390px", "does not show the table of contents"), bad
        assert bc.check_navigation(page, served, start="nav_good.html", hops=1) == []
        assert page.url.endswith("/chapters/ch1.html")
    finally:
        context.close()


def test_search_that_misses_a_page_fails(desktop):
    page, watch, base_url = desktop
    assert bc.check_search(page, base_url, "alpha", ["a.html"]) == []
    missed = bc.check_search(page, base_url, "alpha", ["a.html", "b.html"])
    assert _has(missed, "search", "misses 1 of the 2", "b.html"), missed
    assert _has(bc.check_search(page, base_url, "beta", [], ["a*"]), "search", "does not find a*")


def test_run_reports_per_page_and_writes_both_screenshots(browser, site, tmp_path):
    lines = []

    class Out:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    report = bc.run(site, tmp_path, pages=["good.html", "console.html"], search_terms=None, navigation=False,
                    browser=browser, out=Out())
    assert report["good.html"] == []
    assert _has(report["console.html"], "console", "boom")
    assert (tmp_path / "1280" / "good.png").is_file() and (tmp_path / "390" / "console.png").is_file()
    text = "".join(lines)
    assert "ok    good.html (" in text and "FAIL  console.html (" in text
    assert "console" in bc.summary(report)
