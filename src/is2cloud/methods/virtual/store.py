"""Preparing the virtual store (one Icechunk repository, one group per granule) and subsetting from it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from is2cloud.methods.lazyread import COMPACT_ATTR, SCALARS_ATTR, retry_transient, retry_transient_sync
from is2cloud.methods.provenance import GranuleRecord, check_coverage, check_fresh, record_granules, sources
from is2cloud.methods.refread import ArrayRefs, GranuleRefs, UnsupportedReferences, codec_from_zarr, read_references
from is2cloud.methods.virtual import repo as icerepo
from is2cloud.methods.virtual.errors import OutsideStoreError, StaleStoreError, VirtualStoreError
from is2cloud.methods.virtual.sidecar import ParsedGranule, Parser, parse_granule

__all__ = ["FORMAT", "GRANULE_ATTR", "VirtualStore", "default_location", "prepare", "subset"]

FORMAT = "is2cloud-virtual/1"
GRANULE_ATTR = "is2cloud:granule"  # granule group attribute: the GranuleRecord and the parser used


@dataclass(frozen=True)
class VirtualStore:
    """The handle of a prepared virtual store (:class:`is2cloud.methods.protocol.Prepared`): the
    repository's location, the granules it holds, its size in bytes, the snapshot written and what
    preparing read (``stats``: ``gets``, ``bytes_read``, ``seconds``, ``parsers`` = granule -> ``dmrpp``
    or ``hdf``, ``warnings`` = granule -> parser warnings)."""

    location: str
    granules: tuple[str, ...]
    nbytes: int
    snapshot: str
    stats: dict[str, Any] = field(default_factory=dict, compare=False)
    method: str = "virtual"


def default_location(product: str = "ATL06", version: str = "006", bucket: str | None = None) -> str:
    """Where the book keeps the virtual store: ``virtual/<P>_<V>.icechunk`` under the output location
    (``s3://<output bucket>/<output prefix>/``), or at the root of ``bucket``."""
    from is2cloud.settings import get_settings

    name = f"virtual/{product.upper()}_{version}.icechunk"
    if bucket:
        return f"s3://{bucket}/{name}"
    settings = get_settings()
    if not settings.output_bucket:
        raise VirtualStoreError("no output bucket is configured (IS2CLOUD_OUTPUT_BUCKET) for the virtual store")
    return settings.output_url(name)


def _credentials(credentials: Any, out_credentials: Any) -> tuple[Any, Any]:
    from is2cloud.access import get_credentials

    return (credentials if credentials is not None else get_credentials("read"),
            out_credentials if out_credentials is not None else get_credentials("write"))


def _parse_all(records: list[GranuleRecord], credentials: Any, parser: Parser, client: Any,
               progress: bool | None) -> list[ParsedGranule]:
    from is2cloud.progress import Progress

    bar = Progress(len(records), "virtual store", progress)

    def one(rec: GranuleRecord) -> ParsedGranule | Exception:
        try:
            return parse_granule(rec.obj, credentials, parser)
        except Exception as exc:  # collected, raised below naming every granule
            return exc
        finally:
            bar.update()

    if client == "sync" or len(records) < 2:
        out = [one(r) for r in records]
    else:
        with ThreadPoolExecutor(min(4, len(records)), thread_name_prefix="is2cloud-virtual") as pool:
            out = list(pool.map(one, records))
    failures = [e for e in out if isinstance(e, Exception)]
    if failures:
        kinds = {type(e) for e in failures}
        cls = kinds.pop() if len(kinds) == 1 and issubclass(next(iter(kinds)), VirtualStoreError) else \
            VirtualStoreError
        raise cls(f"{len(failures)} of {len(records)} granules cannot be virtualised, nothing was written:\n"
                  + "\n".join(f"  - {type(e).__name__}: {e}" for e in failures))
    return out  # type: ignore[return-value]


def _write(session: Any, rec: GranuleRecord, parsed: ParsedGranule) -> None:
    import zarr

    root = zarr.open_group(session.store, mode="a")
    if rec.name in root:
        del root[rec.name]
    for path, group in parsed.groups.items():
        if not group.arrays:
            continue
        group.to_virtual_dataset().vz.to_icechunk(session.store, group=f"{rec.name}/{path}")
    for path, names in parsed.compact.items():
        zarr.open_group(session.store, path=f"{rec.name}/{path}", mode="a").attrs[COMPACT_ATTR] = sorted(names)
    g = zarr.open_group(session.store, path=rec.name, mode="a")
    g.attrs.update({GRANULE_ATTR: {**rec.to_dict(), "parser": parsed.parser}, SCALARS_ATTR: parsed.scalars})


def prepare(granules: Iterable[Any], *, out: str | os.PathLike[str] | None = None, credentials: Any = None,
            out_credentials: Any = None, client: Any = None, progress: bool | None = None,
            parser: Parser = "auto", mode: Literal["append", "overwrite"] = "append") -> VirtualStore:
    """Virtualise ``granules`` (``earthaccess.DataGranule`` records or ``s3://`` URLs of ATL06 granules)
    into one Icechunk repository at ``out`` (an ``s3://`` prefix; default :func:`default_location`).

    Per granule: one group named after it, holding each beam's ``gtx/land_ice_segments`` references,
    ``orbit_info``/``ancillary_data`` scalars, and the attributes ``is2cloud:granule`` (URL, size, ETag,
    footprint, parser) and ``is2cloud:scalars``. ``parser``: ``"auto"`` (the DMR++ sidecar
    ``<granule URL>.dmrpp`` when VirtualiZarr can parse it, else ``HDFParser`` with a warning naming the
    granule), ``"dmrpp"`` (a sidecar is required) or ``"hdf"``. ``mode="append"`` keeps the granules
    already in the store (replacing those given again); ``"overwrite"`` keeps only the given ones.

    All granules are parsed before anything is written, then written in one Icechunk commit: a failure
    leaves an existing store's branch as it was, and removes a repository this call created.
    ``credentials`` read the granules and sidecars (default ``get_credentials("read")``; they also
    authorise the store's virtual chunk containers); ``out_credentials`` write the store (default
    ``get_credentials("write")``). ``client="sync"`` parses one granule after the other (default: a few
    threads). Raises :class:`SidecarError`, :class:`VirtualStoreError` (naming the granules).
    """
    import zarr

    from is2cloud.catalog import NoGranulesError
    from is2cloud.geoparquet import refuse_archive_bucket

    t0 = time.perf_counter()
    if mode not in ("append", "overwrite"):
        raise ValueError(f"mode must be 'append' or 'overwrite', not {mode!r}")
    items, srcs = sources(granules, "the virtual store")
    if not items:
        raise NoGranulesError("no granules to virtualise: the list is empty (did the search find nothing?)")
    credentials, out_credentials = _credentials(credentials, out_credentials)
    location = os.fspath(out).rstrip("/") if out is not None else default_location()
    refuse_archive_bucket(location, "a virtual store")
    records = record_granules(items, srcs, credentials, VirtualStoreError)
    parsed = _parse_all(records, credentials, parser, client, progress)
    prefixes = {icerepo.container_prefix(r.url) for r in records}
    created = not icerepo.repo_exists(location, out_credentials)
    try:
        repo = (icerepo.create_repo(location, prefixes, credentials=credentials, out_credentials=out_credentials)
                if created else icerepo.open_repo(location, credentials=credentials, out_credentials=out_credentials,
                                                  prefixes=prefixes))
        session = repo.writable_session("main")
        root = zarr.open_group(session.store, mode="a")
        if mode == "overwrite":
            for name in list(root.group_keys()):
                del root[name]
        root.attrs["format"] = FORMAT
        for rec, p in zip(records, parsed):
            _write(session, rec, p)
        parsers = {r.name: p.parser for r, p in zip(records, parsed)}
        counts = {k: list(parsers.values()).count(k) for k in sorted(set(parsers.values()))}
        snapshot = session.commit(f"{len(records)} granules ({', '.join(f'{n} {k}' for k, n in counts.items())})")
        names = tuple(sorted(zarr.open_group(repo.readonly_session("main").store, mode="r").group_keys()))
    except BaseException:
        if created:
            icerepo.delete_prefix(location, out_credentials)
        raise
    stats = {"granules": len(records), "gets": sum(p.gets for p in parsed),
             "bytes_read": sum(p.bytes_read for p in parsed), "seconds": time.perf_counter() - t0,
             "parsers": parsers, "warnings": {r.name: p.warnings for r, p in zip(records, parsed) if p.warnings}}
    return VirtualStore(location, names, icerepo.prefix_nbytes(location, out_credentials), snapshot, stats)


def open_store(prepared_or_location: Any, *, credentials: Any = None, out_credentials: Any = None
               ) -> tuple[Any, dict[str, GranuleRecord]]:
    """The store's root group (read-only, its virtual chunks authorised with ``credentials``) and the
    granule records it holds. Raises :class:`VirtualStoreError` when there is no store there."""
    import zarr

    credentials, out_credentials = _credentials(credentials, out_credentials)
    location = str(getattr(prepared_or_location, "location", prepared_or_location)).rstrip("/")

    def attempt() -> tuple[Any, dict[str, GranuleRecord]]:
        if not icerepo.repo_exists(location, out_credentials):
            raise VirtualStoreError(f"there is no virtual store (Icechunk repository) at {location}")
        repo = icerepo.open_repo(location, credentials=credentials, out_credentials=out_credentials)
        root = zarr.open_group(repo.readonly_session("main").store, mode="r")
        if root.attrs.get("format") != FORMAT:
            raise VirtualStoreError(f"{location} is not a virtual store of this book (format "
                                    f"{root.attrs.get('format')!r}, expected {FORMAT!r})")
        return root, {name: GranuleRecord.from_dict(g.attrs[GRANULE_ATTR]) for name, g in root.groups()}

    return retry_transient_sync(attempt)  # a connection cut while opening: open again


def subset(prepared_or_location: Any, aoi: Any, variables: Iterable[str] | None = None, *,
           credentials: Any = None, out_credentials: Any = None, client: Any = None,
           progress: bool | None = None):  # -> geopandas.GeoDataFrame
    """The rows inside ``aoi`` of every granule in the virtual store (the handle :func:`prepare`
    returned, or its location), in the canonical schema: the same rows as the baseline.

    Opens the repository read-only, HEADs every granule object (a changed or deleted one:
    :class:`StaleStoreError` naming it), refuses an AOI outside every recorded footprint
    (:class:`OutsideStoreError`), then reads every granule group's chunk references
    (:func:`is2cloud.methods.refread.read_references`, :class:`IcechunkGranule`: the beams' coordinates,
    then only the chunks holding rows inside, as coalesced byte ranges of the granule objects).
    ``variables``: below ``gtx/land_ice_segments`` (canonical ones required); a COMPACT one raises
    :class:`CompactVariableError`. ``client="sync"`` sends one GET at a time (default: 64 at once).
    """
    from is2cloud.aoi import load_aoi
    from is2cloud.methods.baseline import DEFAULT_VARIABLES, assemble, check_variables

    area = load_aoi(aoi)
    variables = check_variables(DEFAULT_VARIABLES if variables is None else variables)
    credentials, out_credentials = _credentials(credentials, out_credentials)
    root, records = open_store(prepared_or_location, credentials=credentials, out_credentials=out_credentials)
    what = f"virtual store {str(getattr(prepared_or_location, 'location', prepared_or_location)).rstrip('/')}"
    wanted = getattr(prepared_or_location, "granules", None)
    missing = sorted(set(wanted or ()) - set(records))
    if missing:
        raise StaleStoreError(f"{', '.join(missing)}: not in the {what} any more (prepared again without it?)")
    check_fresh(credentials, records.values(), what, StaleStoreError)
    names = sorted(r.name for r in check_coverage(area, list(records.values()), what, OutsideStoreError))
    granules = [IcechunkGranule(records[n], root) for n in names]
    return assemble(read_references(granules, area, variables, credentials=credentials,
                                    concurrency=1 if client == "sync" else 64), variables)


class IcechunkGranule(GranuleRefs):
    """One granule group of the virtual store as :func:`is2cloud.methods.refread.read_references` reads
    it: Zarr v3 metadata from the snapshot, chunk references from the array's manifest (Icechunk's
    ``array_chunk_iterator``: one manifest read per array, no chunk read through Zarr)."""

    def __init__(self, record: GranuleRecord, root: Any):
        self.name, self.obj, self.root, self.store = record.name, record.obj, root, root.store

    async def _meta(self, path: str) -> dict[str, Any] | None:
        from zarr.core.buffer import default_buffer_prototype

        key = f"{self.name}/{path}/zarr.json" if path else f"{self.name}/zarr.json"
        buf = await retry_transient(lambda: self.store.get(key, prototype=default_buffer_prototype()))
        return None if buf is None else json.loads(buf.to_bytes())

    async def group_attrs(self, path: str) -> dict[str, Any] | None:
        meta = await self._meta(path)
        return meta.get("attributes") or {} if meta and meta.get("node_type") == "group" else None

    async def array(self, path: str) -> ArrayRefs | None:
        import numpy as np

        meta = await self._meta(path)
        if not meta or meta.get("node_type") != "array":
            return None
        codec, shape, rows = codec_from_zarr(meta)
        n = -(-shape[0] // rows) if shape else 1
        offsets, lengths = np.full(n, -1, dtype="i8"), np.zeros(n, dtype="i8")
        inline: dict[int, bytes] = {}

        async def manifest() -> list:  # read whole, so that a read cut short can be tried again
            return [batch async for batch in self.store.array_chunk_iterator(f"{self.name}/{path}")]

        for coords, kinds, urls, offs, lens, inlined in await retry_transient(manifest):
            first = coords[:, 0].astype("i8") if len(coords) and coords.shape[1] else np.zeros(len(kinds), "i8")
            for j, c in enumerate(first):
                if kinds[j] == 3:
                    inline[int(c)] = bytes(inlined[j])
                elif kinds[j] == 2 and urls[j] == self.obj.url:
                    offsets[c], lengths[c] = int(offs[j]), int(lens[j])
                else:
                    raise UnsupportedReferences(f"{path}: chunk {c} is {urls[j]!r} (kind {kinds[j]})")
        return ArrayRefs(path, shape, rows, codec, offsets, lengths, inline)

    def zarr_group(self) -> Any:
        return self.root[self.name]


