"""The baseline method against the embedded cloud: schema, a clip computed by hand with h5py, the
antimeridian, bad input, naive == tuned, the physical limit and the benchmark."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import earthaccess
import h5py
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Polygon

from granule_specs import ANTIMERIDIAN_AOIS, antimeridian_atl06

from is2cloud.aoi import AOIError, load_aoi
from is2cloud.catalog import NoGranulesError
from is2cloud.methods import CANONICAL_COLUMNS, assert_same_rows, baseline, check_canonical
from is2cloud.methods.baseline import open_granule, subset
from is2cloud.methods.chunks import chunk_runs
from is2cloud.methods.schema import FILL_VALUE_F32, TRACK_IDS
from is2cloud.parallel import GranuleError

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
GPS_EPOCH = pd.Timestamp("1980-01-06", tz="UTC")


@pytest.fixture(scope="module")
def scratch(archive_cloud):
    """Put bytes into the output bucket; returns the s3:// URL."""
    s3 = archive_cloud.credentials().boto3_client("s3")
    bucket = archive_cloud.buckets[0]

    def put(key: str, body: bytes) -> str:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    return put


def local_file(test_archive, granule) -> Path:
    return test_archive.path_of(granule.data_links(access="direct")[0].split("/", 3)[3])


def expected_rows(path: Path, inside) -> pd.DataFrame:
    """The clip computed independently: h5py, a numpy test for the AOI, GPS-epoch arithmetic for time."""
    rows = []
    with h5py.File(path) as f:
        epoch = float(f["ancillary_data/atlas_sdp_gps_epoch"][0])
        rgt, cycle = int(f["orbit_info/rgt"][0]), int(f["orbit_info/cycle_number"][0])
        for beam in TRACK_IDS:
            g = f[f"{beam}/land_ice_segments"]
            lat, lon = g["latitude"][()], g["longitude"][()]
            keep = inside(lon, lat)
            h = g["h_li"][()][keep].astype("f8")
            sigma = g["h_li_sigma"][()][keep].astype("f8")
            rows.append(pd.DataFrame({
                "time": GPS_EPOCH + pd.to_timedelta(epoch + g["delta_time"][()][keep] - 18, unit="s"),
                "latitude": lat[keep], "longitude": lon[keep],
                "h_li": np.where(h >= FILL_VALUE_F32, np.nan, h),
                "h_li_sigma": np.where(sigma >= FILL_VALUE_F32, np.nan, sigma),
                "atl06_quality_summary": g["atl06_quality_summary"][()][keep],
                "track_id": beam, "rgt": rgt, "cycle": cycle, "segment_id": g["segment_id"][()][keep],
                "granule": path.name,
            }))
    return pd.concat(rows).sort_values(["granule", "track_id", "segment_id"]).reset_index(drop=True)


