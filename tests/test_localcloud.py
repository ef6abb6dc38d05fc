"""The embedded cloud: loopback binding, ledger, network model, faults, read-only archive, bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import obstore
import pytest
from botocore.exceptions import ClientError, ResponseStreamingError

from is2cloud.localcloud import LocalCloud, LocalCloudError

DATA = os.urandom(1_500_000)


@pytest.fixture(scope="module")
def creds(cloud):
    c = cloud.credentials()
    c.boto3_client().put_object(Bucket="is2cloud-scratch", Key="blob.bin", Body=DATA)
    return c


def test_binds_to_loopback_on_a_free_port(cloud):
    assert cloud.endpoint.startswith("http://127.0.0.1:")
    assert cloud.port > 0


def test_ledger_counts_gets_exactly(cloud, creds):
    s3 = creds.boto3_client()
    cloud.reset_ledger()
    ranges = [(0, 99), (1000, 1999), (5, 5), (1_400_000, 1_499_999)]
    for a, b in ranges:
        assert s3.get_object(Bucket="is2cloud-scratch", Key="blob.bin", Range=f"bytes={a}-{b}")["Body"].read() == DATA[a:b + 1]
    rows = [r for r in cloud.ledger() if r.verb == "GET"]
    assert [(r.range_start, r.range_end) for r in rows] == ranges
    assert [r.bytes for r in rows] == [b - a + 1 for a, b in ranges]
    assert all(r.key == "blob.bin" and r.bucket == "is2cloud-scratch" and r.status == 206 for r in rows)
    summary = cloud.summary()
    assert summary.gets == len(ranges) and summary.get_bytes == sum(b - a + 1 for a, b in ranges)
    cloud.reset_ledger()
    assert cloud.ledger() == []


def test_ledger_since_reads_only_new_requests(cloud, creds):
    s3 = creds.boto3_client()
    s3.head_object(Bucket="is2cloud-scratch", Key="blob.bin")
    seq = cloud.seq
    s3.get_object(Bucket="is2cloud-scratch", Key="blob.bin", Range="bytes=0-9")["Body"].read()
    rows = cloud.ledger(since=seq)
    assert [(r.verb, r.bytes) for r in rows] == [("GET", 10)]


def test_a_ledger_read_waits_for_a_response_still_being_recorded():
    """The client can hold a whole body before the server records its request (the server's generator
    records it on its way out): a ledger read waits for every request begun before it."""
    import threading

    from is2cloud.localcloud.server import LedgerEntry, ServerState
    from is2cloud.settings import get_profile

    st = ServerState(get_profile("none"), seed=0, archive_bucket="archive")
    seq = st.next_seq()  # a request begins, as the server's data plane starts one
    entry = LedgerEntry(seq, "GET", "b", "k", 0, 9, 10, 206, 0.0, 0.0)
    late = threading.Timer(0.2, st.record, args=(entry,))
    late.start()
    assert [(e.seq, e.bytes) for e in st.settled_ledger(0)] == [(seq, 10)]
    late.join()
    assert not st.pending


def test_a_response_recorded_inside_a_garbage_collection_does_not_deadlock_the_server():
    """A response's generator records its request on its way out, and a generator caught in a reference
    cycle goes out in a garbage collection: in whatever thread allocates at that moment, which may be one
    holding the server's lock (a ledger read, another request's record). The server hung there once, in
    CI, for over an hour."""
    import gc
    import threading

    from is2cloud.localcloud.server import LedgerEntry, ServerState
    from is2cloud.settings import get_profile

    st = ServerState(get_profile("none"), seed=0, archive_bucket="archive")
    seq = st.next_seq()

    def response():
        try:
            yield b"half a body"
        finally:  # as the server's _stream does
            st.record(LedgerEntry(seq, "GET", "b", "k", 0, 9, 11, 206, 0.0, 0.0))

    def abandon_in_a_cycle() -> None:
        body = response()
        next(body)  # started, then the client went away: only the cyclic collector can close it
        cycle: list = [body]
        cycle.append(cycle)

    gc.disable()
    try:
        abandon_in_a_cycle()

        def collect_holding_the_lock() -> None:
            with st.lock:
                gc.collect()

        t = threading.Thread(target=collect_holding_the_lock, daemon=True)
        t.start()
        t.join(5)
    finally:
        gc.enable()
    assert not t.is_alive(), "the server's lock was taken again by a response recorded inside a collection"
    assert [e.seq for e in st.settled_ledger(0)] == [seq]
    assert not st.pending


def test_requests_without_a_body_keep_the_connection_open(cloud, creds):
    """Like S3, the server answers GET/HEAD on a persistent connection; an upload closes it (werkzeug)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", cloud.port, timeout=30)
    try:
        conn.request("GET", "/is2cloud-scratch/blob.bin", headers={"Range": "bytes=10-19"})
        first = conn.getresponse()
        assert (first.status, first.read()) == (206, DATA[10:20])
        sock = conn.sock
        for verb, path, want in [("HEAD", "/is2cloud-scratch/blob.bin", 200),
                                 ("GET", "/is2cloud-scratch/no-such-key", 404),
                                 ("GET", "/is2cloud-scratch/blob.bin", 200)]:
            conn.request(verb, path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == want and resp.getheader("Connection") != "close"
            assert conn.sock is sock, f"{verb} {path} opened a new connection"
        assert body == DATA
        conn.request("PUT", "/is2cloud-scratch/kept.bin", body=b"abc")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and resp.getheader("Connection") == "close"
    finally:
        conn.close()


def _raw_get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_lean_object_reads_answer_as_the_full_path_does(cloud, creds):
    """A GET/HEAD of an object skips http.server's parsing, werkzeug and moto, and answers the same:
    status, body, ETag, ranges, metadata; each request once in the ledger, with the same bytes."""
    seq = cloud.seq
    lean = _raw_get(cloud.port, "/is2cloud-scratch/blob.bin", {"Range": "bytes=100-4195"})
    full = _raw_get(cloud.port, "/is2cloud-scratch/blob.bin", {"Range": "bytes=100-4195", "Connection": "close"})
    assert lean[0] == full[0] == 206 and lean[2] == full[2] == DATA[100:4196]
    for h in ("etag", "content-range", "content-length", "accept-ranges", "last-modified"):
        assert lean[1][h] == full[1][h], h
    missing = _raw_get(cloud.port, "/is2cloud-scratch/no-such-key", {})
    assert missing[0] == 404 and b"NoSuchKey" in missing[2]  # not servable here: moto answers
    deadline = time.monotonic() + 5  # the server records a request after its last byte is sent
    while len(rows := cloud.ledger(since=seq)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(r.verb, r.status, r.bytes, r.range_start, r.range_end) for r in rows] == [
        ("GET", 206, 4096, 100, 4195), ("GET", 206, 4096, 100, 4195), ("GET", 404, len(missing[2]), None, None)]


def test_lean_object_reads_keep_the_network_model_and_faults(cloud, creds):
    cloud.set_profile("in-region")
    try:
        t0 = time.perf_counter()
        assert _raw_get(cloud.port, "/is2cloud-scratch/blob.bin", {"Range": "bytes=0-9"})[0] == 206
        assert time.perf_counter() - t0 >= 0.03  # the time to first byte
    finally:
        cloud.set_profile("none")
    cloud.set_faults(1.0, kinds=("503",), seed=1)
    try:
        seq = cloud.seq
        status, _, body = _raw_get(cloud.port, "/is2cloud-scratch/blob.bin", {"Range": "bytes=0-9"})
        assert status == 503 and b"SlowDown" in body
        cloud.set_faults(1.0, kinds=("reset",), seed=1)
        import http.client

        try:
            _raw_get(cloud.port, "/is2cloud-scratch/blob.bin", {})
        except (http.client.IncompleteRead, ConnectionError):
            pass  # cut half way, as a reset connection is
        else:
            pytest.fail("a reset fault delivered the whole body")
    finally:
        cloud.set_faults(0.0)
    assert [r.fault for r in cloud.ledger(since=seq)] == ["503", "reset"]


@pytest.mark.parametrize("app_kind", ["ok", "no length", "raises"])
def test_keep_alive_handler_closes_unless_the_response_is_complete(app_kind):
    """The handler alone, with plain WSGI apps: a complete response keeps the connection; a body without
    a length is delimited by closing; an app that raises gives a 500 and closes, as werkzeug does."""
    import http.client
    import threading

    from werkzeug.serving import make_server

    from is2cloud.localcloud.server import keep_alive_handler

    def app(environ, start_response):
        if app_kind == "raises":
            raise RuntimeError("boom")
        headers = [("Content-Type", "text/plain")] + ([("Content-Length", "5")] if app_kind == "ok" else [])
        start_response("200 OK", headers)
        return [b"hel", b"lo"]

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=keep_alive_handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.request("GET", "/x")
        resp = conn.getresponse()
        body = resp.read()
        if app_kind == "raises":
            assert resp.status == 500 and resp.getheader("Connection") == "close"
        else:
            assert (resp.status, body) == (200, b"hello")
            assert resp.getheader("Connection") == (None if app_kind == "ok" else "close")
        assert resp.will_close == (app_kind != "ok")
    finally:
        conn.close()
        server.shutdown()


def test_in_region_profile_n_sequential_gets_take_n_latencies(cloud, creds):
    s3 = creds.boto3_client()
    cloud.set_profile("in-region")
    try:
        n = 8
        t0 = time.perf_counter()
        for _ in range(n):
            s3.get_object(Bucket="is2cloud-scratch", Key="blob.bin", Range="bytes=0-0")["Body"].read()
        elapsed = time.perf_counter() - t0
    finally:
        cloud.set_profile("none")
    assert cloud.profile.name == "none"
    assert elapsed >= n * 0.030


def test_bandwidth_limits_a_large_body(cloud, creds):
    s3 = creds.boto3_client()
    cloud.set_profile("remote")  # 20 MB/s per connection, 100 ms first byte
    try:
        t0 = time.perf_counter()
        s3.get_object(Bucket="is2cloud-scratch", Key="blob.bin")["Body"].read()
        elapsed = time.perf_counter() - t0
    finally:
        cloud.set_profile("none")
    assert elapsed >= 0.100 + len(DATA) / 20e6


@pytest.mark.parametrize("kind", ["503", "500", "reset"])
def test_faults_are_injected_and_every_client_still_reads(cloud, creds, kind):
    a, b = 1000, 900_999
    want = DATA[a:b + 1]
    cloud.set_faults(0.35, kinds=[kind], seed=11)
    cloud.reset_ledger()
    try:
        fs = creds.s3fs()
        for _ in range(4):
            with fs.open("is2cloud-scratch/blob.bin", "rb", cache_type="none") as f:
                f.seek(a)
                assert f.read(b - a + 1) == want
        store = creds.obstore("is2cloud-scratch")
        for _ in range(4):
            assert bytes(obstore.get_range(store, "blob.bin", start=a, end=b + 1)) == want
        pfs = creds.pyarrow_fs()
        for _ in range(4):
            with pfs.open_input_file("is2cloud-scratch/blob.bin") as f:
                f.seek(a)
                assert f.read(b - a + 1) == want
        # boto3 retries failed requests itself; a body cut off mid-stream is retried by the caller.
        s3 = creds.boto3_client()
        for _ in range(4):
            for attempt in range(10):
                try:
                    body = s3.get_object(Bucket="is2cloud-scratch", Key="blob.bin", Range=f"bytes={a}-{b}")["Body"].read()
                    break
                except ResponseStreamingError:
                    continue
            assert body == want
    finally:
        cloud.set_faults(0.0)
    faults = [r for r in cloud.ledger() if r.fault]
    assert faults and {r.fault for r in faults} == {kind}
    if kind == "reset":
        assert all(0 < r.bytes < (b - a + 1) for r in faults)
    else:
        assert all(r.status == int(kind) for r in faults)


def test_unknown_profile_and_fault_kind_are_clear_errors(cloud):
    with pytest.raises(ValueError, match="unknown network profile 'lunar'.*in-region"):
        LocalCloud(profile="lunar")
    with pytest.raises(ValueError, match="unknown network profile"):
        cloud.set_profile("lunar")
    with pytest.raises(LocalCloudError, match="unknown fault kinds"):
        cloud.set_faults(0.1, kinds=["meteor"])
    with pytest.raises(LocalCloudError, match="not in \\[0, 1\\]"):
        cloud.set_faults(1.5)


def test_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(LocalCloudError, match=f"cannot bind the local cloud to 127.0.0.1:{port}"):
            LocalCloud(port=port).start()


def test_not_an_archive_is_a_clear_error(tmp_path):
    with pytest.raises(LocalCloudError, match="is not a generated archive"):
        LocalCloud(archive=tmp_path)


def test_archive_is_mounted_read_only(tmp_path):
    obj = tmp_path / "objects" / "nsidc-cumulus-prod-protected" / "ATLAS" / "ATL06" / "006" / "x.h5"
    obj.parent.mkdir(parents=True)
    payload = os.urandom(200_000)
    obj.write_bytes(payload)
    with LocalCloud(archive=tmp_path) as c:
        s3 = c.credentials().boto3_client()
        head = s3.head_object(Bucket="nsidc-cumulus-prod-protected", Key="ATLAS/ATL06/006/x.h5")
        assert head["ContentLength"] == len(payload)
        got = s3.get_object(Bucket="nsidc-cumulus-prod-protected", Key="ATLAS/ATL06/006/x.h5", Range="bytes=10-19")
        assert got["Body"].read() == payload[10:20]
        listed = s3.list_objects_v2(Bucket="nsidc-cumulus-prod-protected", Prefix="ATLAS/")
        assert [o["Key"] for o in listed["Contents"]] == ["ATLAS/ATL06/006/x.h5"]
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.put_object(Bucket="nsidc-cumulus-prod-protected", Key="ATLAS/ATL06/006/x.h5", Body=b"no")
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.delete_object(Bucket="nsidc-cumulus-prod-protected", Key="ATLAS/ATL06/006/x.h5")
    assert obj.read_bytes() == payload


def test_serve_prints_how_to_connect_and_stops_on_ctrl_c(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "is2cloud.cli", "serve", "--preset", "none", "--profile", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C" in line or not line:
                break
        text = "".join(lines)
        assert "endpoint  http://127.0.0.1:" in text
        for client in ("boto3", "s3fs", "obstore", "pyarrow", "GDAL"):
            assert client in text
        endpoint = text.split("endpoint  ")[1].split()[0]
        connected = LocalCloud.connect(endpoint)
        assert connected.profile.name == "none"
        creds = connected.credentials()
        assert creds.secret_access_key not in text and creds.access_key_id not in text
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "stopped." in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_conditional_reads_stay_lean_when_they_hold_and_fail_as_s3_does(cloud, creds):
    """Icechunk pins virtual chunks to the ETag it recorded (If-Match): such reads must not fall back to
    moto, which copies the whole object for every ranged GET."""
    s3 = creds.boto3_client()
    etag = s3.head_object(Bucket="is2cloud-scratch", Key="blob.bin")["ETag"]
    ok = _raw_get(cloud.port, "/is2cloud-scratch/blob.bin", {"Range": "bytes=0-9", "If-Match": etag})
    assert ok[0] == 206 and ok[2] == DATA[:10]
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert _raw_get(cloud.port, "/is2cloud-scratch/blob.bin", {"Range": "bytes=0-9", "If-Modified-Since": old})[0] == 206
    import datetime as dt

    for kw, code in ((dict(IfMatch='"0000"'), "PreconditionFailed"), (dict(IfNoneMatch=etag), "304"),
                     (dict(IfUnmodifiedSince=dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)), "PreconditionFailed")):
        with pytest.raises(ClientError) as err:  # failing conditions are moto's: S3's errors
            s3.get_object(Bucket="is2cloud-scratch", Key="blob.bin", Range="bytes=0-9", **kw)
        assert err.value.response["Error"]["Code"] == code, kw
    from is2cloud.localcloud.server import _preconditions_hold

    from types import SimpleNamespace

    fake = SimpleNamespace(etag=etag.strip('"'), last_modified=dt.datetime(2026, 1, 1))
    assert _preconditions_hold({"HTTP_IF_MATCH": etag}, fake) and not _preconditions_hold({"HTTP_IF_MATCH": '"x"'}, fake)
    assert not _preconditions_hold({"HTTP_IF_MODIFIED_SINCE": "not a date"}, fake)
