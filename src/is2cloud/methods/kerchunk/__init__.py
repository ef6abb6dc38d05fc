"""Notebook 05's method: kerchunk reference sets of the granules (one JSON set per granule in your
bucket), read lazily through fsspec's reference filesystem.

**Prepare** (:func:`prepare`): ``kerchunk.hdf.SingleHdf5ToZarr`` walks each granule's HDF5 metadata
through s3fs with a chosen open configuration (default: earthaccess's block cache) and writes, per
chunk, its byte range in the untouched object; COMPACT datasets are inlined (the threshold is computed
from the granule's largest one, :func:`compact_threshold`), never read back as zeros. The references
record the granule's URL, size, ETag and footprint; a manifest (``references.json``) lists them.

**Subset** (:func:`subset`): one HEAD per granule (references older than their granule are an error),
then :mod:`is2cloud.methods.refread` on the reference sets (exact byte ranges of the chunks that matter):
the same rows as the baseline.

**Preparation cost** (:func:`preparation_costs`): h5cloud's published call, no cache, a block cache,
a whole-object read and VirtualiZarr's ``HDFParser``, side by side on one granule; :func:`cache_of`
shows which cache a file really got.

>>> refs = prepare(find_granules(aoi, "ATL06"))        # -> ReferenceStore (default_location())  # doctest: +SKIP
>>> gdf = subset(refs, aoi)                             # or subset(refs.location, aoi)            # doctest: +SKIP
"""

from __future__ import annotations

from is2cloud.methods.kerchunk.bench import benchmark
from is2cloud.methods.kerchunk.costs import COST_CONFIGS, FLOOR, cache_of, preparation_costs
from is2cloud.methods.kerchunk.entries import reference_table
from is2cloud.methods.kerchunk.errors import (
    CompactVariableError,
    MissingReferencesError,
    OutsideReferencesError,
    ReferenceError_,
    StaleReferencesError,
)
from is2cloud.methods.kerchunk.refs import (
    FORMAT,
    MANIFEST,
    OPEN_CONFIGS,
    ReferenceStore,
    compact_threshold,
    default_location,
    open_options,
    prepare,
    read_manifest,
    subset,
    translate,
)

NAME = "kerchunk"
TITLE = "kerchunk references"
DESCRIPTION = "kerchunk reference sets (one JSON per granule) of the HDF5 chunks; read the AOI's chunks"
CHAPTER = "notebooks/05_kerchunk"

__all__ = ["CHAPTER", "COST_CONFIGS", "DESCRIPTION", "FLOOR", "FORMAT", "MANIFEST", "NAME", "OPEN_CONFIGS", "TITLE",
           "CompactVariableError", "MissingReferencesError", "OutsideReferencesError", "ReferenceError_",
           "ReferenceStore", "StaleReferencesError", "benchmark", "cache_of", "compact_threshold",
           "default_location", "open_options", "prepare", "preparation_costs", "read_manifest",
           "reference_table", "subset", "translate"]
