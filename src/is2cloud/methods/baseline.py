"""The baseline: open each granule the earthaccess way, read whole beams, clip to the AOI.

>>> granules = find_granules("data/greenland_aoi.geojson", "ATL06")             # doctest: +SKIP
>>> gdf = subset(granules, "data/greenland_aoi.geojson", config="blockcache")   # doctest: +SKIP

The method protocol (:mod:`is2cloud.methods.protocol`): there is nothing to prepare (:func:`prepare`
returns None), and :func:`subset` takes the granules themselves.

For every granule: open the object as a file the way ``earthaccess.open`` does in AWS (an s3fs file with
earthaccess's open options, from the DAAC's temporary S3 credentials in earthdata mode, from the embedded
cloud's in local mode), open it with h5py, read the
whole of each beam's ``gtx/land_ice_segments`` variables and ``/orbit_info``, keep the rows inside the
AOI (:meth:`is2cloud.aoi.AOI.contains`, boundary points inside) and return the canonical schema
(:mod:`is2cloud.methods.schema`). Granules fan out with :func:`is2cloud.parallel.map_granules`; the
s3fs filesystem is built inside each worker from the (picklable) credentials.

Two configurations of the file objects, named for the cache they use, both measured by the book
(the prose calls them *naive* and *tuned*, and those names are accepted too):

* ``readahead`` (naive): what a newcomer gets from ``fs.open(url)``: s3fs's defaults (read from s3fs:
  a ``readahead`` cache of ``S3FileSystem.default_block_size``, 50 MiB in s3fs 2026.9);
* ``blockcache`` (tuned): what earthaccess does: a ``blockcache`` whose block size depends on the object
  size (4 MiB below 100 MiB, 8 MiB below 1 GiB, 16 MiB above; :func:`earthaccess_block_size`).
  (earthaccess 0.19's own default is ``background``, the same block cache that also prefetches the
  next block.)

:func:`aoi_physical_limit` gives the physical limit of the same subset (the compressed bytes of the
chunks that hold rows inside the AOI, :mod:`is2cloud.methods.chunks`), which the bench records as
``physical_bytes``; :func:`benchmark` measures both configurations for ``make bench``.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import h5py
import numpy as np

from is2cloud.aoi import AOI, AOIError, load_aoi
from is2cloud.catalog import NoGranulesError
from is2cloud.methods.chunks import PhysicalLimit, chunk_runs, physical_limit
from is2cloud.methods.schema import (
    ATL06_VARIABLES,
    CANONICAL_COLUMNS,
    TRACK_IDS,
    atlas_time_ns,
    canonical_frame,
    empty_frame,
    sort_canonical,
)
from is2cloud.parallel import blocks_released, map_granules, release_heap
from is2cloud.settings import get_settings

__all__ = ["CHAPTER", "CONFIGS", "DEFAULT_VARIABLES", "DESCRIPTION", "NAME", "PROSE", "TITLE", "GranuleReadError",
           "GranuleSource", "MissingVariableError", "aoi_physical_limit", "benchmark", "clip_granule",
           "earthaccess_block_size", "granule_source", "open_granule", "open_options", "prepare", "read_granule",
           "subset"]

NAME = "baseline"
TITLE = "baseline (earthaccess)"
DESCRIPTION = "open each granule as a file (as earthaccess.open does), read whole beams with h5py, clip to the AOI"
CHAPTER = "notebooks/03_baseline_earthaccess"

Config = Literal["readahead", "blockcache", "naive", "tuned"]
Rows = Literal["all", "aoi-chunks"]  # what clip_granule reads of a beam
# clip_granule's read-ahead hook: the (dataset, [(start, stop), ...]) row ranges about to be read
Prefetch = Callable[[list[tuple[h5py.Dataset, list[tuple[int, int]]]]], None]
CONFIGS: tuple[str, ...] = ("readahead", "blockcache")
PROSE: dict[str, str] = {"readahead": "naive", "blockcache": "tuned"}  # the words the book's prose uses
_ALIASES = {v: k for k, v in PROSE.items()}
DEFAULT_VARIABLES: tuple[str, ...] = ATL06_VARIABLES
GROUP = "land_ice_segments"
EPOCH = "/ancillary_data/atlas_sdp_gps_epoch"
ORBIT = {"rgt": "/orbit_info/rgt", "cycle": "/orbit_info/cycle_number"}
_MiB = 2**20


class GranuleReadError(RuntimeError):
    """A granule could not be read; the message names the granule and says why."""


class MissingVariableError(GranuleReadError):
    """A requested variable is not in the granule."""


# -- open options -----------------------------------------------------------------------------------


def earthaccess_block_size(size: int) -> int:
    """The block size earthaccess picks for an object of ``size`` bytes (4, 8 or 16 MiB)."""
    if size < 100 * _MiB:
        return 4 * _MiB
    if size < 1024 * _MiB:
        return 8 * _MiB
    return 16 * _MiB


def s3fs_defaults() -> dict[str, Any]:
    """What ``S3FileSystem().open(url)`` uses when given nothing: read from s3fs itself."""
    import s3fs

    params = inspect.signature(s3fs.S3FileSystem.__init__).parameters
    return {"cache_type": params["default_cache_type"].default, "block_size": s3fs.S3FileSystem.default_block_size}


def open_options(config: Config, size: int) -> dict[str, Any]:
    """``fs.open`` keyword arguments of a configuration for an object of ``size`` bytes."""
    config = _check_config(config)
    if config == "readahead":
        return s3fs_defaults()
    return {"cache_type": "blockcache", "block_size": earthaccess_block_size(size)}


def _check_config(config: Any) -> Config:
    """The configuration's name (``naive``/``tuned`` are accepted for ``readahead``/``blockcache``)."""
    config = _ALIASES.get(config, config)
    if config not in CONFIGS:
        choices = ", ".join(f"{c!r} ({PROSE[c]})" for c in CONFIGS)
        raise ValueError(f"config must be one of {choices}, not {config!r}")
    return config


