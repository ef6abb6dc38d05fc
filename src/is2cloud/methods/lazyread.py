"""The shared reader of the virtual methods: one granule's Zarr group in, the AOI's rows out.

Notebooks 04 (an Icechunk store of DMR++/HDF5 references) and 05 (kerchunk reference sets) end the
same way: a Zarr group that mirrors one HDF5 granule (``gtx/land_ice_segments/...``,
``orbit_info/...``, ``ancillary_data/...``), whatever store serves it (an Icechunk session store, a
VirtualiZarr ``ManifestStore``, a kerchunk reference filesystem). :func:`read_granule_group` reads it
lazily, chunk by chunk:

1. for each beam, ``latitude`` and ``longitude`` whole (all their chunks), and the rows inside the
   AOI with :meth:`is2cloud.aoi.AOI.contains` (boundary points inside, the antimeridian handled);
2. only the chunks of the other requested variables that hold those rows: each variable is sliced
   by chunk-aligned row ranges (consecutive chunks merged), so Zarr fetches just those chunks;
3. the granule scalars (``rgt``, ``cycle_number``, ``atlas_sdp_gps_epoch``): from the group's
   attributes when the prepare step materialised them (:data:`SCALARS_ATTR`), else from their arrays,
   and only when some row is inside.

It returns the per-granule columns of :func:`is2cloud.methods.baseline.clip_granule`, so
:func:`is2cloud.methods.baseline.assemble` builds the canonical frame: the same rows as the baseline.
Values are decoded as h5py decodes them: Zarr arrays read raw (no CF masking or scaling: a fill value
stays the stored number), time through :func:`is2cloud.methods.schema.atlas_time_ns`.

HDF5 COMPACT datasets keep their bytes in the object header, not in a chunk, so a virtual reference
cannot point at them: VirtualiZarr's parsers give an empty manifest (the array reads as zeros) and a
DMR++ parser skips them. A prepare step marks such an array with :data:`COMPACT_ATTR` (or materialises
its values); asking for a marked array raises :class:`CompactVariableError`, never zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from is2cloud.aoi import AOI
from is2cloud.methods.baseline import DEFAULT_VARIABLES, EPOCH, GROUP, ORBIT, GranuleReadError, MissingVariableError
from is2cloud.methods.chunks import chunk_runs
from is2cloud.methods.schema import TRACK_IDS, atlas_time_ns

__all__ = ["COMPACT_ATTR", "SCALARS", "SCALARS_ATTR", "CompactVariableError", "MissingVariableError",
           "granule_columns", "inside_aoi", "read_granules", "read_granule_group", "read_rows", "read_scalars"]

COMPACT_ATTR = "is2cloud:compact"  # group attribute: names of its COMPACT arrays whose data is not in the store
SCALARS_ATTR = "is2cloud:scalars"  # group attribute: {"rgt": .., "cycle_number": .., "atlas_sdp_gps_epoch": ..}
# the granule scalars: short name -> path in the granule
SCALARS: dict[str, str] = {"rgt": ORBIT["rgt"].strip("/"), "cycle_number": ORBIT["cycle"].strip("/"),
                           "atlas_sdp_gps_epoch": EPOCH.strip("/")}


class CompactVariableError(GranuleReadError):
    """A requested variable is stored COMPACT in the HDF5 file and its values are not in the store."""


def _array(group: Any, path: str, granule: str) -> Any:
    """The Zarr array at ``path`` below ``group``: :class:`CompactVariableError` if its group lists it as
    COMPACT (not materialised), :class:`MissingVariableError` if there is none."""
    import zarr

    try:
        arr = group[path]
    except KeyError:
        arr = None
    if isinstance(arr, zarr.Array):
        return arr
    parent, _, leaf = path.rpartition("/")
    try:
        compact = (group[parent] if parent else group).attrs.get(COMPACT_ATTR) or []
    except KeyError:
        compact = []
    if leaf in compact:
        raise CompactVariableError(f"{granule}: the variable /{path} is stored COMPACT in the HDF5 file (its bytes "
                                   "are in the object header, which a virtual reference cannot point at) and its "
                                   "values were not materialised when the store was prepared (it would read as "
                                   "zeros)")
    raise MissingVariableError(f"{granule}: the variable /{path} is missing from the store")


READ_RETRIES = 3  # further tries of a read cut short (a connection reset, a 5xx the store did not retry)


def _transient(exc: BaseException) -> bool:
    """A failure worth another try: a connection cut or a server error (an OSError, or Icechunk's
    StorageError, which reports a body cut mid-way as "streaming error"), not a missing or refused object."""
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return False
    return isinstance(exc, OSError) or type(exc).__name__ == "StorageError"


async def retry_transient(attempt: Any) -> Any:
    """``await attempt()``, tried again (``READ_RETRIES`` times at most, with backoff) while it fails
    :func:`_transient`-ly; the last failure is raised as it is."""
    import asyncio

    delay = 0.05
    for tries in range(READ_RETRIES + 1):
        try:
            return await attempt()
        except Exception as exc:
            if not (_transient(exc) and tries < READ_RETRIES):
                raise
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def retry_transient_sync(attempt: Any) -> Any:
    """``attempt()``, tried again like :func:`retry_transient` (for synchronous calls, e.g. opening an
    Icechunk repository: a reset mid-body there is not retried by Icechunk itself)."""
    import time

    delay = 0.05
    for tries in range(READ_RETRIES + 1):
        try:
            return attempt()
        except Exception as exc:
            if not (_transient(exc) and tries < READ_RETRIES):
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


async def _aread(arr: Any, sel: Any, granule: str) -> np.ndarray:
    import asyncio

    delay = 0.05
    for attempt in range(READ_RETRIES + 1):
        try:
            return np.asarray(await arr._async_array.getitem(sel))
        except Exception as exc:
            if _transient(exc) and attempt < READ_RETRIES:
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if not isinstance(exc, (OSError, ValueError, RuntimeError)) and not _transient(exc):
                raise
            tries = f" (after {attempt + 1} attempts)" if attempt else ""
            raise GranuleReadError(f"{granule}: cannot read {arr.path}{tries}: {type(exc).__name__}: {exc}") from exc
    raise AssertionError("unreachable")


def _read(arr: Any, sel: Any, granule: str) -> np.ndarray:
    from zarr.core.sync import sync

    return sync(_aread(arr, sel, granule))


def read_scalars(group: Any, *, granule: str) -> dict[str, Any]:
    """The granule scalars (``rgt``, ``cycle_number``, ``atlas_sdp_gps_epoch``): the values the prepare
    step stored in the group's :data:`SCALARS_ATTR` attribute, else the first element of each array."""
    stored: Mapping[str, Any] = group.attrs.get(SCALARS_ATTR) or {}
    out: dict[str, Any] = {}
    for name, path in SCALARS.items():
        if name in stored:
            value = stored[name]
            out[name] = np.asarray(value["value"], dtype=value["dtype"])[()] if isinstance(value, dict) else value
        else:
            out[name] = _read(_array(group, path, granule), slice(None), granule).ravel()[0]
    return out


