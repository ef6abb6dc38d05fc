"""Notebook 05's kerchunk references against the embedded cloud: the baseline's rows (several AOI
shapes, the antimeridian), COMPACT data inlined, bad input (not HDF5, stale or missing reference files,
a missing variable), nothing half-written, and the preparation costs of each open configuration.

Translating one synthetic ATL06 granule takes kerchunk ~20 s on a loaded 2-core machine, so one store
(one Greenland granule and the antimeridian granule with COMPACT data) serves most tests; stale and
missing references are made by copying that store's objects, not by translating again."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from granule_specs import ANTIMERIDIAN_AOIS, antimeridian_atl06
from shapely.geometry import Polygon, box
from test_virtual import with_compact

from is2cloud.aoi import load_aoi
from is2cloud.methods import baseline, check_canonical, kerchunk
from is2cloud.methods.baseline import MissingVariableError
from is2cloud.methods.identity import assert_same_rows
from is2cloud.methods.kerchunk import (
    MissingReferencesError,
    OutsideReferencesError,
    ReferenceError_,
    StaleReferencesError,
)

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
AM_NAME = "ATL06_20190101000000_00010303_006_01.h5"
_W, _S, _E, _N = load_aoi(GREENLAND).bounds
GREENLAND_HOLED = Polygon(box(_W, _S, _E, _N).exterior.coords, [box(_W + 0.05, _S + 0.1, _E - 0.05, _N - 0.1).exterior.coords])


@pytest.fixture(scope="module")
def bucket(archive_cloud):
    return archive_cloud.buckets[0]


@pytest.fixture(scope="module")
def s3(creds):
    return creds.boto3_client("s3")


def put(s3, bucket, key, body) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def keys(s3, bucket, prefix):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


@pytest.fixture(scope="module")
def store(granules, creds, bucket, s3, tmp_path_factory):
    d = tmp_path_factory.mktemp("am")
    path = with_compact(antimeridian_atl06(d), d / AM_NAME)
    am = put(s3, bucket, f"granules/{AM_NAME}", path.read_bytes())
    items = [granules[0], am]
    st = kerchunk.prepare(items, out=f"s3://{bucket}/kerchunk/test", credentials=creds, out_credentials=creds,
                          client="sync")
    return st, items


def test_handle_manifest_and_inlined_compact(store, creds):
    st, items = store
    assert st.method == "kerchunk" and len(st.granules) == 2 and st.nbytes > 0
    manifest = kerchunk.read_manifest(st.location, creds)
    assert manifest["format"] == kerchunk.FORMAT
    entry = manifest["granules"][AM_NAME]
    assert entry["inline_threshold"] > 0 and entry["open_config"] == "blockcache"
    assert st.stats["inline_threshold"][items[0]["umm"]["GranuleUR"]] == 0  # no COMPACT data in it
    assert st.stats["gets"] > 0 and st.stats["bytes_read"] > 0


@pytest.mark.filterwarnings("ignore:the AOI .* misses the footprints")  # the baseline, on the Greenland granule
@pytest.mark.parametrize("aoi", [GREENLAND, GREENLAND_HOLED, *ANTIMERIDIAN_AOIS])
def test_same_rows_as_baseline(store, creds, aoi):
    st, items = store
    got = kerchunk.subset(st.location, aoi, credentials=creds, out_credentials=creds)
    check_canonical(got)
    want = baseline.subset(items, aoi, credentials=creds, client="sync")
    assert len(want) > 0
    assert_same_rows(want, got, names=("baseline", "kerchunk"))
    if aoi in ANTIMERIDIAN_AOIS:
        assert (got["rgt"] > 0).all()  # the COMPACT rgt was inlined, not read as zeros


def test_granules_read_a_group_at_a_time_give_the_same_rows(store, creds, monkeypatch):
    """The shared reader takes granules GRANULES_AT_ONCE at a time (bounded memory): one at a time, the
    same rows as all together, and only one group's reference documents held at a time."""
    from is2cloud.methods import refread
    from is2cloud.methods.kerchunk.refs import KerchunkGranule

    st, _ = store
    together = kerchunk.subset(st.location, GREENLAND, credentials=creds, out_credentials=creds)
    held: set[str] = set()
    most = [0]
    load, release = KerchunkGranule.load, KerchunkGranule.release

    async def counted_load(self):
        await load(self)
        held.add(self.name)
        most[0] = max(most[0], len(held))

    def counted_release(self):
        release(self)
        held.discard(self.name)

    monkeypatch.setattr(KerchunkGranule, "load", counted_load)
    monkeypatch.setattr(KerchunkGranule, "release", counted_release)
    monkeypatch.setattr(refread, "GRANULES_AT_ONCE", 1)
    one_by_one = kerchunk.subset(st.location, GREENLAND, credentials=creds, out_credentials=creds)
    assert len(together) > 0 and len(st.granules) > 1  # several groups of one
    assert_same_rows(together, one_by_one, names=("all granules at once", "one at a time"))
    assert most[0] == 1 and not held, f"{most[0]} granules' references held at once, {len(held)} kept after"
    with pytest.raises(ValueError, match="at_once"):
        refread.read_references([], None, credentials=creds, at_once=0)


