"""Light folium maps for the book: an AOI and line footprints (e.g. the windows of a chunk index).

A chunk index of full-length granules holds thousands of footprints, most of them far from the AOI; a
map of all of them at full precision would make a page of several MB. :func:`footprint_map` draws only
the footprints near the AOI (``around_deg``), simplified and rounded, and refuses to draw more than
``max_features`` so a page cannot grow by accident.

>>> fmap = footprint_map(index.frame, aoi, highlight=kept, tooltip=["granule"])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely

from is2cloud.aoi import load_aoi

__all__ = ["footprint_map", "near_aoi"]

HIGHLIGHT_STYLE = {"color": "#e66100", "weight": 3, "opacity": 0.9}
OTHER_STYLE = {"color": "#5d6d7e", "weight": 1.5, "opacity": 0.6}
AOI_STYLE = {"color": "red", "weight": 2, "fillOpacity": 0.15}


def near_aoi(footprints: Any, aoi: Any, around_deg: float) -> np.ndarray:
    """Boolean mask of the rows of ``footprints`` (a GeoDataFrame in lon/lat) whose geometry meets the
    AOI's bounding box widened by ``around_deg`` degrees on every side."""
    area = load_aoi(aoi)
    d = around_deg
    boxes = [shapely.box(w - d, s - d, e + d, n + d) for w, s, e, n in area.bboxes]
    geoms = np.asarray(footprints.geometry.values, dtype=object)
    keep = np.zeros(len(geoms), dtype=bool)
    for b in boxes:
        keep |= shapely.intersects(geoms, b)
    return keep


def footprint_map(footprints: Any, aoi: Any, *, highlight: Any = None, tooltip: Sequence[str] = (),
                  around_deg: float = 1.0, simplify_deg: float = 0.002, precision_deg: float = 1e-5,
                  max_features: int = 2000, highlight_name: str = "selected", other_name: str = "other",
                  zoom_start: int | None = None):  # -> folium.Map
    """A folium map of the AOI and the footprints near it.

    ``footprints``: a GeoDataFrame in EPSG:4326 (any geometry type; a chunk index's ``frame``).
    ``highlight``: a boolean mask (or the name of a boolean column) of footprints drawn in orange, in
    their own layer called ``highlight_name``; the others are grey (``other_name``). ``tooltip``:
    columns shown when hovering a footprint. Only footprints within ``around_deg`` degrees of the AOI's
    bounding box are drawn, simplified to ``simplify_deg`` and rounded to ``precision_deg`` degrees;
    more than ``max_features`` of them raise a ValueError (narrow ``around_deg`` or pass fewer rows).
    ``map.is2cloud_drawn`` says how many footprints were drawn of how many given.
    """
    import folium
    import geopandas as gpd

    area = load_aoi(aoi)
    gdf = footprints if isinstance(footprints, gpd.GeoDataFrame) else gpd.GeoDataFrame(footprints)
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        raise ValueError(f"footprints must be in longitude/latitude (EPSG:4326), not {gdf.crs}")
    if isinstance(highlight, str):
        mask = gdf[highlight].to_numpy(dtype=bool)
    elif highlight is None:
        mask = np.zeros(len(gdf), dtype=bool)
    else:
        mask = np.asarray(highlight, dtype=bool)
        if mask.shape != (len(gdf),):
            raise ValueError(f"highlight has {mask.size} values for {len(gdf)} footprints")
    missing = [c for c in tooltip if c not in gdf.columns]
    if missing:
        raise ValueError(f"tooltip columns {missing} are not in the footprints "
                         f"(columns: {list(gdf.columns)})")
    near = near_aoi(gdf, area, around_deg)
    if int(near.sum()) > max_features:
        raise ValueError(f"{int(near.sum())} footprints lie within {around_deg} degrees of the AOI, more "
                         f"than max_features={max_features}: narrow around_deg or pass fewer footprints")
    geoms = np.asarray(gdf.geometry.values, dtype=object)[near]
    geoms = shapely.set_precision(shapely.simplify(geoms, simplify_deg), precision_deg)
    props = {c: gdf[c].to_numpy()[near] for c in tooltip}
    small = gpd.GeoDataFrame({c: _plain(v) for c, v in props.items()}, geometry=list(geoms), crs="EPSG:4326")
    chosen = mask[near]

    w, s, e, n = area.geometry.bounds
    centre = area.geometry.centroid
    fmap = folium.Map(location=[centre.y, centre.x], zoom_start=zoom_start or 8, tiles="OpenStreetMap")
    layers = [(other_name, ~chosen, OTHER_STYLE), (highlight_name, chosen, HIGHLIGHT_STYLE)]
    for name, sel, style in layers:
        if not sel.any():
            continue
        part = small[sel]
        folium.GeoJson(part.to_json(drop_id=True), name=f"{name} ({int(sel.sum())})",
                       style_function=lambda _feature, style=style: style,
                       tooltip=folium.GeoJsonTooltip(list(tooltip)) if tooltip else None).add_to(fmap)
    folium.GeoJson(area.to_geojson(), name="AOI", style_function=lambda _feature: AOI_STYLE).add_to(fmap)
    folium.LayerControl(collapsed=False).add_to(fmap)
    if zoom_start is None:
        pad = around_deg / 2
        fmap.fit_bounds([[s - pad, w - pad], [n + pad, e + pad]])
    fmap.is2cloud_drawn = (int(near.sum()), len(gdf))
    return fmap


def _plain(values: np.ndarray) -> np.ndarray:
    """Values JSON can hold (numpy integers and timestamps become Python ints and strings)."""
    if values.dtype.kind in "iu":
        return values.astype("i8")
    if values.dtype.kind == "M" or values.dtype == object and len(values) and hasattr(values[0], "isoformat"):
        return np.array([str(v) for v in values], dtype=object)
    return values
