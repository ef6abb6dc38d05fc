"""The chunk index method against the embedded cloud: the same rows as the baseline on AOIs of many
shapes, window/chunk boundaries and codecs, the antimeridian, stale indexes, wrong products, AOIs
outside the index, appending, ATL03 photons checked with h5py, local-path indexes, atomic writes,
query accounting and the benchmark; plus the footprint/H3 geometry."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import earthaccess
import h3
import h5py
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon, box

from granule_specs import ANTIMERIDIAN_AOIS, antimeridian_atl06

from is2cloud.aoi import load_aoi
from is2cloud.catalog import find_granules
from is2cloud.methods import baseline, check_canonical, chunkindex
from is2cloud.methods.chunkindex import (
    ChunkIndexError,
    OutsideIndexError,
    StaleIndexError,
    WrongProductError,
    build,
    douglas_peucker,
    h3_cover,
    plan,
    read_index,
    subset,
    window_footprint,
)
from is2cloud.methods.identity import assert_same_rows
from is2cloud.methods.ranges import ObjectMissingError, head_object, split_url
from is2cloud.methods.schema import TRACK_IDS

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
GRANDMESA = REPO / "data" / "grandmesa.geojson"
GPS_EPOCH = pd.Timestamp("1980-01-06", tz="UTC")


# -- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def atl03_granules(test_archive):
    return find_granules(GRANDMESA, "ATL03", archive=test_archive)


@pytest.fixture(scope="module")
def bucket(archive_cloud):
    return archive_cloud.buckets[0]


@pytest.fixture(scope="module")
def put(archive_cloud, bucket):
    """Put bytes into the output bucket; returns the s3:// URL."""
    s3 = archive_cloud.credentials().boto3_client("s3")

    def put(key: str, body: bytes) -> str:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    put.s3 = s3
    return put


def local_file(test_archive, granule) -> Path:
    return test_archive.path_of(granule.data_links(access="direct")[0].split("/", 3)[3])


@pytest.fixture(scope="module")
def index06(granules, creds, bucket):
    """The ATL06 chunk index of the test archive's Greenland granules, in the output bucket."""
    return build(granules, f"s3://{bucket}/chunk-index/ATL06_006.parquet", mode="overwrite", credentials=creds,
                 out_credentials=creds, client="sync", progress=False)


@pytest.fixture(scope="module")
def tuned(granules, creds):
    """Baseline (tuned) rows for an AOI, over the Greenland granules or given ones."""

    def rows(aoi, items=None):
        return baseline.subset(items if items is not None else granules, aoi, config="tuned", credentials=creds,
                               client="sync", progress=False)

    return rows


def query(location, aoi, creds, **kw):
    return subset(location, aoi, credentials=creds, out_credentials=creds, **kw)


def beam(path: Path, track: str, group: str = "land_ice_segments", lat: str = "latitude", lon: str = "longitude"):
    with h5py.File(path) as f:
        return f[f"{track}/{group}/{lon}"][()], f[f"{track}/{group}/{lat}"][()]


def box_around(lon, lat, i: int, j: int, pad: float = 0.01) -> tuple[float, float, float, float]:
    """A box whose south and north edges pass exactly through points i and j (boundary points are inside)."""
    return (float(min(lon[i:j + 1]) - pad), float(min(lat[i], lat[j])), float(max(lon[i:j + 1]) + pad),
            float(max(lat[i], lat[j])))


# -- the same rows as the baseline, on AOIs of many shapes ----------------------------------------------------


