"""Areas of interest: loading, validation, antimeridian handling and the point-in-AOI rule.

Every method in the book clips with :meth:`AOI.contains`, so they all agree on the boundary rule:
**a point on the AOI boundary is inside** (``shapely.intersects_xy``, planar in lon/lat degrees,
the same geometry model geopandas uses for EPSG:4326).

AOIs are kept in EPSG:4326 with longitudes in [-180, 180]; an AOI that crosses the antimeridian is
split into a MultiPolygon at +-180. Which AOIs cross it:

* a 4-number bbox ``(west, south, east, north)`` crosses it when ``east < west``, and never otherwise
  (``(-180, -90, 180, 90)`` is the whole globe);
* a polygon is read as written (GeoJSON, RFC 7946: straight edges in longitude/latitude), so an edge
  from -60 to 130 degrees spans 190 degrees of longitude. Write a crossing with longitudes beyond
  +-180 (170 to 190) or as a MultiPolygon cut at the line, or pass ``antimeridian=True`` to read an
  edge spanning more than 180 degrees as crossing the line (the shorter way round). A polygon that has
  such an edge and is loaded without ``antimeridian=`` gets an :class:`AOIWarning` naming both readings.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
from shapely.geometry.polygon import orient


class AOIError(ValueError):
    """An area of interest that cannot be used, with the reason in the message."""


class AOIWarning(UserWarning):
    """An AOI that could be meant two ways; the message says which reading was taken."""


@dataclass(frozen=True)
class AOI:
    geometry: Polygon | MultiPolygon
    name: str = "aoi"

    # -- geometry ---------------------------------------------------------------------------
    @property
    def parts(self) -> list[Polygon]:
        g = self.geometry
        return list(g.geoms) if isinstance(g, MultiPolygon) else [g]

    @property
    def crosses_antimeridian(self) -> bool:
        return len(self.parts) > 1 and any(np.isclose(abs(b), 180.0) for p in self.parts for b in p.bounds[::2])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north); for an antimeridian AOI west > east, as in GeoJSON bboxes."""
        if not self.crosses_antimeridian:
            return tuple(self.geometry.bounds)  # type: ignore[return-value]
        east_parts = [p for p in self.parts if p.bounds[0] >= 0]
        west_parts = [p for p in self.parts if p.bounds[0] < 0]
        w = min(p.bounds[0] for p in east_parts)
        e = max(p.bounds[2] for p in west_parts)
        s = min(p.bounds[1] for p in self.parts)
        n = max(p.bounds[3] for p in self.parts)
        return (w, s, e, n)

    @property
    def bboxes(self) -> list[tuple[float, float, float, float]]:
        """One (west, south, east, north) box per part, each with west <= east."""
        return [tuple(p.bounds) for p in self.parts]  # type: ignore[misc]

    @property
    def centre(self) -> tuple[float, float]:
        """(lon, lat) of the centroid; for an AOI across the antimeridian, of its parts joined across it."""
        g: Any = self.geometry
        if self.crosses_antimeridian:
            g = shapely.union_all([shapely.affinity.translate(p, xoff=360.0) if p.bounds[0] < 0 else p
                                   for p in self.parts])
        c = g.centroid
        lon = (float(c.x) + 180.0) % 360.0 - 180.0
        return (180.0 if lon == -180.0 else lon + 0.0, float(c.y) + 0.0)  # + 0.0: no "-0.0000"

    def contains(self, lon: Any, lat: Any) -> np.ndarray:
        """Vectorized point-in-AOI test; points on the boundary are inside."""
        lon = np.asarray(lon, dtype="f8")
        lat = np.asarray(lat, dtype="f8")
        return shapely.intersects_xy(self._prepared, lon, lat)

    @property
    def _prepared(self) -> Polygon | MultiPolygon:
        g = self.geometry
        shapely.prepare(g)
        return g

    # -- exports ----------------------------------------------------------------------------
    def to_geojson(self) -> dict[str, Any]:
        return {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "properties": {"name": self.name}, "geometry": mapping(self.geometry)}],
        }

    def to_gdf(self):  # -> geopandas.GeoDataFrame
        import geopandas as gpd

        return gpd.GeoDataFrame({"name": [self.name]}, geometry=[self.geometry], crs="EPSG:4326")

    def polygons_lonlat(self) -> list[list[tuple[float, float]]]:
        """Exterior rings, counter-clockwise and closed (the form CMR and SlideRule expect)."""
        return [[(float(x), float(y)) for x, y in orient(p, 1.0).exterior.coords] for p in self.parts]

    def sliderule_poly(self) -> list[dict[str, float]]:
        """SlideRule's ``poly``: the counter-clockwise convex hull as ``[{"lon", "lat"}, ...]``."""
        if self.crosses_antimeridian:
            raise AOIError("SlideRule's poly cannot describe an AOI that crosses the antimeridian; split the request")
        hull = orient(self.geometry.convex_hull, 1.0)
        return [{"lon": float(x), "lat": float(y)} for x, y in hull.exterior.coords]

    def __repr__(self) -> str:
        w, s, e, n = self.bounds
        return f"AOI({self.name!r}, bounds=({w:.4f}, {s:.4f}, {e:.4f}, {n:.4f}), parts={len(self.parts)})"


