"""The conda environment for CryoCloud carries the same pins as uv.lock."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_uv_lock():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "sync_environment.py"), "--check"], cwd=REPO)
    assert r.returncode == 0, "environment.yml is out of date: run scripts/sync_environment.py"