# -- what to open -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GranuleSource:
    """One granule to read: its name, its URL (``s3://bucket/key``) or local path, and what the catalog
    says about it (size in bytes, MD5), when known."""

    name: str
    url: str
    size: int | None = None
    md5: str | None = None


def granule_source(granule: Any) -> GranuleSource:
    """A :class:`GranuleSource` from an ``earthaccess.DataGranule``, an ``s3://`` URL or a local path."""
    from is2cloud.parallel import granule_name

    if isinstance(granule, GranuleSource):
        return granule
    if isinstance(granule, (str, os.PathLike)):
        url = os.fspath(granule)
        return GranuleSource(granule_name(url), url)
    if isinstance(granule, dict) and "umm" in granule:
        name = granule_name(granule)
        links = [u for u in granule.data_links(access="direct") if u.startswith("s3://")] \
            if hasattr(granule, "data_links") else []
        if not links:
            raise GranuleReadError(f"{name}: the granule record has no direct-access (s3://) link")
        h5 = [u for u in links if u.endswith((".h5", ".hdf5", ".he5"))]
        url = (h5 or links)[0]
        size, md5 = _archive_info(granule["umm"], url.rsplit("/", 1)[-1])
        return GranuleSource(name, url, size, md5)
    raise TypeError(f"cannot read a granule given as {type(granule).__name__}; give an earthaccess.DataGranule, "
                    "an s3:// URL or a local path")


def _archive_info(umm: dict[str, Any], filename: str) -> tuple[int | None, str | None]:
    """Size and MD5 of ``filename`` from the record's ``ArchiveAndDistributionInformation``: the entry *named*
    like the file (NSIDC records also list the metadata files, in any order); (None, None) when none is."""
    for info in umm.get("DataGranule", {}).get("ArchiveAndDistributionInformation", []) or []:
        if info.get("Name") != filename or info.get("SizeInBytes") is None:
            continue
        checksum = info.get("Checksum") or {}
        md5 = checksum.get("Value") if str(checksum.get("Algorithm", "")).upper() == "MD5" else None
        return int(info["SizeInBytes"]), md5
    return None, None


@contextmanager
def open_granule(source: GranuleSource, config: Config = "blockcache", credentials: Any = None) -> Iterator[IO[bytes]]:
    """The granule as a read-only file object, opened the earthaccess way.

    An ``s3://`` URL: an s3fs filesystem from ``credentials``, one HEAD for the object size (as
    earthaccess does, to choose the block size), then ``fs.open(url, **open_options(config, size))``.
    A local path: a plain file. Raises :class:`GranuleReadError` when the object is missing, unreadable,
    or not the size the catalog says.
    """
    if not source.url.startswith("s3://"):
        try:
            fh = open(source.url, "rb")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            raise GranuleReadError(f"{source.name}: cannot open {source.url!r}: {exc.strerror or exc}") from None
        with fh:
            _check_size(source, os.fstat(fh.fileno()).st_size)
            yield fh
        return
    if credentials is None:
        raise GranuleReadError(f"{source.name}: reading {source.url} needs S3 credentials (credentials=...)")
    fs = credentials.fresh().s3fs()
    try:
        size = int(fs.info(source.url)["size"])
    except FileNotFoundError:
        raise GranuleReadError(f"{source.name}: there is no object at {source.url}") from None
    except PermissionError:
        raise GranuleReadError(f"{source.name}: access to {source.url} was refused (wrong or expired credentials?)"
                               ) from None
    _check_size(source, size)
    with blocks_released(fs.open(source.url, "rb", **open_options(config, size))) as fh:
        yield fh


