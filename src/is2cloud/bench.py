"""Measuring methods the same way: wall, CPU, peak memory, GETs and bytes, and the network lower bound.

>>> with measure("baseline (tuned)", cloud=cloud, physical_bytes=limit.nbytes) as m:     # doctest: +SKIP
...     m.result = baseline.subset(granules, aoi)
>>> compare(base, index)                                                                  # doctest: +SKIP

* ``rows`` and ``granules`` come from the frame the block leaves in ``m.result`` (its length and its
  distinct ``granule`` values) unless given; ``physical_bytes`` is the physical limit of the subset.
* Peak memory (``peak_rss_MB``) is the largest sum of the resident memory of the whole process tree,
  sampled together every 50 ms: this process, its descendants (Dask workers) and the local cloud's
  server process, which holds what the block sends it (``server_peak_rss_MB`` is the server's own
  peak; ``client_peak_rss_MB`` the largest sum without the server: what a user's machine holds, since on
  AWS the server is S3). CPU (``cpu_s``) covers this process and its descendants, not the server: the
  server stands in for S3, whose CPU is not ours; it is reported apart (``server_cpu_s``), since it shares this
  machine's cores. Before the block, memory that earlier blocks freed is handed back to the system in this
  process and the shared local cluster's workers (:func:`is2cloud.parallel.release_memory`), and a suite
  keeps the frames it compares in a :class:`Stash` on disk, so a measurement's peak is its own.
* GETs and bytes come from the server's request ledger, so every client is counted the same way.
  In earthdata mode there is no ledger; those fields stay empty.
* The lower bound is what the network model alone costs for the observed traffic:
  ``ceil(GETs / concurrency) * latency + bytes / (bandwidth * concurrency)``, with ``concurrency`` the
  peak number of simultaneous requests seen in the ledger up to the uploads below, unless given; plus, for
  what the block uploaded after its last GET had ended (the output it wrote from what it read, which no
  upload can carry before the reads are done), the same sum over those uploads at their own peak concurrency.
* :func:`compare` shows measurements side by side: a table, bars, and one labelled sentence.

Each measurement is appended to a CSV results table (``results/measurements.csv`` by default, or
``IS2CLOUD_RESULTS``) that the comparison chapter reads.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import platform
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import psutil

from is2cloud.methods import METHODS
from is2cloud.settings import get_profile, get_settings

REPO = Path(__file__).resolve().parents[2]


def results_path() -> Path:
    env = os.environ.get("IS2CLOUD_RESULTS")
    return Path(env) if env else REPO / "results" / "measurements.csv"


@dataclass
class Measurement:
    name: str
    method: str = ""
    mode: str = ""
    scale: str = ""
    profile: str = ""
    latency_s: float = 0.0
    bandwidth_MBps: float = 0.0
    wall_s: float = float("nan")
    cpu_s: float = float("nan")
    server_cpu_s: float | None = None  # the embedded S3 server's CPU (local mode), not in cpu_s
    peak_rss_MB: float = float("nan")  # the process tree's, the server's process included
    server_peak_rss_MB: float | None = None  # the embedded S3 server's own peak (local mode)
    client_peak_rss_MB: float | None = None  # the process tree's without the server: the user's side
    requests: int | None = None
    gets: int | None = None
    get_bytes: int | None = None
    faults: int | None = None
    concurrency: int | None = None
    upload_bytes: int | None = None  # uploaded after the last GET ended (the output): in the lower bound
    lower_bound_s: float | None = None
    granules: int | None = None
    rows: int | None = None
    physical_bytes: int | None = None  # compressed bytes of the chunks that intersect the AOI
    notes: str = ""
    suite: str = ""  # the make-bench suite that took it (is2cloud bench --suite), if any
    commit: str = field(default_factory=lambda: _commit())
    timestamp: str = ""
    host: str = field(default_factory=lambda: f"{platform.node()} ({os.cpu_count()} cpu)")
    cores: int = field(default_factory=lambda: _cores())
    result: Any = field(default=None, repr=False, compare=False)  # the block's output frame (not recorded)
    origin: str = field(default="", repr=False, compare=False)  # "measured now" / "reused from ..." (not recorded)

    @property
    def bytes_ratio(self) -> float | None:
        """Bytes fetched / the physical limit (compressed bytes of the intersecting chunks)."""
        if not self.get_bytes or not self.physical_bytes:
            return None
        return self.get_bytes / self.physical_bytes

    def as_row(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_RECORDED}
        row["bytes_ratio"] = self.bytes_ratio
        return row

    def _observe_result(self) -> None:
        """Fill ``rows``/``granules`` from the frame the block produced, where not given."""
        frame = self.result
        if frame is None:
            return
        if self.rows is None and hasattr(frame, "__len__"):
            self.rows = len(frame)
        if self.granules is None and "granule" in getattr(frame, "columns", ()):
            self.granules = int(frame["granule"].nunique())

    def __str__(self) -> str:
        parts = [f"{self.name}: {self.wall_s:.2f} s wall, {self.cpu_s:.2f} s CPU, peak {self.peak_rss_MB:.0f} MB"]
        if self.server_cpu_s is not None:
            parts.append(f"S3 server {self.server_cpu_s:.2f} s CPU")
        if self.gets is not None:
            parts.append(f"{self.gets} GETs, {self.get_bytes / 1e6:.2f} MB")
        if self.lower_bound_s is not None:
            written = f" + {self.upload_bytes / 1e6:.2f} MB written after the reads" if self.upload_bytes else ""
            parts.append(f"network lower bound {self.lower_bound_s:.2f} s at concurrency {self.concurrency}{written}")
        parts.append(f"[{self.mode}, scale={self.scale}, profile={self.profile}]")
        if self.origin:
            parts.append(self.origin)
        return "; ".join(parts)


_NOT_RECORDED = frozenset({"result", "origin"})  # Measurement fields that are not columns of the results table


_SUITE: list[str] = [""]  # the suite run_suites is running, recorded in each measurement


@lru_cache(maxsize=1)
def _commit() -> str:
    """The checkout's commit (short), with ``+`` when the work tree has changes; "" outside git."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    if head.returncode:
        return ""
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def _cores() -> int:
    """CPUs this process may use (its affinity), which is what a CPU-bound method's speed depends on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _TreeSampler:
    """Samples the resident memory of a process tree together (one sum per sample, its largest kept in
    ``peak``) and the CPU times of its processes: this process, its descendants, and the ``server``
    process with its descendants (a child of this process or not), whose CPU is left out of
    :meth:`cpu_used` and whose own largest memory is ``server_peak``."""

    def __init__(self, server: int | None = None, interval: float = 0.05):
        self.server = server
        self.interval = interval
        self.peak = 0
        self.server_peak = 0
        self.client_peak = 0
        self.cpu: dict[int, float] = {}
        self._server_pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self) -> list[psutil.Process]:
        me = psutil.Process()
        try:
            procs = [me, *me.children(recursive=True)]
        except psutil.Error:
            procs = [me]
        if self.server:
            try:
                server = psutil.Process(self.server)
                self._server_pids = {server.pid, *(c.pid for c in server.children(recursive=True))}
                known = {p.pid for p in procs}
                procs += [server] if server.pid not in known else []
            except psutil.Error:
                self._server_pids = set()
        return procs

    def sample(self) -> None:
        rss = server_rss = 0
        for p in self._procs():
            try:
                with p.oneshot():
                    mem = p.memory_info().rss
                    t = p.cpu_times()
            except psutil.Error:
                continue
            rss += mem
            if p.pid in self._server_pids:
                server_rss += mem
            else:
                self.cpu[p.pid] = t.user + t.system
        self.peak = max(self.peak, rss)
        self.server_peak = max(self.server_peak, server_rss)
        self.client_peak = max(self.client_peak, rss - server_rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "_TreeSampler":
        self.sample()
        self.start_cpu = dict(self.cpu)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def cpu_used(self) -> float:
        return sum(v - self.start_cpu.get(pid, 0.0) for pid, v in self.cpu.items())


def _process_cpu(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


def peak_concurrency(intervals: list[tuple[float, float]]) -> int:
    """The largest number of requests in flight at once."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def lower_bound(gets: int, nbytes: int, latency_s: float, bandwidth_Bps: float, concurrency: int, *,
                uploads: int = 0, upload_bytes: int = 0, upload_concurrency: int = 1) -> float:
    """Time the network model alone needs: ``ceil(GETs/c) * latency + bytes / (bandwidth * c)``, plus the
    same for ``uploads`` that could only start once the GETs were done (``upload_bytes`` at
    ``upload_concurrency``)."""
    def phase(requests: int, nbytes: int, concurrency: int) -> float:
        c = max(1, concurrency)
        return math.ceil(requests / c) * latency_s + (nbytes / (bandwidth_Bps * c) if bandwidth_Bps else 0.0)

    return phase(gets, nbytes, concurrency) + (phase(uploads, upload_bytes, upload_concurrency) if uploads else 0.0)


