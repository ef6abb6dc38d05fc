"""Credentials: web identity against the embedded STS, adapters, refresh, and never showing a secret."""

from __future__ import annotations

import datetime as dt
import pickle

import obstore
import pytest

from is2cloud import credentials as cr
from is2cloud.access import get_credentials
from is2cloud.settings import get_settings


@pytest.fixture()
def creds(cloud):
    return cloud.credentials(duration_seconds=900)


@pytest.fixture()
def earthdata_mode(monkeypatch):
    monkeypatch.setenv("IS2CLOUD_MODE", "earthdata")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _secrets(c: cr.Credentials) -> list[str]:
    return [c.secret_access_key, c.session_token or ""]


def test_web_identity_gives_temporary_credentials(creds, cloud):
    assert creds.access_key_id.startswith("ASIA")
    assert creds.session_token and creds.secret_access_key
    assert dt.timedelta(minutes=13) < creds.expires_in() <= dt.timedelta(minutes=15)
    assert creds.endpoint_url == cloud.endpoint
    assert "web-identity" in creds.source


def test_repr_str_and_adapter_dicts_never_show_secrets(creds):
    texts = [repr(creds), str(creds), f"{creds}", repr(creds.storage_options()), str(creds.gdal_env()),
             repr(creds.environ()), repr(creds.sliderule_output()), repr(creds.h5coro()),
             repr(cr.ObstoreCredentialProvider(creds)), repr(cr.ObstoreCredentialProvider(creds)())]
    for text in texts:
        for secret in _secrets(creds):
            assert secret not in text
    assert "****" in repr(creds)
    # the dicts still carry the real values for the client libraries
    assert creds.storage_options()["secret"] == creds.secret_access_key
    assert creds.sliderule_output()["aws_session_token"] == creds.session_token


def test_access_key_ids_are_shown_masked_as_the_aws_console_does(creds):
    key = creds.access_key_id
    shown = cr.mask_key_id(key)
    assert shown == f"{key[:4]}…{key[-4:]}" and len(key) == 20
    assert cr.mask_key_id("AKIA1234") == "****"  # too short to show any of it
    texts = [repr(creds), repr(creds.storage_options()), repr(creds.gdal_env()), repr(creds.environ()),
             repr(creds.sliderule_output()), repr(cr.ObstoreCredentialProvider(creds)())]
    for text in texts:
        assert key not in text and shown in text, text
    assert creds.storage_options()["key"] == key  # the client libraries still get the real id


def test_fingerprint_tells_secrets_apart_without_showing_them(creds, cloud):
    other = cloud.credentials()
    assert cr.fingerprint(creds.secret_access_key) != cr.fingerprint(other.secret_access_key)
    assert creds.secret_access_key not in cr.fingerprint(creds.secret_access_key)


def test_pickles_for_dask_workers(creds):
    back = pickle.loads(pickle.dumps(creds))
    assert back == creds and back.secret_access_key == creds.secret_access_key
    assert back.refresher is not None


def test_refresh_before_expiry(creds):
    assert not creds.needs_refresh(dt.timedelta(minutes=5))
    assert creds.fresh(dt.timedelta(minutes=5)) is creds
    assert creds.needs_refresh(dt.timedelta(hours=1))
    new = creds.fresh(dt.timedelta(hours=1))
    assert new.access_key_id != creds.access_key_id
    assert new.expiration >= creds.expiration


def test_obstore_provider_refreshes_and_store_reads(creds):
    s3 = creds.boto3_client()
    s3.put_object(Bucket="is2cloud-scratch", Key="cred/obj", Body=b"0123456789")
    provider = cr.ObstoreCredentialProvider(creds, margin=dt.timedelta(hours=1))
    first = provider()
    assert provider.refreshes == 1 and first["access_key_id"] != creds.access_key_id
    assert first["expires_at"].tzinfo is dt.timezone.utc
    store = creds.obstore("is2cloud-scratch")
    assert bytes(obstore.get_range(store, "cred/obj", start=2, end=5)) == b"234"


def test_static_credentials_cannot_refresh():
    c = cr.Credentials("AKIAEXAMPLEKEY0001", "not-a-real-secret")
    with pytest.raises(cr.CredentialsError, match="cannot be refreshed"):
        c.refresh()


