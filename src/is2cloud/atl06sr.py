"""A local ATL06-SR engine that reproduces SlideRule's p-series ``atl06p``.

This module computes ATL06-SR elevations from ATL03 photons the way SlideRule's ``atl06p`` endpoint does
(``Atl03Reader.cpp`` builds the extents, ``Atl06Dispatch.cpp`` fits them; see ``spec/atl06sr.md`` §1 for the
algorithm and §2.1 for the output). It returns the GeoDataFrame that ``sliderule.icesat2.atl06p`` returns.

What it does, in order, for each beam:

1. **Region.** An optional area of interest is applied per ATL03 20 m segment, using the segment's reference
   photon. This gives a range of segments and photons (:func:`compute_region`). ``poly`` semantics keep the
   first contiguous run of segments inside the AOI. ``raster`` semantics keep everything from the first
   included segment to the last one, with a per-segment inclusion mask.
2. **Photon selection.** A photon is kept when its signal confidence is allowed by ``cnf``, its ``quality_ph``
   is in ``quality_ph``, and, if requested, its ``weight_ph`` (YAPC v0 score) is at least ``yapc.score``.
   With ``srt=-1`` the confidence is the maximum over the 5 surface-type columns.
3. **Extents.** Extents of ``len`` metres are stepped by ``res`` metres along track. They start at the first
   segment's ``segment_dist_x``, and SlideRule's correction for segments that are not exactly 20 m long is
   applied. Every step increments the extent counter, including steps that are later filtered out. Extents
   with fewer than ``cnt`` photons, or an along-track spread under ``ats``, are dropped before the fit unless
   ``pass_invalid`` is set.
4. **Iterative fit.** The iterative window refinement of ATBD §5.5–5.9 runs on all extents of a beam at
   once, as masked and segmented NumPy reductions over a flat, extent-major layout. Each extent's photons
   are sorted by residual with a single composite-key argsort per iteration.
5. **Output.** The columns are the ``atl06rec.elevation`` fields with SlideRule's dtypes. ``time`` becomes
   the index (``datetime64[ns]``, UTC values, sorted). ``latitude``/``longitude`` become Point geometry in
   EPSG:7912.

The engine keeps SlideRule's numerical quirks on purpose:

- photon ``x`` is stored as float32;
- the slope used for the expected spread is float32;
- the window height is stored as float32 between iterations;
- rows flagged 0x1, 0x2 or 0x8 are returned with ``rms_misfit`` and ``h_sigma`` set to 0;
- a max-iterations exit does not trim the photon set;
- the longitude wrap rule is applied near ±180.

Differences from SlideRule come only from floating-point summation order. The extent start is computed in
closed form rather than by sequential accumulation, which changes it by less than 1e-6 m. The geolocation
sums are computed relative to a reference photon, so ``time`` carries no 256 ns double rounding.

Not supported by this engine (they raise :class:`ParameterError`):

- ATL08 classification;
- server-side YAPC (versions 1–3);
- ancillary fields;
- PhoREAL, ATL24 and raster sampling.
"""

from __future__ import annotations

import calendar
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # geopandas is imported lazily: the engine itself needs only numpy
    import geopandas as gpd

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Constants (Atl06Dispatch.cpp, Icesat2Parameters.h, Atl03Reader.cpp)
# --------------------------------------------------------------------------------------------------

SPEED_OF_LIGHT = 299792458.0  # m/s
PULSE_REPETITION_FREQUENCY = 10000.0  # Hz
RDE_SCALE_FACTOR = 1.3490
SIGMA_BEAM = 4.25  # m
SIGMA_XMIT = 0.00000000068  # s
ATL03_SEGMENT_LENGTH = 20.0  # m
ATLAS_SDP_EPOCH_GPS = 1198800018  # GPS seconds at 2018-01-01T00:00:00Z (the ATLAS SDP epoch)
GPS_EPOCH_UNIX = 315964800  # Unix seconds at the GPS epoch 1980-01-06T00:00:00Z
ICESAT2_CRS = "EPSG:7912"  # ITRF2014, as set by the sliderule client for release <= 6

PFLAG_SPREAD_TOO_SHORT = 0x0001
PFLAG_TOO_FEW_PHOTONS = 0x0002
PFLAG_MAX_ITERATIONS_REACHED = 0x0004
PFLAG_OUT_OF_BOUNDS = 0x0008
#: pflags bits that mark a fit as invalid (rms_misfit and h_sigma are then zeroed)
PFLAGS_INVALID = PFLAG_SPREAD_TOO_SHORT | PFLAG_TOO_FEW_PHOTONS | PFLAG_OUT_OF_BOUNDS

EXTENT_ID_ELEVATION = 0x2

#: (c/2 * sigma_xmit)^2, the transmit-pulse part of sigma_expected (Atl06Dispatch.cpp)
_SE1 = ((SPEED_OF_LIGHT / 2.0) * SIGMA_XMIT) ** 2
_DBL_MAX = float(np.finfo(np.float64).max)

CNF_NAMES: dict[str, int] = {
    "atl03_tep": -2,
    "atl03_not_considered": -1,
    "atl03_background": 0,
    "atl03_within_10m": 1,
    "atl03_low": 2,
    "atl03_medium": 3,
    "atl03_high": 4,
}
SRT_NAMES: dict[str, int] = {
    "dynamic": -1,
    "land": 0,
    "ocean": 1,
    "sea_ice": 2,
    "land_ice": 3,
    "inland_water": 4,
}
QUALITY_NAMES: dict[str, int] = {
    "atl03_quality_nominal": 0,
    "atl03_quality_afterpulse": 1,
    "atl03_quality_impulse_response": 2,
    "atl03_quality_tep": 3,
    "atl03_quality_noise_burst": 4,
    "atl03_quality_noise_streak": 5,
    "atl03_quality_tx_part_sat": 10,
    "atl03_quality_tx_part_sat_afterpulse": 11,
    "atl03_quality_tx_part_sat_ir_effect": 12,
    "atl03_quality_tx_part_sat_burst": 14,
    "atl03_quality_tx_part_sat_streak": 15,
    "atl03_quality_tx_full_sat": 20,
    "atl03_quality_tx_full_sat_afterpulse": 21,
    "atl03_quality_tx_full_sat_ir_effect": 22,
    "atl03_quality_tx_full_sat_burst": 24,
    "atl03_quality_tx_full_sat_streak": 25,
}
NUM_PHOTON_QUALITY = 26  # quality_ph values 0..25 are valid (Icesat2Parameters.h)

BEAMS: tuple[str, ...] = ("gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r")
GT_CODES: dict[str, int] = {b: 10 * (i + 1) for i, b in enumerate(BEAMS)}

#: Output columns in the order the sliderule client produces them (geometry is appended last).
OUTPUT_COLUMNS: tuple[str, ...] = (
    "extent_id",
    "segment_id",
    "n_fit_photons",
    "pflags",
    "rgt",
    "cycle",
    "region",
    "spot",
    "gt",
    "h_mean",
    "dh_fit_dx",
    "x_atc",
    "y_atc",
    "w_surface_window_final",
    "rms_misfit",
    "h_sigma",
)
OUTPUT_DTYPES: dict[str, str] = {
    "extent_id": "uint64",
    "segment_id": "uint32",
    "n_fit_photons": "int32",
    "pflags": "uint16",
    "rgt": "uint16",
    "cycle": "uint8",
    "region": "uint8",
    "spot": "uint8",
    "gt": "uint8",
    "h_mean": "float64",
    "dh_fit_dx": "float32",
    "x_atc": "float32",
    "y_atc": "float32",
    "w_surface_window_final": "float32",
    "rms_misfit": "float32",
    "h_sigma": "float32",
}

#: Request keys that change the result but that this engine does not implement.
_UNSUPPORTED_KEYS: tuple[str, ...] = (
    "atl08_class",
    "atl08_fields",
    "atl03_geo_fields",
    "atl03_ph_fields",
    "atl03_corr_fields",
    "atl03_bckgrd_fields",
    "phoreal",
    "als",
    "atl24",
    "samples",
)


class ParameterError(ValueError):
    """A request parameter that is invalid or unsupported; the message names it and its value."""


class Atl03FormatError(ValueError):
    """An ATL03 granule whose content does not follow the product layout (missing or inconsistent data)."""


# --------------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------------

