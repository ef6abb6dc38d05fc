"""Shared fixtures: a local cloud per test module, the cached `test` archive, and the book built once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Tests never talk to real AWS: make any accidental default-credential lookup fail fast and locally.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("IS2CLOUD_MODE", "local")
for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(var, None)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cloud():
    from is2cloud.localcloud import LocalCloud

    with LocalCloud(profile="none") as c:
        yield c


@pytest.fixture(scope="session")
def test_archive():
    """The small `test` preset archive (generated once, cached on disk)."""
    from is2cloud.granules import publish_archive
    from is2cloud.settings import get_settings

    return publish_archive("test", cache_dir=get_settings().cache_dir)


@pytest.fixture(scope="module")
def archive_cloud(test_archive):
    from is2cloud.localcloud import LocalCloud

    with LocalCloud(profile="none", archive=test_archive.root) as c:
        yield c


@pytest.fixture(scope="module")
def creds(archive_cloud):
    """Credentials of the module's archive cloud (the embedded STS's web identity)."""
    return archive_cloud.credentials()


@pytest.fixture(scope="module")
def granules(test_archive):
    """The `test` archive's ATL06 granules over the Greenland AOI (earthaccess DataGranules)."""
    from is2cloud.catalog import find_granules

    return find_granules(REPO / "data" / "greenland_aoi.geojson", "ATL06", archive=test_archive)


@dataclass(frozen=True)
class BuiltBook:
    """The whole book, built once per session at `test` scale (tests/test_book.py, test_browser.py,
    test_secrets.py). ``canary`` lists every secret and access key id the local clouds issued meanwhile;
    ``results`` is the build's results folder (IS2CLOUD_RESULTS)."""

    out: Path
    canary: Path
    results: Path
    returncode: int
    log: str

    @property
    def html(self) -> Path:
        return self.out / "_build" / "html"

    @property
    def executed(self) -> Path:
        return self.out / "_build" / "jupyter_execute"

    def require(self) -> None:
        """Fail the calling test if the build failed (test_book.py's build test shows why)."""
        if self.returncode != 0:
            pytest.fail(f"the book did not build (exit {self.returncode}); see "
                        f"test_book.py::test_book_builds_and_executes_every_notebook", pytrace=False)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BuiltBook:
    """`jupyter-book build` of the repository into a temporary folder, every notebook executed (minutes)."""
    tmp = tmp_path_factory.mktemp("book")
    out, canary, results = tmp / "out", tmp / "secrets.txt", tmp / "results"
    env = dict(os.environ, IS2CLOUD_SCALE="test", IS2CLOUD_SECRETS_CANARY=str(canary),
               IS2CLOUD_RESULTS=str(results / "measurements.csv"))
    env.pop("IS2CLOUD_ENDPOINT", None)
    jb = Path(sys.executable).with_name("jupyter-book")
    r = subprocess.run([str(jb), "build", str(REPO), "--path-output", str(out), "--all", "-W", "--keep-going"],
                       capture_output=True, text=True, env=env, cwd=REPO)
    reports = out / "_build" / "html" / "reports"
    log = f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}\n" + (
        "\n".join(p.read_text() for p in reports.glob("*"))[-4000:] if reports.exists() else "")
    yield BuiltBook(out, canary, results, r.returncode, log)
    shutil.rmtree(out, ignore_errors=True)