def _spans(rows: Iterable[Any]) -> list[tuple[float, float]]:
    """(start, end) of each ledger row, for :func:`peak_concurrency`."""
    return [(r.start_s, r.start_s + r.duration_s) for r in rows]


def uploads_after_reads(rows: list[Any]) -> list[Any]:
    """The ledger rows that uploaded a body after every GET of ``rows`` had ended: the output a block wrote
    from what it had read (a PUT, or the parts of a multipart upload)."""
    reads_end = max((r.start_s + r.duration_s for r in rows if r.verb == "GET" and r.key), default=-math.inf)
    return [r for r in rows if r.upload_bytes and r.start_s >= reads_end]


@contextmanager
def measure(
    name: str,
    *,
    method: str = "",
    cloud: Any = None,
    scale: str | None = None,
    concurrency: int | None = None,
    record: bool = True,
    results: str | Path | None = None,
    notes: str = "",
    rows: int | None = None,
    granules: int | None = None,
    physical_bytes: int | None = None,
) -> Iterator[Measurement]:
    """Measure the block; fill the yielded :class:`Measurement`; append it to the results table.

    Leave the block's output in ``m.result`` and ``rows``/``granules`` are read from it (or give them).
    """
    settings = get_settings()
    m = Measurement(name=name, method=method or name, mode=settings.mode, scale=scale or settings.scale, notes=notes,
                    rows=rows, granules=granules, physical_bytes=physical_bytes, suite=_SUITE[0])
    if cloud is not None:
        prof = cloud.profile
        seq0 = cloud.seq
        server_pid = getattr(getattr(cloud, "_proc", None), "pid", None)
    else:
        prof = get_profile(settings.profile) if settings.mode == "local" else None
        seq0 = None
        server_pid = None
    m.profile = prof.name if prof else "aws"
    m.latency_s = prof.latency_s if prof else 0.0
    m.bandwidth_MBps = (prof.bandwidth_Bps / 1e6) if prof else 0.0
    from is2cloud.parallel import release_memory

    release_memory()  # what earlier blocks left in this process and the shared local cluster's workers
    sampler = _TreeSampler(server_pid)
    server_cpu0 = _process_cpu(server_pid)
    t0 = time.perf_counter()
    with sampler:
        yield m
    m.wall_s = time.perf_counter() - t0
    m._observe_result()
    m.cpu_s = sampler.cpu_used()
    server_cpu1 = _process_cpu(server_pid)
    if server_cpu0 is not None and server_cpu1 is not None:
        m.server_cpu_s = server_cpu1 - server_cpu0
    m.peak_rss_MB = sampler.peak / 1e6
    if server_pid:
        m.server_peak_rss_MB = sampler.server_peak / 1e6
        m.client_peak_rss_MB = sampler.client_peak / 1e6
    m.timestamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if cloud is not None and seq0 is not None:
        rows = cloud.ledger(since=seq0)
        gets = [r for r in rows if r.verb == "GET" and r.key]
        m.requests = len(rows)
        m.gets = len(gets)
        m.get_bytes = sum(r.bytes for r in gets)
        m.faults = sum(1 for r in rows if r.fault)
        written = uploads_after_reads(rows)
        after = {r.seq for r in written}
        # the reads' concurrency: a multipart upload's parts in flight after them do not divide the reads' bound
        m.concurrency = concurrency or max(1, peak_concurrency(_spans(r for r in rows if r.seq not in after)))
        m.upload_bytes = sum(r.upload_bytes for r in written)
        m.lower_bound_s = lower_bound(m.gets, m.get_bytes, m.latency_s, m.bandwidth_MBps * 1e6, m.concurrency,
                                      uploads=len(written), upload_bytes=m.upload_bytes,
                                      upload_concurrency=peak_concurrency(_spans(written)))
    if record:
        append_result(m, results)


