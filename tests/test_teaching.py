"""For instructors (issue 15): the glossary's terms, the instructor's guide's measured run times
(book/_ext/notebook_times.py), the CryoCloud launch button and the publishing workflow."""

from __future__ import annotations

import csv
import html
import re
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "book" / "_ext"))
import notebook_times as nt  # noqa: E402

#: Notebooks link these with {term}`...`: each must be a glossary term, spelled so.
TERMS = ("AOI", "granule", "beam", "ETag", "HEAD request", "range GET", "read-ahead cache", "block cache", "chunk",
         "COMPACT dataset", "row group", "GeoParquet", "canonical schema", "H3", "physical limit",
         "network lower bound", "concurrency", "ledger", "DMR++", "virtual dataset", "Icechunk", "kerchunk reference",
         "paged aggregation", "chunk index", "ATL06-SR")


def _toc_notebooks() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return [c["file"] for part in toc["parts"] for c in part["chapters"] if (REPO / f"{c['file']}.ipynb").exists()]


def test_glossary_defines_every_linked_term():
    text = (REPO / "book" / "glossary.md").read_text()
    block = re.search(r"```\{glossary\}\n(.*?)\n```", text, re.S)
    assert block, "book/glossary.md has no {glossary} block"
    terms = re.findall(r"^(\S.*)$", block[1], re.M)
    assert set(TERMS) <= set(terms), f"missing: {sorted(set(TERMS) - set(terms))}"
    assert len(terms) == len(set(terms)), "a term is defined twice"


def test_guide_and_glossary_are_in_the_toc():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert "book/teaching" in files and "book/glossary" in files


def _row(notebook: str, scale: str, seconds: str, host: str = "m (2 cpu)", commit: str = "abc1234") -> dict:
    return {"notebook": notebook, "scale": scale, "profile": "in-region", "seconds": seconds, "peak_MB": "900",
            "commit": commit, "date": "2026-12-03", "host": host}


def test_records_keep_every_build_and_the_latest_wins(tmp_path):
    path = tmp_path / "results" / "notebook-times.csv"
    nt.append_records(path, [_row("notebooks/01", "book", "80.0", commit="old")])
    nt.append_records(path, [_row("notebooks/01", "test", "9.0"), _row("notebooks/01", "book", "70.0")])
    nt.append_records(path, [])
    records = nt.read_records(path)
    assert len(records) == 3 and not list(path.parent.glob(".*tmp"))
    assert nt.latest(records, "notebooks/01", "book", "m (2 cpu)")["seconds"] == "70.0"
    assert nt.latest(records, "notebooks/01", "book", "other (8 cpu)") is None  # another machine's build
    assert nt.latest(records, "notebooks/02", "book", "m (2 cpu)") is None
    assert nt.describe(nt.latest(records, "notebooks/01", "test", "m (2 cpu)")) == \
        "9 s, 900 MB (test scale, abc1234, 2026-12-03)"
    assert nt.describe(None) == "not measured on this machine yet"


def test_workflow_builds_and_deploys_pages_with_pinned_actions():
    flow = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    steps = [s for job in flow["jobs"].values() for s in job.get("steps", [])]
    uses = [s["uses"] for s in steps if "uses" in s]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    assert all(re.search(r"@v\d+(\.\d+)*$|@[0-9a-f]{40}$", u) for u in uses), uses
    assert any("make book" in s.get("run", "") for s in steps)


@pytest.mark.notebook
def test_built_guide_shows_this_builds_times_and_records_them(built_book):
    built_book.require()
    notebooks = _toc_notebooks()
    page = (built_book.html / "book" / "teaching.html").read_text()
    table = re.search(r"<table.*?this build \(test scale.*?</table>", page, re.S)
    assert table, "the guide has no table of this build's times"
    rows = {}
    for tr in re.findall(r"<tr.*?</tr>", table[0], re.S):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td.*?</td>", tr, re.S)]
        if cells:
            rows[cells[0]] = cells
    assert len(rows) == len(notebooks) + 1, rows  # one per notebook and the total
    for cells in rows.values():
        assert re.fullmatch(r"[\d,]+ s", cells[1]), cells
    records = list(csv.DictReader(open(built_book.results / "notebook-times.csv")))
    mine = {r["notebook"]: r for r in records if r["scale"] == "test"}
    assert set(mine) == set(notebooks), records
    assert all(float(r["seconds"]) > 0 and float(r["peak_MB"]) > 0 for r in mine.values()), records


@pytest.mark.notebook
def test_built_notebook_pages_launch_on_cryocloud(built_book):
    built_book.require()
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    repo = config["repository"]["url"]
    for name in _toc_notebooks():
        page = (built_book.html / f"{name}.html").read_text()
        links = [html.unescape(u) for u in re.findall(r'href="(https://hub\.cryointhecloud\.com/[^"]+)"', page)]
        assert links, f"{name}.html has no CryoCloud launch button"
        url = urlsplit(links[0])
        query = parse_qs(url.query)
        assert url.path == "/hub/user-redirect/git-pull" and query["repo"] == [repo], links[0]
        assert query["urlpath"][0].endswith(f"/{name}.ipynb") and query["urlpath"][0].startswith("lab/tree/")
