"""is2cloud.sliderule.atl06p: GeoParquet on the embedded S3 (valid, spec columns, read back by geopandas),
the URL when open_on_complete is false, each bad input with nothing left under the output key, the legacy
output key, the real client in earthdata mode (monkeypatched, and against an unreachable loopback port),
and the elevations against the synthetic surface and the ATL06 of the same tracks."""

from __future__ import annotations

import itertools
import socket
import uuid
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sliderule
from sliderule import icesat2
from sliderule.session import FatalError

from is2cloud import sliderule as sr
from is2cloud.aoi import load_aoi
from is2cloud.atl06sr import BEAMS, OUTPUT_COLUMNS, OUTPUT_DTYPES, ParameterError
from is2cloud.catalog import NoGranulesError
from is2cloud.credentials import CredentialsError
from is2cloud.geoparquet import OutputPathError, validate_geoparquet
from is2cloud.granules import surface_height, surface_key_for
from is2cloud.settings import get_settings, override

REPO = Path(__file__).resolve().parents[1]
GRANDMESA = REPO / "data" / "grandmesa.geojson"


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def poly():
    return sliderule.toregion(str(GRANDMESA))["poly"]


@pytest.fixture(scope="module")
def s3(creds):
    return creds.boto3_client("s3")


@pytest.fixture(scope="module")
def bucket(archive_cloud):
    return archive_cloud.buckets[0]


def new_url(bucket: str, name: str = "grandmesa.parquet") -> str:
    return f"s3://{bucket}/sliderule-test/{uuid.uuid4().hex[:8]}/{name}"


def objects_under(s3, url: str) -> list[str]:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])]


def run(parms, cloud, **kw):
    return sr.atl06p(parms, client="sync", cloud=cloud, progress=False, **kw)


@pytest.fixture(scope="module")
def native(poly, archive_cloud):
    """The in-memory result (no output), as the client's atl06p returns it."""
    return run(sr.tutorial_parms(poly), archive_cloud)


@pytest.fixture(scope="module")
def written(poly, archive_cloud, creds, bucket):
    """GeoParquet written to the embedded S3 through a Dask cluster of worker processes."""
    from distributed import Client, LocalCluster

    url = new_url(bucket)
    parms = sr.tutorial_parms(poly, output={"path": url, "format": "geoparquet", "open_on_complete": False,
                                            "credentials": creds.sliderule_output()})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        result = sr.atl06p(parms, client=client, cloud=archive_cloud, progress=False)
    return result, url


# -- the engine reads the generated granules ------------------------------------------------------------


def test_native_frame_is_the_clients(native):
    assert list(native.columns) == [c for c in OUTPUT_COLUMNS if c != "extent_id"] + ["geometry"]
    assert native.index.name == "time" and native.index.dtype == "datetime64[ns]"
    assert native.index.is_monotonic_increasing
    assert str(native.crs) == "EPSG:7912"
    assert set(native["rgt"]) == {295} and set(native["cycle"]) == {3, 5}
    assert set(native["gt"]) <= {10, 20, 30, 40, 50, 60} and set(native["spot"]) <= {1, 2, 3, 4, 5, 6}


def test_h_mean_follows_the_synthetic_surface(native):
    area = load_aoi(GRANDMESA)
    assert area.contains(native.geometry.x, native.geometry.y).mean() > 0.95  # extent centres in the AOI
    key = surface_key_for(area.geometry.centroid.x, area.geometry.centroid.y)
    t = native.index.to_numpy().astype("int64") / 1e9
    truth = surface_height(native.geometry.x.to_numpy(), native.geometry.y.to_numpy(), t, key, get_settings().seed)
    err = native["h_mean"].to_numpy() - truth
    assert abs(np.median(err)) < 0.02
    assert np.median(np.abs(err)) < 0.05 and np.percentile(np.abs(err), 99) < 0.5


