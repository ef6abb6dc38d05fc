"""Building and appending to a chunk index: index the granules (in parallel), merge with the index
already there (skipping unchanged granules, re-indexing changed ones) and write it atomically."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any, Literal

import pandas as pd

from is2cloud.methods.chunkindex.errors import ChunkIndexError, StaleIndexError, WrongProductError
from is2cloud.methods.chunkindex.granule import INLINE_BYTES, index_granule
from is2cloud.methods.chunkindex.indexfile import (
    META_KEY,
    ChunkIndex,
    _exists,
    _meta,
    _normalize,
    _object_size,
    _sorted,
    _to_gdf,
    default_index_url,
    read_index,
)
from is2cloud.methods.chunkindex.products import GROUPS, _granule_list, _product_of

ROW_GROUP_ROWS = 512


def build(granules: Iterable[Any], out: str | os.PathLike[str] | None = None, *, product: str | None = None,
          variables: Any = None, credentials: Any = None, out_credentials: Any = None, client: Any = None,
          mode: Literal["append", "overwrite"] = "append", inline_bytes: int = INLINE_BYTES,
          row_group_rows: int = ROW_GROUP_ROWS, progress: bool | None = None) -> ChunkIndex:
    """Index ``granules`` (``earthaccess.DataGranule`` records, ``s3://`` URLs or local paths) and, with
    ``out`` (a local path or ``s3://`` URL), write the index there as GeoParquet, atomically.

    ``product``: ATL06 or ATL03 (default: from the granule names). ``variables``: below the indexed group
    (``gtx/land_ice_segments`` or ``gtx/heights``); default every dataset directly in it, ``"all"`` also
    those of its subgroups, or a list (the coordinates and ``delta_time`` are always indexed).
    ``mode="append"`` (default) keeps an existing index at ``out``: granules already in it are skipped
    after one HEAD if their object is unchanged, re-indexed if it changed; ``"overwrite"`` starts afresh.
    ``credentials`` read the granules (default ``get_credentials("read")``); ``out_credentials`` write the
    index (default ``get_credentials("write")``). ``client``: see :func:`is2cloud.parallel.map_granules`.
    Raises :class:`ChunkIndexError` (naming the granule) when a granule cannot be indexed,
    :class:`WrongProductError` when granules or the existing index are of another product.
    """
    from is2cloud.catalog import NoGranulesError
    from is2cloud.geoparquet import refuse_archive_bucket, write_geoparquet
    from is2cloud.methods.baseline import granule_source
    from is2cloud.parallel import GranuleError, map_granules

    t0 = time.perf_counter()
    items = _granule_list(granules)
    if not items:
        raise NoGranulesError("no granules to index: the list is empty (did the search find nothing?)")
    if mode not in ("append", "overwrite"):
        raise ValueError(f"mode must be 'append' or 'overwrite', not {mode!r}")
    sources = [granule_source(g) for g in items]
    products = {p for p in (_product_of(s.name) for s in sources) if p}
    if product is not None:
        product = str(product).upper()
        if product not in GROUPS:
            raise ValueError(f"product must be one of {', '.join(GROUPS)}, not {product!r}")
        wrong = [s.name for s in sources if _product_of(s.name) not in (None, product)]
        if wrong:
            raise WrongProductError(f"{len(wrong)} granules are not {product}: {', '.join(wrong[:5])}: an index "
                                    "holds one product")
    elif len(products) > 1:
        raise WrongProductError(f"the granules mix products {sorted(products)}: an index holds one product")
    else:
        product = next(iter(products), None)
    if credentials is None and any(s.url.startswith("s3://") for s in sources):
        from is2cloud.access import get_credentials

        credentials = get_credentials("read")
    location = os.fspath(out) if out is not None else None
    if location:
        refuse_archive_bucket(location, "the chunk index")
    if location and location.startswith("s3://") and out_credentials is None:
        from is2cloud.access import get_credentials

        out_credentials = get_credentials("write")
    existing: ChunkIndex | None = None
    if location and mode == "append" and _exists(location, out_credentials):
        existing = read_index(location, credentials=out_credentials)
        if product and existing.product != product:
            raise WrongProductError(f"{location} indexes {existing.product} granules, not {product}: an index "
                                    "holds one product (use another location, or mode='overwrite')")
        product = product or existing.product
    known = {}
    if existing is not None and len(existing):
        first = existing.frame.drop_duplicates("granule")
        known = dict(zip(first["granule"], zip(first["size"].astype(int), first["etag"])))
    try:
        results = map_granules(index_granule, sources, client, progress=progress, label="chunk index",
                               product=product, variables=variables, credentials=credentials, known=known,
                               inline_bytes=inline_bytes)
    except GranuleError as exc:
        # keep the kind of error when every granule failed the same way (a stale record, another product)
        kinds = {f.error_type for f in exc.failures}
        cls = {"StaleIndexError": StaleIndexError, "WrongProductError": WrongProductError}.get(
            kinds.pop() if len(kinds) == 1 else "", ChunkIndexError)
        raise cls(str(exc)) from None
    new = [r for r in results if not r.get("unchanged")]
    found = {r["product"] for r in new}
    if len(found) > 1:
        raise WrongProductError(f"the granules mix products {sorted(found)}: an index holds one product")
    product = product or next(iter(found), None)
    if product is None:
        raise ChunkIndexError("cannot tell the product of the granules")
    used: list[str] = list(existing.variables) if existing is not None else []
    for r in new:
        used.extend(v for v in r["variables"] if v not in used)
    if existing is not None and not new:  # every granule is already indexed and unchanged: nothing to write
        existing.stats = {"granules": len(results), "added": 0, "replaced": [], "unchanged": len(results),
                          "gets": 0, "bytes_read": 0, "seconds": time.perf_counter() - t0,
                          "nbytes": _object_size(location, out_credentials)}
        return existing
    frames = [_normalize(r["rows"], used) for r in new if len(r["rows"])]
    replaced = sorted({r["granule"] for r in new} & set(known))
    if existing is not None and len(existing):
        keep = existing.frame[~existing.frame["granule"].isin({r["granule"] for r in new})]
        frames.insert(0, _normalize(pd.DataFrame(keep), used))
    frame = _sorted(pd.concat(frames, ignore_index=True)) if frames else _normalize(
        pd.DataFrame(columns=["granule", "url", "size", "etag", "track_id", "window", "row_start", "row_stop",
                              "time_start", "time_end", "rgt", "cycle", "epoch", "margin", "h3", "h3_cells",
                              "footprint"]), [])
    meta = _meta(product, used, frame, existing.meta if existing is not None else None)
    gdf = _to_gdf(frame)
    stats = {"granules": len(results), "added": len(new) - len(replaced), "replaced": replaced,
             "unchanged": len(results) - len(new), "gets": sum(r["gets"] for r in results),
             "bytes_read": sum(r["bytes"] for r in results), "seconds": time.perf_counter() - t0}
    if location:
        write_geoparquet(gdf, location, credentials=out_credentials, metadata={META_KEY: meta},
                         row_group_size=row_group_rows)
        stats["nbytes"] = _object_size(location, out_credentials)
        stats["seconds"] = time.perf_counter() - t0
    return ChunkIndex(gdf, meta, location, stats)


def prepare(granules: Iterable[Any], *, out: str | os.PathLike[str] | None = None, credentials: Any = None,
            out_credentials: Any = None, client: Any = None, progress: bool | None = None,
            mode: Literal["append", "overwrite"] = "append", **options: Any) -> ChunkIndex:
    """The method protocol's one-time step: :func:`build` the index of ``granules`` into ``out``
    (default :func:`~is2cloud.methods.chunkindex.indexfile.default_index_url` of their product, version 006)
    and return it. ``options`` go to :func:`build` (``product``, ``variables``, ``inline_bytes``, ...)."""
    if out is None:
        items = _granule_list(granules)
        from is2cloud.methods.baseline import granule_source

        products = {p for p in (_product_of(granule_source(g).name) for g in items) if p}
        out = default_index_url(options.get("product") or (products.pop() if len(products) == 1 else "ATL06"))
        granules = items
    return build(granules, out, credentials=credentials, out_credentials=out_credentials, client=client,
                 mode=mode, progress=progress, **options)
