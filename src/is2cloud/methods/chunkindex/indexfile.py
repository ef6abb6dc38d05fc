"""The index as a file: :class:`ChunkIndex`, its rows in a stable layout, its metadata (format,
product, extents, largest margin), and reading it (whole, or opened for a query) from a local path or
``s3://`` URL."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

from is2cloud.methods.chunkindex.errors import ChunkIndexError, WrongProductError
from is2cloud.methods.chunkindex.footprints import (
    H3_ALLOWANCE_M,
    H3_RESOLUTION,
    H3_SORT_RESOLUTION,
    TOLERANCE_DEG,
)
from is2cloud.methods.chunkindex.products import COORDINATES, GROUPS
from is2cloud.methods.ranges import ObjectMissingError, head_object, split_url

FORMAT = "is2cloud-chunk-index/1"
META_KEY = "is2cloud_chunk_index"


def default_index_url(product: str = "ATL06", version: str = "006", bucket: str | None = None) -> str:
    """Where the book keeps the chunk index of a collection: ``s3://<output bucket>/chunk-index/<P>_<V>.parquet``."""
    from is2cloud.settings import get_settings

    bucket = bucket or get_settings().output_bucket
    if not bucket:
        raise ChunkIndexError("no output bucket is configured (IS2CLOUD_OUTPUT_BUCKET) for the chunk index")
    return f"s3://{bucket}/chunk-index/{product.upper()}_{version}.parquet"


@dataclass
class ChunkIndex:
    """A chunk index: its rows (a GeoDataFrame, geometry ``footprint``), what it indexes, where it lives.

    ``meta``: format, product, group, variables, H3 resolution, tolerance, extent and granule count.
    ``stats`` (after :func:`build`): granules added, unchanged, replaced; bytes and GETs read from the
    granules; build seconds; the size of the written file (``nbytes``).
    """

    frame: Any
    meta: dict[str, Any]
    location: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    method = "chunkindex"  # the method protocol's handle (is2cloud.methods.protocol.Prepared)

    @property
    def nbytes(self) -> int:
        """Bytes of the index file (0 for an index in memory)."""
        return int(self.stats.get("nbytes") or 0)

    @property
    def product(self) -> str:
        return str(self.meta["product"])

    @property
    def granules(self) -> list[str]:
        return sorted(set(self.frame["granule"])) if len(self.frame) else []

    @property
    def variables(self) -> list[str]:
        return list(self.meta.get("variables", []))

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        where = self.location or "in memory"
        return (f"ChunkIndex({self.product} {self.meta.get('group')}, {len(self.granules)} granules, {len(self)} "
                f"windows, {len(self.variables)} variables, {where})")


def _var_columns(v: str) -> tuple[str, str, str, str]:
    return f"offset:{v}", f"nbytes:{v}", f"codec:{v}", f"inline:{v}"


def _normalize(frame: pd.DataFrame, variables: Sequence[str]) -> pd.DataFrame:
    """Stable dtypes and column order, whatever granules and beams the rows came from."""
    base = ["granule", "url", "size", "etag", "track_id", "window", "row_start", "row_stop", "time_start",
            "time_end", "rgt", "cycle", "epoch", "margin", "h3", "h3_cells"]
    out = pd.DataFrame({c: frame[c] for c in base}).reset_index(drop=True)
    for c, d in (("size", "i8"), ("window", "i4"), ("row_start", "i8"), ("row_stop", "i8"), ("rgt", "i4"),
                 ("cycle", "i4"), ("epoch", "f8"), ("margin", "f8"), ("h3", "u8")):
        out[c] = out[c].to_numpy().astype(d)
    for c in ("time_start", "time_end"):
        out[c] = pd.to_datetime(out[c], utc=True).astype("datetime64[ns, UTC]")
    for c in ("granule", "url", "etag", "track_id"):
        out[c] = out[c].astype(object)
    for v in variables:
        off, nb, codec, inline = _var_columns(v)
        n = len(out)
        out[off] = pd.array(frame[off] if off in frame else [None] * n, dtype="Int64")
        out[nb] = pd.array(frame[nb] if nb in frame else [None] * n, dtype="Int64")
        out[codec] = (frame[codec] if codec in frame else pd.Series([None] * n)).astype(object).to_numpy()
        if inline in frame and frame[inline].notna().any():
            out[inline] = frame[inline].astype(object).to_numpy()
    out["footprint"] = frame["footprint"].to_numpy()
    return out


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["h3", "granule", "track_id", "window"], kind="mergesort").reset_index(drop=True)


def _to_gdf(frame: pd.DataFrame):  # -> geopandas.GeoDataFrame
    import geopandas as gpd

    return gpd.GeoDataFrame(frame, geometry="footprint", crs="EPSG:4326")