_LEAP_DATES = (
    (1981, 7), (1982, 7), (1983, 7), (1985, 7), (1988, 1), (1990, 1), (1991, 1), (1992, 7), (1993, 7),
    (1994, 7), (1996, 1), (1997, 7), (1999, 1), (2006, 1), (2009, 1), (2012, 7), (2015, 7), (2017, 1),
)  # fmt: skip
# GPS seconds at which GPS-UTC steps to 1, 2, ... 18
_LEAP_GPS = np.array(
    [calendar.timegm((y, m, 1, 0, 0, 0)) - GPS_EPOCH_UNIX + i + 1 for i, (y, m) in enumerate(_LEAP_DATES)],
    dtype=np.float64,
)


def leap_seconds(gps_seconds: np.ndarray | float) -> np.ndarray:
    """GPS-UTC leap seconds in effect at the given GPS times (18 since 2017-01-01)."""
    return np.searchsorted(_LEAP_GPS, np.asarray(gps_seconds, dtype=np.float64), side="right")


def delta_time_to_unix_ns(delta_time: np.ndarray | float) -> np.ndarray:
    """ATLAS ``delta_time`` (GPS seconds since 2018-01-01) to Unix nanoseconds (UTC, no leap seconds).

    The conversion is ``Icesat2Parameters::deltatime2timestamp``:
    ``(delta_time + 1198800018 + 315964800 - leap) * 1e9``. It is done in integer seconds plus a fraction,
    so the result is exact to the nanosecond.
    """
    dt = np.asarray(delta_time, dtype=np.float64)
    leap = leap_seconds(dt + ATLAS_SDP_EPOCH_GPS).astype(np.int64)
    whole = np.floor(dt)
    frac_ns = np.rint((dt - whole) * 1e9).astype(np.int64)
    secs = whole.astype(np.int64) + (ATLAS_SDP_EPOCH_GPS + GPS_EPOCH_UNIX) - leap
    return secs * 1_000_000_000 + frac_ns


# --------------------------------------------------------------------------------------------------
# Identifiers
# --------------------------------------------------------------------------------------------------


def beam_track_pair(beam: str) -> tuple[int, int]:
    """``"gt2r"`` -> (track 2, pair 1); pair 0 is left, 1 is right."""
    if beam not in GT_CODES:
        raise ParameterError(f"beams: {beam!r} is not a beam; choose from {', '.join(BEAMS)}")
    return int(beam[2]), 0 if beam[3] == "l" else 1


def spot_number(sc_orient: int, track: int, pair: int) -> int:
    """ATLAS spot 1..6 of a beam for a spacecraft orientation (``Icesat2Parameters::getSpotNumber``).

    Backward (0): gt1l..gt3r -> 1..6. Forward (1): gt1l..gt3r -> 6..1. Transition (2): 0 (invalid).
    """
    if sc_orient not in (0, 1, 2):
        raise Atl03FormatError(f"orbit_info/sc_orient = {sc_orient} is not 0 (backward), 1 (forward) or 2")
    if sc_orient == 2:
        return 0
    index = (track - 1) * 2 + pair  # 0..5
    return index + 1 if sc_orient == 0 else 6 - index


def ground_track(sc_orient: int, track: int, pair: int) -> int:
    """Ground track code 10..60 (gt1l..gt3r); 0 during an orientation transition."""
    return 0 if sc_orient == 2 else 10 * ((track - 1) * 2 + pair + 1)


def encode_extent_id(
    rgt: int, cycle: int, region: int, track: int, pair: int, counter: int | np.ndarray, elevation: bool = True
) -> np.ndarray | int:
    """``Icesat2Parameters::generateExtentId`` (plus the elevation bit the fitter sets).

    Layout: ``[RGT 63-52][CYCLE 51-36][REGION 35-32][RPT 31-30][COUNTER 29-2][ELEVATION 1][RIGHT 0]``.
    """
    base = (
        (np.uint64(rgt) << np.uint64(52))
        | (np.uint64(cycle) << np.uint64(36))
        | (np.uint64(region) << np.uint64(32))
        | (np.uint64(track) << np.uint64(30))
        | np.uint64(pair)
        | np.uint64(EXTENT_ID_ELEVATION if elevation else 0)
    )
    ids = base | ((np.asarray(counter, dtype=np.uint64) & np.uint64(0xFFFFFFF)) << np.uint64(2))
    return int(ids) if np.ndim(ids) == 0 else ids


def decode_extent_id(extent_id: int) -> dict[str, int | bool | str]:
    """Split an extent id into rgt, cycle, region, track, pair, counter, elevation flag, gt and beam name."""
    eid = int(extent_id)
    track, pair = (eid >> 30) & 0x3, eid & 0x1
    return {
        "rgt": (eid >> 52) & 0xFFF,
        "cycle": (eid >> 36) & 0xFFFF,
        "region": (eid >> 32) & 0xF,
        "track": track,
        "pair": pair,
        "counter": (eid >> 2) & 0xFFFFFFF,
        "elevation": bool(eid & EXTENT_ID_ELEVATION),
        "gt": 10 * ((track - 1) * 2 + pair + 1) if track else 0,
        "beam": f"gt{track}{'lr'[pair]}" if track else "",
    }


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Atl06Parms:
    """Validated ATL06-SR request parameters (server v5.x defaults; see spec §1.1)."""

    srt: int = -1
    cnf: frozenset[int] = frozenset({2, 3, 4})
    quality_ph: frozenset[int] = frozenset({0})
    len: float = 40.0
    res: float = 20.0
    dist_in_seg: bool = False
    cnt: int = 10
    ats: float = 20.0
    maxi: int = 5
    H_min_win: float = 3.0
    sigma_r_max: float = 5.0
    pass_invalid: bool = False
    beams: tuple[str, ...] = BEAMS
    yapc_score: int | None = None  # minimum ATL03 weight_ph when the YAPC stage is on (version 0)
    keep_id: bool = False

    @property
    def extent_length(self) -> float:
        """Extent length in metres (``len`` counts 20 m segments when ``dist_in_seg``)."""
        return self.len * ATL03_SEGMENT_LENGTH if self.dist_in_seg else self.len


DEFAULT_PARMS = Atl06Parms()


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _number(parms: Mapping[str, Any], key: str, default: float, *, minimum: float, strict: bool) -> float:
    v = parms.get(key, default)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{key}={v!r} is not a number")
    v = float(v)
    if not math.isfinite(v) or (v <= minimum if strict else v < minimum):
        raise ParameterError(f"{key}={v!r} must be {'>' if strict else '>='} {minimum:g}")
    return v


def _integer(parms: Mapping[str, Any], key: str, default: int, *, minimum: int) -> int:
    v = parms.get(key, default)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    if not _is_int(v):
        raise ParameterError(f"{key}={v!r} is not an integer")
    if v < minimum:
        raise ParameterError(f"{key}={v!r} must be >= {minimum}")
    return int(v)


def _flag(parms: Mapping[str, Any], key: str, default: bool) -> bool:
    v = parms.get(key, default)
    if not isinstance(v, (bool, np.bool_)):
        raise ParameterError(f"{key}={v!r} is not a boolean")
    return bool(v)


def _srt(value: Any) -> int:
    if isinstance(value, str):
        if value in SRT_NAMES:
            return SRT_NAMES[value]
    elif _is_int(value) and -1 <= int(value) <= 4:
        return int(value)
    raise ParameterError(
        f"srt={value!r} is not a surface type; use -1..4 or one of {', '.join(repr(s) for s in SRT_NAMES)}"
    )


def _enum_value(key: str, value: Any, names: Mapping[str, int], lo: int, hi: int) -> int:
    if isinstance(value, str):
        if value in names:
            return names[value]
        raise ParameterError(f"{key}: {value!r} is not a known name; use one of {', '.join(names)} or {lo}..{hi}")
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if not _is_int(value):
        raise ParameterError(f"{key}: {value!r} is not an integer or a name")
    if not lo <= int(value) <= hi:
        raise ParameterError(f"{key}: {value!r} is out of range {lo}..{hi}")
    return int(value)


def _cnf(value: Any) -> frozenset[int]:
    """cnf: a scalar means "at least that level", a list means "exactly these" (Atl03Parameters::fromLua)."""
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return frozenset(_enum_value("cnf", v, CNF_NAMES, -2, 4) for v in value)
    level = _enum_value("cnf", value, CNF_NAMES, -2, 4)
    return frozenset(range(level, 5))


