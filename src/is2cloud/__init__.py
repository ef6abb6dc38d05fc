"""is2cloud: helper package for the *ICESat-2 in the Cloud* book.

Modules (one concern each, see DESIGN.md section 4): settings, localcloud, credentials, aoi,
granules, catalog, atl06sr, sliderule, methods/, repack, geoparquet, bench, parallel, cli.
"""

from is2cloud.parallel import pin_mmap_threshold as _pin_mmap_threshold

__version__ = "0.1.0"

_pin_mmap_threshold()  # see its docstring: chunk-by-chunk readers otherwise leave the heap fragmented