def append_result(m: Measurement, path: str | Path | None = None) -> Path:
    path = Path(path) if path else results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    row = m.as_row()
    header: list[str] = []
    if path.exists():
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
    if header and header != list(row):  # written by another version: rewrite it with every column
        with open(path, newline="") as fh:
            old = list(csv.DictReader(fh))
        columns = list(dict.fromkeys([*row, *header]))
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows(old)
            w.writerow(row)
        return path
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if not header:
            w.writeheader()
        w.writerow(row)
    return path


def load_results(path: str | Path | None = None):  # -> pandas.DataFrame
    import pandas as pd

    path = Path(path) if path else results_path()
    if not path.exists():
        return pd.DataFrame(columns=[f.name for f in fields(Measurement) if f.name not in _NOT_RECORDED]
                            + ["bytes_ratio"])
    return pd.read_csv(path)


def published_timings(path: str | Path | None = None):  # -> pandas.DataFrame
    """The published numbers (``data/published_timings.csv``), each with its source."""
    import pandas as pd

    return pd.read_csv(Path(path) if path else REPO / "data" / "published_timings.csv")


class Stash:
    """Frames a benchmark compares at its end, kept on local disk (pickled, dtypes exact) in between: held in
    memory, the first method's frame would count in the next method's peak memory.

    >>> frames = Stash()                      # doctest: +SKIP
    >>> frames.put("baseline", m0.result)     # doctest: +SKIP
    >>> assert_same_rows(frames.get("baseline"), frames.get("chunkindex"))   # doctest: +SKIP
    """

    def __init__(self) -> None:
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="is2cloud-stash-")
        self._paths: dict[str, Path] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._paths

    def put(self, name: str, frame: Any) -> None:
        """Keep ``frame`` under ``name`` (replacing an earlier one)."""
        import pickle

        path = Path(self._dir.name) / f"{name.encode().hex()}.pickle"  # one file per name
        with open(path, "wb") as fh:
            pickle.dump(frame, fh, protocol=pickle.HIGHEST_PROTOCOL)
        self._paths[name] = path

    def get(self, name: str) -> Any:
        import pickle

        with open(self._paths[name], "rb") as fh:
            return pickle.load(fh)

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> "Stash":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- make bench ----------------------------------------------------------------------------------------

