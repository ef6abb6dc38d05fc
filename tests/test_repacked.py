"""The repacked method (notebook 06): paged copies in the output bucket, read through HDF5's page buffer, with
the baseline's rows; stale and missing copies, bad input, h5coro as a second reader."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from granule_specs import ANTIMERIDIAN_AOIS, antimeridian_atl06

from is2cloud.geoparquet import OutputPathError
from is2cloud.methods import assert_same_rows, baseline, check_canonical, repacked
from is2cloud.methods.protocol import Prepared, check_method
from is2cloud.parallel import GranuleError, granule_name
from is2cloud.settings import get_settings

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
PAGE = 2**20  # a small page keeps the copies small (the antimeridian granule's)


@pytest.fixture(scope="module")
def bucket(archive_cloud):
    return archive_cloud.buckets[0]


@pytest.fixture(scope="module")
def s3(creds):
    return creds.boto3_client("s3")


@pytest.fixture(scope="module")
def copies(granules, creds, bucket):
    """The Greenland granules' copies at the published page size (8,000,000 bytes)."""
    return repacked.prepare(granules, out=f"s3://{bucket}/test-repacked/", credentials=creds, out_credentials=creds,
                            client="sync")


@pytest.fixture(scope="module")
def reference(granules, creds):
    return baseline.subset(granules, GREENLAND, credentials=creds, client="sync")


def test_follows_the_protocol(copies, granules, bucket, s3):
    assert check_method(repacked) == [] and isinstance(copies, Prepared) and copies.method == "repacked"
    assert copies.location == f"s3://{bucket}/test-repacked/"
    assert set(copies.granules) == {granule_name(g) for g in granules}
    for c, g in zip(copies.copies, granules):
        src = g.data_links(access="direct")[0]
        assert c.url == repacked.copy_url(copies.location, src) and c.url.endswith(src.split("/", 3)[3])
        head = s3.head_object(Bucket=bucket, Key=c.url.split("/", 3)[3])
        assert head["Metadata"]["source-etag"] == c.source_etag and head["Metadata"]["page-size"] == "8000000"
        assert head["ContentLength"] == c.nbytes
    stats = copies.stats
    assert copies.nbytes == stats["bytes_written"] == sum(c.nbytes for c in copies.copies) > 0
    assert stats["gets"] == len(granules) and stats["bytes_read"] == sum(c.source_bytes for c in copies.copies)
    assert set(stats["per_granule"]) == set(copies.granules) and stats["seconds"] > 0
    assert repacked.default_location() == f"s3://{get_settings().output_bucket}/repacked/"


def test_same_rows_as_the_baseline_from_the_handle_and_the_location(copies, reference, creds, archive_cloud):
    seq = archive_cloud.seq
    gdf = repacked.subset(copies, GREENLAND, credentials=creds, out_credentials=creds, client="sync")
    check_canonical(gdf)
    assert len(gdf) > 0
    assert_same_rows(reference, gdf, names=("baseline", "repacked"))
    pb = gdf.attrs["repacked"]["page_buffer"]
    assert pb["meta_hits"] > pb["meta_misses"] > 0, "the page buffer was not used"
    repacked_gets = archive_cloud.summary(seq).gets
    # the same copies read the baseline's way (earthaccess's 4 MiB block cache, no page buffer): more GETs
    seq = archive_cloud.seq
    plain = baseline.subset([c.url for c in copies.copies], GREENLAND, credentials=creds, client="sync")
    assert_same_rows(reference, plain, names=("baseline", "copies read the baseline's way"))
    assert repacked_gets < archive_cloud.summary(seq).gets
    again = repacked.subset(copies.location, GREENLAND, ["h_li", "latitude", "longitude", "delta_time",
                                                         "h_li_sigma", "atl06_quality_summary", "segment_id",
                                                         "geophysical/bsnow_h"], credentials=creds, out_credentials=creds,
                            client="sync")
    assert_same_rows(reference, again.drop(columns="bsnow_h"), names=("baseline", "repacked from its location"))
    assert again.attrs["repacked"]["copies"] == len(copies)


@pytest.fixture(scope="module")
def auto(granules, creds, bucket):
    """The Greenland granules' copies with the page size chosen for each (page_size="auto")."""
    return repacked.prepare(granules, out=f"s3://{bucket}/test-repacked-auto/", credentials=creds,
                            out_credentials=creds, client="sync", page_size="auto")


