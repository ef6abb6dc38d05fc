"""Bad input through ``is2cloud`` as a new user meets it (issue 17): each case runs the real command in a
fresh process with its own local cloud, and checks the exit code, the one-line message and what is on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import box, mapping

from is2cloud.geoparquet import read_geoparquet, validate_geoparquet
from is2cloud.methods import chunkindex

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
GRAND_MESA = REPO / "data" / "grandmesa.geojson"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, umask: int | None = None
        ) -> subprocess.CompletedProcess:
    full = {**os.environ, "IS2CLOUD_SCALE": "test", "IS2CLOUD_MODE": "local", **(env or {})}
    full.pop("IS2CLOUD_ENDPOINT", None)
    return subprocess.run([sys.executable, "-m", "is2cloud.cli", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=600, preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def write_aoi(path: Path, geometry) -> Path:
    path.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(geometry)}))
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory, granules, creds):
    """A chunk index of the `test` archive's Greenland ATL06 granules (the CLI's own cloud serves the same)."""
    path = tmp_path_factory.mktemp("cli-errors") / "ATL06_006.parquet"
    chunkindex.build(granules, path, credentials=creds, client="sync", progress=False)
    return path


@pytest.fixture(scope="module")
def between_tracks(index, tmp_path_factory):
    """A small AOI inside the index's extent that no track crosses."""
    idx = chunkindex.read_index(index)
    tracks = shapely.union_all(np.asarray(idx.frame["footprint"].values, dtype=object))
    w, s, e, n = idx.meta["extents"][0]
    xs, ys = np.meshgrid(np.linspace(w, e, 41)[1:-1], np.linspace(s, n, 41)[1:-1])
    gap = shapely.distance(shapely.points(xs.ravel(), ys.ravel()), tracks)
    k = int(np.argmax(gap))
    assert gap[k] > 0.04, "no gap between the tracks"
    x, y = xs.ravel()[k], ys.ravel()[k]
    return write_aoi(tmp_path_factory.mktemp("aoi") / "between.geojson", box(x - 0.01, y - 0.01, x + 0.01, y + 0.01))


# -- 1. a wide AOI ---------------------------------------------------------------------------------------------


