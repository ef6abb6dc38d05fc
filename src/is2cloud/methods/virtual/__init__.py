"""Notebook 04's method: a virtual Zarr store of the granules (VirtualiZarr references, from NSIDC's
DMR++ sidecars or from the HDF5 files), persisted as one Icechunk repository, read lazily.

**Prepare** (:func:`prepare`): per granule, VirtualiZarr builds Zarr arrays whose chunks are byte
ranges in the untouched HDF5 object. From the DMR++ sidecar (``<granule URL>.dmrpp``) when VirtualiZarr
can parse it, so no byte of the granule is read; otherwise from the HDF5 object with ``HDFParser`` (one
concurrent whole-object read of a moderate granule), with a warning naming the granule, as earthaccess
falls back. Granules cannot be concatenated along time (their arrays end in partial chunks), so each
is one group of one Icechunk repository in your bucket, holding each beam's ``gtx/land_ice_segments``,
the granule scalars and the granule's URL, size, ETag and footprint; Icechunk's virtual chunk
containers (one per archive bucket) are authorised with the read credentials.

**Subset** (:func:`subset`): one HEAD per granule (a store older than a granule it covers is an
error), then :mod:`is2cloud.methods.refread` on the chunk references of the store's manifests: the beams'
latitude and longitude whole, the rows inside the AOI, and only the chunks of the other variables that
hold them, as coalesced exact byte ranges. The same rows as the baseline.

>>> store = prepare(find_granules(aoi, "ATL06"))       # -> VirtualStore (default_location())  # doctest: +SKIP
>>> gdf = subset(store, aoi)                            # or subset(store.location, aoi)         # doctest: +SKIP

Modules: :mod:`.errors`; :mod:`.repo` (the Icechunk repository on S3); :mod:`.sidecar` (DMR++ or HDF5
to the groups kept); :mod:`.store` (:func:`prepare`, :func:`subset`); :mod:`.bench` (:func:`benchmark`).
"""

from __future__ import annotations

from is2cloud.methods.virtual.bench import benchmark
from is2cloud.methods.virtual.errors import (
    CompactVariableError,
    OutsideStoreError,
    SidecarError,
    StaleStoreError,
    VirtualStoreError,
)
from is2cloud.dmrpp import sidecar_url
from is2cloud.methods.virtual.sidecar import parse_granule
from is2cloud.methods.virtual.store import FORMAT, VirtualStore, default_location, open_store, prepare, subset

NAME = "virtual"
TITLE = "DMR++ / VirtualiZarr"
DESCRIPTION = ("virtual Zarr references to the HDF5 chunks (from DMR++ sidecars, or HDFParser), one Icechunk "
               "group per granule; read the AOI's chunks")
CHAPTER = "notebooks/04_dmrpp_virtualizarr"

__all__ = ["CHAPTER", "DESCRIPTION", "FORMAT", "NAME", "TITLE", "CompactVariableError", "OutsideStoreError",
           "SidecarError", "StaleStoreError", "VirtualStore", "VirtualStoreError", "benchmark", "default_location",
           "open_store", "parse_granule", "prepare", "sidecar_url", "subset"]
