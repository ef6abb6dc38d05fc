"""Repacked copies: cloud-optimized HDF5 (paged aggregation) beside the archive, read through HDF5's page buffer.

>>> copies = prepare(find_granules(aoi, "ATL06"))      # s3://<output bucket>/repacked/<archive key>  # doctest: +SKIP
>>> gdf = subset(copies, aoi)                           # or subset(copies.location, aoi)           # doctest: +SKIP

**Prepare** (:func:`prepare`). Each granule is repacked with :func:`is2cloud.repack.repack_to_s3`
(download, rewrite with h5py in file-space pages of ``page_size`` bytes, upload in one atomic PUT or
multipart upload) into the output bucket under its archive key, below ``out`` (default
``s3://<settings.output_bucket>/repacked/``). The copy's S3 metadata records the source URL, the
source's ETag and the page size. Granules fan out with :func:`is2cloud.parallel.map_granules`.

**Subset** (:func:`subset`). Before reading, one HEAD of the copy and one of its source check that the
source's ETag is still the one the copy was made from: a stale copy is an error naming the granule
(:class:`StaleCopyError`), never old rows. Then each copy is read (:func:`read_copy`, over a
:class:`CopyFile`) in three rounds of requests:

1. the **metadata** through h5py's page buffer (``page_buf_size`` = :data:`PAGE_BUFFER_PAGES` pages)
   over a block cache whose block is the page size: one GET per metadata page (one for an ATL06 copy)
   serves every object header and chunk index, and gives the chunk tables of what is read next;
2. the granule's scalars and every beam's coordinates, whole;
3. of the other variables, only the chunks holding rows inside the AOI;

rounds 2 and 3 as exact byte ranges, coalesced and fetched concurrently, announced by the baseline's
own clipping (:func:`is2cloud.methods.baseline.clip_granule`, ``rows="aoi-chunks"``, its ``prefetch``
hook), which then reads them from memory with h5py opened *without* the page buffer (the page buffer
would fetch a whole page for every chunk smaller than a page: for the Greenland AOI, nearly every page
of the file). Same clipping, same assembly: the canonical schema, the baseline's rows.

:func:`read_beam_h5coro` reads the same copies with h5coro (SlideRule's reader) instead of h5py;
:func:`open_read_group` and :func:`compare_open_read` measure opening and reading one group of a
granule and of its copy (notebook 06, :func:`benchmark`).
"""

from __future__ import annotations

import bisect
import os
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import h5py
import numpy as np

from is2cloud.aoi import load_aoi
from is2cloud.catalog import NoGranulesError
from is2cloud.methods import baseline
from is2cloud.methods.chunks import ChunkTable, chunk_table
from is2cloud.methods.ranges import ObjectFile, ObjectId, RangeRequest, coalesce, fetch_ranges, normalize_etag
from is2cloud.parallel import blocks_released, map_granules
from is2cloud.repack import AUTO, DEFAULT_PAGE_SIZE, _check_chunk_rows, _check_page_size, repack_to_s3
from is2cloud.settings import get_settings

__all__ = ["CHAPTER", "DESCRIPTION", "NAME", "PAGE_BUFFER_PAGES", "RANGE_GAP", "TITLE", "Copy", "CopyFile",
           "MissingCopyError", "READ_THREADS", "RepackedCopies", "RepackedError", "StaleCopyError", "benchmark",
           "check_copy", "compare_open_read", "copy_url", "default_location", "open_copy", "open_read_group", "prepare",
           "read_beam_h5coro", "read_copy", "read_group", "subset"]

NAME = "repacked"
TITLE = "repacked (paged HDF5)"
DESCRIPTION = ("cloud-optimized copies of the granules (h5repack -S PAGE: metadata gathered in pages) in your "
               "bucket, read through HDF5's page buffer: coordinates, then only the AOI's chunks")
CHAPTER = "notebooks/06_repack"

PAGE_BUFFER_PAGES = 4  # h5py's page buffer holds this many pages (at least two, or it thrashes)
# chunks at most this many bytes apart are fetched in one GET (an extra GET costs a round trip: ~30 ms,
# ~3 MB at 100 MB/s, but runs concurrently with the others)
RANGE_GAP = 256 * 2**10
# copies read at a time in each Dask worker (threads): a copy's reader waits on four round trips (HEADs,
# metadata page, coordinates, the AOI's chunks), during which another copy's chunks are decoded. Each copy
# being read holds its fetched chunks: at book scale 8 threads took the same time as 4 (5.1-5.7 s against
# 5.3-5.4 s) with ~110 MB more per worker (process tree 1,591 MB against 1,358 MB)
READ_THREADS = 4
_READER_STATS = ("gets", "page_gets", "bytes_fetched")  # read_copy's statistics beside the page buffer's
ReadMode = Literal["none", "blockcache", "page buffer", "page buffer + blockcache"]


class RepackedError(RuntimeError):
    """A repacked copy cannot be used; the message names the granule and says why."""


