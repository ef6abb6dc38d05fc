"""Fan-out over granules: order, failures by name, skip reports, the shared LocalCluster."""

from __future__ import annotations

import pickle
import time

import pytest

from is2cloud.parallel import GranuleError, GranuleResults, close_client, get_client, granule_name, map_granules

URLS = [f"s3://nsidc-cumulus-prod-protected/ATLAS/ATL06/006/2019/03/{d:02d}/ATL06_201903{d:02d}000000_1144021{d % 10}_006_01.h5"
        for d in range(1, 7)]


def length_of_name(granule, *, scale=1):
    return len(granule_name(granule)) * scale


def slow_then_fast(granule, *, total):
    """Earlier granules take longer, so completion order is the reverse of input order."""
    i = URLS.index(granule)
    time.sleep(0.05 * (total - i))
    return i


def fail_on_odd_days(granule):
    day = int(granule_name(granule)[12:14])
    if day % 2:
        raise OSError(f"truncated object (day {day})")
    return day


def make_granule(url: str):
    import earthaccess

    name = url.rsplit("/", 1)[1]
    umm = {"GranuleUR": name.removesuffix(".h5"),
           "DataGranule": {"Identifiers": [{"Identifier": name, "IdentifierType": "ProducerGranuleId"}],
                           "ArchiveAndDistributionInformation": [{"Name": name, "SizeInBytes": 1000}]},
           "RelatedUrls": [{"URL": url, "Type": "GET DATA VIA DIRECT ACCESS"}]}
    return earthaccess.DataGranule({"meta": {"concept-id": "G1-LOCAL"}, "umm": umm}, cloud_hosted=True)


def test_granule_names():
    assert granule_name(URLS[0]) == "ATL06_20190301000000_11440211_006_01.h5"
    assert granule_name("https://host/path/ATL06_x.h5?token=abc") == "ATL06_x.h5"
    from pathlib import Path

    assert granule_name(Path("/data/ATL06_y.h5")) == "ATL06_y.h5"
    assert granule_name(make_granule(URLS[2])) == "ATL06_20190303000000_11440213_006_01.h5"
    assert granule_name({"umm": {"GranuleUR": "ATL06_z"}}) == "ATL06_z"


def test_sync_results_in_input_order_with_kwargs(capsys):
    out = map_granules(length_of_name, URLS, client="sync", scale=2, progress=True)
    assert isinstance(out, GranuleResults)
    assert list(out) == [2 * len(granule_name(u)) for u in URLS]
    assert out.names == [granule_name(u) for u in URLS] and out.skipped == []
    assert "granules 6/6 done" in capsys.readouterr().out
    map_granules(length_of_name, URLS, client="sync", progress=None)  # default: nobody watches a captured stdout
    assert capsys.readouterr().out == ""


def test_sync_failures_raise_naming_every_failed_granule():
    with pytest.raises(GranuleError) as err:
        map_granules(fail_on_odd_days, URLS, client="sync", progress=False)
    e = err.value
    failed = [granule_name(u) for u in URLS[0::2]]
    assert e.names == failed and e.total == 6
    text = str(e)
    assert "3 of 6 granules failed" in text
    for name in failed:
        assert name in text
    assert "OSError: truncated object (day 1)" in text
    assert all(granule_name(u) not in text for u in URLS[1::2])
    clone = pickle.loads(pickle.dumps(e))
    assert clone.names == failed


def test_sync_skip_returns_successes_and_a_report():
    out = map_granules(fail_on_odd_days, URLS, client="sync", on_error="skip", progress=False)
    assert list(out) == [2, 4, 6]
    assert out.names == [granule_name(u) for u in URLS[1::2]]
    assert [(f.index, f.error_type) for f in out.skipped] == [(0, "OSError"), (2, "OSError"), (4, "OSError")]
    assert "truncated object (day 3)" in out.skipped[1].message
    assert "fail_on_odd_days" in out.skipped[0].traceback
    report = out.report()
    assert "3 granules processed, 3 skipped" in report and granule_name(URLS[4]) in report