# The embedded server's cost per request, SlideRule's ATL06-SR request (notebook 02), then every method of the
# registry, in book order.
SUITES: dict[str, str] = {"server": "is2cloud.localcloud.cost:benchmark", "atl06sr": "is2cloud.sliderule:benchmark",
                          **{name: f"is2cloud.methods.{name}:benchmark" for name in METHODS}}


def run_suites(suites: list[str], scales: list[str], *, profile: str = "in-region",
               results: str | Path | None = None) -> list[Measurement]:
    """Run benchmark suites (see docs/CONTRACTS.md) on each scale's archive, in one local cloud per scale."""
    import importlib
    import inspect

    from is2cloud.granules import publish_archive
    from is2cloud.localcloud import LocalCloud
    from is2cloud.parallel import close_client

    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown benchmark suite(s) {unknown}; choose from {', '.join(SUITES)}")
    settings = get_settings()
    out: list[Measurement] = []
    for scale in scales:
        archive = publish_archive(scale, cache_dir=settings.cache_dir)
        with LocalCloud(profile=profile, archive=archive.root, seed=settings.seed) as cloud:
            for suite in suites:
                _SUITE[0] = suite
                module, func = SUITES[suite].split(":")
                fn = getattr(importlib.import_module(module), func)
                accepted = inspect.signature(fn).parameters
                offered = {"cloud": cloud, "archive": archive, "scale": scale,
                           "results": Path(results) if results else results_path()}
                kwargs = {k: v for k, v in offered.items() if k in accepted}
                try:
                    for m in fn(**kwargs):
                        m.suite = suite
                        if "results" not in accepted:  # suites that take `results` record themselves
                            append_result(m, results)
                        m.result = None  # not recorded; kept, the frames would count in later suites' memory
                        out.append(m)
                finally:
                    _SUITE[0] = ""
                    # Each suite on fresh Dask workers: what a worker keeps after its tasks (caches,
                    # heap it does not give back) counted in the next suite's peak memory.
                    close_client()
    return out


def summary_table(measurements: list[Measurement]):  # -> pandas.DataFrame
    import pandas as pd

    rows = []
    for m in measurements:
        rows.append({"scale": m.scale, "profile": m.profile, "name": m.name, "wall_s": round(m.wall_s, 2),
                     "cpu_s": round(m.cpu_s, 2), "server_cpu_s": None if m.server_cpu_s is None else round(m.server_cpu_s, 2),
                     "peak_MB": round(m.peak_rss_MB), "GETs": m.gets,
                     "MB": None if m.get_bytes is None else round(m.get_bytes / 1e6, 2),
                     "physical_MB": None if not m.physical_bytes else round(m.physical_bytes / 1e6, 2),
                     "bytes/physical": None if m.bytes_ratio is None else round(m.bytes_ratio, 2),
                     "lower_bound_s": None if m.lower_bound_s is None else round(m.lower_bound_s, 2),
                     "rows": m.rows, "granules": m.granules, "notes": m.notes})
    return pd.DataFrame(rows)


# -- side by side ----------------------------------------------------------------------------------------

_COLUMNS = {  # column -> (header, format)
    "granules": ("granules", "{:,.0f}"), "rows": ("rows", "{:,.0f}"), "wall_s": ("wall (s)", "{:.2f}"),
    "cpu_s": ("CPU (s)", "{:.1f}"), "server_cpu_s": ("S3 server CPU (s)", "{:.1f}"), "peak_rss_MB": ("peak memory (MB)", "{:,.0f}"), "gets": ("GETs", "{:,.0f}"),
    "MB": ("MB fetched", "{:,.2f}"), "physical_MB": ("physical limit (MB)", "{:,.2f}"),
    "bytes_ratio": ("x physical limit", "{:,.2f}"), "lower_bound_s": ("network lower bound (s)", "{:.2f}"),
    "concurrency": ("concurrency", "{:.0f}"),
}
_BARS = (("wall_s", "wall time (s)"), ("gets", "GETs"), ("MB", "MB fetched"), ("bytes_ratio", "x physical limit"))