def test_h_mean_agrees_with_atl06_h_li_of_the_same_tracks(native, archive_cloud):
    atl06 = sr.atl06_reference(native, GRANDMESA, client="sync", cloud=archive_cloud)
    assert set(zip(atl06["rgt"], atl06["cycle"])) == set(zip(native["rgt"].astype(int), native["cycle"].astype(int)))
    pairs = sr.compare_with_atl06(native, atl06)
    assert len(pairs) > 0.9 * len(native)
    assert abs(pairs["dh"].median()) < 0.05
    assert pairs["dh"].abs().median() < 0.15
    shifted = native.assign(segment_id=native["segment_id"].astype("int64") + 1)
    assert sr.compare_with_atl06(shifted, atl06)["dh"].abs().median() > pairs["dh"].abs().median()


# -- GeoParquet on S3 --------------------------------------------------------------------------------


def test_returns_the_url_when_not_opened(written):
    result, url = written
    assert result == url and result.startswith("s3://")


def test_geoparquet_is_valid_with_sliderule_metadata(written, creds, s3):
    _, url = written
    info = validate_geoparquet(url, credentials=creds, expected_crs="EPSG:7912")
    assert info.num_rows > 0
    assert {"sliderule", "recordinfo"} <= set(info.metadata)
    rqst = info.metadata["sliderule"]["server"]["rqst"]
    assert rqst["endpoint"] == "atl06p"
    assert rqst["parms"]["len"] == 40.0 and rqst["parms"]["maxi"] == 6 and rqst["parms"]["poly"]
    assert "credentials" not in rqst["parms"]["output"]
    assert info.metadata["recordinfo"] == {"time": "time", "x": "longitude", "y": "latitude", "as_geo": True}
    bucket, key = url.removeprefix("s3://").split("/", 1)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    for secret in (creds.secret_access_key, creds.session_token, creds.access_key_id):
        assert secret.encode() not in body


def test_columns_and_dtypes_are_the_servers(written, creds):
    _, url = written
    schema = pq.ParquetFile(creds.s3fs().open(url, "rb")).schema_arrow
    assert {"geo", "pandas", "sliderule", "recordinfo"} <= {k.decode() for k in schema.metadata}
    back = gpd.read_parquet(url, storage_options=dict(creds.storage_options()))
    assert list(back.columns) == list(OUTPUT_COLUMNS) + ["geometry"]
    for c in OUTPUT_COLUMNS:
        assert back[c].dtype == np.dtype(OUTPUT_DTYPES[c]), c
    assert back.index.name == "time" and back.index.dtype == "datetime64[ns]"
    assert back.crs.to_epsg() == 7912


def test_file_holds_the_same_rows_as_the_native_call(written, native, creds):
    _, url = written
    back = gpd.read_parquet(url, storage_options=dict(creds.storage_options()))
    assert len(back) == len(native)
    pd.testing.assert_index_equal(back.index, native.index)
    np.testing.assert_array_equal(back["h_mean"].to_numpy(), native["h_mean"].to_numpy())
    np.testing.assert_array_equal(back.geometry.x.to_numpy(), native.geometry.x.to_numpy())
    assert back["extent_id"].is_unique


def test_open_on_complete_returns_the_frame_with_metadata(poly, archive_cloud, creds, bucket, native):
    url = new_url(bucket)
    gdf = run(sr.tutorial_parms(poly, output={"path": url, "format": "geoparquet", "open_on_complete": True,
                                              "credentials": creds.sliderule_output()}), archive_cloud)
    assert isinstance(gdf, gpd.GeoDataFrame) and len(gdf) == len(native)
    assert gdf.index.name == "time" and "extent_id" in gdf.columns
    assert gdf.attrs["sliderule"]["server"]["rqst"]["endpoint"] == "atl06p"


