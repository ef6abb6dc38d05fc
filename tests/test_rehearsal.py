"""CryoCloud mode rehearsed offline (issue 18): every notebook of the book executed with
``IS2CLOUD_MODE=earthdata`` in a pod set up as CryoCloud's, against stand-ins on 127.0.0.1 for NASA's and
AWS's services:

* CMR search, Earthdata Login (environment strategy) and the NSIDC ``s3credentials`` endpoint
  (:mod:`rehearsal.nasa`), serving real-shaped UMM-G records (the ISO metadata file listed first in
  ``ArchiveAndDistributionInformation``, real ``RelatedUrls``) of the ``test`` archive, plus the ATL06
  granules of the Grand Mesa tracks that notebook 02 compares with;
* STS web identity with a token file and S3: the embedded cloud, given to every client as
  ``AWS_ENDPOINT_URL`` (the NSIDC bucket read-only, as at NSIDC);
* SlideRule at the client-call level (:mod:`rehearsal.sliderule_server`, :func:`rehearsal.pod.engine_server`);
* the pod: ``SCRATCH_BUCKET=s3://cryocloud-scratch/alice`` (shared with another user, bob),
  ``AWS_ROLE_ARN``, ``IS2CLOUD_ROLE_ARN``, ``AWS_WEB_IDENTITY_TOKEN_FILE``, the instance-metadata address
  unreachable, a CPU limit of one core, and no connection or name lookup beyond 127.0.0.1
  (:mod:`rehearsal.pod`, loaded by ``sitecustomize`` in the kernels and their Dask workers).

Each defect of issue 18 has a test here that fails without its fix.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
NOTEBOOKS = ["01_credentials.ipynb", "02_sliderule_to_s3.ipynb", "03_baseline_earthaccess.ipynb",
             "03b_baseline_costs.ipynb", "04_dmrpp_virtualizarr.ipynb", "05_kerchunk.ipynb", "06_repack.ipynb",
             "07_chunk_index.ipynb", "08_comparison.ipynb"]
SCRATCH, USER, OTHER = "cryocloud-scratch", "alice", "bob"
ROLE = "arn:aws:iam::123456789012:role/cryocloud-default"
OWN_ROLE = "arn:aws:iam::123456789012:role/alice-writer"
pytestmark = pytest.mark.notebook


def _companions(test_archive, root: Path) -> list[dict]:
    """ATL06 granules of the Grand Mesa ATL03 tracks (same specs, surface and window), published into
    ``root``'s NSIDC bucket with their UMM-G records: what CMR holds for notebook 02's comparison."""
    import h5py

    from is2cloud import atl06sr
    from is2cloud.granules import GranuleSpec
    from is2cloud.granules.archive import _work, umm_g

    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    bucket = test_archive.objects[0]["bucket"]
    records = []
    for rec in test_archive.umm_records("ATL03"):
        name = rec["umm"]["GranuleUR"]
        with h5py.File(test_archive.path_of(rec["umm"]["RelatedUrls"][1]["URL"].split("/", 3)[3]), "r") as f:
            seed, surface = int(f.attrs["is2cloud_seed"]), f.attrs["is2cloud_surface_model"]
            x0, x1 = (float(v) for v in f.attrs["is2cloud_along_track_window_m"])
        info = atl06sr.parse_granule_name(name)
        spec = GranuleSpec("ATL06", int(info["rgt"]), int(info["cycle"]), int(info["region"]),
                           surface=surface.decode() if isinstance(surface, bytes) else str(surface),
                           x_start=x0, x_end=x1, seed=seed, reason="ATL06 of a Grand Mesa ATL03 track")
        r = _work((spec, str(root), bucket))
        records.append(umm_g(spec, size=r["size"], md5=r["etag"], bucket=bucket, footprints=r["footprints"],
                             created=created))
    return records


def _archive(test_archive, root: Path) -> list[dict]:
    """A copy (links) of the ``test`` archive plus the companions; returns every UMM-G record."""
    for o in test_archive.objects:
        target = root / "objects" / o["bucket"] / o["key"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(test_archive.objects_dir / o["bucket"] / o["key"])
    extra = _companions(test_archive, root)
    return test_archive.umm_records("ATL03") + test_archive.umm_records("ATL06") + extra


def _secrets_in(path: Path, values: set[str]) -> list[str]:
    text = path.read_text(errors="replace")
    return [v[:4] for v in values if v in text]


@pytest.fixture(scope="module")
def pod(test_archive, tmp_path_factory):
    """Run the notebooks once in the rehearsal; yields what the tests look at."""
    from is2cloud.localcloud import LocalCloud
    from rehearsal.nasa import NasaStandIn, nsidc_record

    tmp = tmp_path_factory.mktemp("rehearsal")
    canary = tmp / "secrets.txt"
    canary.touch()
    records = _archive(test_archive, tmp / "archive")
    os.environ["IS2CLOUD_SECRETS_CANARY"] = str(canary)
    try:
        cloud = LocalCloud(profile="none", archive=tmp / "archive", buckets=[SCRATCH]).start()
    finally:
        os.environ.pop("IS2CLOUD_SECRETS_CANARY", None)
    s3 = cloud.credentials().boto3_client("s3")
    bobs = {f"{OTHER}/chunk-index/ATL06_006.parquet": b"bob's chunk index",
            f"{OTHER}/tutorial-03/atl06_greenland_baseline.parquet": b"bob's results"}
    for key, body in bobs.items():
        s3.put_object(Bucket=SCRATCH, Key=key, Body=body)
    token = tmp / "web-identity-token"
    token.write_text("eyJhbGciOiJub25lIn0." + secrets.token_urlsafe(48) + ".")
    password = "pw-" + secrets.token_urlsafe(24)
    canary.open("a").write(token.read_text() + "\n")
    escapes, sliderule_log = tmp / "escapes.log", tmp / "sliderule.jsonl"
    escapes.touch()
    sliderule_log.touch()
    from is2cloud.settings import get_settings

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "IS2CLOUD_", "EARTHDATA_")) and k != "PYTHONPATH"}
    env.update(
        IS2CLOUD_MODE="earthdata", IS2CLOUD_SCALE="test", IS2CLOUD_CACHE=str(get_settings().cache_dir),
        IS2CLOUD_PROGRESS="0", IS2CLOUD_RESULTS=str(tmp / "measurements.csv"),
        SCRATCH_BUCKET=f"s3://{SCRATCH}/{USER}", AWS_ROLE_ARN=ROLE, IS2CLOUD_ROLE_ARN=OWN_ROLE,
        AWS_WEB_IDENTITY_TOKEN_FILE=str(token), AWS_ENDPOINT_URL=cloud.endpoint,
        EARTHDATA_USERNAME=USER, EARTHDATA_PASSWORD=password,
        PYTHONPATH=os.pathsep.join([str(HERE / "rehearsal" / "site"), str(HERE)]),
        IS2CLOUD_REHEARSAL_CPUS="1", IS2CLOUD_REHEARSAL_ESCAPES=str(escapes),
        IS2CLOUD_REHEARSAL_SLIDERULE_LOG=str(sliderule_log),
    )
    out = tmp / "executed"
    with NasaStandIn([nsidc_record(r) for r in records], cloud.credentials, canary, USER, password) as nasa:
        env["IS2CLOUD_REHEARSAL_NASA"] = nasa.url
        run = subprocess.run([sys.executable, str(HERE / "rehearsal" / "run_notebooks.py"), str(out),
                              *[str(REPO / "notebooks" / n) for n in NOTEBOOKS]],
                             env=env, cwd=REPO / "notebooks", capture_output=True, text=True, timeout=1500)
        probe = subprocess.run([sys.executable, str(HERE / "rehearsal" / "probe.py")], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=600)
        objects = {o["Key"]: o for o in s3.list_objects_v2(Bucket=SCRATCH).get("Contents", [])}
        bodies = {k: s3.get_object(Bucket=SCRATCH, Key=k)["Body"].read() for k in bobs}
        yield {"run": run, "out": out, "probe": probe, "objects": objects, "bobs": bobs, "bob_bodies": bodies,
               "escapes": escapes, "sliderule": sliderule_log, "canary": canary, "nasa": nasa,
               "records": records}
    cloud.stop()


def _status(pod) -> dict:
    path = pod["out"] / "status.json"
    assert path.exists(), f"the notebooks did not run:\n{pod['run'].stdout[-3000:]}\n{pod['run'].stderr[-3000:]}"
    return json.loads(path.read_text())


def _text(pod, name: str) -> str:
    nb = nbformat.read(pod["out"] / name, as_version=4)
    return "\n".join(o.get("text", "") or json.dumps(o.get("data", {})) for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))


def _probe(pod) -> dict:
    assert pod["probe"].returncode == 0, pod["probe"].stderr[-3000:]
    return json.loads(pod["probe"].stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_earthdata_mode(pod, name):
    """Runs end to end (3: no instance-metadata region check; 8: the size of the file named like the granule)."""
    status = _status(pod)[name]
    assert status["result"] == "ok", f"{name} failed in the rehearsal:\n{status['result']}"


def test_nothing_reached_beyond_loopback(pod):
    _status(pod)
    text = pod["escapes"].read_text()
    attempts = {line for line in text.splitlines() if line and not line.startswith(" ")}
    # earthaccess.login asks the instance-metadata service whether it runs in us-west-2: refused, as on the hub
    assert attempts <= {"connect 169.254.169.254"}, f"tried to leave 127.0.0.1: {sorted(attempts)}\n{text[-4000:]}"


def test_nasa_stand_in_was_used_as_earthaccess_uses_nasa(pod):
    _status(pod)
    seen = set(pod["nasa"].requests)
    assert {"GET cmr.earthdata.nasa.gov/search/granules.umm_json", "POST urs.earthdata.nasa.gov/api/users/find_or_create_token",
            "GET data.nsidc.earthdatacloud.nasa.gov/s3credentials"} <= seen, sorted(seen)


def test_outputs_stay_under_the_users_prefix(pod):
    """2: SCRATCH_BUCKET's prefix is kept; another user's objects are untouched."""
    _status(pod)
    keys = set(pod["objects"])
    mine = {k for k in keys if k.startswith(f"{USER}/")}
    assert keys - mine == set(pod["bobs"]), f"written outside {USER}/: {sorted(keys - mine - set(pod['bobs']))}"
    assert {f"{USER}/chunk-index/ATL06_006.parquet", f"{USER}/sliderule-example/grandmesa.parquet",
            f"{USER}/tutorial-03/atl06_greenland_baseline.parquet"} <= mine
    assert pod["bob_bodies"] == pod["bobs"]


def test_failed_sliderule_upload_is_an_error(pod):
    """1: the server could not write the output (the NSIDC bucket is read-only): atl06p raises."""
    failed = _probe(pod)["failed_upload"]
    assert "raised" in failed, f"a failed upload was reported as success: {failed}"
    assert "did not confirm writing" in failed["raised"] and "Failed to write" in failed["raised"]


def test_local_cluster_fits_the_pods_cpu_limit(pod):
    """4: one CPU in the pod's limit, one Dask worker (the node has more)."""
    _status(pod)
    assert "processes=1 threads=1" in _text(pod, "03_baseline_earthaccess.ipynb")