def _data_words(m: Measurement) -> str:
    return "synthetic v006 granules" if m.mode == "local" else "NASA granules"


@dataclass
class Comparison:
    """Measurements side by side; the first is the reference the others are compared with.

    In Jupyter it shows :attr:`styled` (the table), :meth:`chart` (bars) and :attr:`sentence`.
    """

    measurements: list[Measurement]
    preparations: dict[str, Measurement] = field(default_factory=dict)  # query name -> its one-time step

    @property
    def reference(self) -> Measurement:
        return self.measurements[0]

    @property
    def table(self):  # -> pandas.DataFrame
        import pandas as pd

        rows = []
        for m in self.measurements:
            rows.append({"name": m.name, "scale": m.scale, "profile": m.profile, "granules": m.granules,
                         "rows": m.rows, "wall_s": m.wall_s, "cpu_s": m.cpu_s, "server_cpu_s": m.server_cpu_s,
                         "peak_rss_MB": m.peak_rss_MB,
                         "gets": m.gets, "MB": None if m.get_bytes is None else m.get_bytes / 1e6,
                         "physical_MB": m.physical_bytes / 1e6 if m.physical_bytes else None,
                         "bytes_ratio": m.bytes_ratio, "lower_bound_s": m.lower_bound_s,
                         "concurrency": m.concurrency})
        frame = pd.DataFrame(rows).set_index("name")
        return frame.dropna(axis="columns", how="all")

    @property
    def styled(self):  # -> pandas.io.formats.style.Styler
        frame = self.table
        formats = {c: f for c, (_, f) in _COLUMNS.items() if c in frame.columns}
        headers = {c: h for c, (h, _) in _COLUMNS.items() if c in frame.columns}
        return frame.style.format(formats, na_rep="-").relabel_index(
            [headers.get(c, c) for c in frame.columns], axis="columns")

    def chart(self):  # -> holoviews Layout
        import hvplot.pandas  # noqa: F401 (registers .hvplot)

        frame = self.table.reset_index()
        panels = [frame.hvplot.bar(x="name", y=col, xlabel="", ylabel=title, title=title, width=260, height=280,
                                   rot=20)
                  for col, title in _BARS if col in frame.columns and frame[col].notna().all()]
        layout = panels[0]
        for p in panels[1:]:
            layout = layout + p
        ref = self.reference
        return layout.opts(title=f"{self.label} (data scale '{ref.scale}', network profile '{ref.profile}')")

    @property
    def label(self) -> str:
        ref = self.reference
        cores = f"{ref.cores} CPU core{'s' if ref.cores != 1 else ''}"
        granules = f"{ref.granules} " if ref.granules else ""
        return f"{granules}{_data_words(ref)}, {cores}"

    @property
    def sentence(self) -> str:
        """One labelled sentence per compared method: speed-up, bytes against the physical limit, context."""
        ref = self.reference
        parts = []
        for m in self.measurements[1:]:
            speed = ref.wall_s / m.wall_s if m.wall_s else float("nan")
            text = f"{m.name} took {m.wall_s:.2f} s against {ref.wall_s:.2f} s for {ref.name}: {speed:.1f}x faster"
            if speed < 1:
                text = (f"{m.name} took {m.wall_s:.2f} s against {ref.wall_s:.2f} s for {ref.name}: "
                        f"{1 / speed:.1f}x slower")
            if m.get_bytes is not None and ref.get_bytes is not None:
                text += f", fetching {m.get_bytes / 1e6:,.2f} MB against {ref.get_bytes / 1e6:,.1f} MB"
                if m.bytes_ratio is not None and ref.bytes_ratio is not None:
                    text += f" ({m.bytes_ratio:,.2f}x against {ref.bytes_ratio:,.1f}x the physical limit)"
            prep = self.preparations.get(m.name)
            if prep is not None:
                text += "; " + _break_even(prep, m, ref)
            parts.append(text)
        if not parts:
            parts.append(f"{ref.name} took {ref.wall_s:.2f} s")
        context = (f"[{self.label}; data scale '{ref.scale}', network profile '{ref.profile}'. A CPU-bound method's "
                   "speed-up depends on the cores.]")
        return "; ".join(parts) + ". " + context

    def __str__(self) -> str:
        return self.sentence

    def _ipython_display_(self) -> None:
        from IPython.display import Markdown, display

        display(self.styled)
        display(self.chart())
        display(Markdown(self.sentence))


