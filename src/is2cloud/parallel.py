"""Fan-out over granules with dask.distributed.

``map_granules(fn, granules)`` calls ``fn(granule, **kwargs)`` once per granule and returns the
results in input order. Where the work runs:

* ``client=None``: the current default ``distributed.Client`` if there is one (e.g. a Dask Gateway
  cluster created in the notebook on CryoCloud), else a process-wide ``LocalCluster`` on loopback,
  sized for this machine (one single-threaded worker process per core this process may use, within a
  container's CPU limit: h5py holds a global lock, so threads would serialize), created on first use, reused, and closed at interpreter exit;
* any ``distributed.Client``;
* ``client="sync"``: serially in this process (debugging, tests, tracebacks you can step into).

``threads=n`` (n > 1) is for readers that wait on the network more than they compute: the granules go
to the workers in one batch per worker thread, and each batch is read ``n`` granules at a time in threads,
so that one granule's round trips overlap another's decoding (h5py's lock still serializes HDF5 calls).

Failures are reported by granule name: with ``on_error="raise"`` every granule is tried and a
:class:`GranuleError` names each one that failed and why; with ``on_error="skip"`` the successful
results come back with a report of the skipped granules.
"""

from __future__ import annotations

import atexit
import gc
import os
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

from is2cloud.progress import Progress

__all__ = ["GranuleError", "GranuleFailure", "GranuleResults", "blocks_released", "granule_name", "get_client",
           "close_client", "is_shared_client", "map_granules", "pin_mmap_threshold", "release_heap",
           "release_memory"]

OnError = Literal["raise", "skip"]


def granule_name(granule: Any) -> str:
    """A readable name: the file name of an ``earthaccess.DataGranule``, URL, path or name."""
    if isinstance(granule, os.PathLike):
        granule = os.fspath(granule)
    if isinstance(granule, str):
        return PurePosixPath(granule.split("?", 1)[0].rstrip("/")).name or granule
    if isinstance(granule, dict):  # earthaccess.DataGranule is a dict of the CMR record
        umm = granule.get("umm", {}) or {}
        for ident in umm.get("DataGranule", {}).get("Identifiers", []) or []:
            if ident.get("IdentifierType") == "ProducerGranuleId" and ident.get("Identifier"):
                return str(ident["Identifier"])
        if umm.get("GranuleUR"):
            return str(umm["GranuleUR"])
        for link in umm.get("RelatedUrls", []) or []:
            if link.get("Type") == "GET DATA" and link.get("URL"):
                return granule_name(link["URL"])
    name = getattr(granule, "name", None)
    return str(name) if name else repr(granule)[:80]


@dataclass(frozen=True)
class GranuleFailure:
    """One granule that failed: its name, position in the input and the reason."""

    name: str
    index: int
    error_type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.error_type}: {self.message}"


class GranuleError(RuntimeError):
    """Some granules failed; ``failures`` lists each with its reason (the message names them all)."""

    def __init__(self, failures: Sequence[GranuleFailure], total: int, action: str = "process"):
        self.failures = list(failures)
        self.total = total
        lines = "\n".join(f"  - {f}" for f in self.failures)
        super().__init__(f"{len(self.failures)} of {total} granules failed to {action}:\n{lines}")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.failures]

    def __reduce__(self):  # keep the failures when pickled (e.g. across Dask)
        return (type(self), (self.failures, self.total))


class GranuleResults(list):
    """The successful results in input order, with ``names`` beside them and ``skipped`` failures."""

    def __init__(self, results: Iterable[Any] = (), names: Iterable[str] = (),
                 skipped: Iterable[GranuleFailure] = ()):
        super().__init__(results)
        self.names: list[str] = list(names)
        self.skipped: list[GranuleFailure] = list(skipped)

    def report(self) -> str:
        done = f"{len(self)} granules processed"
        if not self.skipped:
            return done
        return f"{done}, {len(self.skipped)} skipped:\n" + "\n".join(f"  - {f}" for f in self.skipped)


# -- the shared local cluster ----------------------------------------------------------------------

_lock = threading.Lock()
_local: dict[str, Any] = {}


