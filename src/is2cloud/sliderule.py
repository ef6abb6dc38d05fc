"""SlideRule's ``icesat2.atl06p``, in both modes, with output to S3.

>>> region = sliderule.toregion("data/grandmesa.geojson")                        # doctest: +SKIP
>>> parms = {"poly": region["poly"], "srt": 0, "cnf": 4, "len": 40.0, "res": 20.0, "maxi": 6,
...          "output": {"path": "s3://bucket/grandmesa.parquet", "format": "geoparquet",
...                     "open_on_complete": False, "credentials": creds.sliderule_output()}}
>>> atl06p(parms)                                                                  # doctest: +SKIP
's3://bucket/grandmesa.parquet'

* **earthdata mode**: the real client. ``sliderule.init(url, organization=..., rethrow=True)`` then
  ``sliderule.icesat2.atl06p``: SlideRule's servers search CMR, process the ATL03 granules in AWS and
  write the output. With ``rethrow=True`` an unreachable or failing server raises (:class:`SlideRuleError`)
  instead of returning an empty frame, which is what the client does by default (spec/atl06sr.md §3.6).
  With S3 output the server confirms its upload with an ``arrowrec.remote`` record; a failed PUT is only an
  alert, which the client logs, and the client returns ``output["path"]`` either way. So the record is
  caught with a callback, and without it :class:`SlideRuleError` is raised, quoting the server's alerts.
* **local mode**: the same request, answered by the book's own implementation of SlideRule's algorithm
  (:mod:`is2cloud.atl06sr`) over the ATL03 granules the local catalog finds for ``poly`` (and ``t0``/``t1``,
  ``rgt``, ``cycle``, ``region``), read from the embedded S3 server, one Dask task per granule
  (:func:`is2cloud.parallel.map_granules`). Output is written with :mod:`is2cloud.geoparquet` (atomic: a
  failed run leaves no object under the output key). No network is contacted.

``parms["output"]``, as the SlideRule client takes it: ``path`` (local path or ``s3://`` URL), ``format``
(``parquet`` or ``geoparquet``; ``parquet`` with ``as_geo`` means geoparquet; default geoparquet),
``open_on_complete`` (default False: return the path or URL, as the client does), ``endpoint`` (S3
endpoint, e.g. ``s3.us-west-2.amazonaws.com``; the legacy name ``region`` is accepted, with a warning
when it comes without ``endpoint``) and ``credentials`` (``{aws_access_key_id, aws_secret_access_key,
aws_session_token}``, e.g. ``Credentials.sliderule_output()``). Locally, an AWS S3 endpoint stands for
the embedded S3 server.

The files carry SlideRule's key-value metadata: ``geo`` (GeoParquet only), ``pandas`` (index ``time``),
``sliderule`` (``{"server": {"rqst": {"endpoint": "atl06p", "parms": ...}, ...}}``, the request without
its credentials) and ``recordinfo``. Columns are those of the server-written file (spec §2.2):
``extent_id`` and the ``atl06rec.elevation`` fields, with ``geometry`` (GeoParquet, EPSG:7912 as in the
client's frame) or ``latitude``/``longitude`` (Parquet).

Notebook 02 calls the client as a user writes it, ``icesat2.atl06p(parms, callbacks=upload.callbacks)``
then ``upload.check()`` (:class:`UploadCheck`, the check above); in local mode its ``icesat2`` is
:class:`LocalIcesat2`, the engine behind the module's ``atl06p`` signature. :func:`atl06p` does both in one
call (the bench and the tests use it).

``sliderule.toregion`` needs no network (it reads the file with geopandas and takes the convex hull), so
notebooks use the real one in both modes.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from is2cloud import atl06sr
from is2cloud.aoi import AOI, load_aoi
from is2cloud.credentials import SECRET_KEYS, Credentials, CredentialsError
from is2cloud.geoparquet import OutputPathError
from is2cloud.parallel import blocks_released
from is2cloud.settings import get_settings

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

    from is2cloud.bench import Measurement

log = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "LocalIcesat2",
    "OutputSpec",
    "ParameterError",
    "SlideRuleError",
    "SlideRuleLegacyKeyWarning",
    "UploadCheck",
    "atl06_reference",
    "atl06p",
    "benchmark",
    "check_request",
    "compare_with_atl06",
    "tutorial_parms",
    "warm_workers",
]

PUBLIC_URL = "slideruleearth.io"
PUBLIC_ORGANIZATION = "sliderule"
FORMATS: tuple[str, ...] = ("parquet", "geoparquet")
#: output formats the server writes that the local engine does not (OutputFields.cpp)
OTHER_SERVER_FORMATS: tuple[str, ...] = ("feather", "csv", "h5", "las", "laz")
_OUTPUT_KEYS = frozenset({"path", "format", "open_on_complete", "as_geo", "endpoint", "region", "credentials",
                          "asset", "with_checksum", "with_validation", "with_openapi", "ancillary"})
_CREDENTIAL_FIELDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
RECORDINFO = {"time": "time", "x": "longitude", "y": "latitude"}
# Granules up to this size are fetched in one GET and read from memory (the synthetic ATL03 granules are
# windows around the AOI, almost all of which the engine reads); larger ones through a block cache of
# READ_BLOCK_BYTES blocks, so only the blocks the AOI's photon ranges touch are fetched.
WHOLE_OBJECT_MAX_BYTES = 64 * 2**20
READ_BLOCK_BYTES = 4 * 2**20

ParameterError = atl06sr.ParameterError


class SlideRuleError(RuntimeError):
    """SlideRule could not answer the request (unreachable, refused, or no result); the message says which."""


class SlideRuleLegacyKeyWarning(FutureWarning):
    """A request key from an older SlideRule (e.g. ``output.region``, renamed ``endpoint`` in v5.0.7)."""


# -- the request -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputSpec:
    """``parms["output"]``, checked. ``credentials`` keeps the secret values: never display it."""

    path: str
    format: str
    open_on_complete: bool
    endpoint: str | None
    credentials: dict[str, str] | None

    @property
    def is_s3(self) -> bool:
        return self.path.startswith("s3://")

    def __repr__(self) -> str:  # the credentials stay out of every display
        return (f"OutputSpec(path={self.path!r}, format={self.format!r}, open_on_complete={self.open_on_complete}, "
                f"endpoint={self.endpoint!r}, credentials={'given' if self.credentials else None})")


@dataclass(frozen=True)
class Request:
    """A checked ``atl06p`` request: the parms to send (output normalised), the AOI and the filters."""

    parms: dict[str, Any] = field(repr=False)  # holds the output credentials: never displayed
    aoi: AOI | None
    output: OutputSpec | None
    resources: tuple[str, ...] | None
    temporal: tuple[Any, Any] | None
    rgt: int | None
    cycle: int | None
    region: int | None


def _int_filter(parms: Mapping[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = parms.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ParameterError(f"{key}={value!r} must be an integer {lo}..{hi}")
    return int(value)


def _check_poly(poly: Any) -> AOI:
    """SlideRule's ``poly`` (``[{"lon", "lat"}, ...]``) as a checked AOI."""
    from shapely.geometry import Polygon

    if not isinstance(poly, Sequence) or isinstance(poly, (str, bytes)) or len(poly) < 3:
        raise ParameterError("poly must be a list of at least 3 {'lon': ..., 'lat': ...} points, as "
                             "sliderule.toregion(...)['poly'] returns")
    try:
        points = [(float(p["lon"]), float(p["lat"])) for p in poly]
    except (TypeError, KeyError, ValueError):
        raise ParameterError("poly must be a list of {'lon': ..., 'lat': ...} points with numbers "
                             "(as sliderule.toregion(...)['poly'] returns)") from None
    try:
        return load_aoi(Polygon(points), name="poly")
    except ValueError as exc:  # AOIError: swapped coordinates, no area, self-intersection, ...
        raise ParameterError(f"poly: {exc}") from None


