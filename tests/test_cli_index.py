"""``is2cloud index build|query`` as a user runs it: a fresh process with its own local cloud."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from is2cloud.geoparquet import read_geoparquet

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
GRAND_MESA = REPO / "data" / "grandmesa.geojson"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "IS2CLOUD_SCALE": "test", "IS2CLOUD_MODE": "local"}
    env.pop("IS2CLOUD_ENDPOINT", None)
    return subprocess.run([sys.executable, "-m", "is2cloud.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory, test_archive):
    tmp = tmp_path_factory.mktemp("cli-index")
    index = tmp / "ATL06_006.parquet"
    first = run("index", "build", "--aoi", str(GREENLAND), "--out", str(index), cwd=tmp)
    again = run("index", "build", "--aoi", str(GREENLAND), "--out", str(index), cwd=tmp)
    return tmp, index, first, again


def test_build_then_append(built):
    _, index, first, again = built
    assert first.returncode == 0, first.stderr
    assert index.exists()
    assert "2 granules added" in first.stdout and "0 unchanged" in first.stdout
    assert again.returncode == 0, again.stderr
    assert "0 granules added" in again.stdout and "2 unchanged" in again.stdout


def test_query_writes_geoparquet(built):
    tmp, index, _, _ = built
    out = tmp / "rows.parquet"
    done = run("index", "query", "--index", str(index), "--aoi", str(GREENLAND), "--out", str(out), cwd=tmp)
    assert done.returncode == 0, done.stderr
    gdf = read_geoparquet(out)
    assert len(gdf) > 0
    assert f"{len(gdf)} rows from 2 granules" in done.stdout


def test_query_outside_the_index_is_a_clear_error(built):
    tmp, index, _, _ = built
    done = run("index", "query", "--index", str(index), "--aoi", str(GRAND_MESA), cwd=tmp)
    assert done.returncode == 2
    assert "is outside the chunk index" in done.stderr and "grandmesa" in done.stderr
    assert "Traceback" not in done.stderr