def compare(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert len(got) == len(want) and len(want) > 0
    for c in ("latitude", "longitude", "atl06_quality_summary", "track_id", "rgt", "cycle", "segment_id", "granule"):
        assert np.array_equal(got[c].to_numpy(), want[c].to_numpy()), c
    for c in ("h_li", "h_li_sigma"):  # float32 in the file and in the frame; fill values become NaN
        assert np.array_equal(got[c].to_numpy("f8"), want[c].to_numpy(), equal_nan=True), c
    # float seconds -> ns: the two conversions may round differently by a nanosecond or so
    assert (got["time"] - want["time"]).abs().max() < pd.Timedelta(microseconds=1)


# -- schema, clip, configurations ------------------------------------------------------------------------------


def test_schema_and_sort(granules, creds):
    gdf = subset(granules, GREENLAND, credentials=creds, client="sync", progress=False)
    check_canonical(gdf, name="baseline")
    assert tuple(gdf.columns) == CANONICAL_COLUMNS
    keys = gdf[["granule", "track_id", "segment_id"]]
    assert keys.equals(keys.sort_values(list(keys.columns)).reset_index(drop=True))
    assert set(gdf["granule"]) == {g["umm"]["GranuleUR"] for g in granules}
    assert set(gdf["track_id"]) == set(TRACK_IDS)
    assert load_aoi(GREENLAND).contains(gdf["longitude"], gdf["latitude"]).all()
    assert gdf.attrs.get("skipped") is None


def test_clip_by_hand_on_a_small_aoi(granules, creds, test_archive):
    path = local_file(test_archive, granules[0])
    with h5py.File(path) as f:
        lat = f["gt2l/land_ice_segments/latitude"][()]
        lon = f["gt2l/land_ice_segments/longitude"][()]
    # a box whose south and north edges pass exactly through two segments of gt2l (boundary: inside)
    i, j = len(lat) // 3, len(lat) // 3 + 40
    w, e = float(min(lon[i:j + 1]) - 0.01), float(max(lon[i:j + 1]) + 0.01)
    s, n = float(min(lat[i], lat[j])), float(max(lat[i], lat[j]))

    def inside(x, y):
        return (x >= w) & (x <= e) & (y >= s) & (y <= n)

    gdf = subset([granules[0]], (w, s, e, n), credentials=creds, client="sync", progress=False)
    want = expected_rows(path, inside)
    compare(gdf, want)
    on_edge = gdf[(gdf["track_id"] == "gt2l") & gdf["latitude"].isin([lat[i], lat[j]])]
    assert len(on_edge) == 2  # both boundary segments are kept


def test_chunk_runs():
    assert chunk_runs(np.array([3, 4, 25, 41]), 10, 45) == [(0, 10), (20, 30), (40, 45)]
    assert chunk_runs(np.array([9, 10, 19, 20]), 10, 100) == [(0, 30)]  # adjacent chunks merge
    mask = np.zeros(45, bool)
    mask[[12, 44]] = True
    assert chunk_runs(mask, 10, 45) == [(10, 20), (40, 45)] and chunk_runs(np.zeros(5, bool), 10, 5) == []
    with pytest.raises(ValueError, match="rows must lie in 0..44"):
        chunk_runs(np.array([45]), 10, 45)


class _CountingFile(io.RawIOBase):
    """A read-only file that counts the bytes read from it."""

    def __init__(self, path: Path):
        self._f = open(path, "rb")  # noqa: SIM115 (closed with the wrapper)
        self.nbytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buf) -> int:
        n = self._f.readinto(buf)
        self.nbytes += n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def test_aoi_chunks_reads_the_same_rows_from_fewer_bytes(granules, test_archive, tmp_path):
    src = local_file(test_archive, granules[0])
    path = tmp_path / "chunked.h5"  # 50-row chunks (the test granules fit in one 10k chunk)
    with h5py.File(src) as f, h5py.File(path, "w") as out:
        for beam in TRACK_IDS:
            for v in baseline.DEFAULT_VARIABLES:
                name = f"{beam}/land_ice_segments/{v}"
                out.create_dataset(name, data=f[name][()], chunks=(50,), compression="gzip")
        for p in (baseline.EPOCH, *baseline.ORBIT.values()):
            out.create_dataset(p, data=f[p][()])
        lat, lon = f["gt2l/land_ice_segments/latitude"][()], f["gt2l/land_ice_segments/longitude"][()]
    i, j = len(lat) // 3, len(lat) // 3 + 120  # rows in a few chunks of gt2l, and perhaps of its pair
    box = load_aoi((float(min(lon[i:j]) - 0.001), float(min(lat[i:j])), float(max(lon[i:j]) + 0.001),
                    float(max(lat[i:j]))))
    for aoi in (box, load_aoi(GREENLAND)):
        got = {}
        for rows in ("all", "aoi-chunks"):
            with _CountingFile(path) as fh, h5py.File(fh, "r") as h5:
                got[rows] = (baseline.clip_granule(h5, aoi, granule="g", rows=rows), fh.nbytes)
        (want, all_bytes), (cols, chunk_bytes) = got["all"], got["aoi-chunks"]
        assert list(cols) == list(want) and len(want["latitude"]) > 0
        for c in want:
            assert cols[c].dtype == want[c].dtype and np.array_equal(cols[c], want[c]), c
        assert chunk_bytes < all_bytes if aoi is box else chunk_bytes <= all_bytes
    with h5py.File(path) as h5, pytest.raises(ValueError, match="rows must be 'all' or 'aoi-chunks'"):
        baseline.clip_granule(h5, box, granule="g", rows="some")


