"""The book's local Sphinx extension (loaded through ``sphinx: local_extensions`` in _config.yml).

What it does, each part for a reason that a setting alone cannot give:

1. **Offline MathJax.** ``mathjax_path`` (in _config.yml) points to ``_static/mathjax/tex-chtml.js``;
   this extension copies MathJax 3 into ``_build/html/_static/mathjax`` from the pinned PyPI package
   ``sphinx-mathjax-offline`` (only what ``tex-chtml.js`` loads: TeX input and its extensions, the
   CommonHTML output and its fonts, the menu and the accessibility modules; 7 of the package's 24 MB).
   No page loads anything from another host.
2. **No thebe.** The book has no launch buttons (a static site cannot run a kernel), but
   jupyter-book always loads ``sphinx_thebe``, whose inline script (with an unpkg.com URL) Sphinx 7
   writes twice on every page ("Identifier 'THEBE_JS_URL' has already been declared"; Sphinx
   bug fixed in 8.2, sphinx-doc/sphinx#13402). Its assets are dropped, and the same bug's duplicates
   of other inline scripts are merged.
3. **Chinese search.** Sphinx's English index keeps a run of Chinese characters as one word, so
   "量化" never finds "整数量化". The search language below indexes every Chinese run as its
   characters and overlapping character pairs, and splits a query the same way in the browser
   (``splitQuery``): a query finds every page that contains it. Latin words keep the Porter stemmer.
4. **Author-year labels** in the references list (``bibtex_default_style: authoryear``), the same
   "Han et al., 2016" that ``bibtex_reference_style: author_year`` prints in the text.
5. **Where the source lives**, from ``repository.url`` of _config.yml, set once: the repository
   button appears only when it is set, and the landing page says ``{{ source }}``, a sentence that
   links it (or says that the downloads hold the source when it is empty).
6. **Downloads.** Before the pages are read, the notebooks with qlib, and their student edition,
   are zipped into ``_build/downloads`` (tools/make_downloads.py), which index.md offers with
   ``{download}`` links; every build of the site (``make html``, ``make test``) makes them.
"""

from __future__ import annotations

import importlib.util
import re
import runpy
import shutil
from collections import Counter
from pathlib import Path

import pybtex.plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.search.en import SearchEnglish
from sphinx.util import logging

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- 1. offline MathJax

MATHJAX_PACKAGE = "sphinx-mathjax-offline"
# What tex-chtml.js loads at run time (paths under MathJax's root); the other combined components
# (SVG output, MathML input, the "full" builds) are never requested.
MATHJAX_PARTS = ["tex-chtml.js", "input/tex", "output/chtml", "a11y", "ui", "sre", "adaptors"]


def mathjax_source() -> Path:
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{MATHJAX_PACKAGE} is not installed: run make (requirements/lock.txt pins it)")
    return Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"


def copy_mathjax(app, exc):
    if exc is not None or app.builder.format != "html":
        return
    for name in THEBE_ASSETS:                  # copied from sphinx_thebe's static path, used by no page
        (Path(app.outdir) / "_static" / name).unlink(missing_ok=True)
    src, dst = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, dst / part, dirs_exist_ok=True)
        else:
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / part, dst / part)


def check_mathjax_path(app, config):
    if "://" in config.mathjax_path or not config.mathjax_path.startswith("mathjax/"):
        logger.warning("mathjax_path %r is not the offline copy (mathjax/tex-chtml.js)", config.mathjax_path)


# --------------------------------------------------------------------------- 2. thebe, duplicate scripts

THEBE_ASSETS = ("sphinx-thebe.js", "sphinx-thebe.css")


def _is_thebe(filename, attrs) -> bool:
    return (filename or "").endswith(THEBE_ASSETS) or "THEBE_JS_URL" in attrs.get("body", "")


def tidy_assets(app, env):
    """Drop thebe's assets; merge inline scripts registered twice (Sphinx < 8.2 bug #13402)."""
    registry = app.registry
    registry.js_files[:] = [(f, a) for f, a in registry.js_files if not _is_thebe(f, a)]
    registry.css_files[:] = [(f, a) for f, a in registry.css_files if not _is_thebe(f, a)]
    builder = app.builder
    if not hasattr(builder, "_js_files"):
        return
    from sphinx.builders.html._assets import _JavaScript

    kept, seen = [], set()
    for js in builder._js_files:
        attrs = dict(js.attributes)
        if _is_thebe(js.filename, attrs):
            continue
        # An inline script added after Builder.init() is stored with filename None; prepare_writing
        # adds it again with filename "" (the bug): store it with "" so that the second add is a no-op.
        js = _JavaScript(js.filename or "", priority=js.priority, **attrs)
        if js not in seen:
            seen.add(js)
            kept.append(js)
    builder._js_files[:] = kept
    builder._css_files[:] = [c for c in builder._css_files if not _is_thebe(c.filename, dict(c.attributes))]


