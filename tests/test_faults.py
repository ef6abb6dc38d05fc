"""Every method under injected faults (issue 16, part 2): with 5 % and with 20 % of requests failing
(503 SlowDown, 500 InternalError, a connection reset half way through the body), ``prepare`` and
``subset`` give what a fault-free run gives, the ledger shows the faults, and what was written (the
prepared artefact, the rows as GeoParquet) is complete when read back.

Parametrized over :func:`is2cloud.methods.available`, so a new method is covered as soon as it is
registered (its artefact needs a reader in :data:`ARTEFACT_READERS`; the test says so otherwise).
The fault-free reference of each method is prepared once per module.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from is2cloud import methods
from is2cloud.geoparquet import read_geoparquet, write_geoparquet
from is2cloud.localcloud.server import FAULT_KINDS
from is2cloud.methods import assert_same_rows
from is2cloud.parallel import granule_name

GREENLAND = Path(__file__).resolve().parents[1] / "data" / "greenland_aoi.geojson"
RATES = (0.05, 0.20)
# Faults hit every request that moves an object or its metadata, reads and writes alike (a reset needs a
# body to cut, so it happens to GETs only).
VERBS = ("GET", "HEAD", "PUT", "POST")
NAMES = [m.NAME for m in methods.available()]


# -- reading back what prepare wrote ---------------------------------------------------------------------------


def _virtual(prepared: Any, creds: Any) -> Any:
    import zarr

    from is2cloud.methods.virtual import open_store

    root, records = open_store(prepared.location, credentials=creds, out_credentials=creds)
    arrays = {path: (a.shape, str(a.dtype), a.chunks, a.attrs.asdict())
              for path, a in root.members(max_depth=None) if isinstance(a, zarr.Array)}
    attrs = {name: g.attrs.asdict() for name, g in root.groups()}
    return {"records": records, "arrays": arrays, "attrs": attrs}


def _kerchunk(prepared: Any, creds: Any) -> Any:
    import obstore

    from is2cloud.methods.kerchunk.refs import read_manifest

    manifest = read_manifest(prepared.location, creds)
    assert manifest is not None, f"no manifest at {prepared.location}"
    out = {}
    for name, entry in manifest["granules"].items():
        url = prepared.location.rstrip("/") + "/" + entry["refs"]
        bucket, key = url.removeprefix("s3://").split("/", 1)
        refs = json.loads(bytes(obstore.get(creds.obstore(bucket), key).bytes()))
        out[name] = ({k: v for k, v in entry.items() if k != "refs"}, refs)
    return out


def _repacked(prepared: Any, creds: Any) -> Any:
    """Each copy's S3 metadata and every dataset in it (the copy fetched whole: one GET, then h5py in memory)."""
    import io

    import h5py
    import numpy as np

    from is2cloud.methods import repacked
    from is2cloud.methods.ranges import split_url

    s3 = creds.boto3_client("s3")
    out = {}
    for copy in repacked._copies(prepared.location, creds):
        copy = repacked.check_copy(copy, credentials=creds, out_credentials=creds)
        bucket, key = split_url(copy.url)
        values: dict[str, Any] = {}
        with h5py.File(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), "r") as h5:
            def visit(path: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    values[path] = (obj.dtype.str, obj.shape, obj.chunks, np.asarray(obj[()]).tobytes())
            h5.visititems(visit)
        out[copy.name] = (copy.source_url, copy.source_etag, copy.page_size, values)
    return out


def _chunkindex(prepared: Any, creds: Any) -> Any:
    from is2cloud.methods.chunkindex import read_index

    index = read_index(prepared.location, credentials=creds)
    frame = pd.DataFrame(index.frame).drop(columns="footprint")
    frame["footprint"] = index.frame["footprint"].to_wkb()
    meta = {k: v for k, v in index.meta.items() if k not in ("created", "updated")}
    return frame.reset_index(drop=True), meta


ARTEFACT_READERS: dict[str, Callable[[Any, Any], Any]] = {
    "virtual": _virtual, "kerchunk": _kerchunk, "repacked": _repacked, "chunkindex": _chunkindex}


def assert_same_artefact(name: str, a: Any, b: Any) -> None:
    if isinstance(a, tuple) and a and isinstance(a[0], pd.DataFrame):  # the chunk index: frame, meta
        pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
        assert a[1] == b[1], f"{name}: the index metadata differs"
    else:
        assert a == b, f"{name}: the artefact written under faults differs from the fault-free one"


# -- fixtures -----------------------------------------------------------------------------------------------------


@dataclass
class Clean:
    """A method's fault-free run: what prepare returned, its artefact read back, and the rows."""

    prepared: Any
    artefact: Any
    rows: Any


@pytest.fixture(scope="module")
def clean(granules, creds, archive_cloud) -> Callable[[str], Clean]:
    """A method's fault-free run, made on first use and kept for the module (both rates share it)."""
    runs: dict[str, Clean] = {}

    def get(name: str) -> Clean:
        if name not in runs:
            method = methods.get(name)
            archive_cloud.set_faults(0.0)
            prepared = method.prepare(granules, credentials=creds, out_credentials=creds, client="sync",
                                      progress=False)
            artefact = None if prepared is None else _read_artefact(name, prepared, creds)
            rows = method.subset(prepared if prepared is not None else granules, GREENLAND, credentials=creds,
                                 out_credentials=creds, client="sync", progress=False)
            assert len(rows) > 0, name
            runs[name] = Clean(prepared, artefact, rows)
        return runs[name]

    return get


def _read_artefact(name: str, prepared: Any, creds: Any) -> Any:
    reader = ARTEFACT_READERS.get(name)
    if reader is None:
        pytest.fail(f"method {name!r} prepares an artefact ({type(prepared).__name__}) that tests/test_faults.py "
                    f"cannot read back: add a reader to ARTEFACT_READERS", pytrace=False)
    return reader(prepared, creds)


def _faulty_location(location: str, rate: float) -> str:
    """Beside the fault-free artefact: ``s3://bucket/faults-20/<the rest>``."""
    bucket, rest = location.removeprefix("s3://").split("/", 1)
    return f"s3://{bucket}/faults-{round(rate * 100):02d}/{rest}"


def _kinds(cloud: Any, since: int) -> Counter:
    return Counter(r.fault for r in cloud.ledger(since) if r.fault)


# -- the test ------------------------------------------------------------------------------------------------------


def fault_seed(rate: float, start: int) -> int:
    """The first seed from ``start`` whose fault draws (as the server draws them: one ``random()`` per request,
    then a kind) fail the very first request. The rate stays what it says for every later request; this only
    makes a phase of a few requests (a repacked copy is 2 GETs and 2 PUTs) meet a fault at 5 %."""
    def first_fails(seed: int) -> bool:
        rng = random.Random(seed)
        return rng.random() < rate and rng.choice(FAULT_KINDS) != "reset"  # a HEAD or PUT has no body to cut

    seed = start
    while not first_fails(seed):
        seed += 1
    return seed


def _faulty(cloud: Any, rate: float, seed: int, what: str, run: Callable[[], Any], *, until: set[str] | None = None,
            attempts: int = 10) -> tuple[Any, Counter]:
    """``run()`` with ``rate`` of the requests failing, again (the fault draws going on) until the ledger shows
    a fault (and, with ``until``, every kind in it over the runs); returns the last result and the faults of
    all runs. ``run`` checks its own result, so a run without faults is checked too, but never suffices."""
    seen: Counter = Counter()
    cloud.set_faults(rate, kinds=FAULT_KINDS, seed=fault_seed(rate, seed), verbs=VERBS)
    try:
        for _ in range(attempts):
            seq = cloud.seq
            result = run()
            seen += _kinds(cloud, seq)
            if seen and (until is None or until <= set(seen)):
                return result, seen
    finally:
        cloud.set_faults(0.0)
    pytest.fail(f"{what}: {attempts} runs at {rate:.0%} drew the faults {dict(seen)}, not {sorted(until or ['any'])}")


@pytest.mark.parametrize("rate", RATES, ids=lambda r: f"{round(r * 100)}pct")
@pytest.mark.parametrize("name", NAMES)
def test_same_rows_and_complete_outputs_under_faults(name, rate, granules, creds, archive_cloud, clean):
    method, reference = methods.get(name), clean(name)
    seed = round(rate * 1000) + 100 * NAMES.index(name)
    prepared, seen = None, Counter()
    if reference.prepared is not None:
        out = _faulty_location(reference.prepared.location, rate)
        prepared, seen = _faulty(archive_cloud, rate, seed, f"{name}.prepare", lambda: method.prepare(
            granules, out=out, credentials=creds, out_credentials=creds, client="sync", progress=False))

    def subset() -> Any:
        rows = method.subset(prepared if prepared is not None else granules, GREENLAND, credentials=creds,
                             out_credentials=creds, client="sync", progress=False)
        assert_same_rows(reference.rows, rows, names=("fault-free", f"{rate:.0%} faults"))
        return rows

    # Subset until every kind of fault has hit it (a reset needs a body to cut: GETs only).
    rows, faults = _faulty(archive_cloud, rate, seed, f"{name}.subset", subset, until=set(FAULT_KINDS), attempts=100)
    seen += faults
    url = f"s3://is2cloud-scratch/faults-{round(rate * 100):02d}/{name}/rows.parquet"
    _, faults = _faulty(archive_cloud, rate, seed, f"{name}: writing the rows",
                        lambda: write_geoparquet(rows, url, credentials=creds))
    seen += faults
    print(f"{name} at {rate:.0%}: faults {dict(seen)}")

    # What was written is complete: read back without faults and compared with the fault-free run.
    assert_same_rows(reference.rows, read_geoparquet(url, credentials=creds), names=("fault-free", "written"))
    if prepared is not None:
        assert set(prepared.granules) == {granule_name(g) for g in granules}
        assert_same_artefact(name, reference.artefact, _read_artefact(name, prepared, creds))