def _check_size(source: GranuleSource, size: int) -> None:
    if size == 0:
        raise GranuleReadError(f"{source.name}: the object {source.url} is empty (0 bytes)")
    if source.size is not None and size != source.size:
        raise GranuleReadError(f"{source.name}: the object has {size} bytes but the catalog says {source.size}: "
                               "it is truncated or not the published file")


_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


@contextmanager
def _h5(fileobj: IO[bytes], source: GranuleSource, **h5_options: Any) -> Iterator[h5py.File]:
    """``h5py.File(fileobj, "r", **h5_options)``, its errors turned into :class:`GranuleReadError` naming the
    granule (not HDF5, truncated)."""
    try:
        h5 = h5py.File(fileobj, "r", **h5_options)
    except OSError as exc:
        text = str(exc)
        m = _TRUNCATED.search(text)
        if m:
            raise GranuleReadError(f"{source.name}: the object is truncated: it has {int(m.group(1))} bytes, its "
                                   f"HDF5 superblock says {int(m.group(2))}") from None
        if "signature" in text:
            fileobj.seek(0)
            head = fileobj.read(16)
            raise GranuleReadError(f"{source.name}: the object is not an HDF5 file (it starts with {head!r})") from None
        raise GranuleReadError(f"{source.name}: h5py cannot open the object: {text}") from None
    with h5:
        yield h5


# -- reading and clipping one granule -----------------------------------------------------------------


def _dataset(h5: h5py.Group, path: str, granule: str) -> h5py.Dataset:
    """``h5[path]`` (absolute, or relative to the group ``h5``), which must be a dataset."""
    obj = h5.get(path)
    if not isinstance(obj, h5py.Dataset):
        where = path if path.startswith("/") else f"{h5.name.strip('/')}/{path}".lstrip("/")
        raise MissingVariableError(f"{granule}: the variable {where} is missing")
    return obj


def _read(ds: h5py.Dataset, granule: str) -> np.ndarray:
    try:
        return ds[()]
    except OSError as exc:  # e.g. a chunk beyond the end of a truncated object
        raise GranuleReadError(f"{granule}: cannot read {ds.name}: {exc}") from None


def _shape_error(granule: str, path: str, shape: tuple[int, ...], n: int) -> GranuleReadError:
    return GranuleReadError(f"{granule}: {path} has shape {shape}, expected ({n},)")


def _beam_all(group: h5py.Group, aoi: AOI, variables: Sequence[str], granule: str) -> dict[str, np.ndarray]:
    """Every variable of a beam read whole, then the rows inside ``aoi`` kept."""
    values = {v: _read(_dataset(group, v, granule), granule) for v in variables}
    n = len(values["latitude"])
    for v, arr in values.items():
        if arr.ndim != 1 or len(arr) != n:
            raise _shape_error(granule, f"{group.name.lstrip('/')}/{v}", arr.shape, n)
    inside = aoi.contains(values["longitude"], values["latitude"])
    return {v: arr[inside] for v, arr in values.items()} if inside.any() else {}


def _read_rows(ds: h5py.Dataset, rows: np.ndarray, granule: str) -> np.ndarray:
    """``ds[rows]`` (sorted row numbers), reading only the chunks that hold them (:func:`chunk_runs`)."""
    n = int(ds.shape[0])
    runs = chunk_runs(rows, int(ds.chunks[0]) if ds.chunks else n, n)
    try:
        parts = [ds[a:b] for a, b in runs]
    except OSError as exc:
        raise GranuleReadError(f"{granule}: cannot read {ds.name}: {exc}") from None
    covered = np.concatenate([np.arange(a, b) for a, b in runs])
    return np.concatenate(parts)[np.searchsorted(covered, rows)]


