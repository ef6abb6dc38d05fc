"""GeoParquet 1.1: writing with a bbox covering column, atomic writes to disk or S3, and validation.

Writing (:func:`write_geoparquet`)
    * every geometry column is stored as ISO WKB, described in the ``geo`` key-value metadata
      (``version`` 1.1.0, ``primary_column``, ``encoding``, ``geometry_types``, ``crs`` as PROJJSON,
      ``bbox``) and gets a **bbox covering column**: a struct ``{xmin, ymin, xmax, ymax}`` (float64)
      declared under ``covering``, so readers can skip row groups outside an area of interest;
    * pandas metadata is kept (a named index such as SlideRule's ``time`` reads back as the index)
      and extra key-value metadata (e.g. SlideRule's ``sliderule`` and ``recordinfo``) is added;
    * the write is **atomic**: locally a temporary file in the target directory is written, synced,
      validated and ``os.replace``-d over the final name; on S3 the file is written and validated
      locally first, then sent in one PUT, or in one multipart upload that is aborted on any failure.
      A failed run never leaves a partial file or object under the final name.

Reading and validation (:func:`read_geoparquet`, :func:`validate_geoparquet`) check the ``geo``
metadata against the GeoParquet 1.1 specification and the data against the metadata: declared
geometry types, coordinates inside the CRS's range (a lon/lat swap shows up here) and the covering
column equal to each geometry's bounds.

S3 access always takes explicit credentials: an :class:`is2cloud.credentials.Credentials` value
(``credentials=``) or an fsspec ``storage_options`` dict with key/secret(/token) and an endpoint or region.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from is2cloud.credentials import CredentialsError

__all__ = [
    "GEOPARQUET_VERSION",
    "GeoParquetError",
    "OutputPathError",
    "GeoColumnInfo",
    "GeoParquetInfo",
    "to_arrow",
    "write_geoparquet",
    "read_geoparquet",
    "validate_geoparquet",
    "read_metadata",
    "row_groups_meeting",
    "boxes_meet",
]

GEOPARQUET_VERSION = "1.1.0"
# Rows per row group. Row groups are the unit a reader can skip with the covering column's
# statistics; ~64 k points of one beam span ~1300 km of track (20 m posting) in a few MB, which keeps
# the skip useful for a regional AOI without making the footer large.
DEFAULT_ROW_GROUP_ROWS = 65_536
# Rows converted to Arrow and written at a time (rounded down to whole row groups): a 1.69 M-row subset
# converted whole held ~150 MB over the frame while it was written.
WRITE_SLICE_ROWS = 8 * DEFAULT_ROW_GROUP_ROWS
# Objects up to this size go to S3 in one PUT; larger ones as one multipart upload of PART_BYTES parts.
# What is being sent is held in memory (a PUT's whole body): with 64 MiB and 16 MiB parts, uploading a
# bench-scale subset (1.69 M rows) was the largest moment of its write, 160 MB over the frame; now ~95 MB.
SINGLE_PUT_MAX_BYTES = 16 * 2**20
PART_BYTES = 8 * 2**20  # S3 parts must be >= 5 MiB except the last
PART_CONCURRENCY = 4     # parts in flight at once (each is held in memory, some of them twice, while it is sent)

RESERVED_KEYS = frozenset({"geo", "pandas", "ARROW:schema"})
GEOMETRY_TYPES = ("Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon",
                  "GeometryCollection")
_SHAPELY_TYPE_NAMES = {0: "Point", 1: "LineString", 2: "LineString", 3: "Polygon", 4: "MultiPoint",
                       5: "MultiLineString", 6: "MultiPolygon", 7: "GeometryCollection"}
_VERSION_RE = re.compile(r"^1\.(\d+)\.(\d+)(-[0-9A-Za-z.]+)?$")
_BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")
_COVERING_TYPE = pa.struct([pa.field(k, pa.float64()) for k in _BBOX_FIELDS])  # what _covering makes


class GeoParquetError(ValueError):
    """A table or file that is not valid GeoParquet (or cannot be made into it); the message says why."""


class OutputPathError(OSError):
    """The output path cannot be written (names the path and the reason)."""


def refuse_archive_bucket(location: str | os.PathLike[str], what: str) -> None:
    """Raise :class:`OutputPathError` when ``location`` is in the read-only archive bucket
    (``settings.archive_bucket``), before any work: every writer says the same."""
    from is2cloud.settings import get_settings

    settings = get_settings()
    url = os.fspath(location)
    if url.startswith("s3://") and url[5:].split("/", 1)[0] == settings.archive_bucket:
        instead = f"s3://{settings.output_bucket}/..." if settings.output_bucket else "your own bucket"
        raise OutputPathError(f"cannot write {what} to {url}: {settings.archive_bucket} is the read-only archive "
                              f"bucket; write to {instead}")


# -- descriptions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeoColumnInfo:
    name: str
    encoding: str
    geometry_types: tuple[str, ...]
    crs: Any  # pyproj.CRS, or None when the file says the CRS is unknown (crs: null)
    bbox: tuple[float, ...] | None
    covering: str | None  # name of the bbox covering column
    edges: str = "planar"


@dataclass(frozen=True)
class GeoParquetInfo:
    """What :func:`validate_geoparquet` found in a valid file."""

    version: str
    primary_column: str
    columns: dict[str, GeoColumnInfo]
    num_rows: int
    num_row_groups: int | None
    metadata: dict[str, Any] = field(default_factory=dict)  # the extra key-value metadata, JSON-decoded

    @property
    def primary(self) -> GeoColumnInfo:
        return self.columns[self.primary_column]


# -- filesystems ---------------------------------------------------------------------------------


def _is_s3(path: str | os.PathLike[str]) -> bool:
    return isinstance(path, str) and path.startswith(("s3://", "s3a://"))


def _split_s3(url: str) -> tuple[str, str]:
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket or not key or key.endswith("/"):
        raise OutputPathError(f"{url!r} is not an S3 object URL (s3://bucket/key.parquet)")
    return bucket, key


def _local_path(path: str | os.PathLike[str]) -> Path:
    text = os.fspath(path)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme != "file":
            raise OutputPathError(f"{text!r}: unsupported scheme {scheme!r}; give a local path or an s3:// URL")
        text = text.split("://", 1)[1]
    return Path(text)


def _storage_options(credentials: Any, storage_options: Mapping[str, Any] | None, url: str) -> dict[str, Any]:
    """fsspec options for S3 from explicit credentials; never from the environment or instance metadata."""
    if credentials is not None:
        if hasattr(credentials, "require_valid"):
            credentials = credentials.require_valid()
        opts = dict(credentials.storage_options())
    elif storage_options is not None:
        opts = dict(storage_options)
    else:
        raise CredentialsError(f"missing credentials for {url}: pass credentials= (is2cloud.access.get_credentials()) "
                               "or storage_options= with key, secret and endpoint_url/region")
    if not opts.get("anon") and not (opts.get("key") and opts.get("secret")):
        raise CredentialsError(f"missing credentials for {url}: storage_options has no key/secret")
    client_kwargs = dict(opts.get("client_kwargs") or {})
    if not opts.get("endpoint_url") and not client_kwargs.get("endpoint_url") and not client_kwargs.get("region_name"):
        from is2cloud.settings import get_settings

        client_kwargs["region_name"] = get_settings().region  # never let botocore look the region up
    opts["client_kwargs"] = client_kwargs
    return opts


def _s3fs(credentials: Any, storage_options: Mapping[str, Any] | None, url: str):  # -> s3fs.S3FileSystem
    """An s3fs filesystem for these options; fsspec keeps one instance per options, process and thread, so
    successive writes share its S3 client (making one loads botocore's service model: about 0.1 s)."""
    import s3fs

    return s3fs.S3FileSystem(**_storage_options(credentials, storage_options, url))


def _describe_os_error(exc: BaseException) -> str:
    """A short reason for an I/O failure, without request details (which could carry signatures)."""
    if isinstance(exc, FileNotFoundError):
        return "the bucket or directory does not exist"
    if isinstance(exc, PermissionError):
        return "permission denied (are the credentials allowed to write there?)"
    name = type(exc).__name__
    if "EndpointConnectionError" in name or "ConnectError" in name or "ClientConnector" in name:
        return "cannot reach the S3 endpoint"
    if "NoCredentials" in name:
        return "no credentials"
    text = getattr(exc, "strerror", None) or str(exc)
    return f"{name}: {text}"[:300]


# -- arrow conversion ----------------------------------------------------------------------------


def _geometry_columns(gdf: pd.DataFrame) -> list[str]:
    import geopandas as gpd

    return [c for c in gdf.columns if isinstance(gdf[c].dtype, gpd.array.GeometryDtype)]


def _type_names(geoms: np.ndarray) -> list[str]:
    present = geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
    if present.size == 0:
        return []
    kinds = np.unique(shapely.get_type_id(present) * 2 + shapely.has_z(present))  # (type, has z) pairs
    return sorted({_SHAPELY_TYPE_NAMES[int(k) // 2] + (" Z" if k % 2 else "") for k in kinds})


def _bounds(geoms: np.ndarray) -> np.ndarray:
    """Per-geometry (xmin, ymin, xmax, ymax); NaN for missing/empty geometries."""
    out = np.full((len(geoms), 4), np.nan)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if ok.any():
        out[ok] = shapely.bounds(geoms[ok])
    return out


def _plain_points(geoms: np.ndarray) -> np.ndarray | None:
    """The (n, 2) coordinates when every geometry is a non-empty 2D point (the subsets' case), else None.
    Not past 2 GiB of WKB (what a ``binary`` array's 32-bit offsets can address)."""
    if not 0 < len(geoms) < 2**31 // _POINT_WKB.itemsize or not np.all(shapely.get_type_id(geoms) == 0):
        return None
    if shapely.has_z(geoms).any() or shapely.is_empty(geoms).any():
        return None
    return shapely.get_coordinates(geoms)


_POINT_WKB = np.dtype([("order", "u1"), ("type", "<u4"), ("x", "<f8"), ("y", "<f8")])  # packed: 21 bytes


def _point_wkb(xy: np.ndarray) -> pa.Array:
    """ISO WKB of 2D points (what ``shapely.to_wkb`` writes: little endian, type 1, x, y) as an Arrow
    binary array, built in one pass instead of one Python bytes object per point."""
    rec = np.empty(len(xy), dtype=_POINT_WKB)
    rec["order"], rec["type"], rec["x"], rec["y"] = 1, 1, xy[:, 0], xy[:, 1]
    offsets = np.arange(0, (len(xy) + 1) * _POINT_WKB.itemsize, _POINT_WKB.itemsize, dtype=np.int32)
    return pa.BinaryArray.from_buffers(pa.binary(), len(xy), [None, pa.py_buffer(offsets), pa.py_buffer(rec)])


def _covering(lo: np.ndarray, hi: np.ndarray) -> pa.StructArray:
    """The bbox covering column from per-row (xmin, ymin) and (xmax, ymax), null where they are NaN (missing
    or empty geometries). For points ``lo is hi``: xmin and xmax are then one Arrow array, held once."""
    missing = np.isnan(lo[:, 0])
    mask = missing if missing.any() else None

    def column(values: np.ndarray) -> pa.Array:
        return pa.array(np.ascontiguousarray(values), type=pa.float64(), mask=mask)

    x, y = column(lo[:, 0]), column(lo[:, 1])
    if hi is not lo:
        x_hi, y_hi = column(hi[:, 0]), column(hi[:, 1])
    else:
        x_hi, y_hi = x, y
    return pa.StructArray.from_arrays([x, y, x_hi, y_hi], names=list(_BBOX_FIELDS),
                                      mask=None if mask is None else pa.array(mask))


def _crs_json(crs: Any) -> dict[str, Any] | None:
    return None if crs is None else json.loads(crs.to_json())


def _encode_value(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, default=str).encode()


def to_arrow(gdf: Any, *, metadata: Mapping[str, Any] | None = None, index: bool | None = None) -> pa.Table:
    """A GeoDataFrame as an Arrow table with GeoParquet 1.1 ``geo`` metadata and bbox covering columns.

    Each geometry column ``g`` is followed by its covering column (``bbox`` for the primary column,
    ``g_bbox`` for others). ``metadata`` adds key-value metadata: str/bytes values verbatim, other
    values as JSON. ``index`` as in ``pyarrow.Table.from_pandas`` (None: a RangeIndex is kept as
    metadata only, any other index as columns).
    """
    conv = _Conversion(gdf, metadata=metadata, index=index)
    return conv.rows(0, len(conv.df)).replace_schema_metadata(conv.schema.metadata)


class _Conversion:
    """A GeoDataFrame on its way to Arrow (:func:`to_arrow`): its geometry columns encoded once (points
    keep only their coordinates), the schema and metadata of the whole frame, and :meth:`rows` for the
    table of some of its rows, so that a large frame can be written a slice at a time rather than held
    a second time as one Arrow table."""

    def __init__(self, gdf: Any, *, metadata: Mapping[str, Any] | None, index: bool | None):
        import geopandas as gpd

        if not isinstance(gdf, gpd.GeoDataFrame):
            raise GeoParquetError(f"expected a GeoDataFrame, got {type(gdf).__name__}")
        geo_cols = _geometry_columns(gdf)
        if not geo_cols:
            raise GeoParquetError("the GeoDataFrame has no geometry column")
        try:
            primary = gdf.geometry.name
        except AttributeError:
            raise GeoParquetError("the GeoDataFrame has no active geometry column; call set_geometry()") from None
        extra = dict(metadata or {})
        clash = RESERVED_KEYS & set(extra)
        if clash:
            raise GeoParquetError(f"metadata keys {sorted(clash)} are reserved (written by the GeoParquet writer)")
        self.covering_names = {c: ("bbox" if c == primary else f"{c}_bbox") for c in geo_cols}
        taken = set(map(str, gdf.columns)) - set(geo_cols)
        for c, cov in self.covering_names.items():
            if cov in taken:
                raise GeoParquetError(f"cannot add the covering column {cov!r} for {c!r}: a column of that name "
                                      "exists")
        self.index = index
        self.df = df = pd.DataFrame(gdf.copy(deep=False))
        self.boxes: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per geometry column: (xmin, ymin), (xmax, ymax)
        self.points: set[str] = set()  # columns of plain 2D points, encoded straight to Arrow from (x, y)
        columns_meta: dict[str, Any] = {}
        for c in geo_cols:
            series = gdf[c]
            geoms = np.asarray(series.values, dtype=object)
            xy = _plain_points(geoms)
            if xy is not None:
                self.points.add(c)
                df[c] = np.zeros(len(df), dtype="i1")  # placeholder, replaced in each table
                lo = hi = xy  # a point is its own box
                types = ["Point"]
            else:
                has_z = bool(np.any(shapely.has_z(geoms[~shapely.is_missing(geoms)])))
                df[c] = shapely.to_wkb(geoms, flavor="iso", output_dimension=3 if has_z else 2)
                b = _bounds(geoms)
                lo, hi = b[:, :2], b[:, 2:]
                types = _type_names(geoms)
            self.boxes[c] = (lo, hi)
            valid = ~np.isnan(lo[:, 0])
            meta: dict[str, Any] = {"encoding": "WKB", "geometry_types": types, "crs": _crs_json(series.crs)}
            if valid.any():
                meta["bbox"] = [float(lo[valid, 0].min()), float(lo[valid, 1].min()),
                                float(hi[valid, 0].max()), float(hi[valid, 1].max())]
            meta["covering"] = {"bbox": {k: [self.covering_names[c], k] for k in _BBOX_FIELDS}}
            columns_meta[c] = meta
        geo = {"version": GEOPARQUET_VERSION, "primary_column": primary, "columns": columns_meta}
        # The whole frame's fields and metadata (pandas' index and dtypes, geo, the caller's keys): a file
        # written a slice at a time holds them; each slice's table is made to fit them (rows).
        whole = pa.Schema.from_pandas(df, preserve_index=index)
        kv = dict(whole.metadata or {})
        kv[b"geo"] = json.dumps(geo).encode()
        for k, v in extra.items():
            kv[str(k).encode()] = _encode_value(v)
        for c, name in self.covering_names.items():
            i = whole.get_field_index(c)
            whole = whole.set(i, pa.field(c, pa.binary())).insert(i + 1, pa.field(name, _COVERING_TYPE))
        self.fields = whole.remove_metadata()
        self.schema = whole.with_metadata(kv)

    def rows(self, start: int, stop: int) -> pa.Table:
        """Rows ``start:stop`` as Arrow, with the fields of :attr:`schema` (not its metadata)."""
        table = pa.Table.from_pandas(self.df.iloc[start:stop], preserve_index=self.index)
        for c in self.points:
            xy = self.boxes[c][0][start:stop]
            table = table.set_column(table.schema.get_field_index(c), c, _point_wkb(xy))
        for c, name in self.covering_names.items():
            lo, hi = self.boxes[c]
            lo_rows = lo[start:stop]
            covering = _covering(lo_rows, lo_rows if hi is lo else hi[start:stop])
            table = table.add_column(table.schema.get_field_index(c) + 1, name, covering)
        table = table.replace_schema_metadata(None)
        # a column with no value in these rows comes out of pandas typed null: give it the frame's type
        return table if table.schema.equals(self.fields) else table.cast(self.fields)


# -- writing -------------------------------------------------------------------------------------


def _write_parquet(conv: _Conversion, where: str | IO[bytes], row_group_size: int, compression: str) -> None:
    """Write the frame a slice of :data:`WRITE_SLICE_ROWS` (whole row groups) at a time: the row groups and
    metadata of one table, without the whole frame held as Arrow beside itself."""
    schema = conv.schema
    # Dictionary encoding only where values repeat (strings, categoricals): trying it on floats and WKB
    # costs as much as the rest of the write and pyarrow gives up on them anyway.
    dictionary = [f.name for f in schema if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)
                  or pa.types.is_large_string(f.type)]
    n = len(conv.df)
    step = max(1, WRITE_SLICE_ROWS // row_group_size) * row_group_size
    with pq.ParquetWriter(where, schema, compression=compression, write_statistics=True, version="2.6",
                          use_dictionary=dictionary, use_byte_stream_split=_float_columns(schema)) as writer:
        for start in range(0, max(n, 1), step):  # no rows: one empty table, as pq.write_table writes
            writer.write_table(conv.rows(start, min(n, start + step)), row_group_size=row_group_size)


def _float_columns(schema: pa.Schema) -> list[str]:
    """The floating-point columns of ``schema`` as Parquet column paths (``bbox.xmin`` for the covering's),
    written BYTE_STREAM_SPLIT: the values' bytes grouped by position, so the slowly changing leading bytes
    of coordinates along a track compress (a book-scale chunk index subset: 14.9 MB -> 11.2 MB, written and
    read faster)."""
    out = []
    for f in schema:
        if pa.types.is_floating(f.type):
            out.append(f.name)
        elif pa.types.is_struct(f.type):
            out += [f"{f.name}.{c.name}" for c in f.type if pa.types.is_floating(c.type)]
    return out


def _validate_written(path: str, schema: pa.Schema, label: str) -> None:
    """Check a file this module just wrote (``schema``: its :class:`_Conversion`'s): its metadata as read
    back from the file, and the coordinate ranges of the data (the covering boxes and the bboxes were
    derived from the geometries themselves, so decoding every row again would check them against themselves)."""
    validate_geoparquet(path, check_data=False, label=label)
    geo = json.loads(schema.metadata[b"geo"])
    problems = []
    for name, meta in geo["columns"].items():
        if "bbox" in meta:
            xmin, ymin, xmax, ymax = meta["bbox"]
            problems += _range_problems(f"column {name!r}", _column_crs(meta), (xmin, ymin), (xmax, ymax))
    if problems:
        raise GeoParquetError(f"{label} is not valid GeoParquet: " + "; ".join(problems))


def write_geoparquet(
    gdf: Any,
    path: str | os.PathLike[str],
    *,
    credentials: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    index: bool | None = None,
    row_group_size: int = DEFAULT_ROW_GROUP_ROWS,
    compression: str = "zstd",
) -> str:
    """Write ``gdf`` as GeoParquet 1.1 (bbox covering column) to a local path or ``s3://`` URL, atomically.

    Returns the path or URL written. Raises :class:`OutputPathError` naming the path when it cannot be
    written, :class:`~is2cloud.credentials.CredentialsError` when an S3 URL comes without credentials.
    """
    if row_group_size < 1:
        raise ValueError(f"row_group_size must be positive, not {row_group_size}")
    if _is_s3(path):
        refuse_archive_bucket(path, "GeoParquet")
    conv = _Conversion(gdf, metadata=metadata, index=index)
    if _is_s3(path):
        url = str(path)
        bucket, key = _split_s3(url)
        fs = _s3fs(credentials, storage_options, url)
        with tempfile.TemporaryDirectory(prefix="is2cloud-gpq-") as tmp:
            local = Path(tmp) / "part.parquet"
            _write_parquet(conv, str(local), row_group_size, compression)
            _validate_written(str(local), conv.schema, url)
            del conv  # the file holds it now: not in memory under the upload's buffers
            pa.default_memory_pool().release_unused()
            _upload_atomic(fs, local, bucket, key, url)
        return url
    return str(_write_local_atomic(conv, _local_path(path), row_group_size, compression))


def umask() -> int:
    """The process umask, read from /proc where it can be (``os.umask`` can only read it by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_as_new(fd: int) -> None:
    """Give a file made by ``tempfile.mkstemp`` (always 0600) the mode a new file gets under the umask."""
    os.fchmod(fd, 0o666 & ~umask())


def _write_local_atomic(conv: _Conversion, final: Path, row_group_size: int, compression: str) -> Path:
    final = final.expanduser().absolute()
    if final.is_dir():
        raise OutputPathError(f"cannot write {str(final)!r}: it is a directory")
    ancestor = final.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"cannot write {str(final)!r}: {ancestor} is a file, not a directory")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise OutputPathError(f"cannot write {str(final)!r}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        chmod_as_new(fd)
        with os.fdopen(fd, "wb") as fh:
            _write_parquet(conv, fh, row_group_size, compression)
            fh.flush()
            os.fsync(fh.fileno())
        _validate_written(str(tmp), conv.schema, str(final))
        os.replace(tmp, final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputPathError):
            raise OutputPathError(f"cannot write {str(final)!r}: {exc.strerror or exc}") from None
        raise
    return final


def _upload_atomic(fs: Any, local: Path, bucket: str, key: str, url: str, *,
                   content_type: str = "application/vnd.apache.parquet",
                   metadata: Mapping[str, str] | None = None) -> None:
    """One PUT, or one multipart upload aborted on failure: the key never holds a partial object.
    ``metadata`` becomes the object's user metadata (``x-amz-meta-*``)."""
    size = local.stat().st_size
    extra: dict[str, Any] = {"ContentType": content_type, **({"Metadata": dict(metadata)} if metadata else {})}
    try:
        if size <= SINGLE_PUT_MAX_BYTES:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=local.read_bytes(), **extra)
        else:
            _multipart_upload(fs, local, bucket, key, extra)
    except (CredentialsError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise OutputPathError(f"cannot write {url}: {_describe_os_error(exc)}") from None
    fs.invalidate_cache(f"{bucket}/{key}")


def _multipart_upload(fs: Any, local: Path, bucket: str, key: str, extra: Mapping[str, Any]) -> None:
    """Parts of ``PART_BYTES`` uploaded ``PART_CONCURRENCY`` at a time on s3fs's event loop; ``extra``
    (content type, metadata) goes to ``CreateMultipartUpload``."""
    import fsspec.asyn

    mpu = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key, **extra)
    upload_id = mpu["UploadId"]
    nparts = max(1, -(-local.stat().st_size // PART_BYTES))

    async def upload_parts() -> list[dict[str, Any]]:
        sem = asyncio.Semaphore(PART_CONCURRENCY)

        async def part(number: int) -> dict[str, Any]:
            async with sem:
                with open(local, "rb") as fh:
                    fh.seek((number - 1) * PART_BYTES)
                    chunk = fh.read(PART_BYTES)
                out = await fs._call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload_id,
                                        PartNumber=number, Body=chunk)
                return {"PartNumber": number, "ETag": out["ETag"]}

        try:
            async with asyncio.TaskGroup() as group:  # one part failing cancels the others
                tasks = [group.create_task(part(n)) for n in range(1, nparts + 1)]
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None  # the first failure, as a sequential upload would report it
        return [t.result() for t in tasks]

    try:
        parts = fsspec.asyn.sync(fs.loop, upload_parts)
        fs.call_s3("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                   MultipartUpload={"Parts": parts})
    except BaseException:
        try:
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # the original failure is the one to report
            pass
        raise


# -- validation ----------------------------------------------------------------------------------


def _open_parquet(source: Any, credentials: Any, storage_options: Mapping[str, Any] | None) -> pq.ParquetFile:
    if isinstance(source, pq.ParquetFile):
        return source
    if isinstance(source, (bytes, bytearray, memoryview, pa.Buffer)):
        return pq.ParquetFile(pa.BufferReader(source))
    if _is_s3(source):
        fs = _s3fs(credentials, storage_options, str(source))
        bucket, key = _split_s3(str(source))
        try:
            fh = fs.open(f"{bucket}/{key}", "rb", cache_type="readahead", block_size=8 * 2**20)
        except FileNotFoundError:
            raise FileNotFoundError(f"no object at {source}") from None
        return pq.ParquetFile(fh)
    if isinstance(source, (str, os.PathLike)):
        p = _local_path(source)
        if not p.exists():
            raise FileNotFoundError(f"no file at {str(p)!r}")
        return pq.ParquetFile(str(p))
    if hasattr(source, "read"):
        return pq.ParquetFile(source)
    raise TypeError(f"cannot read GeoParquet from {type(source).__name__}")


def _decode_extra(kv: Mapping[bytes, bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in kv.items():
        key = k.decode(errors="replace")
        if key in RESERVED_KEYS:
            continue
        text = v.decode(errors="replace")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def _check_metadata(schema: pa.Schema) -> tuple[dict[str, Any], list[str]]:
    """The ``geo`` metadata and the list of problems with it (empty when valid)."""
    kv = schema.metadata or {}
    if b"geo" not in kv:
        return {}, ["no 'geo' key in the Parquet key-value metadata"]
    try:
        geo = json.loads(kv[b"geo"])
    except ValueError as exc:
        return {}, [f"the 'geo' metadata is not JSON ({exc})"]
    if not isinstance(geo, dict):
        return {}, ["the 'geo' metadata is not a JSON object"]
    problems: list[str] = []
    version = geo.get("version")
    m = _VERSION_RE.match(version) if isinstance(version, str) else None
    if m is None:
        problems.append(f"'version' must be a 1.x.y version string, got {version!r}")
    columns = geo.get("columns")
    primary = geo.get("primary_column")
    if not isinstance(columns, dict) or not columns:
        problems.append("'columns' must be a non-empty object")
        return geo, problems
    if not isinstance(primary, str) or primary not in columns:
        problems.append(f"'primary_column' {primary!r} is not one of the described columns {sorted(columns)}")
    names = set(schema.names)
    for name, meta in columns.items():
        where = f"column {name!r}"
        if not isinstance(meta, dict):
            problems.append(f"{where}: metadata is not an object")
            continue
        if name not in names:
            problems.append(f"{where} is described in 'geo' but is not in the table")
        else:
            t = schema.field(name).type
            if not (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)):
                problems.append(f"{where}: WKB must be stored as binary, found {t}")
        enc = meta.get("encoding")
        if enc != "WKB":
            problems.append(f"{where}: encoding {enc!r} is not supported (this project writes and reads 'WKB')")
        types = meta.get("geometry_types")
        if not isinstance(types, list):
            problems.append(f"{where}: 'geometry_types' must be a list")
        else:
            bad = [t for t in types if not isinstance(t, str) or t.removesuffix(" Z") not in GEOMETRY_TYPES]
            if bad:
                problems.append(f"{where}: unknown geometry types {bad}")
            if len(set(types)) != len(types):
                problems.append(f"{where}: 'geometry_types' has duplicates")
        if "crs" in meta and meta["crs"] is not None:
            crs = meta["crs"]
            if not isinstance(crs, dict):
                problems.append(f"{where}: 'crs' must be a PROJJSON object or null, got {type(crs).__name__}")
            else:
                try:
                    _parse_crs(crs)
                except Exception as exc:
                    problems.append(f"{where}: 'crs' is not valid PROJJSON ({exc})")
        if meta.get("edges", "planar") not in ("planar", "spherical"):
            problems.append(f"{where}: 'edges' must be 'planar' or 'spherical'")
        if meta.get("orientation", "counterclockwise") != "counterclockwise":
            problems.append(f"{where}: 'orientation' must be 'counterclockwise'")
        if "epoch" in meta and not isinstance(meta["epoch"], (int, float)):
            problems.append(f"{where}: 'epoch' must be a number")
        if "bbox" in meta:
            bbox = meta["bbox"]
            if not (isinstance(bbox, list) and len(bbox) in (4, 6) and all(isinstance(v, (int, float)) for v in bbox)):
                problems.append(f"{where}: 'bbox' must be a list of 4 or 6 numbers, got {bbox!r}")
            else:
                half = len(bbox) // 2
                if any(bbox[i] > bbox[i + half] for i in range(1, half)):
                    problems.append(f"{where}: 'bbox' {bbox} has a minimum above its maximum")
        if "covering" in meta:
            if m is not None and int(m.group(1)) < 1:
                problems.append(f"{where}: 'covering' needs GeoParquet >= 1.1.0 (version is {version})")
            problems.extend(_check_covering(schema, name, meta["covering"]))
    return geo, problems


def _check_covering(schema: pa.Schema, name: str, covering: Any) -> list[str]:
    where = f"column {name!r} covering"
    if not isinstance(covering, dict) or not isinstance(covering.get("bbox"), dict):
        return [f"{where}: must be an object with a 'bbox' object"]
    bbox = covering["bbox"]
    problems: list[str] = []
    if set(bbox) - set(_BBOX_FIELDS) - {"zmin", "zmax"} or not set(_BBOX_FIELDS) <= set(bbox):
        return [f"{where}: 'bbox' must have exactly xmin, ymin, xmax, ymax (and optionally zmin, zmax), got {sorted(bbox)}"]
    paths = [bbox[k] for k in _BBOX_FIELDS]
    if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in paths):
        return [f"{where}: each bbox entry must be [column, field]"]
    struct_names = {p[0] for p in paths}
    if len(struct_names) != 1:
        return [f"{where}: xmin/ymin/xmax/ymax must be fields of one struct column, got {sorted(struct_names)}"]
    col = struct_names.pop()
    if col not in schema.names:
        return [f"{where}: covering column {col!r} is not in the table"]
    t = schema.field(col).type
    if not pa.types.is_struct(t):
        return [f"{where}: covering column {col!r} must be a struct, found {t}"]
    for k, (_, fld) in zip(_BBOX_FIELDS, paths):
        idx = t.get_field_index(fld)
        if idx < 0:
            problems.append(f"{where}: struct {col!r} has no field {fld!r} for {k}")
        elif not (pa.types.is_float32(t.field(idx).type) or pa.types.is_float64(t.field(idx).type)):
            problems.append(f"{where}: {col}.{fld} must be float or double, found {t.field(idx).type}")
    return problems


def _parse_crs(crs_json: dict[str, Any] | None):
    from pyproj import CRS

    return CRS.from_json_dict(crs_json)


def _column_crs(meta: Mapping[str, Any]):
    """The column's CRS as pyproj.CRS: absent means OGC:CRS84, null means unknown (None)."""
    from pyproj import CRS

    if "crs" not in meta:
        return CRS.from_user_input("OGC:CRS84")
    return None if meta["crs"] is None else _parse_crs(meta["crs"])


def _same_crs(a: Any, b: Any) -> bool:
    from pyproj import CRS

    if a is None or b is None:
        return a is None and b is None
    a, b = CRS.from_user_input(a), CRS.from_user_input(b)
    # GeoParquet coordinates are always x=lon, y=lat: EPSG:4326 and OGC:CRS84 describe the same data.
    return a.equals(b, ignore_axis_order=True)


def _iter_batches(source: pa.Table | pq.ParquetFile, columns: list[str]) -> Iterator[pa.RecordBatch]:
    if isinstance(source, pa.Table):
        yield from source.select(columns).to_batches()
    else:
        yield from source.iter_batches(columns=columns, batch_size=DEFAULT_ROW_GROUP_ROWS)


def _check_data(source: pa.Table | pq.ParquetFile, geo: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for name, meta in geo["columns"].items():
        cov = meta.get("covering", {}).get("bbox") if isinstance(meta.get("covering"), dict) else None
        cov_col = cov["xmin"][0] if cov else None
        cov_fields = [cov[k][1] for k in _BBOX_FIELDS] if cov else []
        crs = _column_crs(meta)
        declared = set(meta.get("geometry_types") or [])
        seen: set[str] = set()
        lo = np.array([np.inf, np.inf])
        hi = np.array([-np.inf, -np.inf])
        n_bad_box = 0
        n_undecodable = 0
        first_bad: int | None = None
        offset = 0
        cols = [name] + ([cov_col] if cov_col else [])
        for batch in _iter_batches(source, cols):
            wkb = batch.column(0).to_numpy(zero_copy_only=False)
            try:
                geoms = shapely.from_wkb(wkb)
            except shapely.errors.GEOSException:
                geoms = shapely.from_wkb(wkb, on_invalid="ignore")
                n_undecodable += int(np.sum(shapely.is_missing(geoms) & (batch.column(0).is_valid().to_numpy(zero_copy_only=False))))
            seen.update(_type_names(geoms))
            b = _bounds(geoms)
            ok = ~np.isnan(b[:, 0])
            if ok.any():
                lo = np.minimum(lo, b[ok, :2].min(axis=0))
                hi = np.maximum(hi, b[ok, 2:].max(axis=0))
            if cov_col:
                struct = batch.column(1)
                vals = np.column_stack([
                    pc.struct_field(struct, f).to_numpy(zero_copy_only=False).astype("f8") for f in cov_fields])
                if struct.null_count:
                    vals[~struct.is_valid().to_numpy(zero_copy_only=False)] = np.nan
                f32 = pa.types.is_float32(struct.type.field(cov_fields[0]).type)
                bad = _box_mismatch(vals, b, f32)
                if bad.any():
                    n_bad_box += int(bad.sum())
                    if first_bad is None:
                        first_bad = offset + int(np.argmax(bad))
            offset += batch.num_rows
        where = f"column {name!r}"
        if n_undecodable:
            problems.append(f"{where}: {n_undecodable} values are not valid WKB")
        if declared and not seen <= declared:
            problems.append(f"{where}: holds {sorted(seen - declared)} geometries but 'geometry_types' says {sorted(declared)}")
        if n_bad_box:
            problems.append(f"{where}: covering column {cov_col!r} does not match the geometry bounds in "
                            f"{n_bad_box} rows (first at row {first_bad})")
        if np.isfinite(lo).all():
            problems += _range_problems(where, crs, lo, hi)
            bbox = meta.get("bbox")
            if isinstance(bbox, list) and len(bbox) in (4, 6):
                half = len(bbox) // 2
                xmin, ymin, xmax, ymax = bbox[0], bbox[1], bbox[half], bbox[half + 1]
                y_ok = ymin <= lo[1] and hi[1] <= ymax
                x_ok = (xmin <= lo[0] and hi[0] <= xmax) if xmin <= xmax else True  # xmin > xmax: wraps the antimeridian
                if not (x_ok and y_ok):
                    problems.append(f"{where}: geometries extend beyond the declared bbox {bbox} "
                                    f"(data spans {lo[0]:.6g}, {lo[1]:.6g}, {hi[0]:.6g}, {hi[1]:.6g})")
    return problems


def _range_problems(where: str, crs: Any, lo: Any, hi: Any) -> list[str]:
    """Coordinates (x, y) from ``lo`` to ``hi`` outside a geographic CRS's range (lon/lat swapped?)."""
    if crs is not None and crs.is_geographic and (lo[0] < -180 or hi[0] > 180 or lo[1] < -90 or hi[1] > 90):
        hint = " (are longitude and latitude swapped?)" if lo[0] >= -90 and hi[0] <= 90 else ""
        return [f"{where}: coordinates x {lo[0]:.6g}..{hi[0]:.6g}, y {lo[1]:.6g}..{hi[1]:.6g} "
                f"are outside the range of the geographic CRS{hint}"]
    return []


def _box_mismatch(vals: np.ndarray, bounds: np.ndarray, float32: bool) -> np.ndarray:
    """Rows whose covering box is not the geometry's bounds.

    Double boxes must equal the bounds exactly; float32 boxes must enclose them and be within two
    float32 steps of them (writers round outwards). Rows without a geometry are not checked.
    """
    missing_geom = np.isnan(bounds[:, 0])
    missing_box = np.isnan(vals).any(axis=1)
    with np.errstate(invalid="ignore"):
        if float32:
            covers = (vals[:, :2] <= bounds[:, :2]).all(axis=1) & (vals[:, 2:] >= bounds[:, 2:]).all(axis=1)
            step = np.spacing(np.abs(bounds).astype("f4")).astype("f8")
            tight = (np.abs(vals - bounds) <= 2 * step).all(axis=1)
            ok = covers & tight
        else:
            ok = (vals == bounds).all(axis=1)
    return ~missing_geom & (missing_box | ~ok)


def validate_geoparquet(
    source: Any,
    *,
    credentials: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    check_data: bool = True,
    require_covering: bool = False,
    expected_crs: Any = None,
    label: str | None = None,
) -> GeoParquetInfo:
    """Check that ``source`` is valid GeoParquet 1.1 and return what it holds.

    ``source``: a local path, an ``s3://`` URL (with credentials), a ``pyarrow.Table``, a
    ``pyarrow.parquet.ParquetFile``, bytes, or a binary file object. Checks the ``geo`` metadata
    (version, primary_column, WKB encoding, geometry_types, crs as PROJJSON or absent = OGC:CRS84,
    edges, orientation, bbox, covering) and, with ``check_data``, the data against it: WKB decodes,
    geometry types are the declared ones, coordinates fit a geographic CRS, the column ``bbox``
    encloses the data, and the covering column equals each geometry's bounds.
    ``expected_crs`` (anything pyproj accepts) must equal the primary column's CRS (axis order ignored).
    Raises :class:`GeoParquetError` listing every problem, prefixed with ``label`` or the source.
    """
    name = label or (str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__)
    if isinstance(source, pa.Table):
        data: pa.Table | pq.ParquetFile = source
        schema = source.schema
        num_rows, num_row_groups = source.num_rows, None
    else:
        data = _open_parquet(source, credentials, storage_options)
        schema = data.schema_arrow
        num_rows, num_row_groups = data.metadata.num_rows, data.metadata.num_row_groups
    geo, problems = _check_metadata(schema)
    if not problems:
        for col, meta in geo["columns"].items():
            if require_covering and "covering" not in meta:
                problems.append(f"column {col!r} has no bbox covering column")
        if expected_crs is not None:
            crs = _column_crs(geo["columns"][geo["primary_column"]])
            if not _same_crs(crs, expected_crs):
                got = "unknown (null)" if crs is None else crs.to_string()
                problems.append(f"the CRS is {got}, expected {expected_crs}")
    if not problems and check_data:
        problems.extend(_check_data(data, geo))
    if problems:
        raise GeoParquetError(f"{name} is not valid GeoParquet: " + "; ".join(problems))
    columns = {}
    for col, meta in geo["columns"].items():
        cov = meta.get("covering", {}).get("bbox", {}).get("xmin", [None])[0] if "covering" in meta else None
        columns[col] = GeoColumnInfo(name=col, encoding=meta["encoding"], geometry_types=tuple(meta["geometry_types"]),
                                     crs=_column_crs(meta), bbox=tuple(meta["bbox"]) if "bbox" in meta else None,
                                     covering=cov, edges=meta.get("edges", "planar"))
    return GeoParquetInfo(version=geo["version"], primary_column=geo["primary_column"], columns=columns,
                          num_rows=num_rows, num_row_groups=num_row_groups,
                          metadata=_decode_extra(schema.metadata or {}))


# -- reading -------------------------------------------------------------------------------------


def _meets(xmin: Any, ymin: Any, xmax: Any, ymax: Any, bbox: tuple[float, float, float, float]) -> Any:
    """Do boxes meet ``bbox`` = (west, south, east, north)? west > east wraps the antimeridian."""
    w, s, e, n = map(float, bbox)
    lat = (ymin <= n) & (ymax >= s)
    if w <= e:
        return lat & (xmin <= e) & (xmax >= w)
    return lat & ((xmax >= w) | (xmin <= e))


def boxes_meet(xmin: Any, ymin: Any, xmax: Any, ymax: Any, boxes: Sequence[tuple[float, float, float, float]]
               ) -> np.ndarray:
    """Do boxes (arrays or scalars) meet one of ``boxes`` (west, south, east, north; west > east wraps)?"""
    keep = np.zeros(np.shape(xmin), dtype=bool)
    for b in boxes:
        keep |= _meets(np.asarray(xmin), np.asarray(ymin), np.asarray(xmax), np.asarray(ymax), b)
    return keep


def _bbox_mask(struct: Any, bbox: tuple[float, float, float, float]) -> pa.Array:
    arr = struct.combine_chunks() if isinstance(struct, pa.ChunkedArray) else struct
    v = {k: pc.struct_field(arr, k).to_numpy(zero_copy_only=False).astype("f8") for k in _BBOX_FIELDS}
    with np.errstate(invalid="ignore"):
        keep = _meets(v["xmin"], v["ymin"], v["xmax"], v["ymax"], bbox)
    return pa.array(np.asarray(keep, dtype=bool))


def row_groups_meeting(pf: pq.ParquetFile, covering: str, boxes: Sequence[tuple[float, float, float, float]]
                       ) -> list[int]:
    """Row groups whose covering-column statistics meet one of ``boxes`` (west, south, east, north; west >
    east wraps the antimeridian); row groups without statistics are kept."""
    md = pf.metadata
    paths = {f"{covering}.{k}": k for k in _BBOX_FIELDS}
    keep = []
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        lo: dict[str, float] = {}
        hi: dict[str, float] = {}
        for j in range(rg.num_columns):
            col = rg.column(j)
            k = paths.get(col.path_in_schema)
            if k and col.statistics is not None and col.statistics.has_min_max:
                lo[k], hi[k] = col.statistics.min, col.statistics.max
        if len(lo) < 4 or boxes_meet(lo["xmin"], lo["ymin"], hi["xmax"], hi["ymax"], boxes):
            keep.append(i)
    return keep


def read_geoparquet(
    path: Any,
    *,
    credentials: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    columns: Iterable[str] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    validate: bool = True,
    keep_covering: bool = False,
):  # -> geopandas.GeoDataFrame
    """Read GeoParquet (local path, ``s3://`` URL, table, bytes or file object) into a GeoDataFrame.

    ``columns`` selects columns (the geometry and index columns come along). ``bbox``
    (west, south, east, north) keeps rows whose covering box meets it, skipping row groups by the
    covering column's statistics. With ``validate`` the file is checked first (see
    :func:`validate_geoparquet`). Extra key-value metadata lands in ``gdf.attrs``.
    """
    import geopandas as gpd

    label = str(path) if isinstance(path, (str, os.PathLike)) else None
    pf = path if isinstance(path, pa.Table) else _open_parquet(path, credentials, storage_options)
    schema = pf.schema if isinstance(pf, pa.Table) else pf.schema_arrow
    geo, problems = _check_metadata(schema)
    if problems:
        raise GeoParquetError(f"{label or 'input'} is not valid GeoParquet: " + "; ".join(problems))
    geo_cols = list(geo["columns"])
    covering = {c: m["covering"]["bbox"]["xmin"][0] for c, m in geo["columns"].items() if "covering" in m}
    wanted: list[str] | None = None
    if columns is not None:
        wanted = list(dict.fromkeys([*columns, geo["primary_column"]]))
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise KeyError(f"{label or 'input'} has no columns {missing}; it has {schema.names}")
        wanted += [cov for c, cov in covering.items() if c in wanted and cov not in wanted]
        pandas_meta = json.loads((schema.metadata or {}).get(b"pandas", b"{}"))
        wanted += [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str) and c not in wanted]
    prim_cov = covering.get(geo["primary_column"])
    if bbox is not None and prim_cov is None:
        raise GeoParquetError(f"{label or 'input'} has no covering column: cannot filter by bbox")
    if isinstance(pf, pa.Table):
        table = pf if wanted is None else pf.select(wanted)
    elif bbox is not None:
        groups = row_groups_meeting(pf, prim_cov, [bbox])
        table = pf.read_row_groups(groups, columns=wanted, use_pandas_metadata=True)
    else:
        table = pf.read(columns=wanted, use_pandas_metadata=True)
    if bbox is not None:
        table = table.filter(_bbox_mask(table.column(prim_cov), bbox))
    if validate:
        validate_geoparquet(table, label=label)
    df = table.to_pandas()
    for c in geo_cols:
        if c not in df.columns:
            continue
        crs = _column_crs(geo["columns"][c])
        df[c] = gpd.GeoSeries.from_wkb(df[c].to_numpy(dtype=object), index=df.index, crs=crs)
    if not keep_covering:
        df = df.drop(columns=[cov for cov in covering.values() if cov in df.columns])
    gdf = gpd.GeoDataFrame(df, geometry=geo["primary_column"])
    gdf.attrs.update(_decode_extra(schema.metadata or {}))
    return gdf


def read_metadata(source: Any, *, credentials: Any = None, storage_options: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The extra key-value metadata of a GeoParquet file (JSON values decoded), without reading data."""
    pf = _open_parquet(source, credentials, storage_options)
    return _decode_extra(pf.schema_arrow.metadata or {})