def test_expired_credentials_are_reported():
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    c = cr.Credentials("ASIAEXAMPLEKEY0001", "not-a-real-secret", "tok", past)
    assert c.expired and c.expires_in_text() == "expired"
    with pytest.raises(cr.CredentialsError, match="expired at"):
        c.require_valid()


def test_missing_token_file_is_a_clear_error(tmp_path, cloud):
    with pytest.raises(cr.CredentialsError, match="cannot read the web identity token file"):
        cr.from_web_identity(cloud.role_arn, tmp_path / "missing", sts_endpoint=cloud.endpoint)


def test_unreachable_sts_is_a_clear_error(tmp_path):
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJub25lIn0.e30.")
    with pytest.raises(cr.CredentialsError, match="cannot reach STS"):
        cr.from_web_identity("arn:aws:iam::123456789012:role/x", token, sts_endpoint="http://127.0.0.1:9")


def test_earthdata_mode_without_login_is_a_clear_error(earthdata_mode, monkeypatch):
    import earthaccess
    from earthaccess.exceptions import LoginStrategyUnavailable

    def no_login(strategy: str = "all", **_: object):
        raise LoginStrategyUnavailable(f"no {strategy} credentials")

    monkeypatch.setattr(earthaccess, "login", no_login)
    monkeypatch.setattr(earthaccess, "__auth__", None, raising=False)
    with pytest.raises(cr.CredentialsError, match="missing Earthdata Login credentials"):
        get_credentials("read")


def test_earthdata_mode_write_needs_cryocloud_role(earthdata_mode, monkeypatch):
    monkeypatch.delenv("AWS_ROLE_ARN", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.delenv("IS2CLOUD_WEB_IDENTITY_TOKEN_FILE", raising=False)
    get_settings.cache_clear()
    with pytest.raises(cr.CredentialsError, match="missing CryoCloud credentials"):
        get_credentials("write")


def test_daac_credentials_are_refused_in_local_mode():
    with pytest.raises(cr.CredentialsError, match="only used in earthdata mode"):
        cr.from_earthdata()


def test_pyarrow_and_gdal_adapters_point_at_the_endpoint(creds, cloud):
    env = creds.gdal_env()
    host_port = cloud.endpoint.removeprefix("http://")
    assert env["AWS_S3_ENDPOINT"] == host_port and env["AWS_HTTPS"] == "NO" and env["AWS_VIRTUAL_HOSTING"] == "FALSE"
    s3 = creds.boto3_client()
    s3.put_object(Bucket="is2cloud-scratch", Key="cred/pa", Body=b"abcdef")
    with creds.pyarrow_fs().open_input_file("is2cloud-scratch/cred/pa") as f:
        assert f.read() == b"abcdef"


def test_clients_of_the_same_credentials_share_one_boto3_session():
    """Every boto3 Session keeps ~1 MB after it is gone: clients made over and over (a HEAD per granule)
    come from one Session per credentials, so the process does not grow by a Session each time."""
    import subprocess
    import sys

    from botocore.config import Config

    a = cr.Credentials("AKIAEXAMPLEKEY000001", "not-a-secret", endpoint_url="http://127.0.0.1:9")
    same = cr.Credentials("AKIAEXAMPLEKEY000001", "not-a-secret", endpoint_url="http://127.0.0.1:9")
    other = cr.Credentials("AKIAEXAMPLEKEY000002", "not-a-secret")
    assert a.boto3_session() is same.boto3_session() and a.boto3_session() is not other.boto3_session()
    assert a.boto3_client("s3").meta.endpoint_url == "http://127.0.0.1:9"
    assert a.boto3_client("s3", config=Config(read_timeout=7)).meta.config.read_timeout == 7
    grow = """
import gc, psutil
from is2cloud.credentials import Credentials
from is2cloud.parallel import release_heap
def client():
    return Credentials("AKIAEXAMPLEKEY000001", "not-a-secret", endpoint_url="http://127.0.0.1:9").boto3_client("s3")
client(); gc.collect(); release_heap()
before = psutil.Process().memory_info().rss
for _ in range(100):
    client()
gc.collect(); release_heap()
print(psutil.Process().memory_info().rss - before)
"""
    grew = int(subprocess.run([sys.executable, "-c", grow], capture_output=True, text=True, check=True).stdout)
    assert grew < 40e6, f"100 clients grew the process by {grew / 1e6:.0f} MB"