# -- loading ------------------------------------------------------------------------------------


def load_aoi(source: Any, name: str | None = None, *, antimeridian: bool | None = None) -> AOI:
    """Load and validate an AOI.

    ``source`` may be a path to a GeoJSON file, a GeoJSON dict or string, a shapely Polygon or
    MultiPolygon, a GeoDataFrame/GeoSeries, a 4-number bbox ``(west, south, east, north)``, or an AOI.
    ``antimeridian``: how to read a polygon edge spanning more than 180 degrees of longitude (see the
    module docstring): None (default) as written, with an :class:`AOIWarning`; False as written, silently;
    True as crossing the antimeridian. A bbox crosses it exactly when east < west.
    Raises :class:`AOIError` naming the problem: unreadable file, invalid JSON, no polygon, no area,
    self-intersection, latitudes outside [-90, 90] (often lon/lat swapped), longitudes outside the
    earth, or a projected CRS.
    """
    if isinstance(source, AOI):
        return source
    label = name
    geom: Any
    bbox = False
    if isinstance(source, (str, Path)) and not (isinstance(source, str) and source.lstrip().startswith("{")):
        path = Path(source)
        label = label or path.stem
        try:
            text = path.read_text()
        except OSError as exc:
            raise AOIError(f"cannot read AOI file {str(path)!r}: {exc.strerror or exc}") from None
        geom = _from_geojson_text(text, str(path))
    elif isinstance(source, str):
        geom = _from_geojson_text(source, "AOI string")
    elif isinstance(source, dict):
        geom = _from_geojson(source, "AOI dict")
    elif isinstance(source, (Polygon, MultiPolygon)):
        geom = source
    elif hasattr(source, "geometry") and hasattr(source, "crs"):
        _check_crs(source.crs, "GeoDataFrame")
        geom = shapely.union_all(np.asarray(source.geometry))
    elif isinstance(source, (tuple, list)) and len(source) == 4 and all(isinstance(v, (int, float)) for v in source):
        w, s, e, n = map(float, source)
        bbox = True
        if w > e:  # a bbox across the antimeridian
            geom = MultiPolygon([box(w, s, 180.0, n), box(-180.0, s, e, n)])
        else:
            geom = box(w, s, e, n)
    else:
        raise AOIError(f"cannot make an AOI from {type(source).__name__}; give a GeoJSON path, dict, polygon or bbox")
    return AOI(_validate(geom, False if bbox else antimeridian, label or "aoi"), name=label or "aoi")


def _from_geojson_text(text: str, where: str) -> Any:
    if not text.strip():
        raise AOIError(f"{where} is empty; give a GeoJSON Polygon or MultiPolygon")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AOIError(f"{where} is not valid GeoJSON: {exc.msg} at line {exc.lineno}") from None
    return _from_geojson(obj, where)


def _from_geojson(obj: Any, where: str) -> Any:
    if not isinstance(obj, dict) or "type" not in obj:
        raise AOIError(f"{where} is not GeoJSON (no 'type')")
    crs = obj.get("crs", {}).get("properties", {}).get("name") if isinstance(obj.get("crs"), dict) else None
    if crs:
        _check_crs(crs, where)
    kind = obj["type"]
    try:
        if kind == "FeatureCollection":
            feats = obj.get("features") or []
            geoms = [shape(f["geometry"]) for f in feats if f.get("geometry")]
        elif kind == "Feature":
            geoms = [shape(obj["geometry"])] if obj.get("geometry") else []
        else:
            geoms = [shape(obj)]
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise AOIError(f"{where} has a malformed geometry: {exc}") from None
    polys = [g for g in geoms if isinstance(g, (Polygon, MultiPolygon))]
    if not polys:
        found = ", ".join(sorted({g.geom_type for g in geoms})) or "no geometry"
        raise AOIError(f"{where} contains no Polygon or MultiPolygon (it holds {found})")
    parts: list[Polygon] = []
    for g in polys:
        parts.extend(g.geoms if isinstance(g, MultiPolygon) else [g])
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _check_crs(crs: Any, where: str) -> None:
    if crs is None:
        return
    text = str(crs).upper()
    ok = ("CRS84" in text) or ("4326" in text) or ("WGS 84" in text and "UTM" not in text)
    if not ok:
        raise AOIError(f"{where} is in CRS {crs}; give the AOI in longitude/latitude (EPSG:4326 / OGC:CRS84)")