def _extents(fp: np.ndarray) -> list[list[float]]:
    """Boxes covering the footprints: one for the pieces in the eastern hemisphere, one for the western.
    A footprint split at the antimeridian has bounds spanning every longitude; its pieces do not."""
    parts = shapely.get_parts(fp)
    if not len(parts):
        return []
    b = shapely.bounds(parts)
    east = (b[:, 0] + b[:, 2]) / 2 >= 0
    out = []
    for side in (east, ~east):
        if side.any():
            out.append([float(b[side, 0].min()), float(b[side, 1].min()), float(b[side, 2].max()),
                        float(b[side, 3].max())])
    return out


def _meta(product: str, variables: Sequence[str], frame: pd.DataFrame, previous: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    fp = np.asarray(frame["footprint"].values, dtype=object) if len(frame) else np.array([], dtype=object)
    bounds = shapely.total_bounds(fp).tolist() if len(fp) else None
    return {
        "format": FORMAT, "product": product, "group": GROUPS[product], "coordinates": list(COORDINATES[product]),
        "variables": list(variables), "h3_resolution": H3_RESOLUTION, "h3_sort_resolution": H3_SORT_RESOLUTION,
        "h3_allowance_m": H3_ALLOWANCE_M, "tolerance_deg": TOLERANCE_DEG, "extent": bounds,
        "extents": _extents(fp),
        "max_margin": float(frame["margin"].max()) if len(frame) else 0.0,
        "granules": int(frame["granule"].nunique()) if len(frame) else 0, "windows": int(len(frame)),
        "created": (previous or {}).get("created") or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _check_meta(meta: dict[str, Any], where: str, product: str | None = None) -> None:
    if meta.get("format") != FORMAT:
        raise ChunkIndexError(f"{where} is not a chunk index of this version (format {meta.get('format')!r}, "
                              f"expected {FORMAT!r}); rebuild it")
    if product and meta.get("product") != product:
        raise WrongProductError(f"{where} indexes {meta.get('product')} granules ({meta.get('group')}), not "
                                f"{product}: build an index for {product}")


def _parquet_file(location: str | os.PathLike[str], credentials: Any):  # -> pyarrow.parquet.ParquetFile
    import pyarrow.parquet as pq

    text = os.fspath(location)
    if text.startswith("s3://"):
        if credentials is None:
            from is2cloud.access import get_credentials

            credentials = get_credentials("write")
        bucket, key = split_url(text)
        fs = credentials.fresh().pyarrow_fs()
        try:
            handle = fs.open_input_file(f"{bucket}/{key}")
        except FileNotFoundError:
            raise ChunkIndexError(f"there is no chunk index at {text}") from None
        except OSError as exc:
            raise ChunkIndexError(f"cannot open the chunk index at {text}: {str(exc)[:200]}") from None
    else:
        if not Path(text).exists():
            raise ChunkIndexError(f"there is no chunk index at {text}")
        handle = text
    try:
        return pq.ParquetFile(handle, pre_buffer=True)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError: a thrift or magic-bytes error
        raise ChunkIndexError(f"{text} is not a readable chunk index (a Parquet file): {str(exc)[:200]}; "
                              "rebuild it with `is2cloud index build`") from None


def _file_meta(pf: Any, where: str) -> dict[str, Any]:
    kv = pf.schema_arrow.metadata or {}
    raw = kv.get(META_KEY.encode())
    if raw is None:
        raise ChunkIndexError(f"{where} is not a chunk index (no {META_KEY!r} metadata)")
    return json.loads(raw)


def read_index(location: Any, *, credentials: Any = None) -> ChunkIndex:
    """The whole index at ``location`` (local path or ``s3://`` URL) as a :class:`ChunkIndex`."""
    from is2cloud.geoparquet import read_geoparquet

    if isinstance(location, ChunkIndex):
        return location
    where = os.fspath(location)
    pf = _parquet_file(where, credentials)
    meta = _file_meta(pf, where)
    _check_meta(meta, where)
    gdf = read_geoparquet(pf.read(), validate=False)
    return ChunkIndex(gdf, meta, where)


def _open_index(index: Any, credentials: Any) -> tuple[dict[str, Any], Any, str]:
    """The metadata of an index and a handle to read it (the ChunkIndex itself, or a ParquetFile)."""
    if isinstance(index, ChunkIndex):
        where = index.location or "(in memory)"
        _check_meta(index.meta, where)
        return index.meta, index, where
    where = os.fspath(index)
    pf = _parquet_file(where, credentials)
    meta = _file_meta(pf, where)
    _check_meta(meta, where)
    return meta, pf, where


def _exists(location: str, credentials: Any) -> bool:
    if location.startswith("s3://"):
        bucket, key = split_url(location)
        try:
            head_object(credentials, bucket, key)
            return True
        except ObjectMissingError:
            return False
    return Path(location).exists()


def _object_size(location: str, credentials: Any) -> int:
    if location.startswith("s3://"):
        bucket, key = split_url(location)
        return head_object(credentials, bucket, key).size
    return Path(location).stat().st_size
