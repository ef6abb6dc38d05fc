"""A spatial index of HDF5 chunks, kept beside the untouched granules, that makes a subset cost what
the AOI's chunks cost.

HDF5 knows where each chunk of a dataset is (its chunk index: a B-tree of byte offsets) but not where
on Earth the rows of a chunk are. So every method so far reads whole beams. This method writes that
missing piece once, as one GeoParquet file for the collection:

**Build** (:func:`build`). For every granule and beam, the *windows* of the indexed group are the row
ranges of its chunks (ATL06 ``gtx/land_ice_segments``: 10,000 segments, ~200 km of track; ATL03
``gtx/heights``: 10,000 photons). For each window one index row holds

* ``footprint``: the window's track as a (Multi)LineString in lon/lat, simplified, with ``margin`` =
  the largest distance of any of its points from that line (degrees), so ``dwithin(footprint, aoi,
  margin)`` never misses a window with a point in the AOI; tracks crossing the antimeridian are split
  into pieces with longitudes in [-180, 180]; the GeoParquet ``bbox`` covering column is its bounds;
* ``h3_cells``: the H3 cells (resolution :data:`H3_RESOLUTION`) that overlap the footprint widened by
  its margin; ``h3`` is the cell of the window's middle point and the sort key;
* ``time_start``/``time_end`` (UTC) and the per-granule values every row needs (``rgt``, ``cycle``,
  ``epoch`` = ``atlas_sdp_gps_epoch``), so a query never reads them from the granule;
* for each indexed variable ``v``: ``offset:v``/``nbytes:v`` (the stored chunk's byte range in the
  object, from ``h5py``'s ``dsid.chunk_iter``), ``codec:v`` (dtype, row shape, filters as written,
  fill value: JSON, see :class:`~is2cloud.methods.ranges.Codec`) and, for COMPACT data and chunks of at
  most ``inline_bytes``, ``inline:v`` (the stored bytes themselves);
* ``granule``, ``url``, ``size``, ``etag``: the object the row points into. A query compares these
  with every response (and with the catalog record, when granules are given): a stale index is an
  error, never wrong rows.

For ATL03 the footprint of a photon window comes from the 20 m ``geolocation`` segments whose photons
(``ph_index_beg``, ``segment_ph_cnt``) fall in the window: their reference photons, widened by
:data:`ATL03_SEGMENT_MARGIN_M` (a photon lies within a segment of its reference photon), so the
photon coordinates themselves are never read to build the index.

The granule is read through a block cache (:class:`~is2cloud.methods.ranges.BlockFile`); objects up
to ``eager_bytes`` are fetched whole, in concurrent blocks, because the metadata of a non-paged HDF5
file is scattered over most of it. Rows are sorted by ``h3`` so row groups hold nearby windows and
their ``bbox`` statistics prune well. Appending granules to an existing index re-reads only the new
ones (and re-indexes a granule whose object changed).

**Query** (:func:`subset`). Row groups whose ``bbox`` statistics miss the AOI are skipped, then rows
by ``bbox``, ``h3_cells`` and ``footprint``; the chunks of the requested variables in the surviving
windows become byte ranges, adjacent ones are coalesced, fetched concurrently with obstore (one GET
each, ETag and size checked), decoded with numcodecs and clipped with :meth:`is2cloud.aoi.AOI.contains`.
ATL06 gives the canonical schema (:mod:`is2cloud.methods.schema`), the same rows as the baseline.

>>> idx = prepare(find_granules(aoi, "ATL06"))     # build(...) into default_index_url("ATL06")  # doctest: +SKIP
>>> gdf = subset(idx, aoi)                          # or subset(idx.location, aoi)                # doctest: +SKIP

Modules (each imports only those above it):

* :mod:`.errors`: the error classes; :mod:`.products`: groups, coordinates, default variables of ATL06/ATL03;
* :mod:`.footprints`: Douglas-Peucker footprints, margins, antimeridian pieces, H3 cover;
* :mod:`.windows`: where a dataset's window rows are stored (chunks, codecs, filters), ATL03 photon windows;
* :mod:`.granule`: :func:`index_granule`; :mod:`.indexfile`: :class:`ChunkIndex`, metadata, reading the file;
* :mod:`.builder`: :func:`build` (and append); :mod:`.planner`: :func:`plan`, :class:`QueryPlan`;
* :mod:`.fetch`: :func:`execute`; :mod:`.query`: :func:`subset`; :mod:`.bench`: :func:`benchmark`.
"""

from __future__ import annotations

from is2cloud.methods.chunkindex.bench import benchmark
from is2cloud.methods.chunkindex.builder import build, prepare
from is2cloud.methods.chunkindex.errors import ChunkIndexError, OutsideIndexError, StaleIndexError, WrongProductError
from is2cloud.methods.chunkindex.footprints import H3_RESOLUTION, h3_cover, window_footprint
from is2cloud.methods.chunkindex.granule import index_granule
from is2cloud.methods.chunkindex.indexfile import FORMAT, ChunkIndex, default_index_url, read_index
from is2cloud.methods.chunkindex.planner import QueryPlan, plan
from is2cloud.methods.chunkindex.products import ATL03_VARIABLES, DEFAULT_VARIABLES, GROUPS
from is2cloud.methods.chunkindex.query import subset

# also importable from the package, as from the module it was before the split
from is2cloud.methods.chunkindex.builder import ROW_GROUP_ROWS  # noqa: F401
from is2cloud.methods.chunkindex.fetch import execute  # noqa: F401
from is2cloud.methods.chunkindex.footprints import (  # noqa: F401
    H3_ALLOWANCE_M,
    H3_SORT_RESOLUTION,
    MARGIN_EPS_DEG,
    TOLERANCE_DEG,
    douglas_peucker,
)
from is2cloud.methods.chunkindex.granule import BLOCK_BYTES, EAGER_BYTES, INLINE_BYTES  # noqa: F401
from is2cloud.methods.chunkindex.indexfile import META_KEY  # noqa: F401
from is2cloud.methods.chunkindex.planner import MAX_OVERFETCH  # noqa: F401
from is2cloud.methods.chunkindex.products import COORDINATES, EPOCH, ORBIT  # noqa: F401
from is2cloud.methods.chunkindex.windows import ATL03_SEGMENT_MARGIN_M, WINDOW_ROWS_CONTIGUOUS  # noqa: F401

NAME = "chunkindex"
TITLE = "chunk index"
DESCRIPTION = "a GeoParquet index of every HDF5 chunk's footprint and byte range; fetch only the AOI's chunks"
CHAPTER = "notebooks/07_chunk_index"

__all__ = ["CHAPTER", "DESCRIPTION", "NAME", "TITLE", "prepare", "ATL03_VARIABLES", "DEFAULT_VARIABLES", "FORMAT", "GROUPS", "H3_RESOLUTION", "ChunkIndex",
           "ChunkIndexError", "OutsideIndexError", "QueryPlan", "StaleIndexError", "WrongProductError",
           "benchmark", "build", "default_index_url", "h3_cover", "index_granule", "plan", "read_index",
           "subset", "window_footprint"]