def _check_resources(resources: Any) -> tuple[str, ...] | None:
    if resources is None:
        return None
    items = [resources] if isinstance(resources, str) else list(resources)
    names = []
    for r in items:
        parsed = atl06sr.parse_granule_name(str(r)) if isinstance(r, str) else None
        if parsed is None or parsed["product"] != "ATL03":
            raise ParameterError(f"resource {r!r} is not an ATL03 granule name (ATL03_YYYYMMDDhhmmss_TTTTCCRR_VVV_RR.h5)")
        names.append(os.path.basename(r))
    if not names:
        raise ParameterError("resources is an empty list: give ATL03 granule names, or None to search by poly")
    return tuple(names)


def _credentials_dict(value: Any, path: str) -> dict[str, str] | None:
    """``output.credentials`` as the client sends it; a :class:`Credentials` value is converted."""
    if value is None:
        return None
    if isinstance(value, Credentials):
        value = value.sliderule_output()
    if not isinstance(value, Mapping):
        raise CredentialsError(f"output['credentials'] for {path} must be a dict with aws_access_key_id, "
                               "aws_secret_access_key and aws_session_token (Credentials.sliderule_output())")
    out = {k: str(value[k]) for k in _CREDENTIAL_FIELDS if value.get(k)}
    return out


def _check_output(output: Any, *, local: bool) -> OutputSpec | None:
    if output is None:
        return None
    if not isinstance(output, Mapping):
        raise ParameterError("output must be a dict with path, format, open_on_complete, endpoint and credentials")
    path = output.get("path")
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ParameterError("output['path'] is required: a local file path or an s3://bucket/key URL")
    path = os.fspath(path)
    if "://" in path and not path.startswith("s3://"):
        raise ParameterError(f"output['path'] {path!r}: only local paths and s3:// URLs are supported")
    fmt = output.get("format", "geoparquet")
    if fmt == "parquet" and output.get("as_geo"):
        fmt = "geoparquet"  # deprecated as_geo (OutputFields.cpp)
    if fmt not in FORMATS:
        if fmt in OTHER_SERVER_FORMATS and not local:
            pass  # the server writes these; the client passes them through
        elif fmt in OTHER_SERVER_FORMATS:
            raise ParameterError(f"output format {fmt!r} is written by SlideRule's servers but not by the local "
                                 f"engine; use {' or '.join(FORMATS)}")
        else:
            raise ParameterError(f"output format {fmt!r} is not a SlideRule format; use {' or '.join(FORMATS)}")
    endpoint = output.get("endpoint")
    if output.get("region") is not None and endpoint is None:  # both keys: for servers old and new, harmless
        warnings.warn("output['region'] is the name SlideRule used before v5.0.7; current servers ignore it. Use "
                      f"output['endpoint'] (e.g. 's3.{output['region']}.amazonaws.com') instead",
                      SlideRuleLegacyKeyWarning, stacklevel=4)
        if endpoint is None:
            endpoint = f"s3.{output['region']}.amazonaws.com"
    credentials = _credentials_dict(output.get("credentials"), path)
    if path.startswith("s3://"):
        _split_s3(path)
        if not credentials or not credentials.get("aws_access_key_id") or not credentials.get("aws_secret_access_key"):
            raise CredentialsError(
                f"missing credentials for {path}: output['credentials'] needs aws_access_key_id, "
                "aws_secret_access_key and aws_session_token (e.g. get_credentials('write').sliderule_output())")
    return OutputSpec(path=path, format=str(fmt), open_on_complete=bool(output.get("open_on_complete", False)),
                      endpoint=str(endpoint) if endpoint else None, credentials=credentials)


