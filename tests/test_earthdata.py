"""Earthdata (CryoCloud) mode, with the network mocked: one test per defect found by reading the
earthdata path against the installed earthaccess, sliderule, s3fs and dask (issue 18). Nothing here
reaches beyond 127.0.0.1 and nothing logs in to Earthdata."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import earthaccess
import pytest

from is2cloud import settings as settings_mod
from is2cloud import sliderule as sr
from is2cloud.settings import get_settings, load_settings
from rehearsal import sliderule_server

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
GRANDMESA = REPO / "data" / "grandmesa.geojson"
FAKE = {"aws_access_key_id": "ASIAFAKEFAKEFAKE", "aws_secret_access_key": "fake-secret-" + "x" * 30,
        "aws_session_token": "fake-token-" + "y" * 40}


@pytest.fixture
def loopback_only(monkeypatch):
    """Every connection beyond 127.0.0.1 fails (as the instance-metadata address does on many hubs)."""
    real_connect = socket.socket.connect
    attempts: list[str] = []

    def connect(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            attempts.append(address[0])
            raise ConnectionRefusedError(f"network contacted: {address[0]}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
    assert not attempts, f"tried to leave 127.0.0.1: {attempts}"  # also when a client swallowed the error


@pytest.fixture
def env(monkeypatch):
    """Set environment variables for a fresh read of the settings."""
    for var in ("IS2CLOUD_OUTPUT_BUCKET", "SCRATCH_BUCKET", "IS2CLOUD_ROLE_ARN", "AWS_ROLE_ARN",
                "IS2CLOUD_WEB_IDENTITY_TOKEN_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(var, raising=False)

    def set_env(**values: str) -> None:
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()

    yield set_env
    get_settings.cache_clear()


# -- 1. a failed SlideRule upload to S3 is an error ------------------------------------------------------


@pytest.fixture
def poly():
    from is2cloud.aoi import load_aoi

    return load_aoi(GRANDMESA).sliderule_poly()


@pytest.fixture
def earthdata_sliderule(monkeypatch, loopback_only):
    monkeypatch.setattr(sr, "get_settings", lambda: settings_mod.override(mode="earthdata"))


def _server(upload_ok: bool, sent: list | None = None):
    def server(api: str, request: dict) -> list[dict]:
        parms = request["parms"]
        if sent is not None:
            sent.append(copy.deepcopy(parms))
        url = parms["output"]["path"]
        if upload_ok:
            return [sliderule_server.remote_record(url, 1234)]
        return [sliderule_server.alert_record(f"Failed to upload {url}: AccessDenied "
                                              f"{parms['output']['credentials']['aws_secret_access_key']}")]
    return server


def test_failed_upload_to_s3_is_an_error_not_a_url(earthdata_sliderule, poly, monkeypatch, caplog):
    url = "s3://cryocloud-scratch/alice/sliderule-example/grandmesa.parquet"
    parms = sr.tutorial_parms(poly, output={"path": url, "format": "geoparquet", "open_on_complete": False,
                                            "credentials": FAKE})
    sliderule_server.install(monkeypatch.setattr, _server(upload_ok=False))
    with pytest.raises(sr.SlideRuleError, match="did not confirm writing .*AccessDenied") as info:
        sr.atl06p(parms)
    assert FAKE["aws_secret_access_key"] not in str(info.value)
    assert FAKE["aws_secret_access_key"] not in caplog.text
    sliderule_server.install(monkeypatch.setattr, _server(upload_ok=True))
    assert sr.atl06p(parms) == url


# -- 7. output endpoint and region ------------------------------------------------------------------------


def test_output_carries_endpoint_and_region(earthdata_sliderule, poly, monkeypatch):
    sent: list = []
    sliderule_server.install(monkeypatch.setattr, _server(upload_ok=True, sent=sent))
    url = "s3://cryocloud-scratch/alice/x.parquet"
    sr.atl06p(sr.tutorial_parms(poly, output={"path": url, "credentials": FAKE}))
    sr.atl06p(sr.tutorial_parms(poly, output={"path": url, "credentials": FAKE,
                                              "endpoint": "s3.us-east-1.amazonaws.com"}))
    assert sent[0]["output"]["endpoint"] == "s3.us-west-2.amazonaws.com" and sent[0]["output"]["region"] == "us-west-2"
    assert sent[1]["output"]["endpoint"] == "s3.us-east-1.amazonaws.com" and sent[1]["output"]["region"] == "us-east-1"
    assert sent[0]["output"]["credentials"] == FAKE


# -- 2. the output bucket keeps the user's prefix ---------------------------------------------------------


def test_scratch_bucket_prefix_is_kept(env):
    env(IS2CLOUD_MODE="earthdata", SCRATCH_BUCKET="s3://cryocloud-scratch/alice")
    s = load_settings()
    assert (s.output_bucket, s.output_prefix) == ("cryocloud-scratch", "alice")
    assert s.output_url("tutorial-03/x.parquet") == "s3://cryocloud-scratch/alice/tutorial-03/x.parquet"
    assert s.output_key("chunk-index/i.parquet") == "alice/chunk-index/i.parquet"
    from is2cloud.methods.chunkindex import default_index_url

    assert default_index_url("ATL06", "006") == "s3://cryocloud-scratch/alice/chunk-index/ATL06_006.parquet"


@pytest.mark.parametrize("value, expected", [
    ("s3://my-bucket/some/prefix/", ("my-bucket", "some/prefix")),
    ("my-bucket/some/prefix", ("my-bucket", "some/prefix")),
    ("my-bucket", ("my-bucket", "")),
    ("s3://my-bucket", ("my-bucket", "")),
])
def test_output_bucket_accepts_both_forms(env, value, expected):
    env(IS2CLOUD_MODE="earthdata", IS2CLOUD_OUTPUT_BUCKET=value, SCRATCH_BUCKET="s3://cryocloud-scratch/alice")
    s = load_settings()
    assert (s.output_bucket, s.output_prefix) == expected
    assert s.output_url("a/b.parquet").startswith("s3://my-bucket/") and "s3://s3://" not in s.output_url("a")


def test_output_bucket_that_is_not_s3_is_refused(env):
    env(IS2CLOUD_OUTPUT_BUCKET="https://example.com/bucket")
    with pytest.raises(ValueError, match="IS2CLOUD_OUTPUT_BUCKET.*not an S3 location"):
        load_settings()


# -- 3. the baseline needs no region check ------------------------------------------------------------------


def test_earthdata_baseline_reads_with_daac_credentials_not_earthaccess_open(granules, creds, monkeypatch,
                                                                             loopback_only):
    from is2cloud import access
    from is2cloud.methods import assert_same_rows, baseline

    def no_open(*a, **k):
        raise AssertionError("earthaccess.open asks the instance-metadata service for the region: not used")

    asked = []
    monkeypatch.setattr(baseline, "get_settings", lambda: settings_mod.override(mode="earthdata"))
    monkeypatch.setattr(access, "get_credentials", lambda purpose="read", cloud=None: asked.append(purpose) or creds)
    monkeypatch.setattr(earthaccess, "open", no_open)
    tuned = baseline.subset(granules, GREENLAND, config="tuned", client="sync", progress=False)
    naive = baseline.subset(granules, GREENLAND, config="naive", client="sync", progress=False)
    assert asked == ["read", "read"]
    monkeypatch.undo()
    local = baseline.subset(granules, GREENLAND, credentials=creds, client="sync", progress=False)
    assert_same_rows(local, tuned, names=("local", "earthdata tuned"))
    assert_same_rows(local, naive, names=("local", "earthdata naive"))


def test_daac_credentials_use_the_configured_endpoint(env, monkeypatch):
    from is2cloud.credentials import from_earthdata

    env(IS2CLOUD_MODE="earthdata", AWS_ENDPOINT_URL_S3="http://127.0.0.1:9")
    monkeypatch.setattr(earthaccess, "__auth__", type("A", (), {"authenticated": True})(), raising=False)
    monkeypatch.setattr(earthaccess, "login", lambda **k: pytest.fail("logged in again"))
    monkeypatch.setattr(earthaccess, "get_s3_credentials", lambda daac: {
        "accessKeyId": "ASIANSIDCFAKE", "secretAccessKey": FAKE["aws_secret_access_key"],
        "sessionToken": FAKE["aws_session_token"], "expiration": "2031-06-21 19:47:01+00:00"})
    c = from_earthdata()
    assert c.endpoint_url == "http://127.0.0.1:9" and c.region == "us-west-2"
    assert c.expiration.isoformat() == "2031-06-21T19:47:01+00:00"


# -- 4. the local cluster fits the container's CPU limit ---------------------------------------------------


def test_local_cluster_is_sized_by_the_cpu_limit(monkeypatch):
    import dask.system
    import psutil

    from is2cloud import parallel

    monkeypatch.setattr(dask.system.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(dask.system.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(psutil.Process, "cpu_affinity", lambda self, cpus=None: list(range(16)), raising=False)
    monkeypatch.setattr(dask.system, "_try_extract_cgroup_cpu_quota", lambda: (150_000, 100_000))  # 1.5 CPUs
    assert parallel._default_workers() == 2


# -- 5. IS2CLOUD_ROLE_ARN is read in earthdata mode ------------------------------------------------------------


def test_role_arn_setting_is_used_for_write_credentials(env, cloud, tmp_path):
    from is2cloud.access import get_credentials

    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJub25lIn0.e30.")
    role = "arn:aws:iam::123456789012:role/my-own-role"
    env(IS2CLOUD_MODE="earthdata", IS2CLOUD_ROLE_ARN=role, AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
        AWS_ENDPOINT_URL=cloud.endpoint)
    c = get_credentials("write")
    assert c.refresher.role_arn == role and c.endpoint_url == cloud.endpoint
    assert c.boto3_client("s3").list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    env(IS2CLOUD_ROLE_ARN="", AWS_ROLE_ARN="arn:aws:iam::123456789012:role/cryocloud-user")
    assert get_credentials("write").refresher.role_arn == "arn:aws:iam::123456789012:role/cryocloud-user"


# -- 6. count means the same in both modes -------------------------------------------------------------------


def test_count_keeps_the_first_by_name_in_earthdata_mode(monkeypatch, test_archive):
    from is2cloud.catalog import find_granules

    s = settings_mod.override(mode="earthdata")
    monkeypatch.setattr(settings_mod, "get_settings", lambda: s)
    records = test_archive.umm_records("ATL06")
    names = sorted(r["umm"]["GranuleUR"] for r in records)
    assert len(names) >= 2

    def cmr(count: int = -1, **kwargs):  # CMR's own order (here: newest first), cut at count
        found = [earthaccess.DataGranule(r, cloud_hosted=True)
                 for r in sorted(records, key=lambda r: r["umm"]["GranuleUR"], reverse=True)]
        return found[:count] if count > 0 else found

    monkeypatch.setattr(earthaccess, "search_data", cmr)
    got = find_granules(GREENLAND, "ATL06", count=1)
    assert [g["umm"]["GranuleUR"] for g in got] == names[:1]


# -- 8. size and checksum of the file named like the granule ---------------------------------------------------


def test_size_and_checksum_come_from_the_entry_named_like_the_file(granules, creds):
    from is2cloud.methods import baseline

    g = granules[0]
    rec = copy.deepcopy(dict(g))
    info = rec["umm"]["DataGranule"]["ArchiveAndDistributionInformation"]
    h5 = info[0]
    xml = {"Name": h5["Name"].replace(".h5", ".iso.xml"), "SizeInBytes": 31_337, "Size": 0.03, "SizeUnit": "MB",
           "Format": "ISO 19115-2", "MimeType": "text/xml",
           "Checksum": {"Value": "0" * 32, "Algorithm": "MD5"}}
    info.insert(0, xml)  # NSIDC lists the metadata file first in some records
    first = earthaccess.DataGranule(rec, cloud_hosted=True)
    src = baseline.granule_source(first)
    assert (src.size, src.md5) == (h5["SizeInBytes"], h5["Checksum"]["Value"])
    baseline.subset([first], GREENLAND, credentials=creds, client="sync", progress=False)  # no size error
    info.pop(1)  # no entry named like the file: nothing to check against
    assert (baseline.granule_source(earthaccess.DataGranule(rec, cloud_hosted=True)).size, ) == (None, )
