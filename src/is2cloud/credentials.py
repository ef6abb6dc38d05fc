"""Temporary S3 credentials: one value, many clients.

Three sources give the same :class:`Credentials` value:

* **Web identity** (:func:`from_web_identity`): how CryoCloud works. The hub mounts a token file
  (``AWS_WEB_IDENTITY_TOKEN_FILE``) and a role (``AWS_ROLE_ARN``); STS ``AssumeRoleWithWebIdentity``
  turns them into key, secret and session token. Locally the embedded STS plays AWS's part.
* **A DAAC endpoint** (:func:`from_earthdata`): NASA's in-region credentials for the NSIDC bucket,
  through ``earthaccess.get_s3_credentials`` (earthdata mode only; needs Earthdata Login).
* **The local cloud** (``LocalCloud.credentials()``): the web-identity flow against the embedded STS.

Adapters hand the value to boto3, s3fs/fsspec, obstore (with a refreshing credential provider),
pyarrow, GDAL and SlideRule's ``output.credentials``. ``repr``/``str`` of a Credentials value, and of
the dicts the adapters return, never show the secret key or the session token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Literal
from urllib.parse import urlparse

UTC = dt.timezone.utc
SECRET_KEYS = frozenset({
    "secret", "token", "secret_access_key", "session_token", "aws_secret_access_key", "aws_session_token",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "secret_key", "secretAccessKey", "sessionToken",
})
#: Entries holding an access key id: not a secret, but shown masked, as AWS's console does.
KEY_ID_KEYS = frozenset({"key", "access_key", "access_key_id", "aws_access_key_id", "AWS_ACCESS_KEY_ID",
                         "accessKeyId"})
Purpose = Literal["read", "write"]


class CredentialsError(RuntimeError):
    """Credentials are missing, expired or could not be obtained; the message says which."""


class SecretDict(dict):
    """A plain dict for the client libraries, whose repr masks the secret entries (and the key id)."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {_mask_value(k, v)}" for k, v in self.items()) + "}"

    __str__ = __repr__

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython display
        p.text(repr(self))


def _mask_value(key: str, value: Any) -> str:
    if key in SECRET_KEYS and value:
        return "'****'"
    if key in KEY_ID_KEYS and isinstance(value, str):
        return repr(mask_key_id(value))
    if isinstance(value, dict):
        return repr(SecretDict(value))
    return repr(value)


def mask_key_id(key_id: str) -> str:
    """An access key id as AWS's console shows it: its first and last four characters
    (``ASIA…WXYZ``); a short one entirely masked."""
    return f"{key_id[:4]}…{key_id[-4:]}" if len(key_id) > 12 else "****"