class StaleCopyError(RepackedError):
    """The source granule changed (its ETag) after the copy was made: repack it again (:func:`prepare`)."""


class MissingCopyError(RepackedError):
    """The copy of a granule is not where the handle says, or was not made by :func:`prepare`."""


@dataclass(frozen=True)
class Copy:
    """One repacked copy: which granule, where, made from which object (URL, ETag, size), and its cost."""

    name: str  # the granule's name (map_granules names work by it)
    url: str
    source_url: str = ""
    source_etag: str = ""
    source_bytes: int = 0
    nbytes: int = 0
    page_size: int = 0
    seconds: float = 0.0  # rewriting it (h5py)
    total_seconds: float = 0.0  # downloading the source, rewriting it, uploading the copy
    etag: str = ""  # the copy's own ETag (check_copy): every byte range read is checked against it

    @property
    def overhead(self) -> float:
        """Relative size of the copy against its source (0.25: 25 % larger)."""
        return self.nbytes / self.source_bytes - 1 if self.source_bytes else float("nan")


@dataclass(frozen=True)
class RepackedCopies:
    """What :func:`prepare` returns (:class:`is2cloud.methods.protocol.Prepared`): the copies below
    ``location``; ``stats``: what preparing read and wrote (``gets``, ``bytes_read``, ``seconds``,
    ``bytes_written``, ``page_size``, ``chunk_rows`` and per granule ``source_bytes``, ``bytes``,
    ``overhead``, ``seconds`` (rewriting) and ``total_seconds`` (with the download and the upload))."""

    location: str
    copies: tuple[Copy, ...]
    stats: dict[str, Any] = field(default_factory=dict, compare=False)
    method: str = NAME

    @property
    def granules(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.copies)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.copies)

    def __len__(self) -> int:
        return len(self.copies)

    def table(self):  # -> pandas.DataFrame
        """One row per copy: sizes, overhead, and the seconds spent rewriting it and moving it (the download
        of the source and the upload of the copy, in the worker that repacked it)."""
        import pandas as pd

        return pd.DataFrame([{"granule": c.name, "source MB": round(c.source_bytes / 1e6, 2),
                              "copy MB": round(c.nbytes / 1e6, 2), "overhead": f"{c.overhead:+.0%}",
                              "rewrite s": round(c.seconds, 2),
                              "download + upload s": round(c.total_seconds - c.seconds, 2)}
                             for c in self.copies]).set_index("granule")

    def __str__(self) -> str:
        src = sum(c.source_bytes for c in self.copies)
        return (f"{len(self.copies)} repacked copies under {self.location}: {self.nbytes / 1e6:,.2f} MB for "
                f"{src / 1e6:,.2f} MB of granules ({self.nbytes / src - 1 if src else float('nan'):+.0%}), "
                f"page {_bytes(self.stats.get('page_size', 0))}, made in {self.stats.get('seconds', float('nan')):.1f} s")


def _bytes(page_size: int | str) -> str:
    return f"{page_size:,} B" if isinstance(page_size, int) else str(page_size)


# -- where the copies go --------------------------------------------------------------------------------


def default_location() -> str:
    """``s3://<settings.output_bucket>/repacked/``."""
    return get_settings().output_url(f"{NAME}/")


def _check_location(out: Any) -> str:
    """The prefix the copies go under: an ``s3://bucket/prefix/`` outside the read-only archive bucket."""
    from is2cloud.geoparquet import refuse_archive_bucket

    location = default_location() if out is None else out
    if not isinstance(location, str) or not location.startswith("s3://") or not location[5:].split("/", 1)[0]:
        raise ValueError(f"out must be an s3:// prefix in your bucket (e.g. {default_location()!r}), not {out!r}; "
                         "for a local copy use is2cloud.repack.repack")
    refuse_archive_bucket(location, "repacked copies")
    return location if location.endswith("/") else location + "/"


def copy_url(location: str, source_url: str) -> str:
    """The copy of ``source_url`` under ``location``: the same key, mirrored (``<location><archive key>``)."""
    return location.rstrip("/") + "/" + source_url.split("://", 1)[1].split("/", 1)[1]


# -- prepare ----------------------------------------------------------------------------------------------


def _repack_one(source: baseline.GranuleSource, *, location: str, credentials: Any, out_credentials: Any,
                page_size: int | str, chunk_rows: int | None) -> Copy:
    t0 = time.perf_counter()
    report = repack_to_s3(source.url, copy_url(location, source.url), credentials=credentials,
                          out_credentials=out_credentials, page_size=page_size, chunk_rows=chunk_rows, progress=False)
    return Copy(name=source.name, url=report.dst, source_url=source.url, source_etag=report.source_etag or "",
                source_bytes=report.src_bytes, nbytes=report.dst_bytes, page_size=report.page_size,
                seconds=report.seconds,
                total_seconds=time.perf_counter() - t0)