def check_request(parms: Mapping[str, Any], resources: Iterable[str] | None = None, *,
                  local: bool | None = None) -> Request:
    """Check an ``atl06p`` request before anything runs; raise a clear error for each bad input.

    ``srt``, ``cnf``, ``len``, ``res`` (and, locally, every processing parameter the engine reads) are
    checked as the server would; ``poly`` is required unless ``resources`` names the granules; ``t0``/``t1``,
    ``rgt``, ``cycle`` and ``region`` filter the granules; ``output`` is checked without touching storage.
    Raises :class:`ParameterError`, :class:`~is2cloud.credentials.CredentialsError` or
    :class:`~is2cloud.geoparquet.OutputPathError`.
    """
    from is2cloud.catalog import parse_temporal

    local = get_settings().mode == "local" if local is None else local
    if not isinstance(parms, Mapping):
        raise ParameterError(f"parms must be a dict, not {type(parms).__name__}")
    if local:
        atl06sr.parse_parms(parms)  # every key the engine reads, plus the unsupported ones
    else:  # the server checks the rest; these are the ones a typo makes silently wrong
        atl06sr._srt(parms.get("srt", -1))
        atl06sr._cnf(parms.get("cnf", [2, 3, 4]))
        atl06sr._number(parms, "len", 40.0, minimum=0.0, strict=True)
        atl06sr._number(parms, "res", 20.0, minimum=0.0, strict=True)
    if local and (parms.get("region_mask") or parms.get("raster")):
        raise ParameterError("region_mask/raster is not supported by the local engine; give the AOI as poly")
    names = _check_resources(resources)
    poly = parms.get("poly")
    if poly is None and names is None:
        raise ParameterError("parms has no 'poly': give the area of interest as sliderule.toregion(aoi)['poly'] "
                             "(or name the granules in resources)")
    area = _check_poly(poly) if poly is not None else None
    t0, t1 = parms.get("t0"), parms.get("t1")
    temporal = None
    if t0 is not None or t1 is not None:
        try:
            parse_temporal((t0, t1))
        except ValueError as exc:
            raise ParameterError(f"t0/t1: {exc}") from None
        temporal = (t0, t1)
    output = _check_output(parms.get("output"), local=local)
    clean = dict(parms)
    if output is not None:
        out = {k: v for k, v in dict(parms["output"]).items() if k != "region"}
        out.update(format=output.format, open_on_complete=output.open_on_complete)
        out.pop("as_geo", None)
        if output.is_s3:
            # Servers from v5.0.7 (those of the pinned client) read ``endpoint``; older ones read ``region``;
            # each ignores the key it does not know, so both are sent.
            endpoint = output.endpoint or f"s3.{get_settings().region}.amazonaws.com"
            out["endpoint"] = endpoint
            out["region"] = _region_of(endpoint) or get_settings().region
        elif output.endpoint:
            out["endpoint"] = output.endpoint
        if output.credentials is not None:
            out["credentials"] = dict(output.credentials)
        unknown = sorted(set(out) - _OUTPUT_KEYS)
        if unknown:
            log.warning("output keys %s are not SlideRule output fields; the server ignores them", unknown)
        clean["output"] = out
    return Request(parms=clean, aoi=area, output=output, resources=names, temporal=temporal,
                   rgt=_int_filter(parms, "rgt", 1, 1387), cycle=_int_filter(parms, "cycle", 1, 255),
                   region=_int_filter(parms, "region", 1, 14))


def _region_of(endpoint: str) -> str | None:
    """The AWS region named by an S3 endpoint (``s3.us-west-2.amazonaws.com`` -> ``us-west-2``), as the server
    parses it; None for any other endpoint."""
    host = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}").hostname or ""
    parts = host.split(".")
    if len(parts) == 4 and parts[0] == "s3" and host.endswith(".amazonaws.com"):
        return parts[1]
    return None


