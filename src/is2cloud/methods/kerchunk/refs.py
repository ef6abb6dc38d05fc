"""kerchunk reference sets of the granules (one per granule, JSON, in your bucket) and subsetting from them.

Why one set per granule: ``MultiZarrToZarr`` cannot concatenate nested-group granules along time (it
silently keeps the first granule, or raises). Why JSON rather than kerchunk's Parquet: a granule's
set is small (an ATL06 granule: a few thousand references, ~100 kB) and is read whole by every
subset, so one object is one GET and one atomic PUT; the Parquet layout (a directory of many objects,
loaded lazily) pays off for sets of millions of references, and cannot be written atomically.

Layout at ``out`` (an ``s3://`` prefix): ``<granule>.<run>.json`` per granule (``{"version": 1,
"refs": {...}}``, zarr v2 keys, plus ``"is2cloud"``: the granule's record) and ``references.json``,
the store's manifest (format, granule -> record, reference file, inline threshold, open configuration),
written last. A failed prepare deletes the reference files it wrote and leaves the manifest as it was.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from is2cloud.methods.baseline import earthaccess_block_size, s3fs_defaults
from is2cloud.methods.kerchunk.errors import (
    MissingReferencesError,
    OutsideReferencesError,
    ReferenceError_,
    StaleReferencesError,
)
from is2cloud.methods.provenance import GranuleRecord, check_coverage, check_fresh, record_granules, sources
from is2cloud.methods.ranges import split_url
from is2cloud.methods.refread import ArrayRefs, GranuleRefs, UnsupportedReferences, codec_from_zarr, read_references
from is2cloud.parallel import blocks_released

__all__ = ["FORMAT", "MANIFEST", "OPEN_CONFIGS", "ReferenceStore", "compact_threshold", "default_location",
           "open_options", "prepare", "read_manifest", "subset", "translate"]

FORMAT = "is2cloud-kerchunk/1"
MANIFEST = "references.json"
OpenConfig = Literal["h5cloud", "readahead", "none", "blockcache", "all"]
OPEN_CONFIGS: tuple[str, ...] = ("h5cloud", "readahead", "none", "blockcache", "all")


def open_options(config: OpenConfig, size: int) -> dict[str, Any]:
    """``fs.open(url, **options)`` of an open configuration for an object of ``size`` bytes:

    * ``h5cloud``: the published call, ``mode="rb", default_fill_cache=False, default_cache_type="first"``
      (both keywords belong to the ``S3FileSystem`` constructor: ``open`` ignores them, so the file uses
      s3fs's read-ahead cache; :func:`is2cloud.methods.kerchunk.costs.cache_of`);
    * ``readahead``: s3fs's defaults; ``none``: no cache (one GET per h5py read);
    * ``blockcache``: a block cache with earthaccess's block sizes (4/8/16 MiB by object size) that keeps
      every block it fetched (``maxblocks`` covers the object; fsspec keeps 32 by default, and on a
      385 MB granule with 8 MiB blocks its evictions read the object twice);
    * ``all``: the whole object in one GET.
    """
    if config == "h5cloud":
        return {"mode": "rb", "default_fill_cache": False, "default_cache_type": "first"}
    if config == "readahead":
        return {"mode": "rb", **s3fs_defaults()}
    if config == "none":
        return {"mode": "rb", "cache_type": "none"}
    if config == "blockcache":
        block = earthaccess_block_size(size)
        return {"mode": "rb", "cache_type": "blockcache", "block_size": block,
                "cache_options": {"maxblocks": max(32, -(-size // block))}}
    if config == "all":
        return {"mode": "rb", "cache_type": "all"}
    raise ValueError(f"open_config must be one of {', '.join(OPEN_CONFIGS)}, not {config!r}")


@dataclass(frozen=True)
class ReferenceStore:
    """The handle of prepared references (:class:`is2cloud.methods.protocol.Prepared`): the store's
    location, its granules, the bytes of its objects and what preparing read (``stats``: ``gets``,
    ``bytes_read`` (s3fs's counters), ``seconds``, per granule ``inline_threshold`` and ``refs``)."""

    location: str
    granules: tuple[str, ...]
    nbytes: int
    stats: dict[str, Any] = field(default_factory=dict, compare=False)
    method: str = "kerchunk"


def default_location(product: str = "ATL06", version: str = "006", bucket: str | None = None) -> str:
    """Where the book keeps the references: ``kerchunk/<P>_<V>`` under the output location
    (``s3://<output bucket>/<output prefix>/``), or at the root of ``bucket``."""
    from is2cloud.settings import get_settings

    name = f"kerchunk/{product.upper()}_{version}"
    if bucket:
        return f"s3://{bucket}/{name}"
    settings = get_settings()
    if not settings.output_bucket:
        raise ReferenceError_("no output bucket is configured (IS2CLOUD_OUTPUT_BUCKET) for the references")
    return settings.output_url(name)


def compact_threshold(h5: Any) -> tuple[int, list[str]]:
    """The smallest ``inline_threshold`` that inlines every COMPACT dataset of ``h5`` (kerchunk inlines
    one only when its size is below the threshold; otherwise it reads as zeros), and their paths."""
    import h5py

    compact: dict[str, int] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.id.get_create_plist().get_layout() == h5py.h5d.COMPACT:
            compact[name] = int(obj.nbytes)

    h5.visititems(visit)
    return (max(compact.values()) + 1 if compact else 0), sorted(compact)


def translate(fileobj: Any, url: str, name: str, *, group: str | None = None,
              storage_options: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
    """``SingleHdf5ToZarr(fileobj, url, inline_threshold=..., error="raise").translate()`` with the
    threshold of :func:`compact_threshold`; checks every COMPACT dataset was inlined. Returns the
    references and the threshold. ``group`` (e.g. ``"gt1l"``): only that group's references (keys
    keep their full paths), as ``SingleHdf5ToZarr(h5[group], url, storage_options=...)`` makes them; kerchunk
    then opens ``url`` a second time with ``storage_options`` (credentials, endpoint, cache) to read the
    values it inlines. Raises :class:`ReferenceError_` naming the granule (and a missing group)."""
    import h5py
    from kerchunk.hdf import SingleHdf5ToZarr

    try:
        if group is None:
            with h5py.File(fileobj, "r") as h5:
                threshold, compact = compact_threshold(h5)
            refs = SingleHdf5ToZarr(fileobj, url, inline_threshold=threshold, error="raise").translate()
        else:
            with h5py.File(fileobj, "r") as h5:
                if not isinstance(h5.get(group), h5py.Group):
                    raise ReferenceError_(f"{name}: there is no group /{group} to make references of")
                threshold, compact = compact_threshold(h5[group])
                compact = [f"{group.strip('/')}/{p}" for p in compact]
                refs = SingleHdf5ToZarr(h5[group], url, inline_threshold=threshold, error="raise",
                                        storage_options=storage_options).translate()
    except OSError as exc:
        fileobj.seek(0)
        head = fileobj.read(8)
        raise ReferenceError_(f"{name}: cannot make references: the object is not an HDF5 file (h5py: "
                              f"{str(exc).splitlines()[0]}; it starts with {head!r})") from None
    not_inlined = [p for p in compact if not any(k.startswith(f"{p}/") and not k.endswith((".zarray", ".zattrs"))
                                                 for k in refs["refs"])]
    if not_inlined:
        raise ReferenceError_(f"{name}: COMPACT datasets not inlined at inline_threshold={threshold}: "
                              f"{', '.join(not_inlined[:5])}")
    return refs, threshold


def _make(rec: GranuleRecord, *, credentials: Any, open_config: OpenConfig) -> dict[str, Any]:
    """The worker: open one granule with the configuration's cache and translate it."""
    fs = credentials.fresh().s3fs()
    with blocks_released(fs.open(rec.url, **open_options(open_config, rec.size))) as f:
        refs, threshold = translate(f, rec.url, rec.name)
        cache = f.cache  # fsspec's counters: fetches (misses) and bytes requested
    return {"refs": refs, "inline_threshold": threshold, "gets": int(getattr(cache, "miss_count", 0)),
            "bytes_read": int(getattr(cache, "total_requested_bytes", 0))}


def _put(store: Any, key: str, body: bytes) -> None:
    import obstore

    obstore.put(store, key, body)


def read_manifest(location: str, out_credentials: Any) -> dict[str, Any] | None:
    """The store's manifest (None when there is none)."""
    import obstore

    bucket, prefix = split_url(location.rstrip("/") + "/" + MANIFEST)
    try:
        raw = bytes(obstore.get(out_credentials.obstore(bucket), prefix).bytes())
    except FileNotFoundError:
        return None
    return _loads(raw, f"s3://{bucket}/{prefix}")


def _loads(raw: bytes, url: str) -> Any:
    """A reference file's JSON; a corrupted or truncated one raises :class:`ReferenceError_` naming it."""
    try:
        return json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ReferenceError_(f"{url} is not a readable kerchunk reference file ({exc}); delete it and prepare the "
                              "references again") from None


def prepare(granules: Iterable[Any], *, out: str | os.PathLike[str] | None = None, credentials: Any = None,
            out_credentials: Any = None, client: Any = None, progress: bool | None = None,
            open_config: OpenConfig = "blockcache", mode: Literal["append", "overwrite"] = "append"
            ) -> ReferenceStore:
    """kerchunk references for each of ``granules`` (``earthaccess.DataGranule`` records or ``s3://``
    URLs), written to ``out`` (an ``s3://`` prefix; default :func:`default_location`).

    Each granule is opened through s3fs with ``open_config`` (:func:`open_options`; default: earthaccess's
    block cache) and translated by ``SingleHdf5ToZarr`` with ``error="raise"`` and the inline threshold
    that inlines its COMPACT datasets (:func:`translate`). ``mode="append"`` keeps the granules already
    in the store (replacing those given again), ``"overwrite"`` keeps only these. ``credentials`` read
    the granules (default ``get_credentials("read")``), ``out_credentials`` write the references
    (default ``get_credentials("write")``). ``client``: see :func:`is2cloud.parallel.map_granules`.
    Raises :class:`ReferenceError_` naming every granule that failed; nothing is left half-written.
    """
    import obstore

    from is2cloud.access import get_credentials
    from is2cloud.catalog import NoGranulesError
    from is2cloud.geoparquet import refuse_archive_bucket
    from is2cloud.parallel import GranuleError, map_granules

    t0 = time.perf_counter()
    open_options(open_config, 0)  # checks the name
    if mode not in ("append", "overwrite"):
        raise ValueError(f"mode must be 'append' or 'overwrite', not {mode!r}")
    items, srcs = sources(granules, "kerchunk")
    if not items:
        raise NoGranulesError("no granules to make references for: the list is empty")
    credentials = credentials if credentials is not None else get_credentials("read")
    out_credentials = out_credentials if out_credentials is not None else get_credentials("write")
    location = os.fspath(out).rstrip("/") if out is not None else default_location()
    refuse_archive_bucket(location, "kerchunk references")
    records = record_granules(items, srcs, credentials, ReferenceError_)
    try:
        made = map_granules(_make, records, client, progress=progress, label="kerchunk references",
                            credentials=credentials, open_config=open_config)
    except GranuleError as exc:
        raise ReferenceError_(f"{exc}\nnothing was written") from None
    bucket, prefix = split_url(location + "/" + MANIFEST)
    prefix = prefix.rsplit("/", 1)[0]
    store = out_credentials.obstore(bucket)
    old = read_manifest(location, out_credentials) or {"granules": {}}
    entries = {} if mode == "overwrite" else dict(old.get("granules", {}))
    run = uuid.uuid4().hex[:12]
    written: list[str] = []
    nrefs = {}
    try:
        for rec, m in zip(records, made):
            key = f"{prefix}/{rec.name}.{run}.json"
            written.append(key)  # before the PUT: an interrupt during it still deletes what it wrote
            _put(store, key, json.dumps({**m["refs"], "is2cloud": rec.to_dict()}).encode())
            entries[rec.name] = {**rec.to_dict(), "refs": key.rsplit("/", 1)[1], "open_config": open_config,
                                 "inline_threshold": m["inline_threshold"]}
            nrefs[rec.name] = len(m["refs"]["refs"])
        manifest = {"format": FORMAT, "granules": dict(sorted(entries.items()))}
        _put(store, f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
    except BaseException:
        if written:
            obstore.delete(store, written)
        raise
    _delete_unused(store, prefix, old, manifest)
    sizes = {o["path"]: int(o["size"]) for b in obstore.list(store, prefix=prefix + "/") for o in b}
    keep = {f"{prefix}/{e['refs']}" for e in manifest["granules"].values()} | {f"{prefix}/{MANIFEST}"}
    stats = {"granules": len(records), "gets": sum(m["gets"] for m in made),
             "bytes_read": sum(m["bytes_read"] for m in made), "seconds": time.perf_counter() - t0, "open_config": open_config,
             "inline_threshold": {r.name: m["inline_threshold"] for r, m in zip(records, made)}, "refs": nrefs}
    return ReferenceStore(location, tuple(manifest["granules"]), sum(sizes.get(k, 0) for k in keep), stats)


def _delete_unused(store: Any, prefix: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Delete reference files the new manifest no longer points at (after it was written)."""
    import obstore

    used = {e["refs"] for e in new["granules"].values()}
    stale = [f"{prefix}/{e['refs']}" for e in old.get("granules", {}).values() if e.get("refs") not in used]
    if stale:
        obstore.delete(store, stale)


# -- subset -------------------------------------------------------------------------------------------------


async def _fetch_refs(location: str, entry: dict[str, Any], *, out_credentials: Any) -> dict[str, Any]:
    """A granule's reference document (one GET), checked against the manifest's record of the granule."""
    import obstore

    from is2cloud.methods.lazyread import retry_transient

    name = entry["name"]
    bucket, key = split_url(f"{location}/{entry['refs']}")
    store = out_credentials.obstore(bucket)

    async def get() -> bytes:
        got = await obstore.get_async(store, key)
        return bytes(await got.bytes_async())

    try:
        raw = await retry_transient(get)  # a body cut short: read it again
    except FileNotFoundError:
        raise MissingReferencesError(f"{name}: its reference file s3://{bucket}/{key} is missing; prepare the "
                                     "references again") from None
    doc = _loads(raw, f"s3://{bucket}/{key}")
    mine = doc.pop("is2cloud", {})
    if mine.get("etag") != entry["etag"] or int(mine.get("size", -1)) != int(entry["size"]):
        raise StaleReferencesError(f"{name}: its reference file s3://{bucket}/{key} was made for another version "
                                   f"of the granule (ETag {mine.get('etag')}, the store records {entry['etag']})")
    return doc


def _zarr_group(doc: dict[str, Any], credentials: Any) -> Any:
    """A reference document as a read-only Zarr group (fsspec reference filesystem, async, zarr 3)."""
    import zarr
    from kerchunk.utils import refs_as_store

    # refs_as_store writes "asynchronous" into the remote_options it is given: always a fresh copy
    store = refs_as_store(doc, read_only=True, remote_protocol="s3",
                          remote_options=dict(credentials.fresh().storage_options()))
    return zarr.open_group(store, mode="r", zarr_format=2)


def _meta(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, (str, bytes)) else dict(value)


class KerchunkGranule(GranuleRefs):
    """One granule's reference document as :func:`is2cloud.methods.refread.read_references` reads it:
    the Zarr v2 metadata and ``[url, offset, length]`` (or inlined bytes) of every chunk. The document is
    fetched when the granule's group is read and let go after it (parsed, a bench-scale granule's is a few
    MB of Python objects: all of them at once held over a GB)."""

    def __init__(self, location: str, entry: dict[str, Any], credentials: Any, out_credentials: Any):
        record = GranuleRecord.from_dict(entry)
        self.name, self.obj = record.name, record.obj
        self.location, self.entry = location, entry
        self.credentials, self.out_credentials = credentials, out_credentials
        self.doc: dict[str, Any] = {}
        self.refs: dict[str, Any] = {}

    async def load(self) -> None:
        if not self.doc:
            self.doc = await _fetch_refs(self.location, self.entry, out_credentials=self.out_credentials)
            self.refs = self.doc.get("refs", self.doc)

    def release(self) -> None:
        self.doc, self.refs = {}, {}

    async def group_attrs(self, path: str) -> dict[str, Any] | None:
        prefix = f"{path}/" if path else ""
        if f"{prefix}.zgroup" not in self.refs:
            return None
        return _meta(self.refs.get(f"{prefix}.zattrs", "{}"))

    async def array(self, path: str) -> ArrayRefs | None:
        import base64

        import numpy as np

        meta = self.refs.get(f"{path}/.zarray")
        if meta is None:
            return None
        meta = _meta(meta)
        codec, shape, rows = codec_from_zarr(meta)
        sep = meta.get("dimension_separator") or "."
        tail = "".join(sep + "0" for _ in shape[1:])
        n = -(-shape[0] // rows) if shape else 1
        offsets, lengths = np.full(n, -1, dtype="i8"), np.zeros(n, dtype="i8")
        inline: dict[int, bytes] = {}
        for i in range(n):
            ref = self.refs.get(f"{path}/{i}{tail}")
            if ref is None:
                continue
            if isinstance(ref, (str, bytes)):
                text = ref if isinstance(ref, str) else ref.decode("latin-1")
                inline[i] = base64.b64decode(text[7:]) if text.startswith("base64:") else text.encode()
            elif len(ref) == 3 and ref[0] == self.obj.url:
                offsets[i], lengths[i] = int(ref[1]), int(ref[2])
            else:
                raise UnsupportedReferences(f"{path}/{i}: {ref!r}")
        return ArrayRefs(path, shape, rows, codec, offsets, lengths, inline)

    def zarr_group(self) -> Any:
        return _zarr_group(self.doc, self.credentials)


def subset(prepared_or_location: Any, aoi: Any, variables: Iterable[str] | None = None, *,
           credentials: Any = None, out_credentials: Any = None, client: Any = None,
           progress: bool | None = None):  # -> geopandas.GeoDataFrame
    """The rows inside ``aoi`` of every granule of the references (the handle :func:`prepare` returned,
    or its location), in the canonical schema: the same rows as the baseline.

    Reads the manifest, HEADs every granule object (:class:`StaleReferencesError` naming a changed or
    deleted one), refuses an AOI outside every recorded footprint (:class:`OutsideReferencesError`),
    then fetches the granules' reference sets (concurrently) and reads them with
    :func:`is2cloud.methods.refread.read_references` (:class:`KerchunkGranule`: only the chunks that hold
    rows inside, as coalesced byte ranges). A missing reference file raises
    :class:`MissingReferencesError`, a variable not in the references
    :class:`~is2cloud.methods.baseline.MissingVariableError`. ``client="sync"``: one GET at a time.
    """
    from is2cloud.access import get_credentials
    from is2cloud.aoi import load_aoi
    from is2cloud.methods.baseline import DEFAULT_VARIABLES, assemble, check_variables

    area = load_aoi(aoi)
    variables = check_variables(DEFAULT_VARIABLES if variables is None else variables)
    credentials = credentials if credentials is not None else get_credentials("read")
    out_credentials = out_credentials if out_credentials is not None else get_credentials("write")
    location = str(getattr(prepared_or_location, "location", prepared_or_location)).rstrip("/")
    manifest = read_manifest(location, out_credentials)
    if manifest is None or manifest.get("format") != FORMAT:
        raise MissingReferencesError(f"there are no kerchunk references of this book at {location} (no "
                                     f"{MANIFEST}, or another format)")
    entries = manifest["granules"]
    missing = sorted(set(getattr(prepared_or_location, "granules", ()) or ()) - set(entries))
    if missing:
        raise StaleReferencesError(f"{', '.join(missing)}: not in the references at {location} any more")
    records = [GranuleRecord.from_dict(e) for e in entries.values()]
    what = f"kerchunk references at {location}"
    check_fresh(credentials, records, what, StaleReferencesError)
    names = sorted(r.name for r in check_coverage(area, records, what, OutsideReferencesError))
    granules = [KerchunkGranule(location, entries[n], credentials, out_credentials) for n in names]
    return assemble(read_references(granules, area, variables, credentials=credentials,
                                    concurrency=1 if client == "sync" else 64), variables)


