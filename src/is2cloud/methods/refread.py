"""The fast path of the virtual methods' reader: chunk references in, exact byte ranges out.

A virtual store (notebook 04's Icechunk repository) and a kerchunk reference set (notebook 05) both
say, for every chunk of every array, which bytes of the HDF5 object hold it. Reading through Zarr
(:func:`is2cloud.methods.lazyread.read_granule_group`) pays for that indirection in CPU: one
coroutine, codec pipeline and store request per chunk. :func:`read_references` asks the store for the
references themselves (:class:`GranuleRefs`: each array's Zarr metadata and its chunks' ``(offset,
length)``), then, for :data:`GRANULES_AT_ONCE` granules at a time (their reference documents fetched
for the group and let go after it, :meth:`GranuleRefs.load`):

1. each beam's ``latitude`` and ``longitude`` chunks, adjacent ranges coalesced into one GET
   (:func:`is2cloud.methods.ranges.coalesce`, no gap bytes), all fetched concurrently and decoded as
   they arrive (:func:`is2cloud.methods.ranges.fetch_ranges`, :class:`is2cloud.methods.ranges.Codec`,
   the chunk index's fetcher and decoder); every response's ETag is checked against the granule's;
2. the rows inside the AOI (a bounding-box test first, then :meth:`is2cloud.aoi.AOI.contains` on the
   candidates only: the same boundary rule, a fraction of the CPU);
3. only the chunks of the other variables that hold those rows, fetched the same way.

The result is what :func:`~is2cloud.methods.lazyread.read_granule_group` returns, value for value. A
granule whose references this path cannot read (a codec other than deflate/shuffle/fletcher32, chunks
in another object or in the store itself) is read through Zarr instead (:meth:`GranuleRefs.zarr_group`).
"""

from __future__ import annotations

import asyncio
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from is2cloud.aoi import AOI
from is2cloud.methods.baseline import DEFAULT_VARIABLES, GROUP, GranuleReadError, MissingVariableError
from is2cloud.methods.lazyread import (
    COMPACT_ATTR,
    SCALARS,
    SCALARS_ATTR,
    CompactVariableError,
    granule_columns,
    inside_aoi,
)
from is2cloud.methods.ranges import Codec, ObjectId, RangeError, RangeRequest, coalesce, fetch_ranges, run_sync
from is2cloud.methods.schema import TRACK_IDS

__all__ = ["ArrayRefs", "GranuleRefs", "UnsupportedReferences", "codec_from_zarr", "read_references"]

_COORDS = ("latitude", "longitude")
MAX_RANGE = 8 * 2**20  # coalesced ranges stay below this, so that big reads still run in parallel


class UnsupportedReferences(Exception):
    """References this path cannot read (the granule is read through Zarr instead)."""