def safe_parms(parms: Mapping[str, Any]) -> dict[str, Any]:
    """The request without credentials (for metadata and logs): every secret-looking key is dropped."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items() if k != "credentials" and k not in SECRET_KEYS}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (np.integer, np.floating)):
            return value.item()
        return value

    return clean(copy.deepcopy(dict(parms)))


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "****")
    return text


# -- storage ---------------------------------------------------------------------------------------


def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket or not key or key.endswith("/"):
        raise OutputPathError(f"{url!r} is not an S3 object URL (s3://bucket/key.parquet)")
    return bucket, key


def _loopback(host: str | None) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


def resolve_endpoint(endpoint: str | None, cloud: Any) -> str:
    """The S3 endpoint URL to write to in local mode.

    None, or an AWS S3 endpoint (``s3.<region>.amazonaws.com``, with or without ``https://``), means the
    embedded S3 server, which stands in for AWS locally; a loopback endpoint is used as given. Anything
    else is refused: local mode never contacts the network.
    """
    if endpoint is None:
        return cloud.endpoint
    text = endpoint if "://" in endpoint else f"http://{endpoint}"
    host = urlparse(text).hostname or ""
    if host == "s3.amazonaws.com" or (host.startswith("s3.") and host.endswith(".amazonaws.com")) or (
            host.startswith("s3-") and host.endswith(".amazonaws.com")):
        return cloud.endpoint
    if _loopback(host):
        return text.rstrip("/")
    raise ParameterError(f"output['endpoint'] {endpoint!r}: in local mode output goes to the embedded S3 server; give "
                         "an AWS S3 endpoint (it stands for the embedded server), its loopback endpoint, or none")


def _output_credentials(spec: OutputSpec, endpoint: str) -> Credentials:
    c = spec.credentials or {}
    return Credentials(c["aws_access_key_id"], c["aws_secret_access_key"], c.get("aws_session_token"),
                       region=get_settings().region, endpoint_url=endpoint, source="sliderule output credentials")


def check_writable(spec: OutputSpec, credentials: Credentials | None) -> None:
    """Fail early, before any processing, when the output cannot be written (nothing is written here).

    Local paths: the nearest existing folder must be writable. S3: the bucket must exist and the endpoint
    answer (a bucket the credentials may not list cannot be checked; the write itself reports it).
    """
    if not spec.is_s3:
        target = Path(spec.path).expanduser().absolute()
        if target.is_dir():
            raise OutputPathError(f"cannot write {str(target)!r}: it is a directory")
        parent = target.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise OutputPathError(f"cannot write {str(target)!r}: {str(parent)!r} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write {str(target)!r}: permission denied in {str(parent)!r}")
        return
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    if credentials is None:
        raise CredentialsError(f"missing credentials for {spec.path}")
    bucket, _ = _split_s3(spec.path)
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30,
                    s3={"addressing_style": "path"})
    s3 = credentials.boto3_client("s3", config=config)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise OutputPathError(f"cannot write {spec.path}: the bucket {bucket!r} does not exist") from None
        if code not in ("403", "AccessDenied", "Forbidden"):
            raise OutputPathError(f"cannot write {spec.path}: S3 answered {code}") from None
    except BotoCoreError as exc:
        raise OutputPathError(f"cannot write {spec.path}: cannot reach the S3 endpoint ({type(exc).__name__})") from None


def _write_table(table: Any, spec: OutputSpec, credentials: Credentials | None, *, geo: bool) -> None:
    """Write an Arrow table atomically (local: temporary file + rename; S3: one upload of a finished file),
    validated as GeoParquet first when ``geo``. A failure leaves nothing under the final name."""
    import pyarrow.parquet as pq

    from is2cloud.geoparquet import _s3fs, _upload_atomic, chmod_as_new, validate_geoparquet

    def write(where: Any) -> None:
        pq.write_table(table, where, compression="snappy", version="2.6")

    if spec.is_s3:
        bucket, key = _split_s3(spec.path)
        fs = _s3fs(credentials, None, spec.path)
        with tempfile.TemporaryDirectory(prefix="is2cloud-sr-") as tmp:
            local = str(Path(tmp) / "part.parquet")
            write(local)
            if geo:
                validate_geoparquet(local, label=spec.path)
            _upload_atomic(fs, Path(local), bucket, key, spec.path)
        return
    final = Path(spec.path).expanduser().absolute()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise OutputPathError(f"cannot write {str(final)!r}: {exc.strerror or exc}") from None
    try:
        chmod_as_new(fd)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        if geo:
            validate_geoparquet(tmp_name, label=str(final))
        os.replace(tmp_name, final)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_output(gdf: gpd.GeoDataFrame, spec: OutputSpec, credentials: Credentials | None,
                 parms: Mapping[str, Any], duration_s: float) -> None:
    """Write the elevations as the server does: every column incl. ``extent_id``, SlideRule's metadata.

    GeoParquet goes through :func:`is2cloud.geoparquet.write_geoparquet` (bbox covering column, atomic).
    """
    import json

    import pandas as pd
    import pyarrow as pa

    from is2cloud import __version__
    from is2cloud.geoparquet import to_arrow, write_geoparquet

    as_geo = spec.format == "geoparquet"
    meta = {
        "sliderule": {"server": {
            "rqst": {"endpoint": "atl06p", "parms": safe_parms(parms)},
            "environment": "is2cloud local engine (the book's implementation of SlideRule's ATL06-SR; "
                           "synthetic ATL03 from the embedded S3 server)",
            "version": f"is2cloud {__version__}",
            "duration": round(duration_s, 3),
            "packages": ["icesat2"],
            "launch": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }},
        "recordinfo": {**RECORDINFO, "as_geo": as_geo},
    }
    if as_geo and len(gdf):
        write_geoparquet(gdf, spec.path, credentials=credentials if spec.is_s3 else None, metadata=meta,
                         index=True, compression="snappy")
        return
    if as_geo:  # no elevations: Arrow cannot infer a type for an empty WKB column, so say it is binary
        table = to_arrow(gdf, metadata=meta, index=True)
        i = table.schema.get_field_index("geometry")
        table = table.set_column(i, pa.field("geometry", pa.binary()), table.column(i).cast(pa.binary()))
        _write_table(table, spec, credentials, geo=True)
        return
    df = pd.DataFrame(gdf.drop(columns="geometry"))
    df["latitude"], df["longitude"] = gdf.geometry.y.to_numpy(), gdf.geometry.x.to_numpy()
    table = pa.Table.from_pandas(df, preserve_index=True)
    kv = {**(table.schema.metadata or {}), **{k.encode(): json.dumps(v).encode() for k, v in meta.items()}}
    _write_table(table.replace_schema_metadata(kv), spec, credentials, geo=False)


def open_output(spec: OutputSpec, credentials: Credentials | None) -> Any:
    """Read the written file back as the client's ``open_on_complete`` does (metadata in ``attrs``)."""
    import pandas as pd

    from is2cloud.geoparquet import read_geoparquet, read_metadata

    if spec.format == "geoparquet":
        return read_geoparquet(spec.path, credentials=credentials if spec.is_s3 else None)
    options = credentials.storage_options() if spec.is_s3 and credentials is not None else None
    df = pd.read_parquet(spec.path, storage_options=dict(options) if options else None)
    df.attrs.update(read_metadata(spec.path, credentials=credentials if spec.is_s3 else None))
    return df


# -- local mode ------------------------------------------------------------------------------------


def _granules(request: Request, cloud: Any) -> list:
    """The ATL03 granules the catalog holds for the request (SlideRule's CMR query, made locally)."""
    import earthaccess

    from is2cloud.catalog import NoGranulesError, find_granules
    from is2cloud.granules import load_archive

    archive = load_archive(cloud.archive) if getattr(cloud, "archive", None) else None
    if request.aoi is not None:
        found = find_granules(request.aoi, "ATL03", temporal=request.temporal, archive=archive)
    else:
        from is2cloud.catalog import _local_archive

        arch = _local_archive(archive, get_settings())
        found = [earthaccess.DataGranule(r, cloud_hosted=True) for r in arch.umm_records("ATL03")]
    if request.resources is not None:
        wanted = set(request.resources)
        found = [g for g in found if g["umm"]["GranuleUR"] in wanted]
        missing = wanted - {g["umm"]["GranuleUR"] for g in found}
        if missing:
            raise NoGranulesError(f"resources not in the local catalog (or outside poly/t0/t1): {sorted(missing)}")
    keep = []
    for g in found:
        p = atl06sr.parse_granule_name(g["umm"]["GranuleUR"]) or {}
        if all(v is None or p.get(k) == v for k, v in (("rgt", request.rgt), ("cycle", request.cycle),
                                                        ("region", request.region))):
            keep.append(g)
    if not keep:
        raise NoGranulesError(f"no ATL03 granules left after the filters rgt={request.rgt}, cycle={request.cycle}, "
                              f"region={request.region} ({len(found)} granules matched poly/t0/t1)")
    return keep


def process_atl03(granule: Any, parms: Mapping[str, Any], aoi: AOI | None, credentials: Credentials
                  ) -> gpd.GeoDataFrame:
    """ATL06-SR elevations (with ``extent_id``) of one ATL03 granule read from S3 (a Dask task)."""
    import h5py

    url = granule.data_links(access="direct")[0] if isinstance(granule, dict) else str(granule)
    name = url.rsplit("/", 1)[-1]
    fs = credentials.fresh().s3fs()
    mask = aoi.contains if aoi is not None else None
    if fs.info(url)["size"] <= WHOLE_OBJECT_MAX_BYTES:  # one GET, then HDF5 from memory
        source: Any = io.BytesIO(fs.cat_file(url))
    else:  # only the blocks the photon ranges touch
        source = blocks_released(fs.open(url, "rb", cache_type="blockcache", block_size=READ_BLOCK_BYTES))
    with source as fh, h5py.File(fh, "r") as h5:
        return atl06sr.process_granule(h5, parms, mask, granule_name=name, keep_id=True)


def _typed_empty(keep_id: bool) -> gpd.GeoDataFrame:
    """No elevations, but every column with its dtype (an empty file still has the schema)."""
    import geopandas as gpd
    import pandas as pd

    names = [c for c in atl06sr.OUTPUT_COLUMNS if keep_id or c != "extent_id"]
    index = pd.DatetimeIndex(np.empty(0, "datetime64[ns]"), name="time")
    return gpd.GeoDataFrame({c: np.empty(0, dtype=atl06sr.OUTPUT_DTYPES[c]) for c in names}, index=index,
                            geometry=gpd.points_from_xy([], []), crs=atl06sr.ICESAT2_CRS)


def _atl06p_local(request: Request, *, client: Any, cloud: Any, progress: bool | None, keep_id: bool = False,
                  callbacks: Mapping[str, Any] | None = None) -> Any:
    import pandas as pd

    from is2cloud.parallel import map_granules

    if cloud is None:
        from is2cloud.localcloud import ensure_cloud

        cloud = ensure_cloud()
    spec = request.output
    out_creds = None
    if spec is not None:
        if spec.is_s3:
            out_creds = _output_credentials(spec, resolve_endpoint(spec.endpoint, cloud))
        check_writable(spec, out_creds)
    t0 = time.perf_counter()
    granules = _granules(request, cloud)
    engine_parms = {k: v for k, v in request.parms.items() if k != "output"}
    urls = [g.data_links(access="direct")[0] for g in granules]  # strings travel light (no earthaccess on workers)
    frames = map_granules(process_atl03, urls, client, progress=progress, label="atl06p",
                          parms=engine_parms, aoi=request.aoi, credentials=cloud.credentials())
    keep_id = spec is not None or keep_id or bool(request.parms.get("keep_id", False))
    parts = [f for f in frames if len(f)]
    gdf = pd.concat(parts).sort_index(kind="stable") if parts else _typed_empty(True)
    if not keep_id:
        gdf = gdf.drop(columns="extent_id")
    if spec is None:
        return gdf
    write_output(gdf, spec, out_creds, request.parms, time.perf_counter() - t0)
    confirm = (callbacks or {}).get("arrowrec.remote")
    if spec.is_s3 and confirm is not None and out_creds is not None:  # as the server confirms its upload
        bucket, key = _split_s3(spec.path)
        size = out_creds.boto3_client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"]
        confirm({"__rectype": "arrowrec.remote", "url": spec.path, "size": int(size)}, None)
    return open_output(spec, out_creds) if spec.open_on_complete else spec.path


class LocalIcesat2:
    """The local stand-in for the ``sliderule.icesat2`` module: ``atl06p`` with the client's signature and
    return values, answered by the book's engine (:func:`_atl06p_local`), and the module's constants
    (``SRT_LAND``, ``CNF_SURFACE_HIGH``, ...). Anything else needs SlideRule's service.

    >>> icesat2 = LocalIcesat2(client=client)  # CryoCloud: from sliderule import icesat2  # doctest: +SKIP
    >>> icesat2.atl06p(parms, callbacks=upload.callbacks)                                   # doctest: +SKIP
    's3://bucket/prefix/grandmesa.parquet'

    ``client``: where the granules fan out (:func:`is2cloud.parallel.map_granules`; ``"sync"`` runs here);
    ``cloud``: the local cloud to read from and write to (default :func:`~is2cloud.localcloud.ensure_cloud`).
    With S3 output, the ``arrowrec.remote`` callback is called once the object is written, as the server
    streams that record; other record types are never sent (the engine raises instead of sending alerts).
    """

    def __init__(self, *, client: Any = None, cloud: Any = None, progress: bool | None = None):
        self.client, self.cloud, self.progress = client, cloud, progress

    def atl06p(self, parm: Mapping[str, Any], callbacks: Mapping[str, Any] | None = None,
               resources: Iterable[str] | None = None, keep_id: bool = False, as_numpy_array: bool = False,
               height_key: str | None = None) -> Any:
        """As ``sliderule.icesat2.atl06p``: a GeoDataFrame, or with ``parm["output"]`` the path or URL written
        (the file read back when ``open_on_complete``). ``as_numpy_array`` concerns sampled raster and
        ancillary values, which the engine does not produce; ``height_key`` (a 3D geometry) is not
        supported."""
        if height_key is not None:
            raise ParameterError(f"height_key={height_key!r}: the local engine makes 2D points only")
        request = check_request(parm, resources, local=True)
        return _atl06p_local(request, client=self.client, cloud=self.cloud, progress=self.progress,
                             keep_id=keep_id, callbacks=callbacks)

    def __getattr__(self, name: str) -> Any:
        if name.isupper():  # the module's constants
            from sliderule import icesat2

            if hasattr(icesat2, name):
                return getattr(icesat2, name)
        raise AttributeError("the local stand-in for sliderule.icesat2 has atl06p and the module's "
                             f"constants, not {name!r}, which needs SlideRule's service "
                             "(IS2CLOUD_MODE=earthdata)")

    def __repr__(self) -> str:
        return f"LocalIcesat2(the book's ATL06-SR engine, client={self.client!r})"


# -- earthdata mode --------------------------------------------------------------------------------


def _atl06p_earthdata(request: Request, *, url: str, organization: str | None) -> Any:
    import sliderule
    from sliderule import icesat2

    secrets = list((request.output.credentials or {}).values()) if request.output else []
    resources = list(request.resources) if request.resources is not None else None
    where = f"SlideRule at {organization + '.' if organization else ''}{url}"
    upload = UploadCheck(request.parms, where=where)
    try:
        sliderule.init(url, organization=organization, rethrow=True)
        result = icesat2.atl06p(request.parms, callbacks=upload.callbacks, resources=resources)
    except Exception as exc:  # noqa: BLE001 - FatalError (unreachable, HTTP error) and whatever else the client raises
        reason = _scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, secrets)
        raise SlideRuleError(f"{where} could not process the request: {reason}") from None
    spec = request.output
    if spec is not None and spec.is_s3:
        uploaded = upload.check()
        if not spec.open_on_complete:
            return uploaded
    if spec is not None:
        if result is None or (hasattr(result, "empty") and result.empty and not spec.open_on_complete):
            raise SlideRuleError(f"{where} returned no output file for {spec.path} (see the client's log)")
    elif result is None:
        raise SlideRuleError(f"{where} returned nothing")
    return result


