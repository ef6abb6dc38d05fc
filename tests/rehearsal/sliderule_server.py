"""SlideRule at the client-call level: the real ``sliderule`` client, with its two calls that reach the
service (``init``'s version check and ``source``, the HTTP request) answered here.

``install(setattr, server)`` replaces ``sliderule.init`` (a session for the given URL, no version check over
the network) and ``sliderule.source``; ``icesat2.atl06p``, ``procoutputfile`` and the session's record
callbacks stay the client's own. ``server(api, request)`` returns the records the server would stream
(dicts with ``__rectype``); they are dispatched as ``Session.__parse_native`` does: a record type with a
callback (the caller's, else the session's defaults such as the alert logger) goes to it, the rest are
returned.
"""

from __future__ import annotations

from typing import Any, Callable

Server = Callable[[str, dict[str, Any]], list[dict[str, Any]]]


def remote_record(url: str, size: int) -> dict[str, Any]:
    """What the server streams after writing ``url`` to S3 (``OutputLib``'s ``arrowrec.remote``)."""
    return {"__rectype": "arrowrec.remote", "url": url, "size": size}


def alert_record(text: str, code: int = -1, level: int = 4) -> dict[str, Any]:
    """An ``exceptrec`` alert (level 4: critical), as the server sends when an S3 PUT fails."""
    return {"__rectype": "exceptrec", "code": code, "level": level, "text": text}


def install(setattr: Callable[[Any, str, Any], None], server: Server, calls: list | None = None) -> None:
    import importlib

    import sliderule
    from sliderule.session import Session

    # the module itself: the package's attribute ``sliderule.sliderule`` is the package (star import)
    core = importlib.import_module("sliderule.sliderule")

    def init(url: str = Session.PUBLIC_DOMAIN, verbose: bool = False, loglevel: int = 20,
             organization: str | None = Session.PUBLIC_CLUSTER, rethrow: bool = False, **kwargs: Any) -> bool:
        if calls is not None:
            calls.append(("init", url, {"organization": organization, "rethrow": rethrow, **kwargs}))
        core.slideruleSession = Session(domain=url, cluster=organization, rethrow=rethrow)
        return True

    def source(api: str, parm: Any = None, stream: bool = False, callbacks: dict | None = None,
               path: str = "/source", session: Any = None, rethrow: bool = False, sign: bool = False) -> list:
        session = core.checksession(session)
        if calls is not None:
            calls.append(("source", api, parm))
        handlers = {**session.callbacks, **(callbacks or {})}
        out = []
        for rec in server(api, parm or {}):
            if rec["__rectype"] in handlers:
                handlers[rec["__rectype"]](rec, session)
            else:
                out.append(rec)
        return out

    setattr(core, "init", init)
    setattr(sliderule, "init", init)
    setattr(core, "source", source)
    setattr(sliderule, "source", source)