def fingerprint(secret: str) -> str:
    """A short, one-way fingerprint to tell two secrets apart without showing either."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


# -- refreshers (picklable, so Dask workers can refresh too) ----------------------------------------


@dataclass(frozen=True)
class WebIdentityRefresher:
    role_arn: str
    token_file: str
    sts_endpoint: str | None
    region: str
    endpoint_url: str | None
    duration_seconds: int = 3600
    session_name: str = "is2cloud"

    def __call__(self) -> "Credentials":
        return from_web_identity(self.role_arn, self.token_file, sts_endpoint=self.sts_endpoint, region=self.region,
                                 endpoint_url=self.endpoint_url, duration_seconds=self.duration_seconds,
                                 session_name=self.session_name)


@dataclass(frozen=True)
class EarthdataRefresher:
    daac: str = "NSIDC"

    def __call__(self) -> "Credentials":
        return from_earthdata(self.daac)


_BOTO3_LOCK = threading.RLock()


@lru_cache(maxsize=8)
def _boto3_session(access_key_id: str, secret_access_key: str, session_token: str | None, region: str):  # -> Session
    import boto3

    return boto3.Session(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                         aws_session_token=session_token, region_name=region)


# -- the value --------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expiration: dt.datetime | None = None
    region: str = "us-west-2"
    endpoint_url: str | None = None
    source: str = "static"
    refresher: Callable[[], "Credentials"] | None = field(default=None, compare=False)

    # -- safe display ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        shown = mask_key_id(self.access_key_id)
        exp = "no expiry" if self.expiration is None else f"expires in {self.expires_in_text()}"
        where = self.endpoint_url or f"AWS {self.region}"
        return f"Credentials(source={self.source!r}, access_key_id={shown!r}, secret='****', token='****', {exp}, endpoint={where!r})"

    __str__ = __repr__

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    # -- expiry and refresh -----------------------------------------------------------------------
    def expires_in(self) -> dt.timedelta | None:
        if self.expiration is None:
            return None
        return self.expiration - dt.datetime.now(UTC)

    def expires_in_text(self) -> str:
        left = self.expires_in()
        if left is None:
            return "never"
        secs = int(left.total_seconds())
        if secs <= 0:
            return "expired"
        return f"{secs // 60} min {secs % 60:02d} s"

    @property
    def expired(self) -> bool:
        left = self.expires_in()
        return left is not None and left.total_seconds() <= 0

    def needs_refresh(self, margin: dt.timedelta = dt.timedelta(minutes=5)) -> bool:
        left = self.expires_in()
        return left is not None and left <= margin

    def refresh(self) -> "Credentials":
        """New credentials from the same source (e.g. a new STS call)."""
        if self.refresher is None:
            raise CredentialsError(f"credentials from {self.source!r} cannot be refreshed; obtain new ones")
        return self.refresher()

    def fresh(self, margin: dt.timedelta = dt.timedelta(minutes=5)) -> "Credentials":
        """These credentials, or refreshed ones if they expire within ``margin``."""
        if self.needs_refresh(margin):
            return self.refresh()
        return self

    def require_valid(self) -> "Credentials":
        if self.expired:
            if self.refresher is not None:
                return self.refresh()
            raise CredentialsError(f"credentials from {self.source!r} expired at {self.expiration:%Y-%m-%d %H:%M:%S} UTC")
        return self

    # -- adapters -------------------------------------------------------------------------------
    @property
    def _http(self) -> bool:
        return bool(self.endpoint_url and self.endpoint_url.startswith("http://"))

    @property
    def _hostport(self) -> str | None:
        return urlparse(self.endpoint_url).netloc if self.endpoint_url else None

    def boto3_session(self):  # -> boto3.Session
        """One boto3 Session per credentials in this process. Each new Session loads its own copy of the
        service models and about 1 MB of it stays after the Session is gone (196 Sessions grew a process by
        208 MB, one Session making 196 clients by 24 MB). A Session is not thread-safe: make clients with
        :meth:`boto3_client`, which holds the lock while it does."""
        with _BOTO3_LOCK:
            return _boto3_session(self.access_key_id, self.secret_access_key, self.session_token, self.region)

    def boto3_client(self, service: str = "s3", *, config: Any = None, **kwargs: Any):  # -> botocore client
        """A client at these credentials' endpoint (``config``: a ``botocore.config.Config``; by default
        standard retries, and path-style addressing at a custom endpoint)."""
        from botocore.config import Config

        if config is None:
            config = Config(retries={"max_attempts": 10, "mode": "standard"},
                            s3={"addressing_style": "path"} if self.endpoint_url else {})
        with _BOTO3_LOCK:
            return self.boto3_session().client(service, endpoint_url=self.endpoint_url, config=config, **kwargs)

    def storage_options(self, **extra: Any) -> SecretDict:
        """fsspec/s3fs/geopandas ``storage_options``."""
        opts: dict[str, Any] = {"key": self.access_key_id, "secret": self.secret_access_key,
                                "client_kwargs": {"region_name": self.region},
                                "config_kwargs": {"retries": {"max_attempts": 10, "mode": "standard"}}}
        if self.session_token:
            opts["token"] = self.session_token
        if self.endpoint_url:
            opts["endpoint_url"] = self.endpoint_url
        opts.update(extra)
        return SecretDict(opts)

    def s3fs(self, **kwargs: Any):  # -> s3fs.S3FileSystem
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options(**kwargs))

    def obstore(self, bucket: str, **kwargs: Any):  # -> obstore.store.S3Store
        """An obstore S3Store whose credential provider refreshes these credentials before they expire."""
        from obstore.store import S3Store

        opts: dict[str, Any] = {"region": self.region, "credential_provider": ObstoreCredentialProvider(self),
                                "retry_config": {"max_retries": 10, "backoff": {"init_backoff": dt.timedelta(milliseconds=50),
                                                                                  "max_backoff": dt.timedelta(seconds=2),
                                                                                  "base": 2.0},
                                                 "retry_timeout": dt.timedelta(seconds=120)}}
        if self.endpoint_url:
            opts["endpoint"] = self.endpoint_url
            opts["virtual_hosted_style_request"] = False
            if self._http:
                opts["client_options"] = {"allow_http": True}
        opts.update(kwargs)
        return S3Store(bucket, **opts)

    def pyarrow_fs(self, **kwargs: Any):  # -> pyarrow.fs.S3FileSystem
        from pyarrow import fs

        opts: dict[str, Any] = {"access_key": self.access_key_id, "secret_key": self.secret_access_key,
                                "session_token": self.session_token, "region": self.region,
                                "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=10)}
        if self.endpoint_url:
            opts["endpoint_override"] = self._hostport
            opts["scheme"] = "http" if self._http else "https"
        opts.update(kwargs)
        return fs.S3FileSystem(**opts)

    def gdal_env(self) -> SecretDict:
        """Configuration options for GDAL's ``/vsis3/`` (e.g. ``rasterio.Env(**creds.gdal_env())``)."""
        env: dict[str, str] = {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                               "AWS_REGION": self.region}
        if self.session_token:
            env["AWS_SESSION_TOKEN"] = self.session_token
        if self.endpoint_url:
            env["AWS_S3_ENDPOINT"] = self._hostport or ""
            env["AWS_HTTPS"] = "NO" if self._http else "YES"
            env["AWS_VIRTUAL_HOSTING"] = "FALSE"
        return SecretDict(env)

    def environ(self) -> SecretDict:
        """``AWS_*`` environment variables for tools configured from the environment (e.g. h5coro)."""
        env: dict[str, str] = {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                               "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region,
                               "AWS_EC2_METADATA_DISABLED": "true"}
        if self.session_token:
            env["AWS_SESSION_TOKEN"] = self.session_token
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return SecretDict(env)

    def h5coro(self) -> SecretDict:
        """The credentials dict h5coro's S3 driver takes (endpoint from :meth:`environ`)."""
        d: dict[str, str] = {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key}
        if self.session_token:
            d["aws_session_token"] = self.session_token
        return SecretDict(d)

    def sliderule_output(self) -> SecretDict:
        """SlideRule's ``parms["output"]["credentials"]``."""
        return self.h5coro()


