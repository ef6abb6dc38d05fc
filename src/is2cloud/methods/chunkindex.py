"""A spatial index of HDF5 chunks, kept beside the untouched granules, that makes a subset cost what
the AOI's chunks cost.

HDF5 knows where each chunk of a dataset is (its chunk index: a B-tree of byte offsets) but not where
on Earth the rows of a chunk are. So every method so far reads whole beams. This method writes that
missing piece once, as one GeoParquet file for the collection:

**Build** (:func:`build`). For every granule and beam, the *windows* of the indexed group are the row
ranges of its chunks (ATL06 ``gtx/land_ice_segments``: 10,000 segments, ~200 km of track; ATL03
``gtx/heights``: 10,000 photons). For each window one index row holds

* ``footprint``: the window's track as a (Multi)LineString in lon/lat, simplified, with ``margin`` =
  the largest distance of any of its points from that line (degrees), so ``dwithin(footprint, aoi,
  margin)`` never misses a window with a point in the AOI; tracks crossing the antimeridian are split
  into pieces with longitudes in [-180, 180]; the GeoParquet ``bbox`` covering column is its bounds;
* ``h3_cells``: the H3 cells (resolution :data:`H3_RESOLUTION`) that overlap the footprint widened by
  its margin; ``h3`` is the cell of the window's middle point and the sort key;
* ``time_start``/``time_end`` (UTC) and the per-granule values every row needs (``rgt``, ``cycle``,
  ``epoch`` = ``atlas_sdp_gps_epoch``), so a query never reads them from the granule;
* for each indexed variable ``v``: ``offset:v``/``nbytes:v`` (the stored chunk's byte range in the
  object, from ``h5py``'s ``dsid.chunk_iter``), ``codec:v`` (dtype, row shape, filters as written,
  fill value: JSON, see :class:`~is2cloud.methods.ranges.Codec`) and, for COMPACT data and chunks of at
  most ``inline_bytes``, ``inline:v`` (the stored bytes themselves);
* ``granule``, ``url``, ``size``, ``etag``: the object the row points into. A query compares these
  with every response (and with the catalog record, when granules are given): a stale index is an
  error, never wrong rows.

For ATL03 the footprint of a photon window comes from the 20 m ``geolocation`` segments whose photons
(``ph_index_beg``, ``segment_ph_cnt``) fall in the window: their reference photons, widened by
:data:`ATL03_SEGMENT_MARGIN_M` (a photon lies within a segment of its reference photon), so the
photon coordinates themselves are never read to build the index.

The granule is read through a block cache (:class:`~is2cloud.methods.ranges.BlockFile`); objects up
to ``eager_bytes`` are fetched whole, in concurrent blocks, because the metadata of a non-paged HDF5
file is scattered over most of it. Rows are sorted by ``h3`` so row groups hold nearby windows and
their ``bbox`` statistics prune well. Appending granules to an existing index re-reads only the new
ones (and re-indexes a granule whose object changed).

**Query** (:func:`subset`). Row groups whose ``bbox`` statistics miss the AOI are skipped, then rows
by ``bbox``, ``h3_cells`` and ``footprint``; the chunks of the requested variables in the surviving
windows become byte ranges, adjacent ones are coalesced, fetched concurrently with obstore (one GET
each, ETag and size checked), decoded with numcodecs and clipped with :meth:`is2cloud.aoi.AOI.contains`.
ATL06 gives the canonical schema (:mod:`is2cloud.methods.schema`), the same rows as the baseline.

>>> idx = build(find_granules(aoi, "ATL06"), "s3://is2cloud-scratch/chunk-index/ATL06_006.parquet")  # doctest: +SKIP
>>> gdf = subset(idx.location, aoi)                                                                  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pandas as pd
import shapely
import shapely.affinity
from shapely.geometry import LineString, MultiLineString, box

from is2cloud.aoi import AOI, load_aoi
from is2cloud.geoparquet import boxes_meet, row_groups_meeting
from is2cloud.methods.ranges import (
    BlockFile,
    Codec,
    ObjectChangedError,
    ObjectId,
    ObjectMissingError,
    RangeError,
    RangeRequest,
    check_objects,
    coalesce,
    fetch_ranges,
    head_object,
    split_url,
)
from is2cloud.methods.schema import ATL06_VARIABLES, TRACK_IDS, atlas_time, atlas_time_ns

__all__ = ["ATL03_VARIABLES", "DEFAULT_VARIABLES", "FORMAT", "GROUPS", "H3_RESOLUTION", "ChunkIndex",
           "ChunkIndexError", "OutsideIndexError", "QueryPlan", "StaleIndexError", "WrongProductError",
           "benchmark", "build", "default_index_url", "h3_cover", "index_granule", "plan", "read_index",
           "subset", "window_footprint"]

FORMAT = "is2cloud-chunk-index/1"
META_KEY = "is2cloud_chunk_index"
GROUPS: dict[str, str] = {"ATL06": "land_ice_segments", "ATL03": "heights"}
COORDINATES: dict[str, tuple[str, str]] = {"ATL06": ("longitude", "latitude"), "ATL03": ("lon_ph", "lat_ph")}
DEFAULT_VARIABLES: tuple[str, ...] = ATL06_VARIABLES
ATL03_VARIABLES: tuple[str, ...] = ("delta_time", "lat_ph", "lon_ph", "h_ph", "signal_conf_ph", "quality_ph")
EPOCH = "/ancillary_data/atlas_sdp_gps_epoch"
ORBIT = {"rgt": "/orbit_info/rgt", "cycle": "/orbit_info/cycle_number"}

H3_RESOLUTION = 5            # cells of ~250 km2 (edge ~10 km): a 200 km ATL06 window meets a few dozen
H3_SORT_RESOLUTION = 5
TOLERANCE_DEG = 1e-4         # Douglas-Peucker tolerance of footprints (~11 m of latitude)
MARGIN_EPS_DEG = 1e-9        # added to every margin: floating-point slack between build and query
H3_ALLOWANCE_M = 200.0       # H3 tests overlap with straight edges in lon/lat; widen both sides by this
ATL03_SEGMENT_MARGIN_M = 50.0  # photons of a 20 m segment lie within this of its reference photon
MAX_OVERFETCH = 0.1          # coalescing gaps may add at most this fraction of the chunk bytes to a query
INLINE_BYTES = 512           # chunks stored in at most this many bytes are copied into the index
ROW_GROUP_ROWS = 512
WINDOW_ROWS_CONTIGUOUS = 10_000  # window length when the coordinate dataset is not chunked
EAGER_BYTES = 512 * 2**20    # objects up to this size are fetched whole while building
BLOCK_BYTES = 8 * 2**20
_M_PER_DEG = 111_320.0
_MAX_MARGIN_DEFAULT = 0.01   # the bbox allowance for an index whose metadata lacks max_margin
_GRANULE_RE = re.compile(r"(ATL\d{2})_\d{14}_\d{8}_(\d{3})_\d{2}")


class ChunkIndexError(RuntimeError):
    """The chunk index cannot answer: the message names the granule, variable or index and the problem."""


class StaleIndexError(ChunkIndexError):
    """A granule object no longer matches the index (changed, missing, or not in the index)."""


class WrongProductError(ChunkIndexError):
    """The index was built for another product (or group) than the one asked for."""


class OutsideIndexError(ChunkIndexError):
    """The AOI lies outside everything the index covers."""


def default_index_url(product: str = "ATL06", version: str = "006", bucket: str | None = None) -> str:
    """Where the book keeps the chunk index of a collection: ``s3://<output bucket>/chunk-index/<P>_<V>.parquet``."""
    from is2cloud.settings import get_settings

    bucket = bucket or get_settings().output_bucket
    if not bucket:
        raise ChunkIndexError("no output bucket is configured (IS2CLOUD_OUTPUT_BUCKET) for the chunk index")
    return f"s3://{bucket}/chunk-index/{product.upper()}_{version}.parquet"


def _product_of(name: str) -> str | None:
    m = _GRANULE_RE.search(name)
    return m.group(1) if m else None


# -- geometry: footprints and H3 cells -------------------------------------------------------------------


