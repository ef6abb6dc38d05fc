"""Byte ranges of S3 objects with obstore: coalescing, concurrent fetches that check the object's
identity, a block-cached file object for h5py, and decoding of HDF5 chunks with numcodecs.

Why not ``obstore.get_ranges``: it merges ranges that lie within 1 MiB of each other into one request
(object_store's coalescing) and so fetches the gaps too, and it does not return the object's ETag.
Here each coalesced range is one ``GET`` with a ``Range`` header (``obstore.get_async``), run
concurrently, and every response's ETag and object size are compared with what the caller expects:
an object that changed under us is detected by the very request that reads it, at no extra cost.

>>> ranges = coalesce([(0, 100), (100, 250), (900, 1000)], max_gap=0)      # [(0, 250), (900, 1000)]  # doctest: +SKIP
>>> data = fetch_ranges(credentials, [RangeRequest(obj, 0, 250)])            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np

__all__ = ["BlockFile", "Codec", "ObjectChangedError", "ObjectId", "ObjectMissingError", "RangeError",
           "RangeRequest", "check_objects", "coalesce", "fetch_ranges", "head_object", "normalize_etag", "run_sync", "split_url"]

T = TypeVar("T")
_MiB = 2**20


class RangeError(RuntimeError):
    """A byte range could not be read (after retries); the message names the object and the range."""


class ObjectChangedError(RangeError):
    """The object is not the one the caller expects (another ETag or size)."""


class ObjectMissingError(RangeError):
    """There is no object at the key (or access to it was refused)."""


def normalize_etag(etag: str | None) -> str:
    """An ETag without quotes or weak prefix, lower case (S3 returns ``"<hex>"``; catalogs store ``<hex>``)."""
    text = (etag or "").strip()
    if text.startswith("W/"):
        text = text[2:]
    return text.strip('"').lower()


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// URL")
    bucket, _, key = url[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"{url!r} is not an s3://bucket/key URL")
    return bucket, key


@dataclass(frozen=True)
class ObjectId:
    """An object and what identifies its content: size in bytes and ETag (without quotes)."""

    bucket: str
    key: str
    size: int
    etag: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def check(self, size: int | None, etag: str | None) -> None:
        """Raise :class:`ObjectChangedError` if a response's object size or ETag differ from this one's."""
        got = normalize_etag(etag)
        if (size is not None and int(size) != self.size) or (got and self.etag and got != self.etag):
            raise ObjectChangedError(f"{self.name}: the object at {self.url} changed: it now has {size} bytes and "
                                     f"ETag {got or '?'}, expected {self.size} bytes and ETag {self.etag}")


@dataclass(frozen=True)
class RangeRequest:
    """Bytes ``start:end`` (end exclusive) of an object."""

    obj: ObjectId
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


# -- running coroutines from sync code (also inside Jupyter, whose loop is already running) ----------


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code, whether or not a loop is running here."""
    box: list[Any] = []

    async def wrapper() -> None:
        # The main task returns None: Python 3.12.1's asyncio.Runner reprs the main task (its result
        # included, megabytes of bytes here) when it restores the SIGINT handler.
        box.append(await coro)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(wrapper())
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="is2cloud-async") as pool:
            pool.submit(asyncio.run, wrapper()).result()
    return box[0]


# -- coalescing -------------------------------------------------------------------------------------