class UploadCheck:
    """Did SlideRule write the S3 output of ``parms``? Pass :attr:`callbacks` to ``icesat2.atl06p``, then
    call :meth:`check`, which raises :class:`SlideRuleError` when the server did not confirm the upload.

    With S3 output the server writes the file, PUTs it to S3, then streams an ``arrowrec.remote`` record
    (``{"url", "size"}``). A failed PUT is only an alert (an ``exceptrec`` record), which the client logs,
    and the client returns ``output["path"]`` either way (spec/atl06sr.md §3.4), so the record is the only
    proof that the object at that path is this result. Alerts are logged as the client logs them, with
    the output credentials blanked out.

    >>> upload = UploadCheck(parms)                                           # doctest: +SKIP
    >>> url = icesat2.atl06p(parms, callbacks=upload.callbacks)               # doctest: +SKIP
    >>> upload.check()                                                        # doctest: +SKIP
    's3://bucket/prefix/grandmesa.parquet'
    """

    def __init__(self, parms: Mapping[str, Any], *, where: str = "SlideRule"):
        output = parms.get("output") or {}
        self.path = str(output.get("path", "")) if isinstance(output, Mapping) else ""
        given = output.get("credentials") if isinstance(output, Mapping) else None
        self.where = where
        self.remote: list[dict[str, Any]] = []
        self.alerts: list[str] = []
        self._secrets = list((_credentials_dict(given, self.path) or {}).values())
        #: the ``callbacks`` argument of ``icesat2.atl06p``
        self.callbacks: dict[str, Any] = {"arrowrec.remote": self._on_remote, "exceptrec": self._on_alert}

    def _on_remote(self, rec: Mapping[str, Any], session: Any = None) -> None:
        self.remote.append({"url": str(rec.get("url", "")), "size": rec.get("size")})

    def _on_alert(self, rec: Mapping[str, Any], session: Any = None) -> None:
        text = _scrub(str(rec.get("text", "")), self._secrets)
        level = int(rec.get("level", 3) or 0)  # as the client's Session.eventlogger: 0 debug .. 4 critical
        self.alerts.append(text)
        log.log((logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)[min(max(level, 0), 3)],
                "SlideRule alert <%s>: %s", rec.get("code", "?"), text)

    def check(self) -> str | None:
        """The URL the server confirmed writing (the output path, or the server's own name for it, e.g. with
        an ``asset``). Output that is not on S3 is not uploaded: its path (None without output).
        Raises :class:`SlideRuleError`, quoting the server's alerts, when no upload was confirmed."""
        if not self.path.startswith("s3://"):
            return self.path or None
        urls = [r["url"] for r in self.remote]
        if self.path in urls:
            return self.path
        if urls:
            return urls[0]
        alerts = "; ".join(self.alerts) or "no alert either"
        raise SlideRuleError(f"{self.where} did not confirm writing {self.path} (no arrowrec.remote record): "
                             f"the upload failed or never happened, so the object there, if any, is not this "
                             f"result. Server alerts: {alerts}")


