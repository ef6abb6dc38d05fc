"""Synthetic ICESat-2 ATL03/ATL06 release 006 granules, laid out like NSIDC's, and sample archives of them.

These are NOT NASA data: every value comes from a deterministic model (seeded) of the mission geometry
(:mod:`~is2cloud.granules.orbit`) and of the surface (:mod:`~is2cloud.granules.surface`); the files say
so in their root attributes (``is2cloud_synthetic``, ``description``, ``history``).

>>> from is2cloud.granules import plan_granules, write_atl06, publish_archive   # doctest: +SKIP
>>> specs = plan_granules("data/greenland_aoi.geojson", "ATL06", cycles=[3])      # doctest: +SKIP
>>> write_atl06(specs[0], "/tmp/" + specs[0].name)                                # doctest: +SKIP
>>> archive = publish_archive("book")                                             # doctest: +SKIP
"""

from is2cloud.granules.archive import (
    PRESETS,
    Archive,
    generate_granule,
    load_archive,
    preset_specs,
    publish_archive,
    sample_data,
    umm_g,
)
from is2cloud.granules.atl03 import write_atl03
from is2cloud.granules.atl06 import write_atl06
from is2cloud.granules.common import GENERATOR_VERSION, WrittenGranule
from is2cloud.granules.orbit import (
    BEAMS,
    GRANULE_RE,
    GranuleSpec,
    aoi_crossings,
    beam_offset_m,
    beam_type,
    granule_name,
    parse_granule_name,
    plan_granules,
    sc_orient_for_cycle,
    spot_number,
)
from is2cloud.granules.surface import surface_dhdt, surface_height, surface_key_for

__all__ = [
    "Archive", "BEAMS", "GENERATOR_VERSION", "GRANULE_RE", "GranuleSpec", "PRESETS", "WrittenGranule",
    "aoi_crossings", "beam_offset_m", "beam_type", "generate_granule", "granule_name", "load_archive",
    "parse_granule_name", "plan_granules", "preset_specs", "publish_archive", "sample_data",
    "sc_orient_for_cycle", "spot_number", "surface_dhdt", "surface_height", "surface_key_for", "umm_g",
    "write_atl03", "write_atl06",
]