def coalesce(ranges: Iterable[tuple[int, int]], *, max_gap: int = 0, max_size: int = 64 * _MiB,
             max_extra: int | None = None) -> list[tuple[int, int]]:
    """Merge ``(start, end)`` ranges (end exclusive) that overlap, touch, or lie at most ``max_gap`` bytes
    apart, without making a range longer than ``max_size`` (a single longer input range is kept whole, and
    overlapping ranges are always merged). Returns sorted, disjoint ranges, each input range inside one.

    ``max_extra``: at most this many bytes of gaps in all (bytes fetched that no input asked for); the
    smallest gaps are merged first, so the fewest ranges are made for that many extra bytes.
    """
    items = sorted((int(a), int(b)) for a, b in ranges if b > a)
    out: list[tuple[int, int]] = []
    gap = max_gap if max_extra is None else 0
    for a, b in items:
        if out:
            s, e = out[-1]
            if a < e or (a - e <= gap and max(b, e) - s <= max_size):
                out[-1] = (s, max(b, e))
                continue
        out.append((a, b))
    if max_extra is None or len(out) < 2 or max_gap <= 0:
        return out
    # merge the gaps between neighbours, smallest first, within the gap budget and max_size
    first = list(range(len(out)))  # first[i]: the first range of i's group (valid at group ends)
    last = list(range(len(out)))   # last[i]: the last range of i's group (valid at group starts)
    joined = [False] * (len(out) - 1)  # joined[i]: ranges i and i + 1 are in one group
    budget = int(max_extra)
    gaps = sorted((out[i + 1][0] - out[i][1], i) for i in range(len(out) - 1))
    for g, i in gaps:
        if g > max_gap or g > budget:
            break
        lo, hi = first[i], last[i + 1]
        if out[hi][1] - out[lo][0] > max_size:
            continue
        joined[i] = True
        budget -= g
        last[lo], first[hi] = hi, lo
    merged: list[tuple[int, int]] = []
    start = 0
    for i in range(len(out)):
        if i == len(out) - 1 or not joined[i]:
            merged.append((out[start][0], out[i][1]))
            start = i + 1
    return merged


# -- fetching --------------------------------------------------------------------------------------


def _missing(exc: FileNotFoundError | PermissionError, name: str, url: str) -> ObjectMissingError:
    """obstore's answer for an object that is not there (404) or not readable (403), naming the object."""
    if isinstance(exc, FileNotFoundError):
        return ObjectMissingError(f"{name}: there is no object at {url}")
    return ObjectMissingError(f"{name}: access to {url} was refused (wrong or expired credentials?)")


def _transient(exc: BaseException) -> bool:
    return not isinstance(exc, (RangeError, FileNotFoundError, PermissionError, ValueError, TypeError))


async def _get(store: Any, req: RangeRequest, *, retries: int, check: bool) -> bytes:
    """One ranged GET, checked against the expected object; transient failures are retried with backoff
    (obstore itself retries 5xx answers; this also covers bodies cut short, e.g. a connection reset)."""
    import obstore

    delay = 0.05
    for attempt in range(retries + 1):
        try:
            result = await obstore.get_async(store, req.obj.key, options={"range": (req.start, req.end)})
            if check:
                meta = result.meta
                req.obj.check(meta.get("size"), meta.get("e_tag"))
            data = await result.bytes_async()
            if len(data) != req.nbytes:
                raise OSError(f"short read: {len(data)} of {req.nbytes} bytes")
            return bytes(data) if not isinstance(data, (bytes, bytearray)) else data
        except (FileNotFoundError, PermissionError) as exc:
            raise _missing(exc, req.obj.name, req.obj.url) from None
        except Exception as exc:
            if not _transient(exc) or attempt == retries:
                if isinstance(exc, RangeError):
                    raise
                raise RangeError(f"{req.obj.name}: cannot read bytes {req.start}-{req.end - 1} of {req.obj.url} "
                                 f"after {attempt + 1} attempts ({type(exc).__name__})") from None
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


class _Stores:
    """One obstore S3Store per bucket, made from the credentials on first use."""

    def __init__(self, credentials: Any):
        self.credentials = credentials
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, bucket: str) -> Any:
        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                store = self._stores[bucket] = self.credentials.obstore(bucket)
            return store


def fetch_ranges(credentials: Any, requests: Sequence[RangeRequest], *, concurrency: int = 64,
                 retries: int = 4, check: bool = True,
                 process: Callable[[int, bytes], T] | None = None, workers: int | None = None,
                 stores: Callable[[str], Any] | None = None) -> list[Any]:
    """Fetch every range (one GET each, at most ``concurrency`` at once) and return their bytes in order.

    With ``check`` each response's ETag and object size must match ``request.obj``
    (:class:`ObjectChangedError` otherwise); a missing object raises :class:`ObjectMissingError`.
    ``process(i, data)``, if given, runs in a thread pool of ``workers`` threads as each range arrives
    (e.g. to decompress while other ranges are still in flight), and its results are returned instead;
    a range counts against ``concurrency`` until it is processed, so the bytes fetched but not yet
    processed stay bounded when processing is slower than the network. ``workers=0``: ``process`` runs on
    the event loop's thread as each range arrives, without a hand-over to a pool and back per range (where
    processing is light beside the requests: a book-scale chunk index query spent 15 % less wall time, 17 %
    less CPU, on 2 cores).
    """
    if not requests:
        return []
    get_store = stores or _Stores(credentials)

    async def main() -> list[Any]:
        sem = asyncio.Semaphore(max(1, concurrency))
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="is2cloud-decode") if process and workers != 0 else None

        async def one(i: int, req: RangeRequest) -> Any:
            async with sem:  # held while the range is processed: at most `concurrency` ranges wait in memory
                data = await _get(get_store(req.obj.bucket), req, retries=retries, check=check)
                if process is not None:
                    return process(i, data) if pool is None else await loop.run_in_executor(pool, process, i, data)
            return data

        tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(requests)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    return run_sync(main())