# -- the call --------------------------------------------------------------------------------------


def atl06p(parms: Mapping[str, Any], resources: Iterable[str] | None = None, *, client: Any = None,
           cloud: Any = None, progress: bool | None = None, url: str = PUBLIC_URL,
           organization: str | None = PUBLIC_ORGANIZATION) -> Any:
    """ATL06-SR elevations for ``parms``, as ``sliderule.icesat2.atl06p(parms, resources=resources)`` returns them.

    Without ``parms["output"]``: a GeoDataFrame (index ``time``, EPSG:7912). With it: the path or ``s3://``
    URL when ``open_on_complete`` is false, else the file read back (GeoDataFrame with SlideRule's metadata
    in ``attrs``). ``resources``: ATL03 granule names (default: search by ``poly``/``t0``/``t1``).
    Local mode: ``client`` is where the granules fan out (see :func:`is2cloud.parallel.map_granules`;
    ``"sync"`` runs here), ``cloud`` the local cloud to read from and write to (default
    :func:`~is2cloud.localcloud.ensure_cloud`). Earthdata mode: ``url``/``organization`` name the SlideRule
    cluster (``organization=None`` for a plain-http server such as ``"localhost:9081"``).

    Raises :class:`ParameterError` (bad ``srt``, ``cnf``, ``len``, ``res``, ``poly``, output format ...),
    :class:`~is2cloud.credentials.CredentialsError` (S3 output without credentials),
    :class:`~is2cloud.geoparquet.OutputPathError` (output not writable),
    :class:`~is2cloud.catalog.NoGranulesError` (no granules for the AOI and filters),
    :class:`~is2cloud.parallel.GranuleError` (a granule failed) and :class:`SlideRuleError` (earthdata mode:
    SlideRule unreachable or failing). A failed run leaves no object under the output key.
    """
    local = get_settings().mode == "local"
    request = check_request(parms, resources, local=local)
    if local:
        return _atl06p_local(request, client=client, cloud=cloud, progress=progress)
    return _atl06p_earthdata(request, url=url, organization=organization)