def _break_even(prep: Measurement, query: Measurement, ref: Measurement) -> str:
    """After how many queries a one-time preparation has paid for itself against the reference."""
    saved = ref.wall_s - query.wall_s
    if prep.wall_s + query.wall_s <= ref.wall_s:
        return (f"preparing ({prep.wall_s:.1f} s) and querying took less than one run of {ref.name}, "
                "so it pays for itself on the first query")
    if saved <= 0:
        return f"its preparation ({prep.wall_s:.1f} s) never pays for itself against {ref.name} at this scale"
    return (f"its preparation ({prep.wall_s:.1f} s) pays for itself after {math.ceil(prep.wall_s / saved)} "
            "queries like this one")


def compare(*measurements: Measurement, preparations: dict[str, Measurement] | None = None) -> Comparison:
    """Measurements side by side: the first is the reference (e.g. the tuned baseline).

    ``preparations`` maps a query's name to the measurement of its one-time step (an index build...): the
    sentence then says after how many queries it pays for itself. Differences of scale or network profile
    are refused: they would not be comparable.
    """
    if not measurements:
        raise ValueError("compare needs at least one measurement")
    ms = list(measurements)
    for key in ("scale", "profile", "mode"):
        values = {getattr(m, key) for m in ms}
        if len(values) > 1:
            raise ValueError(f"cannot compare measurements of different {key}s: {sorted(values)}")
    preparations = dict(preparations or {})
    unknown = sorted(set(preparations) - {m.name for m in ms})
    if unknown:
        raise ValueError(f"preparations name measurements that are not compared: {unknown}")
    return Comparison(ms, preparations)


# -- the README's figures ------------------------------------------------------------------------------

FIGURES_BEGIN = "<!-- figures: generated by scripts/readme_figures.py from docs/bench-results.csv; do not edit -->"
FIGURES_END = "<!-- figures: end -->"
_FIGURE_COLUMNS = (("wall_s", "wall (s)", "{:,.2f}"), ("cpu_s", "CPU (s)", "{:,.1f}"),
                   ("server_cpu_s", "S3 server CPU (s)", "{:,.1f}"), ("gets", "GETs", "{:,.0f}"),
                   ("get_bytes", "MB fetched", "{:,.1f}"), ("bytes_ratio", "x physical limit", "{:,.2f}"),
                   ("lower_bound_s", "network lower bound (s)", "{:,.2f}"), ("peak_rss_MB", "peak memory (MB)",
                                                                              "{:,.0f}"),
                   ("client_peak_rss_MB", "peak without the S3 server (MB)", "{:,.0f}"),
                   ("granules", "granules", "{:,.0f}"), ("rows", "rows", "{:,.0f}"))


def _cell(value: Any, fmt: str, column: str) -> str:
    import pandas as pd

    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return ""
    if column == "get_bytes":
        value = float(value) / 1e6
    return fmt.format(float(value))


def figures_markdown(table: Any) -> str:
    """The README's figure tables from a results table (``load_results``): one table per suite and scale,
    in the order of :data:`SUITES` and of the scales, each headed by what it was measured on."""
    import pandas as pd

    if table.empty:
        return "No measurements yet: run `make bench`, then `make readme-figures`.\n"
    table = table.copy()
    for col in ("suite", "commit", "notes"):
        table[col] = table[col].fillna("") if col in table else ""
    order = {s: i for i, s in enumerate(SUITES)}
    scales = {s: i for i, s in enumerate(("test", "book", "bench"))}
    groups = sorted(table.groupby(["suite", "scale"], sort=False),
                    key=lambda kv: (scales.get(kv[0][1], 9), order.get(kv[0][0], 99), kv[0][0]))
    out: list[str] = []
    for (suite, scale), rows in groups:
        first = rows.iloc[0]
        commits = ", ".join(dict.fromkeys(str(c) for c in rows["commit"] if c)) or "unknown commit"
        when = str(first.get("timestamp", ""))[:10]
        command = f"`.venv/bin/is2cloud bench --suite {suite} --scale {scale}`" if suite else "(not from make bench)"
        out.append(f"**{suite or 'other'}, {scale} scale**: {command}, at {commits} on {first['host']}, {when}; "
                   f"data: {'synthetic' if first['mode'] == 'local' else 'NASA'}; network profile "
                   f"{', '.join(dict.fromkeys(rows['profile']))}.\n")
        cols = [c for c in _FIGURE_COLUMNS if c[0] in rows and rows[c[0]].notna().any()]
        out.append("| measurement | " + " | ".join(h for _, h, _ in cols) + " |")
        out.append("|---|" + "---|" * len(cols))
        for _, r in rows.iterrows():
            out.append(f"| {r['name']} | " + " | ".join(_cell(r[c], f, c) for c, _, f in cols) + " |")
        notes = [f"- {r['name']}: {r['notes']}" for _, r in rows.iterrows() if str(r["notes"]).strip()]
        out.append("")
        if notes:
            out.extend(notes)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def merge_results(known: Any, new: Any) -> Any:
    """``known`` results with every (suite, scale) that ``new`` measured replaced by ``new``'s rows."""
    import pandas as pd

    if known.empty:
        return new.reset_index(drop=True)
    redone = set(zip(new["suite"].fillna(""), new["scale"]))
    keep = [(s, sc) not in redone for s, sc in zip(known["suite"].fillna(""), known["scale"])]
    return pd.concat([known[keep], new], ignore_index=True)