def check_objects(credentials: Any, objects: Sequence[ObjectId], *, concurrency: int = 64) -> None:
    """HEAD every object (``concurrency`` at once) and compare its size and ETag with what ``objects``
    expect: :class:`ObjectMissingError` or :class:`ObjectChangedError` for one that differs."""
    import obstore

    if not objects:
        return
    stores = _Stores(credentials)

    async def main() -> None:
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(o: ObjectId) -> None:
            async with sem:
                try:
                    meta = await obstore.head_async(stores(o.bucket), o.key)
                except (FileNotFoundError, PermissionError) as exc:
                    raise _missing(exc, o.name, o.url) from None
            o.check(meta.get("size"), meta.get("e_tag"))

        await asyncio.gather(*(one(o) for o in objects))

    run_sync(main())


def head_object(credentials: Any, bucket: str, key: str, *, store: Any = None) -> ObjectId:
    """The size and ETag of an object (one HEAD); :class:`ObjectMissingError` if there is none."""
    import obstore

    try:
        meta = obstore.head(store if store is not None else credentials.obstore(bucket), key)
    except (FileNotFoundError, PermissionError) as exc:
        raise _missing(exc, key.rsplit("/", 1)[-1], f"s3://{bucket}/{key}") from None
    return ObjectId(bucket, key, int(meta["size"]), normalize_etag(meta.get("e_tag")))


# -- a block-cached file object for h5py -------------------------------------------------------------


class ObjectFile(io.RawIOBase):
    """A read-only, seekable file over one S3 object (``obj``, an :class:`ObjectId`); subclasses fetch bytes."""

    obj: ObjectId
    _pos: int = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.obj.size}[whence]
        self._pos = max(0, base + int(offset))
        return self._pos