def prepare(granules: Iterable[Any], *, out: str | None = None, credentials: Any = None, out_credentials: Any = None,
            client: Any = None, progress: bool | None = None, page_size: int | str = DEFAULT_PAGE_SIZE,
            chunk_rows: int | None = None) -> RepackedCopies:
    """Write a repacked copy of every granule under ``out`` (default :func:`default_location`).

    ``granules``: ``earthaccess.DataGranule`` records or ``s3://`` URLs. ``page_size``: bytes per file-space
    page (4 KiB to 64 MiB; default the published 8,000,000; ``"auto"``: per granule the smallest page that
    holds its metadata, :func:`is2cloud.repack.auto_page_size`: 2 MiB for ATL06); ``chunk_rows``: rechunk the
    record datasets (NSIDC's v007 uses 100,000; default: keep the source's chunks). ``credentials`` read the granules
    (default ``get_credentials("read")``), ``out_credentials`` write the copies (default
    ``get_credentials("write")``). The output location and the options are checked before any work; each
    upload is atomic, and a failed or interrupted call deletes the copies it made (not those that were there). Raises
    :class:`~is2cloud.parallel.GranuleError` naming every granule that failed (e.g. not an HDF5 file).
    """
    location = _check_location(out)
    page_size = _check_page_size(page_size, auto=True)
    chunk_rows = _check_chunk_rows(chunk_rows)
    items = [granules] if isinstance(granules, (str, os.PathLike)) or (isinstance(granules, dict)
                                                                        and "umm" in granules) else list(granules)
    if not items:
        raise NoGranulesError("no granules to repack: the list is empty (did the search find nothing?)")
    sources = [baseline.granule_source(g) for g in items]
    local = [s.name for s in sources if not s.url.startswith("s3://")]
    if local:
        raise ValueError(f"prepare repacks objects in S3; {', '.join(local)} are local files: use "
                         "is2cloud.repack.repack for those")
    credentials, out_credentials = _default_credentials(credentials, out_credentials)
    t0 = time.perf_counter()
    targets = {copy_url(location, s.url) for s in sources}
    s3 = _s3_client(out_credentials.fresh())
    existed = {url for url in targets if _head(s3, url) is not None}
    try:
        copies = map_granules(_repack_one, sources, client, progress=progress, label="repack", location=location,
                              credentials=credentials, out_credentials=out_credentials, page_size=page_size,
                              chunk_rows=chunk_rows)
    except BaseException:  # a failure or Ctrl-C: the new copies go, so the location never holds half a set
        s3 = _s3_client(out_credentials.fresh())
        for url in sorted(targets - existed):
            s3.delete_object(Bucket=_split(url)[0], Key=_split(url)[1])
        raise
    seconds = time.perf_counter() - t0
    stats = {"gets": len(copies), "bytes_read": sum(c.source_bytes for c in copies), "seconds": seconds,
             "bytes_written": sum(c.nbytes for c in copies), "page_size": _page_sizes(copies, page_size),
             "chunk_rows": chunk_rows,
             "per_granule": {c.name: {"source_bytes": c.source_bytes, "bytes": c.nbytes, "overhead": c.overhead,
                                      "seconds": c.seconds, "total_seconds": c.total_seconds} for c in copies}}
    return RepackedCopies(location=location, copies=tuple(copies), stats=stats)


def _page_sizes(copies: Sequence[Copy], asked: int | str) -> int | str:
    """The copies' page size, or when ``"auto"`` gave them several, ``"auto"``."""
    sizes = {c.page_size for c in copies}
    return sizes.pop() if len(sizes) == 1 else asked


def _default_credentials(credentials: Any, out_credentials: Any) -> tuple[Any, Any]:
    from is2cloud.access import get_credentials

    return (credentials if credentials is not None else get_credentials("read"),
            out_credentials if out_credentials is not None else get_credentials("write"))


# -- reading a copy -----------------------------------------------------------------------------------------


def _split(url: str) -> tuple[str, str]:
    bucket, _, key = url.split("://", 1)[1].partition("/")
    return bucket, key


_CLIENT_LOCK = threading.Lock()


def _s3_client(credentials: Any) -> Any:
    """One boto3 S3 client per credentials in this process (thread-safe; making one costs ~0.1-0.5 s of CPU,
    more than the HEADs it sends, so the copies read in threads wait for the first one instead of each
    making its own)."""
    with _CLIENT_LOCK:
        return _cached_client(credentials)


@lru_cache(maxsize=8)
def _cached_client(credentials: Any) -> Any:
    return credentials.boto3_client("s3")


def _head(client: Any, url: str) -> dict[str, Any] | None:
    """``head_object`` of ``url``, or None when there is no such object."""
    from botocore.exceptions import ClientError

    bucket, key = _split(url)
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            return None
        raise


