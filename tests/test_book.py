"""The book: a raising cell fails the build; the whole book builds with every notebook executed (the
build, shared with test_browser.py and test_secrets.py, is conftest.py's ``built_book``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
JB = Path(sys.executable).with_name("jupyter-book")


def _toc_notebooks() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [f for f in files if (REPO / f"{f}.ipynb").exists()]


def test_committed_notebooks_have_no_outputs():
    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{nb_path.name} is committed with outputs"


def test_every_notebook_is_in_the_toc():
    in_toc = set(_toc_notebooks())
    on_disk = {f"notebooks/{p.stem}" for p in (REPO / "notebooks").glob("*.ipynb")}
    assert on_disk <= in_toc, f"notebooks missing from _toc.yml: {sorted(on_disk - in_toc)}"


@pytest.mark.notebook
def test_a_cell_that_raises_fails_the_build(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    cfg.pop("bibtex_bibfiles", None)
    cfg["sphinx"]["local_extensions"] = {name: str(REPO / path) for name, path in
                                         cfg["sphinx"].get("local_extensions", {}).items()}
    (book / "_config.yml").write_text(yaml.safe_dump(cfg))
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: bad\n")
    (book / "intro.md").write_text("# Intro\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Bad"),
                                         nbformat.v4.new_code_cell("raise ValueError('this cell fails on purpose')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, book / "bad.ipynb")
    r = subprocess.run([str(JB), "build", str(book), "--all", "-W", "--keep-going"], capture_output=True, text=True)
    assert r.returncode != 0, "a raising cell did not fail the build"
    assert "this cell fails on purpose" in (r.stdout + r.stderr) or any(
        "this cell fails on purpose" in p.read_text() for p in (book / "_build" / "html" / "reports").glob("*"))


@pytest.mark.notebook
def test_book_builds_and_executes_every_notebook(built_book):
    """The build that test_browser.py and test_secrets.py (no secret in the pages) check too."""
    assert built_book.returncode == 0, f"book build failed:\n{built_book.log}"
    for name in _toc_notebooks():
        assert (built_book.html / f"{name}.html").exists(), f"{name} was not rendered"
        nb = nbformat.read(built_book.executed / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.execution_count for c in code), f"{name} was not fully executed"
