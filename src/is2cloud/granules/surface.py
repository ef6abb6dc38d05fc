"""The synthetic earth under the ground tracks: surface heights, their change over time, the sky.

Three deterministic surface models, chosen by the AOI (``surface_key_for``):

``greenland``  an ice sheet built from Nye (parabolic) dome profiles (central dome 3230 m, south dome
               2850 m) over ~300 m of ice-free land, with km-scale flow undulations. The Greenland AOI
               (62.6-63.0N, 45.4-44.6W) sits on the flank of the south dome at 2300-2700 m with a ~1 %
               regional slope. It thins by 0.5-2 m/yr, fastest at low elevation (a dh/dt map tells that
               story), plus a +/-0.25 m melt-season cycle.
``grandmesa``  a ~3050 m basalt plateau (Grand Mesa, Colorado) with 30-50 % flanks above ~1900 m
               valleys, and a seasonal snow pack on top (0 m in September to ~2 m in early March).
``generic``    smooth rolling terrain anywhere else, with no change over time.

All heights are metres above the WGS84 ellipsoid (the geoid term is included), as ``h_ph`` and
``h_li`` are. Everything is vectorized and depends only on the arguments and the ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

DEFAULT_SEED = 2018
SURFACE_KEYS: tuple[str, ...] = ("greenland", "grandmesa", "generic")
SECONDS_PER_YEAR = 365.25 * 86400.0
REFERENCE_EPOCH_UNIX = 1546300800.0  # 2019-01-01T00:00:00Z: heights at this time carry no change
DEM_EPOCH_UNIX = 1514764800.0  # 2018-01-01: the epoch of the static DEM written to dem_h
_R = 6371008.8

# signal_conf_ph / surf_type columns
SURFACE_TYPES: tuple[str, ...] = ("land", "ocean", "sea_ice", "land_ice", "inland_water")


@dataclass(frozen=True)
class SurfaceProps:
    """What the ATL03 processing would see over a surface model."""

    key: str
    considered: tuple[int, ...]  # signal_conf_ph columns that are classified (others are -1)
    albedo: float  # scales the solar background
    reflectance: float  # scales the signal photon rate
    telemetry_height_m: float  # height of the telemetry band around the surface
    roughness_m: float  # surface roughness added to the photon scatter
    dem_flag: int  # geophys_corr/dem_flag: 1 ArcticDEM, 2 GMTED, 3 MERIT, 4 REMA


PROPS: dict[str, SurfaceProps] = {
    "greenland": SurfaceProps("greenland", (0, 3), 0.9, 1.0, 240.0, 0.05, 1),
    "grandmesa": SurfaceProps("grandmesa", (0, 4), 0.45, 0.85, 300.0, 0.15, 3),
    "generic": SurfaceProps("generic", (0,), 0.3, 0.6, 300.0, 0.2, 2),
}


def surface_props(key: str) -> SurfaceProps:
    try:
        return PROPS[key]
    except KeyError:
        raise ValueError(f"unknown surface model {key!r}; choose one of {', '.join(SURFACE_KEYS)}") from None


def surface_key_for(lon: float, lat: float) -> str:
    """Surface model for a point (the AOI centre): Greenland, Grand Mesa or generic."""
    if 59.0 <= lat <= 84.0 and -75.0 <= lon <= -10.0:
        return "greenland"
    if 38.0 <= lat <= 40.0 and -109.5 <= lon <= -106.5:
        return "grandmesa"
    return "generic"


# -- helpers ------------------------------------------------------------------------------------


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype="f8")


def _great_circle_km(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float) -> np.ndarray:
    p, p0 = np.radians(lat), math.radians(lat0)
    dl = np.radians(lon - lon0)
    a = np.sin((p - p0) / 2) ** 2 + np.cos(p) * math.cos(p0) * np.sin(dl / 2) ** 2
    return 2 * _R / 1000.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _local_km(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float) -> tuple[np.ndarray, np.ndarray]:
    k = math.pi * _R / 180.0 / 1000.0
    return (lon - lon0) * k * math.cos(math.radians(lat0)), (lat - lat0) * k


@lru_cache(maxsize=32)
def _waves(seed: int, key: str, n: int, lmin_km: float, lmax_km: float, amp_m: float) -> np.ndarray:
    """Plane waves (kx, ky, amplitude, phase) for km-scale undulations; deterministic per seed/key."""
    rng = np.random.default_rng([seed, sum(key.encode()), n])
    wavelength = np.exp(rng.uniform(math.log(lmin_km), math.log(lmax_km), n))
    direction = rng.uniform(0, math.pi, n)
    k = 2 * math.pi / wavelength
    amp = amp_m * rng.uniform(0.4, 1.0, n) * np.sqrt(wavelength / lmax_km)
    return np.column_stack([k * np.cos(direction), k * np.sin(direction), amp, rng.uniform(0, 2 * math.pi, n)])


def _undulations(x: np.ndarray, y: np.ndarray, waves: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for kx, ky, amp, phase in waves:
        out += amp * np.cos(kx * x + ky * y + phase)
    return out


def _day_of_year(t_unix: np.ndarray) -> np.ndarray:
    return np.mod((t_unix - 946684800.0) / 86400.0, 365.2425)  # days since 1 January (2000-based)


# -- Greenland ----------------------------------------------------------------------------------

_DOMES = ((72.6, -38.5, 3230.0, 750.0), (63.15, -44.55, 2850.0, 200.0))  # lat, lon, height m, radius km


def _greenland_base(lon: np.ndarray, lat: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Static height above the geoid and the ice fraction (0 off the ice sheet, 1 on it)."""
    ice = np.zeros_like(lon)
    for lat0, lon0, h0, radius in _DOMES:
        d = _great_circle_km(lon, lat, lon0, lat0)
        ice = np.maximum(ice, h0 * np.sqrt(np.clip(1.0 - d / radius, 0.0, 1.0)))
    x, y = _local_km(lon, lat, -42.0, 70.0)
    land = 250.0 + 120.0 * np.sin(x / 37.0) * np.cos(y / 29.0)
    frac = np.clip((ice - land) / 100.0, 0.0, 1.0)
    und = _undulations(x, y, _waves(seed, "greenland", 8, 2.0, 12.0, 14.0))
    rough = _undulations(x, y, _waves(seed, "greenland-land", 6, 0.8, 6.0, 60.0))
    return np.maximum(ice, land) + frac * und + (1.0 - frac) * rough, frac