def _beams_aoi_chunks(groups: dict[str, h5py.Group], aoi: AOI, variables: Sequence[str], granule: str,
                      prefetch: Prefetch | None, scalars: Sequence[h5py.Dataset]) -> dict[str, dict[str, np.ndarray]]:
    """Each beam's coordinates read whole, then only the chunks of the other variables that hold rows inside.

    With ``prefetch``, every beam's reads are announced at once in two calls (see :func:`clip_granule`)."""
    coords = {b: (_dataset(g, "longitude", granule), _dataset(g, "latitude", granule)) for b, g in groups.items()}
    if prefetch is not None:
        prefetch([(ds, [(0, _nrows(ds))]) for ds in (*scalars, *(d for pair in coords.values() for d in pair))])
    found: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for beam, group in groups.items():
        lon, lat = (_read(ds, granule) for ds in coords[beam])
        n = len(lat)
        for v, arr in (("longitude", lon), ("latitude", lat)):
            if arr.ndim != 1 or len(arr) != n:
                raise _shape_error(granule, f"{group.name.lstrip('/')}/{v}", arr.shape, n)
        found[beam] = (lon, lat, aoi.contains(lon, lat))
    others: dict[str, dict[str, h5py.Dataset]] = {}
    for beam, group in groups.items():
        lon, lat, inside = found[beam]
        # a missing variable is an error whether or not the beam has rows inside
        dsets = {v: _dataset(group, v, granule) for v in variables if v not in ("longitude", "latitude")}
        if not inside.any():
            continue
        for ds in dsets.values():
            if ds.ndim != 1 or ds.shape[0] != len(lat):
                raise _shape_error(granule, ds.name.lstrip("/"), ds.shape, len(lat))
        others[beam] = dsets
    rows = {beam: np.flatnonzero(found[beam][2]) for beam in others}
    if prefetch is not None:
        prefetch([(ds, chunk_runs(rows[beam], int(ds.chunks[0]) if ds.chunks else _nrows(ds), _nrows(ds)))
                  for beam, dsets in others.items() for ds in dsets.values()])
    out: dict[str, dict[str, np.ndarray]] = {}
    for beam, dsets in others.items():
        lon, lat, inside = found[beam]
        out[beam] = {v: (lon if v == "longitude" else lat)[inside] if v in ("longitude", "latitude")
                     else _read_rows(dsets[v], rows[beam], granule) for v in variables}
    return out


def _nrows(ds: h5py.Dataset) -> int:
    return int(ds.shape[0]) if ds.shape else 1


def clip_granule(h5: h5py.File, aoi: AOI, variables: Sequence[str] = DEFAULT_VARIABLES, *,
                 granule: str, rows: Rows = "all", prefetch: Prefetch | None = None) -> dict[str, np.ndarray]:
    """Read the beams of ``h5`` and keep the rows inside ``aoi``: columns for :func:`canonical_frame`
    (plus any extra ``variables``), one entry per row. Beams without ``land_ice_segments`` (real ATL06
    omits beams with no segments) give no rows; a missing variable raises :class:`MissingVariableError`.

    ``rows="all"`` (the baseline) reads every variable of a beam whole; ``rows="aoi-chunks"`` (a
    cloud-optimized reader) reads ``latitude``/``longitude`` whole, then of the other variables only the
    chunk-aligned row ranges that hold rows inside (:func:`~is2cloud.methods.chunks.chunk_runs`): the same
    columns, fewer bytes.

    ``prefetch`` (``rows="aoi-chunks"`` only): a reader over a remote object is told what is read next, so
    it can fetch it all at once (concurrently) instead of one request per read. It is called twice with
    ``[(dataset, [(start, stop), ...]), ...]`` row ranges: first the granule's scalars and every beam's
    coordinates (whole), then the AOI's chunk runs of the other variables of every beam with rows inside
    (:mod:`is2cloud.methods.repacked`).
    """
    if rows not in ("all", "aoi-chunks"):
        raise ValueError(f"rows must be 'all' or 'aoi-chunks', not {rows!r}")
    if prefetch is not None and rows != "aoi-chunks":
        raise ValueError("prefetch works with rows='aoi-chunks' only")
    scalars = [_dataset(h5, EPOCH, granule), *(_dataset(h5, p, granule) for p in ORBIT.values())]
    groups = {beam: h5[f"{beam}/{GROUP}"] for beam in TRACK_IDS if f"{beam}/{GROUP}" in h5}
    if rows == "all":
        epoch, orbit = _scalars(scalars, granule)
        beams = {beam: _beam_all(group, aoi, variables, granule) for beam, group in groups.items()}
    else:
        beams = _beams_aoi_chunks(groups, aoi, variables, granule, prefetch, scalars)
        epoch, orbit = _scalars(scalars, granule)
    parts: list[dict[str, np.ndarray]] = []
    for beam, values in beams.items():
        if not values:
            continue
        k = len(values["latitude"])
        cols = {_column(v): arr for v, arr in values.items() if v != "delta_time"}
        cols["time"] = atlas_time_ns(values["delta_time"], epoch)
        cols["track_id"] = np.repeat(np.array([beam], dtype=object), k)
        cols["rgt"] = np.repeat(orbit["rgt"], k)
        cols["cycle"] = np.repeat(orbit["cycle"], k)
        cols["granule"] = np.repeat(np.array([granule], dtype=object), k)
        parts.append(cols)
    if not parts:
        return {}
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}


def _scalars(scalars: Sequence[h5py.Dataset], granule: str) -> tuple[float, dict[str, Any]]:
    """The ATLAS epoch and the orbit values (``rgt``, ``cycle``) from their datasets (in that order)."""
    epoch = float(_read(scalars[0], granule).ravel()[0])
    return epoch, {k: _read(ds, granule).ravel()[0] for k, ds in zip(ORBIT, scalars[1:])}