# -- request by request --------------------------------------------------------------------------------------


def ledger_plot(requests: Any, *, title: str = "", x: Literal["seconds", "order"] = "seconds", width: int = 700,
                height: int = 320):  # -> holoviews object
    """Each GET of the ledger against where in the object it read (byte offset, MB). ``requests``: a list of
    ledger rows (:meth:`LocalCloud.ledger`), or ``{label: rows}`` for several reads (one colour each).

    ``x="seconds"``: one point per GET at the time it started (seconds after the read's first GET), sized
    by the bytes it moved; the reads are overlaid. ``x="order"``: the GETs numbered in the order they were
    sent, each drawn as a vertical bar over the bytes it fetched, one panel per read side by side on the
    same axes: bytes fetched twice show up as bars over the same offsets. Give the rows of one object (one
    granule) per read: offsets of different objects are not comparable. With no ledger (AWS, earthdata mode)
    it returns a one-line note instead of a plot.
    """
    import hvplot.pandas  # noqa: F401 (registers .hvplot)
    import pandas as pd

    if x not in ("seconds", "order"):
        raise ValueError(f"x must be 'seconds' or 'order', not {x!r}")
    groups = requests if isinstance(requests, dict) else {"GET": requests}
    rows = []
    for label, reqs in groups.items():
        gets = [r for r in reqs if r.verb == "GET" and r.key]
        t0 = min((r.start_s for r in gets), default=0.0)
        rows += [{"read": label, "request": i, "seconds": r.start_s - t0, "offset_MB": (r.range_start or 0) / 1e6,
                  "MB": r.bytes / 1e6, "duration_s": r.duration_s, "key": r.key.rsplit("/", 1)[-1]}
                 for i, r in enumerate(sorted(gets, key=lambda r: r.start_s), start=1)]
    if not rows:
        if get_settings().mode != "local":  # earthdata mode: AWS keeps no ledger to draw
            from IPython.display import Markdown

            return Markdown("*No request ledger on AWS: this plot is drawn from the embedded cloud's ledger "
                            "(`IS2CLOUD_MODE=local`).*")
        raise ValueError("the ledger rows hold no GET of an object: nothing to plot")
    frame = pd.DataFrame(rows)
    if x == "order":
        return _ledger_bars(frame, groups, title=title, width=width, height=height)
    frame["size"] = 20 + 200 * frame["MB"] / frame["MB"].max()
    return frame.hvplot.scatter(x="seconds", y="offset_MB", by="read", size="size", alpha=0.6, width=width,
                                height=height, hover_cols=["key", "MB", "duration_s"],
                                xlabel="seconds since the first GET", ylabel="byte offset in the object (MB)",
                                title=title or f"{len(frame)} GETs, one point each")