def check_copy(copy: Copy, *, credentials: Any, out_credentials: Any) -> Copy:
    """The copy as it is in S3 now (size, page size, source), after checking that it exists, was made by
    :func:`prepare` and that its source still has the ETag it was made from. Two HEADs."""
    head = _head(_s3_client(out_credentials.fresh()), copy.url)
    if head is None:
        raise MissingCopyError(f"{copy.name}: there is no repacked copy at {copy.url} (run prepare for it)")
    meta = head.get("Metadata") or {}
    if not {"source-url", "source-etag", "page-size"} <= set(meta):
        raise MissingCopyError(f"{copy.name}: {copy.url} was not made by repacked.prepare (its S3 metadata lacks "
                               "source-url, source-etag or page-size)")
    source = _head(_s3_client(credentials.fresh()), meta["source-url"])
    if source is None:
        raise StaleCopyError(f"{copy.name}: the source of the copy {copy.url}, {meta['source-url']}, no longer exists")
    etag = str(source["ETag"]).strip('"')
    if etag != meta["source-etag"]:
        raise StaleCopyError(f"{copy.name}: the granule changed after it was repacked (its ETag is {etag}, the copy "
                             f"was made from {meta['source-etag']}); repack it again with repacked.prepare")
    return Copy(name=copy.name, url=copy.url, source_url=meta["source-url"], source_etag=etag,
                source_bytes=int(source["ContentLength"]), nbytes=int(head["ContentLength"]),
                page_size=int(meta["page-size"]), seconds=copy.seconds, etag=normalize_etag(head.get("ETag")))


@contextmanager
def open_copy(copy: Copy, credentials: Any, *, mode: ReadMode = "page buffer + blockcache") -> Iterator[h5py.File]:
    """The copy as an ``h5py.File`` over S3: an s3fs ``blockcache`` of one page per block and a page buffer of
    :data:`PAGE_BUFFER_PAGES` pages (``mode`` can drop either, to see what each does). ``copy.page_size``
    and ``copy.nbytes`` must be known (:func:`check_copy`)."""
    source = baseline.GranuleSource(copy.name, copy.url, copy.nbytes or None)
    h5_options = {"page_buf_size": PAGE_BUFFER_PAGES * copy.page_size} if mode.startswith("page buffer") else {}
    cache = ({"cache_type": "blockcache", "block_size": copy.page_size} if mode.endswith("blockcache")
             else {"cache_type": "none"})
    fs = credentials.fresh().s3fs()
    with (blocks_released(fs.open(copy.url, "rb", size=copy.nbytes or None, **cache)) as fh,
          baseline._h5(fh, source, **h5_options) as h5):
        yield h5


def _page_buffer_stats(h5: h5py.File) -> dict[str, int]:
    s = h5.id.get_page_buffering_stats()
    return {f"{kind}_{what}": int(getattr(getattr(s, kind), what))
            for kind in ("meta", "raw") for what in ("accesses", "hits", "misses", "evictions", "bypasses")}