@pytest.fixture(scope="module")
def aois(granules, test_archive):
    path0, path1 = local_file(test_archive, granules[0]), local_file(test_archive, granules[1])
    lon, lat = beam(path0, "gt2l")
    n = len(lat)
    lon3, lat3 = beam(path1, "gt3r")
    g = load_aoi(GREENLAND)
    w, s, e, nn = g.bounds
    outer = box(w, s, e, nn)
    hole = box(w + 0.05, s + 0.1, e - 0.05, nn - 0.1)
    return {
        "geojson file": GREENLAND,
        "geojson dict": json.loads(GREENLAND.read_text()),
        "shapely geometry": g.geometry,
        "bbox tuple": (w, s, e, nn),
        "small box inside one window": box_around(lon, lat, n // 3, n // 3 + 40),
        "polygon with a hole": Polygon(outer.exterior.coords, [hole.exterior.coords]),
        "multipolygon": MultiPolygon([box(*box_around(lon, lat, n // 4, n // 4 + 30)),
                                      box(*box_around(lon3, lat3, 2 * len(lat3) // 3, 2 * len(lat3) // 3 + 30))]),
        "long thin polygon across the track": Polygon([(w - 0.2, 62.80), (e + 0.2, 62.83), (e + 0.2, 62.8312),
                                                        (w - 0.2, 62.8012)]),
    }


AOI_NAMES = ["geojson file", "geojson dict", "shapely geometry", "bbox tuple", "small box inside one window",
             "polygon with a hole", "multipolygon", "long thin polygon across the track"]


@pytest.mark.parametrize("name", AOI_NAMES)
def test_same_rows_as_baseline(index06, aois, tuned, creds, name):
    aoi = aois[name]
    want = tuned(aoi)
    got = query(index06.location, aoi, creds)
    check_canonical(got, name="chunk index")
    assert len(want) > 0
    assert_same_rows(want, got, names=("baseline (tuned)", "chunk index"))
    summary = got.attrs["chunkindex"]
    assert summary["footprint"] <= summary["index"] and summary["ranges"] > 0


def test_aoi_shapes_prune_and_clip(index06, aois, creds):
    full = query(index06.location, GREENLAND, creds)
    small = query(index06.location, aois["small box inside one window"], creds)
    assert set(small["track_id"]) == {"gt2l"} or set(small["track_id"]) <= {"gt2l", "gt2r"}
    assert 0 < len(small) < len(full)
    # a small AOI reads fewer windows than the whole AOI
    assert small.attrs["chunkindex"]["footprint"] < full.attrs["chunkindex"]["footprint"]
    holed = query(index06.location, aois["polygon with a hole"], creds)
    inner = load_aoi(aois["polygon with a hole"]).geometry.interiors[0]
    hole = Polygon(inner)
    assert not shapely.contains_xy(hole, holed["longitude"], holed["latitude"]).any()
    assert (holed["latitude"] > hole.bounds[3]).any() and (holed["latitude"] < hole.bounds[1]).any()
    multi = query(index06.location, aois["multipolygon"], creds)
    assert multi["granule"].nunique() == 2


def test_granules_with_index_and_in_memory_index(index06, granules, tuned, creds):
    want = tuned(GREENLAND)
    with_index = subset(granules, GREENLAND, index=index06.location, credentials=creds, out_credentials=creds)
    assert_same_rows(want, with_index, names=("baseline", "granules + index"))
    in_memory = subset(granules, GREENLAND, credentials=creds, client="sync")  # builds an index first
    assert_same_rows(want, in_memory, names=("baseline", "in-memory index"))
    one = subset(granules[:1], GREENLAND, index=index06, credentials=creds)  # a ChunkIndex, one granule
    assert_same_rows(tuned(GREENLAND, granules[:1]), one, names=("baseline", "one granule"))
    assert set(one["granule"]) == {granules[0]["umm"]["GranuleUR"]}


def test_index_contents(index06, granules):
    idx = index06
    assert idx.product == "ATL06" and idx.meta["format"] == chunkindex.FORMAT
    assert idx.granules == sorted(g["umm"]["GranuleUR"] for g in granules)
    f = idx.frame
    assert set(f["track_id"]) == set(TRACK_IDS)
    assert (f["margin"] > 0).all() and (f["margin"] < 1e-3).all()
    assert all(len(c) > 0 for c in f["h3_cells"])
    for v in baseline.DEFAULT_VARIABLES:
        assert f[f"codec:{v}"].notna().all()
    assert list(f["h3"]) == sorted(f["h3"])
    assert index06.stats["added"] == 2 and index06.stats["unchanged"] == 0 and index06.stats["nbytes"] > 0


def test_read_index_round_trip(index06, creds):
    again = read_index(index06.location, credentials=creds)
    assert again.meta == index06.meta and len(again) == len(index06)
    assert list(again.frame["granule"]) == list(index06.frame["granule"])
    assert all(a.equals(b) for a, b in zip(again.frame.geometry, index06.frame.geometry))


def test_temporal_filter(index06, granules, tuned, creds):
    g0 = granules[0]["umm"]["GranuleUR"]
    want = tuned(GREENLAND)
    t = want.loc[want["granule"] == g0, "time"]
    # datetimes are taken to the microsecond: widen by a second (the other granule is months away)
    one = pd.Timedelta(seconds=1)
    got = query(index06.location, GREENLAND, creds, temporal=((t.min() - one).isoformat(), (t.max() + one).isoformat()))
    assert got["time"].min() == t.min() and got["time"].max() == t.max()
    assert len(query(index06.location, GREENLAND, creds, temporal=("2000-01-01", "2001-01-01"))) == 0
    assert_same_rows(want[want["granule"] == g0].reset_index(drop=True), got, names=("baseline", "temporal"))


# -- window/chunk boundaries, partial and unwritten chunks, codecs ---------------------------------------------


def rechunked_copy(src: Path, dst: Path, rows: int = 500) -> Path:
    """A copy of an ATL06 granule whose land_ice_segments datasets are chunked in ``rows`` rows with
    shuffle (and fletcher32 on h_li); gt2l's h_li_sigma is written only up to row 1000, so its later
    chunks are never written (HDF5 returns the fill value)."""
    with h5py.File(src) as a, h5py.File(dst, "w") as b:
        for k, v in a.attrs.items():
            b.attrs[k] = v
        for name in a:
            if name not in TRACK_IDS:
                a.copy(a[name], b, name=name)
                continue
            gb = b.create_group(name)
            sa = a[f"{name}/land_ice_segments"]
            sb = gb.create_group("land_ice_segments")
            for k, d in sa.items():
                if not isinstance(d, h5py.Dataset):
                    continue
                data = d[()]
                ds = sb.create_dataset(k, shape=d.shape, dtype=d.dtype, chunks=(rows, *d.shape[1:]),
                                       compression="gzip", compression_opts=5, shuffle=True,
                                       fletcher32=(k == "h_li"), fillvalue=d.fillvalue)
                if name == "gt2l" and k == "h_li_sigma":
                    ds[:1000] = data[:1000]
                else:
                    ds[...] = data
    return dst


@pytest.fixture(scope="module")
def rechunked(granules, test_archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("rechunked")
    path = rechunked_copy(local_file(test_archive, granules[0]), out / granules[0]["umm"]["GranuleUR"])
    idx = build([path], out / "index.parquet", client="sync", progress=False)
    return path, idx


def test_aoi_straddling_a_window_boundary(rechunked):
    path, idx = rechunked
    lon, lat = beam(path, "gt2l")
    aoi = box_around(lon, lat, 480, 520, pad=1e-4)
    p = plan(idx.location, aoi)
    gt2l = p.windows[p.windows["track_id"] == "gt2l"]
    assert sorted(gt2l["row_start"]) == [0, 500]  # both windows of the boundary are read ...
    got = subset(idx.location, aoi)
    want = baseline.subset([path], aoi, client="sync", progress=False)
    assert_same_rows(want, got, names=("baseline", "chunk index"))
    rows = got[got["track_id"] == "gt2l"]
    assert rows["latitude"].isin([lat[480], lat[520]]).sum() == 2  # ... with their boundary points
    assert len(rows) == 41


def test_codecs_partial_and_unwritten_chunks(rechunked):
    path, idx = rechunked
    with h5py.File(path) as f:
        n = f["gt2l/land_ice_segments/latitude"].shape[0]
        assert n % 500 and n > 1500  # the last chunk is partial
        assert f["gt2l/land_ice_segments/h_li"].fletcher32
    f = idx.frame
    assert len(f[f["track_id"] == "gt2l"]) == -(-n // 500)
    codec = json.loads(f["codec:h_li"].iat[0])
    assert [c[0] for c in codec["filters"]] == ["shuffle", "deflate", "fletcher32"]
    unwritten = f[(f["track_id"] == "gt2l") & (f["row_start"] >= 1000)]
    assert (unwritten["offset:h_li_sigma"] == -1).all()
    want = baseline.subset([path], GREENLAND, client="sync", progress=False)
    got = subset(idx.location, GREENLAND)
    assert_same_rows(want, got, names=("baseline", "chunk index"))
    assert got.attrs["chunkindex"]["fill_pieces"] > 0
    late = got[(got["track_id"] == "gt2l") & (got["segment_id"] >= 0)]
    assert late["h_li_sigma"].isna().any() and late["h_li_sigma"].notna().any()


# -- the antimeridian ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def antimeridian(tmp_path_factory, put, creds, bucket):
    """A shortened synthetic ATL06 granule whose beams cross +-180, uploaded and indexed in the embedded S3."""
    path = antimeridian_atl06(tmp_path_factory.mktemp("am"))
    url = put(f"antimeridian/{path.name}", path.read_bytes())
    idx = build([url], f"s3://{bucket}/antimeridian/index.parquet", credentials=creds,
                out_credentials=creds, client="sync", progress=False)
    return path, url, idx


@pytest.mark.parametrize("aoi", ANTIMERIDIAN_AOIS)
def test_antimeridian(antimeridian, creds, aoi):
    path, url, idx = antimeridian
    got = query(idx.location, aoi, creds)
    want = baseline.subset([url], aoi, credentials=creds, client="sync", progress=False)
    assert_same_rows(want, got, names=("baseline", "chunk index"))
    assert (got["longitude"] > 0).any() and (got["longitude"] < 0).any()


def test_antimeridian_footprints(antimeridian):
    _, _, idx = antimeridian
    fp = idx.frame.geometry
    crossing = [g for g in fp if g.geom_type == "MultiLineString"]
    assert crossing, "a window across +-180 has a footprint in pieces"
    b = shapely.bounds(np.asarray(fp.values, dtype=object))
    assert (b[:, 0] >= -180).all() and (b[:, 2] <= 180).all()
    for g in crossing:  # pieces on both sides, none spanning the globe
        xs = [p.bounds for p in g.geoms]
        assert any(x[0] > 170 for x in xs) and any(x[2] < -170 for x in xs)
        assert all(x[2] - x[0] < 10 for x in xs)
    # and an AOI on the other side of the world is outside
    with pytest.raises(OutsideIndexError):
        subset(idx, (0.0, 70.0, 0.4, 70.2))


# -- stale indexes -----------------------------------------------------------------------------------------------


@pytest.fixture()
def own_copy(granules, test_archive, put, creds, bucket, request):
    """Granule 0 uploaded to its own key and indexed alone; returns (url, index location, bytes)."""
    name = granules[0]["umm"]["GranuleUR"]
    data = local_file(test_archive, granules[0]).read_bytes()
    prefix = f"stale/{request.node.name.replace('[', '_').replace(']', '')}"
    url = put(f"{prefix}/{name}", data)
    loc = f"s3://{bucket}/{prefix}/index.parquet"
    build([url], loc, credentials=creds, out_credentials=creds, client="sync", progress=False)
    return url, loc, data


def _no_secrets(exc: BaseException, creds) -> None:
    text = f"{exc}\n{exc!r}"
    for secret in (creds.secret_access_key, creds.session_token):
        assert secret and secret not in text


def test_changed_object_is_stale(own_copy, put, creds, tuned, granules):
    url, loc, data = own_copy
    name = granules[0]["umm"]["GranuleUR"]
    assert_same_rows(tuned(GREENLAND, [url]), query(loc, GREENLAND, creds), names=("baseline", "fresh index"))
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0xFF  # same size, other bytes: another ETag
    put(split_url(url)[1], bytes(changed))
    with pytest.raises(StaleIndexError, match="stale") as err:
        query(loc, GREENLAND, creds)
    assert name in str(err.value)
    _no_secrets(err.value, creds)
    put(split_url(url)[1], data + b"\0" * 10)  # another size
    with pytest.raises(StaleIndexError, match=name):
        query(loc, GREENLAND, creds)


def test_changed_object_outside_the_aoi_needs_verify_all(own_copy, put, creds, granules, test_archive):
    url, loc, data = own_copy
    # a box between beam pairs: inside the index extent, but no window meets it
    lon1, lat1 = beam(local_file(test_archive, granules[0]), "gt1r")
    lon2, lat2 = beam(local_file(test_archive, granules[0]), "gt2l")
    k = len(lat1) // 2
    j = int(np.argmin(np.abs(lat2 - lat1[k])))
    mid = (lon1[k] + lon2[j]) / 2
    aoi = (mid - 0.002, lat1[k] - 0.002, mid + 0.002, lat1[k] + 0.002)
    assert len(query(loc, aoi, creds)) == 0
    changed = bytearray(data)
    changed[-1] ^= 0xFF
    put(split_url(url)[1], bytes(changed))
    assert len(query(loc, aoi, creds)) == 0  # nothing fetched: nothing to check
    with pytest.raises(StaleIndexError, match=granules[0]["umm"]["GranuleUR"]):
        query(loc, aoi, creds, verify="all")


def test_deleted_object_is_stale(own_copy, put, creds, granules):
    url, loc, _ = own_copy
    put.s3.delete_object(Bucket=split_url(url)[0], Key=split_url(url)[1])
    with pytest.raises(StaleIndexError, match="gone") as err:
        query(loc, GREENLAND, creds)
    assert granules[0]["umm"]["GranuleUR"] in str(err.value)
    with pytest.raises(StaleIndexError, match=granules[0]["umm"]["GranuleUR"]):
        query(loc, GREENLAND, creds, verify="all")


def test_granule_not_in_the_index_is_stale(own_copy, granules, creds):
    _, loc, _ = own_copy
    with pytest.raises(StaleIndexError, match=granules[1]["umm"]["GranuleUR"]) as err:
        subset(granules, GREENLAND, index=loc, credentials=creds, out_credentials=creds)
    assert "not in the chunk index" in str(err.value)


def _granule_at(granule, url: str | None = None, size: int | None = None, md5: str | None = None):
    """A copy of a catalog record pointing at another object, or claiming another size or MD5."""
    rec = copy.deepcopy(dict(granule))
    if url is not None:
        for link in rec["umm"]["RelatedUrls"]:
            if link["Type"] == "GET DATA VIA DIRECT ACCESS":
                link["URL"] = url
    info = rec["umm"]["DataGranule"]["ArchiveAndDistributionInformation"][0]
    if size is not None:
        info["SizeInBytes"] = size
    if md5 is not None:
        info["Checksum"] = {"Value": md5, "Algorithm": "MD5"}
    return earthaccess.DataGranule(rec, cloud_hosted=True)


def test_catalog_size_or_md5_mismatch_is_stale(index06, granules, creds, archive_cloud):
    g = granules[0]
    name = g["umm"]["GranuleUR"]
    seq = archive_cloud.seq
    with pytest.raises(StaleIndexError, match="12345 bytes") as err:
        subset([_granule_at(g, size=12345)], GREENLAND, index=index06.location, credentials=creds,
               out_credentials=creds)
    assert name in str(err.value)
    with pytest.raises(StaleIndexError, match="MD5") as err:
        subset([_granule_at(g, md5="0" * 32)], GREENLAND, index=index06.location, credentials=creds,
               out_credentials=creds)
    assert name in str(err.value)
    # detected from the index alone, before any granule byte is fetched
    assert not [r for r in archive_cloud.ledger(seq) if r.verb == "GET" and r.key and r.key.endswith(".h5")]
    # building from a record whose object disagrees with it fails too
    with pytest.raises(StaleIndexError, match="catalog"):
        build([_granule_at(g, size=12345)], credentials=creds, client="sync", progress=False)


def test_local_index_detects_changed_files(granules, test_archive, tmp_path):
    path = tmp_path / granules[0]["umm"]["GranuleUR"]
    shutil.copy(local_file(test_archive, granules[0]), path)
    idx = build([path], tmp_path / "index.parquet", client="sync", progress=False)
    assert len(subset(idx.location, GREENLAND)) > 0
    with open(path, "ab") as fh:
        fh.write(b"\0" * 16)
    with pytest.raises(StaleIndexError, match=path.name):
        subset(idx.location, GREENLAND)
    path.unlink()
    with pytest.raises(StaleIndexError, match=path.name):
        subset(idx.location, GREENLAND)


# -- outside the index, another product ------------------------------------------------------------------------


def test_aoi_outside_the_index(index06, creds):
    with pytest.raises(OutsideIndexError, match="outside the chunk index") as err:
        query(index06.location, (10.0, 10.0, 11.0, 11.0), creds)
    assert "W 10.0000" in str(err.value)
    with pytest.raises(OutsideIndexError):
        query(index06.location, GRANDMESA, creds)


def test_aoi_inside_the_extent_without_windows_is_empty(index06, creds, archive_cloud):
    w, s, e, n = index06.meta["extent"]
    aoi = (w, s, w + 0.001, s + 0.001)  # the extent's corner: no track there
    seq = archive_cloud.seq
    got = query(index06.location, aoi, creds)
    check_canonical(got)
    assert len(got) == 0
    assert not [r for r in archive_cloud.ledger(seq) if r.verb == "GET" and r.key and r.key.endswith(".h5")]


@pytest.fixture(scope="module")
def index03(atl03_granules, creds, bucket):
    return build(atl03_granules, f"s3://{bucket}/chunk-index/ATL03_006.parquet", mode="overwrite",
                 credentials=creds, out_credentials=creds, client="sync", progress=False)


def test_wrong_product(index06, index03, granules, atl03_granules, creds, test_archive, put, bucket):
    with pytest.raises(WrongProductError, match="ATL06"):
        query(index06.location, GREENLAND, creds, product="ATL03")
    with pytest.raises(WrongProductError):
        subset(atl03_granules, GRANDMESA, index=index06.location, credentials=creds, out_credentials=creds)
    with pytest.raises(WrongProductError):
        subset(granules, GREENLAND, index=index03.location, credentials=creds, out_credentials=creds)
    with pytest.raises(WrongProductError):
        build(atl03_granules, product="ATL06", credentials=creds, client="sync", progress=False)
    with pytest.raises(WrongProductError, match="mix"):
        build([*granules, *atl03_granules], credentials=creds, client="sync", progress=False)
    # appending ATL03 granules to the ATL06 index is refused and leaves it as it was
    before = head_object(creds, *split_url(index06.location))
    with pytest.raises(WrongProductError, match="ATL06"):
        build(atl03_granules, index06.location, credentials=creds, out_credentials=creds, client="sync",
              progress=False)
    assert head_object(creds, *split_url(index06.location)) == before
    # an ATL03 file under an ATL06 name: found from the file's own short_name
    data = local_file(test_archive, atl03_granules[0]).read_bytes()
    url = put("wrong/ATL06_20190417134751_02950302_006_01.h5", data)
    with pytest.raises(WrongProductError, match="ATL03"):
        build([url], credentials=creds, client="sync", progress=False, product="ATL06")


# -- append -----------------------------------------------------------------------------------------------------------


def test_append_keeps_old_rows_and_reindexes_changed_granules(granules, creds, bucket, put, test_archive,
                                                               tuned, tmp_path, archive_cloud):
    loc = f"s3://{bucket}/append/index.parquet"
    first = build(granules[:1], loc, mode="overwrite", credentials=creds, out_credentials=creds, client="sync",
                  progress=False)
    assert first.stats["added"] == 1 and first.stats["unchanged"] == 0
    second = build(granules, loc, credentials=creds, out_credentials=creds, client="sync", progress=False)
    assert second.stats["unchanged"] == 1 and second.stats["added"] == 1 and second.stats["replaced"] == []
    assert second.granules == sorted(g["umm"]["GranuleUR"] for g in granules)
    name0 = granules[0]["umm"]["GranuleUR"]
    old = first.frame.drop(columns="footprint").reset_index(drop=True)
    kept = second.frame[second.frame["granule"] == name0].drop(columns="footprint").reset_index(drop=True)
    pd.testing.assert_frame_equal(old[kept.columns.intersection(old.columns)], kept[old.columns])
    assert_same_rows(tuned(GREENLAND), query(loc, GREENLAND, creds), names=("baseline", "appended index"))
    seq = archive_cloud.seq
    assert build(granules, loc, credentials=creds, out_credentials=creds, client="sync",
                 progress=False).stats["unchanged"] == 2
    writes = [r for r in archive_cloud.ledger(seq) if r.verb in ("PUT", "POST")]
    assert writes == []  # nothing changed: the index is not rewritten

    # a changed granule is re-indexed: h_li + 1 m in a copy, uploaded over the indexed object
    path = tmp_path / name0
    shutil.copy(local_file(test_archive, granules[0]), path)
    url = put(f"append2/{name0}", path.read_bytes())
    loc2 = f"s3://{bucket}/append2/index.parquet"
    build([url], loc2, credentials=creds, out_credentials=creds, client="sync", progress=False)
    with h5py.File(path, "a") as f:
        for b in TRACK_IDS:
            f[f"{b}/land_ice_segments/h_li"][...] = f[f"{b}/land_ice_segments/h_li"][()] + np.float32(1.0)
    put(f"append2/{name0}", path.read_bytes())
    with pytest.raises(StaleIndexError):
        query(loc2, GREENLAND, creds)
    again = build([url], loc2, credentials=creds, out_credentials=creds, client="sync", progress=False)
    assert again.stats["replaced"] == [name0] and again.stats["unchanged"] == 0
    got = query(loc2, GREENLAND, creds)
    assert_same_rows(tuned(GREENLAND, [url]), got, names=("baseline", "re-indexed"))
    base = tuned(GREENLAND, granules[:1])
    assert np.allclose(got["h_li"], base["h_li"] + 1, equal_nan=True)

    # overwrite starts afresh
    fresh = build(granules[1:], loc, mode="overwrite", credentials=creds, out_credentials=creds, client="sync",
                  progress=False)
    assert fresh.granules == [granules[1]["umm"]["GranuleUR"]]
    assert read_index(loc, credentials=creds).granules == fresh.granules


# -- ATL03 photons --------------------------------------------------------------------------------------------


def expected_photons(paths, inside) -> pd.DataFrame:
    rows = []
    for path in paths:
        with h5py.File(path) as f:
            epoch = float(f["ancillary_data/atlas_sdp_gps_epoch"][0])
            for b in TRACK_IDS:
                g = f[f"{b}/heights"]
                lat, lon = g["lat_ph"][()], g["lon_ph"][()]
                keep = inside(lon, lat)
                idx = np.flatnonzero(keep)
                rows.append(pd.DataFrame({
                    "time": GPS_EPOCH + pd.to_timedelta(epoch + g["delta_time"][()][keep] - 18, unit="s"),
                    "latitude": lat[keep], "longitude": lon[keep], "h_ph": g["h_ph"][()][keep],
                    "quality_ph": g["quality_ph"][()][keep],
                    **{f"signal_conf_ph_{j}": g["signal_conf_ph"][()][keep][:, j] for j in range(5)},
                    "track_id": b, "photon_index": idx, "granule": path.name}))
    return pd.concat(rows).sort_values(["granule", "track_id", "photon_index"]).reset_index(drop=True)


def test_atl03_photons_checked_with_h5py(index03, atl03_granules, creds, test_archive):
    paths = [local_file(test_archive, g) for g in atl03_granules]
    lon, lat = beam(paths[0], "gt1l", "heights", "lat_ph", "lon_ph")
    # around photons 9,950 .. 10,050 of gt1l: across the boundary of the first two photon windows
    w, s, e, n = (float(lon[9950:10051].min()), float(lat[9950:10051].min()), float(lon[9950:10051].max()),
                  float(lat[9950:10051].max()))

    def inside(x, y):
        return (x >= w) & (x <= e) & (y >= s) & (y <= n)

    got = query(index03.location, (w, s, e, n), creds)
    want = expected_photons(paths, inside)
    assert len(want) >= 101 and len(got) == len(want)
    first_beam = got[(got["granule"] == paths[0].name) & (got["track_id"] == "gt1l")]
    assert set(first_beam["photon_index"]) >= set(range(9950, 10051))  # from both windows
    for c in ("latitude", "longitude", "h_ph", "quality_ph", "track_id", "photon_index", "granule",
              *(f"signal_conf_ph_{j}" for j in range(5))):
        assert np.array_equal(got[c].to_numpy(), want[c].to_numpy()), c
    assert (got["time"] - want["time"]).abs().max() < pd.Timedelta(microseconds=1)
    assert got.attrs["chunkindex"]["footprint"] < len(index03)  # pruned to a few photon windows
    assert got.geometry.x.equals(got["longitude"]) and got.geometry.y.equals(got["latitude"])
    with h5py.File(paths[0]) as f:
        rgt, cycle = int(f["orbit_info/rgt"][0]), int(f["orbit_info/cycle_number"][0])
    first = got[got["granule"] == paths[0].name]
    assert (first["rgt"] == rgt).all() and (first["cycle"] == cycle).all()


# -- local paths, atomic writes -------------------------------------------------------------------------------------


def test_local_path_index_gives_the_same_rows(granules, test_archive, tuned, tmp_path, archive_cloud):
    paths = [local_file(test_archive, g) for g in granules]
    idx = build(paths, tmp_path / "index.parquet", client="sync", progress=False)
    assert Path(idx.location).exists() and idx.granules == sorted(p.name for p in paths)
    seq = archive_cloud.seq
    got = subset(idx.location, GREENLAND)
    assert archive_cloud.summary(seq).gets == 0  # read from the files, not from S3
    assert_same_rows(tuned(GREENLAND), got, names=("baseline", "local index"))


def test_nothing_half_written_on_error(granules, creds, bucket, put, index06, tmp_path):
    bad = put("bad/ATL06_20190101000000_00010101_006_01.h5", b"not an HDF5 file at all")
    loc = f"s3://{bucket}/half/index.parquet"
    with pytest.raises(ChunkIndexError, match="ATL06_20190101000000_00010101_006_01.h5") as err:
        build([granules[0], bad], loc, credentials=creds, out_credentials=creds, client="sync", progress=False)
    _no_secrets(err.value, creds)
    with pytest.raises(ObjectMissingError):
        head_object(creds, *split_url(loc))
    # an existing index is left as it was
    before = head_object(creds, *split_url(index06.location))
    with pytest.raises(ChunkIndexError):
        build([granules[0], bad], index06.location, credentials=creds, out_credentials=creds, client="sync",
              progress=False)
    assert head_object(creds, *split_url(index06.location)) == before
    local = tmp_path / "index.parquet"
    with pytest.raises(ChunkIndexError):
        build([granules[0], bad], local, credentials=creds, client="sync", progress=False)
    assert not local.exists() and not list(tmp_path.iterdir())


# -- query accounting and the benchmark --------------------------------------------------------------------------


def test_query_accounting(index06, granules, creds, archive_cloud):
    limit = baseline.aoi_physical_limit(granules, GREENLAND, credentials=creds)
    p = plan(index06.location, GREENLAND, out_credentials=creds)
    seq = archive_cloud.seq
    got = query(index06.location, GREENLAND, creds)
    gets = [r for r in archive_cloud.ledger(seq) if r.verb == "GET" and r.key]
    index_key = split_url(index06.location)[1]
    index_gets = [r for r in gets if r.key == index_key]
    granule_gets = [r for r in gets if r.key != index_key]
    assert len(got) == limit.rows
    assert len(granule_gets) == len(p.requests) == got.attrs["chunkindex"]["ranges"]
    assert len(gets) <= len(p.requests) + len(index_gets)
    granule_bytes = sum(r.bytes for r in granule_gets)
    index_bytes = sum(r.bytes for r in index_gets)
    assert granule_bytes == p.nbytes
    assert p.chunk_bytes >= limit.total_chunk_bytes  # every chunk with a row inside is fetched
    assert granule_bytes + index_bytes <= 1.2 * limit.nbytes + index_bytes, (
        f"fetched {granule_bytes} granule bytes, {granule_bytes / limit.nbytes:.3f}x the physical limit "
        f"{limit.nbytes} (chunk bytes {p.chunk_bytes})")


def test_benchmark(archive_cloud, tmp_path):
    from is2cloud.bench import load_results

    results = tmp_path / "m.csv"
    ms = chunkindex.benchmark("test", archive_cloud, results=results, client="sync")
    assert [m.name for m in ms] == ["chunk index build", "baseline (tuned) -> GeoParquet",
                                    "chunk index -> GeoParquet"]
    assert archive_cloud.profile_name == "none"
    build_m, base_m, ci_m = ms
    assert build_m.granules == 2 and build_m.rows > 0
    assert base_m.rows == ci_m.rows > 0 and base_m.physical_bytes == ci_m.physical_bytes > 0
    assert ci_m.get_bytes < base_m.get_bytes and ci_m.gets > 0
    assert all(m.profile == "in-region" and m.scale == "test" for m in ms)
    assert "physical limit" in ci_m.notes and "index" in build_m.notes
    assert list(load_results(results)["name"]) == [m.name for m in ms]
    with pytest.raises(ValueError, match="serves"):
        chunkindex.benchmark("book", archive_cloud, results=results, client="sync")


# -- geometry: footprints and H3 ----------------------------------------------------------------------------------


def test_douglas_peucker_and_footprint_margin_cover_every_point():
    rng = np.random.default_rng(11)
    for _ in range(40):
        n = int(rng.integers(2, 3000))
        lat = 60 + np.cumsum(rng.normal(1e-4, 3e-5, n))
        lon = -45 + np.cumsum(rng.normal(2e-5, 2e-5, n)) + rng.normal(0, 5e-5, n)
        tol = float(rng.choice([1e-5, 1e-4, 1e-3]))
        keep, worst = douglas_peucker(lon, lat, tol)
        assert keep[0] == 0 and keep[-1] == n - 1 and worst <= tol
        line = LineString(np.column_stack([lon[keep], lat[keep]])) if len(keep) > 1 else None
        geom, margin = window_footprint(lon, lat, tol)
        assert margin >= worst and margin <= tol + 1e-8
        d = shapely.distance(geom, shapely.points(lon, lat))
        assert (d <= margin).all(), (d.max(), margin)
        if line is not None:
            assert geom.equals(line)
    assert window_footprint(np.array([]), np.array([]))[0] is None
    one, m = window_footprint(np.array([10.0, np.nan]), np.array([20.0, 1.0]))
    assert one.distance(shapely.Point(10, 20)) <= m


def test_footprint_across_the_antimeridian():
    lon = np.linspace(179.5, 180.5, 401)
    lat = np.linspace(70.0, 70.3, 401) + 1e-4 * np.sin(np.arange(401))
    lon = ((lon + 180) % 360) - 180
    geom, margin = window_footprint(lon, lat)
    assert geom.geom_type == "MultiLineString" and len(geom.geoms) == 2
    assert all(-180 <= b <= 180 for b in geom.bounds[::2])
    assert all(g.bounds[2] - g.bounds[0] < 1 for g in geom.geoms)
    assert (shapely.distance(geom, shapely.points(lon, lat)) <= margin).all()


def test_h3_cover_across_the_antimeridian():
    geom = shapely.MultiLineString([[(179.9, 70.0), (180.0, 70.1)], [(-180.0, 70.1), (-179.9, 70.2)]])
    cells = h3_cover(geom, 1e-4, 5)
    assert cells
    for lat, lon in ((70.0, 179.9), (70.05, 179.95), (70.1, 179.999), (70.1, -179.999), (70.2, -179.9)):
        assert h3.str_to_int(h3.latlng_to_cell(lat, lon, 5)) in cells, (lat, lon)
    # a few cells near the line, not a band around the world
    assert len(cells) < 60
    lons = [h3.cell_to_latlng(h3.int_to_str(c))[1] for c in cells]
    assert all(abs(x) > 179 for x in lons)
    # a polygon AOI across the line, as load_aoi splits it
    aoi = load_aoi((179.8, 70.0, -179.8, 70.2))
    cover = h3_cover(aoi.geometry, 0.0, 5)
    for lat, lon in ((70.1, 179.85), (70.1, -179.85), (70.0, 179.8), (70.2, -179.8)):
        assert h3.str_to_int(h3.latlng_to_cell(lat, lon, 5)) in cover, (lat, lon)
    assert all(abs(h3.cell_to_latlng(h3.int_to_str(c))[1]) > 179 for c in cover)


def test_h3_cover_includes_cells_of_points_within_the_margin():
    rng = np.random.default_rng(5)
    lon = -45 + np.cumsum(rng.normal(0, 1e-3, 500))
    lat = 62.5 + np.cumsum(np.full(500, 1e-3))
    geom, margin = window_footprint(lon, lat, 1e-3)
    cells = h3_cover(geom, margin, 7)
    assert all(h3.str_to_int(h3.latlng_to_cell(y, x, 7)) in cells for x, y in zip(lon, lat))


def test_point_within_the_margin_but_outside_the_footprint_bounds(granules, test_archive, tmp_path):
    """Douglas-Peucker drops a vertex that bulges less than the tolerance: its point may lie outside the
    bounds of the simplified footprint (only within ``margin`` of it). A tiny AOI around that point alone
    must still find it: bbox pruning and the index extent allow for the margin."""
    path = tmp_path / granules[0]["umm"]["GranuleUR"]
    shutil.copy(local_file(test_archive, granules[0]), path)
    with h5py.File(path, "a") as f:
        ds = f["gt2l/land_ice_segments/longitude"]
        lon = ds[()]
        west_first = lon[0] <= lon[-1]
        lon[1] = lon[0] - 3e-5 if west_first else lon[0] + 3e-5  # beyond the track's end, inside the tolerance
        ds[...] = lon
        lat = f["gt2l/land_ice_segments/latitude"][()]
    idx = build([path], tmp_path / "index.parquet", client="sync", progress=False)
    row = idx.frame[(idx.frame["track_id"] == "gt2l") & (idx.frame["row_start"] == 0)].iloc[0]
    w, s, e, n = row["footprint"].bounds
    assert not (w <= lon[1] <= e), "the bulging point should lie outside the footprint's bounds"
    assert row["footprint"].distance(shapely.Point(lon[1], lat[1])) <= row["margin"]
    aoi = (float(lon[1]) - 1e-6, float(lat[1]) - 1e-6, float(lon[1]) + 1e-6, float(lat[1]) + 1e-6)
    want = baseline.subset([path], aoi, client="sync", progress=False)
    assert len(want) == 1
    assert_same_rows(want, subset(idx.location, aoi), names=("baseline", "chunk index (file)"))
    assert_same_rows(want, subset(idx, aoi), names=("baseline", "chunk index (in memory)"))