@dataclass(frozen=True)
class ArrayRefs:
    """One array's chunk references: chunk ``i`` holds rows ``i * chunk_rows`` onwards and is stored at
    ``offsets[i]:offsets[i] + lengths[i]`` of the granule object, or inline (``inline[i]``, its stored
    bytes), or nowhere (offset -1 and not inline: never written, the fill value)."""

    path: str
    shape: tuple[int, ...]
    chunk_rows: int
    codec: Codec
    offsets: np.ndarray
    lengths: np.ndarray
    inline: Mapping[int, bytes] = field(default_factory=dict)

    @property
    def nrows(self) -> int:
        return int(self.shape[0]) if self.shape else 1

    @property
    def nchunks(self) -> int:
        return -(-self.nrows // self.chunk_rows) if self.nrows else 0

    def rows_in(self, chunk: int) -> int:
        return min(self.chunk_rows, self.nrows - chunk * self.chunk_rows)


class GranuleRefs(ABC):
    """One granule's references, as the store keeps them: ``name``, ``obj`` (the HDF5 object every
    chunk lies in: its ETag is checked on every read) and asynchronous lookups by path inside the
    granule (``gt1l/land_ice_segments/latitude``)."""

    name: str
    obj: ObjectId

    @abstractmethod
    async def group_attrs(self, path: str) -> dict[str, Any] | None:
        """The attributes of the group at ``path`` (``""``: the granule), None when there is no group."""

    @abstractmethod
    async def array(self, path: str) -> ArrayRefs | None:
        """The references of the array at ``path``, None when there is no array; raises
        :class:`UnsupportedReferences` for one this path cannot read."""

    @abstractmethod
    def zarr_group(self) -> Any:
        """The granule as a Zarr group (for :func:`~is2cloud.methods.lazyread.read_granule_group`)."""

    async def load(self) -> None:  # a hook: most stores keep nothing to load
        """Fetch what the lookups need (called for each group of granules before it is read)."""

    def release(self) -> None:
        """Let go of what :meth:`load` fetched (called once the granule's group is read)."""


# -- Zarr metadata -> Codec --------------------------------------------------------------------------------


def _filter(name: str, config: Mapping[str, Any], dtype: np.dtype) -> tuple[Any, ...]:
    name = name.removeprefix("numcodecs.")
    if name == "zlib":
        return ("deflate", int(config.get("level", 6)))
    if name == "shuffle":
        return ("shuffle", int(config.get("elementsize") or dtype.itemsize))
    if name == "fletcher32":
        return ("fletcher32",)
    raise UnsupportedReferences(f"codec {name!r}")


def codec_from_zarr(meta: Mapping[str, Any]) -> tuple[Codec, tuple[int, ...], int]:
    """The :class:`~is2cloud.methods.ranges.Codec`, shape and rows per chunk of an array from its Zarr
    metadata (v2 ``.zarray`` or v3 ``zarr.json``). Arrays chunked along rows only, HDF5's filters only
    (deflate, shuffle, fletcher32); anything else raises :class:`UnsupportedReferences`."""
    try:
        if meta.get("zarr_format") == 3:
            dtype = np.dtype(meta["data_type"])
            codecs = list(meta.get("codecs") or [])
            if not codecs or codecs[0].get("name") != "bytes":
                raise UnsupportedReferences(f"codecs {codecs}")
            endian = (codecs[0].get("configuration") or {}).get("endian", "little")
            dtype = dtype.newbyteorder("<" if endian == "little" else ">")
            filters = [_filter(c["name"], c.get("configuration") or {}, dtype) for c in codecs[1:]]
            chunks = list(meta["chunk_grid"]["configuration"]["chunk_shape"])
        else:
            if meta.get("order", "C") != "C" or not isinstance(meta.get("dtype"), str):
                raise UnsupportedReferences("not a C-ordered array of a simple dtype")
            dtype = np.dtype(meta["dtype"])
            pipeline = list(meta.get("filters") or []) + ([meta["compressor"]] if meta.get("compressor") else [])
            filters = [_filter(c["id"], c, dtype) for c in pipeline]
            chunks = list(meta["chunks"])
        shape = tuple(int(n) for n in meta["shape"])
        fill = meta.get("fill_value")
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsupportedReferences(f"metadata {exc}") from None
    if len(chunks) != len(shape) or (shape and list(chunks[1:]) != list(shape[1:])):
        raise UnsupportedReferences(f"chunks {chunks} of shape {shape} (only row chunks are read here)")
    fill_hex = "" if fill is None else np.array(float(fill) if isinstance(fill, str) else fill,
                                                dtype=dtype).tobytes().hex()
    rows = int(chunks[0]) if chunks else 1
    text = json.dumps({"dtype": dtype.str, "row_shape": list(shape[1:]), "chunk_rows": rows,
                       "filters": [list(f) for f in filters], "fill": fill_hex}, separators=(",", ":"))
    return Codec.from_json(text), shape, rows


# -- the reader ----------------------------------------------------------------------------------------------


@dataclass
class _Beam:
    granule: int
    beam: str
    arrays: dict[str, ArrayRefs]
    rows: np.ndarray | None = None
    values: dict[str, np.ndarray] = field(default_factory=dict)


async def _gather(coros: Sequence[Any], limit: int = 64) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros), return_exceptions=True))