class ObstoreCredentialProvider:
    """obstore ``credential_provider``: returns the current credentials, refreshing them when they near expiry."""

    def __init__(self, credentials: Credentials, margin: dt.timedelta = dt.timedelta(minutes=5)):
        self.credentials = credentials
        self.margin = margin
        self.calls = 0
        self.refreshes = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.credentials.needs_refresh(self.margin) and self.credentials.refresher is not None:
            self.credentials = self.credentials.refresh()
            self.refreshes += 1
        c = self.credentials
        out: dict[str, Any] = {"access_key_id": c.access_key_id, "secret_access_key": c.secret_access_key,
                               "expires_at": c.expiration.astimezone(UTC) if c.expiration else None}
        if c.session_token:
            out["token"] = c.session_token
        return SecretDict(out)

    def __repr__(self) -> str:
        return f"ObstoreCredentialProvider({self.credentials!r}, refreshes={self.refreshes})"


# -- sources ---------------------------------------------------------------------------------------


def from_web_identity(
    role_arn: str,
    token_file: str | os.PathLike[str],
    *,
    sts_endpoint: str | None = None,
    region: str = "us-west-2",
    endpoint_url: str | None = None,
    duration_seconds: int = 3600,
    session_name: str = "is2cloud",
) -> Credentials:
    """STS ``AssumeRoleWithWebIdentity`` with the token in ``token_file`` (the CryoCloud way).

    ``sts_endpoint`` None means AWS's regional STS; ``endpoint_url`` is the S3 endpoint the credentials
    are for (None: AWS S3).
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    path = Path(token_file)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CredentialsError(f"cannot read the web identity token file {str(path)!r}: {exc.strerror or exc}") from None
    if len(token) < 4:
        raise CredentialsError(f"the web identity token file {str(path)!r} is empty")
    sts = boto3.client("sts", region_name=region, endpoint_url=sts_endpoint or f"https://sts.{region}.amazonaws.com",
                       config=Config(signature_version=UNSIGNED, retries={"max_attempts": 5, "mode": "standard"}))
    try:
        resp = sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName=session_name,
                                                 WebIdentityToken=token, DurationSeconds=duration_seconds)
    except EndpointConnectionError:
        raise CredentialsError(f"cannot reach STS at {sts_endpoint or 'AWS ' + region}") from None
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise CredentialsError(f"STS refused AssumeRoleWithWebIdentity for {role_arn}: "
                               f"{err.get('Code', '?')}: {err.get('Message', '')}") from None
    except BotoCoreError as exc:
        raise CredentialsError(f"STS call failed: {type(exc).__name__}") from None
    c = resp["Credentials"]
    return Credentials(
        access_key_id=c["AccessKeyId"],
        secret_access_key=c["SecretAccessKey"],
        session_token=c.get("SessionToken"),
        expiration=c["Expiration"].astimezone(UTC),
        region=region,
        endpoint_url=endpoint_url,
        source="web-identity (embedded STS)" if _is_loopback(sts_endpoint) else "web-identity (AWS STS)",
        refresher=WebIdentityRefresher(role_arn, str(path), sts_endpoint, region, endpoint_url, duration_seconds,
                                       session_name),
    )


def _is_loopback(url: str | None) -> bool:
    host = urlparse(url).hostname if url else None
    return host in ("127.0.0.1", "localhost", "::1")


def from_earthdata(daac: str = "NSIDC") -> Credentials:
    """NASA DAAC in-region credentials via earthaccess (earthdata mode only; needs Earthdata Login).

    Logs in with ``strategy="environment"`` (``EARTHDATA_USERNAME``/``EARTHDATA_PASSWORD`` or
    ``EARTHDATA_TOKEN``) or ``"netrc"``; never prompts.
    """
    from is2cloud.settings import get_settings

    if get_settings().mode != "earthdata":
        raise CredentialsError("DAAC credentials are only used in earthdata mode (IS2CLOUD_MODE=earthdata); "
                               "locally the embedded STS provides credentials")
    import earthaccess

    auth = getattr(earthaccess, "__auth__", None)
    if auth is None or not getattr(auth, "authenticated", False):
        last: Exception | None = None
        for strategy in ("environment", "netrc"):
            try:
                auth = earthaccess.login(strategy=strategy)
                if getattr(auth, "authenticated", False):
                    break
            except Exception as exc:  # LoginStrategyUnavailable, LoginAttemptFailure
                last = exc
        else:
            raise CredentialsError(
                "missing Earthdata Login credentials: set EARTHDATA_USERNAME and EARTHDATA_PASSWORD "
                f"(or EARTHDATA_TOKEN, or a ~/.netrc entry for urs.earthdata.nasa.gov) [{type(last).__name__ if last else 'no login'}]"
            )
    raw = earthaccess.get_s3_credentials(daac=daac)
    if not raw or "accessKeyId" not in raw:
        raise CredentialsError(f"the {daac} credentials endpoint returned no credentials (is the login valid?)")
    exp = raw.get("expiration")
    expiration = dt.datetime.fromisoformat(exp).astimezone(UTC) if isinstance(exp, str) else None
    settings = get_settings()
    return Credentials(raw["accessKeyId"], raw["secretAccessKey"], raw.get("sessionToken"), expiration,
                       region=settings.region, endpoint_url=settings.s3_endpoint, source=f"earthaccess DAAC ({daac})",
                       refresher=EarthdataRefresher(daac))