def test_compact_variable_is_inlined(store, creds, tmp_path_factory):
    st, items = store
    got = kerchunk.subset(st, ANTIMERIDIAN_AOIS[0], (*baseline.DEFAULT_VARIABLES, "h_compact"), credentials=creds,
                          out_credentials=creds)
    assert np.array_equal(got["h_compact"].to_numpy(), got["h_li"].to_numpy())


def test_missing_variable(store, creds):
    st, _ = store
    with pytest.raises(MissingVariableError, match=f"{AM_NAME}: the variable /gt.*/land_ice_segments/nope"):
        kerchunk.subset(st, ANTIMERIDIAN_AOIS[0], (*baseline.DEFAULT_VARIABLES, "nope"), credentials=creds,
                        out_credentials=creds)


def test_aoi_outside(store, creds, granules, bucket, s3):
    st, _ = store
    copy = copy_store(s3, bucket, st.location, "kerchunk/greenland-only", drop=AM_NAME)
    with pytest.raises(OutsideReferencesError, match="outside the kerchunk references"):
        kerchunk.subset(copy, (10.0, 10.0, 11.0, 11.0), credentials=creds, out_credentials=creds)


def copy_store(s3, bucket, location, prefix, drop=None, edit=None) -> str:
    """Copy a reference store's objects to ``prefix`` (without granule ``drop``; ``edit(manifest)``)."""
    src = location.split("/", 3)[3]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{src}/references.json")["Body"].read())
    if drop:
        manifest["granules"].pop(drop)
    for e in manifest["granules"].values():
        s3.copy_object(Bucket=bucket, Key=f"{prefix}/{e['refs']}", CopySource={"Bucket": bucket,
                                                                             "Key": f"{src}/{e['refs']}"})
    if edit:
        edit(manifest)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/references.json", Body=json.dumps(manifest).encode())
    return f"s3://{bucket}/{prefix}"


def test_references_older_than_the_granule(store, creds, bucket, s3):
    st, _ = store

    def older(manifest):
        manifest["granules"][AM_NAME]["etag"] = "0" * 32

    loc = copy_store(s3, bucket, st.location, "kerchunk/stale", edit=older)
    with pytest.raises(StaleReferencesError, match=f"stale .*{AM_NAME}") as err:
        kerchunk.subset(loc, ANTIMERIDIAN_AOIS[0], credentials=creds, out_credentials=creds)
    for secret in (creds.secret_access_key, creds.session_token):
        assert secret not in str(err.value)
    # a reference file made for another version of the granule than the manifest records
    loc = copy_store(s3, bucket, st.location, "kerchunk/other")
    key = f"kerchunk/other/{kerchunk.read_manifest(loc, creds)['granules'][AM_NAME]['refs']}"
    doc = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    doc["is2cloud"]["etag"] = "1" * 32
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())
    with pytest.raises(StaleReferencesError, match=f"{AM_NAME}: its reference file .* another version"):
        kerchunk.subset(loc, ANTIMERIDIAN_AOIS[0], credentials=creds, out_credentials=creds)


