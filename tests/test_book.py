"""The book: a raising cell fails the build; the whole book builds with every notebook executed; no
secret of the local cloud appears in an executed notebook or in the HTML."""

from __future__ import annotations

import os
import shutil
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
def test_book_builds_executes_every_notebook_and_leaks_no_secret(tmp_path):
    out = tmp_path / "out"
    canary = tmp_path / "secrets.txt"
    env = dict(os.environ, IS2CLOUD_SCALE="test", IS2CLOUD_SECRETS_CANARY=str(canary),
               IS2CLOUD_RESULTS=str(tmp_path / "measurements.csv"))
    env.pop("IS2CLOUD_ENDPOINT", None)
    r = subprocess.run([str(JB), "build", str(REPO), "--path-output", str(out), "--all", "-W", "--keep-going"],
                       capture_output=True, text=True, env=env, cwd=REPO)
    reports = "\n".join(p.read_text() for p in (out / "_build" / "html" / "reports").glob("*")) \
        if (out / "_build" / "html" / "reports").exists() else ""
    assert r.returncode == 0, f"book build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}\n{reports[-4000:]}"
    html = out / "_build" / "html"
    executed = out / "_build" / "jupyter_execute"
    for name in _toc_notebooks():
        assert (html / f"{name}.html").exists(), f"{name} was not rendered"
        nb = nbformat.read(executed / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.execution_count for c in code), f"{name} was not fully executed"
    secrets = {s for s in canary.read_text().split() if len(s) >= 16}
    assert secrets, "the local cloud recorded no secrets: the canary is not wired up"
    files = list(html.rglob("*.html")) + list(html.rglob("*.txt")) + list(html.rglob("*.js")) + list(executed.rglob("*.ipynb"))
    leaks = [(f.name, s[:4]) for f in files for s in secrets if s in f.read_text(errors="replace")]
    assert not leaks, f"secrets found in the built book: {leaks[:5]}"
    shutil.rmtree(out, ignore_errors=True)