def test_auto_pages_metadata_in_one_get_then_only_the_chunks_read(auto, reference, creds, archive_cloud):
    sizes = {c.page_size for c in auto.copies}  # 2 MiB for the test granules' ~1.8 MB of metadata
    assert sizes <= {2**20, 2**21, 2**22} and auto.stats["page_size"] == (sizes.pop() if len(sizes) == 1 else "auto")
    seq = archive_cloud.seq
    gdf = repacked.subset(auto, GREENLAND, credentials=creds, out_credentials=creds, client="sync")
    assert_same_rows(reference, gdf, names=("baseline", "repacked, auto page size"))
    reader, pb = gdf.attrs["repacked"]["reader"], gdf.attrs["repacked"]["page_buffer"]
    gets = [r for r in archive_cloud.ledger(seq) if r.verb == "GET"]
    assert reader["gets"] == len(gets) and reader["bytes_fetched"] == sum(r.bytes for r in gets)
    assert reader["page_gets"] == len(auto) == pb["meta_misses"]  # the metadata: one page, one GET per copy
    assert pb["raw_accesses"] == 0  # no value is read through the page buffer
    assert reader["bytes_fetched"] < auto.nbytes  # the metadata page, coordinates and AOI chunks, not every page


def test_copy_file_keeps_fetched_ranges_disjoint(auto, creds):
    c = repacked.check_copy(auto.copies[0], credentials=creds, out_credentials=creds)
    assert c.nbytes >= 2 * c.page_size and c.etag
    with creds.s3fs().open(c.url, "rb") as fh:
        whole = fh.read()
    with repacked.CopyFile(creds, c, max_gap=0) as f:
        f.fetch([(100, 200), (300, 400)])
        f.fetch([(150, 350), (390, 500), (120, 130)])  # overlaps both, then extends the merged range
        assert f._starts == [100] and len(f._data[0]) == 400 and f.gets == 4 and f.page_gets == 0
        f.seek(110)
        assert f.read(380) == whole[110:490] and f.gets == 4  # served from memory
        f.seek(c.page_size - 10)
        assert f.read(20) == whole[c.page_size - 10:c.page_size + 10] and f.page_gets == 1  # two pages, one GET
        assert f.gets == 5 and f.bytes_fetched == 200 + (200 + 110) + 2 * c.page_size
        f.seek(105)
        assert f.read(10) == whole[105:115] and f.gets == 5  # now inside the pages, merged with the ranges


@pytest.fixture(scope="module")
def antimeridian(tmp_path_factory, creds, bucket, s3):
    """A granule crossing +-180 in the output bucket (as a source), and its copy."""
    path = antimeridian_atl06(tmp_path_factory.mktemp("am"))
    key = f"sources/{path.name}"
    s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    url = f"s3://{bucket}/{key}"
    prepared = repacked.prepare([url], out=f"s3://{bucket}/am-copies", credentials=creds, out_credentials=creds,
                                client="sync", page_size=PAGE)
    return url, prepared


def test_antimeridian_rows(antimeridian, creds):
    url, prepared = antimeridian
    assert prepared.location.endswith("/am-copies/")
    for aoi in ANTIMERIDIAN_AOIS:
        want = baseline.subset([url], aoi, credentials=creds, client="sync")
        got = repacked.subset(prepared, aoi, credentials=creds, out_credentials=creds, client="sync")
        assert len(got) > 0 and (got["longitude"] > 179.8).any() and (got["longitude"] < -179.8).any()
        assert_same_rows(want, got, names=("baseline", "repacked"))


def test_h5coro_reads_the_same_values_as_h5py(copies, creds):
    c = copies.copies[0]
    got = repacked.read_beam_h5coro(c.url, "gt1l", credentials=creds)
    with creds.s3fs().open(c.url, "rb") as fh, h5py.File(fh, "r") as h5:
        for v in baseline.DEFAULT_VARIABLES:
            want = h5[f"gt1l/land_ice_segments/{v}"][()]
            assert got[v].dtype == want.dtype and np.array_equal(got[v], want), v


def test_open_read_group_modes_agree_and_the_page_buffer_saves_requests(copies, creds, archive_cloud):
    c = copies.copies[0]
    values, gets = [], []
    for url, mode in ((c.source_url, "none"), (c.url, "none"), (c.url, "page buffer"),
                      (c.url, "page buffer + blockcache")):
        seq = archive_cloud.seq
        values.append(repacked.open_read_group(url, creds, "gt2r/land_ice_segments", mode=mode,
                                               page_size=c.page_size))
        gets.append(archive_cloud.summary(seq).gets)
    assert "h_li" in values[0]
    for v in values[1:]:
        assert v.keys() == values[0].keys() and all(np.array_equal(v[k], values[0][k]) for k in v)
    # no file cache: every read HDF5 makes is a GET, on the original and the copy alike, unless the page
    # buffer gathers them into pages; the page-size block cache then fetches each page once
    assert gets[2] * 5 < min(gets[0], gets[1]) and gets[3] <= gets[2], gets
    with pytest.raises(ValueError, match="needs the copy's page_size"):
        repacked.open_read_group(c.url, creds, mode="page buffer")
    with pytest.raises(ValueError, match="mode must be"):
        repacked.open_read_group(c.url, creds, mode="mmap")


