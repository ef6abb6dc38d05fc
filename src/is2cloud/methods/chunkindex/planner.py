"""Planning a query: prune the index (row groups by ``bbox`` statistics, then rows by ``bbox``, time,
H3 cells and footprint, and the granules given), then turn the chunks of the surviving windows into
pieces and coalesced byte ranges (:class:`QueryPlan`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely

from is2cloud.aoi import AOI, load_aoi
from is2cloud.geoparquet import boxes_meet, row_groups_meeting
from is2cloud.methods.chunkindex.errors import (
    ChunkIndexError,
    OutsideIndexError,
    StaleIndexError,
    WrongProductError,
)
from is2cloud.methods.chunkindex.footprints import H3_RESOLUTION, h3_cover
from is2cloud.methods.chunkindex.indexfile import ChunkIndex, _open_index, _var_columns
from is2cloud.methods.chunkindex.products import ATL03_VARIABLES, DEFAULT_VARIABLES, GROUPS, _product_of
from is2cloud.methods.ranges import ObjectId, RangeRequest, coalesce, split_url

MAX_OVERFETCH = 0.1          # coalescing gaps may add at most this fraction of the chunk bytes to a query
_MAX_MARGIN_DEFAULT = 0.01   # the bbox allowance for an index whose metadata lacks max_margin
_BASE_COLUMNS = ("granule", "url", "size", "etag", "track_id", "window", "row_start", "row_stop", "time_start",
                 "time_end", "rgt", "cycle", "epoch", "margin", "h3_cells", "footprint")


@dataclass
class QueryPlan:
    """What a query will fetch: the index rows (windows) that survive each pruning step, every piece
    (window x variable) and where its bytes come from, and the coalesced byte ranges (one GET each).

    ``steps``: how many windows were left after each step (``index``: rows in the row groups read,
    ``bbox``, ``time``, ``h3``, ``footprint``, ``granule_filter``: the granules given, if any), and the
    row groups read of all. :meth:`summary` adds the pieces, ranges and bytes to fetch and ``granules``: how
    many granules the windows left come from.
    """

    product: str
    variables: tuple[str, ...]
    aoi: AOI
    windows: pd.DataFrame
    pieces: list[tuple[int, str, str, str, Any]]  # (window, variable, codec json, kind, payload)
    requests: list[RangeRequest]
    steps: dict[str, int]
    index_location: str | None = None
    temporal: tuple[Any, Any] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes the ranges will fetch from the granules."""
        return sum(r.nbytes for r in self.requests)

    @property
    def chunk_bytes(self) -> int:
        """Stored bytes of the pieces to fetch (the ranges minus coalescing gaps) and inlined."""
        return sum(p[4][2] if p[3] == "range" else (len(p[4]) if p[3] == "inline" else 0) for p in self.pieces)

    def summary(self) -> dict[str, Any]:
        kinds = pd.Series([p[3] for p in self.pieces]).value_counts().to_dict() if self.pieces else {}
        return {**self.steps, "pieces": len(self.pieces), "inline_pieces": int(kinds.get("inline", 0)),
                "fill_pieces": int(kinds.get("fill", 0)), "ranges": len(self.requests), "range_bytes": self.nbytes,
                "granules": int(self.windows["granule"].nunique()) if len(self.windows) else 0}


def _outside(aoi: AOI, extent: Sequence[float] | None, where: str,
             extents: Sequence[Sequence[float]] | None = None, pad: float = 0.0) -> None:
    """OutsideIndexError unless the AOI meets the index's extent boxes widened by ``pad`` (the largest
    margin: a point lies within its window's margin of the footprint, not always inside its bounds)."""
    if extent is None:
        raise OutsideIndexError(f"the chunk index {where} is empty: the AOI {aoi.name!r} is outside it")
    boxes = extents or [extent]
    if not any(bool(boxes_meet(b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad, aoi.bboxes)) for b in boxes):
        w, s, e, n = aoi.bounds
        raise OutsideIndexError(
            f"the AOI {aoi.name!r} (W {w:.4f}, S {s:.4f}, E {e:.4f}, N {n:.4f}) is outside the chunk index {where}, "
            f"which covers W {extent[0]:.4f}, S {extent[1]:.4f}, E {extent[2]:.4f}, N {extent[3]:.4f}: index the "
            "granules over this AOI first (check also that coordinates are longitude, latitude)")