def read_granule(source: GranuleSource, *, aoi: AOI, variables: Sequence[str] = DEFAULT_VARIABLES,
                 config: Config = "blockcache", credentials: Any = None) -> dict[str, np.ndarray]:
    """The worker: open one granule, read and clip it (see :func:`clip_granule`)."""
    with open_granule(source, config, credentials) as fh, _h5(fh, source) as h5:
        return clip_granule(h5, aoi, variables, granule=source.name)


def _column(variable: str) -> str:
    return variable.rsplit("/", 1)[-1]


# -- the method ------------------------------------------------------------------------------------------


def check_variables(variables: Iterable[str]) -> tuple[str, ...]:
    """The variables to read: the canonical ones (required) first, then any extras, without repeats."""
    if isinstance(variables, str):
        variables = [variables]
    wanted = list(dict.fromkeys(variables))
    if not all(isinstance(v, str) and v.strip("/") for v in wanted):
        raise ValueError(f"variables must be names below gtx/{GROUP}, got {wanted!r}")
    wanted = [v.strip("/") for v in wanted]
    missing = [v for v in DEFAULT_VARIABLES if v not in wanted]
    if missing:
        raise ValueError(f"variables must include {list(DEFAULT_VARIABLES)} (the canonical schema needs them); "
                         f"missing {missing}")
    extras = [v for v in wanted if v not in DEFAULT_VARIABLES]
    clash = [v for v in extras if _column(v) in CANONICAL_COLUMNS]
    if clash or len({_column(v) for v in extras}) != len(extras):
        raise ValueError(f"extra variables {extras} would give duplicate column names")
    return (*DEFAULT_VARIABLES, *extras)


def _swapped(area: AOI) -> AOI | None:
    import shapely

    try:
        return load_aoi(shapely.transform(area.geometry, lambda xy: xy[:, ::-1]))
    except AOIError:
        return None


def _check_footprints(area: AOI, granules: Sequence[Any]) -> None:
    """Refuse an AOI that misses every granule footprint but would meet them with lon/lat swapped."""
    from is2cloud.catalog import _aoi_shapes, _footprints

    records = [g for g in granules if isinstance(g, dict) and "umm" in g]
    prints = [fp for g in records for fp in _footprints(g)]
    if not prints or any(fp.intersects(s) for fp in prints for s in _aoi_shapes(area)):
        return
    flipped = _swapped(area)
    if flipped is not None and any(fp.intersects(s) for fp in prints for s in _aoi_shapes(flipped)):
        w, s, e, n = area.bounds
        raise AOIError(f"the AOI {area.name!r} (W {w:.4f}, S {s:.4f}, E {e:.4f}, N {n:.4f}) misses all {len(records)} "
                       "granule footprints, but with longitude and latitude swapped it meets them: give "
                       "coordinates as (longitude, latitude)")
    warnings.warn(f"the AOI {area.name!r} misses the footprints of all {len(records)} granules: "
                  "the subset will be empty", stacklevel=3)


def prepare(granules: Iterable[Any], *, out: Any = None, credentials: Any = None, out_credentials: Any = None,
            client: Any = None, progress: bool | None = None) -> None:
    """Nothing to prepare: the baseline reads the granules as they are. Returns None (the protocol's
    "no artefact"); :func:`subset` then takes the granules."""
    return None


def subset(granules: Iterable[Any], aoi: Any, variables: Iterable[str] | None = None, *,
           credentials: Any = None, out_credentials: Any = None, client: Any = None,
           progress: bool | None = None, config: Config = "blockcache",
           on_error: Literal["raise", "skip"] = "raise"):  # -> geopandas.GeoDataFrame
    """Rows of ``granules`` inside ``aoi`` in the canonical schema, read the earthaccess way.

    ``granules``: ``earthaccess.DataGranule`` objects (e.g. from :func:`is2cloud.catalog.find_granules`),
    ``s3://`` URLs or local paths. ``aoi``: anything :func:`is2cloud.aoi.load_aoi` takes.
    ``variables``: below ``gtx/land_ice_segments`` (default: the canonical ones, which are required);
    extras become extra columns after ``geometry``. ``config``: ``"blockcache"`` (tuned, the default) or
    ``"readahead"`` (naive); see the module docstring.
    ``credentials``: a :class:`~is2cloud.credentials.Credentials`; default: ``get_credentials("read")`` (in
    earthdata mode NSIDC's temporary S3 credentials). ``out_credentials``:
    unused (the baseline stores nothing). ``client``: see :func:`~is2cloud.parallel.map_granules`
    (``"sync"`` runs here, serially). ``progress``: see :mod:`is2cloud.progress`.
    ``on_error="skip"`` skips granules that cannot be read; they are listed in
    ``result.attrs["skipped"]`` and in a warning. Raises :class:`~is2cloud.aoi.AOIError` for a bad AOI,
    :class:`~is2cloud.catalog.NoGranulesError` for no granules, and
    :class:`~is2cloud.parallel.GranuleError` naming every granule that failed (``on_error="raise"``).
    """
    area = load_aoi(aoi)
    variables = check_variables(DEFAULT_VARIABLES if variables is None else variables)
    config = _check_config(config)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    items = [granules] if isinstance(granules, (str, os.PathLike)) or (isinstance(granules, dict)
                                                                        and "umm" in granules) else list(granules)
    if not items:
        raise NoGranulesError(f"no granules to subset for AOI {area.name!r}: the list is empty (did the search "
                              "find nothing?)")
    _check_footprints(area, items)
    sources = [granule_source(g) for g in items]
    if credentials is None and any(s.url.startswith("s3://") for s in sources):
        from is2cloud.access import get_credentials

        # earthdata mode: the DAAC's temporary S3 credentials, not earthaccess.open, which decides between S3
        # and HTTPS by asking the instance-metadata service for the region (often blocked on JupyterHubs)
        credentials = get_credentials("read")
    results = map_granules(read_granule, sources, client, on_error=on_error, progress=progress,
                           label=f"baseline ({PROSE[config]})", aoi=area, variables=variables, config=config,
                           credentials=credentials)
    frame = assemble(results, variables)
    if results.skipped:
        frame.attrs["skipped"] = [{"granule": f.name, "error": f.error_type, "message": f.message}
                                  for f in results.skipped]
        warnings.warn(results.report(), stacklevel=2)
    return frame


