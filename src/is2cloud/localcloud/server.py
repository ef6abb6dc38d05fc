"""The embedded cloud's server process: moto (S3 + STS) behind a network model.

Run as ``python -m is2cloud.localcloud`` (the :class:`~is2cloud.localcloud.LocalCloud` handle and
``is2cloud serve`` do this). It binds to 127.0.0.1 only and prints one JSON line with its endpoint.

A WSGI middleware in front of moto's own application does what moto does not:

* **Network model** (server side, so every client sees the same world): a seeded time to first
  byte before each response and a per-connection bandwidth limit on response and request bodies.
* **Fault injection** (seeded): 503 SlowDown, 500 InternalError, or a connection reset half way
  through the body, at a set rate, on object reads.
* **Request ledger**: verb, bucket, key, byte range, body bytes, status, duration, fault, for every
  request, readable and resettable at ``/_is2cloud/ledger``.
* **Archive mount**: the files of a generated archive appear as objects of their bucket, backed by
  the files themselves (no copy), and the archive bucket is read-only as NSIDC's is.
* **Range reads from the store**: moto answers a ranged GET by copying the whole object; here
  GET/HEAD of an object read only the requested bytes of moto's stored value, so a 30 ms
  network model is not drowned by server overhead on large granules.
* **Persistent connections** (:func:`keep_alive_handler`): werkzeug closes every connection; here a
  request without a body is answered on a kept-alive connection, as S3 does.

Everything else (PUT, multipart, list, delete, STS) is moto's.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import queue
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, unquote_to_bytes

from is2cloud.settings import PROFILES, Profile, get_profile

log = logging.getLogger("is2cloud.localcloud")

CONTROL_PREFIX = "/_is2cloud/"
FAULT_KINDS = ("503", "500", "reset")
CHUNK = 64 * 1024
LEDGER_WAIT_S = 2.0  # how long a ledger read waits for requests still finishing their response
ACCOUNT_ID = "123456789012"


# -- state -------------------------------------------------------------------------------------


@dataclass
class Faults:
    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    verbs: tuple[str, ...] = ("GET",)

    def validate(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate {self.rate} is not in [0, 1]")
        bad = [k for k in self.kinds if k not in FAULT_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"unknown fault kinds {bad or self.kinds}; choose from {', '.join(FAULT_KINDS)}")


@dataclass
class LedgerEntry:
    seq: int
    verb: str
    bucket: str
    key: str
    range_start: int | None
    range_end: int | None
    bytes: int
    status: int
    start_s: float
    duration_s: float
    fault: str | None = None
    service: str = "s3"
    upload_bytes: int = 0


@dataclass
class ServerState:
    profile: Profile
    seed: int
    archive_bucket: str
    faults: Faults = field(default_factory=Faults)
    ledger: list[LedgerEntry] = field(default_factory=list)
    seq: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=random.Random)
    fault_rng: random.Random = field(default_factory=random.Random)
    epoch: float = field(default_factory=time.monotonic)
    canary: Path | None = None
    # requests begun and not yet in the ledger: a client has a whole body before the server records it
    pending: set[int] = field(default_factory=set)
    # Responses finished and not yet moved into ``ledger``. A response's generator records itself on its
    # way out, and one caught in a reference cycle goes out in a garbage collection, in whatever thread
    # allocates then, maybe one holding ``lock``: so :meth:`record` takes no lock (``SimpleQueue.put`` is
    # reentrant), and entries move into ``ledger`` under the lock when the ledger is read.
    finished: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)

    def next_seq(self) -> int:
        """The sequence number of a request that begins; pending until :meth:`record` has its entry."""
        with self.lock:
            self.seq += 1
            self.pending.add(self.seq)
            return self.seq

    def latency(self) -> float:
        p = self.profile
        if p.latency_s <= 0:
            return 0.0
        with self.lock:
            z = self.rng.gauss(0.0, 1.0)
        # The profile's latency is the floor (the speed of light does not jitter down); jitter only adds.
        return p.latency_s * (1.0 + p.jitter * abs(z))

    def draw_fault(self, verb: str) -> str | None:
        f = self.faults
        if f.rate <= 0 or verb not in f.verbs:
            return None
        with self.lock:
            if self.fault_rng.random() >= f.rate:
                return None
            return self.fault_rng.choice(f.kinds)

    def record(self, entry: LedgerEntry) -> None:
        """A finished request's entry (safe anywhere, even inside a garbage collection: no lock)."""
        self.finished.put(entry)

    def file_finished(self) -> None:
        """Move the finished entries into the ledger (``lock`` held)."""
        while True:
            try:
                self._file(self.finished.get_nowait())
            except queue.Empty:
                return

    def _file(self, entry: LedgerEntry) -> None:
        self.ledger.append(entry)
        self.pending.discard(entry.seq)

    def settled_ledger(self, since: int) -> list[LedgerEntry]:
        """The entries after ``since``, once every request begun before this call is recorded (or after
        ``LEDGER_WAIT_S``: a request still streaming then is left out, and not waited for again)."""
        with self.lock:
            upto = self.seq
        deadline = time.monotonic() + LEDGER_WAIT_S
        while True:
            with self.lock:
                self.file_finished()
                left = deadline - time.monotonic()
                if left <= 0 or not any(s <= upto for s in self.pending):
                    self.pending = {s for s in self.pending if s > upto}
                    return [e for e in self.ledger if e.seq > since]
            try:  # wait for the next response to finish, without the lock
                entry = self.finished.get(timeout=left)
            except queue.Empty:
                continue
            with self.lock:
                self._file(entry)

    def remember_secret(self, *secrets: str) -> None:
        """Test hook: append secrets (and access key ids) this server issued to the canary file, if one is
        configured."""
        if self.canary is None:
            return
        with self.lock, open(self.canary, "a") as fh:
            for s in secrets:
                if s:
                    fh.write(s + "\n")