async def _aread_rows(arr: Any, rows: np.ndarray, granule: str) -> np.ndarray:
    import asyncio

    runs = chunk_runs(rows, arr.chunks[0], arr.shape[0])
    out = np.empty((len(rows), *arr.shape[1:]), dtype=arr.dtype)
    pieces = await asyncio.gather(*(_aread(arr, slice(a, b), granule) for a, b in runs))
    for (start, stop), piece in zip(runs, pieces):
        lo, hi = np.searchsorted(rows, [start, stop])
        out[lo:hi] = piece[rows[lo:hi] - start]
    return out


def read_rows(arr: Any, rows: np.ndarray, *, granule: str) -> np.ndarray:
    """``arr[rows]`` read by chunk-aligned ranges (:func:`chunk_runs`, fetched concurrently): only the
    chunks holding ``rows`` (sorted row indices)."""
    from zarr.core.sync import sync

    return sync(_aread_rows(arr, np.asarray(rows), granule))


def inside_aoi(aoi: AOI, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """:meth:`AOI.contains` (the book's boundary rule), tried only on the points inside one of the AOI's
    bounding boxes: the same mask, for a fraction of the CPU on a long beam that mostly lies outside."""
    cand = np.zeros(np.shape(lon), dtype=bool)
    for w, s, e, n in aoi.bboxes:
        cand |= (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n)
    out = np.zeros(np.shape(lon), dtype=bool)
    if cand.any():
        out[cand] = aoi.contains(lon[cand], lat[cand])
    return out


def _open_beam(group: Any, beam: str, variables: Sequence[str], granule: str) -> dict[str, Any] | None:
    """A beam's arrays (opened here, outside Zarr's event loop), or None when it has no segments group."""
    path = f"{beam}/{GROUP}"
    try:
        group[path]
    except KeyError:
        return None
    arrays = {v: _array(group, f"{path}/{v}", granule) for v in variables}
    n = arrays["latitude"].shape[0]
    for v, arr in arrays.items():
        if len(arr.shape) != 1 or arr.shape[0] != n:
            raise GranuleReadError(f"{granule}: {path}/{v} has shape {arr.shape}, expected ({n},)")
    return arrays


async def _abeam(arrays: dict[str, Any] | None, aoi: AOI, granule: str
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """One beam: its coordinates whole, then the AOI rows of the other variables, all concurrently."""
    import asyncio

    if arrays is None:
        return None
    lat, lon = await asyncio.gather(_aread(arrays["latitude"], slice(None), granule),
                                    _aread(arrays["longitude"], slice(None), granule))
    rows = np.flatnonzero(inside_aoi(aoi, lon, lat))
    if not len(rows):
        return None
    others = [v for v in arrays if v not in ("latitude", "longitude")]
    got = await asyncio.gather(*(_aread_rows(arrays[v], rows, granule) for v in others))
    return rows, {"latitude": lat[rows], "longitude": lon[rows], **dict(zip(others, got))}


def read_granule_group(group: Any, aoi: AOI, variables: Sequence[str] = DEFAULT_VARIABLES, *,
                       granule: str) -> dict[str, np.ndarray]:
    """The rows of one granule's Zarr ``group`` inside ``aoi``: the columns of
    :func:`is2cloud.methods.baseline.clip_granule` (``{}`` when no row is inside). ``variables`` are
    below ``gtx/land_ice_segments`` and include the canonical ones
    (:func:`is2cloud.methods.baseline.check_variables`). Beams without ``land_ice_segments`` give no rows.
    The beams are read concurrently (Zarr's asynchronous API). Raises :class:`MissingVariableError`,
    :class:`CompactVariableError` or :class:`~is2cloud.methods.baseline.GranuleReadError`, each naming
    the granule and the variable."""
    import asyncio

    from zarr.core.sync import sync

    beams = [_open_beam(group, b, variables, granule) for b in TRACK_IDS]

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(_abeam(arrays, aoi, granule) for arrays in beams)))

    got = [(beam, *g) for beam, g in zip(TRACK_IDS, sync(main())) if g is not None]
    if not got:
        return {}
    return granule_columns(got, read_scalars(group, granule=granule), variables, granule=granule)