def assemble(parts: Sequence[dict[str, np.ndarray]], variables: Sequence[str] = DEFAULT_VARIABLES):
    """One canonical GeoDataFrame from per-granule columns (:func:`clip_granule`), extras after ``geometry``.
    The parts are emptied as their columns are joined (so they are not held twice)."""
    parts = [p for p in parts if p]
    extras = [_column(v) for v in variables if v not in DEFAULT_VARIABLES]
    if not parts:
        frame = empty_frame()
        for c in extras:
            frame[c] = np.array([], dtype="f8")
    else:
        cols = {}
        for c in list(parts[0]):  # each column's pieces are let go once joined: the subset is not held twice
            cols[c] = np.concatenate([p.pop(c) for p in parts])
        release_heap()  # the pieces' heap, before the frame and its geometries are made
        # canonical_frame empties the dict it is given, letting each column go once converted
        frame = canonical_frame({c: cols.pop(c) for c in list(cols) if c not in extras}, sort=False, copy=False)
        for c in extras:
            frame[c] = cols[c]
        del cols
    frame = sort_canonical(frame)
    release_heap()  # the pieces it was joined from
    return frame


# -- the physical limit ------------------------------------------------------------------------------------


def _local_copies() -> dict[tuple[str, str, str], Path]:
    """(bucket, key, etag) -> file, for every object of every complete archive in the cache (never generates
    one). Archives of different scales share keys with different contents, hence the ETag in the key."""
    from is2cloud.granules.archive import load_archive

    out: dict[tuple[str, str, str], Path] = {}
    root = get_settings().cache_dir / "archive"
    for d in sorted(root.glob("*")) if root.is_dir() else []:
        try:
            arch = load_archive(d)
        except (FileNotFoundError, ValueError):
            continue
        for o in arch.objects:
            out.setdefault((o["bucket"], o["key"], o["etag"]), arch.objects_dir / o["bucket"] / o["key"])
    return out


def _limit_worker(source: GranuleSource, *, aoi: AOI, variables: Sequence[str], credentials: Any) -> PhysicalLimit:
    with open_granule(source, "blockcache", credentials) as fh, _h5(fh, source) as h5:
        try:
            return physical_limit(h5, aoi, variables, granule=source.name)
        except KeyError as exc:
            raise MissingVariableError(exc.args[0]) from None


def aoi_physical_limit(granules: Iterable[Any], aoi: Any, variables: Iterable[str] = DEFAULT_VARIABLES, *,
                       credentials: Any = None, client: Any = "sync", local_copies: bool = True) -> PhysicalLimit:
    """The physical limit of subsetting ``granules`` to ``aoi`` (summed over granules; see
    :mod:`is2cloud.methods.chunks`): what the bench records as ``physical_bytes``.

    It is a property of the files, not of an access method, so with ``local_copies`` a granule whose
    object is in a local sample archive with the same MD5 as its catalog record is read from disk
    (no simulated network, nothing in the request ledger); others are read through S3 (tuned).
    """
    area = load_aoi(aoi)
    variables = check_variables(variables)
    sources = [granule_source(g) for g in granules]
    if not sources:
        raise NoGranulesError(f"no granules for the physical limit of AOI {area.name!r}")
    if local_copies:
        copies = _local_copies()
        local = []
        for s in sources:
            bucket, _, key = s.url.removeprefix("s3://").partition("/")
            hit = copies.get((bucket, key, s.md5)) if s.url.startswith("s3://") and s.md5 else None
            local.append(GranuleSource(s.name, str(hit), s.size, s.md5) if hit else s)
        sources = local
    if credentials is None and any(s.url.startswith("s3://") for s in sources):
        from is2cloud.access import get_credentials

        credentials = get_credentials("read")
    limits = map_granules(_limit_worker, sources, client, progress=False, label="physical limit", aoi=area,
                          variables=variables, credentials=credentials)
    total = PhysicalLimit(granule=f"{len(limits)} granules")
    for lim in limits:
        total = total.add(lim)
    total.granule = f"{len(limits)} granules"
    return total