class BlockFile(ObjectFile):
    """A read-only file object over one S3 object, read in blocks of ``block_size`` bytes kept in memory.

    Every block is fetched at most once. A read that misses several blocks fetches them concurrently;
    :meth:`prefetch` fetches any set of blocks concurrently (``prefetch()`` = the whole object, which is
    the fastest way to walk the scattered metadata of a non-paged HDF5 file of moderate size). Every
    response is checked against ``obj`` (size and ETag), so the file is one consistent version.
    """

    def __init__(self, credentials: Any, obj: ObjectId, *, block_size: int = 8 * _MiB, concurrency: int = 16,
                 store: Any = None):
        super().__init__()
        self.obj = obj
        self.block_size = int(block_size)
        self.concurrency = concurrency
        self._credentials = credentials
        self._store = store if store is not None else credentials.obstore(obj.bucket)
        self._blocks: dict[int, bytes] = {}
        self._pos = 0
        self.gets = 0
        self.bytes_fetched = 0

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start = self._pos
        end = min(start + len(view), self.obj.size)
        if end <= start:
            return 0
        first, last = start // self.block_size, (end - 1) // self.block_size
        self.prefetch(range(first, last + 1))
        out = 0
        for b in range(first, last + 1):
            block = self._blocks[b]
            lo = max(start, b * self.block_size) - b * self.block_size
            hi = min(end, (b + 1) * self.block_size) - b * self.block_size
            view[out:out + hi - lo] = block[lo:hi]
            out += hi - lo
        self._pos = end
        return out

    def pread(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` (fetching missing blocks), without moving the file position."""
        pos = self._pos
        try:
            self._pos = offset
            buf = bytearray(n)
            got = self.readinto(buf)
        finally:
            self._pos = pos
        return bytes(buf[:got])

    @property
    def nblocks(self) -> int:
        return max(1, math.ceil(self.obj.size / self.block_size))

    def prefetch(self, blocks: Iterable[int] | None = None) -> None:
        """Fetch the given blocks (default: all) that are not cached yet, concurrently."""
        wanted = range(self.nblocks) if blocks is None else blocks
        missing = sorted({b for b in wanted if b not in self._blocks and 0 <= b < self.nblocks})
        if not missing:
            return
        reqs = [RangeRequest(self.obj, b * self.block_size, min((b + 1) * self.block_size, self.obj.size))
                for b in missing]
        datas = fetch_ranges(self._credentials, reqs, concurrency=self.concurrency,
                             stores=lambda bucket: self._store)
        for b, data in zip(missing, datas):
            self._blocks[b] = data
        self.gets += len(reqs)
        self.bytes_fetched += sum(len(d) for d in datas)

    def close(self) -> None:
        self._blocks.clear()
        super().close()


# -- HDF5 chunk codecs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    """How to turn the stored bytes of one piece of a dataset (a chunk, or a slice of contiguous data)
    into rows: the filters applied when it was written, in pipeline order, the dtype and the shape of one
    row, the rows a stored chunk holds, and the fill value (for chunks never written).

    ``filters`` are ``("deflate", level)``, ``("shuffle", element size)`` or ``("fletcher32",)``.
    Serialized as compact JSON (:meth:`to_json`), which the chunk index stores per piece.
    """

    dtype: str
    row_shape: tuple[int, ...] = ()
    chunk_rows: int | None = None  # rows per stored chunk (None: the piece holds exactly its rows)
    filters: tuple[tuple[Any, ...], ...] = ()
    fill: str = ""  # the fill value as hex of one element in ``dtype``
    _decoders: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    SUPPORTED = ("deflate", "shuffle", "fletcher32")

    def __post_init__(self) -> None:
        import numcodecs

        decoders = []
        for f in self.filters:
            name = f[0]
            if name == "deflate":
                decoders.append(numcodecs.Zlib(level=int(f[1]) if len(f) > 1 else 6))
            elif name == "shuffle":
                decoders.append(numcodecs.Shuffle(elementsize=int(f[1])))
            elif name == "fletcher32":
                decoders.append(numcodecs.Fletcher32())
            else:
                raise ValueError(f"unsupported HDF5 filter {name!r}; supported: {', '.join(self.SUPPORTED)}")
        object.__setattr__(self, "_decoders", tuple(reversed(decoders)))

    @property
    def row_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * int(np.prod(self.row_shape, dtype=np.int64)))

    def to_json(self) -> str:
        return json.dumps({"dtype": self.dtype, "row_shape": list(self.row_shape), "chunk_rows": self.chunk_rows,
                           "filters": [list(f) for f in self.filters], "fill": self.fill},
                          separators=(",", ":"))

    @staticmethod
    @lru_cache(maxsize=4096)
    def from_json(text: str) -> Codec:
        d = json.loads(text)
        return Codec(d["dtype"], tuple(d.get("row_shape") or ()), d.get("chunk_rows"),
                     tuple(tuple(f) for f in d.get("filters") or ()), d.get("fill") or "")

    def without(self, filter_mask: int) -> Codec:
        """This codec minus the filters a chunk's ``filter_mask`` says were skipped when it was written."""
        if not filter_mask:
            return self
        kept = tuple(f for i, f in enumerate(self.filters) if not filter_mask & (1 << i))
        return Codec(self.dtype, self.row_shape, self.chunk_rows, kept, self.fill)

    def fill_rows(self, nrows: int) -> np.ndarray:
        """``nrows`` rows of the fill value (what HDF5 returns for a chunk never written)."""
        one = np.frombuffer(bytes.fromhex(self.fill), dtype=self.dtype) if self.fill else np.zeros(1, self.dtype)
        return np.full((nrows, *self.row_shape), one[0], dtype=self.dtype)

    def decode(self, stored: bytes | memoryview, nrows: int) -> np.ndarray:
        """The first ``nrows`` rows held by ``stored`` (the bytes as written in the file)."""
        buf: Any = stored
        for dec in self._decoders:
            buf = dec.decode(buf)
        arr = np.frombuffer(buf, dtype=self.dtype)
        per_row = math.prod(self.row_shape)
        need = nrows * per_row
        if arr.size < need:
            raise ValueError(f"a stored piece decodes to {arr.size} values, fewer than the {need} expected")
        return arr[:need].reshape((nrows, *self.row_shape))