# -- errors -----------------------------------------------------------------------------------------------


def test_stale_copy_is_an_error_naming_the_granule(antimeridian, creds, s3, bucket):
    url, prepared = antimeridian
    name = prepared.granules[0]
    key = url.split("/", 3)[3]
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=body + b"\0")  # the source changes: a new ETag
    try:
        with pytest.raises(GranuleError, match=f"{name}: the granule changed after it was repacked") as err:
            repacked.subset(prepared, ANTIMERIDIAN_AOIS[0], credentials=creds, out_credentials=creds, client="sync")
        assert err.value.failures[0].error_type == "StaleCopyError"
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_missing_and_foreign_copies(creds, s3, bucket):
    s3.put_object(Bucket=bucket, Key="foreign/ATL06_foreign.h5", Body=b"not made by prepare")
    with pytest.raises(GranuleError, match="ATL06_foreign.h5: .* was not made by repacked.prepare"):
        repacked.subset(f"s3://{bucket}/foreign/", GREENLAND, credentials=creds, out_credentials=creds, client="sync")
    with pytest.raises(repacked.MissingCopyError, match="no repacked copies under"):
        repacked.subset(f"s3://{bucket}/nothing-here/", GREENLAND, credentials=creds, out_credentials=creds)
    gone = repacked.RepackedCopies(f"s3://{bucket}/x/", (repacked.Copy("ATL06_gone.h5", f"s3://{bucket}/x/ATL06_gone.h5"),))
    with pytest.raises(GranuleError, match="ATL06_gone.h5: there is no repacked copy at"):
        repacked.subset(gone, GREENLAND, credentials=creds, out_credentials=creds, client="sync")


def _objects(s3, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_not_hdf5_leaves_nothing(creds, s3, bucket):
    s3.put_object(Bucket=bucket, Key="bad/ATL06_fake.h5", Body=b"this is not an HDF5 file")
    with pytest.raises(GranuleError, match="ATL06_fake.h5 is not an HDF5 file"):
        repacked.prepare([f"s3://{bucket}/bad/ATL06_fake.h5"], out=f"s3://{bucket}/bad-copies/", credentials=creds,
                         out_credentials=creds, client="sync")
    assert _objects(s3, bucket, "bad-copies/") == []


@pytest.mark.parametrize("page_size", [4095, 64 * 2**20 + 1])
def test_page_size_out_of_range_is_refused_before_any_work(page_size, creds):
    with pytest.raises(ValueError, match="page_size"):
        repacked.prepare(["s3://nowhere/ATL06_missing.h5"], credentials=creds, out_credentials=creds,
                         page_size=page_size)


def test_output_in_the_archive_bucket_is_refused_before_any_work(creds):
    archive = get_settings().archive_bucket
    with pytest.raises(OutputPathError, match=f"{archive} is the read-only archive bucket"):
        repacked.prepare(["s3://nowhere/ATL06_missing.h5"], out=f"s3://{archive}/copies/", credentials=creds,
                         out_credentials=creds)
    with pytest.raises(ValueError, match="out must be an s3:// prefix"):
        repacked.prepare(["s3://nowhere/ATL06_missing.h5"], out="/tmp/copies", credentials=creds,
                         out_credentials=creds)


def test_interrupted_repack_leaves_no_object(granules, creds, s3, bucket, monkeypatch):
    import is2cloud.repack as repack_module

    copy_values, calls = repack_module._copy_values, []

    def interrupt(*args, **kwargs):  # Ctrl-C while the 50th dataset is copied
        calls.append(1)
        if len(calls) == 50:
            raise KeyboardInterrupt
        return copy_values(*args, **kwargs)

    monkeypatch.setattr(repack_module, "_copy_values", interrupt)
    with pytest.raises(KeyboardInterrupt):
        repacked.prepare(granules[:1], out=f"s3://{bucket}/interrupted/", credentials=creds, out_credentials=creds,
                         client="sync")
    assert _objects(s3, bucket, "interrupted/") == []