# -- the benchmark -------------------------------------------------------------------------------------------


def _warm_worker(credentials: Any, url: str) -> None:
    """Import the readers and open an S3 connection in a worker (outside the measurement)."""
    import s3fs  # noqa: F401

    credentials.s3fs().info(url)


@dataclass
class BenchScene:
    """What every method's benchmark measures: the AOI, the ATL06 granules over it in the ``scale``
    archive, the cloud's credentials, the physical limit and the Dask client (or ``"sync"``)."""

    area: AOI
    granules: list
    credentials: Any
    limit: PhysicalLimit
    client: Any
    shared: bool = False  # the client is the process-wide local cluster (closed and started again at will)


def bench_scene(scale: str, cloud: Any, *, aoi: Any = None, repeat: int = 1, client: Any = None) -> BenchScene:
    """Check the arguments of a benchmark and set up its scene (Greenland AOI by default); ``cloud`` must
    serve the ``scale`` archive. The baseline's readers are warmed in the workers (outside any measurement)."""
    from is2cloud.catalog import find_granules
    from is2cloud.granules.archive import REPO_DATA, publish_archive
    from is2cloud.parallel import get_client, is_shared_client

    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, not {repeat}")
    area = load_aoi(aoi if aoi is not None else REPO_DATA / "greenland_aoi.geojson")
    root = get_settings().cache_dir / "archive" / scale
    served = getattr(cloud, "archive", None)
    if served is not None and Path(served).resolve() != root.resolve():
        raise ValueError(f"the cloud serves {served}, not the {scale!r} archive at {root}")
    archive = publish_archive(scale, cache_dir=get_settings().cache_dir)
    granules = find_granules(area, "ATL06", archive=archive)
    credentials = cloud.credentials()
    limit = aoi_physical_limit(granules, area, credentials=credentials)
    if client is None:
        client = get_client()
    if not isinstance(client, str):
        client.run(_warm_worker, credentials, granules[0].data_links(access="direct")[0])
    return BenchScene(area, granules, credentials, limit, client, is_shared_client(client))


def fresh_workers(scene: BenchScene) -> None:
    """When the scene's client is the shared local cluster, start it again (warmed as :func:`bench_scene`
    does): a prepare step's workers keep hundreds of MB after it, which a query reading the artefact later,
    in another session, would not carry."""
    from is2cloud.parallel import close_client, get_client

    if not scene.shared:
        return
    close_client()
    scene.client = get_client()
    scene.client.run(_warm_worker, scene.credentials, scene.granules[0].data_links(access="direct")[0])


def bench_tuned_run(scene: BenchScene, cloud: Any, *, scale: str, results: Any, label: str, run: str, bucket: str):
    """The reference every method's suite times in the same run: the tuned baseline to GeoParquet in
    ``bucket``. Returns the measurement (its ``result`` is the frame)."""
    from is2cloud.bench import measure
    from is2cloud.geoparquet import write_geoparquet

    with measure("baseline (tuned) -> GeoParquet", method="baseline", cloud=cloud, scale=scale, results=results,
                 notes=f"{label}; earthaccess blockcache; {run}", granules=len(scene.granules),
                 physical_bytes=scene.limit.nbytes) as m:
        m.result = subset(scene.granules, scene.area, config="tuned", credentials=scene.credentials,
                          client=scene.client)
        write_geoparquet(m.result, f"s3://{bucket}/bench/baseline-{scale}.parquet", credentials=scene.credentials)
    return m