async def _describe(g: GranuleRefs, variables: Sequence[str]) -> list[_Beam]:
    """Every beam's arrays (those of ``variables``), checked: missing or COMPACT variables and arrays
    whose lengths differ are errors naming the granule and variable."""
    groups = await asyncio.gather(*(g.group_attrs(f"{b}/{GROUP}") for b in TRACK_IDS))
    beams = [b for b, attrs in zip(TRACK_IDS, groups) if attrs is not None]
    paths = [f"{b}/{GROUP}/{v}" for b in beams for v in variables]
    arrays = dict(zip(paths, await asyncio.gather(*(g.array(p) for p in paths))))
    out = []
    for b, attrs in zip(TRACK_IDS, groups):
        if attrs is None:
            continue
        mine = {}
        for v in variables:
            path = f"{b}/{GROUP}/{v}"
            arr = arrays[path]
            if arr is None:
                parent, _, leaf = path.rpartition("/")
                compact = (attrs if parent == f"{b}/{GROUP}" else (await g.group_attrs(parent) or {})).get(
                    COMPACT_ATTR) or []
                if leaf in compact:
                    raise CompactVariableError(
                        f"{g.name}: the variable /{path} is stored COMPACT in the HDF5 file (its bytes are in the "
                        "object header, which a virtual reference cannot point at) and its values were not "
                        "materialised when the store was prepared (it would read as zeros)")
                raise MissingVariableError(f"{g.name}: the variable /{path} is missing from the store")
            mine[v] = arr
        n = mine["latitude"].nrows
        for v, arr in mine.items():
            if len(arr.shape) != 1 or arr.shape[0] != n:
                raise GranuleReadError(f"{g.name}: {b}/{GROUP}/{v} has shape {arr.shape}, expected ({n},)")
        out.append(_Beam(-1, b, mine))
    return out


async def _scalars(g: GranuleRefs) -> tuple[dict[str, Any], dict[str, ArrayRefs]]:
    """The granule scalars the prepare step materialised, and the references of the others."""
    stored = (await g.group_attrs("") or {}).get(SCALARS_ATTR) or {}
    values: dict[str, Any] = {}
    for name in SCALARS:
        if name in stored:
            value = stored[name]
            values[name] = np.asarray(value["value"], dtype=value["dtype"])[()] if isinstance(value, dict) else value
    todo = [n for n in SCALARS if n not in values]
    arrays = dict(zip(todo, await asyncio.gather(*(g.array(SCALARS[n]) for n in todo))))
    for name, arr in arrays.items():
        if arr is None:
            raise MissingVariableError(f"{g.name}: the variable /{SCALARS[name]} is missing from the store")
    return values, arrays  # type: ignore[return-value]


