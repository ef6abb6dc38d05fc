"""Executing a :class:`~is2cloud.methods.chunkindex.planner.QueryPlan`: fetch the ranges (obstore for
S3, ``pread`` for local files), decode each window's pieces, clip the window to the AOI (and time range)
as soon as it is complete, and assemble the frame (canonical ATL06 rows, or one row per ATL03 photon)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from is2cloud.methods.chunkindex.errors import ChunkIndexError, StaleIndexError
from is2cloud.methods.chunkindex.planner import QueryPlan
from is2cloud.methods.chunkindex.products import COORDINATES, GROUPS
from is2cloud.methods.ranges import (
    Codec,
    ObjectChangedError,
    ObjectMissingError,
    RangeError,
    RangeRequest,
    fetch_ranges,
)
from is2cloud.methods.schema import atlas_time, atlas_time_ns


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


def execute(plan: QueryPlan, *, credentials: Any = None, concurrency: int = 64, workers: int = 0):
    """Fetch, decode and clip what ``plan`` says (see :func:`subset`); returns the frame. ``workers``: threads
    that decode and clip the ranges as they arrive (0: the event loop's own, as each arrives; the pieces are
    small chunks, cheap beside their requests)."""
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
            from is2cloud.access import get_credentials

            credentials = get_credentials("read")
        try:
            fetch_ranges(credentials, plan.requests, concurrency=concurrency, process=process, workers=workers)
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
    # in granule, beam, row order: the frame then comes out in canonical order and is not sorted again
    order = sorted(range(len(asm.parts)), key=lambda w: (str(asm.rows[w]["granule"]), str(asm.rows[w]["track_id"]),
                                                         int(asm.rows[w]["row_start"])))
    parts = [asm.parts[w] for w in order if asm.parts[w]]
    asm.parts.clear()
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