def _candidates(handle: Any, meta: dict[str, Any], where: str, aoi: AOI, variables: Sequence[str]
                ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Index rows whose bbox meets the AOI (row groups pruned by statistics when reading a file)."""
    # Footprint bounds (the bbox column, its row-group statistics, the extent) are widened by the margin:
    # Douglas-Peucker may drop a vertex that bulges past the bounds of the simplified line.
    pad = float(meta.get("max_margin", _MAX_MARGIN_DEFAULT))
    padded = [(w - pad, s - pad, e + pad, n + pad) for w, s, e, n in aoi.bboxes]
    _outside(aoi, meta.get("extent"), where, meta.get("extents"), pad)
    if isinstance(handle, ChunkIndex):
        frame = pd.DataFrame(handle.frame)
        steps = {"row_groups": 1, "row_groups_read": 1, "index": len(frame)}
    else:
        names = set(handle.schema_arrow.names)
        missing = [v for v in variables if f"offset:{v}" not in names]
        cols = [c for c in _BASE_COLUMNS if c in names] + ["bbox"]
        for v in variables:
            cols += [c for c in _var_columns(v) if c in names]
        if missing:
            frame = pd.DataFrame(columns=cols)
            steps = {}
        else:
            groups = row_groups_meeting(handle, "bbox", padded)
            table = handle.read_row_groups(groups, columns=cols)
            frame = table.drop_columns(["bbox"]).to_pandas()
            frame["footprint"] = shapely.from_wkb(frame["footprint"].to_numpy(dtype=object))
            steps = {"row_groups": handle.metadata.num_row_groups, "row_groups_read": len(groups),
                     "index": len(frame)}
    missing = [v for v in variables if f"offset:{v}" not in frame.columns]
    if missing:
        raise ChunkIndexError(f"variables {missing} are not in the chunk index {where} (it has "
                              f"{meta.get('variables')}); rebuild it with variables=... including them")
    if len(frame):
        b = shapely.bounds(np.asarray(frame["footprint"].values, dtype=object))
        m = frame["margin"].to_numpy("f8")
        frame = frame[boxes_meet(b[:, 0] - m, b[:, 1] - m, b[:, 2] + m, b[:, 3] + m, aoi.bboxes)]
    steps["bbox"] = len(frame)
    return frame.reset_index(drop=True), steps


def _h3_filter(frame: pd.DataFrame, aoi: AOI, res: int) -> pd.DataFrame:
    if not len(frame):
        return frame
    cover = h3_cover(aoi.geometry, 0.0, res)
    if cover is None:  # a very large AOI: the footprint test alone decides
        return frame
    cells = [np.asarray(c, dtype="u8") for c in frame["h3_cells"]]
    lengths = np.array([len(c) for c in cells])
    flat = np.concatenate(cells) if cells else np.array([], dtype="u8")
    hit = np.isin(flat, np.fromiter(cover, dtype="u8", count=len(cover)))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    keep = np.zeros(len(frame), dtype=bool)
    nonempty = lengths > 0
    keep[nonempty] = np.add.reduceat(hit, starts[nonempty]) > 0
    return frame[keep].reset_index(drop=True)


def _granule_table(handle: Any) -> pd.DataFrame:
    """granule, size, etag of every granule in the index (reads three small columns of a file)."""
    if isinstance(handle, ChunkIndex):
        t = pd.DataFrame(handle.frame)[["granule", "size", "etag"]]
    else:
        t = handle.read(columns=["granule", "size", "etag"]).to_pandas()
    return t.drop_duplicates("granule").set_index("granule")


def _granule_filter(frame: pd.DataFrame, granules: Sequence[Any], where: str | None, handle: Any) -> pd.DataFrame:
    """Keep the windows of ``granules``; each must be in the index and match its catalog record (size,
    MD5): a stale index is detected before anything is fetched."""
    from is2cloud.methods.baseline import granule_source

    sources = [granule_source(g) for g in granules]
    info = _granule_table(handle)
    absent = [s.name for s in sources if s.name not in info.index]
    if absent:
        raise StaleIndexError(f"{len(absent)} granules are not in the chunk index {where or ''}: "
                              f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}; add them with "
                              "chunkindex.build(granules, index_location) (it appends)")
    for s in sources:
        size, etag = int(info.at[s.name, "size"]), str(info.at[s.name, "etag"])
        if s.size is not None and int(s.size) != size:
            raise StaleIndexError(f"{s.name}: the catalog says the object has {s.size} bytes, the chunk index "
                                  f"{where or ''} was built from {size} bytes: the index is stale; rebuild it")
        if s.md5 and re.fullmatch(r"[0-9a-f]{32}", etag) and s.md5.lower() != etag:
            raise StaleIndexError(f"{s.name}: the catalog's MD5 {s.md5} is not the ETag {etag} the chunk index "
                                  f"{where or ''} was built from: the index is stale; rebuild it")
    names = {s.name for s in sources}
    return frame[frame["granule"].isin(names)].reset_index(drop=True)


def _object_of(url: str, size: int, etag: str) -> ObjectId:
    url = str(url)
    if url.startswith("s3://"):
        bucket, key = split_url(url)
        return ObjectId(bucket, key, int(size), str(etag))
    return ObjectId("", url, int(size), str(etag))


def _expected_product(product: str | None, granules: Sequence[Any] | None) -> str | None:
    if product is not None:
        product = str(product).upper()
        if product not in GROUPS:
            raise ValueError(f"product must be one of {', '.join(GROUPS)}, not {product!r}")
    if granules:
        from is2cloud.parallel import granule_name

        found = {p for p in (_product_of(granule_name(g)) for g in granules) if p}
        if len(found) > 1:
            raise WrongProductError(f"the granules mix products {sorted(found)}")
        if found and product and found != {product}:
            raise WrongProductError(f"the granules are {found.pop()}, not {product}")
        product = product or next(iter(found), None)
    return product


def plan(index: Any, aoi: Any, variables: Iterable[str] | None = None, *, granules: Sequence[Any] | None = None,
         product: str | None = None, temporal: Any = None, out_credentials: Any = None,
         max_gap: int = 4096, max_range_bytes: int = 16 * 2**20, max_overfetch: float = MAX_OVERFETCH
         ) -> QueryPlan:
    """Prune the index for ``aoi`` and plan the fetch: see :class:`QueryPlan` and :func:`subset`.

    Chunks of one object at most ``max_gap`` bytes apart are fetched in one range, smallest gaps first,
    as long as the gaps add at most ``max_overfetch`` of the chunks' bytes (the HDF5 metadata between the
    chunks of neighbouring datasets is ~2 KB: worth a GET for small chunks, not for large ones)."""
    from is2cloud.catalog import parse_temporal

    area = load_aoi(aoi)
    product = _expected_product(product, granules)
    meta, handle, where = _open_index(index, out_credentials)
    if product is not None and meta.get("product") != product:
        raise WrongProductError(f"the chunk index {where} indexes {meta.get('product')} granules "
                                f"({meta.get('group')}), not {product}: build an index for {product}")
    product = str(meta["product"])
    variables = _query_variables(variables, product)
    frame, steps = _candidates(handle, meta, where, area, variables)
    start, end = parse_temporal(temporal)
    if len(frame) and (start is not None or end is not None):
        ok = np.ones(len(frame), dtype=bool)
        times_end = pd.to_datetime(frame["time_end"], utc=True)
        times_start = pd.to_datetime(frame["time_start"], utc=True)
        if start is not None:
            ok &= (times_end >= pd.Timestamp(start)).to_numpy()
        if end is not None:
            ok &= (times_start <= pd.Timestamp(end)).to_numpy()
        frame = frame[ok].reset_index(drop=True)
    steps["time"] = len(frame)
    frame = _h3_filter(frame, area, int(meta.get("h3_resolution", H3_RESOLUTION)))
    steps["h3"] = len(frame)
    if len(frame):
        geom = area.geometry
        shapely.prepare(geom)
        keep = shapely.dwithin(np.asarray(frame["footprint"].values, dtype=object), geom,
                               frame["margin"].to_numpy("f8"))
        frame = frame[keep].reset_index(drop=True)
    steps["footprint"] = len(frame)
    if granules is not None:
        frame = _granule_filter(frame, granules, where, handle)
    steps["granule_filter"] = len(frame)
    pieces, requests = _pieces(frame, variables, product, max_gap, max_range_bytes, max_overfetch)
    return QueryPlan(product, tuple(variables), area, frame, pieces, requests, steps,
                     None if isinstance(handle, ChunkIndex) else where,
                     None if (start is None and end is None) else (start, end))


def _pieces(frame: pd.DataFrame, variables: Sequence[str], product: str, max_gap: int, max_range_bytes: int,
            max_overfetch: float = 0.0
            ) -> tuple[list[tuple[int, str, str, str, Any]], list[RangeRequest]]:
    """Every (window, variable) piece: inline bytes, fill value, or a slice of a coalesced range."""
    objs = [_object_of(url, size, etag) for url, size, etag in zip(frame["url"], frame["size"], frame["etag"])]
    pieces: list[tuple[int, str, str, str, Any]] = []
    wanted: dict[ObjectId, list[tuple[int, int, int]]] = {}  # object -> (piece index, offset, nbytes)
    for v in variables:
        off_c, nb_c, codec_c, inline_c = _var_columns(v)
        codecs = frame[codec_c].to_numpy(dtype=object)
        offsets = frame[off_c].to_numpy(dtype=object)
        sizes = frame[nb_c].to_numpy(dtype=object)
        blobs = frame[inline_c].to_numpy(dtype=object) if inline_c in frame.columns else [None] * len(frame)
        for w in range(len(frame)):
            codec = codecs[w]
            if not isinstance(codec, str):
                raise ChunkIndexError(f"{frame['granule'].iat[w]}: {frame['track_id'].iat[w]}/{GROUPS[product]}/{v} "
                                      "is not in this granule")
            blob = blobs[w]
            if isinstance(blob, (bytes, bytearray, memoryview)):
                pieces.append((w, v, codec, "inline", bytes(blob)))
            elif int(offsets[w]) < 0:
                pieces.append((w, v, codec, "fill", None))
            else:
                wanted.setdefault(objs[w], []).append((len(pieces), int(offsets[w]), int(sizes[w])))
                pieces.append((w, v, codec, "range", None))
    requests: list[RangeRequest] = []
    for obj, items in wanted.items():
        ranges = coalesce([(o, o + n) for _, o, n in items], max_gap=max_gap, max_size=max_range_bytes,
                          max_extra=int(max_overfetch * sum(n for _, _, n in items)))
        starts = np.array([a for a, _ in ranges])
        base = len(requests)
        requests += [RangeRequest(obj, a, b) for a, b in ranges]
        for p, o, n in items:
            r = int(np.searchsorted(starts, o, side="right")) - 1
            w, v, codec, _kind, _ = pieces[p]
            pieces[p] = (w, v, codec, "range", (base + r, o - ranges[r][0], n))
    return pieces, requests


def _query_variables(variables: Iterable[str] | None, product: str) -> tuple[str, ...]:
    from is2cloud.methods.baseline import check_variables

    if variables is None:
        variables = ATL03_VARIABLES if product == "ATL03" else DEFAULT_VARIABLES
    if isinstance(variables, str):
        variables = [variables]
    variables = [v.strip("/") for v in variables]
    if product == "ATL03":
        return tuple(dict.fromkeys(["delta_time", "lat_ph", "lon_ph", *variables]))
    return check_variables(variables)
