"""Notebook 04's virtual store against the embedded cloud: the baseline's rows on several AOI shapes and
across the antimeridian, the HDF5 fallback and its warning, COMPACT data, stale stores, AOIs outside,
unparseable and mismatched sidecars, nothing committed on failure, earthdata mode with the network mocked."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from granule_specs import ANTIMERIDIAN_AOIS, antimeridian_atl06
from shapely.geometry import MultiPolygon, Polygon, box

from is2cloud.aoi import load_aoi
from is2cloud.methods import baseline, check_canonical, virtual
from is2cloud.methods.identity import assert_same_rows
from is2cloud.methods.virtual import (
    CompactVariableError,
    OutsideStoreError,
    SidecarError,
    StaleStoreError,
    VirtualStoreError,
)

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"


@pytest.fixture(scope="module")
def bucket(archive_cloud):
    return archive_cloud.buckets[0]


@pytest.fixture(scope="module")
def put(creds, bucket):
    s3 = creds.boto3_client("s3")

    def put(key: str, body: bytes) -> str:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    put.s3 = s3
    return put


def keys(put, bucket, prefix):
    return [o["Key"] for o in put.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


@pytest.fixture(scope="module")
def store(granules, creds, bucket):
    with pytest.warns(UserWarning, match="DMR\\+\\+ sidecar") as caught:  # none, or NSIDC-flat
        st = virtual.prepare(granules, out=f"s3://{bucket}/virtual/greenland", credentials=creds,
                             out_credentials=creds)
    names = {g["umm"]["GranuleUR"] for g in granules}
    assert {n for n in names if any(n in str(w.message) for w in caught)} == names  # each warning names its granule
    return st


@pytest.fixture(scope="module")
def tuned(granules, creds):
    def rows(aoi, items=None):
        return baseline.subset(items if items is not None else granules, aoi, credentials=creds, client="sync")

    return rows


def test_handle_and_store_contents(store, granules):
    assert store.method == "virtual" and store.location.endswith("virtual/greenland")
    assert set(store.granules) == {g["umm"]["GranuleUR"] for g in granules} and store.nbytes > 0
    assert set(store.stats["parsers"].values()) == {"hdf"} and store.stats["gets"] > 0


def test_records(store, creds, granules):
    root, records = virtual.open_store(store, credentials=creds, out_credentials=creds)
    for g in granules:
        rec = records[g["umm"]["GranuleUR"]]
        info = g["umm"]["DataGranule"]["ArchiveAndDistributionInformation"][0]
        assert rec.size == info["SizeInBytes"] and rec.etag == info["Checksum"]["Value"] and rec.footprint
        grp = root[rec.name]
        assert set(grp.attrs["is2cloud:scalars"]) == {"rgt", "cycle_number", "atlas_sdp_gps_epoch"}
        assert "gt1l" in grp and "latitude" in grp["gt1l/land_ice_segments"]


@pytest.fixture(scope="module")
def aois(granules, test_archive):
    path = test_archive.path_of(granules[0].data_links(access="direct")[0].split("/", 3)[3])
    with h5py.File(path) as f:
        lon, lat = f["gt2l/land_ice_segments/longitude"][()], f["gt2l/land_ice_segments/latitude"][()]
    w, s, e, n = load_aoi(GREENLAND).bounds
    k = len(lat) // 3
    small = (float(lon[k:k + 40].min()) - 0.01, float(min(lat[k], lat[k + 40])), float(lon[k:k + 40].max()) + 0.01,
             float(max(lat[k], lat[k + 40])))
    hole = box(w + 0.05, s + 0.1, e - 0.05, n - 0.1)
    return {"geojson file": GREENLAND, "bbox tuple": (w, s, e, n), "small box": small,
            "polygon with a hole": Polygon(box(w, s, e, n).exterior.coords, [hole.exterior.coords]),
            "multipolygon": MultiPolygon([box(*small), box(w, s, w + 0.3, s + 0.3)])}


@pytest.mark.parametrize("name", ["geojson file", "bbox tuple", "small box", "polygon with a hole", "multipolygon"])
def test_same_rows_as_baseline(store, aois, tuned, creds, name):
    got = virtual.subset(store.location, aois[name], credentials=creds, out_credentials=creds)
    check_canonical(got)
    want = tuned(aois[name])
    assert len(want) > 0 or name == "multipolygon"
    assert_same_rows(want, got, names=("baseline", "virtual"))


def test_subset_reads_few_bytes(store, granules, creds, archive_cloud):
    limit = baseline.aoi_physical_limit(granules, GREENLAND, credentials=creds)
    seq = archive_cloud.seq
    got = virtual.subset(store, GREENLAND, credentials=creds, out_credentials=creds, client="sync")
    gets = [r for r in archive_cloud.ledger(seq) if r.verb == "GET" and r.key]
    granule_bytes = sum(r.bytes for r in gets if r.key.endswith(".h5"))
    assert len(got) == limit.rows
    assert limit.total_chunk_bytes <= granule_bytes <= 1.2 * limit.nbytes + limit.total_chunk_bytes
    assert granule_bytes < sum(g["umm"]["DataGranule"]["ArchiveAndDistributionInformation"][0]["SizeInBytes"]
                               for g in granules) / 4


def test_aoi_outside_the_store(store, creds):
    with pytest.raises(OutsideStoreError, match="outside the virtual store") as err:
        virtual.subset(store, (10.0, 10.0, 11.0, 11.0), credentials=creds, out_credentials=creds)
    assert "W 10.0000" in str(err.value)


def test_unknown_location(creds, bucket):
    with pytest.raises(VirtualStoreError, match="no virtual store"):
        virtual.subset(f"s3://{bucket}/virtual/nothing-here", GREENLAND, credentials=creds, out_credentials=creds)


# -- a granule of our own: antimeridian, COMPACT data, sidecars, stale --------------------------------------


def with_compact(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose ``orbit_info/rgt`` and a new ``gtx/land_ice_segments/h_compact`` are COMPACT."""
    import shutil

    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        for path, data in [("orbit_info/rgt", f["orbit_info/rgt"][()])] + [
                (f"{b}/land_ice_segments/h_compact", f[f"{b}/land_ice_segments/h_li"][()])
                for b in ("gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r") if f"{b}/land_ice_segments" in f]:
            if path in f:
                del f[path]
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_layout(h5py.h5d.COMPACT)
            space = h5py.h5s.create_simple(data.shape)
            h5py.h5d.create(f.id, path.encode(), h5py.h5t.py_create(data.dtype), space, dcpl=dcpl).write(
                h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))
        assert f["orbit_info/rgt"].id.get_create_plist().get_layout() == h5py.h5d.COMPACT
    return dst