def test_naive_and_tuned_return_the_same_rows(granules, creds, archive_cloud):
    seq = archive_cloud.seq
    naive = subset(granules, GREENLAND, config="naive", credentials=creds, client="sync", progress=False)
    mid = archive_cloud.seq
    tuned = subset(granules, GREENLAND, config="tuned", credentials=creds, client="sync", progress=False)
    assert_same_rows(naive, tuned, names=("naive", "tuned"))
    assert len(naive) > 0
    # both read through S3: one GET at least per granule, for each configuration
    assert archive_cloud.summary(seq).gets >= len(granules) and archive_cloud.summary(mid).gets >= len(granules)


@pytest.mark.parametrize("config", ["naive", "tuned"])
def test_injected_faults_are_retried_and_give_the_same_rows(granules, creds, archive_cloud, config):
    reference = subset(granules, GREENLAND, config=config, credentials=creds, client="sync", progress=False)
    for kind in ("503", "500", "reset"):
        archive_cloud.set_faults(0.3, kinds=[kind], seed=1)
        try:
            seq = archive_cloud.seq
            faulty = subset(granules, GREENLAND, config=config, credentials=creds, client="sync", progress=False)
            assert archive_cloud.summary(seq).faults > 0, kind
        finally:
            archive_cloud.set_faults(0.0)
        assert_same_rows(reference, faulty, names=("clean", f"with {kind} faults"))


def test_dask_workers_build_their_own_filesystem(granules, creds):
    from is2cloud.parallel import get_client

    here = subset(granules, GREENLAND, credentials=creds, client="sync", progress=False)
    there = subset(granules, GREENLAND, credentials=creds, client=get_client(), progress=False)
    assert_same_rows(here, there, names=("sync", "dask"))


def test_open_options():
    from earthaccess.store import _optimal_fsspec_block_size

    for size in (1, 99 * 2**20, 100 * 2**20 - 1, 100 * 2**20, 2**30 - 1, 2**30, 5 * 2**30):
        assert baseline.earthaccess_block_size(size) == _optimal_fsspec_block_size(size)
        assert baseline.open_options("tuned", size) == {"cache_type": "blockcache",
                                                        "block_size": _optimal_fsspec_block_size(size)}
        assert baseline.open_options("blockcache", size) == baseline.open_options("tuned", size)
    assert baseline.open_options("naive", 1) == baseline.open_options("readahead", 1) == baseline.s3fs_defaults()
    with pytest.raises(ValueError, match=r"'readahead' \(naive\), 'blockcache' \(tuned\), not 'fast'"):
        baseline.open_options("fast", 1)


def test_configurations_reach_the_file_objects(granules, creds):
    src = baseline.granule_source(granules[0])
    plain = creds.s3fs().open(src.url, "rb")  # what a newcomer gets
    with open_granule(src, "naive", creds) as naive, open_granule(src, "tuned", creds) as tuned:
        assert (naive.cache.name, naive.blocksize) == (plain.cache.name, plain.blocksize)
        assert tuned.cache.name == "blockcache"
        assert tuned.blocksize == baseline.earthaccess_block_size(src.size)
    plain.close()


def test_closing_a_granule_lets_go_of_its_cached_blocks(granules, creds):
    """fsspec's block cache is a reference cycle: left alone, its blocks outlive the file until a full
    garbage collection (a worker reading granule after granule grew by ~1 GB)."""
    import gc

    src = baseline.granule_source(granules[0])
    gc.disable()
    try:
        with open_granule(src, "tuned", creds) as fh:
            cache = fh.cache
            fh.read(1000)
            fh.seek(src.size - 1000)
            fh.read(1000)
            assert cache._fetch_block_cached.cache_info().currsize >= 1
        assert cache._fetch_block_cached.cache_info().currsize == 0
    finally:
        gc.enable()


def test_extra_variables_and_variable_checks(granules, creds):
    extra = (*baseline.DEFAULT_VARIABLES, "fit_statistics/n_fit_photons")
    gdf = subset(granules[:1], GREENLAND, extra, credentials=creds, client="sync", progress=False)
    assert list(gdf.columns) == [*CANONICAL_COLUMNS, "n_fit_photons"]
    assert len(gdf) and gdf["n_fit_photons"].notna().all()
    with pytest.raises(ValueError, match="must include"):
        subset(granules, GREENLAND, ("latitude", "longitude"), credentials=creds, client="sync")
    with pytest.raises(ValueError, match="config"):
        subset(granules, GREENLAND, config="fast", credentials=creds, client="sync")


