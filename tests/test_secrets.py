"""No secret the embedded cloud issued reaches a reader (issue 16, part 4).

The local cloud writes every secret key, session token and web-identity token it issues, and every
access key id, to the canary file named by ``IS2CLOUD_SECRETS_CANARY``. These tests scan, for those
values: every file of the rendered book and of its executed notebooks, every file under the build's
results folder and the repository's ``results/`` (the browser test's screenshots among them), and the
output of the command line (its log: stdout and stderr) in fresh processes. Access key ids may be shown
only masked, as AWS's console does (first and last four characters: ``ASIA…WXYZ``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from is2cloud.credentials import mask_key_id

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
KEY_ID = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{16}$")


def issued(canary: Path) -> tuple[set[str], set[str]]:
    """(secrets, access key ids) the local clouds wrote to ``canary``."""
    values = {s for s in canary.read_text().split() if len(s) >= 16} if canary.exists() else set()
    key_ids = {s for s in values if KEY_ID.match(s)}
    return values - key_ids, key_ids


def leaks(files: list[Path], values: set[str]) -> list[str]:
    """``folder/file: ABCD…`` for each value found in a file, read as bytes (any encoding, any format)."""
    found = []
    for f in files:
        data = f.read_bytes()
        found += [f"{f.parent.name}/{f.name}: {v[:4]}…" for v in sorted(values) if v.encode() in data]
    return found


def test_the_scan_finds_a_planted_secret(tmp_path):
    """The scan itself can fail: a secret in a page or in a PNG's bytes, a key id unmasked."""
    (tmp_path / "canary").write_text("S" * 40 + "\nASIAABCDEFGHIJKLMNOP\n")
    secrets, key_ids = issued(tmp_path / "canary")
    assert secrets == {"S" * 40} and key_ids == {"ASIAABCDEFGHIJKLMNOP"}
    (tmp_path / "page.html").write_text(f"<p>token {'S' * 40}</p>")
    (tmp_path / "shot.png").write_bytes(b"\x89PNG" + b"ASIAABCDEFGHIJKLMNOP")
    (tmp_path / "ok.html").write_text(f"<p>{mask_key_id('ASIAABCDEFGHIJKLMNOP')}</p>")
    files = sorted(tmp_path.glob("*.*"))
    assert leaks(files, secrets) == [f"{tmp_path.name}/page.html: SSSS…"]
    assert leaks(files, key_ids) == [f"{tmp_path.name}/shot.png: ASIA…"]


@pytest.mark.notebook
def test_no_secret_in_the_rendered_book_or_results(built_book):
    """Every file of the HTML and the executed notebooks, and under results/ (the build's and the repository's)."""
    built_book.require()
    secrets, key_ids = issued(built_book.canary)
    assert secrets and key_ids, "the local cloud recorded no secrets: the canary is not wired up"
    roots = [built_book.html, built_book.executed, built_book.results, REPO / "results"]
    files = [f for r in roots if r.exists() for f in sorted(r.rglob("*")) if f.is_file()]
    assert any(f.suffix == ".html" for f in files) and any(f.suffix == ".csv" for f in files)
    assert not (found := leaks(files, secrets)), f"secrets in the book or results: {found[:5]}"
    assert not (found := leaks(files, key_ids)), f"access key ids shown in full: {found[:5]}"


@pytest.mark.notebook
def test_notebook_01_shows_key_ids_masked_first_and_last_four(built_book):
    built_book.require()
    _, key_ids = issued(built_book.canary)
    page = (built_book.html / "notebooks" / "01_credentials.html").read_text()
    shown = re.findall(r"access_key_id=(?:&#39;|')((?:AKIA|ASIA)…[A-Z0-9]{4})(?:&#39;|')", page)
    shown += re.findall(r"(?:&#39;|')(?:key|access_key_id)(?:&#39;|'): (?:&#39;|')((?:AKIA|ASIA)…[A-Z0-9]{4})", page)
    assert len(shown) >= 3, "notebook 01 no longer shows its credentials (Credentials repr, storage_options())"
    assert set(shown) <= {mask_key_id(k) for k in key_ids}, f"{shown} are not masks of issued key ids"


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "is2cloud.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_no_secret_in_the_command_lines_logs(tmp_path, test_archive):
    """Build and query a chunk index, fail to write into the read-only archive, run `serve` until Ctrl-C:
    neither stdout nor stderr holds a secret or an unmasked key id the process's local cloud issued."""
    canary = tmp_path / "canary"
    env = {**os.environ, "IS2CLOUD_SCALE": "test", "IS2CLOUD_MODE": "local", "IS2CLOUD_SECRETS_CANARY": str(canary)}
    env.pop("IS2CLOUD_ENDPOINT", None)
    index, rows = tmp_path / "index.parquet", tmp_path / "rows.parquet"
    runs = [
        _cli("index", "build", "--aoi", str(GREENLAND), "--out", str(index), env=env, cwd=tmp_path),
        _cli("index", "query", "--index", str(index), "--aoi", str(GREENLAND), "--out", str(rows), env=env,
             cwd=tmp_path),
        _cli("index", "build", "--aoi", str(GREENLAND), "--out", "s3://nsidc-cumulus-prod-protected/x.parquet",
             env=env, cwd=tmp_path),
    ]
    assert [r.returncode for r in runs] == [0, 0, 2], [r.stderr for r in runs]
    serve = subprocess.Popen([sys.executable, "-m", "is2cloud.cli", "serve", "--preset", "none"], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = [serve.stdout.readline() for _ in range(2)]  # blocks until the cloud is up
    assert "endpoint" in banner[1], banner
    # a client asks the served cloud's STS for credentials, as the banner says to
    client = subprocess.run([sys.executable, "-c", "from is2cloud.access import get_credentials as g; print(g())"],
                            env={**env, "IS2CLOUD_ENDPOINT": banner[1].split()[-1]}, capture_output=True, text=True,
                            timeout=120)
    assert client.returncode == 0, client.stderr
    time.sleep(0.5)
    serve.send_signal(signal.SIGINT)
    out, err = serve.communicate(timeout=60)
    logs = {f"{' '.join(r.args[3:5])} (run {i})": r.stdout + r.stderr for i, r in enumerate(runs)}
    logs["serve"] = "".join(banner) + out + err
    logs["get_credentials() after serve"] = client.stdout + client.stderr
    secrets, key_ids = issued(canary)
    assert secrets and key_ids, "the command line's local clouds recorded no secrets: the canary is not wired up"
    found = [f"{name}: {v[:4]}…" for name, text in logs.items() for v in secrets | key_ids if v in text]
    assert not found, f"secrets or unmasked key ids in the command line's output: {found}"
    assert any(mask_key_id(k) in logs["get_credentials() after serve"] for k in key_ids)