def _pieces_across_antimeridian(lon: np.ndarray, lat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a track where consecutive longitudes jump by more than 180 degrees (it crossed +-180)."""
    ok = np.isfinite(lon) & np.isfinite(lat)
    lon, lat = lon[ok], lat[ok]
    if lon.size == 0:
        return []
    cuts = np.flatnonzero(np.abs(np.diff(lon)) > 180.0) + 1
    return [(x, y) for x, y in zip(np.split(lon, cuts), np.split(lat, cuts)) if x.size]


def _segment_distances(x: np.ndarray, y: np.ndarray, a: int, b: int) -> np.ndarray:
    """Planar distances of points ``a+1 .. b-1`` from the segment between points ``a`` and ``b``."""
    px, py = x[a + 1:b] - x[a], y[a + 1:b] - y[a]
    dx, dy = x[b] - x[a], y[b] - y[a]
    length2 = dx * dx + dy * dy
    if length2 == 0.0:
        return np.hypot(px, py)
    s = np.clip((px * dx + py * dy) / length2, 0.0, 1.0)
    return np.hypot(px - s * dx, py - s * dy)


def douglas_peucker(x: np.ndarray, y: np.ndarray, tolerance: float) -> tuple[np.ndarray, float]:
    """Indices of the vertices Douglas-Peucker keeps, and the largest distance of any point from its
    segment of the simplified line (<= ``tolerance``): every point lies within that of the line."""
    n = len(x)
    if n <= 2:
        return np.arange(n), 0.0
    keep = np.zeros(n, dtype=bool)
    keep[[0, n - 1]] = True
    worst = 0.0
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        d = _segment_distances(x, y, a, b)
        i = int(np.argmax(d))
        if d[i] > tolerance:
            keep[a + 1 + i] = True
            stack += [(a, a + 1 + i), (a + 1 + i, b)]
        else:
            worst = max(worst, float(d[i]))
    return np.flatnonzero(keep), worst


def window_footprint(lon: np.ndarray, lat: np.ndarray, tolerance: float = TOLERANCE_DEG
                     ) -> tuple[Any, float]:
    """The footprint of a window of points and its margin: a (Multi)LineString through the points,
    split at the antimeridian and simplified (Douglas-Peucker, ``tolerance`` degrees), and the largest
    distance (degrees, planar lon/lat like :meth:`AOI.contains`) from any point to it, plus a small
    epsilon. Every point of the window lies within ``margin`` of the footprint. None for no points."""
    lines: list[LineString] = []
    worst = 0.0
    for x, y in _pieces_across_antimeridian(np.asarray(lon, "f8"), np.asarray(lat, "f8")):
        idx, d = douglas_peucker(x, y, tolerance)
        if len(idx) == 1:
            idx = np.array([idx[0], idx[0]])
        lines.append(LineString(np.column_stack([x[idx], y[idx]])))
        worst = max(worst, d)
    if not lines:
        return None, 0.0
    geom = lines[0] if len(lines) == 1 else MultiLineString(lines)
    return geom, worst + MARGIN_EPS_DEG


def _deg(metres: float, max_abs_lat: float) -> float:
    """A planar lon/lat radius covering ``metres`` in every direction up to latitude ``max_abs_lat``."""
    c = max(math.cos(math.radians(min(abs(max_abs_lat), 89.0))), 1e-3)
    return metres / _M_PER_DEG / c


_SLABS = [box(w, -90.0, w + 90.0, 90.0) for w in (-180.0, -90.0, 0.0, 90.0)]


def _wrapped_parts(geom: Any) -> list[Any]:
    """Polygons of ``geom`` with longitudes in [-180, 180] (parts beyond +-180 shifted by 360 degrees),
    cut into 90-degree slabs so none is taken by H3 for a polygon that crosses the antimeridian."""
    out = []
    for offset, lo, hi in ((0.0, -180.0, 180.0), (-360.0, 180.0, 540.0), (360.0, -540.0, -180.0)):
        piece = shapely.intersection(geom, box(lo, -90.0, hi, 90.0))
        if piece.is_empty:
            continue
        if offset:
            piece = shapely.affinity.translate(piece, xoff=offset)
        for slab in _SLABS:
            part = shapely.intersection(piece, slab)
            for g in getattr(part, "geoms", [part]):
                if g.geom_type == "Polygon" and not g.is_empty and g.area > 0:
                    out.append(g)
    return out


def h3_cover(geom: Any, radius_deg: float, res: int = H3_RESOLUTION, *, max_cells: int = 200_000) -> set[int] | None:
    """H3 cells (as integers) overlapping ``geom`` (lon/lat) widened by ``radius_deg`` plus
    :data:`H3_ALLOWANCE_M`; None if that would be more than ``max_cells`` cells (then callers skip the
    H3 test, which is only an accelerator)."""
    import h3
    import shapely.affinity  # noqa: F401  (used by _wrapped_parts)

    if geom is None or geom.is_empty:
        return set()
    max_lat = max(abs(geom.bounds[1]), abs(geom.bounds[3]))
    radius = radius_deg + _deg(H3_ALLOWANCE_M, max_lat + radius_deg)
    area_km2 = shapely.area(shapely.buffer(shapely.envelope(geom), radius)) * (_M_PER_DEG / 1e3) ** 2
    if area_km2 / h3.average_hexagon_area(res, "km^2") > max_cells:
        return None
    cells: set[int] = set()
    widened = shapely.buffer(geom, radius, quad_segs=4)
    w, s, e, n = widened.bounds
    simple = -180.0 <= w and e <= 180.0 and e - w <= 90.0 and widened.geom_type == "Polygon"
    for poly in ([widened] if simple else _wrapped_parts(widened)):
        shape = h3.geo_to_h3shape(poly.__geo_interface__)
        cells.update(h3.str_to_int(c) for c in h3.h3shape_to_cells_experimental(shape, res, contain="overlap"))
    return cells


# -- reading one granule for the index -----------------------------------------------------------------


def _filters(ds: h5py.Dataset, where: str) -> tuple[tuple[Any, ...], ...]:
    plist = ds.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, name = plist.get_filter(i)
        if code == h5py.h5z.FILTER_DEFLATE:
            out.append(("deflate", int(values[0]) if len(values) else 6))
        elif code == h5py.h5z.FILTER_SHUFFLE:
            out.append(("shuffle", int(values[0]) if len(values) else ds.dtype.itemsize))
        elif code == h5py.h5z.FILTER_FLETCHER32:
            out.append(("fletcher32",))
        else:
            raise ChunkIndexError(f"{where} uses HDF5 filter {code} ({name.decode(errors='replace')}), which the "
                                  f"chunk index cannot decode (supported: {', '.join(Codec.SUPPORTED)})")
    return tuple(out)


def _codec(ds: h5py.Dataset, chunk_rows: int | None, filters: tuple[tuple[Any, ...], ...]) -> Codec:
    fill = np.array(ds.fillvalue, dtype=ds.dtype).tobytes().hex()
    return Codec(ds.dtype.str, tuple(int(n) for n in ds.shape[1:]), chunk_rows, filters, fill)


@dataclass
class _VarWindows:
    offset: np.ndarray
    nbytes: np.ndarray
    codec: list[str]
    inline: list[bytes | None]


def _var_windows(ds: h5py.Dataset, starts: np.ndarray, stops: np.ndarray, window_rows: int, *,
                 inline_bytes: int, where: str) -> _VarWindows:
    """Where each window's rows of ``ds`` are stored: one chunk, a slice of contiguous data, or inline."""
    if ds.dtype.kind not in "biuf":
        raise ChunkIndexError(f"{where} has type {ds.dtype}, not a number: it cannot be indexed")
    n = len(starts)
    offset = np.full(n, -1, dtype="i8")
    nbytes = np.zeros(n, dtype="i8")
    inline: list[bytes | None] = [None] * n
    dsid = ds.id
    layout = dsid.get_create_plist().get_layout()
    row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    if layout == h5py.h5d.CHUNKED:
        chunks = ds.chunks
        if chunks[0] != window_rows or tuple(chunks[1:]) != tuple(ds.shape[1:]):
            raise ChunkIndexError(f"{where} is chunked {chunks}, not in windows of {window_rows} whole rows like the "
                                  "coordinates: it cannot be indexed with them")
        base = _codec(ds, int(chunks[0]), _filters(ds, where))
        codecs = [base.to_json()] * n
        infos: list[Any] = []
        dsid.chunk_iter(infos.append)
        for info in infos:
            k = int(info.chunk_offset[0]) // window_rows
            if not 0 <= k < n:
                continue
            offset[k], nbytes[k] = int(info.byte_offset), int(info.size)
            if info.filter_mask:
                codecs[k] = base.without(int(info.filter_mask)).to_json()
            if info.size <= inline_bytes:
                _mask, data = dsid.read_direct_chunk(info.chunk_offset)
                inline[k] = bytes(data)
        return _VarWindows(offset, nbytes, codecs, inline)
    raw = Codec(ds.dtype.str, tuple(int(x) for x in ds.shape[1:]), None, (),
                np.array(ds.fillvalue, dtype=ds.dtype).tobytes().hex()).to_json()
    if layout == h5py.h5d.CONTIGUOUS:
        base_offset = dsid.get_offset()
        if base_offset is not None:
            offset[:] = base_offset + starts * row_bytes
            nbytes[:] = (stops - starts) * row_bytes
            for k in range(n):
                if nbytes[k] <= inline_bytes:
                    inline[k] = ds[int(starts[k]):int(stops[k])].tobytes()
        return _VarWindows(offset, nbytes, [raw] * n, inline)
    # COMPACT: the data sit in the object header; copy each window's rows into the index
    values = ds[()]
    for k in range(n):
        inline[k] = values[int(starts[k]):int(stops[k])].tobytes()
        nbytes[k] = len(inline[k] or b"")
    return _VarWindows(offset, nbytes, [raw] * n, inline)


def _select_variables(group: h5py.Group, nrows: int, variables: Any, required: Sequence[str],
                      where: str) -> list[str]:
    if variables is None or variables == "all":
        names: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.shape and obj.shape[0] == nrows and obj.dtype.kind in "biuf":
                names.append(name)

        if variables == "all":
            group.visititems(visit)
        else:
            for name, obj in group.items():
                visit(name, obj)
        chosen = list(dict.fromkeys([*required, *sorted(names)]))
    else:
        chosen = list(dict.fromkeys([*required, *(v.strip("/") for v in variables)]))
    for v in chosen:
        obj = group.get(v)
        if not isinstance(obj, h5py.Dataset):
            raise ChunkIndexError(f"{where}/{v} is missing: it cannot be indexed")
        if not obj.shape or obj.shape[0] != nrows:
            raise ChunkIndexError(f"{where}/{v} has shape {obj.shape}, not {nrows} rows like the coordinates")
    return chosen


def _scalar(h5: h5py.File, path: str, granule: str) -> Any:
    obj = h5.get(path)
    if not isinstance(obj, h5py.Dataset):
        raise ChunkIndexError(f"{granule}: {path} is missing")
    return obj[()].ravel()[0]


def _windows_of(ref: h5py.Dataset) -> tuple[int, np.ndarray, np.ndarray]:
    n = int(ref.shape[0])
    rows = int(ref.chunks[0]) if ref.chunks else WINDOW_ROWS_CONTIGUOUS
    starts = np.arange(0, n, rows, dtype="i8")
    return rows, starts, np.minimum(starts + rows, n)


def _atl03_points(h5: h5py.File, beam: str, starts: np.ndarray, stops: np.ndarray, granule: str
                  ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Per photon window: (lon, lat, delta_time, extra margin in metres) from the geolocation segments."""
    geo = h5.get(f"{beam}/geolocation")
    need = ("ph_index_beg", "segment_ph_cnt", "reference_photon_lat", "reference_photon_lon", "delta_time")
    if geo is None or any(n not in geo for n in need):
        raise ChunkIndexError(f"{granule}: {beam}/geolocation lacks {', '.join(need)}: cannot place photon windows")
    beg = geo["ph_index_beg"][()].astype("i8") - 1
    cnt = geo["segment_ph_cnt"][()].astype("i8")
    lat, lon, t = geo["reference_photon_lat"][()], geo["reference_photon_lon"][()], geo["delta_time"][()]
    has = (beg >= 0) & (cnt > 0)
    beg, end, lat, lon, t = beg[has], beg[has] + cnt[has], lat[has], lon[has], t[has]
    out = []
    for a, b in zip(starts, stops):
        lo = int(np.searchsorted(end, a, side="right"))  # first segment ending after a
        hi = int(np.searchsorted(beg, b, side="left"))    # segments starting before b
        sel = slice(lo, max(lo, hi))
        out.append((lon[sel], lat[sel], t[sel], ATL03_SEGMENT_MARGIN_M))
    return out


class _MemoryFile(io.BytesIO):
    """A local file's bytes as a file object with the ``pread`` of :class:`BlockFile`."""

    def pread(self, offset: int, n: int) -> memoryview:
        return self.getbuffer()[offset:offset + n]


def index_granule(source: Any, *, product: str | None = None, variables: Any = None, credentials: Any = None,
                  known: dict[str, tuple[int, str]] | None = None, inline_bytes: int = INLINE_BYTES,
                  block_size: int = BLOCK_BYTES, eager_bytes: int = EAGER_BYTES) -> dict[str, Any]:
    """Index one granule (the worker of :func:`build`): its windows, footprints, H3 cells and chunk ranges.

    ``source``: an ``earthaccess.DataGranule``, an ``s3://`` URL or a local path. ``known`` maps granule
    names to the (size, etag) already in an index: a granule whose object still matches is skipped
    (``{"unchanged": True}``) after one HEAD. Returns ``{"granule", "product", "rows": DataFrame,
    "variables", "gets", "bytes", "seconds"}``.
    """
    from is2cloud.methods.baseline import granule_source

    t0 = time.perf_counter()
    src = granule_source(source)
    name = src.name
    found = _product_of(name)
    if product and found and found != product:
        raise WrongProductError(f"{name} is an {found} granule, not {product}: an index holds one product")
    if src.url.startswith("s3://"):
        if credentials is None:
            raise ChunkIndexError(f"{name}: reading {src.url} needs S3 credentials")
        bucket, key = split_url(src.url)
        store = credentials.obstore(bucket)
        try:
            obj = head_object(credentials, bucket, key, store=store)
        except ObjectMissingError as exc:
            raise StaleIndexError(str(exc)) from None
        if src.size is not None and obj.size != src.size:
            raise StaleIndexError(f"{name}: the object has {obj.size} bytes but the catalog says {src.size}: "
                                  "it is truncated or not the published file")
        if src.md5 and re.fullmatch(r"[0-9a-f]{32}", obj.etag) and obj.etag != src.md5.lower():
            raise StaleIndexError(f"{name}: the object's ETag {obj.etag} is not the catalog's MD5 {src.md5}")
        if known and known.get(name) == (obj.size, obj.etag):
            return {"granule": name, "unchanged": True, "gets": 0, "bytes": 0, "seconds": time.perf_counter() - t0}
        fh: Any = BlockFile(credentials, obj, block_size=block_size, store=store)
        if obj.size <= eager_bytes:
            fh.prefetch()
        url = obj.url
    else:
        path = Path(src.url)
        if not path.exists():
            raise StaleIndexError(f"{name}: there is no file at {src.url}")
        import hashlib

        data = path.read_bytes()
        obj = ObjectId("", str(path), len(data), hashlib.md5(data).hexdigest())
        fh = _MemoryFile(data)
        url = str(path.resolve())
    try:
        try:
            h5 = h5py.File(fh, "r")
        except OSError as exc:
            raise ChunkIndexError(f"{name}: h5py cannot open the object: {exc}") from None
        with h5:
            rows, used, prod = _index_open_file(h5, fh, name, product or found, variables, inline_bytes)
    finally:
        gets, nbytes = getattr(fh, "gets", 0), getattr(fh, "bytes_fetched", 0)
        fh.close()
    rows.insert(0, "etag", obj.etag)
    rows.insert(0, "size", obj.size)
    rows.insert(0, "url", url)
    rows.insert(0, "granule", name)
    return {"granule": name, "product": prod, "rows": rows, "variables": used, "gets": gets, "bytes": nbytes,
            "seconds": time.perf_counter() - t0}


def _read_rows(fh: Any, vw: _VarWindows, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """All rows of a dataset, decoded window by window from the stored bytes (no h5py data path)."""
    parts = []
    for k, (a, b) in enumerate(zip(starts, stops)):
        codec = Codec.from_json(vw.codec[k])
        n = int(b - a)
        if vw.inline[k] is not None:
            parts.append(codec.decode(vw.inline[k], n))
        elif vw.offset[k] < 0:
            parts.append(codec.fill_rows(n))
        else:
            parts.append(codec.decode(fh.pread(int(vw.offset[k]), int(vw.nbytes[k])), n))
    return np.concatenate(parts) if parts else np.array([])


def _index_open_file(h5: h5py.File, fh: Any, name: str, product: str | None, variables: Any, inline_bytes: int
                     ) -> tuple[pd.DataFrame, list[str], str]:
    attr = h5.attrs.get("short_name")
    in_file = attr.decode() if isinstance(attr, bytes) else (str(attr) if attr is not None else None)
    prod = in_file or product
    if prod not in GROUPS:
        raise ChunkIndexError(f"{name}: cannot tell the product (ATL03 or ATL06) of this granule")
    if product and prod != product:
        raise WrongProductError(f"{name} is an {prod} granule, not {product}: an index holds one product")
    group_name = GROUPS[prod]
    lon_name, lat_name = COORDINATES[prod]
    required = ["delta_time", lat_name, lon_name]
    epoch = float(_scalar(h5, EPOCH, name))
    rgt, cycle = int(_scalar(h5, ORBIT["rgt"], name)), int(_scalar(h5, ORBIT["cycle"], name))
    frames: list[pd.DataFrame] = []
    used: list[str] = []
    for beam in TRACK_IDS:
        where = f"{name}: {beam}/{group_name}"
        group = h5.get(f"{beam}/{group_name}")
        if not isinstance(group, h5py.Group) or lat_name not in group:
            continue  # real ATL06 omits beams without segments
        ref = group[lat_name]
        if int(ref.shape[0]) == 0:
            continue
        chosen = _select_variables(group, int(ref.shape[0]), variables, required, where)
        used.extend(v for v in chosen if v not in used)
        window_rows, starts, stops = _windows_of(ref)
        vws = {v: _var_windows(group[v], starts, stops, window_rows, inline_bytes=inline_bytes,
                               where=f"{where}/{v}") for v in chosen}
        if prod == "ATL06":
            lon_all, lat_all, t_all = (_read_rows(fh, vws[v], starts, stops) for v in (lon_name, lat_name,
                                                                                        "delta_time"))
            points = [(lon_all[a:b], lat_all[a:b], t_all[a:b], 0.0) for a, b in zip(starts, stops)]
        else:
            points = _atl03_points(h5, beam, starts, stops, name)
        rows = [_window_row(group, ref, k, int(a), int(b), pts, epoch, lon_name)
                for k, (a, b, pts) in enumerate(zip(starts, stops, points))]
        keep = [k for k, r in enumerate(rows) if r is not None]
        if not keep:
            continue
        cols: dict[str, Any] = {"track_id": [beam] * len(keep)}
        for key in rows[keep[0]]:  # type: ignore[union-attr]
            cols[key] = [rows[k][key] for k in keep]  # type: ignore[index]
        cols["rgt"], cols["cycle"], cols["epoch"] = [rgt] * len(keep), [cycle] * len(keep), [epoch] * len(keep)
        for v in chosen:
            vw = vws[v]
            cols[f"offset:{v}"] = vw.offset[keep]
            cols[f"nbytes:{v}"] = vw.nbytes[keep]
            cols[f"codec:{v}"] = [vw.codec[k] for k in keep]
            cols[f"inline:{v}"] = [vw.inline[k] for k in keep]
        frames.append(pd.DataFrame(cols))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame, used, prod


def _window_row(group: h5py.Group, ref: h5py.Dataset, k: int, a: int, b: int,
                pts: tuple[np.ndarray, np.ndarray, np.ndarray, float], epoch: float, lon_name: str
                ) -> dict[str, Any] | None:
    """One index row (without the variables): footprint, margin, H3 cells, time range of window ``k``."""
    import h3

    x, y, t, extra_m = pts
    geom, margin = window_footprint(x, y)
    if geom is None:  # no located point (ATL03 window without a segment): use the photons themselves
        x, y, t = group[lon_name][a:b], ref[a:b], group["delta_time"][a:b]
        extra_m = 0.0
        geom, margin = window_footprint(x, y)
        if geom is None:
            return None
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x)[ok], np.asarray(y)[ok]
    if extra_m:
        margin += _deg(extra_m, float(np.abs(y).max()))
    cells = h3_cover(geom, margin, H3_RESOLUTION, max_cells=10**9) or set()
    times = atlas_time(np.asarray(t, "f8"), epoch)
    slack = pd.Timedelta(seconds=0.01) if extra_m else pd.Timedelta(0)
    mid = len(x) // 2
    return {"window": k, "row_start": a, "row_stop": b,
            "time_start": times.min() - slack, "time_end": times.max() + slack, "margin": margin,
            "h3": h3.str_to_int(h3.latlng_to_cell(float(y[mid]), float(x[mid]), H3_SORT_RESOLUTION)),
            "h3_cells": np.array(sorted(cells), dtype="u8"), "footprint": geom}


# -- the index as a whole: build, append, write, read -------------------------------------------------------


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
            from is2cloud.credentials import get_credentials

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


def build(granules: Iterable[Any], out: str | os.PathLike[str] | None = None, *, product: str | None = None,
          variables: Any = None, credentials: Any = None, out_credentials: Any = None, client: Any = None,
          mode: Literal["append", "overwrite"] = "append", inline_bytes: int = INLINE_BYTES,
          row_group_rows: int = ROW_GROUP_ROWS, progress: bool = True) -> ChunkIndex:
    """Index ``granules`` (``earthaccess.DataGranule`` records, ``s3://`` URLs or local paths) and, with
    ``out`` (a local path or ``s3://`` URL), write the index there as GeoParquet, atomically.

    ``product``: ATL06 or ATL03 (default: from the granule names). ``variables``: below the indexed group
    (``gtx/land_ice_segments`` or ``gtx/heights``); default every dataset directly in it, ``"all"`` also
    those of its subgroups, or a list (the coordinates and ``delta_time`` are always indexed).
    ``mode="append"`` (default) keeps an existing index at ``out``: granules already in it are skipped
    after one HEAD if their object is unchanged, re-indexed if it changed; ``"overwrite"`` starts afresh.
    ``credentials`` read the granules (default ``get_credentials("read")``); ``out_credentials`` write the
    index (default ``get_credentials("write")``). ``client``: see :func:`is2cloud.parallel.map_granules`.
    Raises :class:`ChunkIndexError` (naming the granule) when a granule cannot be indexed,
    :class:`WrongProductError` when granules or the existing index are of another product.
    """
    from is2cloud.catalog import NoGranulesError
    from is2cloud.geoparquet import write_geoparquet
    from is2cloud.methods.baseline import granule_source
    from is2cloud.parallel import GranuleError, map_granules

    t0 = time.perf_counter()
    items = [granules] if isinstance(granules, (str, os.PathLike)) or (isinstance(granules, dict)
                                                                        and "umm" in granules) else list(granules)
    if not items:
        raise NoGranulesError("no granules to index: the list is empty (did the search find nothing?)")
    if mode not in ("append", "overwrite"):
        raise ValueError(f"mode must be 'append' or 'overwrite', not {mode!r}")
    sources = [granule_source(g) for g in items]
    products = {p for p in (_product_of(s.name) for s in sources) if p}
    if product is not None:
        product = str(product).upper()
        if product not in GROUPS:
            raise ValueError(f"product must be one of {', '.join(GROUPS)}, not {product!r}")
        wrong = [s.name for s in sources if _product_of(s.name) not in (None, product)]
        if wrong:
            raise WrongProductError(f"{len(wrong)} granules are not {product}: {', '.join(wrong[:5])}: an index "
                                    "holds one product")
    elif len(products) > 1:
        raise WrongProductError(f"the granules mix products {sorted(products)}: an index holds one product")
    else:
        product = next(iter(products), None)
    if credentials is None and any(s.url.startswith("s3://") for s in sources):
        from is2cloud.credentials import get_credentials

        credentials = get_credentials("read")
    location = os.fspath(out) if out is not None else None
    if location and location.startswith("s3://") and out_credentials is None:
        from is2cloud.credentials import get_credentials

        out_credentials = get_credentials("write")
    existing: ChunkIndex | None = None
    if location and mode == "append" and _exists(location, out_credentials):
        existing = read_index(location, credentials=out_credentials)
        if product and existing.product != product:
            raise WrongProductError(f"{location} indexes {existing.product} granules, not {product}: an index "
                                    "holds one product (use another location, or mode='overwrite')")
        product = product or existing.product
    known = {}
    if existing is not None and len(existing):
        first = existing.frame.drop_duplicates("granule")
        known = dict(zip(first["granule"], zip(first["size"].astype(int), first["etag"])))
    try:
        results = map_granules(index_granule, sources, client, progress=progress, label="chunk index",
                               product=product, variables=variables, credentials=credentials, known=known,
                               inline_bytes=inline_bytes)
    except GranuleError as exc:
        # keep the kind of error when every granule failed the same way (a stale record, another product)
        kinds = {f.error_type for f in exc.failures}
        cls = {"StaleIndexError": StaleIndexError, "WrongProductError": WrongProductError}.get(
            kinds.pop() if len(kinds) == 1 else "", ChunkIndexError)
        raise cls(str(exc)) from None
    new = [r for r in results if not r.get("unchanged")]
    found = {r["product"] for r in new}
    if len(found) > 1:
        raise WrongProductError(f"the granules mix products {sorted(found)}: an index holds one product")
    product = product or next(iter(found), None)
    if product is None:
        raise ChunkIndexError("cannot tell the product of the granules")
    used: list[str] = list(existing.variables) if existing is not None else []
    for r in new:
        used.extend(v for v in r["variables"] if v not in used)
    if existing is not None and not new:  # every granule is already indexed and unchanged: nothing to write
        existing.stats = {"granules": len(results), "added": 0, "replaced": [], "unchanged": len(results),
                          "gets": 0, "bytes_read": 0, "seconds": time.perf_counter() - t0,
                          "nbytes": _object_size(location, out_credentials)}
        return existing
    frames = [_normalize(r["rows"], used) for r in new if len(r["rows"])]
    replaced = sorted({r["granule"] for r in new} & set(known))
    if existing is not None and len(existing):
        keep = existing.frame[~existing.frame["granule"].isin({r["granule"] for r in new})]
        frames.insert(0, _normalize(pd.DataFrame(keep), used))
    frame = _sorted(pd.concat(frames, ignore_index=True)) if frames else _normalize(
        pd.DataFrame(columns=["granule", "url", "size", "etag", "track_id", "window", "row_start", "row_stop",
                              "time_start", "time_end", "rgt", "cycle", "epoch", "margin", "h3", "h3_cells",
                              "footprint"]), [])
    meta = _meta(product, used, frame, existing.meta if existing is not None else None)
    gdf = _to_gdf(frame)
    stats = {"granules": len(results), "added": len(new) - len(replaced), "replaced": replaced,
             "unchanged": len(results) - len(new), "gets": sum(r["gets"] for r in results),
             "bytes_read": sum(r["bytes"] for r in results), "seconds": time.perf_counter() - t0}
    if location:
        write_geoparquet(gdf, location, credentials=out_credentials, metadata={META_KEY: meta},
                         row_group_size=row_group_rows)
        stats["nbytes"] = _object_size(location, out_credentials)
        stats["seconds"] = time.perf_counter() - t0
    return ChunkIndex(gdf, meta, location, stats)


# -- the query --------------------------------------------------------------------------------------------

_BASE_COLUMNS = ("granule", "url", "size", "etag", "track_id", "window", "row_start", "row_stop", "time_start",
                 "time_end", "rgt", "cycle", "epoch", "margin", "h3_cells", "footprint")


@dataclass
class QueryPlan:
    """What a query will fetch: the index rows (windows) that survive each pruning step, every piece
    (window x variable) and where its bytes come from, and the coalesced byte ranges (one GET each).

    ``steps``: how many windows were left after each step (``index``: rows in the row groups read,
    ``bbox``, ``time``, ``h3``, ``footprint``, ``granule_filter``: the granules given, if any), and the
    row groups read of all. :meth:`summary` adds the pieces, ranges and bytes to fetch and ``granules``: how
    many granules the windows left come from.
    """

    product: str
    variables: tuple[str, ...]
    aoi: AOI
    windows: pd.DataFrame
    pieces: list[tuple[int, str, str, str, Any]]  # (window, variable, codec json, kind, payload)
    requests: list[RangeRequest]
    steps: dict[str, int]
    index_location: str | None = None
    temporal: tuple[Any, Any] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes the ranges will fetch from the granules."""
        return sum(r.nbytes for r in self.requests)

    @property
    def chunk_bytes(self) -> int:
        """Stored bytes of the pieces to fetch (the ranges minus coalescing gaps) and inlined."""
        return sum(p[4][2] if p[3] == "range" else (len(p[4]) if p[3] == "inline" else 0) for p in self.pieces)

    def summary(self) -> dict[str, Any]:
        kinds = pd.Series([p[3] for p in self.pieces]).value_counts().to_dict() if self.pieces else {}
        return {**self.steps, "pieces": len(self.pieces), "inline_pieces": int(kinds.get("inline", 0)),
                "fill_pieces": int(kinds.get("fill", 0)), "ranges": len(self.requests), "range_bytes": self.nbytes,
                "granules": int(self.windows["granule"].nunique()) if len(self.windows) else 0}


def _outside(aoi: AOI, extent: Sequence[float] | None, where: str,
             extents: Sequence[Sequence[float]] | None = None, pad: float = 0.0) -> None:
    """OutsideIndexError unless the AOI meets the index's extent boxes widened by ``pad`` (the largest
    margin: a point lies within its window's margin of the footprint, not always inside its bounds)."""
    if extent is None:
        raise OutsideIndexError(f"the chunk index {where} is empty: the AOI {aoi.name!r} is outside it")
    boxes = extents or [extent]
    if not any(bool(boxes_meet(b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad, aoi.bboxes)) for b in boxes):
        w, s, e, n = aoi.bounds
        raise OutsideIndexError(
            f"the AOI {aoi.name!r} (W {w:.4f}, S {s:.4f}, E {e:.4f}, N {n:.4f}) is outside the chunk index {where}, "
            f"which covers W {extent[0]:.4f}, S {extent[1]:.4f}, E {extent[2]:.4f}, N {extent[3]:.4f}: index the "
            "granules over this AOI first (check also that coordinates are longitude, latitude)")


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


def _candidates(handle: Any, meta: dict[str, Any], where: str, aoi: AOI, variables: Sequence[str]
                ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Index rows whose bbox meets the AOI (row groups pruned by statistics when reading a file)."""
    # Footprint bounds (the bbox column, its row-group statistics, the extent) are widened by the margin:
    # Douglas-Peucker may drop a vertex that bulges past the bounds of the simplified line.
    pad = float(meta.get("max_margin", _MAX_MARGIN_DEFAULT))
    padded = [(w - pad, s - pad, e + pad, n + pad) for w, s, e, n in aoi.bboxes]
    _outside(aoi, meta.get("extent"), where, meta.get("extents"), pad)
    if isinstance(handle, ChunkIndex):
        frame = pd.DataFrame(handle.frame)
        steps = {"row_groups": 1, "row_groups_read": 1, "index": len(frame)}
    else:
        names = set(handle.schema_arrow.names)
        missing = [v for v in variables if f"offset:{v}" not in names]
        cols = [c for c in _BASE_COLUMNS if c in names] + ["bbox"]
        for v in variables:
            cols += [c for c in _var_columns(v) if c in names]
        if missing:
            frame = pd.DataFrame(columns=cols)
            steps = {}
        else:
            groups = row_groups_meeting(handle, "bbox", padded)
            table = handle.read_row_groups(groups, columns=cols)
            frame = table.drop_columns(["bbox"]).to_pandas()
            frame["footprint"] = shapely.from_wkb(frame["footprint"].to_numpy(dtype=object))
            steps = {"row_groups": handle.metadata.num_row_groups, "row_groups_read": len(groups),
                     "index": len(frame)}
    missing = [v for v in variables if f"offset:{v}" not in frame.columns]
    if missing:
        raise ChunkIndexError(f"variables {missing} are not in the chunk index {where} (it has "
                              f"{meta.get('variables')}); rebuild it with variables=... including them")
    if len(frame):
        b = shapely.bounds(np.asarray(frame["footprint"].values, dtype=object))
        m = frame["margin"].to_numpy("f8")
        frame = frame[boxes_meet(b[:, 0] - m, b[:, 1] - m, b[:, 2] + m, b[:, 3] + m, aoi.bboxes)]
    steps["bbox"] = len(frame)
    return frame.reset_index(drop=True), steps


def _h3_filter(frame: pd.DataFrame, aoi: AOI, res: int) -> pd.DataFrame:
    if not len(frame):
        return frame
    cover = h3_cover(aoi.geometry, 0.0, res)
    if cover is None:  # a very large AOI: the footprint test alone decides
        return frame
    cells = [np.asarray(c, dtype="u8") for c in frame["h3_cells"]]
    lengths = np.array([len(c) for c in cells])
    flat = np.concatenate(cells) if cells else np.array([], dtype="u8")
    hit = np.isin(flat, np.fromiter(cover, dtype="u8", count=len(cover)))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    keep = np.zeros(len(frame), dtype=bool)
    nonempty = lengths > 0
    keep[nonempty] = np.add.reduceat(hit, starts[nonempty]) > 0
    return frame[keep].reset_index(drop=True)


def _granule_table(handle: Any) -> pd.DataFrame:
    """granule, size, etag of every granule in the index (reads three small columns of a file)."""
    if isinstance(handle, ChunkIndex):
        t = pd.DataFrame(handle.frame)[["granule", "size", "etag"]]
    else:
        t = handle.read(columns=["granule", "size", "etag"]).to_pandas()
    return t.drop_duplicates("granule").set_index("granule")


def _granule_filter(frame: pd.DataFrame, granules: Sequence[Any], where: str | None, handle: Any) -> pd.DataFrame:
    """Keep the windows of ``granules``; each must be in the index and match its catalog record (size,
    MD5): a stale index is detected before anything is fetched."""
    from is2cloud.methods.baseline import granule_source

    sources = [granule_source(g) for g in granules]
    info = _granule_table(handle)
    absent = [s.name for s in sources if s.name not in info.index]
    if absent:
        raise StaleIndexError(f"{len(absent)} granules are not in the chunk index {where or ''}: "
                              f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}; add them with "
                              "chunkindex.build(granules, index_location) (it appends)")
    for s in sources:
        size, etag = int(info.at[s.name, "size"]), str(info.at[s.name, "etag"])
        if s.size is not None and int(s.size) != size:
            raise StaleIndexError(f"{s.name}: the catalog says the object has {s.size} bytes, the chunk index "
                                  f"{where or ''} was built from {size} bytes: the index is stale; rebuild it")
        if s.md5 and re.fullmatch(r"[0-9a-f]{32}", etag) and s.md5.lower() != etag:
            raise StaleIndexError(f"{s.name}: the catalog's MD5 {s.md5} is not the ETag {etag} the chunk index "
                                  f"{where or ''} was built from: the index is stale; rebuild it")
    names = {s.name for s in sources}
    return frame[frame["granule"].isin(names)].reset_index(drop=True)


def _object_of(url: str, size: int, etag: str) -> ObjectId:
    url = str(url)
    if url.startswith("s3://"):
        bucket, key = split_url(url)
        return ObjectId(bucket, key, int(size), str(etag))
    return ObjectId("", url, int(size), str(etag))


def _expected_product(product: str | None, granules: Sequence[Any] | None) -> str | None:
    if product is not None:
        product = str(product).upper()
        if product not in GROUPS:
            raise ValueError(f"product must be one of {', '.join(GROUPS)}, not {product!r}")
    if granules:
        from is2cloud.parallel import granule_name

        found = {p for p in (_product_of(granule_name(g)) for g in granules) if p}
        if len(found) > 1:
            raise WrongProductError(f"the granules mix products {sorted(found)}")
        if found and product and found != {product}:
            raise WrongProductError(f"the granules are {found.pop()}, not {product}")
        product = product or next(iter(found), None)
    return product


def plan(index: Any, aoi: Any, variables: Iterable[str] | None = None, *, granules: Sequence[Any] | None = None,
         product: str | None = None, temporal: Any = None, index_credentials: Any = None,
         max_gap: int = 4096, max_range_bytes: int = 16 * 2**20, max_overfetch: float = MAX_OVERFETCH
         ) -> QueryPlan:
    """Prune the index for ``aoi`` and plan the fetch: see :class:`QueryPlan` and :func:`subset`.

    Chunks of one object at most ``max_gap`` bytes apart are fetched in one range, smallest gaps first,
    as long as the gaps add at most ``max_overfetch`` of the chunks' bytes (the HDF5 metadata between the
    chunks of neighbouring datasets is ~2 KB: worth a GET for small chunks, not for large ones)."""
    from is2cloud.catalog import parse_temporal

    area = load_aoi(aoi)
    product = _expected_product(product, granules)
    meta, handle, where = _open_index(index, index_credentials)
    if product is not None and meta.get("product") != product:
        raise WrongProductError(f"the chunk index {where} indexes {meta.get('product')} granules "
                                f"({meta.get('group')}), not {product}: build an index for {product}")
    product = str(meta["product"])
    variables = _query_variables(variables, product)
    frame, steps = _candidates(handle, meta, where, area, variables)
    start, end = parse_temporal(temporal)
    if len(frame) and (start is not None or end is not None):
        ok = np.ones(len(frame), dtype=bool)
        times_end = pd.to_datetime(frame["time_end"], utc=True)
        times_start = pd.to_datetime(frame["time_start"], utc=True)
        if start is not None:
            ok &= (times_end >= pd.Timestamp(start)).to_numpy()
        if end is not None:
            ok &= (times_start <= pd.Timestamp(end)).to_numpy()
        frame = frame[ok].reset_index(drop=True)
    steps["time"] = len(frame)
    frame = _h3_filter(frame, area, int(meta.get("h3_resolution", H3_RESOLUTION)))
    steps["h3"] = len(frame)
    if len(frame):
        geom = area.geometry
        shapely.prepare(geom)
        keep = shapely.dwithin(np.asarray(frame["footprint"].values, dtype=object), geom,
                               frame["margin"].to_numpy("f8"))
        frame = frame[keep].reset_index(drop=True)
    steps["footprint"] = len(frame)
    if granules is not None:
        frame = _granule_filter(frame, granules, where, handle)
    steps["granule_filter"] = len(frame)
    pieces, requests = _pieces(frame, variables, product, max_gap, max_range_bytes, max_overfetch)
    return QueryPlan(product, tuple(variables), area, frame, pieces, requests, steps,
                     None if isinstance(handle, ChunkIndex) else where,
                     None if (start is None and end is None) else (start, end))


def _pieces(frame: pd.DataFrame, variables: Sequence[str], product: str, max_gap: int, max_range_bytes: int,
            max_overfetch: float = 0.0
            ) -> tuple[list[tuple[int, str, str, str, Any]], list[RangeRequest]]:
    """Every (window, variable) piece: inline bytes, fill value, or a slice of a coalesced range."""
    objs = [_object_of(url, size, etag) for url, size, etag in zip(frame["url"], frame["size"], frame["etag"])]
    pieces: list[tuple[int, str, str, str, Any]] = []
    wanted: dict[ObjectId, list[tuple[int, int, int]]] = {}  # object -> (piece index, offset, nbytes)
    for v in variables:
        off_c, nb_c, codec_c, inline_c = _var_columns(v)
        codecs = frame[codec_c].to_numpy(dtype=object)
        offsets = frame[off_c].to_numpy(dtype=object)
        sizes = frame[nb_c].to_numpy(dtype=object)
        blobs = frame[inline_c].to_numpy(dtype=object) if inline_c in frame.columns else [None] * len(frame)
        for w in range(len(frame)):
            codec = codecs[w]
            if not isinstance(codec, str):
                raise ChunkIndexError(f"{frame['granule'].iat[w]}: {frame['track_id'].iat[w]}/{GROUPS[product]}/{v} "
                                      "is not in this granule")
            blob = blobs[w]
            if isinstance(blob, (bytes, bytearray, memoryview)):
                pieces.append((w, v, codec, "inline", bytes(blob)))
            elif int(offsets[w]) < 0:
                pieces.append((w, v, codec, "fill", None))
            else:
                wanted.setdefault(objs[w], []).append((len(pieces), int(offsets[w]), int(sizes[w])))
                pieces.append((w, v, codec, "range", None))
    requests: list[RangeRequest] = []
    for obj, items in wanted.items():
        ranges = coalesce([(o, o + n) for _, o, n in items], max_gap=max_gap, max_size=max_range_bytes,
                          max_extra=int(max_overfetch * sum(n for _, _, n in items)))
        starts = np.array([a for a, _ in ranges])
        base = len(requests)
        requests += [RangeRequest(obj, a, b) for a, b in ranges]
        for p, o, n in items:
            r = int(np.searchsorted(starts, o, side="right")) - 1
            w, v, codec, _kind, _ = pieces[p]
            pieces[p] = (w, v, codec, "range", (base + r, o - ranges[r][0], n))
    return pieces, requests


def _query_variables(variables: Iterable[str] | None, product: str) -> tuple[str, ...]:
    from is2cloud.methods.baseline import check_variables

    if variables is None:
        variables = ATL03_VARIABLES if product == "ATL03" else DEFAULT_VARIABLES
    if isinstance(variables, str):
        variables = [variables]
    variables = [v.strip("/") for v in variables]
    if product == "ATL03":
        return tuple(dict.fromkeys(["delta_time", "lat_ph", "lon_ph", *variables]))
    return check_variables(variables)


class _Assembler:
    """Collects the decoded pieces of each window; when a window is complete it is clipped to the AOI
    at once (so the decoded 10,000-row windows never pile up in memory)."""

    def __init__(self, plan: QueryPlan):
        self.plan = plan
        w = plan.windows
        self.values: list[dict[str, np.ndarray] | None] = [{} for _ in range(len(w))]
        self.pending = np.zeros(len(w), dtype="i8")
        for p in plan.pieces:
            self.pending[p[0]] += 1
        self.parts: list[dict[str, np.ndarray] | None] = [None] * len(w)
        self.lock = threading.Lock()
        self.nrows = (w["row_stop"] - w["row_start"]).to_numpy("i8") if len(w) else np.array([], "i8")
        lon_name, lat_name = COORDINATES[plan.product]
        self.lon_name, self.lat_name = lon_name, lat_name
        boxes = np.array(plan.aoi.bboxes)
        self.box = (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())
        # per-window values as plain records: a pandas row lookup per window costs more than its clip
        self.rows = w[["granule", "track_id", "rgt", "cycle", "epoch", "row_start", "row_stop"]].to_dict("records")

    def put(self, w: int, v: str, arr: np.ndarray) -> None:
        with self.lock:
            vals = self.values[w]
            assert vals is not None
            vals[v] = arr
            self.pending[w] -= 1
            done = self.pending[w] == 0
            if done:
                self.values[w] = None
        if done:
            self.parts[w] = self.clip(w, vals)

    def decode(self, w: int, v: str, codec_json: str, stored: Any) -> None:
        codec = Codec.from_json(codec_json)
        n = int(self.nrows[w])
        try:
            arr = codec.fill_rows(n) if stored is None else codec.decode(stored, n)
        except Exception as exc:
            row = self.rows[w]
            raise ChunkIndexError(f"{row['granule']}: cannot decode {row['track_id']}/{GROUPS[self.plan.product]}/{v} "
                                  f"rows {row['row_start']}-{row['row_stop'] - 1}: {exc}") from None
        self.put(w, v, arr)

    def inside(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """``AOI.contains`` (the book's boundary rule), tried only on points inside the AOI's bounds."""
        w, s, e, n = self.box
        cand = (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n)
        out = np.zeros(lon.shape, dtype=bool)
        if cand.any():
            out[cand] = self.plan.aoi.contains(lon[cand], lat[cand])
        return out

    def clip(self, w: int, values: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        row = self.rows[w]
        inside = self.inside(values[self.lon_name], values[self.lat_name])
        times = None
        if self.plan.temporal is not None and inside.any():
            times = atlas_time(values["delta_time"], float(row["epoch"]))
            start, end = self.plan.temporal
            if start is not None:
                inside &= np.asarray(times >= pd.Timestamp(start))
            if end is not None:
                inside &= np.asarray(times <= pd.Timestamp(end))
        k = int(inside.sum())
        if not k:
            return None
        granule, beam = str(row["granule"]), str(row["track_id"])
        if self.plan.product == "ATL06":
            # the columns baseline.clip_granule makes, so both methods assemble the same frame
            cols = {_column(v): arr[inside] for v, arr in values.items() if v != "delta_time"}
            cols["time"] = atlas_time_ns(values["delta_time"][inside], float(row["epoch"]))
        else:
            cols = {"latitude": values["lat_ph"][inside], "longitude": values["lon_ph"][inside]}
            for v, arr in values.items():
                if v in ("lat_ph", "lon_ph", "delta_time"):
                    continue
                sel = arr[inside]
                if sel.ndim == 1:
                    cols[_column(v)] = sel
                else:
                    for j in range(sel.shape[1]):
                        cols[f"{_column(v)}_{j}"] = sel[:, j]
            cols["time"] = atlas_time_ns(values["delta_time"][inside], float(row["epoch"]))
            cols["photon_index"] = int(row["row_start"]) + np.flatnonzero(inside)
        cols["track_id"] = np.repeat(np.array([beam], dtype=object), k)
        cols["rgt"] = np.repeat(int(row["rgt"]), k)
        cols["cycle"] = np.repeat(int(row["cycle"]), k)
        cols["granule"] = np.repeat(np.array([granule], dtype=object), k)
        return cols


def _column(variable: str) -> str:
    return variable.rsplit("/", 1)[-1]


def _local_ranges(requests: Sequence[RangeRequest]) -> list[bytes]:
    """Ranges of local files (an index built from local paths): pread, after checking each file's size."""
    out = []
    for r in requests:
        path = r.obj.key
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise StaleIndexError(f"{r.obj.name}: there is no file at {path}") from None
        if size != r.obj.size:
            raise StaleIndexError(f"{r.obj.name}: the file has {size} bytes, the chunk index was built from "
                                  f"{r.obj.size}: the index is stale; rebuild it")
        with open(path, "rb") as fh:
            out.append(os.pread(fh.fileno(), r.nbytes, r.start))
    return out


def execute(plan: QueryPlan, *, credentials: Any = None, concurrency: int = 64, workers: int | None = None):
    """Fetch, decode and clip what ``plan`` says (see :func:`subset`); returns the frame."""
    asm = _Assembler(plan)
    by_range: dict[int, list[tuple[int, str, str, int, int]]] = {}
    for w, v, codec, kind, payload in plan.pieces:
        if kind == "range":
            r, rel, n = payload
            by_range.setdefault(r, []).append((w, v, codec, rel, n))
    for w, v, codec, kind, payload in plan.pieces:
        if kind in ("inline", "fill"):
            asm.decode(w, v, codec, payload)

    def process(i: int, data: bytes) -> None:
        view = memoryview(data)
        for w, v, codec, rel, n in by_range.get(i, []):
            asm.decode(w, v, codec, view[rel:rel + n])

    remote = [r for r in plan.requests if r.obj.bucket]
    if remote and len(remote) != len(plan.requests):
        raise ChunkIndexError("the chunk index mixes S3 objects and local files")
    if remote:
        if credentials is None:
            from is2cloud.credentials import get_credentials

            credentials = get_credentials("read")
        try:
            fetch_ranges(credentials, plan.requests, concurrency=concurrency, process=process,
                         workers=workers or min(8, os.cpu_count() or 1))
        except ObjectChangedError as exc:
            raise StaleIndexError(f"{exc}: the chunk index is stale; rebuild it (chunkindex.build appends and "
                                  "re-indexes changed granules)") from None
        except ObjectMissingError as exc:
            raise StaleIndexError(f"{exc}: the chunk index is stale (the granule is gone)") from None
        except RangeError as exc:
            raise ChunkIndexError(str(exc)) from None
    else:
        for i, data in enumerate(_local_ranges(plan.requests)):
            process(i, data)
    parts = [p for p in asm.parts if p]
    if plan.product == "ATL06":
        from is2cloud.methods.baseline import assemble

        return assemble(parts, plan.variables)
    return _photon_frame(parts)


def _photon_frame(parts: Sequence[dict[str, np.ndarray]]):  # -> geopandas.GeoDataFrame
    import geopandas as gpd

    from is2cloud.methods.schema import CANONICAL_DTYPES

    if parts:
        cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    else:
        cols = {c: np.array([], dtype="f8") for c in ("latitude", "longitude")}
        cols.update(time=np.array([], "datetime64[ns]"), photon_index=np.array([], "i8"),
                    track_id=np.array([], object), rgt=np.array([], "i2"), cycle=np.array([], "i1"),
                    granule=np.array([], object))
    df = pd.DataFrame(cols)
    order = ["time", "latitude", "longitude"] + [c for c in df.columns if c not in (
        "time", "latitude", "longitude", "track_id", "rgt", "cycle", "photon_index", "granule")] + [
        "track_id", "rgt", "cycle", "photon_index", "granule"]
    df = df[order]
    df["time"] = pd.to_datetime(df["time"]).dt.tz_localize("UTC").astype(CANONICAL_DTYPES["time"])
    df["rgt"], df["cycle"] = df["rgt"].astype("i2"), df["cycle"].astype("i1")
    df["photon_index"] = df["photon_index"].astype("i8")
    for c in ("track_id", "granule"):
        df[c] = df[c].astype(CANONICAL_DTYPES[c])
    gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["longitude"], df["latitude"]), crs="EPSG:4326")
    return gdf.sort_values(["granule", "track_id", "photon_index"], kind="mergesort").reset_index(drop=True)


def _verify_all(handle: Any, meta: dict[str, Any], granules: set[str] | None, credentials: Any,
                concurrency: int) -> None:
    """HEAD every granule object of the index (or of ``granules``) and compare size and ETag."""
    table = (pd.DataFrame(handle.frame)[["granule", "url", "size", "etag"]] if isinstance(handle, ChunkIndex)
             else handle.read(columns=["granule", "url", "size", "etag"]).to_pandas()).drop_duplicates("granule")
    if granules is not None:
        table = table[table["granule"].isin(granules)]
    objs = [_object_of(u, s, e) for u, s, e in zip(table["url"], table["size"], table["etag"])]
    local = [o for o in objs if not o.bucket]
    for o in local:
        if not os.path.exists(o.key) or os.stat(o.key).st_size != o.size:
            raise StaleIndexError(f"{o.name}: the file {o.key} is missing or changed: the chunk index is stale")
    remote = [o for o in objs if o.bucket]
    if not remote:
        return
    if credentials is None:
        from is2cloud.credentials import get_credentials

        credentials = get_credentials("read")
    try:
        check_objects(credentials, remote, concurrency=concurrency)
    except ObjectMissingError as exc:
        raise StaleIndexError(f"{exc}: the chunk index is stale") from None
    except ObjectChangedError as exc:
        raise StaleIndexError(f"{exc}: the chunk index is stale; rebuild it") from None


def subset(granules_or_index: Any, aoi: Any, variables: Iterable[str] | None = None, *, index: Any = None,
           product: str | None = None, temporal: Any = None, credentials: Any = None,
           index_credentials: Any = None, verify: Literal["touched", "all"] = "touched", concurrency: int = 64,
           max_gap: int = 4096, max_overfetch: float = MAX_OVERFETCH, client: Any = "sync", progress: bool = False
           ):  # -> geopandas.GeoDataFrame
    """Rows of ``aoi`` read through a chunk index: only the chunks of the windows that meet the AOI.

    ``granules_or_index``: a chunk index (its location: local path or ``s3://`` URL, or a
    :class:`ChunkIndex`) to query every granule in it, or granules (``earthaccess.DataGranule``
    records, ``s3://`` URLs or local paths) together with ``index=`` (without an index one is built in
    memory first, which costs a read of every granule). ``variables``: below the indexed group
    (default: the canonical ATL06 columns, or :data:`ATL03_VARIABLES`); ATL06 returns the canonical
    schema with extras after ``geometry``, the same rows as the baseline; ATL03 one row per photon.
    ``temporal``: (start, end) keeps rows in that time range. ``max_gap``/``max_overfetch``: how chunks are
    coalesced into ranges (see :func:`plan`). ``credentials`` read the granules,
    ``index_credentials`` the index (defaults ``get_credentials("read")`` and ``("write")``).
    ``verify="touched"`` checks the ETag and size of every object a GET reads; ``"all"`` also HEADs
    every granule of the index first (a changed granule the AOI no longer reaches is caught too).

    Raises :class:`StaleIndexError` (naming the granule) when an object changed, is missing, or a given
    granule is not in the index; :class:`WrongProductError` for an index of another product;
    :class:`OutsideIndexError` for an AOI outside the index; :class:`ChunkIndexError` otherwise.
    ``result.attrs["chunkindex"]`` summarises the pruning and the fetch (:meth:`QueryPlan.summary`).
    """
    from is2cloud.catalog import NoGranulesError

    area = load_aoi(aoi)
    if verify not in ("touched", "all"):
        raise ValueError(f"verify must be 'touched' or 'all', not {verify!r}")
    granules: list[Any] | None = None
    if isinstance(granules_or_index, ChunkIndex) or _looks_like_index(granules_or_index):
        source = granules_or_index
    else:
        granules = [granules_or_index] if isinstance(granules_or_index, (str, os.PathLike)) or (
            isinstance(granules_or_index, dict) and "umm" in granules_or_index) else list(granules_or_index)
        if not granules:
            raise NoGranulesError(f"no granules to subset for AOI {area.name!r}: the list is empty")
        source = index if index is not None else build(granules, product=product, variables=None,
                                                       credentials=credentials, client=client, progress=progress)
    qplan = plan(source, area, variables, granules=granules, product=product, temporal=temporal,
                 index_credentials=index_credentials, max_gap=max_gap, max_overfetch=max_overfetch)
    if verify == "all":
        meta, handle, _ = _open_index(source, index_credentials)
        from is2cloud.parallel import granule_name

        _verify_all(handle, meta, None if granules is None else {granule_name(g) for g in granules}, credentials,
                    concurrency)
    frame = execute(qplan, credentials=credentials, concurrency=concurrency)
    frame.attrs["chunkindex"] = qplan.summary()
    return frame


def _looks_like_index(obj: Any) -> bool:
    if isinstance(obj, (str, os.PathLike)):
        return os.fspath(obj).endswith((".parquet", ".geoparquet", ".pq"))
    return False


# -- the benchmark --------------------------------------------------------------------------------------------


def _warm_worker() -> None:
    """Import the readers in a worker (outside the measurement)."""
    import h3  # noqa: F401
    import obstore  # noqa: F401

    import is2cloud.methods.chunkindex  # noqa: F401


def benchmark(scale: str, cloud: Any, *, aoi: Any = None, profile: str = "in-region", client: Any = None,
              repeat: int = 1, results: str | os.PathLike[str] | None = None,
              index_url: str | None = None) -> list:  # -> list[bench.Measurement]
    """Measure, in one run at ``scale`` on the Greenland AOI (``profile`` network model):

    1. ``chunk index build``: indexing every ATL06 granule of the AOI (written to ``index_url``, default
       ``s3://<output bucket>/bench/chunk-index-<scale>.parquet``);
    2. ``baseline (tuned) -> GeoParquet`` and 3. ``chunk index -> GeoParquet``: the subset written as
       GeoParquet to the output bucket, each ``repeat`` times, rows checked identical.

    Each records wall/CPU/memory, GETs and bytes from the ledger and ``physical_bytes`` (the compressed
    bytes of the chunks of the requested variables that hold a row inside the AOI); the notes of the
    chunk index measurement compare it with the targets (speed-up over the tuned baseline, bytes / physical
    limit, GETs / chunk ranges + index reads, index size / archive, build seconds per granule).
    ``cloud`` must serve the ``scale`` archive; its profile is restored afterwards.
    """
    from is2cloud.bench import measure
    from is2cloud.geoparquet import write_geoparquet
    from is2cloud.methods import baseline
    from is2cloud.methods.identity import assert_same_rows
    from is2cloud.settings import get_settings

    scene = baseline.bench_scene(scale, cloud, aoi=aoi, repeat=repeat, client=client)
    area, granules, credentials, limit, client = (scene.area, scene.granules, scene.credentials, scene.limit,
                                                  scene.client)
    if not isinstance(client, str):
        client.run(_warm_worker)
    bucket = cloud.buckets[0] if getattr(cloud, "buckets", None) else get_settings().output_bucket
    index_url = index_url or f"s3://{bucket}/bench/chunk-index-{scale}.parquet"
    archive_bytes = sum(int(g["umm"]["DataGranule"]["ArchiveAndDistributionInformation"][0]["SizeInBytes"])
                        for g in granules)
    before = cloud.profile_name
    cloud.set_profile(profile)
    label = f"synthetic ATL06 v006, AOI {area.name}, {len(granules)} granules"
    out: list[Any] = []
    frames: dict[str, Any] = {}
    try:
        with measure("chunk index build", method="chunkindex", cloud=cloud, scale=scale, results=results,
                     notes=label) as mb:
            idx = build(granules, index_url, mode="overwrite", credentials=credentials,
                        out_credentials=credentials, client=client, progress=False)
            mb.granules, mb.rows = len(granules), len(idx)
        nbytes = int(idx.stats["nbytes"])
        mb.notes = (f"{label}; index {nbytes / 1e6:.2f} MB = {100 * nbytes / archive_bytes:.3f}% of the "
                    f"{archive_bytes / 1e9:.2f} GB archive; {mb.wall_s / len(granules):.2f} s per granule; "
                    f"{len(idx)} windows")
        out.append(mb)
        for i in range(repeat):
            run = f"run {i + 1}/{repeat}"
            with measure("baseline (tuned) -> GeoParquet", method="baseline", cloud=cloud, scale=scale,
                         results=results, notes=f"{label}; earthaccess blockcache; {run}") as m0:
                gdf = baseline.subset(granules, area, config="tuned", credentials=credentials, client=client,
                                      progress=False)
                write_geoparquet(gdf, f"s3://{bucket}/bench/baseline-{scale}.parquet", credentials=credentials)
                m0.rows, m0.granules, m0.physical_bytes = len(gdf), len(granules), limit.nbytes
            out.append(m0)
            frames.setdefault("baseline", gdf)
            seq = cloud.seq
            with measure("chunk index -> GeoParquet", method="chunkindex", cloud=cloud, scale=scale,
                         results=results, notes=f"{label}; {run}") as m1:
                gdf = subset(index_url, area, credentials=credentials, index_credentials=credentials)
                write_geoparquet(gdf, f"s3://{bucket}/bench/chunkindex-{scale}.parquet", credentials=credentials)
                m1.rows, m1.granules, m1.physical_bytes = len(gdf), len(granules), limit.nbytes
            ledger = [r for r in cloud.ledger(seq) if r.verb == "GET" and r.key]
            index_gets = sum(1 for r in ledger if r.key == split_url(index_url)[1])
            summary = gdf.attrs.get("chunkindex", {})
            m1.notes = (f"{label}; {run}; {m0.wall_s / m1.wall_s:.1f}x faster than baseline (tuned); bytes "
                        f"{m1.bytes_ratio or float('nan'):.2f}x the physical limit (index reads included); "
                        f"{m1.gets} GETs = {summary.get('ranges')} chunk ranges (of {limit.chunks} chunks) + "
                        f"{index_gets} index reads; {summary.get('footprint')} windows")
            out.append(m1)
            frames.setdefault("chunkindex", gdf)
    finally:
        cloud.set_profile(before)
    assert_same_rows(frames["baseline"], frames["chunkindex"], names=("baseline (tuned)", "chunk index"))
    return out
