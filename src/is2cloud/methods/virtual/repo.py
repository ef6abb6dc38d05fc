"""The Icechunk repository of the virtual store: storage in the output bucket, one virtual chunk
container per archive bucket (authorised with the read credentials), created, opened and removed.

Every client gets explicit credentials and, locally, the embedded server's endpoint (``allow_http``,
path-style requests); on AWS the region alone. Credentials that can be refreshed (the embedded STS's,
earthaccess's DAAC credentials, which last an hour) are handed to Icechunk as a refreshing callable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from is2cloud.methods.ranges import split_url

__all__ = ["container_prefix", "create_repo", "delete_prefix", "open_repo", "prefix_nbytes", "repo_exists",
           "storage"]


class _Fetch:
    """Icechunk's ``get_credentials``: the current (refreshed when near expiry) credentials. Pickles."""

    def __init__(self, credentials: Any):
        self.credentials = credentials

    def __call__(self) -> Any:
        import icechunk

        c = self.credentials = self.credentials.fresh()
        return icechunk.S3StaticCredentials(access_key_id=c.access_key_id, secret_access_key=c.secret_access_key,
                                            session_token=c.session_token,
                                            expires_after=c.expiration.astimezone(dt.UTC) if c.expiration else None)


def _creds_kwargs(credentials: Any) -> dict[str, Any]:
    if credentials.refresher is not None:
        return {"get_credentials": _Fetch(credentials)}
    return {"access_key_id": credentials.access_key_id, "secret_access_key": credentials.secret_access_key,
            "session_token": credentials.session_token}


def _endpoint_kwargs(credentials: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"region": credentials.region}
    if credentials.endpoint_url:
        kw.update(endpoint_url=credentials.endpoint_url, allow_http=credentials.endpoint_url.startswith("http://"),
                  force_path_style=True)
    return kw


def storage(location: str, credentials: Any) -> Any:
    """The Icechunk storage of the repository at ``s3://bucket/prefix`` (written with ``credentials``)."""
    import icechunk

    bucket, prefix = split_url(location.rstrip("/"))
    return icechunk.s3_storage(bucket=bucket, prefix=prefix, **_endpoint_kwargs(credentials),
                               **_creds_kwargs(credentials))


def container_prefix(url: str) -> str:
    """The virtual chunk container that holds an object: ``s3://<its bucket>/``."""
    return f"s3://{split_url(url)[0]}/"


def _containers(config: Any, prefixes: Iterable[str], credentials: Any) -> bool:
    """Add a container for each prefix the config lacks; True if it changed."""
    import icechunk

    have = set((config.virtual_chunk_containers or {}).keys())
    changed = False
    for p in sorted(set(prefixes) - have):
        config.set_virtual_chunk_container(icechunk.VirtualChunkContainer(p, icechunk.s3_store(
            **_endpoint_kwargs(credentials))))
        changed = True
    return changed


def _authorise(prefixes: Iterable[str], credentials: Any) -> dict[str, Any]:
    import icechunk

    return icechunk.containers_credentials({p: icechunk.s3_credentials(**_creds_kwargs(credentials))
                                            for p in sorted(set(prefixes))})


def repo_exists(location: str, out_credentials: Any) -> bool:
    import icechunk

    return bool(icechunk.Repository.exists(storage(location, out_credentials)))


def create_repo(location: str, prefixes: Iterable[str], *, credentials: Any, out_credentials: Any) -> Any:
    """A new repository at ``location`` with a container per prefix (``s3://bucket/``) for the granules."""
    import icechunk

    prefixes = list(prefixes)
    config = icechunk.RepositoryConfig.default()
    _containers(config, prefixes, credentials)
    repo = icechunk.Repository.create(storage(location, out_credentials), config,
                                      authorize_virtual_chunk_access=_authorise(prefixes, credentials))
    repo.save_config()
    return repo


def open_repo(location: str, *, credentials: Any, out_credentials: Any, prefixes: Iterable[str] = ()) -> Any:
    """The repository at ``location``, its containers authorised with ``credentials`` (and any of
    ``prefixes`` it lacks added to its config and saved)."""
    import icechunk

    store = storage(location, out_credentials)
    config = icechunk.Repository.fetch_config(store) or icechunk.RepositoryConfig.default()
    wanted = set((config.virtual_chunk_containers or {}).keys()) | set(prefixes)
    changed = _containers(config, wanted, credentials)
    repo = icechunk.Repository.open(store, config, authorize_virtual_chunk_access=_authorise(wanted, credentials))
    if changed:
        repo.save_config()
    return repo


def _objects(location: str, out_credentials: Any) -> list[dict[str, Any]]:
    import obstore

    bucket, prefix = split_url(location.rstrip("/"))
    return [m for batch in obstore.list(out_credentials.obstore(bucket), prefix=prefix.rstrip("/") + "/")
            for m in batch]


def prefix_nbytes(location: str, out_credentials: Any) -> int:
    """Bytes of every object below ``location`` (what the repository occupies)."""
    return sum(int(m["size"]) for m in _objects(location, out_credentials))


def delete_prefix(location: str, out_credentials: Any) -> None:
    """Delete every object below ``location`` (a repository this call created and could not finish)."""
    import obstore

    bucket, _ = split_url(location.rstrip("/"))
    paths = [m["path"] for m in _objects(location, out_credentials)]
    if paths:
        obstore.delete(out_credentials.obstore(bucket), paths)
