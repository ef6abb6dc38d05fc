"""Progress of long calls (archive generation, fan-out over granules, index builds, repacks).

``progress=None`` (every long call's default) means: show progress when someone is watching, that is
in an interactive terminal or an interactive Jupyter session, and stay quiet when a book is built, a
notebook is executed by a tool (jupyter-book, nbclient, nbconvert, papermill, pytest) or stdout is not
a terminal. A kernel counts as interactive when a front end started it for a person: Jupyter Server
(JupyterLab, Notebook, JupyterHub) names the session in ``JPY_SESSION_NAME``, VS Code sets
``VSCODE_PID``; a kernel that tools like nbclient start has neither. ``IS2CLOUD_PROGRESS=1`` or ``0`` decides instead; ``progress=True``/``False`` always wins.

On a terminal (or in Jupyter) the line is rewritten in place; elsewhere (a log file, CI) a new line
is printed at most every ``interval`` seconds and at the end. A caller that waits for slow work calls
:meth:`Progress.tick` while it waits, so the elapsed time keeps moving (and a log gets a line every
``interval`` seconds) even when nothing finishes for minutes.
"""

from __future__ import annotations

import os
import sys
import time
from functools import lru_cache
from typing import TextIO

__all__ = ["Progress", "wanted"]

# Programs that execute notebooks unattended: progress in their outputs would end up in the book.
_EXECUTORS = ("jupyter-book", "jupyter_book", "sphinx-build", "sphinx", "nbclient", "nbconvert", "papermill",
              "pytest", "myst")


def _in_kernel() -> bool:
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return type(ip).__name__ == "ZMQInteractiveShell"


@lru_cache(maxsize=1)
def _run_by_executor() -> bool:
    """Whether an ancestor process is a tool that runs notebooks unattended."""
    try:
        import psutil

        proc = psutil.Process().parent()
        while proc is not None and proc.pid > 1:
            line = " ".join(proc.cmdline()).lower()
            if any(name in line for name in _EXECUTORS):
                return True
            proc = proc.parent()
    except Exception:  # noqa: BLE001 (no psutil, or a process we may not inspect: assume attended)
        return False
    return False


def wanted(progress: bool | None, stream: TextIO | None = None) -> bool:
    """Resolve a ``progress=`` argument (see the module docstring)."""
    if progress is not None:
        return bool(progress)
    env = os.environ.get("IS2CLOUD_PROGRESS", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    if _in_kernel():
        front_end = bool(os.environ.get("JPY_SESSION_NAME") or os.environ.get("VSCODE_PID"))
        return front_end and not _run_by_executor()
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and not _run_by_executor()


class Progress:
    """One progress line: ``<label> 3/10 done, 1 failed, 2.1 s``."""

    def __init__(self, total: int, label: str, progress: bool | None = None, stream: TextIO | None = None,
                 interval: float = 10.0):
        self.stream = stream or sys.stdout
        self.total, self.label = total, label
        self.enabled = wanted(progress, self.stream) and total > 0
        self.in_place = _in_kernel() or bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.in_place else interval
        self.done = self.failed = 0
        self.t0 = time.perf_counter()
        self._last = -float("inf")
        self._show(force=True)

    def update(self, ok: bool = True, n: int = 1) -> None:
        self.done += n
        self.failed += 0 if ok else n
        self._show(force=self.done >= self.total)

    def tick(self) -> None:
        """Show the line again (elapsed time) without counting anything: call it while waiting."""
        self._show()

    def _show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        failed = f", {self.failed} failed" if self.failed else ""
        text = f"{self.label} {self.done}/{self.total} done{failed}, {now - self.t0:.1f} s"
        if self.in_place:
            self.stream.write(f"\r{text}" + ("\n" if self.done >= self.total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
