"""Sphinx extension: what each notebook costs to run, measured while the book is built.

For the instructor's guide (book/teaching.md), so that its numbers are never typed:

* each notebook's execution time in this build: myst-nb's execution data (the same ``runtime`` that
  ``{nb-exec-table}`` shows), at the data scale the build ran at (``IS2CLOUD_SCALE``);
* each notebook's peak memory: the largest total resident memory of the processes the build started
  while that notebook executed (its kernel, Dask workers, the embedded S3 server), sampled every half
  second; that is what one participant's notebook needs;
* every notebook this build executed is appended to ``notebook-times.csv`` in the results folder
  (``results/``, or beside ``IS2CLOUD_RESULTS``), with scale, network profile, commit, date and host, so
  the guide can show the other scales' most recent build on this machine too, labelled with their scale,
  commit and date, or "not measured on this machine yet";
* the disk a participant needs: the size of the environment (this Python's prefix, ``.venv``) and of each
  generated archive (``<IS2CLOUD_CACHE>/archive/<scale>``), measured on disk during the build.

Directives (their tables are filled in once every notebook has executed, like ``{nb-exec-table}``):
``{notebook-times}`` and ``{participant-disk}``.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FIELDS = ("notebook", "scale", "profile", "seconds", "peak_MB", "commit", "date", "host")
SCALE_ORDER = ("test", "book", "bench")
_HAS_TABLE = "is2cloud_has_notebook_tables"


# -- the records ---------------------------------------------------------------------------------


def times_path() -> Path:
    """``notebook-times.csv`` beside the build's measurements (``results/`` or ``IS2CLOUD_RESULTS``'s folder)."""
    from is2cloud.bench import results_path

    return results_path().with_name("notebook-times.csv")


def read_records(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def append_records(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` to the CSV at ``path`` atomically (a new file replaces the old one)."""
    if not rows:
        return
    old = read_records(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(old)
            w.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def latest(records: list[dict[str, str]], notebook: str, scale: str, host: str) -> dict[str, str] | None:
    """The most recent record of ``notebook`` at ``scale`` on ``host`` (records are in the order written)."""
    for r in reversed(records):
        if r["notebook"] == notebook and r["scale"] == scale and r["host"] == host:
            return r
    return None


def describe(record: dict[str, str] | None) -> str:
    """A table cell: ``85 s, 1,204 MB (book scale, abc1234, 2026-12-03)`` or "not measured on this machine yet"."""
    if record is None:
        return "not measured on this machine yet"
    peak = f", {float(record['peak_MB']):,.0f} MB" if record.get("peak_MB") else ""
    return (f"{float(record['seconds']):,.0f} s{peak} ({record['scale']} scale, "
            f"{record['commit'] or 'unknown commit'}, {record['date']})")


def host() -> str:
    return f"{platform.node()} ({os.cpu_count()} cpu)"


# -- memory while a notebook executes ------------------------------------------------------------


class _PeakSampler:
    """Peak total RSS of this process's descendants, per document being read (a notebook executing)."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.current: str | None = None
        self.peaks: dict[str, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, docname: str) -> None:
        with self._lock:
            self.current = docname
            self.peaks[docname] = 0.0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="notebook-peak-memory")
            self._thread.start()

    def stop(self, docname: str) -> float | None:
        self._sample()
        with self._lock:
            if self.current == docname:
                self.current = None
            return self.peaks.get(docname)

    def _sample(self) -> None:
        import psutil

        total = 0
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        for p in children:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        with self._lock:
            if self.current is not None:
                self.peaks[self.current] = max(self.peaks.get(self.current, 0.0), total / 1e6)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            if self.current is not None:
                self._sample()


_SAMPLER = _PeakSampler()


def _is_notebook(app: Any, docname: str) -> bool:
    return str(app.env.doc2path(docname)).endswith(".ipynb")


def _on_source_read(app: Any, docname: str, source: list[str]) -> None:
    if _is_notebook(app, docname):
        _SAMPLER.start(docname)


def _env_dict(env: Any, name: str) -> dict[str, Any]:
    """A dict kept in the build environment (pickled with it, so it survives incremental builds)."""
    if not isinstance(getattr(env, name, None), dict):
        setattr(env, name, {})
    return getattr(env, name)


def _on_doctree_read(app: Any, doctree: Any) -> None:
    docname = app.env.docname
    if _is_notebook(app, docname):
        _env_dict(app.env, "is2cloud_peak_MB")[docname] = _SAMPLER.stop(docname)


def _on_before_read(app: Any, env: Any, docnames: list[str]) -> None:
    env.is2cloud_build_started = time.time()
    env.is2cloud_read_now = set(docnames)


# -- recording -----------------------------------------------------------------------------------


def _build_labels() -> dict[str, str]:
    from is2cloud.bench import _commit
    from is2cloud.settings import get_settings

    s = get_settings()
    return {"scale": s.scale, "profile": s.profile, "commit": _commit(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"), "host": host()}


def _in_this_build(env: Any, data: dict[str, Any]) -> bool:
    """Whether myst-nb executed the notebook during this build (a cached or older result has an earlier time)."""
    return bool(data.get("mtime")) and data["mtime"] >= getattr(env, "is2cloud_build_started", 0.0)


def _exec_data(env: Any, docname: str) -> dict[str, Any] | None:
    from myst_nb.sphinx_ import NbMetadataCollector

    return NbMetadataCollector.get_exec_data(env, docname)


def _on_env_updated(app: Any, env: Any) -> list[str]:
    """Record the notebooks this build executed (not those taken from a cache); the pages with a table
    are written again."""
    labels = _build_labels()
    env.is2cloud_labels = labels
    rows = []
    for docname in sorted(getattr(env, "is2cloud_read_now", ())):
        data = _exec_data(env, docname) if _is_notebook(app, docname) else None
        if not data or not data.get("succeeded") or data.get("runtime") is None or not _in_this_build(env, data):
            continue
        peak = _env_dict(env, "is2cloud_peak_MB").get(docname)
        rows.append({"notebook": docname, **labels, "seconds": f"{data['runtime']:.1f}",
                     "peak_MB": f"{peak:.0f}" if peak else ""})
    append_records(times_path(), rows)
    env.is2cloud_read_now = set()
    return [d for d, flag in _env_dict(env, _HAS_TABLE).items() if flag]


# -- the tables ----------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> Any:
    """A docutils table; a cell is text or a node (a link)."""
    from docutils import nodes

    table = nodes.table(classes=["colwidths-auto"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group.extend(nodes.colspec(colwidth=1) for _ in header)
    head, body = nodes.thead(), nodes.tbody()
    group += head
    group += body
    for parent, cells in [(head, header), *((body, r) for r in rows)]:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            para = nodes.paragraph()
            para += cell if isinstance(cell, nodes.Node) else nodes.Text(str(cell))
            entry += para
            row += entry
        parent += row
    return table


def _link(app: Any, fromdoc: str, doc: str) -> Any:
    """A link to ``doc``'s page, named by its title."""
    from docutils import nodes

    title = app.env.titles[doc].astext() if doc in app.env.titles else doc
    return nodes.reference("", title, internal=True, refuri=app.builder.get_relative_uri(fromdoc, doc))


def _notebooks(env: Any) -> list[str]:
    """The notebooks in the order of the book (the toc), else by name."""
    order = getattr(env, "found_docs", set())
    ordered = [d for d in _toc_order(env) if d in order]
    return [d for d in ordered or sorted(order) if str(env.doc2path(d)).endswith(".ipynb")]


def _toc_order(env: Any) -> list[str]:
    seen: list[str] = []

    def walk(doc: str) -> None:
        if doc in seen:
            return
        seen.append(doc)
        for child in env.toctree_includes.get(doc, []):
            walk(child)

    walk(env.config.root_doc)
    return seen


def times_table(app: Any, fromdoc: str) -> Any:
    env = app.env
    labels = getattr(env, "is2cloud_labels", None) or _build_labels()
    scale = labels["scale"]
    others = [s for s in SCALE_ORDER if s != scale and s in ("test", "book")]
    records = read_records(times_path())
    this = f"this build ({scale} scale, {labels['profile']}, {labels['commit'] or 'unknown commit'}, {labels['date']})"
    header = ["notebook", f"{this}: time", "peak memory", *(f"last {s}-scale build on this machine" for s in others)]
    rows, total = [], 0.0
    for doc in _notebooks(env):
        data = _exec_data(env, doc) or {}
        runtime = data.get("runtime")
        peak = _env_dict(env, "is2cloud_peak_MB").get(doc)
        if runtime is None or not data.get("succeeded"):
            mine = "not executed" if runtime is None else "failed"
        else:
            total += runtime
            mine = f"{runtime:,.0f} s"
            if not _in_this_build(env, data):
                when = dt.datetime.fromtimestamp(data.get("mtime") or 0).strftime("%Y-%m-%d")
                mine += f" (executed {when}, not in this build)"
        rows.append([_link(app, fromdoc, doc), mine, f"{peak:,.0f} MB" if peak else "-",
                     *(describe(latest(records, doc, s, labels["host"])) for s in others)])
    rows.append(["all notebooks", f"{total:,.0f} s", "", *("" for _ in others)])
    return _table(header, rows)


def _tree_bytes(root: Path) -> int:
    total = 0
    for base, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(base, f)).st_size
            except OSError:
                continue
    return total


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:,.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:,.0f} MB"