def test_a_wide_geojson_box_finds_the_granules_under_it(tmp_path, test_archive):
    wide = write_aoi(tmp_path / "wide.geojson", box(-60, 59, 130, 84))
    done = run("search", "--aoi", str(wide), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("2 granules,"), done.stdout
    assert "warning: AOI 'wide' has an edge spanning 190.0 degrees" in done.stderr


# -- 2, 3. query to S3, and an empty result ---------------------------------------------------------------------


def test_query_to_s3_uses_the_notebooks_credentials(index, tmp_path):
    url = "s3://is2cloud-scratch/cli/rows.parquet"
    done = run("index", "query", "--index", str(index), "--aoi", str(GREENLAND), "--out", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"written to {url}" in done.stdout and "credentials=" not in done.stderr


def test_an_aoi_between_the_tracks_writes_an_empty_file(index, between_tracks, tmp_path):
    out = tmp_path / "none.parquet"
    done = run("index", "query", "--index", str(index), "--aoi", str(between_tracks), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0 rows") and "note: no rows matched" in done.stdout
    assert validate_geoparquet(out).num_rows == 0 and len(read_geoparquet(out)) == 0


# -- 4. bench checks its arguments before touching the CSV --------------------------------------------------------


def test_bench_with_a_bad_suite_keeps_the_csv(tmp_path):
    csv = tmp_path / "existing.csv"
    csv.write_text("name,wall_s\nmine,1.0\n")
    done = run("bench", "--suite", "nope", "--out", str(csv), cwd=tmp_path)
    one_line_error(done, "--suite: unknown suite(s) nope")
    assert csv.read_text() == "name,wall_s\nmine,1.0\n"
    done = run("bench", "--suite", "baseline", "--scale", "huge", "--out", str(csv), cwd=tmp_path)
    one_line_error(done, "--scale: unknown scale(s) huge")
    assert csv.exists()


# -- 5. --product and --version are checked against the index ----------------------------------------------------


@pytest.mark.parametrize("option, needle", [(("--product", "ATL03"), "indexes ATL06 granules"),
                                            (("--version", "005"), "holds granules of version 006")])
def test_query_checks_product_and_version(index, tmp_path, option, needle):
    out = tmp_path / "rows.parquet"
    done = run("index", "query", "--index", str(index), "--aoi", str(GREENLAND), *option, "--out", str(out),
               cwd=tmp_path)
    one_line_error(done, needle)
    assert not out.exists()


# -- 6. existing outputs are kept unless --overwrite, and new files follow the umask ----------------------------


def test_an_existing_output_is_refused_then_replaced_with_overwrite(index, tmp_path):
    precious = tmp_path / "important.txt"
    precious.write_text("do not lose me")
    args = ("index", "query", "--index", str(index), "--aoi", str(GREENLAND), "--out", str(precious))
    one_line_error(run(*args, cwd=tmp_path), "important.txt exists; give --overwrite")
    assert precious.read_text() == "do not lose me"
    done = run(*args, "--overwrite", cwd=tmp_path, umask=0o027)
    assert done.returncode == 0, done.stderr
    assert len(read_geoparquet(precious)) > 0
    assert precious.stat().st_mode & 0o777 == 0o640


# -- 7. outputs are checked before the work ------------------------------------------------------------------------


def test_build_into_the_read_only_archive_fails_first(tmp_path, test_archive):
    url = "s3://nsidc-cumulus-prod-protected/chunk-index/ATL06_006.parquet"
    done = run("index", "build", "--aoi", str(GREENLAND), "--out", url, cwd=tmp_path)
    one_line_error(done, "nsidc-cumulus-prod-protected is the read-only archive bucket")
    assert "granules added" not in done.stdout


def test_query_whose_out_parent_is_a_file_fails_first(index, tmp_path):
    (tmp_path / "afile").write_text("x")
    done = run("index", "query", "--index", str(index), "--aoi", str(GREENLAND), "--out",
               str(tmp_path / "afile" / "rows.parquet"), cwd=tmp_path)
    one_line_error(done, "afile is a file, not a directory")
    assert "rows from" not in done.stdout  # nothing was fetched


# -- 8. a missing variable is found on the first granule ----------------------------------------------------------


def test_build_with_a_missing_variable_fails_before_reading_the_granules(tmp_path, test_archive):
    out = tmp_path / "idx.parquet"
    done = run("index", "build", "--aoi", str(GREENLAND), "--variables", "h_li,nope", "--out", str(out),
               cwd=tmp_path)
    one_line_error(done, "--variables: nope not in ATL06_", "first granule")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not out.exists()


# -- 9. messages that say what to fix ---------------------------------------------------------------------------


def test_an_index_without_the_parquet_suffix(index, tmp_path):
    bare = tmp_path / "my-index"
    bare.write_bytes(index.read_bytes())
    done = run("index", "query", "--index", str(bare), "--aoi", str(GREENLAND), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    granule = tmp_path / "not-an-index"
    granule.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    one_line_error(run("index", "query", "--index", str(granule), "--aoi", str(GREENLAND), cwd=tmp_path),
                   "is not a readable chunk index")


def test_a_negative_seed_is_named_before_anything_starts(tmp_path):
    cache = tmp_path / "cache"
    done = run("sample-data", "--preset", "test", env={"IS2CLOUD_SEED": "-5", "IS2CLOUD_CACHE": str(cache)},
               cwd=tmp_path)
    one_line_error(done, "IS2CLOUD_SEED='-5' is negative")
    assert not cache.exists()


def test_bad_cycles(tmp_path):
    one_line_error(run("sample-data", "--aoi", str(GREENLAND), "--cycles", "a", cwd=tmp_path),
                   "--cycles 'a': give comma-separated cycle numbers")


def test_product_mismatch_names_the_cli_flag(index, tmp_path):
    target = tmp_path / "ATL06_006.parquet"
    target.write_bytes(index.read_bytes())
    done = run("index", "build", "--aoi", str(GRAND_MESA), "--product", "ATL03", "--out", str(target), cwd=tmp_path)
    one_line_error(done, "indexes ATL06 granules, not ATL03", "--overwrite")
    assert "mode=" not in done.stderr


# -- 10. Ctrl-C ------------------------------------------------------------------------------------------------------


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "IS2CLOUD_CACHE": str(cache), "IS2CLOUD_MODE": "local"}
    # A shell runs background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt handler:
    # give the child the default disposition, as a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "is2cloud.cli", "sample-data", "--preset", "test", "--force"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".test.tmp") for p in (cache / "archive").glob(".*")):  # generating
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    lines = [line for line in err.strip().splitlines() if not line.startswith("archive 'test': granules ")]  # progress
    assert lines == ["is2cloud sample-data: interrupted; nothing was written"], err
    assert not (cache / "archive" / "test").exists()