class _Fetcher:
    """Collects chunk pieces (granule object, array, chunk), then fetches them: coalesced ranges, one
    GET each, concurrently, each piece decoded as its range arrives."""

    def __init__(self, granules: Sequence[GranuleRefs]):
        self.granules = granules
        self.wanted: list[tuple[int, ArrayRefs, int]] = []
        self.got: dict[tuple[int, str, int], np.ndarray] = {}

    def want(self, gi: int, arr: ArrayRefs, chunks: Any) -> None:
        for c in chunks:
            self.wanted.append((gi, arr, int(c)))

    def _decode(self, gi: int, arr: ArrayRefs, c: int, stored: Any) -> None:
        try:
            values = arr.codec.fill_rows(arr.rows_in(c)) if stored is None else arr.codec.decode(stored, arr.rows_in(c))
        except Exception as exc:
            raise GranuleReadError(f"{self.granules[gi].name}: cannot decode chunk {c} of /{arr.path}: "
                                   f"{type(exc).__name__}: {exc}") from None
        self.got[(gi, arr.path, c)] = values

    def run(self, credentials: Any, concurrency: int, workers: int | None) -> None:
        by_obj: dict[int, list[tuple[int, int, ArrayRefs, int]]] = {}
        for gi, arr, c in self.wanted:
            if (gi, arr.path, c) in self.got:
                continue
            off = int(arr.offsets[c]) if c < len(arr.offsets) else -1
            if c in arr.inline:
                self._decode(gi, arr, c, arr.inline[c])
            elif off < 0:
                self._decode(gi, arr, c, None)
            else:
                by_obj.setdefault(gi, []).append((off, int(arr.lengths[c]), arr, c))
        self.wanted = []
        requests: list[RangeRequest] = []
        pieces: list[list[tuple[int, int, int, ArrayRefs, int]]] = []  # per request: (granule, at, n, array, chunk)
        for gi, items in by_obj.items():
            items.sort(key=lambda t: t[0])
            merged = coalesce([(o, o + n) for o, n, _, _ in items], max_gap=0, max_size=MAX_RANGE)
            starts = np.array([a for a, _ in merged])
            slots: list[list[tuple[int, int, int, ArrayRefs, int]]] = [[] for _ in merged]
            for o, n, arr, c in items:
                i = int(np.searchsorted(starts, o, side="right")) - 1
                slots[i].append((gi, o - merged[i][0], n, arr, c))
            for (a, b), slot in zip(merged, slots):
                requests.append(RangeRequest(self.granules[gi].obj, a, b))
                pieces.append(slot)

        def process(i: int, data: bytes) -> None:
            view = memoryview(data)
            for gi, at, n, arr, c in pieces[i]:
                self._decode(gi, arr, c, view[at:at + n])

        fetch_ranges(credentials, requests, concurrency=concurrency, process=process,
                     workers=workers or min(8, os.cpu_count() or 1))

    def drop(self, gi: int, arr: ArrayRefs) -> None:
        """Let go of the decoded chunks of ``arr`` (once its rows are taken)."""
        for c in range(arr.nchunks):
            self.got.pop((gi, arr.path, c), None)

    def rows(self, gi: int, arr: ArrayRefs, rows: np.ndarray | None = None) -> np.ndarray:
        """``arr[rows]`` (all rows when None) from the decoded chunks."""
        if rows is None:
            parts = [self.got[(gi, arr.path, c)] for c in range(arr.nchunks)]
            return np.concatenate(parts) if parts else np.empty((0, *arr.shape[1:]), arr.codec.dtype)
        pos = rows // arr.chunk_rows
        chunks = np.unique(pos)
        cat = np.concatenate([self.got[(gi, arr.path, int(c))] for c in chunks])
        starts = np.concatenate([[0], np.cumsum([arr.rows_in(int(c)) for c in chunks])[:-1]]).astype("i8")
        return cat[starts[np.searchsorted(chunks, pos)] + rows % arr.chunk_rows]


# Granules read together: their coordinates are decoded whole before the AOI is known (~14 MB per full-length
# ATL06 granule), so a group holds that much per granule until its rows inside are taken. 32 at a time held
# ~450 MB at bench scale; 8 hold ~110 MB, and at book scale (28 granules: 4 groups instead of 1) the virtual
# query took as long (9.2 s against 9.6 s, one run each on a loaded machine)
GRANULES_AT_ONCE = 8


def read_references(granules: Sequence[GranuleRefs], aoi: AOI, variables: Sequence[str] = DEFAULT_VARIABLES, *,
                    credentials: Any, concurrency: int = 64, workers: int | None = None,
                    at_once: int | None = None) -> list[dict[str, np.ndarray]]:
    """The rows inside ``aoi`` of each granule (one dict of columns per granule, as
    :func:`~is2cloud.methods.lazyread.read_granule_group` gives, ``{}`` when none), read from their
    references (see the module docstring), ``at_once`` (default :data:`GRANULES_AT_ONCE`) granules at a
    time. ``credentials`` read the granule objects; ``concurrency`` GETs at once, decoded in ``workers``
    threads. Errors name the granule and the variable: :class:`~is2cloud.methods.baseline.MissingVariableError`,
    :class:`CompactVariableError`, :class:`~is2cloud.methods.baseline.GranuleReadError` (a read that
    failed, or an object that changed: the message says so)."""
    at_once = GRANULES_AT_ONCE if at_once is None else at_once
    if at_once < 1:
        raise ValueError(f"at_once must be at least 1, not {at_once}")
    out: list[dict[str, np.ndarray]] = []
    for i in range(0, len(granules), at_once):
        out += _read_group(granules[i:i + at_once], aoi, variables, credentials=credentials,
                           concurrency=concurrency, workers=workers)
    return out