def granule_columns(beams: Sequence[tuple[str, np.ndarray, Mapping[str, np.ndarray]]], scalars: Mapping[str, Any],
                    variables: Sequence[str], *, granule: str) -> dict[str, np.ndarray]:
    """The columns of :func:`is2cloud.methods.baseline.clip_granule` from each beam's ``(beam, rows,
    {variable: values at rows})`` and the granule scalars (:func:`read_scalars`); ``{}`` without rows."""
    from is2cloud.methods.baseline import _column

    parts: list[dict[str, np.ndarray]] = []
    for beam, rows, values in beams:
        k = len(rows)
        if not k:
            continue
        cols = {_column(v): values[v] for v in variables if v != "delta_time"}
        cols["time"] = atlas_time_ns(values["delta_time"], float(scalars["atlas_sdp_gps_epoch"]))
        cols["track_id"] = np.repeat(np.array([beam], dtype=object), k)
        cols["rgt"] = np.repeat(scalars["rgt"], k)
        cols["cycle"] = np.repeat(scalars["cycle_number"], k)
        cols["granule"] = np.repeat(np.array([granule], dtype=object), k)
        parts.append(cols)
    if not parts:
        return {}
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}


def read_granules(open_group: Any, names: Sequence[str], aoi: AOI, variables: Sequence[str] = DEFAULT_VARIABLES, *,
                  client: Any = None, progress: bool | None = None, label: str = "granules",
                  workers: int = 8) -> list[dict[str, np.ndarray]]:
    """:func:`read_granule_group` for every granule: ``open_group(name)`` gives its Zarr group. Granules
    run in a thread pool of ``workers`` (Zarr's I/O is asynchronous, so threads overlap the waits), or
    one after the other with ``client="sync"``. Every granule is tried; a single failure is re-raised as
    it is (its message names the granule), several of one kind as one error of that kind listing them."""
    from concurrent.futures import ThreadPoolExecutor

    from is2cloud.progress import Progress

    bar = Progress(len(names), label, progress)

    def one(name: str) -> tuple[bool, Any]:
        try:
            out = (True, read_granule_group(open_group(name), aoi, variables, granule=name))
        except Exception as exc:  # collected, re-raised below
            out = (False, exc)
        bar.update(out[0])
        return out

    if client == "sync" or len(names) < 2:
        outcomes = [one(n) for n in names]
    else:
        with ThreadPoolExecutor(max(1, min(workers, len(names))), thread_name_prefix="is2cloud-lazyread") as pool:
            outcomes = list(pool.map(one, names))
    failures = [exc for ok, exc in outcomes if not ok]
    if len(failures) == 1:
        raise failures[0]
    if failures:
        kinds = {type(e) for e in failures}
        cls = kinds.pop() if len(kinds) == 1 else GranuleReadError
        raise cls(f"{len(failures)} of {len(names)} granules failed:\n" + "\n".join(f"  - {e}" for e in failures))
    return [value for _, value in outcomes]