def _default_workers() -> int:
    """The cores this process may use: the smallest of the host's cores, its CPU affinity and the container's
    CPU limit (cgroup quota; a CryoCloud pod is limited below the node's cores), as ``dask.system.cpu_count``."""
    from dask.system import cpu_count

    return max(1, cpu_count())


def get_client(n_workers: int | None = None):  # -> distributed.Client
    """The process-wide client of a loopback ``LocalCluster`` (one single-threaded process per core).

    Created on first use and reused; closed at interpreter exit or by :func:`close_client`.
    """
    from distributed import Client, LocalCluster

    with _lock:
        client = _local.get("client")
        if client is not None and client.status == "running":
            return client
        # silence_logs=CRITICAL: a task that raises is logged by its worker at ERROR with the whole traceback
        # ("Compute Failed"); map_granules reports each failed granule in one line of its GranuleError instead.
        cluster = LocalCluster(n_workers=n_workers or _default_workers(), threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=50)
        client = Client(cluster, set_as_default=False)
        _local.update(client=client, cluster=cluster)
        if not _local.get("atexit"):
            atexit.register(close_client)
            _local["atexit"] = True
        return client


def is_shared_client(client: Any) -> bool:
    """Whether ``client`` is the process-wide local cluster's (made by :func:`get_client`)."""
    return client is not None and client is _local.get("client")


def close_client() -> None:
    """Close the process-wide local cluster (if one was started)."""
    with _lock:
        client, cluster = _local.pop("client", None), _local.pop("cluster", None)
    for obj in (client, cluster):
        if obj is not None:
            try:
                obj.close()
            except Exception:  # closing at exit: nothing useful to report
                pass


def trim_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the operating system (glibc's
    ``malloc_trim``; elsewhere only the collection): memory freed by a finished task stays in a process's
    resident size until then."""
    gc.collect()
    release_heap()


# glibc's mallopt parameter, and the value pinned (its initial default): see pin_mmap_threshold
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold (blocks this large or larger get pages of their own, handed back to the
    operating system when freed); True if set (glibc only). Called when ``is2cloud`` is imported, in the
    notebook's process and in every Dask worker that runs its tasks.

    glibc starts at 128 KiB but raises the threshold to the size of each mmapped block freed (up to 32 MiB).
    After one large array, the arrays a reader decodes chunk by chunk come from the heap of the thread that
    decodes them, and a thread's heap keeps what is freed below what is still held: a virtual-store query
    that kept 13 MB of rows at book scale grew by 207 MB, and by 52 MB with the threshold pinned
    (``MALLOC_MMAP_THRESHOLD_`` has the same effect, but only when set before the process starts)."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def release_heap() -> None:
    """Hand the C heap's free pages back to the operating system (glibc's ``malloc_trim``; a few
    milliseconds; elsewhere nothing): after a large frame is assembled, the copies it was made from are
    free but stay in the process's resident size, under whatever comes next (writing it, say)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@lru_cache(maxsize=1)