# --------------------------------------------------------------------------- 3. Chinese search

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"   # CJK unified ideographs, extension A, compatibility
HAN_RUN = re.compile(f"([{HAN}]+)")


def han_terms(run: str, unigrams: bool) -> list[str]:
    """Overlapping character pairs of a run of Chinese characters (and its characters if asked)."""
    if len(run) == 1:
        return [run]
    pairs = [run[i:i + 2] for i in range(len(run) - 1)]
    return pairs + (list(run) if unigrams else [])


def split_words(text: str, unigrams: bool = True) -> list[str]:
    """Words of ``text``: Latin words whole, Chinese runs as pairs (and characters) of characters."""
    out = []
    for token in re.findall(r"\w+", text):
        for part in HAN_RUN.split(token):
            if not part:
                continue
            out += han_terms(part, unigrams) if HAN_RUN.fullmatch(part) else [part]
    return out


# The browser's query splitter: the same rule, pairs only (a query "整数量化" needs 整数, 数量 and 量化
# on the page; a one-character query needs that character).
JS_SPLITTER = r"""
const QUANTBOOK_HAN_RUN = /([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)/u;
var splitQuery = (query) => {
  const terms = [];
  for (const token of query.split(/[^\p{Letter}\p{Number}_\p{Emoji_Presentation}]+/gu)) {
    if (!token) continue;
    for (const part of token.split(QUANTBOOK_HAN_RUN)) {
      if (!part) continue;
      if (!QUANTBOOK_HAN_RUN.test(part)) { terms.push(part); continue; }
      if (part.length === 1) { terms.push(part); continue; }
      for (let i = 0; i + 1 < part.length; i++) terms.push(part.slice(i, i + 2));
    }
  }
  return terms;
};
"""


class SearchEnglishChinese(SearchEnglish):
    """English search (Porter stemmer, English stop words) that also finds Chinese words."""

    lang = "en"
    language_name = "English and Chinese"
    js_splitter_code = JS_SPLITTER

    def split(self, input: str) -> list[str]:
        return split_words(input)


# --------------------------------------------------------------------------- 4. author-year labels

NAME_STYLE = pybtex.plugin.find_plugin("pybtex.style.names", "last")()   # as PersonStyle() of the citations


def author_year_label(entry) -> str:
    """The label of an entry as the author-year citations print it: "Han and Dally, 2016"."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [NAME_STYLE.format(p, True).format().render_as("text") for p in persons]
    if not names:
        names = [entry.fields.get("organization") or "Anonymous"]
    if len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year_label(e) for e in entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:             # two entries with one label: 2016a, 2016b
            if counts[label] > 1:
                seen[label] += 1
                label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            yield label


class AuthorYearStyle(UnsrtStyle):
    """The unsrt entry format, sorted by author, year and title, labelled by author and year."""

    default_label_style = AuthorYearLabelStyle
    default_sorting_style = "author_year_title"


pybtex.plugin.register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


# --------------------------------------------------------------------------- 5. the repository

def repository(app, config):
    url = (config.html_theme_options.get("repository_url") or "").strip()
    config.html_theme_options["use_repository_button"] = bool(url)
    if url:
        shown = url.removeprefix("https://").removeprefix("http://").rstrip("/")
        source = f"The book's source (its notebooks, qlib with its tests, and this site) lives at [{shown}]({url})."
    else:
        source = "The book's source is not published online; the downloads below hold its notebooks and qlib."
    config.myst_substitutions = {**(config.myst_substitutions or {}), "source": source}


# --------------------------------------------------------------------------- 6. downloads

def make_downloads(app):
    if app.builder.format != "html":
        return
    tool = runpy.run_path(str(ROOT / "tools" / "make_downloads.py"))
    for path in tool["make_all"](ROOT / "_build" / "downloads"):
        logger.info("download: %s (%.1f MB)", path.relative_to(ROOT), path.stat().st_size / 1e6)


def setup(app):
    app.add_search_language(SearchEnglishChinese)
    app.connect("config-inited", check_mathjax_path)
    app.connect("config-inited", repository)
    app.connect("builder-inited", make_downloads)
    app.connect("env-updated", tidy_assets)
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