def tutorial_parms(poly: list[dict[str, float]], **extra: Any) -> dict[str, Any]:
    """The processing parms of the ICESat-2 Hackweek 2023 "SlideRule output to S3" tutorial (Grand Mesa)."""
    return {"poly": poly, "srt": 0, "cnf": 4, "ats": 10.0, "cnt": 10, "len": 40.0, "res": 20.0, "maxi": 6,
            **extra}


# -- ATL06 of the same tracks --------------------------------------------------------------------


def _atl06_companion(atl03: Any, cache: Path, credentials: Credentials | None) -> Path:
    """Generate (once, cached) the synthetic ATL06 granule of an ATL03 granule: same RGT, cycle, region,
    along-track window, surface model and seed, read from the ATL03 file's own attributes."""
    import h5py

    from is2cloud.granules import GENERATOR_VERSION, GranuleSpec, write_atl06

    url = atl03.data_links(access="direct")[0] if isinstance(atl03, dict) else str(atl03)
    name = url.rsplit("/", 1)[-1]
    remote = url.startswith("s3://") and credentials is not None
    opener = (blocks_released(credentials.s3fs().open(url, "rb", cache_type="blockcache", block_size=2**20))
              if remote else None)
    with opener or open(url, "rb") as fh, h5py.File(fh, "r") as f:
        attrs = {k: f.attrs[k] for k in ("is2cloud_seed", "is2cloud_surface_model", "is2cloud_along_track_window_m")}
    surface = attrs["is2cloud_surface_model"]
    surface = surface.decode() if isinstance(surface, bytes) else str(surface)
    x0, x1 = (float(v) for v in attrs["is2cloud_along_track_window_m"])
    info = atl06sr.parse_granule_name(name)
    if info is None:
        raise ValueError(f"{name!r} is not an ATL03 granule name")
    spec = GranuleSpec("ATL06", int(info["rgt"]), int(info["cycle"]), int(info["region"]), surface=surface,
                       x_start=x0, x_end=x1, seed=int(attrs["is2cloud_seed"]),
                       reason="the ATL03 granule's window (companion for an ATL06-SR comparison)")
    path = cache / GENERATOR_VERSION / f"{int(attrs['is2cloud_seed'])}-{x0:.0f}-{x1:.0f}" / spec.name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        write_atl06(spec, tmp)
        os.replace(tmp, path)
    return path


def atl06_reference(elevations: pd.DataFrame, aoi: Any, *, client: Any = None, cloud: Any = None
                    ) -> gpd.GeoDataFrame:
    """The ATL06 land-ice segments (``h_li``) inside ``aoi`` on the same tracks (RGT, cycle) as ``elevations``.

    In the book's canonical schema (:mod:`is2cloud.methods.schema`), read the baseline way. Earthdata mode:
    the real ATL06 v006 granules of those RGTs and cycles. Local mode: the local archive holds ATL03 only for
    Grand Mesa, so the synthetic ATL06 granules of the same specs (same surface, seed and along-track window
    as the ATL03 granules) are generated once with :mod:`is2cloud.granules` and cached.
    """
    from is2cloud.catalog import find_granules
    from is2cloud.methods import baseline

    area = load_aoi(aoi)
    tracks = {(int(r), int(c)) for r, c in zip(elevations["rgt"], elevations["cycle"])}
    if not tracks:
        raise ValueError("no elevations: nothing to compare")
    times = elevations.index if "time" not in elevations.columns else elevations["time"]
    temporal = (_utc(times.min()) - dt.timedelta(hours=1), _utc(times.max()) + dt.timedelta(hours=1))
    if get_settings().mode != "local":
        atl06 = [g for g in find_granules(area, "ATL06", temporal=temporal) if _track(g) in tracks]
        return baseline.subset(atl06, area, client=client, progress=False)
    if cloud is None:
        from is2cloud.localcloud import ensure_cloud

        cloud = ensure_cloud()
    from is2cloud.granules import load_archive

    archive = load_archive(cloud.archive) if getattr(cloud, "archive", None) else None
    atl03 = [g for g in find_granules(area, "ATL03", temporal=temporal, archive=archive) if _track(g) in tracks]
    credentials = cloud.credentials()
    cache = get_settings().cache_dir / "atl06-companions"
    paths = [_atl06_companion(g, cache, credentials) for g in atl03]
    return baseline.subset(paths, area, client=client, progress=False)


def _utc(value: Any) -> dt.datetime:
    import pandas as pd

    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts).to_pydatetime(warn=False)


def _track(granule: Any) -> tuple[int, int]:
    p = atl06sr.parse_granule_name(granule["umm"]["GranuleUR"]) or {}
    return int(p.get("rgt", -1)), int(p.get("cycle", -1))