@pytest.fixture(scope="module")
def own(tmp_path_factory, put, creds, bucket):
    d = tmp_path_factory.mktemp("own")
    path = with_compact(antimeridian_atl06(d), d / "compact.h5")
    url = put("own/ATL06_20190101000000_00010303_006_01.h5",
              path.read_bytes())
    with pytest.warns(UserWarning, match="ATL06_20190101000000_00010303_006_01.h5: no DMR"):
        st = virtual.prepare([url], out=f"s3://{bucket}/virtual/own", credentials=creds, out_credentials=creds)
    return url, st, path


@pytest.mark.parametrize("aoi", ANTIMERIDIAN_AOIS)
def test_antimeridian_and_compact_scalars(own, creds, aoi):
    url, st, _ = own
    got = virtual.subset(st, aoi, credentials=creds, out_credentials=creds)
    want = baseline.subset([url], aoi, credentials=creds, client="sync")
    assert (got["longitude"] > 0).any() and (got["longitude"] < 0).any()
    assert (got["rgt"] > 0).all()  # COMPACT rgt materialised, not zeros
    assert_same_rows(want, got, names=("baseline", "virtual"))


def test_compact_variable_is_an_error(own, creds):
    url, st, _ = own
    with pytest.raises(CompactVariableError, match="ATL06_20190101000000_00010303_006_01.h5.*h_compact.*COMPACT"):
        virtual.subset(st, ANTIMERIDIAN_AOIS[0], (*baseline.DEFAULT_VARIABLES, "h_compact"), credentials=creds,
                       out_credentials=creds)