def test_bad_arguments():
    with pytest.raises(ValueError, match="on_error"):
        map_granules(length_of_name, URLS, client="sync", on_error="ignore")
    with pytest.raises(ValueError, match="client"):
        map_granules(length_of_name, URLS, client="threads")
    with pytest.raises(ValueError, match="threads"):
        map_granules(length_of_name, URLS, client="sync", threads=0)
    assert list(map_granules(length_of_name, [], client="sync")) == []


@pytest.fixture(scope="module")
def dask_client():
    client = get_client()
    yield client
    close_client()


def test_dask_results_in_input_order(dask_client):
    out = map_granules(slow_then_fast, URLS, dask_client, progress=False, total=len(URLS))
    assert list(out) == list(range(len(URLS)))


def test_dask_failures_by_name_and_skip(dask_client):
    with pytest.raises(GranuleError) as err:
        map_granules(fail_on_odd_days, URLS, dask_client, progress=False)
    assert err.value.names == [granule_name(u) for u in URLS[0::2]]
    out = map_granules(fail_on_odd_days, URLS, dask_client, on_error="skip", progress=False)
    assert list(out) == [2, 4, 6] and len(out.skipped) == 3


def test_dask_batches_in_threads_keep_order_and_name_failures(dask_client):
    """threads=n: one batch per worker, n granules at a time: input order, failures by granule."""
    out = map_granules(slow_then_fast, URLS, dask_client, progress=False, threads=3, total=len(URLS))
    assert list(out) == list(range(len(URLS)))
    with pytest.raises(GranuleError) as err:
        map_granules(fail_on_odd_days, URLS, dask_client, progress=False, threads=4)
    assert err.value.names == [granule_name(u) for u in URLS[0::2]]
    out = map_granules(fail_on_odd_days, URLS, dask_client, on_error="skip", progress=False, threads=4)
    assert list(out) == [2, 4, 6] and out.names == [granule_name(u) for u in URLS[1::2]]
    assert [f.name for f in out.skipped] == [granule_name(u) for u in URLS[0::2]]


def test_dask_accepts_earthaccess_granules(dask_client):
    granules = [make_granule(u) for u in URLS[:3]]
    out = map_granules(length_of_name, granules, dask_client, progress=False)
    assert list(out) == [len(granule_name(g)) for g in granules]


def test_default_client_is_the_shared_local_cluster(dask_client):
    from distributed import Client

    assert get_client() is dask_client
    assert isinstance(dask_client, Client)
    workers = dask_client.scheduler_info()["workers"]
    assert all(w["nthreads"] == 1 for w in workers.values())
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in workers)
    out = map_granules(length_of_name, URLS[:2], progress=False)  # client=None: no default client -> shared cluster
    assert len(out) == 2
    assert get_client() is dask_client



class _Cycle:
    pass


_CYCLE = None  # a weak reference to one object of the cycle, in the worker that made it


def _make_cycle() -> None:
    """In a worker: garbage only a collection frees (a reference cycle), with automatic collection off."""
    import gc
    import weakref

    global _CYCLE
    gc.disable()
    a, b = _Cycle(), _Cycle()
    a.other, b.other = b, a
    _CYCLE = weakref.ref(a)


def _cycle_collected() -> bool:
    import gc

    gc.enable()
    return _CYCLE() is None


def test_release_memory_reaches_the_shared_clusters_workers(dask_client):
    from is2cloud.parallel import is_shared_client, release_memory

    assert is_shared_client(dask_client) and not is_shared_client(None) and not is_shared_client("sync")
    dask_client.run(_make_cycle)
    release_memory()  # the shared cluster: this process and every worker
    assert all(dask_client.run(_cycle_collected).values())
    release_memory("sync")  # no workers: this process only