# -- the antimeridian ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def antimeridian_granule(tmp_path_factory, scratch):
    """A shortened synthetic ATL06 granule whose beams cross +-180, uploaded to the embedded S3."""
    path = antimeridian_atl06(tmp_path_factory.mktemp("am"))
    return path, scratch(f"antimeridian/{path.name}", path.read_bytes())


@pytest.mark.parametrize("aoi", ANTIMERIDIAN_AOIS)
def test_antimeridian_aoi(antimeridian_granule, creds, aoi):
    path, url = antimeridian_granule

    def inside(x, y):
        return ((x >= 179.8) | (x <= -179.8)) & (y >= 70.0) & (y <= 70.2)

    gdf = subset([url], aoi, credentials=creds, client="sync", progress=False)
    check_canonical(gdf)
    compare(gdf, expected_rows(path, inside))
    assert (gdf["longitude"] > 0).any() and (gdf["longitude"] < 0).any()


# -- bad input ------------------------------------------------------------------------------------------------------


def test_bad_aois(granules, creds):
    kw = {"credentials": creds, "client": "sync", "progress": False}
    with pytest.raises(AOIError, match="empty"):
        subset(granules, Polygon(), **kw)
    with pytest.raises(AOIError, match="no area"):
        subset(granules, Polygon([(-45, 62), (-44, 62), (-43, 62)]), **kw)
    with pytest.raises(AOIError, match="self-intersection"):
        subset(granules, Polygon([(-45, 62.6), (-44.6, 63), (-44.6, 62.6), (-45, 63)]), **kw)  # a bow tie
    with pytest.raises(AOIError, match="swapped"):  # Grand Mesa as (lat, lon): latitudes of -108
        subset(granules, (39.0, -108.3, 39.1, -108.1), **kw)


def test_lon_lat_swapped_aoi_is_refused(granules, creds):
    swapped = shapely.transform(load_aoi(GREENLAND).geometry, lambda xy: xy[:, ::-1])
    with pytest.raises(AOIError, match="swapped"):
        subset(granules, swapped, credentials=creds, client="sync", progress=False)


def test_no_granules(creds):
    with pytest.raises(NoGranulesError, match="no granules"):
        subset([], GREENLAND, credentials=creds, client="sync")


def _granule_at(granule, url: str, size: int | None = None):
    """A copy of a catalog record pointing at another object (and claiming another size)."""
    rec = copy.deepcopy(dict(granule))
    for link in rec["umm"]["RelatedUrls"]:
        if link["Type"] == "GET DATA VIA DIRECT ACCESS":
            link["URL"] = url
    if size is not None:
        rec["umm"]["DataGranule"]["ArchiveAndDistributionInformation"][0]["SizeInBytes"] = size
    return earthaccess.DataGranule(rec, cloud_hosted=True)


def _failure(exc_info) -> str:
    (failure,) = exc_info.value.failures
    return f"{failure.error_type}: {failure.message}"