def test_write_role_is_the_configured_one(pod):
    """5: IS2CLOUD_ROLE_ARN is the role assumed, over the hub's AWS_ROLE_ARN."""
    _status(pod)
    assert f"assumed-role/{OWN_ROLE.rsplit('/', 1)[-1]}/" in _text(pod, "01_credentials.ipynb")


def test_count_is_the_first_granules_by_name(pod):
    """6: CMR answers newest first; count=1 is still the first granule by name, as locally."""
    found = _probe(pod)
    assert len(found["all"]) >= 2 and found["count"] == sorted(found["all"])[:1]


def test_sliderule_request_names_endpoint_and_region(pod):
    """7: both keys reach the server; never the credentials in its log."""
    _status(pod)
    requests = [json.loads(line) for line in pod["sliderule"].read_text().splitlines()]
    outputs = [r["parms"]["output"] for r in requests]
    assert outputs and all(o["endpoint"] == "s3.us-west-2.amazonaws.com" and o["region"] == "us-west-2"
                           for o in outputs)
    assert all("credentials" not in o for o in outputs)


def test_no_secret_in_the_executed_notebooks(pod):
    _status(pod)
    values = {s for s in pod["canary"].read_text().split() if len(s) >= 16}
    assert values, "the stand-ins recorded no secrets: the canary is not wired up"
    leaks = [(n, s) for n in NOTEBOOKS for s in _secrets_in(pod["out"] / n, values)]
    assert not leaks, f"secrets in executed notebooks: {leaks}"