def test_no_collection_while_h5py_may_be_reading_an_fsspec_file(tmp_path):
    """h5py holds its global lock while it reads through an fsspec file, and the read waits on fsspec's IO
    thread: a collection there that frees an h5py object needs that lock, and both wait for ever (a test run
    hung an hour so). Automatic collection is paused while such a file is open, in every thread, nested or
    not, and resumes after the last one closes."""
    import gc
    import threading

    import fsspec

    from is2cloud.parallel import blocks_released, collection_paused

    (tmp_path / "f.bin").write_bytes(b"x" * 10)
    fs = fsspec.filesystem("file")
    assert gc.isenabled()
    with blocks_released(fs.open(str(tmp_path / "f.bin"), "rb", cache_type="blockcache", block_size=4)) as fh:
        assert fh.read(3) == b"xxx" and not gc.isenabled()
        other_done, other_closed = threading.Event(), threading.Event()

        def another_reader() -> None:
            with collection_paused():
                other_done.set()
                other_closed.wait(10)

        t = threading.Thread(target=another_reader)
        t.start()
        assert other_done.wait(10)
    assert not gc.isenabled(), "collection resumed while another thread's file was still open"
    other_closed.set()
    t.join(10)
    assert gc.isenabled()
    gc.disable()  # a caller that had collection off keeps it off
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


_THREAD_HEAP = """
import sys, threading
if sys.argv[1] == "is2cloud":
    import is2cloud  # noqa: F401  (pins the mmap threshold)
import numpy as np, psutil

def rss():
    return psutil.Process().memory_info().rss

def work(out):
    big = np.ones(16 << 20, dtype="u1")  # freed: glibc raises its mmap threshold to 16 MiB
    del big
    r0 = rss()
    arrays = [np.ones((1 << 20) if i % 2 == 0 else 1024, dtype="u1") for i in range(96)]  # 48 MiB, small between
    del arrays[::2]  # the 1 MiB arrays: holes below the small ones that stay
    out.append((rss() - r0) >> 20)

out = []
t = threading.Thread(target=work, args=(out,))
t.start()
t.join()
print(out[0])
"""


def test_importing_is2cloud_lets_a_threads_freed_arrays_go_back_to_the_system():
    """Arrays decoded in a reader's threads and freed go back to the operating system once is2cloud is
    imported (its pinned mmap threshold), where glibc alone keeps them in the thread's arena."""
    import os
    import subprocess
    import sys

    from is2cloud.parallel import pin_mmap_threshold

    if not pin_mmap_threshold():
        pytest.skip("not glibc: no mmap threshold to pin")

    def kept_mib(mode: str) -> int:
        # without the glibc tunables Dask puts in os.environ for its workers (they also stop the sliding)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        done = subprocess.run([sys.executable, "-c", _THREAD_HEAP, mode], capture_output=True, text=True, check=True,
                              env=env)
        return int(done.stdout.strip())

    assert kept_mib("plain") >= 32, "the control case should keep the freed arrays (glibc's sliding threshold)"
    assert kept_mib("is2cloud") <= 8


def test_a_batchs_heap_is_handed_back_once_its_results_have_left_the_worker(dask_client, monkeypatch):
    """After a threads=n fan-out each worker trims its heap, but only once the batch's results are gone from
    its store (they sat in the reader threads' heaps until then)."""
    import asyncio

    from is2cloud import parallel

    class Worker:
        def __init__(self) -> None:
            self.data = {"batch-0": b"columns"}

    worker, trimmed = Worker(), []
    monkeypatch.setattr(parallel, "trim_memory", lambda: trimmed.append(dict(worker.data)))

    async def forget_later() -> None:
        await asyncio.sleep(0.1)
        worker.data.clear()

    async def both() -> None:
        await asyncio.gather(forget_later(), parallel._trim_once_released(["batch-0"], dask_worker=worker))

    asyncio.run(both())
    assert trimmed == [{}]  # trimmed once, after the results had left
    # in the cluster's workers it runs (dask_worker given by client.run) and returns at once for unknown keys
    assert set(dask_client.run(parallel._trim_once_released, ["no-such-key"]).values()) == {None}