def test_truncated_object(granules, creds, scratch, test_archive):
    data = local_file(test_archive, granules[0]).read_bytes()
    url = scratch("bad/ATL06_truncated.h5", data[: len(data) // 2])
    with pytest.raises(GranuleError) as err:  # a bare URL: found by h5py from the superblock
        subset([url], GREENLAND, credentials=creds, client="sync", progress=False)
    msg = _failure(err)
    assert "ATL06_truncated.h5" in msg and "truncated" in msg and str(len(data)) in msg
    with pytest.raises(GranuleError) as err:  # a catalog record: the size disagrees with the catalog
        subset([_granule_at(granules[0], url)], GREENLAND, credentials=creds, client="sync", progress=False)
    assert "truncated" in _failure(err) and str(len(data) // 2) in _failure(err)


def test_not_hdf5_and_missing_objects(creds, scratch):
    url = scratch("bad/ATL06_not_hdf5.h5", b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>")
    with pytest.raises(GranuleError) as err:
        subset([url], GREENLAND, credentials=creds, client="sync", progress=False)
    assert "ATL06_not_hdf5.h5" in _failure(err) and "not an HDF5 file" in _failure(err)
    url = scratch("bad/ATL06_empty.h5", b"")
    with pytest.raises(GranuleError, match="empty"):
        subset([url], GREENLAND, credentials=creds, client="sync", progress=False)
    with pytest.raises(GranuleError, match="no object at s3://"):
        subset([url.replace("empty", "absent")], GREENLAND, credentials=creds, client="sync", progress=False)


def test_missing_variable(granules, creds, scratch, test_archive, tmp_path):
    with pytest.raises(GranuleError) as err:
        subset(granules[:1], GREENLAND, (*baseline.DEFAULT_VARIABLES, "no_such_variable"), credentials=creds,
               client="sync", progress=False)
    assert "MissingVariableError" in _failure(err) and "gt1l/land_ice_segments/no_such_variable" in _failure(err)
    assert granules[0]["umm"]["GranuleUR"] in _failure(err)
    path = tmp_path / "ATL06_no_h_li.h5"
    path.write_bytes(local_file(test_archive, granules[0]).read_bytes())
    with h5py.File(path, "a") as f:
        del f["gt3r/land_ice_segments/h_li"]
    url = scratch("bad/ATL06_no_h_li.h5", path.read_bytes())
    with pytest.raises(GranuleError) as err:
        subset([url], GREENLAND, credentials=creds, client="sync", progress=False)
    assert "ATL06_no_h_li.h5" in _failure(err) and "gt3r/land_ice_segments/h_li is missing" in _failure(err)


def test_skip_bad_granules(granules, creds, scratch):
    bad = scratch("bad/ATL06_skip_me.h5", b"not an HDF5 file at all")
    good = subset(granules, GREENLAND, credentials=creds, client="sync", progress=False)
    with pytest.warns(UserWarning, match="ATL06_skip_me.h5"):
        mixed = subset([granules[0], bad, granules[1]], GREENLAND, credentials=creds, client="sync",
                       progress=False, on_error="skip")
    assert_same_rows(good, mixed, names=("good", "good + bad"))
    assert [s["granule"] for s in mixed.attrs["skipped"]] == ["ATL06_skip_me.h5"]
    assert "not an HDF5 file" in mixed.attrs["skipped"][0]["message"]
    with pytest.raises(GranuleError, match="ATL06_skip_me.h5"):
        subset([granules[0], bad], GREENLAND, credentials=creds, client="sync", progress=False)


def test_bad_granule_types():
    with pytest.raises(TypeError, match="DataGranule"):
        subset([42], GREENLAND, client="sync")


# -- the physical limit and the benchmark --------------------------------------------------------------------------


def test_physical_limit_local_copy_equals_s3_and_bounds_the_fetch(granules, creds, archive_cloud):
    from_disk = baseline.aoi_physical_limit(granules, GREENLAND, credentials=creds)
    seq = archive_cloud.seq
    through_s3 = baseline.aoi_physical_limit(granules, GREENLAND, credentials=creds, local_copies=False)
    assert archive_cloud.summary(seq).gets > 0          # the second really went through S3 ...
    assert through_s3 == from_disk                      # ... and found the same chunks
    rows = subset(granules, GREENLAND, credentials=creds, client="sync", progress=False)
    assert from_disk.rows == len(rows)
    seq = archive_cloud.seq
    subset(granules, GREENLAND, credentials=creds, client="sync", progress=False)
    assert 0 < from_disk.nbytes <= archive_cloud.summary(seq).get_bytes


def test_benchmark_records_both_configurations(archive_cloud, tmp_path):
    from is2cloud.bench import load_results

    results = tmp_path / "m.csv"
    ms = baseline.benchmark("test", archive_cloud, results=results)
    assert [m.name for m in ms] == ["baseline (naive)", "baseline (tuned)"]
    assert archive_cloud.profile_name == "none"  # restored after measuring under in-region
    for m in ms:
        assert m.profile == "in-region" and m.scale == "test" and m.method == "baseline"
        assert m.gets and m.get_bytes >= m.physical_bytes > 0 and m.rows > 0 and m.granules == 2
        assert m.bytes_ratio >= 1
    assert ms[0].rows == ms[1].rows
    table = load_results(results)
    assert list(table["name"]) == ["baseline (naive)", "baseline (tuned)"]
    assert (table["physical_bytes"] == ms[0].physical_bytes).all()
    with pytest.raises(ValueError, match="serves"):
        baseline.benchmark("book", archive_cloud, results=results)
