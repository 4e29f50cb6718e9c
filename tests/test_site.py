"""The site's own parts: the local extension (_ext/quantbook_site.py), the download archives
(tools/make_downloads.py) and CITATION.cff."""

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


site = load("quantbook_site", "_ext/quantbook_site.py")
downloads = load("make_downloads", "tools/make_downloads.py")


def test_chinese_runs_are_indexed_as_pairs_and_characters_latin_words_whole():
    assert site.split_words("整数量化 and zero-point") == ["整数", "数量", "量化", "整", "数", "量", "化",
                                                        "and", "zero", "point"]
    assert site.split_words("int8量化的", unigrams=False) == ["int8", "量化", "化的"]
    assert site.split_words("量") == ["量"]


@pytest.mark.parametrize("page, query", [("子整数量化和混合量化", "整数量化"), ("知识蒸馏 (distillation)", "知识蒸馏"),
                                         ("模型量化", "量化"), ("The zero point z", "zero point")])
def test_a_query_finds_a_text_that_contains_it(page, query):
    """The index's words of a text include every word of a query that the text contains."""
    assert set(site.split_words(query, unigrams=False)) <= set(site.split_words(page))


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_browser_splits_a_query_as_the_index_does():
    script = site.JS_SPLITTER + "\nconsole.log(JSON.stringify(process.argv.slice(1).map(splitQuery)));"
    queries = ["整数量化", "知识蒸馏", "zero point", "int8量化的", "量"]
    out = subprocess.run(["node", "-e", script, *queries], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [site.split_words(q, unigrams=False) for q in queries]


def test_the_search_language_keeps_english_stemming():
    lang = site.SearchEnglishChinese({})
    assert lang.lang == "en" and lang.stem("quantization") == lang.stem("quantizations") == "quantiz"


def test_author_year_labels_match_the_citations():
    from pybtex.database import parse_string

    bib = parse_string("""
        @article{a, author = {Han, Song and Mao, Huizi and Dally, William J.}, title = {T}, year = {2016}}
        @article{b, author = {Frantar, Elias and Alistarh, Dan}, title = {U}, year = {2022}}
        @article{c, author = {Horowitz, Mark}, title = {V}, year = {2014}}
        @article{d, author = {Han, Song and Pool, Jeff and Tran, John}, title = {W}, year = {2016}}
        @misc{e, author = {{The source article}}, title = {X}, year = {n.d.}}
    """, "bibtex")
    entries = [bib.entries[k] for k in "abcde"]
    labels = list(site.AuthorYearLabelStyle().format_labels(entries))
    assert labels == ["Han et al., 2016a", "Frantar and Alistarh, 2022", "Horowitz, 2014", "Han et al., 2016b",
                      "The source article, n.d."]


def test_every_entry_of_the_bibliography_gets_a_label():
    from pybtex.database import parse_file

    bib = parse_file(str(ROOT / "references.bib"))
    labels = list(site.AuthorYearLabelStyle().format_labels(bib.entries.values()))
    assert len(labels) == len(bib.entries) and all(", " in label for label in labels)


def test_config_uses_the_extension_and_offline_mathjax():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["sphinx"]["local_extensions"] == {"quantbook_site": "_ext"}
    sphinx = config["sphinx"]["config"]
    assert sphinx["mathjax_path"] == "mathjax/tex-chtml.js" and sphinx["bibtex_default_style"] == "authoryear"
    assert (site.mathjax_source() / "tex-chtml.js").exists()
    for part in site.MATHJAX_PARTS:
        assert (site.mathjax_source() / part).exists(), part


def test_the_archives_hold_notebooks_qlib_and_how_to_run_them(tmp_path):
    full, stud = downloads.make_all(tmp_path)
    for path, folder in ((full, "quantbook-notebooks"), (stud, "quantbook-student")):
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            assert all(n.startswith(folder + "/") for n in names)
            for required in ("README_RUN.txt", "pyproject.toml", "README.md", "LICENSE", "requirements/lock.txt",
                             "requirements/nodeps.txt", "requirements/lab.txt", "qlib/__init__.py",
                             "qlib/core/uniform.py", "chapters/matplotlibrc", "chapters/01_background.ipynb"):
                assert f"{folder}/{required}" in names, required
            assert not any("__pycache__" in n for n in names)
            run = zf.read(f"{folder}/README_RUN.txt").decode()
            assert "pip install -r requirements/lock.txt" in run and "pip install -e ." in run
            assert "jupyter lab chapters" in run
            solutions = sum(zf.read(n).decode().count("{solution-start}") for n in names if n.endswith(".ipynb"))
            assert (solutions > 0) == (folder == "quantbook-notebooks")
    again = downloads.make_all(tmp_path)            # reproducible: same bytes
    assert [p.read_bytes() for p in again] == [full.read_bytes(), stud.read_bytes()]


def test_citation_cff_is_cff_1_2_0():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert cff["message"] and cff["title"] and cff["authors"] and all("name" in a or "family-names" in a
                                                                        for a in cff["authors"])
    assert set(cff["license"]) == {"MIT", "CC-BY-4.0"}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