def test_sidecars_missing_unparseable_or_mismatched(own, put, creds, bucket, archive_cloud):
    url, _, path = own
    name = url.rsplit("/", 1)[1]
    key = url.split("/", 3)[3]
    seq = archive_cloud.seq
    with pytest.raises(SidecarError, match=f"{name}: no DMR\\+\\+ sidecar"):
        virtual.prepare([url], out=f"s3://{bucket}/virtual/strict", credentials=creds, out_credentials=creds,
                        parser="dmrpp")
    assert not [r for r in archive_cloud.ledger(seq) if r.verb == "GET" and r.key == key]  # the .h5 was not read
    assert not keys(put, bucket, "virtual/strict")
    flat = (f'<?xml version="1.0"?><Dataset xmlns="http://xml.opendap.org/ns/DAP/4.0#" '
            f'xmlns:dmrpp="http://xml.opendap.org/dap/dmrpp/1.0.0#" name="{name}" dapVersion="4.0">'
            '<Float64 name="gt1l_land_ice_segments_h_li"><Attribute name="DIMENSION_LIST" type="null"/>'
            '</Float64></Dataset>')
    put(key + ".dmrpp", flat.encode())
    try:
        with pytest.warns(UserWarning, match=f"{name}: VirtualiZarr cannot parse its DMR\\+\\+ sidecar"):
            st = virtual.prepare([url], out=f"s3://{bucket}/virtual/flat", credentials=creds, out_credentials=creds)
        assert st.stats["parsers"] == {name: "hdf"}
        put(key + ".dmrpp", flat.replace(f'name="{name}"', 'name="ATL06_other.h5"').encode())
        with pytest.raises(SidecarError, match=f"{name}: its DMR\\+\\+ sidecar .* describes 'ATL06_other.h5'"):
            virtual.prepare([url], out=f"s3://{bucket}/virtual/mismatch", credentials=creds, out_credentials=creds)
        far = flat.replace("</Float64>", '<dmrpp:chunks><dmrpp:chunk offset="99999999" nBytes="10"/>'
                                         '</dmrpp:chunks></Float64>')
        put(key + ".dmrpp", far.encode())
        with pytest.raises(SidecarError, match="another version of the granule"):
            virtual.prepare([url], out=f"s3://{bucket}/virtual/mismatch", credentials=creds, out_credentials=creds)
        assert not keys(put, bucket, "virtual/mismatch")
    finally:
        put.s3.delete_object(Bucket=bucket, Key=key + ".dmrpp")


def test_not_hdf5_leaves_nothing(granules, put, creds, bucket, store):
    bad = put("bad/ATL06_20190101000000_00020303_006_01.h5", b"not an HDF5 file at all")
    with pytest.warns(UserWarning):
        with pytest.raises(VirtualStoreError, match="ATL06_20190101000000_00020303_006_01.h5.*HDF5"):
            virtual.prepare([bad], out=f"s3://{bucket}/virtual/half", credentials=creds, out_credentials=creds)
    assert not keys(put, bucket, "virtual/half")
    # an existing store keeps its snapshot
    with pytest.warns(UserWarning):
        with pytest.raises(VirtualStoreError):
            virtual.prepare([granules[0], bad], out=store.location, credentials=creds, out_credentials=creds)
    root, records = virtual.open_store(store, credentials=creds, out_credentials=creds)
    assert set(records) == set(store.granules)


def test_stale_store(own, put, creds):
    url, st, path = own
    data = path.read_bytes()
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0xFF
    put(url.split("/", 3)[3], bytes(changed))
    with pytest.raises(StaleStoreError, match="stale") as err:
        virtual.subset(st, ANTIMERIDIAN_AOIS[0], credentials=creds, out_credentials=creds)
    assert url.rsplit("/", 1)[1] in str(err.value)
    for secret in (creds.secret_access_key, creds.session_token):
        assert secret not in str(err.value)


