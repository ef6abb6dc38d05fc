"""Indexing one granule (the worker of :func:`~is2cloud.methods.chunkindex.build`): open the object
through a block cache, and for every beam turn its windows into index rows (footprint, margin, H3
cells, time range, and the byte ranges of each variable's chunks)."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from is2cloud.methods.chunkindex.errors import ChunkIndexError, StaleIndexError, WrongProductError
from is2cloud.methods.chunkindex.footprints import (
    H3_RESOLUTION,
    H3_SORT_RESOLUTION,
    _deg,
    h3_cover,
    window_footprint,
)
from is2cloud.methods.chunkindex.products import COORDINATES, EPOCH, GROUPS, ORBIT, _product_of
from is2cloud.methods.chunkindex.windows import (
    _atl03_points,
    _read_rows,
    _scalar,
    _select_variables,
    _var_windows,
    _windows_of,
)
from is2cloud.methods.ranges import BlockFile, ObjectId, ObjectMissingError, head_object, split_url
from is2cloud.methods.schema import TRACK_IDS, atlas_time

INLINE_BYTES = 512           # chunks stored in at most this many bytes are copied into the index
EAGER_BYTES = 512 * 2**20    # objects up to this size are fetched whole while building
BLOCK_BYTES = 8 * 2**20


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