def _quality(value: Any) -> frozenset[int]:
    """quality_ph: a scalar means "exactly that value", a list means "exactly these"."""
    items = value if isinstance(value, (list, tuple, set, frozenset, np.ndarray)) else [value]
    return frozenset(_enum_value("quality_ph", v, QUALITY_NAMES, 0, NUM_PHOTON_QUALITY - 1) for v in items)


def _beams(parms: Mapping[str, Any]) -> tuple[str, ...]:
    track = parms.get("track", 0)
    if not _is_int(track) or not 0 <= int(track) <= 3:
        raise ParameterError(f"track={track!r} must be 0 (all), 1, 2 or 3")
    raw = parms.get("beams", BEAMS)
    raw = [raw] if isinstance(raw, (str, int, np.integer)) else list(raw)
    chosen = []
    for b in raw:
        if _is_int(b) and int(b) in GT_CODES.values():
            b = BEAMS[int(b) // 10 - 1]
        if not isinstance(b, str) or b not in GT_CODES:
            raise ParameterError(f"beams: {b!r} is not a beam; choose from {', '.join(BEAMS)} or 10..60")
        chosen.append(b)
    if int(track) != 0:  # a track selection replaces the beam selection (Icesat2Parameters::fromLua)
        chosen = [f"gt{int(track)}l", f"gt{int(track)}r"]
    return tuple(b for b in BEAMS if b in chosen)


def _yapc(parms: Mapping[str, Any]) -> int | None:
    yapc = parms.get("yapc")
    if yapc is None:
        return None
    if not isinstance(yapc, Mapping):
        raise ParameterError(f"yapc={yapc!r} must be a dict such as {{'score': 0}}")
    version = yapc.get("version", 0)
    if version != 0:
        raise ParameterError(
            f"yapc.version={version!r}: server-side YAPC (versions 1-3) is not implemented by the local engine;"
            " use version 0 (the ATL03 weight_ph score)"
        )
    score = yapc.get("score", 0)
    if not _is_int(score) or not 0 <= int(score) <= 0xFFFF:
        raise ParameterError(f"yapc.score={score!r} must be an integer 0..65535")
    return int(score)


def parse_parms(parms: Mapping[str, Any] | Atl06Parms | None = None, **overrides: Any) -> Atl06Parms:
    """Validate an ``atl06p`` request dict and return :class:`Atl06Parms`.

    Keys this engine does not use (``poly``, ``t0``, ``output``, ``asset``, ``fit``, ``podppd``, ...) are
    ignored, as the server ignores unknown keys. Keys that would change the result but are not implemented
    (ATL08 classes, ancillary fields, server-side YAPC, ...) raise :class:`ParameterError`. ``fit.*`` is
    ignored on purpose: the p-series reads the top-level ``maxi``/``H_min_win``/``sigma_r_max``.
    """
    if isinstance(parms, Atl06Parms):
        return replace(parms, **overrides) if overrides else parms
    merged: dict[str, Any] = {**(dict(parms) if parms else {}), **overrides}
    for key in _UNSUPPORTED_KEYS:
        if merged.get(key):
            raise ParameterError(f"{key}={merged[key]!r} is not supported by the local ATL06-SR engine")
    dist_in_seg = _flag(merged, "dist_in_seg", False)
    p = Atl06Parms(
        srt=_srt(merged.get("srt", -1)),
        cnf=_cnf(merged.get("cnf", [2, 3, 4])),
        quality_ph=_quality(merged.get("quality_ph", [0])),
        len=_number(merged, "len", 40.0, minimum=0.0, strict=True),
        res=_number(merged, "res", 20.0, minimum=0.0, strict=True),
        dist_in_seg=dist_in_seg,
        cnt=_integer(merged, "cnt", 10, minimum=0),
        ats=_number(merged, "ats", 20.0, minimum=0.0, strict=False),
        maxi=_integer(merged, "maxi", 5, minimum=0),
        H_min_win=_number(merged, "H_min_win", 3.0, minimum=0.0, strict=False),
        sigma_r_max=_number(merged, "sigma_r_max", 5.0, minimum=0.0, strict=True),
        pass_invalid=_flag(merged, "pass_invalid", False),
        beams=_beams(merged),
        yapc_score=_yapc(merged),
        keep_id=_flag(merged, "keep_id", False),
    )
    if dist_in_seg and p.res < 1.0:
        raise ParameterError(f"res={p.res!r} must be >= 1 segment when dist_in_seg is true")
    return p


# --------------------------------------------------------------------------------------------------
# Data containers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GranuleInfo:
    """Granule-level values: rgt/cycle/region/version from the file name, orientation from orbit_info."""

    rgt: int
    cycle: int
    region: int
    sc_orient: int
    version: int | None = None
    name: str | None = None


_NAME_RE = re.compile(r"(ATL\d{2})_(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})_(\d{4})(\d{2})(\d{2})_(\d{3})_(\d{2})")


def parse_granule_name(name: str) -> dict[str, int | str] | None:
    """Parse ``ATL03_YYYYMMDDhhmmss_TTTTCCRR_VVV_RR.h5`` into product, rgt, cycle, region, version, revision."""
    m = _NAME_RE.search(os.path.basename(str(name)))
    if m is None:
        return None
    g = m.groups()
    return {
        "product": g[0],
        "year": int(g[1]),
        "month": int(g[2]),
        "day": int(g[3]),
        "rgt": int(g[7]),
        "cycle": int(g[8]),
        "region": int(g[9]),
        "version": int(g[10]),
        "revision": int(g[11]),
    }


@dataclass
class Region:
    """The part of a beam that is processed (``Atl03Reader::Region``); indices are into the full beam."""

    first_segment: int
    num_segments: int
    first_photon: int
    num_photons: int
    inclusion: np.ndarray | None = None  # raster semantics: per-segment mask over the region's segments


@dataclass
class Atl03Beam:
    """The ATL03 data of one beam that the engine needs, already cut to the region.

    Photon arrays have length N (``num_photons`` of the region), segment arrays length M. Photons belong
    to segments in order, as given by ``segment_ph_cnt``. ``signal_conf_ph`` is (N, 5), or (N,) when only
    the ``srt`` column was read.
    """

    beam: str
    delta_time: np.ndarray  # f8, seconds since 2018-01-01 (GPS)
    lat_ph: np.ndarray  # f8
    lon_ph: np.ndarray  # f8
    h_ph: np.ndarray  # f4
    dist_ph_along: np.ndarray  # f4
    dist_ph_across: np.ndarray  # f4
    signal_conf_ph: np.ndarray  # i1, (N, 5) or (N,)
    quality_ph: np.ndarray  # i1
    segment_id: np.ndarray  # i4
    segment_dist_x: np.ndarray  # f8
    segment_ph_cnt: np.ndarray  # i4
    segment_delta_time: np.ndarray  # f8
    velocity_sc: np.ndarray  # f4, (M, 3)
    bckgrd_delta_time: np.ndarray  # f8
    bckgrd_rate: np.ndarray  # f4
    weight_ph: np.ndarray | None = None  # u1 (v006) / u2 (v007), read only when the YAPC stage is on
    inclusion: np.ndarray | None = None  # per-segment AOI mask (raster semantics), length M
    first_photon: int = 0  # index of the first photon in the granule's heights group
    first_segment: int = 0

    @property
    def track(self) -> int:
        return beam_track_pair(self.beam)[0]

    @property
    def pair(self) -> int:
        return beam_track_pair(self.beam)[1]


# --------------------------------------------------------------------------------------------------
# Region (AOI per ATL03 segment)
# --------------------------------------------------------------------------------------------------


def compute_region(
    segment_ph_cnt: np.ndarray, included: np.ndarray | None, mode: Literal["poly", "raster"] = "poly"
) -> Region | None:
    """The segments and photons to process, as ``Atl03Reader::Region`` picks them; None if nothing.

    ``included`` is the AOI test of each segment's reference photon (None = no AOI). Segments without
    photons are never tested, because their coordinates may be invalid.

    - ``poly``: from the first included segment with photons to just before the next excluded segment
      with photons (one contiguous run).
    - ``raster``: from the first to the last included segment with photons. Excluded segments in between
      are masked out photon by photon.
    """
    cnt = np.asarray(segment_ph_cnt, dtype=np.int64)
    m = cnt.size
    if included is None:
        total = int(cnt.sum())
        return Region(0, m, 0, total) if total > 0 else None
    inc = np.asarray(included, dtype=bool)
    if inc.shape != cnt.shape:
        raise ValueError(f"AOI mask has shape {inc.shape}, expected one value per segment {cnt.shape}")
    has_ph = cnt != 0
    hits = np.flatnonzero(inc & has_ph)
    if hits.size == 0:
        return None
    first = int(hits[0])
    if mode == "poly":
        breaks = np.flatnonzero(~inc[first + 1 :] & has_ph[first + 1 :])
        stop = first + 1 + int(breaks[0]) if breaks.size else m
        inclusion = None
    elif mode == "raster":
        stop = int(hits[-1]) + 1
        inclusion = inc[first:stop].copy()
    else:
        raise ValueError(f"aoi_mode={mode!r} must be 'poly' or 'raster'")
    num_photons = int(cnt[first:stop].sum())
    return Region(first, stop - first, int(cnt[:first].sum()), num_photons, inclusion)


# --------------------------------------------------------------------------------------------------
# Photon selection
# --------------------------------------------------------------------------------------------------


def photon_confidence(signal_conf_ph: np.ndarray, srt: int) -> np.ndarray:
    """The confidence used for selection: the ``srt`` column, or with ``srt=-1`` the max over 5 columns."""
    conf = np.asarray(signal_conf_ph)
    if conf.ndim == 1:
        if srt == -1:
            raise ValueError("srt=-1 (dynamic) needs all 5 signal_conf_ph columns, got a single column")
        return conf
    if conf.ndim != 2 or conf.shape[1] != 5:
        raise Atl03FormatError(f"signal_conf_ph has shape {conf.shape}, expected (N, 5)")
    return conf.max(axis=1) if srt == -1 else conf[:, srt]


def select_photons(
    beam: Atl03Beam, parms: Atl06Parms, photon_mask: np.ndarray | None = None, version: int | None = 6
) -> np.ndarray:
    """Boolean mask of photons that pass cnf, quality_ph, YAPC (v0), the raster AOI and ``photon_mask``."""
    conf = photon_confidence(beam.signal_conf_ph, parms.srt).astype(np.int16)
    bad = (conf < -2) | (conf > 4)
    if bad.any():
        raise Atl03FormatError(f"{beam.beam}: invalid atl03 signal confidence {int(conf[bad][0])}")
    cnf_table = np.array([c in parms.cnf for c in range(-2, 5)])
    sel = cnf_table[conf + 2]
    quality = np.asarray(beam.quality_ph).astype(np.int16)
    bad_q = sel & ((quality < 0) | (quality >= NUM_PHOTON_QUALITY))
    if bad_q.any():
        raise Atl03FormatError(f"{beam.beam}: invalid atl03 photon quality {int(quality[bad_q][0])}")
    q_table = np.array([q in parms.quality_ph for q in range(NUM_PHOTON_QUALITY)])
    sel &= q_table[np.clip(quality, 0, NUM_PHOTON_QUALITY - 1)]
    if parms.yapc_score is not None and (version is None or version >= 6):
        if beam.weight_ph is None:
            raise Atl03FormatError(f"{beam.beam}: the YAPC stage needs heights/weight_ph, which was not read")
        sel &= np.asarray(beam.weight_ph) >= parms.yapc_score
    if beam.inclusion is not None:
        sel &= np.repeat(np.asarray(beam.inclusion, dtype=bool), beam.segment_ph_cnt)
    if photon_mask is not None:
        sel &= np.asarray(photon_mask, dtype=bool)
    return sel


# --------------------------------------------------------------------------------------------------
# Extents (Atl03Reader::subsettingThread, p-series)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Extents:
    """Per-extent traversal results: photon range [a, b), start distance, first segment, step counter."""

    counter: np.ndarray
    a: np.ndarray
    b: np.ndarray
    start: np.ndarray
    eseg: np.ndarray


def _extents_in_meters(seg: np.ndarray, along: np.ndarray, sdx: np.ndarray, length: float, step: float) -> _Extents:
    """Extent traversal with ``len``/``res`` in metres, vectorised.

    SlideRule's start distance evolves as ``start += res``. Then, while ``start >= sdx[s+1]``, it applies
    ``start += (sdx[s+1] - sdx[s]) - 20`` and ``s += 1``. This telescopes to
    ``start_k = sdx[s_k] + k*res - 20*s_k``, where ``s_k`` is the first segment whose running maximum of
    ``20*s + (sdx[s+1] - sdx[s])`` exceeds ``k*res``.

    An extent's first photon is the first photon, scanning on from the previous extent's first photon, with
    ``x >= res`` relative to the previous start. Its traversal ends at the first photon with ``x >= len``.
    Both are found with searchsorted on the running maximum of the photons' along-track distances, which
    gives the same first crossing as the sequential scan, even where ``x`` is not monotonic.
    """
    n = seg.size
    m = sdx.size
    y = sdx[seg] + along.astype(np.float64)
    ymax = np.maximum.accumulate(y)
    idx = np.arange(m, dtype=np.float64)
    bounds = np.maximum.accumulate(ATL03_SEGMENT_LENGTH * idx[:-1] + np.diff(sdx)) if m > 1 else np.empty(0)
    drift_min = min(0.0, float(np.min(sdx - sdx[0] - ATL03_SEGMENT_LENGTH * idx)))
    k_max = int(math.floor((ymax[-1] - sdx[0] - drift_min) / step)) + 2
    k = np.arange(k_max + 1, dtype=np.int64)
    q = k * step
    s = np.searchsorted(bounds, q, side="right")
    start = sdx[s] + (q - ATL03_SEGMENT_LENGTH * s)
    a = np.zeros(k.size, dtype=np.int64)
    a[1:] = np.searchsorted(ymax, start[:-1] + step, side="left")
    end = np.searchsorted(ymax, start + length, side="left")
    nxt = np.append(a[1:], n)
    last = np.maximum(end, nxt)
    complete = np.flatnonzero(last >= n - 1)
    if complete.size == 0:  # cannot happen: k_max is past the last photon
        raise RuntimeError("extent traversal did not reach the last photon")
    kk = int(complete[0]) + 1
    a, last, start = a[:kk], last[:kk], start[:kk]
    eseg = seg[a]
    eseg[0] = 0  # TrackState starts in the region's first segment, even if it has no photons
    return _Extents(k[:kk], a, np.minimum(last + 1, n), start, eseg)


def _extents_in_segments(seg: np.ndarray, sdx: np.ndarray, length: float, step: float) -> _Extents:
    """Extent traversal with ``len``/``res`` counted in ATL03 segments (``dist_in_seg``).

    Extent k takes the photons of segments ``eseg_k .. eseg_k + len - 1``. The next extent starts at the
    first photon in segment ``eseg_k + int(res)`` or later. Its start distance is ``sdx[eseg_k + int(res)]``.
    """
    n, m = seg.size, sdx.size
    step_i = int(step)
    span = int(math.ceil(length))  # seg - eseg < len  <=>  seg < eseg + ceil(len)
    rows: list[tuple[int, int, int, float, int]] = []  # (counter, a, b, start, eseg)
    a, eseg, start = 0, 0, float(sdx[0])
    while True:
        nxt = max(a, int(np.searchsorted(seg, eseg + step_i, side="left")))
        end = max(a, int(np.searchsorted(seg, eseg + span, side="left")))
        last = max(end, nxt)
        rows.append((len(rows), a, min(last + 1, n), start, eseg))
        if last >= n - 1:
            break
        if eseg + step_i < m:
            start = float(sdx[eseg + step_i])
        a, eseg = nxt, int(seg[nxt])
    counter, a_, b_, start_, eseg_ = (np.array(column) for column in zip(*rows))
    return _Extents(counter, a_, b_, start_.astype(np.float64), eseg_)


@dataclass
class _Elements:
    """Photons of the extents that go to the fit, extent-major, in traversal order within an extent."""

    pidx: np.ndarray  # photon index in the beam arrays
    x: np.ndarray  # float32 along-track distance from the extent centre, as float64
    counts: np.ndarray  # photons per kept extent


def _expand(
    ext: _Extents, seg: np.ndarray, along: np.ndarray, sdx: np.ndarray, sel: np.ndarray, parms: Atl06Parms
) -> tuple[np.ndarray, _Elements]:
    """Gather the selected photons of every extent, apply the cnt/ats pre-check, and return kept extents."""
    cs = np.zeros(sel.size + 1, dtype=np.int64)
    np.cumsum(sel, out=cs[1:])
    sel_idx = np.flatnonzero(sel)
    lo, hi = cs[ext.a], cs[ext.b]
    c = hi - lo
    e = np.repeat(np.arange(c.size), c)
    pidx = sel_idx[np.arange(e.size) - np.repeat(np.cumsum(c) - c - lo, c)]
    pseg = seg[pidx]
    dist = (sdx[pseg] - ext.start[e]) + along[pidx].astype(np.float64)
    member = (pseg - ext.eseg[e]) < parms.len if parms.dist_in_seg else dist < parms.len
    e, pidx = e[member], pidx[member]
    x32 = (dist[member] - parms.extent_length / 2.0).astype(np.float32)
    n = np.bincount(e, minlength=c.size)
    valid = n >= parms.cnt
    first = np.cumsum(n) - n
    multi = n > 1
    spread = x32[first[multi] + n[multi] - 1] - x32[first[multi]]  # float32 difference, in traversal order
    valid[np.flatnonzero(multi)[spread.astype(np.float64) < parms.ats]] = False  # compared as double
    keep = (valid | parms.pass_invalid) & (n > 0)
    kept = np.flatnonzero(keep)
    on = keep[e]
    return kept, _Elements(pidx[on], x32[on].astype(np.float64), n[kept])


# --------------------------------------------------------------------------------------------------
# Least-squares fit and iterative window refinement (Atl06Dispatch.cpp)
# --------------------------------------------------------------------------------------------------


def _offsets(counts: np.ndarray) -> np.ndarray:
    offs = np.zeros(counts.size, dtype=np.intp)
    np.cumsum(counts[:-1], out=offs[1:])
    return offs


def _group_lsf(
    x: np.ndarray, h: np.ndarray, offs: np.ndarray, n: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unweighted LSF with G = [1, x] per group; returns (i11, i12, h_mean, slope).

    ``(GᵀG)⁻¹ = [[i11, i12], [i12, i22]]``. The fitted value of any quantity v at x = 0 is
    ``i11 Σv + i12 Σxv``, i.e. Σ a_i v_i with ``a_i = i11 + i12 x_i``. ``y_sigma = sqrt(Σ a_i²) = sqrt(i11)``.
    There is no guard against D = 0, as in SlideRule: a degenerate group yields inf/NaN.
    """
    sx = np.add.reduceat(x, offs)
    sxx = np.add.reduceat(x * x, offs)
    sh = np.add.reduceat(h, offs)
    sxh = np.add.reduceat(x * h, offs)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        det = 1.0 / (n * sxx - sx * sx)
        i11, i12, i22 = sxx * det, -sx * det, n * det
        return i11, i12, i11 * sh + i12 * sxh, i12 * sh + i22 * sxh


def lsf(x: Sequence[float] | np.ndarray, h: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Least-squares line through (x, h) evaluated at x = 0: (h_mean, dh_fit_dx, y_sigma).

    This is ``Atl06Dispatch::lsf`` and runs the same code as the engine.
    """
    xa, ha = np.asarray(x, dtype=np.float64), np.asarray(h, dtype=np.float64)
    if xa.shape != ha.shape or xa.ndim != 1 or xa.size == 0:
        raise ValueError("x and h must be non-empty 1-D arrays of equal length")
    i11, _, hm, sl = _group_lsf(xa, ha, np.zeros(1, dtype=np.intp), np.array([float(xa.size)]))
    with np.errstate(invalid="ignore"):
        return float(hm[0]), float(sl[0]), float(np.sqrt(i11[0]))


def _cmax(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """C's ``MAX(a, b)`` macro, ``a > b ? a : b``, including how it treats NaN."""
    return np.where(a > b, a, b)


def _sort_within_groups(r: np.ndarray, gid: np.ndarray, rmin: np.ndarray, rmax: np.ndarray) -> np.ndarray:
    """Residuals sorted ascending inside each contiguous group, with a single composite-key argsort."""
    span = rmax - rmin
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(span > 0, 0.5 / span, 0.0)
        frac = (r - rmin[gid]) * scale[gid]
    np.nan_to_num(frac, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return r[np.argsort(gid + frac)]


def _robust_spread(
    rs: np.ndarray,
    offs: np.ndarray,
    counts: np.ndarray,
    gid: np.ndarray,
    zmin: np.ndarray,
    zmax: np.ndarray,
    n_bg: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Background-corrected robust spread sigma_r (ATBD §5.9); returns (sigma_r, out_of_bounds)."""
    n = counts.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        bck = n_bg / (zmax - zmin)
        n_sig = n - n_bg
        local = np.arange(rs.size) - offs[gid]
        base = (rs - zmin[gid]) * bck[gid]
        stop0 = ~((local + 1.5) < 0.25 * n_sig[gid] + base)
        stop1 = ~((local - 0.5) > 0.75 * n_sig[gid] + base)
        i0 = np.minimum(np.minimum.reduceat(np.where(stop0, local, rs.size), offs), counts).astype(np.float64)
        i1 = np.maximum.reduceat(np.where(stop1, local, -1), offs).astype(np.float64)
        refind = i1 < i0
        i0 = np.where(refind, np.trunc(n / 2.0 - n_sig / 4.0 + 0.5) - 1.0, i0)
        i1 = np.where(refind, np.trunc(n / 2.0 + n_sig / 4.0 + 0.5), i1)
        in_bounds = (i0 >= 0) & (i1 < n)
        j0 = offs + np.where(in_bounds, i0, 0).astype(np.intp)
        j1 = offs + np.where(in_bounds, i1, 0).astype(np.intp)
        spread = np.where(in_bounds, (rs[j1] - rs[j0]) / RDE_SCALE_FACTOR, 0.0)
        few_signal = n_sig <= 1
        sigma_r = np.where(few_signal, (zmax - zmin) / n, spread)
    return sigma_r, ~few_signal & ~in_bounds


@dataclass
class _FitResult:
    """Per-extent fit results of one block, plus which elements form each extent's final photon set."""

    h_mean: np.ndarray  # relative to the extent's reference height
    slope: np.ndarray
    i11: np.ndarray
    i12: np.ndarray
    window: np.ndarray  # float32
    rms: np.ndarray
    n_fit: np.ndarray
    pflags: np.ndarray
    final: np.ndarray  # bool per element


def _fit_block(x: np.ndarray, h: np.ndarray, counts: np.ndarray, bg_dens: np.ndarray, p: Atl06Parms) -> _FitResult:
    """Run the iterative fit on a block of extents (elements contiguous per extent, in extent order)."""
    n_ext = counts.size
    res = _FitResult(
        h_mean=np.zeros(n_ext),
        slope=np.zeros(n_ext),
        i11=np.zeros(n_ext),
        i12=np.zeros(n_ext),
        window=np.zeros(n_ext, dtype=np.float32),
        rms=np.zeros(n_ext),
        n_fit=counts.astype(np.int64),
        pflags=np.zeros(n_ext, dtype=np.uint16),
        final=np.zeros(x.size, dtype=bool),
    )
    iteration = np.zeros(n_ext, dtype=np.int64)
    act = np.arange(n_ext)  # active extents
    elems = np.arange(x.size)  # their current photon sets (S), contiguous per extent
    sizes = counts.astype(np.int64)
    while act.size:
        offs = _offsets(sizes)
        gid = np.repeat(np.arange(act.size), sizes)
        xs, hs, n = x[elems], h[elems], sizes.astype(np.float64)
        i11, i12, hm, sl = _group_lsf(xs, hs, offs, n)
        with np.errstate(invalid="ignore", over="ignore"):
            r = hs - (hm[gid] + xs * sl[gid])
        rmin, rmax = np.minimum.reduceat(r, offs), np.maximum.reduceat(r, offs)
        rs = _sort_within_groups(r, gid, rmin, rmax)
        first = iteration[act] == 0
        w_prev = res.window[act].astype(np.float64)
        zmin = np.where(first, rmin, -w_prev / 2.0)
        zmax = np.where(first, rmax, w_prev / 2.0)
        n_bg = np.where(first, bg_dens[act] * (zmax - zmin), bg_dens[act] * w_prev)
        sigma_r, oob = _robust_spread(rs, offs, sizes, gid, zmin, zmax, n_bg)
        res.pflags[act[oob]] |= PFLAG_OUT_OF_BOUNDS
        slope32 = sl.astype(np.float32).astype(np.float64)  # elevation.dh_fit_dx is a float
        with np.errstate(invalid="ignore", over="ignore"):
            sigma_expected = np.sqrt(_SE1 + SIGMA_BEAM**2 * slope32**2)
            sigma_r = np.where(sigma_r > p.sigma_r_max, p.sigma_r_max, sigma_r)
            window = _cmax(_cmax(_cmax(p.H_min_win, 6.0 * sigma_expected), 6.0 * sigma_r), 0.75 * w_prev)
            window = window.astype(np.float32)  # elevation.window_height is a float
            res.window[act] = window
            keep = np.abs(r) < (window.astype(np.float64) / 2.0)[gid]
        n_next = np.add.reduceat(keep.astype(np.int64), offs)
        x_lo = np.minimum.reduceat(np.where(keep, xs, _DBL_MAX), offs)
        x_hi = np.maximum.reduceat(np.where(keep, xs, -_DBL_MAX), offs)
        too_few = n_next < p.cnt
        with np.errstate(over="ignore"):  # an empty window gives -DBL_MAX - DBL_MAX, as in C
            too_short = ~too_few & ((x_hi - x_lo) < p.ats)
        converged = ~too_few & ~too_short & (n_next == sizes)
        again = ~too_few & ~too_short & ~converged
        iteration[act[again]] += 1
        maxed = again & (iteration[act] >= p.maxi)
        res.pflags[act[too_few]] |= PFLAG_TOO_FEW_PHOTONS
        res.pflags[act[too_short]] |= PFLAG_SPREAD_TOO_SHORT
        res.pflags[act[maxed]] |= PFLAG_MAX_ITERATIONS_REACHED
        trim = again & ~maxed
        done = ~trim
        if done.any():
            d = act[done]
            with np.errstate(invalid="ignore", over="ignore"):
                rms = np.sqrt(np.add.reduceat(r * r, offs) / n)
            res.h_mean[d], res.slope[d], res.i11[d], res.i12[d] = hm[done], sl[done], i11[done], i12[done]
            res.rms[d], res.n_fit[d] = rms[done], sizes[done]
            res.final[elems[done[gid]]] = True
        nxt = trim[gid] & keep
        elems, act, sizes = elems[nxt], act[trim], n_next[trim]
    return res


# --------------------------------------------------------------------------------------------------
# Per-extent ancillary values
# --------------------------------------------------------------------------------------------------


def interpolate_background(bckgrd_time: np.ndarray, bckgrd_rate: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Background rate at times t, as ``Atl03Reader::calculateBackground`` computes it.

    It finds the first ``bckgrd_atlas/delta_time >= t``. If that is the first sample it uses its rate; if
    there is none it uses the last rate; otherwise it interpolates linearly from the previous sample.
    """
    bt = np.asarray(bckgrd_time, dtype=np.float64)
    br = np.asarray(bckgrd_rate).astype(np.float64)
    if bt.size == 0:
        raise Atl03FormatError("bckgrd_atlas/bckgrd_rate is empty")
    t = np.asarray(t, dtype=np.float64)
    j = np.searchsorted(bt, t, side="left")
    out = np.full(t.shape, br[-1])
    out[j == 0] = br[0]
    mid = (j > 0) & (j < bt.size)
    jm = j[mid]
    run, rise = bt[jm] - bt[jm - 1], br[jm] - br[jm - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        out[mid] = ((rise / run) * (t[mid] - bt[jm - 1])) + br[jm - 1]
    return out


def _segment_id(beam: Atl03Beam, ext: _Extents, kept: np.ndarray, parms: Atl06Parms) -> np.ndarray:
    """``Atl03Reader::calculateSegmentId``: the ATL06 segment closest to the extent centre."""
    base = beam.segment_id[ext.eseg[kept]].astype(np.float64)
    if parms.dist_in_seg:
        sid = base + int(parms.len / 2.0)
    else:
        portion = beam.dist_ph_along[ext.a[kept]].astype(np.float64) / ATL03_SEGMENT_LENGTH
        sid = base + portion + int((parms.len / ATL03_SEGMENT_LENGTH) / 2.0)
    return np.trunc(sid + 0.5).astype(np.int64).astype(np.uint32)


def _background_density(beam: Atl03Beam, eseg: np.ndarray, parms: Atl06Parms) -> np.ndarray:
    """Expected background photons per metre of window in each extent (ATBD 5.4 1d, 5.7 1c)."""
    rate = interpolate_background(beam.bckgrd_delta_time, beam.bckgrd_rate, beam.segment_delta_time[eseg])
    v = np.asarray(beam.velocity_sc, dtype=np.float64).reshape(-1, 3)[eseg]
    speed = np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1] + v[:, 2] * v[:, 2]).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        pulses = (parms.extent_length * PULSE_REPETITION_FREQUENCY) / speed.astype(np.float64)
        return pulses * rate / (SPEED_OF_LIGHT / 2.0)


def _fitted(values: np.ndarray, x: np.ndarray, offs: np.ndarray, i11: np.ndarray, i12: np.ndarray) -> np.ndarray:
    """Σ a_i v_i per group, computed relative to the group's first value for precision (Σ a_i = 1)."""
    ref = values[offs]
    dv = values - np.repeat(ref, np.diff(np.append(offs, values.size)))
    with np.errstate(invalid="ignore"):  # degenerate fits (inf coefficients) give NaN, as in C
        return ref + (i11 * np.add.reduceat(dv, offs) + i12 * np.add.reduceat(x * dv, offs))


# --------------------------------------------------------------------------------------------------
# Beam engine
# --------------------------------------------------------------------------------------------------

_CHUNK_PHOTONS = 1 << 19  # traversed photons per chunk of extents: bounds memory, keeps sorts in cache


def _chunks(ext: _Extents) -> Iterator[_Extents]:
    """Consecutive groups of extents whose photon ranges add up to about ``_CHUNK_PHOTONS``."""
    ends = np.cumsum(ext.b - ext.a)
    k0 = 0
    while k0 < ends.size:
        base = int(ends[k0 - 1]) if k0 else 0
        k1 = max(k0 + 1, int(np.searchsorted(ends, base + _CHUNK_PHOTONS, side="right")))
        yield _Extents(ext.counter[k0:k1], ext.a[k0:k1], ext.b[k0:k1], ext.start[k0:k1], ext.eseg[k0:k1])
        k0 = k1


def _empty_columns() -> dict[str, np.ndarray]:
    cols = {c: np.empty(0, dtype=OUTPUT_DTYPES[c]) for c in OUTPUT_COLUMNS}
    cols.update(time=np.empty(0, dtype=np.int64), latitude=np.empty(0), longitude=np.empty(0))
    return cols


def fit_beam(
    beam: Atl03Beam,
    parms: Atl06Parms | Mapping[str, Any] | None,
    granule: GranuleInfo,
    photon_mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """ATL06-SR elevations of one beam as columns.

    The columns are those of :data:`OUTPUT_COLUMNS`, plus ``time`` (Unix ns, int64), ``latitude`` and
    ``longitude``. Rows are in extent order.
    """
    p = parse_parms(parms)
    n_ph = beam.h_ph.size
    if n_ph == 0:
        return _empty_columns()
    seg = np.repeat(np.arange(beam.segment_ph_cnt.size), np.asarray(beam.segment_ph_cnt, dtype=np.int64))
    if seg.size != n_ph:
        raise Atl03FormatError(
            f"{beam.beam}: segment_ph_cnt sums to {seg.size} photons but heights has {n_ph} in the region"
        )
    sel = select_photons(beam, p, photon_mask, granule.version)
    sdx = np.asarray(beam.segment_dist_x, dtype=np.float64)
    along = np.asarray(beam.dist_ph_along, dtype=np.float32)
    if p.dist_in_seg:
        ext = _extents_in_segments(seg, sdx, p.len, p.res)
    else:
        ext = _extents_in_meters(seg, along, sdx, p.len, p.res)
    chunks = _chunks(ext)
    return concat_columns([_fit_extents(beam, p, granule, chunk, seg, along, sdx, sel) for chunk in chunks])


def _fit_extents(
    beam: Atl03Beam,
    p: Atl06Parms,
    granule: GranuleInfo,
    ext: _Extents,
    seg: np.ndarray,
    along: np.ndarray,
    sdx: np.ndarray,
    sel: np.ndarray,
) -> dict[str, np.ndarray]:
    """Expand, pre-check, fit and assemble one chunk of extents."""
    kept, el = _expand(ext, seg, along, sdx, sel, p)
    if kept.size == 0:
        return _empty_columns()
    h = beam.h_ph[el.pidx].astype(np.float64)
    h_ref = h[_offsets(el.counts)]
    bg_dens = _background_density(beam, ext.eseg[kept], p)
    fit = _fit_block(el.x, h - np.repeat(h_ref, el.counts), el.counts, bg_dens, p)
    return _assemble(beam, p, granule, ext, kept, el, h_ref, fit)


def _geolocate(beam: Atl03Beam, pidx: np.ndarray, x: np.ndarray, fit: _FitResult) -> dict[str, np.ndarray]:
    """Latitude, longitude, time (Unix ns) and y_atc of the fitted line at each extent centre.

    ``pidx``/``x`` are the photons of every extent's final set, extent by extent.
    """
    offs = _offsets(fit.n_fit)
    lat = _fitted(beam.lat_ph[pidx].astype(np.float64), x, offs, fit.i11, fit.i12)
    lon_ph = beam.lon_ph[pidx].astype(np.float64)
    first_lon = lon_ph[offs]
    wrap = (first_lon < -150.0) | (first_lon > 150.0)  # fit in 0..360, map back to -180..180
    lon_ph = np.where(np.repeat(wrap, fit.n_fit), np.fmod(lon_ph + 360.0, 360.0), lon_ph)
    lon = _fitted(lon_ph, x, offs, fit.i11, fit.i12)
    lon = np.where(wrap, np.fmod(lon + 180.0, 360.0) - 180.0, lon)
    dt = beam.delta_time[pidx].astype(np.float64)
    t_ref = dt[offs]
    offset_ns = np.floor((_fitted(dt, x, offs, fit.i11, fit.i12) - t_ref) * 1e9)
    finite = np.isfinite(offset_ns)  # a degenerate fit (one photon) is NaN: INT64_MIN (NaT), as the C cast gives
    time_ns = np.where(
        finite, delta_time_to_unix_ns(t_ref) + np.where(finite, offset_ns, 0.0).astype(np.int64), np.iinfo(np.int64).min
    )
    y_atc = _fitted(beam.dist_ph_across[pidx].astype(np.float64), x, offs, fit.i11, fit.i12)
    return {"latitude": lat, "longitude": lon, "time": time_ns, "y_atc": y_atc}


def _assemble(
    beam: Atl03Beam,
    p: Atl06Parms,
    granule: GranuleInfo,
    ext: _Extents,
    kept: np.ndarray,
    el: _Elements,
    h_ref: np.ndarray,
    fit: _FitResult,
) -> dict[str, np.ndarray]:
    """Build the output columns of one beam from the fit results."""
    geo = _geolocate(beam, el.pidx[fit.final], el.x[fit.final], fit)
    invalid = (fit.pflags & PFLAGS_INVALID) != 0
    rms32 = np.where(invalid, 0.0, fit.rms).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        ysig32 = np.sqrt(fit.i11).astype(np.float32)
        h_sigma = np.where(invalid, np.float32(0.0), rms32 * ysig32).astype(np.float32)
    n = kept.size
    spot, gt = spot_number(granule.sc_orient, beam.track, beam.pair), ground_track(granule.sc_orient, beam.track, beam.pair)
    return {
        "extent_id": encode_extent_id(granule.rgt, granule.cycle, granule.region, beam.track, beam.pair, ext.counter[kept]),
        "segment_id": _segment_id(beam, ext, kept, p),
        "n_fit_photons": fit.n_fit.astype(np.int32),
        "pflags": fit.pflags.astype(np.uint16),
        "rgt": np.full(n, granule.rgt, dtype=np.uint16),
        "cycle": np.full(n, granule.cycle, dtype=np.uint8),
        "region": np.full(n, granule.region, dtype=np.uint8),
        "spot": np.full(n, spot, dtype=np.uint8),
        "gt": np.full(n, gt, dtype=np.uint8),
        "h_mean": h_ref + fit.h_mean,
        "dh_fit_dx": fit.slope.astype(np.float32),
        "x_atc": (ext.start[kept] + p.extent_length / 2.0).astype(np.float32),
        "y_atc": geo["y_atc"].astype(np.float32),
        "w_surface_window_final": fit.window.astype(np.float32),
        "rms_misfit": rms32,
        "h_sigma": h_sigma,
        "time": geo["time"],
        "latitude": geo["latitude"],
        "longitude": geo["longitude"],
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Output frame (sliderule client: icesat2.__flattenbatches + sliderule.todataframe)
# --------------------------------------------------------------------------------------------------


def empty_frame() -> gpd.GeoDataFrame:
    """What the client returns when there are no elevations: geometry only, CRS EPSG:7912."""
    import geopandas as gpd

    return gpd.GeoDataFrame(geometry=gpd.points_from_xy([], [], []), crs=ICESAT2_CRS)


def to_geodataframe(columns: Mapping[str, np.ndarray], keep_id: bool = False) -> gpd.GeoDataFrame:
    """Columns -> the ``atl06p`` GeoDataFrame: index ``time`` (datetime64[ns], sorted), Point geometry, EPSG:7912."""
    import geopandas as gpd
    import pandas as pd

    if len(columns.get("h_mean", ())) == 0:
        return empty_frame()
    names = [c for c in OUTPUT_COLUMNS if keep_id or c != "extent_id"]
    index = pd.DatetimeIndex(np.asarray(columns["time"], dtype=np.int64).view("datetime64[ns]"), name="time")
    df = pd.DataFrame({c: np.asarray(columns[c], dtype=OUTPUT_DTYPES[c]) for c in names}, index=index)
    geometry = gpd.points_from_xy(columns["longitude"], columns["latitude"])
    gdf = gpd.GeoDataFrame(df, geometry=geometry, crs=ICESAT2_CRS)
    return gdf.sort_index(kind="stable")


def concat_columns(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-beam column dicts."""
    if not parts:
        return _empty_columns()
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# --------------------------------------------------------------------------------------------------
# Reader (ATL03 v006 HDF5, or any object with h5py-like __getitem__)
# --------------------------------------------------------------------------------------------------

AoiMaskFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (lon, lat) -> bool per point


def _read(h5: Any, path: str, sl: slice | tuple[slice, int] | None = None) -> np.ndarray:
    try:
        ds = h5[path]
    except KeyError:
        raise Atl03FormatError(f"missing dataset {path}") from None
    return np.asarray(ds[()] if sl is None else ds[sl])


def _scalar(h5: Any, path: str) -> int:
    v = _read(h5, path).ravel()
    if v.size == 0:
        raise Atl03FormatError(f"dataset {path} is empty")
    return int(v[0])


def _has(h5: Any, path: str) -> bool:
    try:
        return path in h5
    except TypeError:
        return True


def _file_name(h5: Any) -> str | None:
    name = getattr(h5, "filename", None)
    return os.path.basename(name) if isinstance(name, str) else None


def read_granule_info(h5: Any, granule_name: str | None = None) -> GranuleInfo:
    """rgt, cycle, region and release from the granule name (as SlideRule parses it); sc_orient[0] from orbit_info.

    Without a parseable name, rgt and cycle come from ``orbit_info`` and region is 0 (a warning is logged).
    """
    name = granule_name or _file_name(h5)
    sc_orient = _scalar(h5, "orbit_info/sc_orient")
    parsed = parse_granule_name(name) if name else None
    rgt_file, cycle_file = _scalar(h5, "orbit_info/rgt"), _scalar(h5, "orbit_info/cycle_number")
    if parsed is None:
        log.warning("granule name %r does not parse as ATL03_..._TTTTCCRR_VVV_RR.h5; region set to 0", name)
        return GranuleInfo(rgt_file, cycle_file, 0, sc_orient, None, name)
    if (parsed["rgt"], parsed["cycle"]) != (rgt_file, cycle_file):
        log.warning(
            "%s: name says rgt %s cycle %s, orbit_info says rgt %s cycle %s; using the name (as SlideRule does)",
            name, parsed["rgt"], parsed["cycle"], rgt_file, cycle_file,
        )  # fmt: skip
    return GranuleInfo(
        int(parsed["rgt"]), int(parsed["cycle"]), int(parsed["region"]), sc_orient, int(parsed["version"]), name
    )


def _check_photon_index(beam: str, cnt: np.ndarray, ph_index_beg: np.ndarray) -> None:
    """``ph_index_beg`` (1-based, 0 = empty) must agree with the running sum of ``segment_ph_cnt``."""
    expected = np.cumsum(cnt) - cnt + 1
    bad = (cnt > 0) & (ph_index_beg != expected)
    if bad.any():
        s = int(np.flatnonzero(bad)[0])
        raise Atl03FormatError(
            f"{beam}/geolocation: ph_index_beg[{s}]={int(ph_index_beg[s])} disagrees with segment_ph_cnt "
            f"(expected {int(expected[s])})"
        )


def read_atl03_beam(
    h5: Any,
    beam: str,
    parms: Atl06Parms | Mapping[str, Any] | None = None,
    *,
    aoi_mask_fn: AoiMaskFn | None = None,
    aoi_mode: Literal["poly", "raster"] = "poly",
    version: int | None = 6,
) -> Atl03Beam | None:
    """Read what the engine needs from one beam of an ATL03 granule, cut to the AOI region.

    The datasets read are those SlideRule's ``Atl03Reader`` reads:

    - from ``heights``: the photon datasets (``weight_ph`` only when the YAPC stage is on);
    - from ``geolocation``: ``segment_ph_cnt``, ``ph_index_beg``, ``reference_photon_lat/lon``,
      ``segment_id``, ``segment_dist_x``, ``velocity_sc`` and ``delta_time``;
    - from ``bckgrd_atlas``: ``delta_time`` and ``bckgrd_rate``.

    Photon datasets are read only over the region's photon range, and ``signal_conf_ph`` only in the
    ``srt`` column unless ``srt`` is dynamic. Returns None when the beam is absent or the region is empty.
    """
    p = parse_parms(parms)
    g = f"{beam}/geolocation"
    if not _has(h5, f"{beam}/heights/h_ph"):
        log.warning("%s: beam not present in the granule; skipped", beam)
        return None
    cnt = _read(h5, f"{g}/segment_ph_cnt").astype(np.int64)
    _check_photon_index(beam, cnt, _read(h5, f"{g}/ph_index_beg").astype(np.int64))
    seg_lat, seg_lon = _read(h5, f"{g}/reference_photon_lat"), _read(h5, f"{g}/reference_photon_lon")
    included = None
    if aoi_mask_fn is not None:
        has_ph = cnt != 0
        included = np.zeros(cnt.size, dtype=bool)
        included[has_ph] = np.asarray(aoi_mask_fn(seg_lon[has_ph], seg_lat[has_ph]), dtype=bool)
    region = compute_region(cnt, included, aoi_mode)
    if region is None:
        return None
    ss = slice(region.first_segment, region.first_segment + region.num_segments)
    ps = slice(region.first_photon, region.first_photon + region.num_photons)
    hp = f"{beam}/heights"
    conf = _read(h5, f"{hp}/signal_conf_ph", ps if p.srt == -1 else (ps, p.srt))
    weight = None
    if p.yapc_score is not None and (version is None or version >= 6):
        weight = _read(h5, f"{hp}/weight_ph", ps)
    out = Atl03Beam(
        beam=beam,
        delta_time=_read(h5, f"{hp}/delta_time", ps),
        lat_ph=_read(h5, f"{hp}/lat_ph", ps),
        lon_ph=_read(h5, f"{hp}/lon_ph", ps),
        h_ph=_read(h5, f"{hp}/h_ph", ps),
        dist_ph_along=_read(h5, f"{hp}/dist_ph_along", ps),
        dist_ph_across=_read(h5, f"{hp}/dist_ph_across", ps),
        signal_conf_ph=conf,
        quality_ph=_read(h5, f"{hp}/quality_ph", ps),
        segment_id=_read(h5, f"{g}/segment_id", ss),
        segment_dist_x=_read(h5, f"{g}/segment_dist_x", ss),
        segment_ph_cnt=cnt[ss],
        segment_delta_time=_read(h5, f"{g}/delta_time", ss),
        velocity_sc=_read(h5, f"{g}/velocity_sc", ss),
        bckgrd_delta_time=_read(h5, f"{beam}/bckgrd_atlas/delta_time"),
        bckgrd_rate=_read(h5, f"{beam}/bckgrd_atlas/bckgrd_rate"),
        weight_ph=weight,
        inclusion=region.inclusion,
        first_photon=region.first_photon,
        first_segment=region.first_segment,
    )
    if out.h_ph.size != region.num_photons:
        raise Atl03FormatError(
            f"{hp}: {out.h_ph.size} photons read where segment_ph_cnt promises {region.num_photons}"
        )
    return out


@contextmanager
def _opened(h5file_or_path: Any) -> Iterator[Any]:
    if isinstance(h5file_or_path, (str, os.PathLike)):
        import h5py

        with h5py.File(h5file_or_path, "r") as f:
            yield f
    else:
        yield h5file_or_path


def process_granule(
    h5file_or_path: Any,
    parms: Mapping[str, Any] | Atl06Parms | None = None,
    aoi_mask_fn: AoiMaskFn | None = None,
    granule_name: str | None = None,
    *,
    aoi_mode: Literal["poly", "raster"] = "poly",
    keep_id: bool | None = None,
) -> gpd.GeoDataFrame:
    """ATL06-SR elevations of one ATL03 granule, as the GeoDataFrame ``sliderule.icesat2.atl06p`` returns.

    ``h5file_or_path`` is a path, an open ``h5py.File``, or any object whose ``obj["gt1l/heights/h_ph"]``
    returns something sliceable. ``aoi_mask_fn(lon, lat)`` tests each segment's reference photon (for
    example ``is2cloud.aoi.AOI.contains``). ``aoi_mode`` chooses SlideRule's ``poly`` or ``region_mask``
    (``raster``) semantics. ``granule_name`` defaults to the file's name; rgt, cycle and region are taken
    from it. ``keep_id`` overrides ``parms["keep_id"]`` and, as in the client, keeps the ``extent_id``
    column.
    """
    p = parse_parms(parms)
    if keep_id is not None:
        p = replace(p, keep_id=bool(keep_id))
    if granule_name is None and isinstance(h5file_or_path, (str, os.PathLike)):
        granule_name = Path(h5file_or_path).name
    with _opened(h5file_or_path) as h5:
        info = read_granule_info(h5, granule_name)
        parts = []
        for beam in p.beams:
            data = read_atl03_beam(h5, beam, p, aoi_mask_fn=aoi_mask_fn, aoi_mode=aoi_mode, version=info.version)
            if data is not None:
                parts.append(fit_beam(data, p, info))
    return to_geodataframe(concat_columns(parts), keep_id=p.keep_id)


__all__ = [
    "ATLAS_SDP_EPOCH_GPS",
    "BEAMS",
    "DEFAULT_PARMS",
    "ICESAT2_CRS",
    "OUTPUT_COLUMNS",
    "OUTPUT_DTYPES",
    "PFLAG_MAX_ITERATIONS_REACHED",
    "PFLAG_OUT_OF_BOUNDS",
    "PFLAG_SPREAD_TOO_SHORT",
    "PFLAG_TOO_FEW_PHOTONS",
    "Atl03Beam",
    "Atl03FormatError",
    "Atl06Parms",
    "GranuleInfo",
    "ParameterError",
    "Region",
    "compute_region",
    "concat_columns",
    "decode_extent_id",
    "delta_time_to_unix_ns",
    "empty_frame",
    "encode_extent_id",
    "fit_beam",
    "ground_track",
    "interpolate_background",
    "leap_seconds",
    "lsf",
    "parse_granule_name",
    "parse_parms",
    "photon_confidence",
    "process_granule",
    "read_atl03_beam",
    "read_granule_info",
    "select_photons",
    "spot_number",
    "to_geodataframe",
]