# -- archive mount -----------------------------------------------------------------------------


class FileBackedValue(io.RawIOBase):
    """Read-only stand-in for moto's SpooledTemporaryFile, backed by an archive file (no copy)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        data = os.pread(self.fd, n, self.pos)
        self.pos += len(data)
        return data

    def pread(self, n: int, offset: int) -> bytes:
        return os.pread(self.fd, n, offset)

    def write(self, *_: Any) -> int:
        raise PermissionError("archive objects are read-only")

    def truncate(self, *_: Any) -> int:
        raise PermissionError("archive objects are read-only")


def s3_backend() -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[ACCOUNT_ID]["aws"]


def mount_archive(archive_root: Path, region: str) -> int:
    """Register every file of ``archive_root/objects/<bucket>/<key>`` as an object of moto's store."""
    objects_dir = archive_root / "objects"
    manifest_path = archive_root / "manifest.json"
    etags: dict[tuple[str, str], str] = {}
    if manifest_path.exists():
        for o in json.loads(manifest_path.read_text()).get("objects", []):
            etags[(o["bucket"], o["key"])] = o.get("etag", "")
    backend = s3_backend()
    count = 0
    for bucket_dir in sorted(p for p in objects_dir.iterdir() if p.is_dir()):
        bucket = bucket_dir.name
        ensure_bucket(bucket, region)
        for path in sorted(bucket_dir.rglob("*")):
            if not path.is_file():
                continue
            key = path.relative_to(bucket_dir).as_posix()
            fake = backend.put_object(bucket, key, b"")
            value = FileBackedValue(path)
            fake._value_buffer = value
            fake.contentsize = value.size
            fake._etag = etags.get((bucket, key)) or _md5_file(path)
            fake.last_modified = _utc_from_ts(path.stat().st_mtime)
            count += 1
    return count


def ensure_bucket(bucket: str, region: str) -> None:
    backend = s3_backend()
    try:
        backend.get_bucket(bucket)
    except Exception:
        backend.create_bucket(bucket, region)


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _utc_from_ts(ts: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None)


# -- the middleware ----------------------------------------------------------------------------

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class ConnectionReset(Exception):
    """Raised inside a body iterator after the socket has been reset on purpose."""