def compare_with_atl06(elevations: pd.DataFrame, atl06: pd.DataFrame) -> pd.DataFrame:
    """ATL06-SR rows matched with the ATL06 segment of the same RGT, cycle, beam and ``segment_id``.

    SlideRule's ``segment_id`` names the ATL06 segment closest to the extent centre (spec §1.3), so the
    match is by key. Returns one row per match: ``rgt, cycle, track_id, segment_id, latitude, h_mean, h_li,
    dh = h_mean - h_li``, only for ATL06 segments with a valid height.
    """
    import pandas as pd

    sr = pd.DataFrame({
        "rgt": elevations["rgt"].to_numpy().astype("int64"),
        "cycle": elevations["cycle"].to_numpy().astype("int64"),
        "track_id": [atl06sr.BEAMS[int(g) // 10 - 1] for g in elevations["gt"].to_numpy()],
        "segment_id": elevations["segment_id"].to_numpy().astype("int64"),
        "latitude": elevations.geometry.y.to_numpy() if hasattr(elevations, "geometry") else np.nan,
        "h_mean": elevations["h_mean"].to_numpy(),
    })
    ref = pd.DataFrame({
        "rgt": atl06["rgt"].to_numpy().astype("int64"), "cycle": atl06["cycle"].to_numpy().astype("int64"),
        "track_id": atl06["track_id"].astype(str).to_numpy(), "segment_id": atl06["segment_id"].to_numpy().astype("int64"),
        "h_li": atl06["h_li"].to_numpy().astype("float64"),
    }).dropna(subset=["h_li"])
    out = sr.merge(ref, on=["rgt", "cycle", "track_id", "segment_id"], how="inner")
    out["dh"] = out["h_mean"] - out["h_li"]
    return out


# -- benchmark (make bench) ----------------------------------------------------------------------


def _grandmesa() -> Path:
    from is2cloud.granules.archive import REPO_DATA

    return REPO_DATA / "grandmesa.geojson"


def read_beams(paths: Sequence[str | os.PathLike[str]], aoi: AOI, parms: atl06sr.Atl06Parms
               ) -> list[tuple[atl06sr.GranuleInfo, list[atl06sr.Atl03Beam]]]:
    """What the engine reads from each local ATL03 file: every beam cut to the AOI region."""
    import h5py

    out = []
    for path in paths:
        with h5py.File(path, "r") as h5:
            info = atl06sr.read_granule_info(h5, Path(path).name)
            beams = [atl06sr.read_atl03_beam(h5, b, parms, aoi_mask_fn=aoi.contains, version=info.version)
                     for b in parms.beams]
        out.append((info, [b for b in beams if b is not None]))
    return out


def benchmark(cloud: Any, archive: Any, scale: str, *, client: Any = None, profile: str = "in-region"
              ) -> list[Measurement]:
    """``make bench`` figures for the SlideRule chapter on ``archive`` (Grand Mesa ATL03), per CONTRACTS.md.

    Notebook 02's request (Grand Mesa ``poly`` from ``sliderule.toregion``, srt=land, cnf=4, len 40, res 20,
    maxi 6) over the archive's Grand Mesa ATL03 granules:

    1. ``atl06sr engine (fit only)``: photon selection, extents, fit and output columns on beams already in
       memory, in this process: photons per CPU second on one core (``photons``: every photon of the AOI
       region of every beam, which is what the engine selects from);
    2. ``atl06sr engine + HDF5 read (local disk)``: ``process_granule`` on the archive's files;
    3. ``atl06p -> GeoParquet on S3``: the whole request against ``cloud`` with the ``profile`` network model
       (catalog, S3 reads on the Dask workers, fit, GeoParquet upload), workers warmed first.

    Returns [] when the archive has no Grand Mesa ATL03 (e.g. the ``bench`` preset).
    """
    from is2cloud.bench import measure
    from is2cloud.catalog import NoGranulesError, find_granules
    from is2cloud.parallel import get_client

    poly = load_aoi(_grandmesa()).sliderule_poly()  # what sliderule.toregion gives: the convex hull
    area = _check_poly(poly)
    try:
        granules = find_granules(area, "ATL03", archive=archive)
    except NoGranulesError:
        return []
    parms = tutorial_parms(poly)
    p = atl06sr.parse_parms(parms)
    paths = [archive.path_of(g.data_links(access="direct")[0].split("/", 3)[3]) for g in granules]
    loaded = read_beams(paths, area, p)
    photons = sum(b.h_ph.size for _, beams in loaded for b in beams)
    what = f"{photons:,} synthetic ATL03 photons in the Grand Mesa poly, {len(paths)} granules"
    out: list[Measurement] = []

    with measure("atl06sr engine (fit only)", method="atl06sr", cloud=cloud, scale=scale, record=False) as m:
        c0 = time.process_time()
        m.rows = sum(len(atl06sr.fit_beam(b, p, info)["h_mean"]) for info, beams in loaded for b in beams)
        cpu = time.process_time() - c0
    m.granules, m.notes = len(paths), f"{photons / cpu / 1e6:.2f} M photons/s/core; {what}"
    out.append(m)

    with measure("atl06sr engine + HDF5 read (local disk)", method="atl06sr", cloud=cloud, scale=scale,
                 record=False) as m:
        c0 = time.process_time()
        m.rows = sum(len(atl06sr.process_granule(path, p, area.contains)) for path in paths)
        cpu = time.process_time() - c0
    m.granules, m.notes = len(paths), f"{photons / cpu / 1e6:.2f} M photons/s/core; {what}"
    out.append(m)

    client = client if client is not None else get_client()
    warm_workers(client)
    creds = cloud.credentials()
    url = f"s3://{cloud.buckets[0]}/sliderule-example/bench-{scale}.parquet"
    request = {**parms, "output": {"path": url, "format": "geoparquet", "open_on_complete": False,
                                    "credentials": creds.sliderule_output()}}
    before = cloud.profile_name
    cloud.set_profile(profile)
    try:
        with measure("atl06p -> GeoParquet on S3", method="atl06sr", cloud=cloud, scale=scale, record=False) as m:
            atl06p(request, client=client, cloud=cloud, progress=False)
    finally:
        cloud.set_profile(before)
    m.rows, m.granules = _rows_of(url, creds), len(granules)
    m.notes = f"notebook 02's request end to end; {what}; Dask workers: {_n_workers(client)}"
    out.append(m)
    return out


def _rows_of(url: str, credentials: Credentials) -> int:
    from is2cloud.geoparquet import validate_geoparquet

    return int(validate_geoparquet(url, credentials=credentials, check_data=False).num_rows)


def _n_workers(client: Any) -> int | str:
    if isinstance(client, str):
        return client
    return len(client.scheduler_info().get("workers", {}))


def _warm_worker() -> None:
    """Load what a task needs (libraries, the CRS database), so the first measured task does not pay for it."""
    import h5py  # noqa: F401
    import s3fs  # noqa: F401

    atl06sr.empty_frame()  # geopandas, and pyproj's database for EPSG:7912


def warm_workers(client: Any) -> None:
    """Load what :func:`atl06p` needs, here and on every Dask worker, before timing it (SlideRule's
    servers are warm too): the catalog (earthaccess), the GeoParquet writer and the engine."""
    import earthaccess  # noqa: F401

    from is2cloud import catalog, geoparquet  # noqa: F401

    _warm_worker()
    if client is not None and not isinstance(client, str):
        client.run(_warm_worker)
