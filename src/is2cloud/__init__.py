"""is2cloud: helper package for the *ICESat-2 in the Cloud* book.

Modules (one concern each, see DESIGN.md section 4): settings, localcloud, credentials, aoi,
granules, catalog, atl06sr, sliderule, methods/, repack, geoparquet, bench, parallel, cli.
"""

__version__ = "0.1.0"