def test_missing_reference_file(store, creds, bucket, s3):
    st, _ = store
    loc = copy_store(s3, bucket, st.location, "kerchunk/missing")
    entry = kerchunk.read_manifest(loc, creds)["granules"][AM_NAME]
    s3.delete_object(Bucket=bucket, Key=f"kerchunk/missing/{entry['refs']}")
    with pytest.raises(MissingReferencesError, match=f"{AM_NAME}: its reference file .* is missing"):
        kerchunk.subset(loc, ANTIMERIDIAN_AOIS[0], credentials=creds, out_credentials=creds)
    with pytest.raises(MissingReferencesError, match="no kerchunk references"):
        kerchunk.subset(f"s3://{bucket}/kerchunk/none", GREENLAND, credentials=creds, out_credentials=creds)


def test_not_hdf5_leaves_nothing(store, creds, bucket, s3):
    st, _ = store
    bad = put(s3, bucket, "bad/ATL06_20190101000000_00020303_006_01.h5", b"not an HDF5 file at all")
    with pytest.raises(ReferenceError_, match="ATL06_20190101000000_00020303_006_01.h5.*not an HDF5 file"):
        kerchunk.prepare([bad], out=f"s3://{bucket}/kerchunk/half", credentials=creds, out_credentials=creds,
                         client="sync")
    assert not keys(s3, bucket, "kerchunk/half")
    before = keys(s3, bucket, st.location.split("/", 3)[3])
    with pytest.raises(ReferenceError_):
        kerchunk.prepare([bad], out=st.location, credentials=creds, out_credentials=creds, client="sync")
    assert keys(s3, bucket, st.location.split("/", 3)[3]) == before


# -- preparation costs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory, s3, bucket):
    """A small HDF5 file (scattered metadata, a COMPACT dataset) to time the open configurations on."""
    path = tmp_path_factory.mktemp("small") / "ATL06_20190101000000_00030303_006_01.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for g in range(20):
            for v in range(5):
                f.create_dataset(f"g{g}/v{v}", data=rng.normal(size=3000), chunks=(1000,), compression="gzip")
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        h5py.h5d.create(f.id, b"calib", h5py.h5t.py_create(np.dtype("<f8")), h5py.h5s.create_simple((20,)),
                        dcpl=dcpl).write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(20.0))
    return put(s3, bucket, f"small/{path.name}", path.read_bytes())


def test_h5cloud_keywords_are_ignored(small, creds):
    fs = creds.s3fs()
    got = kerchunk.cache_of(fs, small, **kerchunk.open_options("h5cloud", 0))
    assert got["cache_name"] == got["s3fs_default"]["cache_type"] == "readahead"
    assert got["block_size"] == got["s3fs_default"]["block_size"]
    assert kerchunk.cache_of(fs, small, **kerchunk.open_options("none", 0))["cache_name"] == "none"


def test_the_block_cache_keeps_every_block_of_a_large_object(small, creds):
    """fsspec's block cache keeps 32 blocks unless told: 256 MiB of 8 MiB blocks, fewer than a 385 MB
    granule has, so a scan that jumps around would fetch evicted blocks again."""
    for size in (0, 57_000_000, 384_684_225, 7_000_000_000):
        opts = kerchunk.open_options("blockcache", size)
        assert opts["cache_options"]["maxblocks"] >= 32
        assert opts["cache_options"]["maxblocks"] * opts["block_size"] >= size
    assert kerchunk.open_options("blockcache", 384_684_225)["cache_options"]["maxblocks"] == 46
    with creds.s3fs().open(small, **kerchunk.open_options("blockcache", 400_000_000)) as f:
        assert type(f.cache).__name__ == "BlockCache" and f.cache.maxblocks == 48


