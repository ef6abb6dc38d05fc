"""Progress lines: shown when someone watches, quiet in book builds and pipes, one line at a time in logs."""

from __future__ import annotations

import io

import pytest

from is2cloud import progress as pg


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _attended(monkeypatch):
    monkeypatch.delenv("IS2CLOUD_PROGRESS", raising=False)
    monkeypatch.setattr(pg, "_run_by_executor", lambda: False)
    monkeypatch.setattr(pg, "_in_kernel", lambda: False)


def test_explicit_choice_wins():
    assert pg.wanted(True, io.StringIO()) is True
    assert pg.wanted(False, _Tty()) is False


def test_default_follows_the_terminal_and_the_environment(monkeypatch):
    assert pg.wanted(None, _Tty()) is True
    assert pg.wanted(None, io.StringIO()) is False  # a pipe or a log file
    monkeypatch.setenv("IS2CLOUD_PROGRESS", "1")
    assert pg.wanted(None, io.StringIO()) is True
    monkeypatch.setenv("IS2CLOUD_PROGRESS", "0")
    assert pg.wanted(None, _Tty()) is False


def test_quiet_when_a_tool_executes_the_notebook(monkeypatch):
    monkeypatch.setattr(pg, "_in_kernel", lambda: True)
    monkeypatch.delenv("VSCODE_PID", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert pg.wanted(None) is False  # a kernel nbclient started: no front end
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/jovyan/07_chunk_index.ipynb")  # JupyterLab's kernel
    assert pg.wanted(None) is True
    monkeypatch.setattr(pg, "_run_by_executor", lambda: True)
    assert pg.wanted(None) is False
    assert pg.wanted(None, _Tty()) is False


def test_terminal_rewrites_one_line_and_a_log_gets_whole_lines():
    tty = _Tty()
    bar = pg.Progress(3, "work", None, stream=tty)
    for _ in range(3):
        bar.update()
    assert tty.getvalue().startswith("\rwork 0/3 done") and tty.getvalue().endswith("work 3/3 done, " +
                                                                                    tty.getvalue().split(", ")[-1])
    assert tty.getvalue().count("\n") == 1
    log = io.StringIO()
    bar = pg.Progress(2, "work", True, stream=log, interval=3600)
    bar.update(ok=False)
    bar.update()
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("work 0/2 done") and lines[-1].startswith("work 2/2 done, 1 failed")
    assert len(lines) == 2 and "\r" not in log.getvalue()  # the middle update fell inside the interval


def test_nothing_is_written_when_disabled():
    out = io.StringIO()
    bar = pg.Progress(2, "work", None, stream=out)
    bar.update()
    bar.update()
    assert out.getvalue() == ""
