"""Bad input, everywhere the same (issue 16, part 3): the table "Errors you may meet" in the README is the
list of cases, and this file checks it cannot drift.

Each row of the table has an ``id``. Here every id is a :class:`Case` (or, for a case an older test already
covers, an entry of :data:`ELSEWHERE` naming that test). A case runs the bad input through the API (the
exception named in the table's column, its message holding the table's message) and through the command
line (exit 2, one line ``is2cloud <command>: error: <message>``, no traceback), and checks that nothing
was left behind: no new file in the case's folder, no new object in the output bucket. The command line
runs against this module's local cloud (``IS2CLOUD_ENDPOINT``), so its S3 writes can be checked too.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import box, mapping

from is2cloud import geoparquet, methods, settings
from is2cloud.catalog import find_granules
from is2cloud.geoparquet import write_geoparquet
from is2cloud.localcloud import LocalCloud
from is2cloud.methods import chunkindex, kerchunk, repacked, virtual
from is2cloud.methods.schema import empty_frame

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
GRAND_MESA = REPO / "data" / "grandmesa.geojson"
OUT_BUCKET = "is2cloud-scratch"
ARCHIVE = "nsidc-cumulus-prod-protected"


# -- the README table -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    message: str  # the start (or a fixed part) of the message, as the code says it
    exception: str  # the API's exception class, "-" (command line only) or "valid" (not an error)


def readme_rows() -> list[Row]:
    """The rows of the table under "## Errors you may meet": | `id` | bad input | `message` | `Exception` | ..."""
    text = README.read_text()
    section = text.split("## Errors you may meet", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`([a-z0-9-]+)`", cells[0]) if len(cells) >= 5 else None
        if m:
            message = re.match(r"`([^`]+)`", cells[2])
            exception = re.match(r"`([^`]+)`", cells[3])
            rows.append(Row(m.group(1), message.group(1) if message else "",
                            exception.group(1) if exception else cells[3]))
    return rows


# -- running a case ---------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """What a case may use: the module's cloud and credentials, the granules, a folder of its own."""

    cloud: LocalCloud
    creds: Any
    granules: list
    archive: Any
    index: Path  # a chunk index of the granules (local file)
    references: str  # kerchunk references of the granules (s3://)
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    inputs: set[str] = field(default_factory=set)  # what the case itself made (its bad input)

    def aoi(self, name: str, content: str | dict) -> Path:
        path = self.tmp / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return self.made(path)

    def made(self, path: Any) -> Any:
        self.inputs.add(str(path))
        return path


@dataclass(frozen=True)
class Case:
    """``api(ctx)`` must raise the table's exception (or, for a valid input, return what ``check`` accepts);
    ``cli(ctx)`` gives the command line's arguments (None: an API-only case; ``ctx.env`` adds variables)."""

    api: Callable[[Ctx], Any] | None
    cli: Callable[[Ctx], list[str]] | None
    check: Callable[[Ctx, Any], None] | None = None  # for a valid input: what the API returned is right
    cli_out: str = ""  # for a valid input: what the command prints


def _feature(geometry: dict, **extra: Any) -> dict:
    return {"type": "FeatureCollection", **extra,
            "features": [{"type": "Feature", "properties": {}, "geometry": geometry}]}


def _swapped(path: Path) -> dict:
    geo = json.loads(path.read_text())
    geom = geo["features"][0]["geometry"]
    geom["coordinates"] = [[[y, x] for x, y, *_ in ring] for ring in geom["coordinates"]]
    return geo


BOW_TIE = {"type": "Polygon", "coordinates": [[[-45, 62], [-44, 63], [-44, 62], [-45, 63], [-45, 62]]]}
# From 100 E eastward across the antimeridian to 30 W: Greenland's granules are in it.
ACROSS_ANTIMERIDIAN = {"type": "Polygon", "coordinates": [[[100, 59], [330, 59], [330, 84], [100, 84], [100, 59]]]}
GLOBE = {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]}