def _ledger_bars(frame: Any, groups: dict, *, title: str, width: int, height: int):  # -> holoviews Layout
    """One panel per read: GET number against the byte range it fetched (``ledger_plot(x="order")``)."""
    import holoviews as hv

    frame = frame.assign(end_MB=frame["offset_MB"] + frame["MB"], request_end=frame["request"])
    top = float(frame["end_MB"].max())
    panels = []
    for (label, part), colour in zip(frame.groupby("read", sort=False), hv.Cycle.default_cycles["default_colors"]):
        bars = hv.Segments(part, kdims=["request", "offset_MB", "request_end", "end_MB"], vdims=["MB", "key"])
        panels.append(bars.opts(color=colour, line_width=6, tools=["hover"], width=max(250, width // len(groups)),
                                height=height, xlabel="GET, in the order sent", ylabel="byte offset in the object (MB)",
                                ylim=(0, top * 1.02), xlim=(0.5, part["request"].max() + 0.5),
                                title=f"{label}: {len(part)} GETs, {part['MB'].sum():,.1f} MB"))
    return hv.Layout(panels).cols(len(panels)).opts(title=title)


@contextmanager
def ledger_of(cloud: Any) -> Iterator[list]:
    """The requests the block sent, as ledger rows (:meth:`LocalCloud.ledger`), in the yielded list once the
    block ends; empty without a local cloud (``cloud=None``, earthdata mode: AWS keeps no ledger)."""
    rows: list = []
    seq = cloud.seq if cloud is not None else None
    yield rows
    if cloud is not None:
        rows.extend(cloud.ledger(since=seq))


def gets_by_object(requests: list, kinds: dict[str, str]):  # -> pandas.DataFrame
    """GETs and MB of ``requests`` (ledger rows) per kind of object: ``kinds`` maps a label to a key suffix
    (e.g. ``{"granule (.h5)": ".h5", "sidecar (.dmrpp)": ".dmrpp"}``); other keys go to ``"other"``. The
    first matching suffix wins, so list the longer ones first."""
    import pandas as pd

    table = {label: [0, 0] for label in [*kinds, "other"]}
    for r in requests:
        if r.verb != "GET" or not r.key:
            continue
        label = next((lbl for lbl, suffix in kinds.items() if r.key.endswith(suffix)), "other")
        table[label][0] += 1
        table[label][1] += r.bytes
    rows = [{"objects": k, "GETs": n, "MB": b / 1e6} for k, (n, b) in table.items()]
    return pd.DataFrame(rows).set_index("objects")


# -- the tuned baseline, measured once per build -----------------------------------------------------------

TUNED_BASELINE = "baseline (tuned) -> GeoParquet"
REFERENCE_KEY = "is2cloud:reference"  # the GeoParquet metadata key of a kept reference's rows


def rows_dir(results: str | Path | None = None) -> Path:
    """Where reusable measurements keep their rows: beside the results table (``results/measurements.rows/``).
    Not in the output bucket: the embedded cloud's buckets live in memory and end with each notebook's kernel."""
    path = Path(results) if results else results_path()
    return path.with_name(path.stem + ".rows")


def reference_key(sources: list, area: Any, *, mode: str, scale: str, profile: str, commit: str) -> str:
    """What a reused measurement must match: method, mode, scale, network profile, commit, granules, AOI."""
    import hashlib
    import json

    what = {"name": TUNED_BASELINE, "mode": mode, "scale": scale, "profile": profile, "commit": commit,
            "granules": sorted([s.name, s.url, s.size, s.md5] for s in sources), "aoi": area.geometry.wkb_hex}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


_INT_FIELDS = ("requests", "gets", "get_bytes", "faults", "concurrency", "upload_bytes", "granules", "rows",
               "physical_bytes", "cores")
_FLOAT_FIELDS = ("latency_s", "bandwidth_MBps", "wall_s", "cpu_s", "server_cpu_s", "peak_rss_MB", "lower_bound_s",
                 "server_peak_rss_MB", "client_peak_rss_MB")
_OPTIONAL_FLOATS = ("server_cpu_s", "lower_bound_s", "server_peak_rss_MB", "client_peak_rss_MB")  # empty: None


def _from_row(row: dict[str, str]) -> Measurement:
    """A :class:`Measurement` from a row of the results table, as :func:`csv.DictReader` reads it."""
    values: dict[str, Any] = {}
    for f in fields(Measurement):
        if f.name in _NOT_RECORDED or f.name not in row:
            continue
        text = row[f.name]
        if f.name in _INT_FIELDS:
            values[f.name] = int(float(text)) if text else None
        elif f.name in _FLOAT_FIELDS:
            values[f.name] = float(text) if text else (None if f.name in _OPTIONAL_FLOATS else float("nan"))
        else:
            values[f.name] = text
    return Measurement(**values)


def recorded_reference(key: str, results: str | Path | None) -> tuple[Measurement, str] | None:
    """The measurement recorded under ``key`` in this build, with its rows, and who measured it; None when
    there is none: no rows kept under ``key``, or the results table (cleared by ``make book``) no longer holds
    the measurement they belong to."""
    from is2cloud.geoparquet import read_geoparquet, read_metadata

    path = rows_dir(results) / f"{key}.parquet"
    if not path.exists():
        return None
    kept = read_metadata(path).get(REFERENCE_KEY) or {}
    table = Path(results) if results else results_path()
    if kept.get("key") != key or not table.exists():
        return None
    with open(table, newline="") as fh:
        hits = [r for r in csv.DictReader(fh) if r.get("name") == TUNED_BASELINE
                and r.get("timestamp") == kept.get("timestamp") and r.get("commit") == kept.get("commit")]
    if not hits:
        return None
    m = _from_row(hits[-1])
    m.result = read_geoparquet(path)
    m.result.attrs.pop(REFERENCE_KEY, None)
    if len(m.result) != m.rows:
        raise ValueError(f"{path} holds {len(m.result)} rows but its measurement of {m.timestamp} says {m.rows}: "
                         f"delete {path} and run again")
    return m, str(kept.get("by", "an earlier run"))