def _read_group(granules: Sequence[GranuleRefs], aoi: AOI, variables: Sequence[str], *, credentials: Any,
                concurrency: int, workers: int | None) -> list[dict[str, np.ndarray]]:
    try:
        return _read_loaded(granules, aoi, variables, credentials=credentials, concurrency=concurrency,
                            workers=workers)
    finally:
        for g in granules:
            g.release()


def _read_loaded(granules: Sequence[GranuleRefs], aoi: AOI, variables: Sequence[str], *, credentials: Any,
                 concurrency: int, workers: int | None) -> list[dict[str, np.ndarray]]:
    from is2cloud.methods.lazyread import read_granule_group

    async def describe_all() -> list[Any]:
        loaded = await _gather([g.load() for g in granules], limit=16)
        failed = [e for e in loaded if isinstance(e, BaseException)]
        if failed:
            raise failed[0]
        return await _gather([_describe(g, variables) for g in granules])

    described = run_sync(describe_all())
    fallback = {i for i, d in enumerate(described) if isinstance(d, UnsupportedReferences)}
    errors = [d for d in described if isinstance(d, BaseException) and not isinstance(d, UnsupportedReferences)]
    if errors:
        raise errors[0]
    beams: list[_Beam] = []
    for gi, found in enumerate(described):
        if gi in fallback:
            continue
        for b in found:
            b.granule = gi
            beams.append(b)
    fetcher = _Fetcher(granules)
    try:
        for b in beams:
            for v in _COORDS:
                arr = b.arrays[v]
                fetcher.want(b.granule, arr, range(arr.nchunks))
        fetcher.run(credentials, concurrency, workers)
        for b in beams:
            lat, lon = (fetcher.rows(b.granule, b.arrays[v]) for v in _COORDS)
            for v in _COORDS:  # the whole beam's coordinates are not kept past the rows inside
                fetcher.drop(b.granule, b.arrays[v])
            rows = np.flatnonzero(inside_aoi(aoi, lon, lat))
            if len(rows):
                b.rows = rows
                b.values.update(latitude=lat[rows], longitude=lon[rows])
                for v, arr in b.arrays.items():
                    if v not in _COORDS:
                        fetcher.want(b.granule, arr, np.unique(rows // arr.chunk_rows))
        hit = sorted({b.granule for b in beams if b.rows is not None})
        scal = run_sync(_gather([_scalars(granules[gi]) for gi in hit]))
        for s in scal:
            if isinstance(s, BaseException):
                raise s
        scalars: dict[int, dict[str, Any]] = {}
        for gi, (values, arrays) in zip(hit, scal):
            scalars[gi] = values
            for arr in arrays.values():
                fetcher.want(gi, arr, [0])
        fetcher.run(credentials, concurrency, workers)
    except RangeError as exc:
        raise GranuleReadError(str(exc)) from None
    for gi, (values, arrays) in zip(hit, scal):
        for name, arr in arrays.items():
            scalars[gi][name] = fetcher.got[(gi, arr.path, 0)].ravel()[0]
    out: list[dict[str, np.ndarray]] = [{} for _ in granules]
    parts: dict[int, list[tuple[str, np.ndarray, dict[str, np.ndarray]]]] = {}
    for b in beams:
        if b.rows is None:
            continue
        for v, arr in b.arrays.items():
            if v not in _COORDS:
                b.values[v] = fetcher.rows(b.granule, arr, b.rows)
        parts.setdefault(b.granule, []).append((b.beam, b.rows, b.values))
    for gi, beam_parts in parts.items():
        out[gi] = granule_columns(beam_parts, scalars[gi], variables, granule=granules[gi].name)
    for gi in sorted(fallback):
        out[gi] = read_granule_group(granules[gi].zarr_group(), aoi, variables, granule=granules[gi].name)
    return out