class NetworkModelApp:
    def __init__(self, app: Callable[..., Iterable[bytes]], state: ServerState):
        self.app = app
        self.state = state

    # WSGI entry point
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = _path(environ)
        if path.startswith(CONTROL_PREFIX):
            return self.control(environ, start_response, path[len(CONTROL_PREFIX):])
        return self.modelled(environ, start_response, path)

    # -- control plane (never modelled, never in the ledger) --------------------------------------
    def control(self, environ: dict[str, Any], start_response: Callable[..., Any], what: str) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        st = self.state
        try:
            if what == "health":
                body: Any = {"ok": True}
            elif what == "ledger" and method == "DELETE":
                with st.lock:
                    st.file_finished()  # what finished before this call is cleared too
                    st.ledger.clear()
                body = {"ok": True}
            elif what == "ledger":
                since = int(parse_qs(environ.get("QUERY_STRING", "")).get("since", ["0"])[0])
                body = [asdict(e) for e in st.settled_ledger(since)]
            elif what == "config" and method in ("PUT", "POST"):
                cfg = json.loads(_read_body(environ) or b"{}")
                if "profile" in cfg:
                    prof = get_profile(cfg["profile"])
                    with st.lock:
                        st.profile = prof
                if "faults" in cfg:
                    f = Faults(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["faults"].items()})
                    f.validate()
                    with st.lock:
                        st.faults = f
                        st.fault_rng = random.Random(f.seed)
                body = self._config()
            elif what == "config":
                body = self._config()
            else:
                return _respond(start_response, 404, {"error": f"no control endpoint {what!r}"})
        except (ValueError, TypeError) as exc:
            return _respond(start_response, 400, {"error": str(exc)})
        return _respond(start_response, 200, body)

    def _config(self) -> dict[str, Any]:
        st = self.state
        return {
            "profile": asdict(st.profile),
            "faults": asdict(st.faults),
            "seq": st.seq,
            "archive_bucket": st.archive_bucket,
            "profiles": list(PROFILES),
        }

    # -- data plane ------------------------------------------------------------------------------
    def modelled(self, environ: dict[str, Any], start_response: Callable[..., Any], path: str) -> Iterable[bytes]:
        st = self.state
        t0 = time.monotonic()
        seq = st.next_seq()
        verb = environ["REQUEST_METHOD"]
        bucket, key = _split_path(path)
        query = environ.get("QUERY_STRING", "")
        rng = _parse_range(environ.get("HTTP_RANGE"))
        service = "s3"
        body_peek: bytes | None = None
        if path == "/" and verb == "POST":
            body_peek = _read_body(environ)
            environ["wsgi.input"] = io.BytesIO(body_peek)
            action = parse_qs(body_peek.decode("latin-1")).get("Action", [""])[0]
            service = "sts" if action.startswith(("Assume", "GetCaller", "GetSession")) else "s3"

        upload = int(environ.get("CONTENT_LENGTH") or 0)
        entry, fault = self._begin(seq, t0, verb, bucket, key, rng, service, upload)

        # The archive bucket is read-only, as NSIDC's protected bucket is for users.
        if bucket == st.archive_bucket and key and verb in ("PUT", "POST", "DELETE"):
            return self._finish(entry, t0, start_response, *_s3_error(403, "AccessDenied", "Access Denied", key))
        if fault in ("503", "500"):
            return self._finish(entry, t0, start_response, *_fault_error(fault, key))

        fast = self._fast_object(verb, bucket, key, query, environ, rng)
        if fast is not None:
            status, headers, chunks = fast
            return self._finish(entry, t0, start_response, status, headers, chunks, fault=fault, environ=environ)

        # Everything else is moto's.
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            captured["status"] = int(status.split()[0])
            captured["headers"] = headers
            return lambda data: None

        inner = self.app(environ, capture)
        if service == "sts":
            data = b"".join(inner)
            if hasattr(inner, "close"):
                inner.close()
            self._remember_sts_secrets(data)
            inner = [data]
        return self._finish(entry, t0, start_response, captured.get("status", 500), captured.get("headers", []),
                            inner, fault=fault, environ=environ)

    def _begin(self, seq: int, t0: float, verb: str, bucket: str, key: str, rng: tuple[int | None, int | None] | None,
               service: str, upload: int) -> tuple[LedgerEntry, str | None]:
        """The network model's part before a response: the ledger entry, the time to first byte (and the
        upload's transfer time, since a request body crosses the modelled network too), the fault draw."""
        st = self.state
        entry = LedgerEntry(seq, verb, bucket, key, rng[0] if rng else None, rng[1] if rng else None, 0, 0,
                            round(t0 - st.epoch, 6), 0.0, None, service, upload)
        profile = st.profile
        delay = st.latency() + (upload / profile.bandwidth_Bps if profile.bandwidth_Bps and upload else 0.0)
        fault = st.draw_fault(verb) if key else None
        entry.fault = fault
        if delay:
            time.sleep(delay)
        return entry, fault

    def fast_read(self, verb: str, path: str, query: str, headers: dict[str, str], sock: Any
                  ) -> tuple[int, list[tuple[str, str]], Iterator[bytes]] | None:
        """GET/HEAD of an existing object for :func:`keep_alive_handler`'s lean front end, with the same
        network model, faults and ledger as :meth:`modelled` (None: not such a request; ask moto).

        ``headers`` are the request's, names in lower case. Nothing is modelled or recorded before the
        request is known to be servable here, so a request handed back is modelled once, by the WSGI path.
        """
        if path.startswith(CONTROL_PREFIX):
            return None
        environ = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
        environ["werkzeug.socket"] = sock
        bucket, key = _split_path(path)
        rng = _parse_range(environ.get("HTTP_RANGE"))
        fast = self._fast_object(verb, bucket, key, query, environ, rng)
        if fast is None:
            return None
        t0 = time.monotonic()
        entry, fault = self._begin(self.state.next_seq(), t0, verb, bucket, key, rng, "s3", 0)
        status, out_headers, chunks = _fault_error(fault, key) if fault in ("503", "500") else fast
        entry.status = status
        return status, out_headers, self._body(entry, t0, status, out_headers, chunks, fault, environ)

    def _remember_sts_secrets(self, xml: bytes) -> None:
        text = xml.decode("utf-8", "replace")
        # Access key ids too: not secrets, but never shown in full (see credentials.mask_key_id).
        found = re.findall(r"<(?:SecretAccessKey|SessionToken|AccessKeyId)>([^<]+)</", text)
        self.state.remember_secret(*found)

    def _fast_object(self, verb: str, bucket: str, key: str, query: str, environ: dict[str, Any],
                     rng: tuple[int | None, int | None] | None) -> tuple[int, list[tuple[str, str]], Iterable[bytes]] | None:
        """Serve GET/HEAD of an existing object straight from the store; None = let moto answer."""
        if verb not in ("GET", "HEAD") or not bucket or not key:
            return None
        if query and set(parse_qs(query, keep_blank_values=True)) - {"x-id"}:
            return None
        if environ.get("HTTP_RANGE") and rng is None:
            return None  # multi-range or malformed: moto's semantics
        try:
            fake = s3_backend().get_object(bucket, key)
        except Exception:
            return None
        if fake is None or not _preconditions_hold(environ, fake):
            return None  # a 304 or 412 (or a header we do not parse): moto's semantics
        size = int(fake.size)
        headers = [
            ("Content-Type", fake.metadata.get("Content-Type", "binary/octet-stream") if hasattr(fake, "metadata")
             else "binary/octet-stream"),
            ("ETag", f'"{fake.etag.strip(chr(34))}"'),
            ("Last-Modified", formatdate(_epoch_seconds(fake.last_modified), usegmt=True)),
            ("Accept-Ranges", "bytes"),
            ("x-amz-request-id", _request_id()),
        ]
        # user metadata (x-amz-meta-*), which S3 returns with every GET and HEAD
        headers += [(k, str(v)) for k, v in getattr(fake, "metadata", {}).items() if k.lower().startswith("x-amz-meta-")]
        status = 200
        start, end = 0, size - 1
        if rng is not None:
            a, b = rng
            if a is None:  # suffix range
                if not b:
                    return None
                start, end = max(0, size - b), size - 1
            else:
                if a >= size:
                    return None  # InvalidRange from moto
                start, end = a, size - 1 if b is None else min(b, size - 1)
            status = 206
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        length = max(0, end - start + 1)
        headers.append(("Content-Length", str(length)))
        if verb == "HEAD":
            return status, headers, []
        return status, headers, _read_chunks(fake, start, length)

    def _finish(self, entry: LedgerEntry, t0: float, start_response: Callable[..., Any], status: int,
                headers: list[tuple[str, str]], chunks: Iterable[bytes], *, fault: str | None = None,
                environ: dict[str, Any] | None = None) -> Iterable[bytes]:
        entry.status = status
        start_response(f"{status} {_REASONS.get(status, 'OK')}", list(headers))
        return self._body(entry, t0, status, headers, chunks, fault, environ)

    def _body(self, entry: LedgerEntry, t0: float, status: int, headers: list[tuple[str, str]],
              chunks: Iterable[bytes], fault: str | None, environ: dict[str, Any] | None) -> Iterator[bytes]:
        """The response body through the bandwidth model, cut half way for a ``reset`` fault, recorded."""
        bandwidth = self.state.profile.bandwidth_Bps
        declared = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
        reset_at = (declared // 2) if (fault == "reset" and declared and declared > 1) else None
        if fault == "reset" and reset_at is None:
            entry.fault = None  # nothing to cut: an empty body cannot be reset half way
        return self._stream(entry, t0, chunks, bandwidth, reset_at, environ)

    def _stream(self, entry: LedgerEntry, t0: float, chunks: Iterable[bytes], bandwidth: float,
                reset_at: int | None, environ: dict[str, Any] | None) -> Iterator[bytes]:
        sent = 0
        body_t0 = time.monotonic()
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while len(view):
                    piece = view[:CHUNK]
                    view = view[CHUNK:]
                    if reset_at is not None and sent + len(piece) >= reset_at:
                        piece = piece[: max(0, reset_at - sent)]
                        if len(piece):
                            sent += len(piece)
                            yield bytes(piece)
                        _reset_socket(environ)
                        raise ConnectionReset()
                    sent += len(piece)
                    if bandwidth:
                        wait = body_t0 + sent / bandwidth - time.monotonic()
                        if wait > 0:
                            time.sleep(wait)
                    yield chunk if len(piece) == len(chunk) and isinstance(chunk, bytes) else bytes(piece)
        finally:
            if hasattr(chunks, "close"):
                try:
                    chunks.close()  # type: ignore[union-attr]
                except Exception:
                    pass
            entry.bytes = sent
            entry.duration_s = round(time.monotonic() - t0, 6)
            self.state.record(entry)


def _read_chunks(fake: Any, start: int, length: int) -> Iterator[bytes]:
    buf = fake._value_buffer
    if isinstance(buf, FileBackedValue):
        pos, end = start, start + length
        while pos < end:
            n = min(4 << 20, end - pos)
            yield buf.pread(n, pos)
            pos += n
        return
    with fake.lock:
        buf.seek(start)
        data = buf.read(length)
    yield data


def _preconditions_hold(environ: dict[str, Any], fake: Any) -> bool:
    """Whether every conditional header (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since)
    lets the object be served as is; False also for a header that cannot be read. Clients that pin what they
    read (Icechunk's virtual chunks send the ETag they recorded) then stay on the lean path."""
    from email.utils import parsedate_to_datetime

    etag = f'"{fake.etag.strip(chr(34))}"'
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None and if_match.strip() != "*" and etag not in [t.strip() for t in if_match.split(",")]:
        return False
    if_none = environ.get("HTTP_IF_NONE_MATCH")
    if if_none is not None and (if_none.strip() == "*" or etag in [t.strip() for t in if_none.split(",")]):
        return False
    modified = _epoch_seconds(fake.last_modified)
    for header, must_be_after in (("HTTP_IF_UNMODIFIED_SINCE", False), ("HTTP_IF_MODIFIED_SINCE", True)):
        value = environ.get(header)
        if value is None:
            continue
        try:
            limit = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return False
        if (modified > limit) != must_be_after:
            return False
    return True


_request_ids = random.Random()


def _request_id() -> str:
    """An S3-style request id (16 hex digits; uuid4 costs a getrandom system call per request)."""
    return f"{_request_ids.getrandbits(64):016X}"


def _reset_socket(environ: dict[str, Any] | None) -> None:
    sock = (environ or {}).get("werkzeug.socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _epoch_seconds(naive_utc: Any) -> float:
    import calendar

    return float(calendar.timegm(naive_utc.timetuple()))


def _path(environ: dict[str, Any]) -> str:
    raw = environ.get("PATH_INFO", "/") or "/"
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def _split_path(path: str) -> tuple[str, str]:
    parts = path.lstrip("/").split("/", 1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


def _parse_range(value: str | None) -> tuple[int | None, int | None] | None:
    if not value:
        return None
    m = _RANGE.match(value.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    a = int(m.group(1)) if m.group(1) else None
    b = int(m.group(2)) if m.group(2) else None
    if a is not None and b is not None and b < a:
        return None
    return a, b


def _read_body(environ: dict[str, Any]) -> bytes:
    n = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(n) if n else b""


def _respond(start_response: Callable[..., Any], status: int, body: Any) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(f"{status} {_REASONS.get(status, 'OK')}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _fault_error(fault: str, key: str) -> tuple[int, list[tuple[str, str]], list[bytes]]:
    code, msg = ("SlowDown", "Please reduce your request rate.") if fault == "503" else (
        "InternalError", "We encountered an internal error. Please try again.")
    return _s3_error(int(fault), code, msg, key)


def _s3_error(status: int, code: str, message: str, key: str) -> tuple[int, list[tuple[str, str]], list[bytes]]:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Key>{key}</Key><RequestId>{_request_id()}</RequestId></Error>").encode()
    return status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))], [body]


_REASONS = {200: "OK", 204: "No Content", 206: "Partial Content", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 416: "Requested Range Not Satisfiable", 500: "Internal Server Error",
            503: "Slow Down"}


# -- process entry point -----------------------------------------------------------------------


def keep_alive_handler() -> type:
    """moto's request handler, answering requests without a body on a persistent connection.

    werkzeug's development server closes the connection after every response (http.server cannot
    drain an unread request body before the next request line). A client of real S3 keeps its
    connections open; here every GET would otherwise pay a TCP connect and a fresh server thread, on
    the client's own cores. So a request that has no body, on HTTP/1.1, is answered here, with the same
    WSGI app, and the connection stays open when the response is complete and delimited by its
    Content-Length; anything else (uploads, ``Expect``, a body cut short, an error) goes to werkzeug and
    closes as before.
    """
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class KeepAliveRequestHandler(MotoRequestHandler):
        timeout = 300  # an idle persistent connection is closed after this many seconds
        # A response can take several writes (a body paced by the bandwidth model, a werkzeug
        # response): with Nagle's algorithm a small last write would wait for the client's delayed ACK
        # of the previous one (40 ms on Linux) on a kept-alive connection.
        disable_nagle_algorithm = True

        def handle_one_request(self) -> None:
            try:
                if self._lean_request():
                    return
            except (TimeoutError, ConnectionError, ConnectionReset):
                self.close_connection = True
                return
            super().handle_one_request()

        def _lean_request(self) -> bool:
            """Answer a GET/HEAD of an object without http.server's header parsing, werkzeug's environ and
            moto's dispatcher (the network model, faults and ledger are the middleware's, as on every
            path). Only when the whole request head is already buffered; anything else returns False
            with nothing consumed, for the usual path."""
            fast_read = getattr(self.server.app, "fast_read", None)  # the middleware's (not a plain WSGI app's)
            if fast_read is None:
                return False
            buffered = self.rfile.peek(1)
            end = buffered.find(b"\r\n\r\n")
            if end < 0 or not buffered.startswith((b"GET ", b"HEAD ")):
                return False
            lines = buffered[:end].decode("latin-1").split("\r\n")
            request = lines[0].split(" ")
            if len(request) != 3 or request[2] != "HTTP/1.1":
                return False
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if (headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
                    or "expect" in headers or headers.get("connection", "").lower() == "close"):
                return False
            verb, (target, _, query) = request[0], request[1].partition("?")
            try:
                path = unquote_to_bytes(target).decode("utf-8")
            except UnicodeError:
                return False
            answer = fast_read(verb, path, query, headers, self.connection)
            if answer is None:
                return False
            self.rfile.read(end + 4)
            self.command, self.request_version = verb, "HTTP/1.1"
            status, out_headers, body = answer
            head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n", f"Date: {_http_date()}\r\n"]
            head += [f"{k}: {v}\r\n" for k, v in out_headers]
            head.append("\r\n")
            pending = "".join(head).encode("latin-1")
            length = next(int(v) for k, v in out_headers if k == "Content-Length")
            sent = 0
            for data in body:
                if verb == "GET" and data:
                    self.wfile.write(pending + data if pending else data)
                    pending = b""
                    sent += len(data)
            if pending:
                self.wfile.write(pending)
            self.wfile.flush()
            self.close_connection = verb == "GET" and sent != length
            return True

        def run_wsgi(self) -> None:
            h = self.headers
            bodyless = (h.get("Content-Length", "0").strip() in ("", "0") and "Transfer-Encoding" not in h
                        and "Expect" not in h)
            if self.request_version != "HTTP/1.1" or self.close_connection or not bodyless:
                super().run_wsgi()
                return
            self.environ = environ = self.make_environ()
            self._status_sent = False
            try:
                self.close_connection = not self._respond(environ)
            except Exception as exc:
                self.close_connection = True
                if isinstance(exc, (ConnectionReset, OSError)):
                    return  # the connection is gone (a modelled reset, or the client hung up)
                log.error("error on %s %s: %r", self.command, self.path.split("?", 1)[0], exc)
                if not self._status_sent:  # as werkzeug does: a 500 if nothing was sent yet
                    body = b"Internal Server Error"
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)

        def _respond(self, environ: dict[str, Any]) -> bool:
            """Run the app once; True when the response was complete and the connection can be reused."""
            started: list[Any] = []

            def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                if exc_info and started:
                    raise exc_info[1].with_traceback(exc_info[2])
                started[:] = [status, headers]
                return lambda data: None  # write(): not used by moto or the middleware

            body = self.server.app(environ, start_response)
            try:
                it = iter(body)
                first = next(it, b"")  # the app calls start_response by its first chunk at the latest
                status, headers = started
                code = int(status.split(None, 1)[0])
                length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
                no_body = self.command == "HEAD" or code in (204, 304) or code < 200
                keep = no_body or length is not None
                self._status_sent = True
                self.send_response(code, status.split(None, 1)[1] if " " in status else "")
                for k, v in headers:
                    self.send_header(k, v)
                if not keep:
                    self.send_header("Connection", "close")
                # The head and the first chunk of the body in one write (what end_headers() would
                # write is http.server's _headers_buffer plus the blank line).
                self._headers_buffer.append(b"\r\n")
                head = b"".join(self._headers_buffer)
                self._headers_buffer = []
                sent = 0
                for data in _chain(first, it):
                    if data and not no_body:
                        self.wfile.write(head + data if head else data)
                        sent += len(data)
                        head = b""
                if head:
                    self.wfile.write(head)
                self.wfile.flush()
                return keep and (no_body or sent == length)
            finally:
                if hasattr(body, "close"):
                    body.close()

    return KeepAliveRequestHandler


_date_cache: list[Any] = [0, ""]


def _http_date() -> str:
    """The Date header, formatted once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, formatdate(now, usegmt=True)]
    return str(_date_cache[1])


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def build_app(state: ServerState) -> NetworkModelApp:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return NetworkModelApp(DomainDispatcherApplication(create_backend_app), state)


def serve(host: str, port: int, state: ServerState, region: str, archive: Path | None,
          buckets: list[str], announce: Callable[[dict[str, Any]], None]) -> None:
    from werkzeug.serving import make_server

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the local cloud binds to loopback only, not {host!r}")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    mounted = mount_archive(archive, region) if archive else 0
    ensure_bucket(state.archive_bucket, region)
    for b in buckets:
        ensure_bucket(b, region)
    if port:
        # werkzeug prints and exits on a busy port; check first so the caller gets an error naming it.
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise OSError(f"cannot bind the local cloud to {host}:{port}: {exc.strerror or exc}") from None
    server = make_server(host, port, build_app(state), threaded=True, request_handler=keep_alive_handler())
    server.daemon_threads = True
    h, p = server.server_address[:2]
    announce({"endpoint": f"http://{h}:{p}", "host": h, "port": p, "region": region, "pid": os.getpid(),
              "archive_objects": mounted, "archive_bucket": state.archive_bucket, "buckets": buckets})

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="is2cloud-localcloud-server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--region", default="us-west-2")
    ap.add_argument("--profile", default="none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--archive", type=Path, default=None)
    ap.add_argument("--archive-bucket", default="nsidc-cumulus-prod-protected")
    ap.add_argument("--bucket", action="append", default=[])
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--fault-kinds", default=",".join(FAULT_KINDS))
    ap.add_argument("--fault-seed", type=int, default=0)
    args = ap.parse_args(argv)
    faults = Faults(args.fault_rate, tuple(k for k in args.fault_kinds.split(",") if k), args.fault_seed)
    faults.validate()
    canary = os.environ.get("IS2CLOUD_SECRETS_CANARY")
    state = ServerState(profile=get_profile(args.profile), seed=args.seed, archive_bucket=args.archive_bucket,
                        faults=faults, rng=random.Random(args.seed), fault_rng=random.Random(args.fault_seed),
                        canary=Path(canary) if canary else None)

    def announce(info: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

    try:
        serve(args.host, args.port, state, args.region, args.archive, args.bucket, announce)
    except OSError as exc:
        sys.stdout.write(json.dumps({"error": str(exc)}) + "\n")
        sys.stdout.flush()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