def _greenland_dhdt(lon: np.ndarray, lat: np.ndarray, base: np.ndarray, frac: np.ndarray, seed: int) -> np.ndarray:
    x, y = _local_km(lon, lat, -42.0, 70.0)
    wave = _undulations(x, y, _waves(seed, "greenland-dhdt", 3, 15.0, 60.0, 1.0))
    rate = -0.5 - 1.5 * np.clip((2700.0 - base) / 500.0, 0.0, 1.0) + 0.15 * wave
    return frac * np.clip(rate, -2.2, -0.3)


def _greenland_seasonal(t_unix: np.ndarray, frac: np.ndarray) -> np.ndarray:
    doy = _day_of_year(t_unix)
    return -0.25 * frac * np.cos(2 * math.pi * (doy - 225.0) / 365.25)  # lowest in mid August


# -- Grand Mesa ---------------------------------------------------------------------------------

_MESA = (-108.03, 39.02, 12.0, 22.0, 12.5)  # centre lon, lat, rotation deg, semi-axes km


def _grandmesa_parts(lon: np.ndarray, lat: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Static height above the geoid and the plateau fraction (1 on the mesa top)."""
    lon0, lat0, rot, a, b = _MESA
    x, y = _local_km(lon, lat, lon0, lat0)
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    xr, yr = c * x + s * y, -s * x + c * y
    r = ((xr / a) ** 4 + (yr / b) ** 4) ** 0.25
    plateau = 1.0 / (1.0 + np.exp(np.clip((r - 1.0) / 0.03, -60.0, 60.0)))
    valley = 1900.0 + 8.0 * x + _undulations(x, y, _waves(seed, "grandmesa-valley", 6, 3.0, 15.0, 45.0))
    top = 3050.0 + 4.0 * x + _undulations(x, y, _waves(seed, "grandmesa-top", 6, 0.8, 4.0, 8.0))
    return valley + (top - valley) * plateau, plateau


def _grandmesa_snow(t_unix: np.ndarray, plateau: np.ndarray) -> np.ndarray:
    doy = _day_of_year(t_unix)
    depth = np.clip(1.0 + 1.0 * np.cos(2 * math.pi * (doy - 65.0) / 365.25), 0.0, None)  # peak early March
    return depth * (0.25 + 0.75 * plateau)


# -- generic ------------------------------------------------------------------------------------


def _generic_base(lon: np.ndarray, lat: np.ndarray, seed: int) -> np.ndarray:
    x = np.radians(lon)
    y = np.radians(lat)
    broad = 700.0 + 450.0 * np.sin(3 * x + 1.0) * np.cos(2 * y) + 200.0 * np.sin(7 * y + 5 * x)
    k = math.pi * _R / 180.0 / 1000.0
    und = _undulations(lon * k * np.cos(y), lat * k, _waves(seed, "generic", 6, 1.0, 10.0, 25.0))
    return broad + und


# -- public surface API -------------------------------------------------------------------------


def geoid_height(lon: Any, lat: Any, key: str = "generic") -> np.ndarray:
    """Geoid undulation (m above the ellipsoid), smooth: ~+30..+60 m in Greenland, ~-17 m in Colorado."""
    lon, lat = _arr(lon), _arr(lat)
    if key == "greenland":
        return 42.0 + 12.0 * np.sin(np.radians(3 * lon + 40)) * np.cos(np.radians(2 * lat))
    if key == "grandmesa":
        return -17.0 + 1.5 * np.sin(np.radians(20 * (lon + 108.0))) + 1.0 * np.cos(np.radians(20 * (lat - 39.0)))
    return 10.0 * np.sin(np.radians(2 * lon)) * np.cos(np.radians(lat)) + 5.0 * np.sin(np.radians(3 * lat))


def surface_dhdt(lon: Any, lat: Any, key: str, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Long-term rate of height change (m/yr) of the surface model (0 outside Greenland)."""
    lon, lat = _arr(lon), _arr(lat)
    surface_props(key)
    if key == "greenland":
        base, frac = _greenland_base(lon, lat, seed)
        return _greenland_dhdt(lon, lat, base, frac, seed)
    return np.zeros(np.broadcast(lon, lat).shape)


def surface_height(lon: Any, lat: Any, t_unix: Any, key: str, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Height of the synthetic surface (m above the WGS84 ellipsoid) at (lon, lat) and unix time ``t_unix``.

    This is the truth the generators draw photons and segments from: ATL03 signal photons scatter
    around it, ATL06 ``h_li`` follows it.
    """
    surface_props(key)
    lon, lat, t = np.broadcast_arrays(_arr(lon), _arr(lat), _arr(t_unix))
    geoid = geoid_height(lon, lat, key)
    if key == "greenland":
        base, frac = _greenland_base(lon, lat, seed)
        years = (t - REFERENCE_EPOCH_UNIX) / SECONDS_PER_YEAR
        dhdt = _greenland_dhdt(lon, lat, base, frac, seed)
        return geoid + base + dhdt * years + _greenland_seasonal(t, frac)
    if key == "grandmesa":
        base, plateau = _grandmesa_parts(lon, lat, seed)
        return geoid + base + _grandmesa_snow(t, plateau)
    return geoid + _generic_base(lon, lat, seed)


def dem_height(lon: Any, lat: Any, key: str, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The static DEM written to ``dem_h``: the surface at the DEM epoch, rounded to 0.1 m."""
    return np.round(surface_height(lon, lat, DEM_EPOCH_UNIX, key, seed), 1)


# -- sky ------------------------------------------------------------------------------------------


def solar_elevation(lon: Any, lat: Any, t_unix: Any) -> np.ndarray:
    """Approximate solar elevation (degrees) from the declination and the hour angle."""
    lon, lat, t = _arr(lon), _arr(lat), _arr(t_unix)
    doy = _day_of_year(t)
    decl = np.radians(-23.44) * np.cos(2 * math.pi * (doy + 10.0) / 365.25)
    hours = np.mod(t, 86400.0) / 3600.0
    hour_angle = np.radians((hours - 12.0) * 15.0 + lon)
    phi = np.radians(lat)
    s = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(hour_angle)
    return np.degrees(np.arcsin(np.clip(s, -1.0, 1.0)))


def solar_azimuth(lon: Any, lat: Any, t_unix: Any) -> np.ndarray:
    lon, lat, t = _arr(lon), _arr(lat), _arr(t_unix)
    doy = _day_of_year(t)
    decl = np.radians(-23.44) * np.cos(2 * math.pi * (doy + 10.0) / 365.25)
    hour_angle = np.radians((np.mod(t, 86400.0) / 3600.0 - 12.0) * 15.0 + lon)
    phi = np.radians(lat)
    az = np.arctan2(np.sin(hour_angle), np.cos(hour_angle) * np.sin(phi) - np.tan(decl) * np.cos(phi))
    return np.degrees(az) + 180.0


def background_rate_hz(sun_elev_deg: Any, key: str, strong: bool) -> np.ndarray:
    """Solar background photon rate (Hz) seen by one beam: ~0.1 MHz at night, up to ~2.4 MHz in full
    sun over snow; weak beams see 80 % of a strong beam's background."""
    props = surface_props(key)
    sun = np.clip(np.sin(np.radians(_arr(sun_elev_deg))), 0.0, None)
    rate = 1.0e5 + 2.6e6 * props.albedo * sun
    return rate * (1.0 if strong else 0.8)


def cloud_gaps(seed: int, rgt: int, cycle: int, beam_index: int | None = None,
               track_length_m: float = 4.1e7) -> np.ndarray:
    """Along-track intervals ``[[x0, x1], ...]`` (m since the node) without surface returns.

    ``beam_index=None`` gives the clouds of the pass (shared by all beams, ~12 % of the track,
    typical gap ~2 km); a beam index gives that beam's own short dropouts (a few 100 m).
    """
    if beam_index is None:
        rng = np.random.default_rng([seed, rgt, cycle, 11])
        mean_spacing, mean_len = 18_000.0, 2_200.0
    else:
        rng = np.random.default_rng([seed, rgt, cycle, 13, beam_index])
        mean_spacing, mean_len = 60_000.0, 300.0
    n = int(track_length_m / mean_spacing * 1.3) + 10
    starts = np.cumsum(rng.exponential(mean_spacing, n))
    lengths = rng.exponential(mean_len, n) + 100.0
    keep = starts < track_length_m
    return np.column_stack([starts[keep], starts[keep] + lengths[keep]])


def in_intervals(x: Any, intervals: np.ndarray) -> np.ndarray:
    """Boolean mask of ``x`` inside any of the sorted, non-overlapping-by-start ``intervals``."""
    x = _arr(x)
    if len(intervals) == 0:
        return np.zeros(x.shape, dtype=bool)
    i = np.searchsorted(intervals[:, 0], x, side="right") - 1
    ends = np.maximum.accumulate(intervals[:, 1])
    return (i >= 0) & (x < ends[np.clip(i, 0, None)])


__all__ = [
    "DEFAULT_SEED", "PROPS", "SURFACE_KEYS", "SURFACE_TYPES", "SurfaceProps", "background_rate_hz", "cloud_gaps",
    "dem_height", "geoid_height", "in_intervals", "solar_azimuth", "solar_elevation", "surface_dhdt",
    "surface_height", "surface_key_for", "surface_props",
]