def test_earthdata_mode_uses_daac_credentials(monkeypatch, store, creds):
    """Earthdata mode: the read credentials are earthaccess's DAAC ones (AWS, us-west-2, no endpoint) and
    the same calls are made with them; the network is mocked (nothing leaves the machine)."""
    import icechunk

    from is2cloud.credentials import Credentials
    from is2cloud.methods.virtual import repo

    daac = Credentials("ASIADAACKEY1234", "daac-secret", "daac-token", None, region="us-west-2", endpoint_url=None,
                       source="earthaccess DAAC (NSIDC)")
    monkeypatch.setenv("IS2CLOUD_MODE", "earthdata")
    calls = []
    monkeypatch.setattr("is2cloud.access.get_credentials",
                        lambda purpose="read", cloud=None: daac if purpose == "read" else creds)

    class Stop(Exception):
        pass

    def fake_check(credentials, objects, **kw):
        calls.append((credentials, [o.url for o in objects]))
        raise Stop

    monkeypatch.setattr("is2cloud.methods.provenance.check_objects", fake_check)
    with pytest.raises(Stop):
        virtual.subset(store.location, GREENLAND)
    used, urls = calls[0]
    assert used is daac and all(u.startswith("s3://nsidc-cumulus-prod-protected/") for u in urls)
    s3 = daac.obstore("nsidc-cumulus-prod-protected")
    assert s3.config.get("region") == "us-west-2" and "endpoint" not in s3.config
    config = icechunk.RepositoryConfig.default()
    repo._containers(config, ["s3://nsidc-cumulus-prod-protected/"], daac)
    container = config.virtual_chunk_containers["s3://nsidc-cumulus-prod-protected/"]
    assert "us-west-2" in repr(container.store) and "127.0.0.1" not in repr(container.store)
    assert "daac-secret" not in repr(container)


# -- the DMR++ route, with the book's sidecar writer (is2cloud.dmrpp) ---------------------------------------


def test_dmrpp_route_reads_no_granule_bytes(own, put, creds, bucket, archive_cloud, tmp_path):
    """A nested sidecar next to the granule: prepare reads the sidecar only (no GET of the .h5), the
    COMPACT scalar comes from the sidecar's base64 and the COMPACT variable is listed; same rows."""
    from is2cloud.dmrpp import write_dmrpp

    url, _, path = own
    key = url.split("/", 3)[3]
    put(key, path.read_bytes())  # restore the object (a test above changes it)
    name = url.rsplit("/", 1)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the writer warns about what DMR++ cannot hold
        nested = write_dmrpp(path, "nested", name=name)
        flat = write_dmrpp(path, "nsidc-flat", name=name)
    put(key + ".dmrpp", nested.encode())
    try:
        seq = archive_cloud.seq
        st = virtual.prepare([url], out=f"s3://{bucket}/virtual/dmrpp", credentials=creds, out_credentials=creds,
                             parser="dmrpp")
        gets = [r for r in archive_cloud.ledger(seq) if r.verb == "GET" and r.key and r.key.startswith(key)]
        assert [r.key for r in gets] == [key + ".dmrpp"]  # the sidecar, never the granule
        assert st.stats["parsers"] == {name: "dmrpp"} and st.stats["gets"] == 1
        for aoi in ANTIMERIDIAN_AOIS[:2]:
            got = virtual.subset(st, aoi, credentials=creds, out_credentials=creds)
            assert (got["rgt"] > 0).all()
            assert_same_rows(baseline.subset([url], aoi, credentials=creds, client="sync"), got,
                             names=("baseline", "virtual (DMR++)"))
        with pytest.raises(CompactVariableError, match=f"{name}.*h_compact"):
            virtual.subset(st, ANTIMERIDIAN_AOIS[0], (*baseline.DEFAULT_VARIABLES, "h_compact"), credentials=creds,
                           out_credentials=creds)
        # NSIDC's flattened style: VirtualiZarr 2.8.0 cannot parse it -> HDFParser, with a warning
        put(key + ".dmrpp", flat.encode())
        with pytest.warns(UserWarning, match=f"{name}: VirtualiZarr cannot parse its DMR\\+\\+ sidecar"):
            st = virtual.prepare([url], out=f"s3://{bucket}/virtual/dmrpp-flat", credentials=creds,
                                 out_credentials=creds)
        assert st.stats["parsers"] == {name: "hdf"}
    finally:
        put.s3.delete_object(Bucket=bucket, Key=key + ".dmrpp")