def _search(path_of: Callable[[Ctx], Any], product: str = "ATL06", version: str = "006") -> tuple:
    """An AOI case of ``find_granules`` and ``is2cloud search``."""
    return (lambda c: find_granules(path_of(c), product, version, archive=c.archive),
            lambda c: ["search", "--aoi", str(path_of(c)), "--product", product, "--version", version])


def _all_atl06(c: Ctx, found: Any) -> None:
    every = sorted(k.rsplit("/", 1)[1] for k in c.archive.keys if "/ATL06/" in k)
    assert sorted(g["umm"]["GranuleUR"] for g in found) == every and every


def _crosses(c: Ctx, found: Any) -> None:
    """The granules under the AOI are found, and a query of the chunk index gives rows on its side of the world."""
    import numpy as np

    from is2cloud.aoi import load_aoi

    assert load_aoi(ACROSS_ANTIMERIDIAN).crosses_antimeridian
    assert sorted(g["umm"]["GranuleUR"] for g in found) == sorted(g["umm"]["GranuleUR"] for g in c.granules)
    rows = chunkindex.subset(str(c.index), ACROSS_ANTIMERIDIAN, credentials=c.creds, out_credentials=c.creds)
    lon = rows.geometry.x.to_numpy()
    assert len(rows) > 0 and np.all((lon >= 100) | (lon <= -30)), lon


def _setting(var: str, value: str) -> Case:
    def api(c: Ctx) -> Any:
        c.env[var] = value
        old = os.environ.get(var)
        os.environ[var] = value
        try:
            return settings.load_settings()
        finally:
            os.environ.pop(var) if old is None else os.environ.__setitem__(var, old)

    def cli(c: Ctx) -> list[str]:
        c.env[var] = value
        return ["search", "--aoi", str(GREENLAND)]

    return Case(api, cli)


def _truncated(c: Ctx) -> Path:
    path = c.tmp / "truncated.parquet"
    data = c.index.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return c.made(path)


def _corrupted(c: Ctx) -> Path:
    path = c.tmp / "corrupted.parquet"
    path.write_bytes(b"PAR1" + os.urandom(3000) + b"\x10\x00\x00\x00PAR1")
    return c.made(path)


def _foreign(c: Ctx) -> Path:
    """A GeoParquet file, but of rows, not an index."""
    path = c.tmp / "rows.parquet"
    write_geoparquet(empty_frame(), path)
    return c.made(path)


def _query(index_of: Callable[[Ctx], Any], out: Callable[[Ctx], str] | None = None) -> tuple:
    return (lambda c: chunkindex.subset(str(index_of(c)), GREENLAND, credentials=c.creds, out_credentials=c.creds),
            lambda c: ["index", "query", "--index", str(index_of(c)), "--aoi", str(GREENLAND),
                       *(["--out", out(c)] if out else [])])


def _write_rows(url_of: Callable[[Ctx], str]) -> tuple:
    """Writing rows (``write_geoparquet``, ``is2cloud index query --out``) somewhere that cannot take them."""
    return (lambda c: write_geoparquet(empty_frame(), url_of(c), credentials=c.creds),
            lambda c: ["index", "query", "--index", str(c.index), "--aoi", str(GREENLAND), "--out", url_of(c)])


