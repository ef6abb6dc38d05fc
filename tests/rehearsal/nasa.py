"""NASA's services for the rehearsal, on 127.0.0.1: CMR granule search, Earthdata Login, NSIDC ``s3credentials``.

Clients reach it under their real URLs (``https://cmr.earthdata.nasa.gov/...``): the rehearsal's
``sitecustomize`` rewrites those hosts to ``http://127.0.0.1:PORT/<host>/...`` in ``requests``.

* ``/cmr.earthdata.nasa.gov/search/granules.umm_json``: ``short_name``, ``version``, ``polygon`` or
  ``bounding_box``, ``temporal[]``, ``page_size`` (0: hits only) and ``cmr-search-after`` paging; answers
  ``{"hits", "took", "items"}`` with ``CMR-Hits``, newest granule first (CMR's order is not the book's).
  ``.../search/collections.umm_json`` (``short_name``): the collection, which earthaccess asks for the
  provider of a cloud-hosted search.
* ``/urs.earthdata.nasa.gov/api/users/find_or_create_token`` (HTTP Basic, 401 without) and ``/profile``.
* ``/data.nsidc.earthdatacloud.nasa.gov/s3credentials`` (Bearer token of the login): temporary credentials
  from the embedded cloud's STS, in NSIDC's JSON shape.

Every secret handed out is appended to ``canary`` (the rehearsal looks for them in the notebooks).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

HOSTS = ("cmr.earthdata.nasa.gov", "urs.earthdata.nasa.gov", "data.nsidc.earthdatacloud.nasa.gov")


def _matches(record: dict[str, Any], q: dict[str, list[str]]) -> bool:
    from shapely.geometry import Polygon, box

    from is2cloud.catalog import _footprints, _overlaps_time, parse_temporal

    umm = record["umm"]
    ref = umm["CollectionReference"]
    if "short_name" in q and ref["ShortName"] != q["short_name"][0]:
        return False
    if "version" in q and ref["Version"] != q["version"][0]:
        return False
    shapes = []
    for text in q.get("polygon", []):
        v = [float(x) for x in text.split(",")]
        shapes.append(Polygon(list(zip(v[0::2], v[1::2]))))
    for text in q.get("bounding_box", []):
        shapes.append(box(*[float(x) for x in text.split(",")]))
    if shapes and not any(fp.intersects(s) for fp in _footprints(record) for s in shapes):
        return False
    for text in q.get("temporal[]", []):
        start, end = parse_temporal(tuple(t or None for t in text.split(",")))
        if not _overlaps_time(record, start, end):
            return False
    return True


class NasaStandIn:
    """The stand-in server (a thread); ``records`` are UMM-G search results, ``credentials`` issues S3 keys."""

    def __init__(self, records: list[dict[str, Any]], credentials: Callable[[], Any], canary: Path,
                 username: str, password: str):
        self.records = sorted(records, key=lambda r: r["umm"]["GranuleUR"], reverse=True)
        self.credentials = credentials
        self.canary = canary
        self.username, self.password = username, password
        self.token = "EDL-" + secrets.token_urlsafe(32)
        self.requests: list[str] = []
        self._remember(self.token, password)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "NasaStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _remember(self, *values: str) -> None:
        with open(self.canary, "a") as fh:
            fh.writelines(v + "\n" for v in values if v)

    def _handler(self) -> type:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._route()

            def do_POST(self) -> None:
                self._route()

            def _route(self) -> None:
                url = urlparse(self.path)
                host, _, path = url.path.lstrip("/").partition("/")
                outer.requests.append(f"{self.command} {host}/{path}")
                auth = self.headers.get("Authorization", "")
                if host == "cmr.earthdata.nasa.gov" and path == "search/granules.umm_json":
                    return self._search(parse_qs(url.query))
                if host == "cmr.earthdata.nasa.gov" and path == "search/collections.umm_json":
                    return self._collections(parse_qs(url.query))
                if host == "urs.earthdata.nasa.gov" and path == "api/users/find_or_create_token":
                    basic = "Basic " + base64.b64encode(f"{outer.username}:{outer.password}".encode()).decode()
                    if auth != basic:
                        return self._send(401, {"error": "invalid_credentials"}, {"WWW-Authenticate": "Basic"})
                    return self._send(200, {"access_token": outer.token, "token_type": "Bearer",
                                            "expiration_date": "12/31/2031"})
                if host == "urs.earthdata.nasa.gov" and path == "profile":
                    return self._send(200, {"uid": outer.username})
                if host == "data.nsidc.earthdatacloud.nasa.gov" and path == "s3credentials":
                    if auth != f"Bearer {outer.token}":
                        return self._send(401, {"error": "not logged in"})
                    c = outer.credentials()
                    outer._remember(c.secret_access_key, c.session_token or "")
                    return self._send(200, {"accessKeyId": c.access_key_id, "secretAccessKey": c.secret_access_key,
                                            "sessionToken": c.session_token,
                                            "expiration": c.expiration.astimezone(timezone.utc)
                                            .strftime("%Y-%m-%d %H:%M:%S+00:00")})
                self._send(404, {"errors": [f"the stand-in does not serve {host}/{path}"]})

            def _collections(self, q: dict[str, list[str]]) -> None:
                seen: dict[str, dict[str, Any]] = {}
                for r in outer.records:
                    ref = r["umm"]["CollectionReference"]
                    if q.get("short_name", [ref["ShortName"]])[0] != ref["ShortName"]:
                        continue
                    seen.setdefault(r["meta"]["collection-concept-id"], {
                        "meta": {"concept-id": r["meta"]["collection-concept-id"], "provider-id": r["meta"]["provider-id"],
                                 "concept-type": "collection"},
                        "umm": {"ShortName": ref["ShortName"], "Version": ref["Version"],
                                "DirectDistributionInformation": {
                                    "Region": "us-west-2", "S3CredentialsAPIEndpoint":
                                        "https://data.nsidc.earthdatacloud.nasa.gov/s3credentials"}}})
                items = list(seen.values())
                self._send(200, {"hits": len(items), "took": 1, "items": items}, {"CMR-Hits": str(len(items))})

            def _search(self, q: dict[str, list[str]]) -> None:
                t0 = datetime.now()
                found = [r for r in outer.records if _matches(r, q)]
                size = int(q.get("page_size", ["10"])[0])
                after = int(self.headers.get("cmr-search-after", "[0]").strip("[]") or 0)
                page = found[after:after + size]
                headers = {"CMR-Hits": str(len(found))}
                if page:
                    headers["CMR-Search-After"] = f"[{after + len(page)}]"
                took = int((datetime.now() - t0).total_seconds() * 1000)
                self._send(200, {"hits": len(found), "took": took, "items": page}, headers)

        return Handler


def nsidc_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record as NSIDC publishes it: the ISO metadata file listed before the granule in
    ``ArchiveAndDistributionInformation``, and linked from ``RelatedUrls``."""
    import copy

    rec = copy.deepcopy(record)
    umm = rec["umm"]
    name = umm["GranuleUR"]
    xml = name.removesuffix(".h5") + ".iso.xml"
    umm["DataGranule"]["ArchiveAndDistributionInformation"].insert(0, {
        "Name": xml, "SizeInBytes": 70_515, "Size": 0.0672, "SizeUnit": "MB", "Format": "ISO 19115-2",
        "MimeType": "text/xml", "Checksum": {"Value": "3f1b1c3f5a1f4e0f9e2d0c4b7a6e5d4c", "Algorithm": "MD5"}})
    https = next(u["URL"] for u in umm["RelatedUrls"] if u["Type"] == "GET DATA")
    umm["RelatedUrls"].append({"URL": https.removesuffix(".h5") + ".iso.xml", "Type": "EXTENDED METADATA",
                               "Description": "Download " + xml, "MimeType": "text/xml"})
    rec["meta"].pop("is2cloud-synthetic", None)
    return rec
