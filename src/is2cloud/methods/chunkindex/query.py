"""The query as one call, :func:`subset`: plan (building an index in memory first when given only
granules), optionally HEAD every granule of the index, then execute."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Literal

import pandas as pd

from is2cloud.aoi import load_aoi
from is2cloud.methods.chunkindex.builder import build
from is2cloud.methods.chunkindex.errors import StaleIndexError
from is2cloud.methods.chunkindex.fetch import execute
from is2cloud.methods.chunkindex.indexfile import ChunkIndex, _open_index
from is2cloud.methods.chunkindex.planner import MAX_OVERFETCH, _object_of, plan
from is2cloud.methods.chunkindex.products import _granule_list
from is2cloud.methods.ranges import ObjectChangedError, ObjectMissingError, check_objects


def _verify_all(handle: Any, meta: dict[str, Any], granules: set[str] | None, credentials: Any,
                concurrency: int) -> None:
    """HEAD every granule object of the index (or of ``granules``) and compare size and ETag."""
    table = (pd.DataFrame(handle.frame)[["granule", "url", "size", "etag"]] if isinstance(handle, ChunkIndex)
             else handle.read(columns=["granule", "url", "size", "etag"]).to_pandas()).drop_duplicates("granule")
    if granules is not None:
        table = table[table["granule"].isin(granules)]
    objs = [_object_of(u, s, e) for u, s, e in zip(table["url"], table["size"], table["etag"])]
    local = [o for o in objs if not o.bucket]
    for o in local:
        if not os.path.exists(o.key) or os.stat(o.key).st_size != o.size:
            raise StaleIndexError(f"{o.name}: the file {o.key} is missing or changed: the chunk index is stale")
    remote = [o for o in objs if o.bucket]
    if not remote:
        return
    if credentials is None:
        from is2cloud.access import get_credentials

        credentials = get_credentials("read")
    try:
        check_objects(credentials, remote, concurrency=concurrency)
    except ObjectMissingError as exc:
        raise StaleIndexError(f"{exc}: the chunk index is stale") from None
    except ObjectChangedError as exc:
        raise StaleIndexError(f"{exc}: the chunk index is stale; rebuild it") from None


def subset(granules_or_index: Any, aoi: Any, variables: Iterable[str] | None = None, *,
           credentials: Any = None, out_credentials: Any = None, client: Any = "sync",
           progress: bool | None = None, index: Any = None, product: str | None = None, temporal: Any = None,
           verify: Literal["touched", "all"] = "touched", concurrency: int = 64, max_gap: int = 4096,
           max_overfetch: float = MAX_OVERFETCH):  # -> geopandas.GeoDataFrame
    """Rows of ``aoi`` read through a chunk index: only the chunks of the windows that meet the AOI.

    ``granules_or_index``: a chunk index (its location: local path or ``s3://`` URL, or a
    :class:`ChunkIndex`) to query every granule in it, or granules (``earthaccess.DataGranule``
    records, ``s3://`` URLs or local paths) together with ``index=`` (without an index one is built in
    memory first, which costs a read of every granule). ``variables``: below the indexed group
    (default: the canonical ATL06 columns, or :data:`ATL03_VARIABLES`); ATL06 returns the canonical
    schema with extras after ``geometry``, the same rows as the baseline; ATL03 one row per photon.
    ``temporal``: (start, end) keeps rows in that time range. ``max_gap``/``max_overfetch``: how chunks are
    coalesced into ranges (see :func:`plan`). ``credentials`` read the granules,
    ``out_credentials`` the index, which lives in your bucket (defaults ``get_credentials("read")`` and
    ``("write")``). ``client``/``progress``: only used when an index is built in memory first.
    ``verify="touched"`` checks the ETag and size of every object a GET reads; ``"all"`` also HEADs
    every granule of the index first (a changed granule the AOI no longer reaches is caught too).

    Raises :class:`StaleIndexError` (naming the granule) when an object changed, is missing, or a given
    granule is not in the index; :class:`WrongProductError` for an index of another product;
    :class:`OutsideIndexError` for an AOI outside the index; :class:`ChunkIndexError` otherwise.
    ``result.attrs["chunkindex"]`` summarises the pruning and the fetch (:meth:`QueryPlan.summary`).
    """
    from is2cloud.catalog import NoGranulesError

    area = load_aoi(aoi)
    if verify not in ("touched", "all"):
        raise ValueError(f"verify must be 'touched' or 'all', not {verify!r}")
    granules: list[Any] | None = None
    if isinstance(granules_or_index, ChunkIndex) or _looks_like_index(granules_or_index):
        source = granules_or_index
    else:
        granules = _granule_list(granules_or_index)
        if not granules:
            raise NoGranulesError(f"no granules to subset for AOI {area.name!r}: the list is empty")
        source = index if index is not None else build(granules, product=product, variables=None,
                                                       credentials=credentials, client=client, progress=progress)
    qplan = plan(source, area, variables, granules=granules, product=product, temporal=temporal,
                 out_credentials=out_credentials, max_gap=max_gap, max_overfetch=max_overfetch)
    if verify == "all":
        meta, handle, _ = _open_index(source, out_credentials)
        from is2cloud.parallel import granule_name

        _verify_all(handle, meta, None if granules is None else {granule_name(g) for g in granules}, credentials,
                    concurrency)
    frame = execute(qplan, credentials=credentials, concurrency=concurrency)
    frame.attrs["chunkindex"] = qplan.summary()
    return frame


def _looks_like_index(obj: Any) -> bool:
    if isinstance(obj, (str, os.PathLike)):
        return os.fspath(obj).endswith((".parquet", ".geoparquet", ".pq"))
    return False
