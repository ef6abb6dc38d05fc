"""Shared fixtures: a local cloud per test module, and the cached `test` archive."""

from __future__ import annotations

import os
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