def test_preparation_costs(small, creds, archive_cloud):
    table = kerchunk.preparation_costs(small, credentials=creds, cloud=archive_cloud)
    assert list(table["config"]) == [c for c, _ in kerchunk.COST_CONFIGS]
    by = table.set_index("config")
    none, allbytes = by.loc["no cache"], by.loc["whole object in one read"]
    assert none["gets"] > 20 * allbytes["gets"] and allbytes["gets"] == 1  # one GET per h5py read vs one
    assert allbytes["read_over_size"] == pytest.approx(1.0)
    assert (table["arrays"] >= 101).all() and table["speedup"].iloc[0] == 1.0
    assert len(table.attrs["measurements"]) == len(table)
    assert all(m.gets == g for m, g in zip(table.attrs["measurements"], table["gets"]))


def test_preparation_costs_of_one_group(small, creds, archive_cloud):
    configs = [c for c in kerchunk.COST_CONFIGS if c[1] in ("h5cloud", "all", None)]
    table = kerchunk.preparation_costs(small, credentials=creds, cloud=archive_cloud, configs=configs, group="g3")
    assert list(table["group"]) == ["/g3"] * 3
    assert (table["arrays"] == 5).all()                       # g3's five datasets, nothing else
    assert table.set_index("config").loc["whole object in one read", "gets"] == 1


def test_reference_table_and_missing_group(small, creds):
    fs = creds.s3fs()
    with fs.open(small, **kerchunk.open_options("all", 0)) as f:
        refs, threshold = kerchunk.translate(f, small, "small")
        with pytest.raises(ReferenceError_, match=r"small: there is no group /nope"):
            kerchunk.translate(f, small, "small", group="nope")
    table = kerchunk.reference_table(refs).set_index("key")
    assert threshold == 161 and table.loc["calib/0", "kind"] == "inlined" and table.loc["calib/0", "length"] == 160
    chunk = table.loc["g0/v0/0"]
    assert chunk["kind"] == "chunk" and chunk["url"] == small and chunk["length"] > 0
    assert table.loc["g0/v0/.zarray", "kind"] == "metadata"
    assert (table["kind"] == "chunk").sum() == 20 * 5 * 3      # 3 chunks of 1000 per dataset


def test_preparation_costs_floor(small, granules, creds, archive_cloud):
    """The floor row translates the local archive copy: the same references, no request at all; an
    object without a local copy gets no such row."""
    configs = [c for c in kerchunk.COST_CONFIGS if c[1] == "all"]
    table = kerchunk.preparation_costs(granules[0], credentials=creds, cloud=archive_cloud, configs=configs,
                                       group="gt1l", floor=True)
    assert list(table["config"]) == [configs[0][0], kerchunk.FLOOR]
    whole, floor = table.iloc[0], table.iloc[1]
    assert floor["gets"] == 0 and floor["MB_read"] == 0 and floor["arrays"] == whole["arrays"] > 0
    assert whole["gets"] == 1
    assert len(kerchunk.preparation_costs(small, credentials=creds, cloud=archive_cloud, configs=configs,
                                          floor=True)) == 1


def test_cost_granules_measure_the_long_atl03_without_no_cache(test_archive, tmp_path):
    """The benchmark's cost rows: the ATL06 granule and a Grand Mesa ATL03 with every configuration; a
    Greenland ATL03 (the book archive's long one) without "no cache"; none of a product the archive lacks."""
    from is2cloud.granules import sample_data
    from is2cloud.methods.kerchunk.bench import cost_granules

    every = [label for label, _ in kerchunk.COST_CONFIGS]
    picks = cost_granules("first", test_archive)
    assert picks[0][0] == "first" and len(picks) == 2
    assert all([label for label, _ in configs] == every for _, configs in picks)
    assert "ATL03" in picks[1][0]["umm"]["GranuleUR"]
    w, s = load_aoi(GREENLAND).bounds[:2]
    greenland = sample_data((w, s, w + 0.05, s + 0.05), "ATL03", cycles=[3], out_dir=tmp_path / "g03", margin_m=0.0,
                            workers=1, seed=3)
    picks = cost_granules("first", greenland)
    assert len(picks) == 2 and picks[1][0]["umm"]["GranuleUR"].startswith("ATL03")
    assert [label for label, _ in picks[1][1]] == [label for label in every if label != "no cache"]