def _glibc() -> Any:
    """glibc (``ctypes.CDLL``) when this process runs on it and it has ``mallopt`` and ``malloc_trim``,
    else None."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_paused = {"depth": 0, "enabled": False}
_paused_lock = threading.Lock()


@contextmanager
def collection_paused() -> Iterator[None]:
    """No automatic garbage collection in this process (any thread) while the block runs (nested and
    concurrent blocks count).

    For h5py reading through an fsspec file: h5py holds its global lock while HDF5 reads, and the read
    waits on fsspec's IO thread. A collection that starts in that thread and frees an h5py object left in a
    reference cycle (by an earlier error's traceback) needs the same lock: each waits on the other for ever
    (a clean-clone test run hung so in ``test_skip_bad_granules``). Collection resumes when the last block
    ends, in whatever thread allocates next."""
    with _paused_lock:
        if _paused["depth"] == 0:
            _paused["enabled"] = gc.isenabled()
            gc.disable()
        _paused["depth"] += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused["depth"] -= 1
            if _paused["depth"] == 0 and _paused["enabled"]:
                gc.enable()


@contextmanager
def blocks_released(fileobj: Any) -> Iterator[Any]:
    """``with fileobj`` (an fsspec file, which h5py may read), with no garbage collection while it is open
    (:func:`collection_paused`), letting go of the blocks its cache holds on the way out. fsspec's
    ``BlockCache`` keeps them in an ``lru_cache`` around its own bound method, a reference cycle: closing the
    file leaves them (a whole granule) to the next full garbage collection, and a worker reading granule
    after granule grew by ~1 GB before one ran."""
    with collection_paused(), fileobj as fh:
        try:
            yield fh
        finally:
            cached = getattr(getattr(fh, "cache", None), "_fetch_block_cached", None)
            if cached is not None and hasattr(cached, "cache_clear"):
                cached.cache_clear()


def release_memory(client: Any = None) -> None:
    """:func:`trim_memory` in this process and in the workers of ``client`` (default: the process-wide
    local cluster, if one was started): a benchmark calls it before each measurement, so that what an
    earlier run left behind does not count in the next one's peak memory (Dask's advice for memory
    that stays with a worker after its tasks finished)."""
    trim_memory()
    if client is None:
        client = _local.get("client")
    if client is None or isinstance(client, str) or getattr(client, "status", "") != "running":
        return
    try:
        client.run(trim_memory)
    except Exception:  # a worker restarting or gone: nothing to release there, and nothing to measure wrong
        pass


def _resolve_client(client: Any):
    if client is not None:
        return client
    try:
        from distributed import default_client

        return default_client()
    except ValueError:  # no default client: use (or start) ours
        return get_client()


# -- the fan-out -----------------------------------------------------------------------------------


def _call(fn: Callable[..., Any], granule: Any, kwargs: dict[str, Any]) -> Any:
    return fn(granule, **kwargs)


def _task_exception(fut: Any) -> BaseException:
    """Why a Dask task did not finish (a cancelled future raises instead of returning its exception)."""
    try:
        return fut.exception()
    except BaseException as cancelled:
        return cancelled


def _failure(name: str, index: int, exc: BaseException) -> GranuleFailure:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return GranuleFailure(name=name, index=index, error_type=type(exc).__name__, message=str(exc), traceback=tb)


def map_granules(
    fn: Callable[..., Any],
    granules: Iterable[Any],
    client: Any = None,
    *,
    on_error: OnError = "raise",
    progress: bool | None = None,
    label: str = "granules",
    threads: int = 1,
    **kwargs: Any,
) -> GranuleResults:
    """Call ``fn(granule, **kwargs)`` for every granule; results in input order.

    ``granules``: earthaccess ``DataGranule`` objects, URLs or names (anything ``fn`` takes).
    ``client``: None (default client or the shared LocalCluster), a ``distributed.Client``, or
    ``"sync"`` to run serially here. ``fn`` and ``kwargs`` must pickle for Dask.
    ``on_error="raise"``: after trying every granule, raise :class:`GranuleError` naming each failure.
    ``on_error="skip"``: return the successes; ``result.skipped`` lists the failures with reasons.
    ``progress``: a progress line (default: only when someone watches, see :mod:`is2cloud.progress`).
    ``threads``: granules read at a time in each worker (see the module's docstring); ignored by ``"sync"``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    items = list(granules)
    names = [granule_name(g) for g in items]
    bar = Progress(len(items), label, progress)
    outcomes: list[tuple[bool, Any]] = []
    if isinstance(client, str):
        if client != "sync":
            raise ValueError(f"client must be a distributed.Client, None or 'sync', not {client!r}")
        for i, g in enumerate(items):
            try:
                outcomes.append((True, fn(g, **kwargs)))
            except Exception as exc:
                outcomes.append((False, _failure(names[i], i, exc)))
            bar.update(outcomes[-1][0])
    elif items and threads > 1:
        outcomes = _run_batches(_resolve_client(client), fn, items, names, kwargs, bar, threads)
    elif items:
        outcomes = _run_distributed(_resolve_client(client), fn, items, names, kwargs, bar)
    results = GranuleResults(
        [value for ok, value in outcomes if ok],
        [n for n, (ok, _) in zip(names, outcomes) if ok],
        [value for ok, value in outcomes if not ok],
    )
    if results.skipped and on_error == "raise":
        raise GranuleError(results.skipped, len(items))
    return results


def _run_distributed(client: Any, fn: Callable[..., Any], items: list[Any], names: list[str],
                     kwargs: dict[str, Any], bar: Progress) -> list[tuple[bool, Any]]:
    from distributed import as_completed

    fn_name = getattr(fn, "__name__", "task")
    futures = [client.submit(_call, fn, g, kwargs, pure=False, key=f"{fn_name}-{i}-{names[i]}-{time.time_ns()}")
               for i, g in enumerate(items)]
    position = {f.key: i for i, f in enumerate(futures)}
    outcomes: list[tuple[bool, Any] | None] = [None] * len(items)
    try:
        for fut in as_completed(futures, loop=client.loop):
            i = position[fut.key]
            if fut.status == "finished":
                outcomes[i] = (True, fut.result())
            else:
                outcomes[i] = (False, _failure(names[i], i, _task_exception(fut)))
            fut.release()
            bar.update(outcomes[i][0])  # type: ignore[index]
    except BaseException:
        client.cancel(futures)
        raise
    return outcomes  # type: ignore[return-value]


def _call_batch(fn: Callable[..., Any], batch: list[tuple[int, str, Any]], kwargs: dict[str, Any],
                threads: int) -> list[tuple[int, bool, Any]]:
    """In a worker: ``fn`` on each ``(index, name, granule)`` of the batch, ``threads`` at a time; each
    outcome ``(index, ok, result or GranuleFailure)``."""
    from concurrent.futures import ThreadPoolExecutor

    def one(item: tuple[int, str, Any]) -> tuple[int, bool, Any]:
        i, name, granule = item
        try:
            return i, True, fn(granule, **kwargs)
        except Exception as exc:
            return i, False, _failure(name, i, exc)
        finally:
            # each thread allocates from its own malloc arena, which keeps what a granule freed (a worker
            # reading 98 granules 8 at a time grew past 1 GB): hand it back after every granule
            release_heap()

    with ThreadPoolExecutor(min(threads, len(batch)), thread_name_prefix="is2cloud-granule") as pool:
        return list(pool.map(one, batch))


def _run_batches(client: Any, fn: Callable[..., Any], items: list[Any], names: list[str],
                 kwargs: dict[str, Any], bar: Progress, threads: int) -> list[tuple[bool, Any]]:
    """One task per worker thread of ``client``, each a batch of every n-th granule read in threads."""
    from distributed import as_completed

    n = max(1, min(len(items), sum(client.nthreads().values()) or 1))
    batches = [[(i, names[i], items[i]) for i in range(k, len(items), n)] for k in range(n)]
    fn_name = getattr(fn, "__name__", "task")
    futures = [client.submit(_call_batch, fn, b, kwargs, threads, pure=False,
                             key=f"{fn_name}-batch{k}-{time.time_ns()}") for k, b in enumerate(batches)]
    batch_of = {f.key: b for f, b in zip(futures, batches)}
    outcomes: list[tuple[bool, Any] | None] = [None] * len(items)
    try:
        for fut in as_completed(futures, loop=client.loop):
            if fut.status == "finished":
                for i, ok, value in fut.result():
                    outcomes[i] = (ok, value)
                    bar.update(ok)
            else:  # the whole task failed (a worker died): every granule of the batch fails with it
                exc = _task_exception(fut)
                for i, name, _ in batch_of[fut.key]:
                    outcomes[i] = (False, _failure(name, i, exc))
                    bar.update(False)
            fut.release()
    except BaseException:
        client.cancel(futures)
        raise
    try:
        client.run(_trim_once_released, [f.key for f in futures])
    except Exception:  # a worker gone or restarting: nothing of the batch's left to hand back there
        pass
    return outcomes  # type: ignore[return-value]


async def _trim_once_released(keys: list[str], dask_worker: Any = None, timeout: float = 2.0) -> None:
    """In a worker, after a batch: once its results (``keys``) have left the worker's store, hand the heap
    they were in back (:func:`trim_memory`). A batch holds every granule's columns until its last granule is
    read, in the heaps of the threads that read them; a bench-scale repacked query's two workers kept ~100 MB
    each of them after the results had gone to the notebook, under the frame being assembled and written.
    A coroutine, so the worker's event loop can forget the keys while this waits."""
    import asyncio

    deadline = time.monotonic() + timeout
    while dask_worker is not None and any(k in dask_worker.data for k in keys) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    trim_memory()
