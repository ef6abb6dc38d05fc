"""HDF5 chunk tables and the physical limit of an AOI subset (shared by the methods and the bench).

The **physical limit** of a subset (DESIGN section 7) is what no method can avoid fetching: the
compressed bytes of the HDF5 chunks of the requested variables that hold at least one row inside
the AOI, plus the storage of the per-granule values every row needs (``/orbit_info/rgt``,
``/orbit_info/cycle_number``, ``/ancillary_data/atlas_sdp_gps_epoch``) when the granule has any
row inside. HDF5 metadata (superblock, object headers, B-trees) is not counted: it is the price of
finding chunks, which a method may pay or avoid (e.g. with a chunk index).

>>> with h5py.File(path) as f:                                                  # doctest: +SKIP
...     table = chunk_table(f["gt1l/land_ice_segments/h_li"])   # rows, byte offsets, sizes
...     limit = physical_limit(f, aoi)                          # PhysicalLimit(nbytes=..., chunks=...)

Rows inside the AOI follow the book's one boundary rule, :meth:`is2cloud.aoi.AOI.contains`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from is2cloud.aoi import AOI, load_aoi
from is2cloud.methods.schema import ATL06_VARIABLES, TRACK_IDS

__all__ = ["GRANULE_SCALARS", "ChunkTable", "PhysicalLimit", "aoi_rows", "chunk_runs", "chunk_table",
           "chunks_for_rows", "physical_limit"]

# Per-granule values every canonical row needs (read once per granule).
GRANULE_SCALARS: tuple[str, ...] = ("/orbit_info/rgt", "/orbit_info/cycle_number",
                                    "/ancillary_data/atlas_sdp_gps_epoch")
_LAYOUT_NAMES = {h5py.h5d.COMPACT: "compact", h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.CHUNKED: "chunked"}


@dataclass(frozen=True)
class ChunkTable:
    """Where the rows of a 1-D (or row-chunked N-D) dataset are stored, chunk by chunk.

    ``row_start[i]:row_stop[i]`` are the rows of chunk ``i``; ``byte_offset[i]`` and ``nbytes[i]`` its
    stored (compressed) bytes in the file. A contiguous dataset is one chunk; a compact one is one
    chunk with ``byte_offset`` -1 (its data sits in the object header). Chunks never written (all fill
    value) are absent. Sorted by ``row_start``.
    """

    path: str
    layout: str
    nrows: int
    row_start: np.ndarray
    row_stop: np.ndarray
    byte_offset: np.ndarray
    nbytes: np.ndarray

    def __len__(self) -> int:
        return len(self.row_start)

    @property
    def total_bytes(self) -> int:
        return int(self.nbytes.sum())


def chunk_table(ds: h5py.Dataset) -> ChunkTable:
    """The chunk table of ``ds`` from its HDF5 chunk index (no data is read or decompressed)."""
    dsid = ds.id
    layout = dsid.get_create_plist().get_layout()
    nrows = int(ds.shape[0]) if ds.shape else 1
    if layout != h5py.h5d.CHUNKED:
        size = int(dsid.get_storage_size())
        offset = dsid.get_offset() if layout == h5py.h5d.CONTIGUOUS else None
        starts = np.array([0] if size else [], dtype="i8")
        return ChunkTable(ds.name, _LAYOUT_NAMES.get(layout, str(layout)), nrows, starts,
                          np.array([nrows] if size else [], dtype="i8"),
                          np.array([-1 if offset is None else offset] if size else [], dtype="i8"),
                          np.array([size] if size else [], dtype="i8"))
    infos: list[Any] = []
    if hasattr(dsid, "chunk_iter"):  # HDF5 >= 1.12.3: one pass over the index
        dsid.chunk_iter(infos.append)
    else:
        infos = [dsid.get_chunk_info(i) for i in range(dsid.get_num_chunks())]
    rows_per_chunk = int(ds.chunks[0])
    start = np.array([i.chunk_offset[0] for i in infos], dtype="i8")
    order = np.argsort(start, kind="stable")
    start = start[order]
    return ChunkTable(
        ds.name, "chunked", nrows, start, np.minimum(start + rows_per_chunk, nrows),
        np.array([infos[i].byte_offset for i in order], dtype="i8"),
        np.array([infos[i].size for i in order], dtype="i8"),
    )


def chunks_for_rows(table: ChunkTable, rows: np.ndarray) -> np.ndarray:
    """Indices (into ``table``) of the chunks holding any of ``rows`` (a boolean mask or row numbers)."""
    rows = np.asarray(rows)
    idx = np.flatnonzero(rows) if rows.dtype == bool else np.unique(rows.astype("i8"))
    if idx.size == 0 or len(table) == 0:
        return np.array([], dtype="i8")
    pos = np.searchsorted(table.row_start, idx, side="right") - 1
    ok = (pos >= 0) & (idx < table.row_stop[np.clip(pos, 0, None)])
    return np.unique(pos[ok])


def chunk_runs(rows: np.ndarray, chunk: int, n: int) -> list[tuple[int, int]]:
    """The chunk-aligned row ranges ``[(start, stop), ...]`` of a dataset of ``n`` rows in chunks of ``chunk``
    rows that hold ``rows`` (a boolean mask or row numbers): adjacent chunks merge into one range, the last
    stops at ``n``. Reading ``ds[start:stop]`` for each touches exactly the chunks holding those rows.

    >>> chunk_runs(np.array([3, 4, 25, 41]), 10, 45)
    [(0, 10), (20, 30), (40, 45)]
    """
    if chunk < 1 or n < 0:
        raise ValueError(f"chunk must be >= 1 and n >= 0, not chunk={chunk}, n={n}")
    rows = np.asarray(rows)
    idx = np.flatnonzero(rows) if rows.dtype == bool else rows.astype("i8")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"rows must lie in 0..{n - 1}, got {idx.min()}..{idx.max()}")
    hit = np.unique(idx // chunk)
    if hit.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(hit) > 1)
    first = hit[np.r_[0, breaks + 1]]
    last = hit[np.r_[breaks, hit.size - 1]]
    return [(int(a) * chunk, min(int(b + 1) * chunk, n)) for a, b in zip(first, last)]


def aoi_rows(group: h5py.Group, aoi: AOI) -> np.ndarray:
    """Boolean mask of the rows of ``group`` (e.g. ``gt1l/land_ice_segments``) inside the AOI."""
    return aoi.contains(group["longitude"][()], group["latitude"][()])


@dataclass
class PhysicalLimit:
    """The physical limit of one granule (or the sum of several, see :meth:`add`)."""

    granule: str = ""
    nbytes: int = 0          # chunk bytes + scalar bytes
    chunks: int = 0          # intersecting chunks of the requested variables
    rows: int = 0            # rows inside the AOI
    scalar_bytes: int = 0    # storage of GRANULE_SCALARS (granules with rows inside only)
    total_chunk_bytes: int = 0  # all chunks of the requested variables, inside the AOI or not
    per_variable: dict[str, int] = field(default_factory=dict)  # variable -> intersecting chunk bytes
    # all latitude/longitude chunks of the beams with a row inside: what a reader that reads each such beam's
    # coordinates whole (the virtual methods, which have no index of where the AOI's rows are) adds to the limit
    coordinate_bytes: int = 0

    def add(self, other: PhysicalLimit) -> PhysicalLimit:
        per = dict(self.per_variable)
        for k, v in other.per_variable.items():
            per[k] = per.get(k, 0) + v
        return PhysicalLimit("", self.nbytes + other.nbytes, self.chunks + other.chunks, self.rows + other.rows,
                             self.scalar_bytes + other.scalar_bytes, self.total_chunk_bytes + other.total_chunk_bytes,
                             per, self.coordinate_bytes + other.coordinate_bytes)


def physical_limit(h5: h5py.File, aoi: Any, variables: Iterable[str] = ATL06_VARIABLES, *,
                   beams: Iterable[str] = TRACK_IDS, group: str = "land_ice_segments",
                   granule: str = "") -> PhysicalLimit:
    """The physical limit of subsetting ``h5`` to ``aoi``: see the module docstring.

    ``variables`` are paths below ``<beam>/<group>`` (e.g. ``"h_li"``, ``"fit_statistics/n_fit_photons"``).
    Beams without the group (real ATL06 omits beams with no segments) count nothing. Raises KeyError
    naming the dataset when a requested variable is missing.
    """
    area = load_aoi(aoi)
    variables = tuple(variables)
    out = PhysicalLimit(granule=granule or h5.filename.rsplit("/", 1)[-1])
    for beam in beams:
        path = f"{beam}/{group}"
        if path not in h5:
            continue
        g = h5[path]
        inside = aoi_rows(g, area)
        out.rows += int(inside.sum())
        if inside.any():
            out.coordinate_bytes += sum(chunk_table(g[c]).total_bytes for c in ("latitude", "longitude") if c in g)
        for var in variables:
            if var not in g:
                raise KeyError(f"{out.granule}: {path}/{var} is missing")
            table = chunk_table(g[var])
            hit = chunks_for_rows(table, inside)
            nbytes = int(table.nbytes[hit].sum())
            out.chunks += len(hit)
            out.nbytes += nbytes
            out.total_chunk_bytes += table.total_bytes
            out.per_variable[var] = out.per_variable.get(var, 0) + nbytes
    if out.rows:
        for path in GRANULE_SCALARS:
            if path not in h5:
                raise KeyError(f"{out.granule}: {path} is missing")
            out.scalar_bytes += chunk_table(h5[path]).total_bytes
        out.nbytes += out.scalar_bytes
    return out
