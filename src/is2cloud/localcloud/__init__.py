"""The embedded local cloud: moto S3 + STS on 127.0.0.1 with a network model and a request ledger.

>>> with LocalCloud(profile="in-region", archive=archive_dir) as cloud:   # doctest: +SKIP
...     creds = cloud.credentials()           # temporary credentials from the embedded STS
...     ...                                   # any S3 client, pointed at cloud.endpoint
...     cloud.summary()                       # GETs and bytes seen by the server

The server runs in its own process (see :mod:`is2cloud.localcloud.server`), so clients in this
process, in Dask workers or in another terminal all talk real S3 HTTP to it and see the same
network. :func:`ensure_cloud` gives notebooks one shared cloud per process.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import secrets
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import requests

from is2cloud.localcloud.server import FAULT_KINDS, LedgerEntry
from is2cloud.settings import Settings, get_profile, get_settings

if TYPE_CHECKING:
    from is2cloud.credentials import Credentials

Request = LedgerEntry

__all__ = ["LocalCloud", "LocalCloudError", "Request", "LedgerSummary", "ensure_cloud", "FAULT_KINDS"]


class LocalCloudError(RuntimeError):
    """The local cloud could not start or answer."""


@dataclass(frozen=True)
class LedgerSummary:
    """Totals over a slice of the ledger."""

    requests: int
    gets: int
    get_bytes: int
    puts: int
    put_bytes: int
    heads: int
    lists: int
    faults: int
    errors: int

    @classmethod
    def of(cls, rows: Iterable[Request]) -> "LedgerSummary":
        rows = list(rows)
        obj_gets = [r for r in rows if r.verb == "GET" and r.key]
        return cls(
            requests=len(rows),
            gets=len(obj_gets),
            get_bytes=sum(r.bytes for r in obj_gets),
            puts=sum(1 for r in rows if r.verb in ("PUT", "POST") and r.service == "s3"),
            put_bytes=sum(r.upload_bytes for r in rows if r.verb in ("PUT", "POST") and r.service == "s3"),
            heads=sum(1 for r in rows if r.verb == "HEAD"),
            lists=sum(1 for r in rows if r.verb == "GET" and not r.key),
            faults=sum(1 for r in rows if r.fault),
            errors=sum(1 for r in rows if r.status >= 400),
        )


class LocalCloud:
    """Handle on an embedded cloud server (owned: started and stopped here; or connected)."""

    role_arn = "arn:aws:iam::123456789012:role/cryocloud-s3-reader"

    def __init__(
        self,
        profile: str = "none",
        *,
        archive: str | Path | None = None,
        seed: int = 0,
        port: int = 0,
        region: str | None = None,
        archive_bucket: str | None = None,
        buckets: Iterable[str] | None = None,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = FAULT_KINDS,
        fault_seed: int = 0,
        startup_timeout: float = 120.0,
    ):
        get_profile(profile)  # validate early, with the list of choices in the error
        if not 0 <= port <= 65535:
            raise LocalCloudError(f"port {port} is not a TCP port; give 1..65535, or 0 for a free port")
        if not 0.0 <= fault_rate <= 1.0:
            raise LocalCloudError(f"fault rate {fault_rate} is not a fraction of requests; give 0..1")
        settings = get_settings()
        self.profile_name = profile
        self.archive = Path(archive) if archive else None
        if self.archive is not None and not (self.archive / "objects").is_dir():
            raise LocalCloudError(f"{self.archive} is not a generated archive (no objects/ folder)")
        self.seed = seed
        self.port = port
        self.region = region or settings.region
        self.archive_bucket = archive_bucket or settings.archive_bucket
        self.buckets = list(buckets) if buckets is not None else [settings.output_bucket or "is2cloud-scratch"]
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.fault_seed = fault_seed
        self.startup_timeout = startup_timeout
        self.endpoint: str = ""
        self._proc: subprocess.Popen[str] | None = None
        self._owned = True
        self._tmp = tempfile.TemporaryDirectory(prefix="is2cloud-")
        self._http = requests.Session()
        self._http.trust_env = False  # loopback only: never route through a proxy from the environment
        self.web_identity_token_file = self._write_token()

    # -- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def connect(cls, endpoint: str) -> "LocalCloud":
        """A handle on a server started elsewhere (``is2cloud serve``); it is not stopped here."""
        cloud = cls.__new__(cls)
        cloud._owned = False
        cloud._proc = None
        cloud._tmp = tempfile.TemporaryDirectory(prefix="is2cloud-")
        cloud._http = requests.Session()
        cloud._http.trust_env = False
        cloud.endpoint = endpoint.rstrip("/")
        cfg = cloud._control("GET", "config")
        cloud.profile_name = cfg["profile"]["name"]
        cloud.archive_bucket = cfg["archive_bucket"]
        settings = get_settings()
        cloud.region = settings.region
        cloud.buckets = [settings.output_bucket]
        cloud.archive = None
        cloud.web_identity_token_file = cloud._write_token()
        return cloud

    def start(self) -> "LocalCloud":
        if self._proc is not None:
            return self
        cmd = [sys.executable, "-m", "is2cloud.localcloud", "--host", "127.0.0.1", "--port", str(self.port),
               "--region", self.region, "--profile", self.profile_name, "--seed", str(self.seed),
               "--archive-bucket", self.archive_bucket, "--fault-rate", str(self.fault_rate),
               "--fault-kinds", ",".join(self.fault_kinds), "--fault-seed", str(self.fault_seed)]
        if self.archive is not None:
            cmd += ["--archive", str(self.archive)]
        for b in self.buckets:
            cmd += ["--bucket", b]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        info = self._wait_announce()
        if "error" in info:
            self.stop()
            raise LocalCloudError(info["error"])
        self.endpoint = info["endpoint"]
        self.port = int(info["port"])
        self.archive_objects = int(info.get("archive_objects", 0))
        return self

    def _wait_announce(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: q.put(self._proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        try:
            line = q.get(timeout=self.startup_timeout)
        except queue.Empty:
            self.stop()
            raise LocalCloudError(f"the local cloud did not start within {self.startup_timeout:.0f} s") from None
        if not line:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            self.stop()
            last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no message"]
            raise LocalCloudError(f"the local cloud exited before it was ready: {last[0].strip()[:500]}")
        # Keep draining stderr so the child never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        return json.loads(line)

    def _drain(self) -> None:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return
        for _ in proc.stderr:
            pass

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._owned:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._http.close()

    @property
    def running(self) -> bool:
        if not self._owned:
            return True
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "LocalCloud":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- control plane ---------------------------------------------------------------------------
    def _control(self, method: str, what: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            r = self._http.request(method, f"{self.endpoint}/_is2cloud/{what}", json=body, params=params, timeout=30)
        except requests.RequestException as exc:
            raise LocalCloudError(f"the local cloud at {self.endpoint} does not answer: {exc}") from None
        if r.status_code >= 400:
            raise LocalCloudError(r.json().get("error", r.text))
        return r.json()

    def ledger(self, since: int = 0) -> list[Request]:
        """Every request the server saw (after sequence number ``since``), in arrival order."""
        return [Request(**row) for row in self._control("GET", "ledger", params={"since": since})]

    def ledger_frame(self, since: int = 0):  # -> pandas.DataFrame
        import pandas as pd

        from dataclasses import asdict

        rows = [asdict(r) for r in self.ledger(since)]
        return pd.DataFrame(rows, columns=list(Request.__dataclass_fields__))

    def summary(self, since: int = 0) -> LedgerSummary:
        return LedgerSummary.of(self.ledger(since))

    def reset_ledger(self) -> None:
        self._control("DELETE", "ledger")

    @property
    def seq(self) -> int:
        """The sequence number of the last request seen; pass it as ``since`` to read what follows."""
        return int(self._control("GET", "config")["seq"])

    @property
    def profile(self):  # -> is2cloud.settings.Profile
        from is2cloud.settings import Profile

        return Profile(**self._control("GET", "config")["profile"])

    def set_profile(self, name: str) -> None:
        get_profile(name)
        self._control("PUT", "config", {"profile": name})
        self.profile_name = name

    def set_faults(self, rate: float, kinds: Iterable[str] = FAULT_KINDS, seed: int = 0,
                   verbs: Iterable[str] = ("GET",)) -> None:
        self._control("PUT", "config", {"faults": {"rate": rate, "kinds": list(kinds), "seed": seed,
                                                   "verbs": list(verbs)}})

    # -- credentials -----------------------------------------------------------------------------
    def _write_token(self) -> str:
        """A web-identity token file, as CryoCloud's hub provides (the embedded STS does not verify it)."""
        path = Path(self._tmp.name) / "web-identity-token"
        token = "eyJhbGciOiJub25lIn0." + secrets.token_urlsafe(48) + "."
        path.write_text(token)
        path.chmod(0o600)
        canary = os.environ.get("IS2CLOUD_SECRETS_CANARY")
        if canary:  # test hook: the no-secrets test looks for every secret the local cloud handed out
            with open(canary, "a") as fh:
                fh.write(token + "\n")
        return str(path)

    def credentials(self, duration_seconds: int = 3600) -> "Credentials":
        """Temporary credentials from the embedded STS, obtained the CryoCloud way (web identity)."""
        from is2cloud.credentials import from_web_identity

        return from_web_identity(
            role_arn=self.role_arn,
            token_file=self.web_identity_token_file,
            sts_endpoint=self.endpoint,
            region=self.region,
            endpoint_url=self.endpoint,
            duration_seconds=duration_seconds,
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalCloud({self.endpoint or 'not started'}, profile={self.profile_name!r}, {state})"


# -- one cloud per process for the notebooks -------------------------------------------------------

_CLOUD: LocalCloud | None = None
_LOCK = threading.Lock()


def ensure_cloud(settings: Settings | None = None) -> LocalCloud:
    """The process-wide local cloud: reuse ``IS2CLOUD_ENDPOINT`` if set, else start one that serves the
    archive of ``settings.scale`` (generated on first use) with ``settings.profile``."""
    global _CLOUD
    settings = settings or get_settings()
    if settings.mode != "local":
        raise LocalCloudError("there is no local cloud in earthdata mode; the real AWS services are used")
    with _LOCK:
        if _CLOUD is not None and _CLOUD.running:
            return _CLOUD
        if settings.endpoint:
            _CLOUD = LocalCloud.connect(settings.endpoint)
        else:
            from is2cloud.granules import publish_archive

            archive = publish_archive(settings.scale, cache_dir=settings.cache_dir)
            _CLOUD = LocalCloud(profile=settings.profile, archive=archive.root, seed=settings.seed).start()
            atexit.register(_CLOUD.stop)
        return _CLOUD