def _validate(geom: Any, antimeridian: bool | None = False, label: str = "aoi") -> Polygon | MultiPolygon:
    if geom is None or geom.is_empty:
        raise AOIError("the AOI is empty")
    parts = list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]
    xs = np.concatenate([np.asarray(p.exterior.coords)[:, 0] for p in parts])
    ys = np.concatenate([np.asarray(p.exterior.coords)[:, 1] for p in parts])
    if not np.all(np.isfinite(xs)) or not np.all(np.isfinite(ys)):
        raise AOIError("the AOI has non-finite coordinates")
    if np.any(np.abs(ys) > 90):
        hint = " (they look like longitudes: are lon/lat swapped?)" if np.all(np.abs(xs) <= 90) else ""
        raise AOIError(f"AOI latitudes {ys.min():.3f}..{ys.max():.3f} are outside [-90, 90]{hint}")
    if np.any(np.abs(xs) > 540):
        raise AOIError(f"AOI longitudes {xs.min():.3f}..{xs.max():.3f} are outside the earth; give degrees")
    for p in parts:
        ring = np.unique(np.asarray(p.exterior.coords), axis=0)
        if len(ring) < 3 or np.linalg.matrix_rank(ring - ring.mean(axis=0), tol=1e-12) < 2:
            raise AOIError("the AOI has no area (a point, a line or a degenerate polygon)")
        if not p.is_valid:
            reason = shapely.is_valid_reason(p)
            raise AOIError(f"the AOI polygon is invalid: {reason}; fix it (e.g. remove the self-intersection)")
    parts = [_read_long_edges(p, antimeridian, label) for p in parts]
    split: list[Polygon] = []
    for p in parts:
        split.extend(_split_at_antimeridian(p))
    if not split:
        raise AOIError("the AOI has no area")
    return split[0] if len(split) == 1 else MultiPolygon(split)


def _read_long_edges(p: Polygon, antimeridian: bool | None, label: str) -> Polygon:
    """``p`` as written, or, with ``antimeridian=True``, made continuous across +-180 when an edge spans
    more than 180 degrees of longitude (its negative longitudes shifted by +360). Without ``antimeridian=``,
    such a polygon is read as written and an AOIWarning names the other reading, if that one has an area."""
    x = np.asarray(p.exterior.coords)[:, 0]
    span = np.abs(np.diff(x))
    if not np.any(span > 180) or antimeridian is False:
        return p
    shift = lambda c: [((xx + 360.0) if xx < 0 else xx, yy) for xx, yy in c]  # noqa: E731
    crossing = Polygon(shift(p.exterior.coords), [shift(r.coords) for r in p.interiors])
    if antimeridian:
        return crossing
    if crossing.is_valid and crossing.area > 0:
        w, e = float(x.min()), float(x.max())
        cw, ce = crossing.bounds[0], crossing.bounds[2] - 360.0
        warnings.warn(
            f"AOI {label!r} has an edge spanning {span.max():.1f} degrees of longitude: read as written, from "
            f"{w:g} east to {e:g} ({e - w:.1f} degrees wide), not as crossing the antimeridian from {cw:g} to "
            f"{ce:g}; to cross it, write longitudes beyond 180 (e.g. {cw:g} to {ce + 360:g}), give a bbox with "
            "east < west, or load_aoi(..., antimeridian=True)", AOIWarning, stacklevel=4)
    return p


def _split_at_antimeridian(p: Polygon) -> Iterable[Polygon]:
    minx, miny, maxx, maxy = p.bounds
    out: list[Polygon] = []
    for lo, hi, offset in ((-540.0, -180.0, 360.0), (-180.0, 180.0, 0.0), (180.0, 540.0, -360.0)):
        if maxx <= lo or minx >= hi:
            continue
        piece = p.intersection(box(lo, miny - 1, hi, maxy + 1))
        for g in getattr(piece, "geoms", [piece]):
            if isinstance(g, Polygon) and g.area > 0:
                out.append(shapely.affinity.translate(g, xoff=offset) if offset else g)
    return out


def bbox_intersects(aoi: AOI, west: float, south: float, east: float, north: float) -> bool:
    """Does the box (west <= east) intersect any part of the AOI (boundary included)?"""
    return any(not (e < west or w > east or n < south or s > north) for (w, s, e, n) in aoi.bboxes)

