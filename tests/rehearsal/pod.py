"""A CryoCloud pod, as far as the notebooks can tell, installed in each process by ``sitecustomize``.

* **Loopback only.** A connection or name lookup beyond 127.0.0.1 fails (as the instance-metadata address
  does on hubs that block it) and is written to ``IS2CLOUD_REHEARSAL_ESCAPES``.
* **NASA's hosts** (:data:`rehearsal.nasa.HOSTS`) are reached through ``requests`` at the stand-in
  (``IS2CLOUD_REHEARSAL_NASA``), under their real URLs as far as earthaccess and python-cmr know.
* **The container's CPU limit**: the cgroup quota dask reads is ``IS2CLOUD_REHEARSAL_CPUS`` CPUs.
* **SlideRule**: :mod:`rehearsal.sliderule_server` with a server that does what SlideRule's does: search
  CMR, run ATL06-SR (the book's engine) and write the output to S3 with the request's credentials and
  endpoint (the embedded S3 server stands for AWS's), then confirm it with ``arrowrec.remote``, or send
  only an alert when the write fails. Each request, without its credentials, is appended to
  ``IS2CLOUD_REHEARSAL_SLIDERULE_LOG``.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import socket
import sys
from typing import Any, Callable
from urllib.parse import urlparse

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _escape(what: str) -> None:
    """Record an attempt to leave 127.0.0.1: one line, then the calls that led to it (indented)."""
    import traceback

    frames = [f"    {f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack()[-40:-2]]
    with open(os.environ["IS2CLOUD_REHEARSAL_ESCAPES"], "a") as fh:
        fh.write("\n".join([what, *frames]) + "\n")


def _guard_network() -> None:
    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def allowed(address: Any) -> bool:
        return not isinstance(address, tuple) or address[0] in LOOPBACK

    def connect(self: socket.socket, address: Any) -> None:
        if not allowed(address):
            _escape(f"connect {address[0]}")
            raise ConnectionRefusedError(f"rehearsal: {address[0]} is beyond 127.0.0.1")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not allowed(address):
            _escape(f"connect {address[0]}")
            return 111  # ECONNREFUSED
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        text = host.decode() if isinstance(host, bytes) else host
        if text is not None and text not in LOOPBACK and not _is_ip(text):
            _escape(f"lookup {text}")
            raise socket.gaierror(socket.EAI_NONAME, f"rehearsal: no name lookups ({text})")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class _AfterImport(importlib.abc.MetaPathFinder):
    """Run ``hook(module)`` right after ``name`` is first imported."""

    def __init__(self, hooks: dict[str, Callable[[Any], None]]):
        self.hooks = hooks

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:  # a spec may be looked up (find_spec) and never loaded
            run(module)
            hook = self.hooks.pop(name, None)
            if hook is not None:
                hook(module)

        spec.loader.exec_module = exec_module
        return spec


def _redirect_nasa(adapters: Any) -> None:
    from rehearsal.nasa import HOSTS

    base = os.environ["IS2CLOUD_REHEARSAL_NASA"]
    send = adapters.HTTPAdapter.send

    def redirected(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        url = urlparse(request.url)
        if url.hostname not in HOSTS:
            return send(self, request, *args, **kwargs)
        original = request.url
        request.url = f"{base}/{url.hostname}{url.path}" + (f"?{url.query}" if url.query else "")
        try:
            response = send(self, request, *args, **kwargs)
        finally:
            request.url = original
        response.url = original  # earthaccess's login hook checks which host answered
        return response

    adapters.HTTPAdapter.send = redirected


def _cpu_limit(system: Any) -> None:
    cpus = float(os.environ["IS2CLOUD_REHEARSAL_CPUS"])
    system._try_extract_cgroup_cpu_quota = lambda: (int(cpus * 100_000), 100_000)


def _sliderule(package: Any) -> None:
    from rehearsal import sliderule_server

    sliderule_server.install(setattr, engine_server)


def engine_server(api: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """SlideRule's side of ``atl06p`` with S3 output (what the notebooks ask of it)."""
    from rehearsal.sliderule_server import alert_record, remote_record

    from is2cloud import sliderule as sr
    from is2cloud.localcloud import LocalCloud

    if api != "atl06p":
        return [alert_record(f"the rehearsal's SlideRule serves atl06p only, not {api}")]
    parms = dict(request["parms"])
    with open(os.environ["IS2CLOUD_REHEARSAL_SLIDERULE_LOG"], "a") as fh:
        fh.write(json.dumps({"api": api, "parms": sr.safe_parms(parms), "resources": request.get("resources")}) + "\n")
    output = parms.get("output") or {}
    path = str(output.get("path", ""))
    parms.pop("asset", None)
    cloud = LocalCloud.connect(os.environ["AWS_ENDPOINT_URL"])
    try:
        checked = sr.check_request(parms, request.get("resources"), local=True)
        sr._atl06p_local(checked, client="sync", cloud=cloud, progress=False)
        bucket, _, key = path.removeprefix("s3://").partition("/")
        size = cloud.credentials().boto3_client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"]
    except Exception as exc:  # the server reports a failed write as an alert, nothing more
        return [alert_record(f"Failed to write {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}")]
    return [remote_record(path, int(size))]


def install() -> None:
    _guard_network()
    sys.meta_path.insert(0, _AfterImport({"requests.adapters": _redirect_nasa, "dask.system": _cpu_limit,
                                          "sliderule": _sliderule}))