class CopyFile(ObjectFile):
    """A repacked copy in S3 as a read-only file object for h5py: the byte ranges fetched so far, kept in
    memory, and two ways to fetch more.

    * **Pages**: a read that no fetched range holds fetches the whole page(s) around it, in one GET (a
      block cache whose block is the copy's page size): the metadata pages, which h5py's page buffer asks
      for whole anyway.
    * **Byte ranges fetched ahead** (:meth:`fetch`): exactly the stored chunks h5py is about to read,
      coalesced (:func:`~is2cloud.methods.ranges.coalesce`, gaps up to ``max_gap`` bytes) and fetched
      concurrently (:func:`~is2cloud.methods.ranges.fetch_ranges`); what is already held is not fetched again.

    Every response is checked against the copy's size and ETag (one consistent version of the object).
    ``gets`` and ``bytes_fetched`` count every GET, ``page_gets`` those of pages.
    """

    def __init__(self, credentials: Any, copy: Copy, *, max_gap: int = RANGE_GAP, concurrency: int = 16):
        super().__init__()
        if not (copy.nbytes and copy.page_size):
            raise ValueError(f"{copy.name}: the copy's size and page size must be known (check_copy)")
        bucket, key = _split(copy.url)
        self.obj = ObjectId(bucket, key, copy.nbytes, copy.etag)
        self.page_size, self.max_gap, self.concurrency = copy.page_size, max_gap, concurrency
        self._credentials = credentials
        self._store = credentials.obstore(bucket)
        self._starts: list[int] = []  # fetched ranges: sorted, disjoint
        self._data: list[bytes] = []
        self._pos = 0
        self.gets = 0
        self.page_gets = 0
        self.bytes_fetched = 0

    def _find(self, start: int, end: int) -> int | None:
        """The fetched range holding bytes ``start:end``, if one does."""
        i = bisect.bisect_right(self._starts, start) - 1
        return i if i >= 0 and self._starts[i] + len(self._data[i]) >= end else None

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start = self._pos
        end = min(start + len(view), self.obj.size)
        if end <= start:
            return 0
        i = self._find(start, end)
        if i is None:  # not fetched ahead: the page(s) around it
            page = self.page_size
            self._get([(start // page * page, min(-(-end // page) * page, self.obj.size))])
            self.page_gets += 1
            i = self._find(start, end)
            assert i is not None
        lo = start - self._starts[i]
        view[:end - start] = self._data[i][lo:lo + end - start]
        self._pos = end
        return end - start

    def fetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Fetch the byte ranges ``(start, end)`` (end exclusive) not held yet: coalesced, concurrently."""
        self._get(coalesce([(int(a), int(b)) for a, b in ranges if b > a and self._find(int(a), int(b)) is None],
                           max_gap=self.max_gap))

    def _get(self, ranges: list[tuple[int, int]]) -> None:
        if not ranges:
            return
        reqs = [RangeRequest(self.obj, a, b) for a, b in ranges]
        datas = fetch_ranges(self._credentials, reqs, concurrency=self.concurrency, stores=lambda _: self._store)
        self.gets += len(reqs)
        self.bytes_fetched += sum(len(d) for d in datas)
        for (a, _), data in zip(ranges, datas):
            self._insert(a, data)

    def _insert(self, start: int, data: bytes) -> None:
        """Add a fetched range, merged with the ranges it overlaps or touches (kept disjoint)."""
        end = start + len(data)
        lo = bisect.bisect_left(self._starts, start)
        if lo and self._starts[lo - 1] + len(self._data[lo - 1]) >= start:
            lo -= 1
        hi = lo
        while hi < len(self._starts) and self._starts[hi] <= end:
            hi += 1
        if hi > lo:
            first = min(start, self._starts[lo])
            last = max(end, self._starts[hi - 1] + len(self._data[hi - 1]))
            buf = bytearray(last - first)
            for s0, d in zip(self._starts[lo:hi], self._data[lo:hi]):
                buf[s0 - first:s0 - first + len(d)] = d
            buf[start - first:end - first] = data
            start, data = first, bytes(buf)
        self._starts[lo:hi] = [start]
        self._data[lo:hi] = [data]

    def close(self) -> None:
        self._starts.clear()
        self._data.clear()
        super().close()


def _chunk_ranges(table: ChunkTable, runs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The stored byte ranges of the chunks of ``table`` that hold any row of the row ranges ``runs``
    (COMPACT data sits in the object header: no range)."""
    out: list[tuple[int, int]] = []
    for a, b in runs:
        lo = int(np.searchsorted(table.row_stop, a, side="right"))
        hi = int(np.searchsorted(table.row_start, b, side="left"))
        out.extend((int(o), int(o + n)) for o, n in zip(table.byte_offset[lo:hi], table.nbytes[lo:hi]) if o >= 0)
    return out


def _chunk_tables(h5: h5py.File, variables: Sequence[str]) -> dict[str, ChunkTable]:
    """The chunk tables (h5py's chunk index: metadata only) of what :func:`baseline.clip_granule` reads:
    the granule's scalars and each beam's ``variables``, by dataset path (absent ones left out: the clip
    names them)."""
    paths = [baseline.EPOCH, *baseline.ORBIT.values()]
    paths += [f"/{beam}/{baseline.GROUP}/{v}" for beam in baseline.TRACK_IDS for v in variables]
    tables = {}
    for path in paths:
        ds = h5.get(path)
        if isinstance(ds, h5py.Dataset):
            tables[path] = chunk_table(ds)
    return tables


def read_copy(copy: Copy, *, aoi: Any, variables: Sequence[str], credentials: Any,
              out_credentials: Any) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The worker: check the copy (:func:`check_copy`), then read it in three rounds of requests.

    1. The **metadata** through h5py's page buffer (:data:`PAGE_BUFFER_PAGES` pages) over a page-size block
       cache (:class:`CopyFile`): the metadata pages, one GET each, give the chunk tables of the granule's
       scalars and of each beam's variables.
    2. The scalars and every beam's coordinates, whole: their stored chunks, coalesced and fetched
       concurrently.
    3. Of the other variables, only the chunks holding rows inside the AOI, again all at once.

    The values are read and clipped by the baseline's :func:`~is2cloud.methods.baseline.clip_granule`
    (``rows="aoi-chunks"``, its ``prefetch`` hook announcing rounds 2 and 3) on the copy opened without the
    page buffer, so h5py reads exactly the fetched chunks (the page buffer would read a whole page for each
    chunk smaller than a page). Returns the columns and the page buffer's statistics plus the reader's
    ``gets``, ``page_gets`` and ``bytes_fetched``.
    """
    copy = check_copy(copy, credentials=credentials, out_credentials=out_credentials)
    source = baseline.GranuleSource(copy.name, copy.url, copy.nbytes)
    with CopyFile(out_credentials.fresh(), copy) as fh:
        with baseline._h5(fh, source, page_buf_size=PAGE_BUFFER_PAGES * copy.page_size) as h5:
            tables = _chunk_tables(h5, variables)
            stats = _page_buffer_stats(h5)

        def prefetch(requests: list[tuple[h5py.Dataset, list[tuple[int, int]]]]) -> None:
            fh.fetch(r for ds, runs in requests
                     for r in _chunk_ranges(tables[ds.name] if ds.name in tables else chunk_table(ds), runs))

        with baseline._h5(fh, source) as h5:
            cols = baseline.clip_granule(h5, aoi, variables, granule=copy.name, rows="aoi-chunks", prefetch=prefetch)
        stats.update(gets=fh.gets, page_gets=fh.page_gets, bytes_fetched=fh.bytes_fetched)
        return cols, stats


def _copies(prepared_or_location: Any, out_credentials: Any) -> list[Copy]:
    """The copies of a :class:`RepackedCopies` handle, or every ``.h5`` object below a location."""
    if isinstance(prepared_or_location, RepackedCopies):
        return list(prepared_or_location.copies)
    if isinstance(prepared_or_location, str) and prepared_or_location.startswith("s3://"):
        location = prepared_or_location if prepared_or_location.endswith("/") else prepared_or_location + "/"
        fs = out_credentials.fresh().s3fs()
        try:
            keys = sorted(fs.find(location))
        except FileNotFoundError:
            keys = []
        from is2cloud.parallel import granule_name

        copies = [Copy(name=granule_name(k), url=f"s3://{k}") for k in keys if k.endswith((".h5", ".hdf5", ".he5"))]
        if not copies:
            raise MissingCopyError(f"there are no repacked copies under {location} (run repacked.prepare first)")
        return copies
    raise TypeError(f"subset takes what repacked.prepare returned or its location (an s3:// prefix), not "
                    f"{type(prepared_or_location).__name__}")


def subset(prepared_or_location: Any, aoi: Any, variables: Iterable[str] | None = None, *, credentials: Any = None,
           out_credentials: Any = None, client: Any = None, progress: bool | None = None,
           on_error: Literal["raise", "skip"] = "raise"):  # -> geopandas.GeoDataFrame
    """Rows of the repacked copies inside ``aoi`` in the canonical schema: the baseline's rows.

    ``prepared_or_location``: what :func:`prepare` returned, or its location (every copy below it is
    read). ``variables`` as in :func:`is2cloud.methods.baseline.subset`. ``credentials`` read the sources
    (one HEAD each, for their ETag); ``out_credentials`` read the copies. Raises
    :class:`~is2cloud.parallel.GranuleError` naming each granule whose copy is stale (:class:`StaleCopyError`),
    missing (:class:`MissingCopyError`) or unreadable. ``result.attrs["repacked"]``: ``page_buffer``, the page
    buffer's statistics summed over the copies (``meta_hits``, ``raw_misses``...), ``reader``, the requests
    :func:`read_copy` made (``gets``, ``page_gets``, ``bytes_fetched``), and ``copies``.
    """
    area = load_aoi(aoi)
    variables = baseline.check_variables(baseline.DEFAULT_VARIABLES if variables is None else variables)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    credentials, out_credentials = _default_credentials(credentials, out_credentials)
    copies = _copies(prepared_or_location, out_credentials)
    results = map_granules(read_copy, copies, client, on_error=on_error, progress=progress, label="repacked",
                           threads=READ_THREADS, aoi=area, variables=variables, credentials=credentials,
                           out_credentials=out_credentials)
    frame = baseline.assemble([cols for cols, _ in results], variables)
    totals: dict[str, int] = {}
    for _, stats in results:
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + v
    reader = {k: totals.pop(k) for k in _READER_STATS if k in totals}
    frame.attrs["repacked"] = {"copies": len(results), "page_buffer": totals, "reader": reader}
    if results.skipped:
        frame.attrs["skipped"] = [{"granule": f.name, "error": f.error_type, "message": f.message}
                                  for f in results.skipped]
        warnings.warn(results.report(), stacklevel=2)
    return frame


# -- a second reader: h5coro ----------------------------------------------------------------------------------

_ENV_LOCK = threading.Lock()


def read_beam_h5coro(url: str, beam: str = "gt1l", variables: Sequence[str] = baseline.DEFAULT_VARIABLES, *,
                     group: str = baseline.GROUP, credentials: Any = None) -> dict[str, np.ndarray]:
    """``{variable: values}`` of ``<beam>/<group>/<variable>`` read from the object ``url`` with h5coro
    (SlideRule's HDF5 reader), e.g. from a repacked copy. h5coro's S3 driver has no endpoint argument: it
    gets the endpoint from ``AWS_ENDPOINT_URL``, set here (under a lock, restored afterwards) from
    ``credentials`` (default ``get_credentials("write")``, the reader of your bucket)."""
    from h5coro import h5coro, s3driver

    if credentials is None:
        from is2cloud.access import get_credentials

        credentials = get_credentials("write")
    credentials = credentials.fresh()
    bucket, key = _split(url)
    paths = [f"/{beam}/{group}/{v}" for v in variables]
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in credentials.environ()}
        os.environ.update(credentials.environ())
        try:
            reader = h5coro.H5Coro(f"{bucket}/{key}", s3driver.S3Driver, credentials=dict(credentials.h5coro()),
                                   errorChecking=True)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    try:
        promise = reader.readDatasets(paths, block=True)
        out = {}
        for v, p in zip(variables, paths):
            values = promise[p]
            if values is None:
                raise RepackedError(f"{key.rsplit('/', 1)[-1]}: h5coro could not read {p}")
            out[v] = np.asarray(values)
        return out
    finally:
        reader.close()


# -- opening and reading one group, measured -------------------------------------------------------------------


def read_group(h5: h5py.File, group: str) -> dict[str, np.ndarray]:
    """Every dataset directly in ``group`` (e.g. ``gt1l/heights``), read whole."""
    if not isinstance(h5.get(group), h5py.Group):
        raise KeyError(f"{os.path.basename(str(h5.filename))}: there is no group {group}")
    g = h5[group]
    return {name: obj[()] for name, obj in g.items() if isinstance(obj, h5py.Dataset)}


def open_read_group(url: str, credentials: Any, group: str = "gt1l/heights", *, mode: str = "none",
                    page_size: int | None = None) -> dict[str, np.ndarray]:
    """Open the object ``url`` with h5py over s3fs and read ``group`` whole.

    ``mode``: ``"none"`` (no file cache: every read HDF5 makes is one GET), ``"blockcache"`` (earthaccess's
    block cache: :func:`~is2cloud.methods.baseline.open_options`), or for a paged copy ``"page buffer"`` /
    ``"page buffer + blockcache"`` (:func:`open_copy`, ``page_size`` needed).
    """
    name = url.rsplit("/", 1)[-1]
    if mode not in ("none", "blockcache", "page buffer", "page buffer + blockcache"):
        raise ValueError(f"mode must be 'none', 'blockcache', 'page buffer' or 'page buffer + blockcache', not {mode!r}")
    if mode.startswith("page buffer"):
        if not page_size:
            raise ValueError(f"{name}: mode {mode!r} needs the copy's page_size")
        nbytes = int(credentials.fresh().s3fs().info(url)["size"])
        with open_copy(Copy(name, url, nbytes=nbytes, page_size=page_size), credentials, mode=mode) as h5:  # type: ignore[arg-type]
            return read_group(h5, group)
    fs = credentials.fresh().s3fs()
    size = int(fs.info(url)["size"])
    options = baseline.open_options("blockcache", size) if mode == "blockcache" else {"cache_type": "none"}
    with (blocks_released(fs.open(url, "rb", size=size, **options)) as fh,
          baseline._h5(fh, baseline.GranuleSource(name, url)) as h5):
        return read_group(h5, group)


def compare_open_read(original_url: str, copy: str | Copy, *, cloud: Any, credentials: Any, out_credentials: Any,
                      group: str = "gt1l/heights", page_size: int = DEFAULT_PAGE_SIZE, scale: str | None = None,
                      results: Any = None, record: bool = True) -> list:  # -> list[bench.Measurement]
    """Open and read ``group`` of a granule and of its repacked copy, each with the same file object,
    under the cloud's current network profile: four measurements (original / copy x no file cache /
    block cache), values checked equal. The copies are read with the page buffer."""
    from is2cloud.bench import measure

    copy_url_ = copy.url if isinstance(copy, Copy) else copy
    page_size = copy.page_size if isinstance(copy, Copy) and copy.page_size else page_size
    runs = [("original, no file cache", original_url, credentials, "none"),
            ("copy, page buffer, no file cache", copy_url_, out_credentials, "page buffer"),
            ("original, earthaccess block cache", original_url, credentials, "blockcache"),
            ("copy, page buffer + page-size block cache", copy_url_, out_credentials, "page buffer + blockcache")]
    out, values = [], []
    for label, url, creds, mode in runs:
        with measure(f"open + read {group}: {label}", method=NAME, cloud=cloud, scale=scale, results=results,
                     record=record, granules=1, notes=f"{url.rsplit('/', 1)[-1]}; {mode}") as m:
            got = open_read_group(url, creds, group, mode=mode, page_size=page_size)
            m.rows = len(next(iter(got.values()))) if got else 0
        out.append(m)
        values.append(got)
    for label, got in zip(runs[1:], values[1:]):
        if got.keys() != values[0].keys() or any(not np.array_equal(got[k], values[0][k]) for k in got):
            raise AssertionError(f"{label[0]}: the values of {group} differ from the original's")
    return out


# -- the benchmark -----------------------------------------------------------------------------------------------


def _warm_worker(credentials: Any) -> None:
    """Import the copies' readers and make this process's S3 client (outside the measurement)."""
    import obstore  # noqa: F401

    _s3_client(credentials)


def benchmark(scale: str, cloud: Any, *, aoi: Any = None, profile: str = "in-region", client: Any = None,
              repeat: int = 1, results: str | os.PathLike[str] | None = None) -> list:  # -> list[bench.Measurement]
    """Measure, in one run at ``scale`` on the Greenland AOI:

    1. opening and reading ``gt1l/heights`` of one ATL03 granule (the archive's ATL03 granules are over
       Grand Mesa) and of its copy under the ``remote``
       profile (:func:`compare_open_read`; the issue's target: at least 10x fewer GETs for the copy);
    2. ``repack (prepare)``: repacked copies of the AOI's ATL06 granules (``profile``), each with the page
       size chosen for it (``page_size="auto"``, :func:`is2cloud.repack.auto_page_size`: 2 MiB, the smallest
       page that holds a 57 MB ATL06 granule's metadata; the ATL03 copy above uses the published 8,000,000);
    3. ``baseline (tuned) -> GeoParquet`` on the originals and ``repacked -> GeoParquet`` on the copies,
       each ``repeat`` times, rows checked identical (target: 3x faster at book scale, ``in-region``).

    ``cloud`` must serve the ``scale`` archive; its profile is restored afterwards.
    """
    from is2cloud.bench import Stash, measure
    from is2cloud.catalog import find_granules
    from is2cloud.geoparquet import write_geoparquet
    from is2cloud.granules.archive import REPO_DATA, publish_archive
    from is2cloud.methods.identity import assert_same_rows

    scene = baseline.bench_scene(scale, cloud, aoi=aoi, repeat=repeat, client=client)
    area, granules, credentials, limit, client = (scene.area, scene.granules, scene.credentials, scene.limit,
                                                  scene.client)
    bucket = cloud.buckets[0] if getattr(cloud, "buckets", None) else get_settings().output_bucket
    location = f"s3://{bucket}/bench/{NAME}-{scale}/"
    label = f"synthetic ATL06 v006, AOI {area.name}, {len(granules)} granules"
    before = cloud.profile_name
    out: list[Any] = []
    frames = Stash()  # the frames compared at the end, on disk meanwhile
    try:
        archive = publish_archive(scale, cache_dir=get_settings().cache_dir)
        try:  # the archive's ATL03 granules (the bench archive has none: the comparison is book scale's)
            atl03 = find_granules(REPO_DATA / "grandmesa.geojson", "ATL03", archive=archive)
        except NoGranulesError:
            atl03 = []
        if atl03:
            url = atl03[0].data_links(access="direct")[0]
            cloud.set_profile(profile)
            one = prepare([url], out=f"s3://{bucket}/bench/{NAME}-{scale}-atl03/", credentials=credentials,
                          out_credentials=credentials, client="sync")
            cloud.set_profile("remote")
            reads = compare_open_read(url, one.copies[0], cloud=cloud, credentials=credentials,
                                      out_credentials=credentials, scale=scale, results=results)
            for orig, cp in ((reads[0], reads[1]), (reads[2], reads[3])):
                cp.notes += (f"; {orig.gets / cp.gets:.1f}x fewer GETs than the original with the same file object "
                             f"({orig.gets} against {cp.gets}), {orig.wall_s / cp.wall_s:.1f}x faster")
            out.extend(reads)
        cloud.set_profile(profile)
        with measure("repack (prepare)", method=NAME, cloud=cloud, scale=scale, results=results, notes=label,
                     granules=len(granules)) as mp:
            copies = prepare(granules, out=location, credentials=credentials, out_credentials=credentials,
                             client=client, page_size=AUTO)
        src = sum(c.source_bytes for c in copies.copies)
        mp.notes = (f"{label}; {mp.wall_s / len(granules):.2f} s per granule; copies {copies.nbytes / 1e6:,.1f} MB "
                    f"for {src / 1e6:,.1f} MB ({copies.nbytes / src - 1:+.0%}); page {_bytes(copies.stats['page_size'])}")
        out.append(mp)
        baseline.fresh_workers(scene)  # the queries do not run on the workers the copies were made on
        client = scene.client
        if not isinstance(client, str):  # the copies' readers in the workers, as bench_scene warms the baseline's
            client.run(_warm_worker, credentials)
        for i in range(repeat):
            run = f"run {i + 1}/{repeat}"
            m0 = baseline.bench_tuned_run(scene, cloud, scale=scale, results=results, label=label, run=run,
                                          bucket=bucket)
            out.append(m0)
            if "baseline" not in frames:
                frames.put("baseline", m0.result)
            m0.result = None
            with measure("repacked -> GeoParquet", method=NAME, cloud=cloud, scale=scale, results=results,
                         notes=f"{label}; {run}", granules=len(granules), physical_bytes=limit.nbytes) as m1:
                m1.result = gdf = subset(copies, area, credentials=credentials, out_credentials=credentials,
                                         client=client)
                write_geoparquet(gdf, f"s3://{bucket}/bench/{NAME}-{scale}.parquet", credentials=credentials)
            m1.notes = (f"{label}; {run}; {m0.wall_s / m1.wall_s:.1f}x faster than baseline (tuned); "
                        f"{m1.gets} GETs against {m0.gets}")
            out.append(m1)
            if NAME not in frames:
                frames.put(NAME, gdf)
            m1.result = gdf = None
        assert_same_rows(frames.get("baseline"), frames.get(NAME), names=("baseline (tuned)", "repacked"))
    finally:
        cloud.set_profile(before)
        frames.close()
    return out