def disk_table() -> Any:
    from is2cloud.settings import get_settings

    cache = Path(get_settings().cache_dir) / "archive"
    rows = [["the environment (.venv: Python and every package)", _size(_tree_bytes(Path(sys.prefix))),
             str(Path(sys.prefix))]]
    for scale in SCALE_ORDER:
        root = cache / scale
        size = _size(_tree_bytes(root)) if (root / ".complete").exists() else "not generated here"
        rows.append([f"the {scale} archive", size, str(root)])
    return _table(["what", "size on disk (measured in this build)", "where"], rows)


def _directive(kind: str) -> Any:
    from docutils import nodes
    from sphinx.util.docutils import SphinxDirective

    class Placeholder(SphinxDirective):
        def run(self) -> list[Any]:
            _env_dict(self.env, _HAS_TABLE)[self.env.docname] = True
            return [nodes.container(classes=[f"is2cloud-{kind}"], is2cloud_table=kind)]

    return Placeholder


def _on_doctree_resolved(app: Any, doctree: Any, docname: str) -> None:
    from docutils import nodes

    for node in list(doctree.findall(nodes.container)):
        kind = node.get("is2cloud_table")
        if kind:
            node.replace_self(times_table(app, docname) if kind == "notebook-times" else disk_table())


def _on_purge(app: Any, env: Any, docname: str) -> None:
    _env_dict(env, _HAS_TABLE).pop(docname, None)


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("notebook-times", _directive("notebook-times"))
    app.add_directive("participant-disk", _directive("participant-disk"))
    app.connect("env-before-read-docs", _on_before_read)
    app.connect("source-read", _on_source_read)
    app.connect("doctree-read", _on_doctree_read)
    app.connect("env-updated", _on_env_updated)
    app.connect("env-purge-doc", _on_purge)
    app.connect("doctree-resolved", _on_doctree_resolved)
    # the memory sampler follows one document at a time: reading in parallel would mix notebooks
    return {"parallel_read_safe": False, "parallel_write_safe": True}