def _corrupt_references(c: Ctx) -> str:
    """A copy of the kerchunk references whose manifest is cut short."""
    import obstore

    store = c.creds.obstore(OUT_BUCKET)
    src = c.references.removeprefix(f"s3://{OUT_BUCKET}/")
    dst = f"{src}-truncated"
    for batch in obstore.list(store, prefix=src + "/"):
        for o in batch:
            body = bytes(obstore.get(store, o["path"]).bytes())
            if o["path"].endswith("references.json"):
                body = body[: len(body) // 2]
            obstore.put(store, dst + o["path"][len(src):], body)
            c.made(f"s3://{OUT_BUCKET}/{dst}{o['path'][len(src):]}")
    return f"s3://{OUT_BUCKET}/{dst}"


def _prepare_into_archive(c: Ctx) -> None:
    """Every method's prepare refuses the archive bucket before reading a granule (the baseline prepares
    nothing); the last refusal is raised for the table's check, after each was compared with the first."""
    seq = c.cloud.seq
    errors: dict[str, Exception] = {}
    for method in methods.available():
        try:
            method.prepare(c.granules, out=f"s3://{ARCHIVE}/{method.NAME}/artefact", credentials=c.creds,
                           out_credentials=c.creds, client="sync", progress=False)
        except Exception as exc:
            errors[method.NAME] = exc
    assert [r for r in c.cloud.ledger(seq) if r.key.endswith(".h5")] == [], "granules were read first"
    assert set(errors) == {m.NAME for m in methods.available()} - {"baseline"}, errors
    kinds = {(type(e), str(e).split(": ", 1)[1]) for e in errors.values()}
    assert len(kinds) == 1, f"the methods refuse differently: {errors}"
    raise next(iter(errors.values()))


CASES: dict[str, Case] = {
    "aoi-missing": Case(*_search(lambda c: c.tmp / "nowhere.geojson")),
    "aoi-empty": Case(*_search(lambda c: c.aoi("empty.geojson", ""))),
    "aoi-not-json": Case(*_search(lambda c: c.aoi("broken.geojson", '{"type": "Polygon", "coordinates": [[[-45'))),
    "aoi-point": Case(*_search(lambda c: c.aoi("point.geojson", _feature({"type": "Point", "coordinates": [-45, 62.8]})))),
    "aoi-self-intersecting": Case(*_search(lambda c: c.aoi("bowtie.geojson", _feature(BOW_TIE)))),
    "aoi-lon-lat-swapped": Case(*_search(lambda c: c.aoi("swapped.geojson", _swapped(GRAND_MESA)))),
    "aoi-projected-crs": Case(*_search(lambda c: c.aoi("polar.geojson", _feature(
        mapping(box(-200_000, -2_500_000, -100_000, -2_400_000)),
        crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3413"}})))),
    "aoi-outside-data": Case(*_search(lambda c: c.aoi("pacific.geojson", _feature(mapping(box(-150, 10, -149, 11)))))),
    "aoi-whole-globe": Case(*_search(lambda c: c.aoi("globe.geojson", _feature(GLOBE))), check=_all_atl06,
                            cli_out="2 granules,"),
    "aoi-across-antimeridian": Case(*_search(lambda c: c.aoi("across.geojson", _feature(ACROSS_ANTIMERIDIAN))),
                                    check=_crosses, cli_out="2 granules,"),
    "product-unknown": Case(*_search(lambda c: GREENLAND, product="ATL99")),
    "version-unknown": Case(*_search(lambda c: GREENLAND, version="005")),
    "setting-seed": _setting("IS2CLOUD_SEED", "-5"),
    "setting-mode": _setting("IS2CLOUD_MODE", "cloudy"),
    "setting-scale": _setting("IS2CLOUD_SCALE", "huge"),
    "setting-profile": _setting("IS2CLOUD_PROFILE", "satellite"),
    "setting-output-bucket": _setting("IS2CLOUD_OUTPUT_BUCKET", "s3://"),
    "option-fault-rate": Case(lambda c: LocalCloud(fault_rate=2.0),
                              lambda c: ["serve", "--preset", "none", "--fault-rate", "2"]),
    "option-port": Case(lambda c: LocalCloud(port=99999), lambda c: ["serve", "--preset", "none", "--port", "99999"]),
    "index-missing": Case(*_query(lambda c: c.tmp / "no-index.parquet")),
    "index-corrupted": Case(*_query(_corrupted)),
    "index-truncated": Case(*_query(_truncated)),
    "index-foreign": Case(*_query(_foreign)),
    "references-missing": Case(lambda c: kerchunk.subset(f"s3://{OUT_BUCKET}/no/references", GREENLAND,
                                                         credentials=c.creds, out_credentials=c.creds), None),
    "references-truncated": Case(lambda c: kerchunk.subset(_corrupt_references(c), GREENLAND, credentials=c.creds,
                                                           out_credentials=c.creds), None),
    "store-missing": Case(lambda c: virtual.subset(f"s3://{OUT_BUCKET}/no/store.icechunk", GREENLAND,
                                                   credentials=c.creds, out_credentials=c.creds), None),
    "copies-missing": Case(lambda c: repacked.subset(f"s3://{OUT_BUCKET}/no/copies/", GREENLAND,
                                                     credentials=c.creds, out_credentials=c.creds), None),
    "out-parent-is-a-file": Case(*_write_rows(lambda c: c.aoi("afile", "x") and str(c.tmp / "afile" / "rows.parquet"))),
    "out-no-bucket": Case(*_write_rows(lambda c: "s3://no-such-bucket/rows.parquet")),
    "out-archive-bucket": Case(_prepare_into_archive,
                               lambda c: ["index", "build", "--aoi", str(GREENLAND), "--out",
                                          f"s3://{ARCHIVE}/chunk-index/ATL06_006.parquet"]),
}

# Cases an older test already runs (file::test); its source must hold the table's message.
ELSEWHERE: dict[str, str] = {
    "out-exists": "test_cli_errors.py::test_an_existing_output_is_refused_then_replaced_with_overwrite",
    "variables-unknown": "test_cli_errors.py::test_build_with_a_missing_variable_fails_before_reading_the_granules",
    "product-of-index": "test_cli_errors.py::test_query_checks_product_and_version",
    "version-of-index": "test_cli_errors.py::test_query_checks_product_and_version",
    "option-cycles": "test_cli_errors.py::test_bad_cycles",
    "option-suite": "test_cli_errors.py::test_bench_with_a_bad_suite_keeps_the_csv",
    "interrupted-sample-data": "test_cli_errors.py::test_ctrl_c_is_one_line_and_exit_130",
    "interrupted-index-build": "test_bad_input_table.py::test_an_interrupted_index_build_leaves_nothing",
    "interrupted-prepare": "test_bad_input_table.py::test_an_interrupted_prepare_leaves_nothing",
    "stale-index": "test_chunkindex.py::test_changed_object_is_stale",
    "aoi-outside-index": "test_chunkindex.py::test_aoi_outside_the_index",
}


# -- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory, granules, creds, archive_cloud, test_archive):
    index = tmp_path_factory.mktemp("index") / "ATL06_006.parquet"
    chunkindex.build(granules, index, credentials=creds, client="sync", progress=False)
    refs = kerchunk.prepare(granules, out=f"s3://{OUT_BUCKET}/bad-input/kerchunk", credentials=creds,
                            out_credentials=creds, client="sync", progress=False)
    return {"index": index, "references": refs.location, "granules": granules, "archive": test_archive}


@pytest.fixture
def ctx(shared, creds, archive_cloud, tmp_path) -> Ctx:
    return Ctx(archive_cloud, creds, shared["granules"], shared["archive"], shared["index"], shared["references"],
               tmp_path)


def _state(c: Ctx) -> set[str]:
    """Every file in the case's folder and every object in the output bucket."""
    files = {str(p) for p in c.tmp.rglob("*")}
    s3 = c.creds.boto3_client("s3")
    keys = {f"s3://{OUT_BUCKET}/{o['Key']}" for page in s3.get_paginator("list_objects_v2").paginate(Bucket=OUT_BUCKET)
            for o in page.get("Contents", [])}
    return files | keys


def run_cli(c: Ctx, args: list[str], *, traceback: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "IS2CLOUD_SCALE": "test", "IS2CLOUD_MODE": "local", "IS2CLOUD_ENDPOINT": c.cloud.endpoint,
           **c.env}
    return subprocess.run([sys.executable, "-m", "is2cloud.cli", *(["--traceback"] if traceback else []), *args],
                          cwd=c.tmp, env=env, capture_output=True, text=True, timeout=600)


def _error_line(done: subprocess.CompletedProcess, command: str) -> str:
    """The one error line of a failed command (argparse's usage lines may come before it)."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("usage:") and
             not line.startswith(" ") and ": warning: " not in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"is2cloud {command}: error: "), lines[0]
    return lines[0]


# -- the table is the list of cases ----------------------------------------------------------------------------


def test_every_row_of_the_readme_table_is_a_case():
    rows = readme_rows()
    ids = [r.id for r in rows]
    assert len(ids) >= 20 and len(set(ids)) == len(ids), ids
    assert set(ids) == set(CASES) | set(ELSEWHERE), (
        f"rows without a case: {sorted(set(ids) - set(CASES) - set(ELSEWHERE))}; "
        f"cases without a row: {sorted(set(CASES) | set(ELSEWHERE) - set(ids))}")
    assert not set(CASES) & set(ELSEWHERE)


def test_every_message_of_the_table_is_what_the_code_says():
    """A message in the table is a literal piece of the package's source (so a reworded error fails here),
    and a case run elsewhere checks for it."""
    source = "\n".join(p.read_text() for p in (REPO / "src" / "is2cloud").rglob("*.py"))
    for row in readme_rows():
        if row.exception == "valid":
            continue
        assert row.message, f"{row.id}: no message in the table"
        assert row.message in source, f"{row.id}: the message {row.message!r} is not in src/is2cloud"
        if row.id in ELSEWHERE:
            file, name = ELSEWHERE[row.id].split("::")
            tree = ast.parse((REPO / "tests" / file).read_text())
            fn = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name), None)
            assert fn is not None, f"{row.id}: there is no test {ELSEWHERE[row.id]}"


# -- each case, through the API and the command line ------------------------------------------------------------


def _row(case_id: str) -> Row:
    return next(r for r in readme_rows() if r.id == case_id)


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_the_api_raises_the_tables_exception(case_id, ctx):
    row, case = _row(case_id), CASES[case_id]
    if case.api is None:
        pytest.fail(f"{case_id}: every row has an API case")
    before = _state(ctx)
    if row.exception == "valid":
        case.check(ctx, case.api(ctx))
        return
    with pytest.raises(Exception) as err:
        case.api(ctx)
    names = [k.__name__ for k in type(err.value).__mro__]
    assert row.exception in names, f"{case_id}: {type(err.value).__name__} ({names}), not {row.exception}"
    assert isinstance(err.value, (ValueError, OSError, RuntimeError)), type(err.value).__mro__
    assert row.message in str(err.value), f"{case_id}: {err.value}"
    assert _state(ctx) - before - ctx.inputs == set(), f"{case_id} left {_state(ctx) - before - ctx.inputs}"


@pytest.mark.parametrize("case_id", sorted(k for k, v in CASES.items() if v.cli is not None))
def test_the_command_line_says_it_in_one_line(case_id, ctx):
    row, case = _row(case_id), CASES[case_id]
    args = case.cli(ctx)
    before = _state(ctx)
    done = run_cli(ctx, args)
    if row.exception == "valid":
        assert done.returncode == 0 and case.cli_out in done.stdout, (done.stdout, done.stderr)
        return
    line = _error_line(done, args[0])
    assert row.message in line, line
    assert _state(ctx) == before, f"{case_id} left {_state(ctx) - before}"


def test_a_traceback_only_when_asked_for(ctx):
    args = ["search", "--aoi", str(ctx.tmp / "nowhere.geojson")]
    assert "Traceback" not in run_cli(ctx, args).stderr
    done = run_cli(ctx, args, traceback=True)
    assert done.returncode == 2 and "Traceback (most recent call last)" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("is2cloud search: error: cannot read AOI file")


# -- interrupted work leaves nothing ------------------------------------------------------------------------------


class Interrupter(threading.Thread):
    """Calls ``target`` once the ledger shows a request that ``seen`` accepts (unless stopped first)."""

    def __init__(self, cloud: LocalCloud, seen: Callable[[Any], bool], target: Callable[[], None]):
        super().__init__(daemon=True)
        self.cloud, self.seen, self.target, self.seq = cloud, seen, target, cloud.seq
        self.stopped, self.fired = threading.Event(), threading.Event()
        self.start()

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while not self.stopped.wait(0.02) and time.monotonic() < deadline:
            if any(self.seen(r) for r in self.cloud.ledger(self.seq)):
                self.fired.set()
                self.target()
                return

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def test_an_interrupted_index_build_leaves_nothing(ctx):
    out = ctx.tmp / "ATL06_006.parquet"
    env = {**os.environ, "IS2CLOUD_SCALE": "test", "IS2CLOUD_MODE": "local", "IS2CLOUD_ENDPOINT": ctx.cloud.endpoint}
    proc = subprocess.Popen([sys.executable, "-m", "is2cloud.cli", "index", "build", "--aoi", str(GREENLAND),
                             "--out", str(out)], cwd=ctx.tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Ctrl-C once the build reads the granules (as a terminal sends it: to the process)
    Interrupter(ctx.cloud, lambda r: r.verb == "GET" and r.key.endswith(".h5"),
                lambda: proc.send_signal(signal.SIGINT)).join(timeout=300)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "is2cloud index: interrupted; nothing was written", err
    assert list(ctx.tmp.iterdir()) == []


@pytest.mark.parametrize("name", [m.NAME for m in methods.available()])
def test_an_interrupted_prepare_leaves_nothing(name, ctx, monkeypatch):
    """Ctrl-C (SIGINT to this process) once ``prepare`` has started writing an artefact of several objects,
    or, for one written once at the end, once it has read the granules: nothing is left under ``out``."""
    method = methods.get(name)
    out = f"s3://{OUT_BUCKET}/interrupted/{name}/artefact" + (".parquet" if name == "chunkindex" else "")
    prefix = f"interrupted/{name}/"
    several = {"virtual", "kerchunk", "repacked"}  # interrupt between their writes
    seen = ((lambda r: r.verb in ("PUT", "POST") and r.key.startswith(prefix)) if name in several
            else (lambda r: r.verb == "GET" and r.key.endswith(".h5")))
    before = _state(ctx)
    armed, delivered = True, threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:  # Ctrl-C inside prepare only, never in pytest after it
        if armed:
            delivered.set()
            raise KeyboardInterrupt

    hook, again = sys.unraisablehook, []

    def on_unraisable(unraisable: Any) -> None:
        # Python prints and drops an exception raised in a weakref callback or a __del__: a Ctrl-C whose handler
        # runs there is lost (the one failure of the CI run at be4383e, 726 passed). A user presses it again, a
        # moment later (os.kill here would run the handler at once, inside this hook, and lose it again).
        if armed and isinstance(unraisable.exc_value, KeyboardInterrupt):
            again.append(threading.Timer(0.05, lambda: armed and os.kill(os.getpid(), signal.SIGINT)))
            again[-1].start()
        else:
            hook(unraisable)

    previous = signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = on_unraisable
    # requests take time (remote: 100 ms to first byte, 20 MB/s), so the interrupt lands inside prepare: under
    # in-region the chunk index read its two test granules and finished before the watcher saw the first GET
    ctx.cloud.set_profile("remote")
    watcher = Interrupter(ctx.cloud, seen, lambda: os.kill(os.getpid(), signal.SIGINT))
    if name not in several:  # written once at the end: it waits there for the interrupt (a loaded machine's
        write = geoparquet.write_geoparquet  # watcher once saw the reads only after the write had finished)

        def write_once_interrupted(*args: Any, **kwargs: Any) -> Any:
            watcher.fired.wait(60)
            delivered.wait(10)  # the handler raises in here, unless it already has (and its exception was lost)
            return write(*args, **kwargs)

        monkeypatch.setattr(geoparquet, "write_geoparquet", write_once_interrupted)
    try:
        result = method.prepare(ctx.granules, out=out, credentials=ctx.creds, out_credentials=ctx.creds,
                                client="sync", progress=False)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    finally:
        armed = False
        watcher.stop()
        for timer in again:
            timer.cancel()
            timer.join()
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = hook
        ctx.cloud.set_profile("none")
    assert interrupted or (result is None and not watcher.fired.is_set()), \
        f"{name}: prepare finished before the interrupt"  # the baseline: nothing to prepare, nothing read
    time.sleep(1)  # anything still running in the background would write now
    assert _state(ctx) - before == set(), f"{name} left {sorted(_state(ctx) - before)}"
