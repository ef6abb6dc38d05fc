"""The comparison chapter's machinery: every registered method through the protocol, same rows, the tables
and charts built from the measurements."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from is2cloud import comparison, methods

GREENLAND = Path(__file__).resolve().parents[1] / "data" / "greenland_aoi.geojson"


@pytest.fixture(scope="module")
def runs(granules, creds, archive_cloud, tmp_path_factory):
    import os

    os.environ["IS2CLOUD_RESULTS"] = str(tmp_path_factory.mktemp("results") / "m.csv")
    try:
        return comparison.run_methods(granules, GREENLAND, cloud=archive_cloud, credentials=creds,
                                      out_credentials=creds, client="sync", physical_bytes=1)
    finally:
        os.environ.pop("IS2CLOUD_RESULTS", None)


def test_every_method_runs_once_with_the_baselines_rows(runs, granules):
    assert [r.method.NAME for r in runs] == list(methods.METHODS)
    assert runs[0].prepare is None and runs[0].stored_bytes == 0  # the baseline prepares nothing
    for r in runs[1:]:
        assert r.prepare is not None and r.prepare.wall_s > 0 and r.stored_bytes > 0
    assert len({len(r.query.result) for r in runs}) == 1
    assert all(r.query.granules == len(granules) and r.query.gets for r in runs)


def test_break_even():
    from types import SimpleNamespace

    from is2cloud.bench import Measurement

    def run(prep, query):
        return comparison.MethodRun(SimpleNamespace(TITLE="m", NAME="m"),
                                    Measurement("p", wall_s=prep) if prep else None, Measurement("q", wall_s=query),
                                    0)

    base = run(0, 10.0)
    assert comparison.break_even_queries(base, base) == 0
    assert comparison.break_even_queries(run(25.0, 2.0), base) == 4  # 25 / 8 -> 4 queries
    assert math.isinf(comparison.break_even_queries(run(5.0, 12.0), base))


def test_tables_and_charts_are_built_from_the_runs(runs):
    html = comparison.cost_table(runs).to_html()
    assert all(r.title in html for r in runs) and "pays off after" in html
    assert list(comparison.query_chart(runs).data["method"]) == [r.title for r in runs]
    assert len(comparison.break_even_chart(runs)) == len(runs)  # one line per method
    assert len(comparison.bytes_chart(runs)) == 2  # the points and their labels
    published = comparison.published_chart("Greenland").data
    assert len(published) and published["what"].str.contains("Harmony").any()