def tuned_baseline(granules: Any, aoi: Any, *, out: str, by: str, cloud: Any = None, credentials: Any = None,
                   out_credentials: Any = None, client: Any = None, physical_bytes: int | None = None,
                   reuse: bool = True, results: str | os.PathLike[str] | None = None) -> Any:  # -> bench.Measurement
    """The tuned baseline (notebook 03's method) from ``granules`` to a GeoParquet file at ``out``: the reference
    the later chapters compare their method with. Returns its :class:`is2cloud.bench.Measurement` (named
    ``bench.TUNED_BASELINE``), with the rows in ``result`` and in ``origin`` which of two things happened:

    * **reused**: this build already measured it (``reuse``, and a row of the results table matches on
      mode, data scale, network profile, commit, granule set and AOI): that measurement, with the rows that run
      kept beside the results table (:func:`is2cloud.bench.rows_dir`); nothing is read or written;
    * **measured now** (anything else, or outside a git checkout, where the commit is unknown): ``subset`` with
      the tuned configuration and ``write_geoparquet(out)`` inside :func:`is2cloud.bench.measure` (recorded in
      the results table); then, outside the measurement, the rows are kept for later chapters, labelled with
      ``by`` (e.g. ``"notebook 03b"``).

    ``credentials`` read the granules, ``out_credentials`` write ``out`` (default ``get_credentials("write")``);
    ``cloud``, ``client``, ``physical_bytes`` and ``results`` as for :func:`is2cloud.bench.measure` and
    :func:`subset`.
    """
    from is2cloud import bench
    from is2cloud.aoi import load_aoi
    from is2cloud.geoparquet import write_geoparquet

    area = load_aoi(aoi)
    items = list(granules)
    sources = [granule_source(g) for g in items]
    settings = bench.get_settings()
    profile = cloud.profile.name if cloud is not None else (settings.profile if settings.mode == "local" else "aws")
    commit = bench._commit()
    key = bench.reference_key(sources, area, mode=settings.mode, scale=settings.scale, profile=profile,
                              commit=commit)
    found = bench.recorded_reference(key, results) if reuse and commit else None
    if found is not None:
        m, who = found
        if physical_bytes and not m.physical_bytes:
            m.physical_bytes = physical_bytes
        m.origin = (f"reused from {who}'s run at {m.timestamp[11:19]} UTC (same scale, network profile, "
                    f"{len(sources)} granules, AOI and commit)")
        return m
    if out_credentials is None:
        from is2cloud.access import get_credentials

        out_credentials = get_credentials("write")
    with bench.measure(bench.TUNED_BASELINE, method=NAME, cloud=cloud, results=results, granules=len(sources),
                       physical_bytes=physical_bytes, notes=f"AOI {area.name}; earthaccess blockcache; by {by}") as m:
        m.result = subset(items, area, config="tuned", credentials=credentials, client=client)
        write_geoparquet(m.result, out, credentials=out_credentials)
    m.origin = "measured now"
    if commit:
        kept = {"key": key, "timestamp": m.timestamp, "commit": m.commit, "by": by}
        bench.rows_dir(results).mkdir(parents=True, exist_ok=True)
        write_geoparquet(m.result, bench.rows_dir(results) / f"{key}.parquet",
                         metadata={bench.REFERENCE_KEY: kept})
        m.origin += " (kept for later chapters of this build)"
    return m


def benchmark(scale: str, cloud: Any, *, aoi: Any = None, configs: Sequence[str] = CONFIGS,
              profile: str = "in-region", client: Any = None, repeat: int = 1,
              results: str | os.PathLike[str] | None = None) -> list:  # -> list[bench.Measurement]
    """Measure the baseline (each configuration, ``repeat`` times) on the Greenland AOI at ``scale``.

    ``cloud``: a LocalCloud serving the ``scale`` archive; its profile is set to ``profile`` for the
    measurements and restored afterwards. Granules come from the archive's catalog. Each measurement
    records wall/CPU/memory, GETs and bytes from the ledger, and ``physical_bytes``; rows of every
    configuration are checked to be identical. Returns the measurements (also appended to the results
    table, ``results`` or the default).
    """
    from is2cloud.bench import Stash, measure
    from is2cloud.methods.identity import assert_same_rows

    configs = [_check_config(c) for c in configs]
    scene = bench_scene(scale, cloud, aoi=aoi, repeat=repeat, client=client)
    area, granules, credentials, limit, client = (scene.area, scene.granules, scene.credentials, scene.limit,
                                                  scene.client)
    before = cloud.profile_name
    cloud.set_profile(profile)
    out = []
    frames = Stash()  # one frame per configuration, compared at the end, on disk meanwhile
    try:
        for config in configs:
            for i in range(repeat):
                notes = (f"synthetic ATL06 v006, AOI {area.name}, {len(granules)} granules, "
                         f"{open_options(config, 0)['cache_type']}; run {i + 1}/{repeat}")
                with measure(f"baseline ({PROSE[config]})", method=NAME, cloud=cloud, scale=scale, results=results,
                             notes=notes, granules=len(granules), physical_bytes=limit.nbytes) as m:
                    m.result = subset(granules, area, config=config, credentials=credentials, client=client)
                out.append(m)
                if config not in frames:
                    frames.put(config, m.result)
                m.result = None
        first = frames.get(configs[0])
        for other in dict.fromkeys(configs[1:]):
            if other != configs[0]:
                assert_same_rows(first, frames.get(other), names=(configs[0], other))
    finally:
        cloud.set_profile(before)
        frames.close()
    return out