def test_plain_parquet_keeps_latitude_and_longitude(poly, archive_cloud, tmp_path, native):
    path = tmp_path / "out" / "grandmesa.parquet"
    result = run(sr.tutorial_parms(poly, output={"path": str(path), "format": "parquet"}), archive_cloud)
    assert result == str(path)
    meta = pq.read_schema(path).metadata
    assert b"geo" not in meta and b"sliderule" in meta
    df = pd.read_parquet(path)
    assert df.index.name == "time" and {"latitude", "longitude", "extent_id"} <= set(df.columns)
    np.testing.assert_allclose(df["latitude"].to_numpy(), native.geometry.y.to_numpy())
    assert sorted(p.name for p in path.parent.iterdir()) == ["grandmesa.parquet"]  # no temporary file left


def test_no_elevations_still_writes_the_schema(poly, archive_cloud, creds, bucket, native):
    missing = sorted(set(BEAMS) - {BEAMS[int(g) // 10 - 1] for g in set(native["gt"])})
    assert missing  # beams of the granules that do not cross the AOI
    assert len(run(sr.tutorial_parms(poly, beams=missing), archive_cloud)) == 0
    url = new_url(bucket)
    run(sr.tutorial_parms(poly, beams=missing, output={"path": url, "credentials": creds.sliderule_output()}),
        archive_cloud)
    assert validate_geoparquet(url, credentials=creds).num_rows == 0
    back = gpd.read_parquet(url, storage_options=dict(creds.storage_options()))
    assert list(back.columns) == list(OUTPUT_COLUMNS) + ["geometry"] and back.index.name == "time"


def test_parquet_with_as_geo_is_geoparquet(poly, archive_cloud, tmp_path):
    path = tmp_path / "g.parquet"
    run(sr.tutorial_parms(poly, output={"path": str(path), "format": "parquet", "as_geo": True}), archive_cloud)
    assert validate_geoparquet(path).metadata["recordinfo"]["as_geo"] is True


def test_legacy_region_warns_and_still_writes(poly, archive_cloud, creds, bucket, s3):
    url = new_url(bucket)
    parms = sr.tutorial_parms(poly, output={"path": url, "format": "geoparquet", "region": "us-west-2",
                                            "credentials": creds.sliderule_output()})
    with pytest.warns(sr.SlideRuleLegacyKeyWarning, match="endpoint"):
        assert run(parms, archive_cloud) == url
    assert objects_under(s3, url) == [url.split("/", 3)[3]]


def test_aws_endpoint_stands_for_the_embedded_server(poly, archive_cloud, creds, bucket, s3):
    url = new_url(bucket)
    parms = sr.tutorial_parms(poly, output={"path": url, "format": "geoparquet", "endpoint": "s3.us-west-2.amazonaws.com",
                                            "credentials": creds.sliderule_output()})
    run(parms, archive_cloud)
    assert objects_under(s3, url)
    bad = sr.tutorial_parms(poly, output={"path": new_url(bucket), "endpoint": "s3.example.org",
                                          "credentials": creds.sliderule_output()})
    with pytest.raises(ParameterError, match="endpoint"):
        run(bad, archive_cloud)


def test_local_stand_in_has_the_clients_atl06p_and_constants():
    import inspect

    local = sr.LocalIcesat2(client="sync")
    real = inspect.signature(icesat2.atl06p).parameters
    ours = inspect.signature(local.atl06p).parameters
    assert list(ours) == list(real)
    assert all(ours[n].default == real[n].default for n in real if n != "callbacks")  # the client's {}: None
    assert (local.SRT_LAND, local.CNF_SURFACE_HIGH, local.ICESAT2_CRS) == (0, 4, "EPSG:7912")
    with pytest.raises(AttributeError, match="atl03sp.*earthdata"):
        local.atl03sp  # noqa: B018


def test_local_stand_in_returns_what_the_client_returns(poly, archive_cloud, creds, bucket, native):
    local = sr.LocalIcesat2(client="sync", cloud=archive_cloud, progress=False)
    frame = local.atl06p(sr.tutorial_parms(poly))
    pd.testing.assert_frame_equal(pd.DataFrame(frame.drop(columns="geometry")),
                                  pd.DataFrame(native.drop(columns="geometry")))
    assert "extent_id" in local.atl06p(sr.tutorial_parms(poly), keep_id=True).columns
    url = new_url(bucket)
    parms = sr.tutorial_parms(poly, output={"path": url, "format": "geoparquet", "open_on_complete": False,
                                            "endpoint": "s3.us-west-2.amazonaws.com", "region": "us-west-2",
                                            "credentials": creds.sliderule_output()})
    upload = sr.UploadCheck(parms)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both keys, as sent to servers old and new: no legacy warning
        assert local.atl06p(parms, callbacks=upload.callbacks) == url
    assert upload.check() == url
    size = creds.boto3_client("s3").head_object(Bucket=bucket, Key=url.split("/", 3)[3])["ContentLength"]
    assert upload.remote == [{"url": url, "size": size}]
    with pytest.raises(ParameterError, match="height_key"):
        local.atl06p(sr.tutorial_parms(poly), height_key="h_mean")


def test_upload_check_raises_without_the_servers_confirmation(caplog):
    url = "s3://my-scratch/sliderule-example/grandmesa.parquet"
    upload = sr.UploadCheck({"output": {"path": url, "credentials": FAKE}}, where="SlideRule at test")
    text = f"Failed to write {url}: AccessDenied {FAKE['aws_session_token']}"
    upload.callbacks["exceptrec"]({"__rectype": "exceptrec", "code": -1, "level": 4, "text": text}, None)
    with pytest.raises(sr.SlideRuleError, match=f"test did not confirm writing {url}.*Failed to") as info:
        upload.check()
    assert FAKE["aws_session_token"] not in str(info.value) and FAKE["aws_session_token"] not in caplog.text
    upload.callbacks["arrowrec.remote"]({"__rectype": "arrowrec.remote", "url": url, "size": 7}, None)
    assert upload.check() == url
    assert sr.UploadCheck({"output": {"path": "/tmp/g.parquet"}}).check() == "/tmp/g.parquet"  # no upload
    assert sr.UploadCheck({"poly": []}).check() is None


def test_filters_select_granules(poly, archive_cloud, native):
    only5 = run(sr.tutorial_parms(poly, cycle=5), archive_cloud)
    assert set(only5["cycle"]) == {5} and len(only5) == (native["cycle"] == 5).sum()
    name = "ATL03_20190417134751_02950302_006_01.h5"
    by_name = run(sr.tutorial_parms(poly), archive_cloud, resources=[name])
    assert set(by_name["cycle"]) == {3}
    with pytest.raises(NoGranulesError, match="rgt"):
        run(sr.tutorial_parms(poly, rgt=1), archive_cloud)


def test_large_granules_are_read_through_a_block_cache(poly, archive_cloud, native, monkeypatch):
    monkeypatch.setattr(sr, "WHOLE_OBJECT_MAX_BYTES", 0)
    seq = archive_cloud.seq
    again = run(sr.tutorial_parms(poly), archive_cloud)
    ranged = [r for r in archive_cloud.ledger(since=seq) if r.verb == "GET" and r.range_start is not None]
    assert ranged  # block reads, not whole objects
    np.testing.assert_array_equal(again["h_mean"].to_numpy(), native["h_mean"].to_numpy())


def test_local_mode_never_leaves_loopback(poly, archive_cloud, monkeypatch):
    real_connect = socket.socket.connect

    def loopback_only(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network contacted: {host}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    assert len(run(sr.tutorial_parms(poly), archive_cloud)) > 0


def test_toregion_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network contacted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    region = sliderule.toregion(str(GRANDMESA))
    assert {"gdf", "poly", "raster", "clusters"} <= set(region)
    ours = load_aoi(GRANDMESA).sliderule_poly()
    assert {(round(p["lon"], 9), round(p["lat"], 9)) for p in region["poly"]} == {
        (round(p["lon"], 9), round(p["lat"], 9)) for p in ours}
    ring = [(p["lon"], p["lat"]) for p in region["poly"]]
    area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
    assert area2 > 0  # counter-clockwise


# -- bad input: a clear error and no object under the output key ---------------------------------------


def _bad_cases(poly, creds, bucket):
    good = creds.sliderule_output()
    far = [{"lon": -150.0, "lat": -10.0}, {"lon": -149.0, "lat": -10.0}, {"lon": -149.0, "lat": -9.0},
           {"lon": -150.0, "lat": -9.0}, {"lon": -150.0, "lat": -10.0}]
    swapped = [{"lon": p["lat"], "lat": p["lon"]} for p in poly]
    return {
        "unknown srt": ({"srt": 7}, good, ParameterError, "srt"),
        "srt name": ({"srt": "glacier"}, good, ParameterError, "srt"),
        "cnf too high": ({"cnf": 5}, good, ParameterError, "cnf"),
        "cnf too low": ({"cnf": [-3, 4]}, good, ParameterError, "cnf"),
        "len zero": ({"len": 0.0}, good, ParameterError, "len"),
        "len negative": ({"len": -40.0}, good, ParameterError, "len"),
        "res zero": ({"res": 0}, good, ParameterError, "res"),
        "missing poly": ({"poly": None}, good, ParameterError, "poly"),
        "swapped poly": ({"poly": swapped}, good, ParameterError, "swapped"),
        "no granules": ({"poly": far}, good, NoGranulesError, "no ATL03"),
        "no credentials": ({}, None, CredentialsError, "missing credentials"),
        "no secret": ({}, {"aws_access_key_id": good["aws_access_key_id"]}, CredentialsError, "missing credentials"),
        "bad format": ({"format": "xml"}, good, ParameterError, "format"),
        "format the engine lacks": ({"format": "las"}, good, ParameterError, "las"),
    }


BAD = ["unknown srt", "srt name", "cnf too high", "cnf too low", "len zero", "len negative", "res zero",
       "missing poly", "swapped poly", "no granules", "no credentials", "no secret", "bad format",
       "format the engine lacks"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_and_leaves_nothing(case, poly, archive_cloud, creds, bucket, s3):
    change, credentials, error, words = _bad_cases(poly, creds, bucket)[case]
    url = new_url(bucket)
    output = {"path": url, "format": change.pop("format", "geoparquet"), "open_on_complete": False}
    if credentials is not None:
        output["credentials"] = credentials
    parms = {**sr.tutorial_parms(poly, output=output), **change}
    if parms.get("poly") is None:
        parms.pop("poly")
    with pytest.raises(error, match=words) as info:
        run(parms, archive_cloud)
    for secret in (creds.secret_access_key, creds.session_token):
        assert secret not in str(info.value)
    assert objects_under(s3, url) == []


def test_missing_bucket_is_refused_before_processing(poly, archive_cloud, creds, monkeypatch):
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/grandmesa.parquet"
    called = []
    monkeypatch.setattr(sr, "_granules", lambda *a, **k: called.append(1) or [])
    with pytest.raises(OutputPathError, match="does not exist"):
        run(sr.tutorial_parms(poly, output={"path": url, "credentials": creds.sliderule_output()}), archive_cloud)
    assert called == []


def test_read_only_bucket_is_refused_and_left_untouched(poly, archive_cloud, creds, s3):
    url = f"s3://{archive_cloud.archive_bucket}/sliderule-test/{uuid.uuid4().hex[:8]}.parquet"
    with pytest.raises(OutputPathError, match="permission denied|AccessDenied|cannot write"):
        run(sr.tutorial_parms(poly, output={"path": url, "credentials": creds.sliderule_output()}), archive_cloud)
    assert objects_under(s3, url) == []


def test_local_path_not_writable(poly, archive_cloud, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputPathError, match="not a directory"):
        run(sr.tutorial_parms(poly, output={"path": str(blocker / "out.parquet")}), archive_cloud)
    with pytest.raises(OutputPathError, match="directory"):
        run(sr.tutorial_parms(poly, output={"path": str(tmp_path)}), archive_cloud)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_failing_granule_leaves_nothing(poly, archive_cloud, creds, bucket, s3, monkeypatch):
    from is2cloud.parallel import GranuleError

    def broken(granule, **kwargs):
        raise OSError("connection reset while reading")

    monkeypatch.setattr(sr, "process_atl03", broken)
    url = new_url(bucket)
    with pytest.raises(GranuleError, match="ATL03_.*connection reset"):
        run(sr.tutorial_parms(poly, output={"path": url, "credentials": creds.sliderule_output()}), archive_cloud)
    assert objects_under(s3, url) == []


# -- earthdata mode: the real client ----------------------------------------------------------------


@pytest.fixture
def earthdata(monkeypatch):
    """Earthdata mode for is2cloud.sliderule, with every non-loopback connection refused."""
    monkeypatch.setattr(sr, "get_settings", lambda: override(mode="earthdata"))
    real_connect = socket.socket.connect

    def loopback_only(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"network contacted: {address[0]}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)


FAKE = {"aws_access_key_id": "AKIAFAKEFAKEFAKE", "aws_secret_access_key": "fake-secret-" + "x" * 30,
        "aws_session_token": "fake-token-" + "y" * 40}


def test_earthdata_calls_the_real_client_with_rethrow(earthdata, poly, monkeypatch):
    calls = {}

    def fake_init(url, **kwargs):
        calls["init"] = (url, kwargs)
        return True

    def fake_atl06p(parms, callbacks=None, resources=None, **kwargs):
        calls["atl06p"] = (parms, resources)
        callbacks["arrowrec.remote"]({"__rectype": "arrowrec.remote", "url": parms["output"]["path"], "size": 1})
        return parms["output"]["path"]

    monkeypatch.setattr(sliderule, "init", fake_init)
    monkeypatch.setattr(icesat2, "atl06p", fake_atl06p)
    url = "s3://my-scratch/sliderule-example/grandmesa.parquet"
    parms = sr.tutorial_parms(poly, output={"path": url, "format": "parquet", "as_geo": True, "region": "us-west-2",
                                            "open_on_complete": False, "credentials": FAKE})
    with pytest.warns(sr.SlideRuleLegacyKeyWarning):
        assert sr.atl06p(parms, resources=["ATL03_20190417134751_02950302_006_01.h5"]) == url
    assert calls["init"] == ("slideruleearth.io", {"organization": "sliderule", "rethrow": True})
    sent, resources = calls["atl06p"]
    assert resources == ["ATL03_20190417134751_02950302_006_01.h5"]
    assert sent["output"]["endpoint"] == "s3.us-west-2.amazonaws.com" and sent["output"]["region"] == "us-west-2"
    assert sent["output"]["format"] == "geoparquet" and sent["output"]["credentials"] == FAKE
    assert sent["poly"] == poly and sent["maxi"] == 6


def test_earthdata_failure_raises_without_secrets(earthdata, poly, monkeypatch):
    def unreachable(url, **kwargs):
        raise FatalError(f"error in request to https://sliderule.{url}/source/version: Connection error "
                         f"{FAKE['aws_secret_access_key']}")

    monkeypatch.setattr(sliderule, "init", unreachable)
    monkeypatch.setattr(icesat2, "atl06p", lambda *a, **k: pytest.fail("atl06p called after a failed init"))
    parms = sr.tutorial_parms(poly, output={"path": "s3://b/k.parquet", "credentials": FAKE})
    with pytest.raises(sr.SlideRuleError, match="Connection error") as info:
        sr.atl06p(parms)
    assert FAKE["aws_secret_access_key"] not in str(info.value)


def test_earthdata_empty_answer_is_an_error(earthdata, poly, monkeypatch):
    monkeypatch.setattr(sliderule, "init", lambda *a, **k: True)
    monkeypatch.setattr(icesat2, "atl06p", lambda *a, **k: gpd.GeoDataFrame(geometry=[], crs="EPSG:7912"))
    parms = sr.tutorial_parms(poly, output={"path": "s3://b/k.parquet", "credentials": FAKE})
    with pytest.raises(sr.SlideRuleError, match="did not confirm writing s3://b/k.parquet"):
        sr.atl06p(parms)


def test_earthdata_unreachable_server_with_the_real_client(earthdata, poly):
    """The unmodified client against a loopback port nobody listens on: FatalError becomes SlideRuleError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(sr.SlideRuleError, match="127.0.0.1:9.*Connection error"):
            sr.atl06p(sr.tutorial_parms(poly), url="127.0.0.1:9", organization=None)


def test_earthdata_checks_input_before_calling(earthdata, poly, monkeypatch):
    monkeypatch.setattr(sliderule, "init", lambda *a, **k: pytest.fail("init called with bad input"))
    with pytest.raises(ParameterError, match="cnf"):
        sr.atl06p(sr.tutorial_parms(poly, cnf=9))
    with pytest.raises(CredentialsError):
        sr.atl06p(sr.tutorial_parms(poly, output={"path": "s3://b/k.parquet"}))


def test_earthdata_reference_is_nasas_atl06_of_the_same_tracks(earthdata, native, monkeypatch):
    import is2cloud.catalog
    from is2cloud.methods import baseline

    def granule(rgt, cycle):
        return {"umm": {"GranuleUR": f"ATL06_20190417134751_{rgt:04d}{cycle:02d}02_006_01.h5"}}

    searched, subset = {}, {}
    found = [granule(295, 3), granule(295, 5), granule(295, 4), granule(1156, 3)]
    monkeypatch.setattr(is2cloud.catalog, "find_granules",
                        lambda aoi, product, temporal=None, **kw: searched.update(product=product, temporal=temporal)
                        or found)
    monkeypatch.setattr(baseline, "subset", lambda granules, aoi, **kw: subset.update(granules=granules) or "frame")
    assert sr.atl06_reference(native, GRANDMESA) == "frame"
    assert searched["product"] == "ATL06"
    start, end = searched["temporal"]
    assert start <= native.index.min().tz_localize("UTC") and native.index.max().tz_localize("UTC") <= end
    assert subset["granules"] == found[:2]  # RGT 295 in cycles 3 and 5 only


# -- make bench ----------------------------------------------------------------------------------


def test_benchmark_reports_throughput_and_time_to_geoparquet(archive_cloud, test_archive):
    ms = sr.benchmark(archive_cloud, test_archive, "test", client="sync", profile="none")
    assert [m.name for m in ms] == ["atl06sr engine (fit only)", "atl06sr engine + HDF5 read (local disk)",
                                    "atl06p -> GeoParquet on S3"]
    assert all(m.scale == "test" and m.granules == 2 for m in ms)
    assert ms[0].rows == ms[1].rows == ms[2].rows > 0  # the same elevations three ways
    assert "M photons/s/core" in ms[0].notes and "M photons/s/core" in ms[1].notes
    assert ms[0].gets == 0 and ms[2].gets > 0  # only the end-to-end run reads from the embedded S3


def test_benchmark_skips_an_archive_without_grand_mesa(archive_cloud, tmp_path):
    from is2cloud.granules import Archive

    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "ATL06_006.jsonl").write_text("")
    no_atl03 = Archive(tmp_path, {"preset": "bench", "objects": []})
    assert sr.benchmark(archive_cloud, no_atl03, "bench", client="sync") == []
