"""ICESat-2 mission geometry: time, orbit, ground tracks, beams, granule regions, names and the planner.

The model is a circular orbit of 92 degrees inclination over a spherical earth whose ground track
repeats after 1387 revolutions (reference ground tracks, RGTs). The repeat is 91 *nodal* days (the
earth's rotation relative to the slowly precessing orbit plane), which makes the nodal period
5657.38 s and one cycle 90.82 solar days. The period and the anchor were fitted to the start times of
real granules (ATL03_20181014000347_02350101, _02950102 of 2018-10-17, _13810110 of 2018-12-28,
_08110112/_08110212, ATL06_..._10220511 of 2019-12-02, _07210811 of 2020-08-11,
ATL03_20230618223036_13681901): the synthetic names of those granules agree with the real ones to
within ~10 s over five years. The longitude anchor puts RGT 295 (cycle 1, region 2) through
26.99985N, -106.98739E, the first photon of the real ATL03_20181017222812_02950102 granule.

Coordinates: along-track distance ``x`` is measured on the earth-fixed ground track of the RGT from
the ascending node (so ``segment_id = 1 + floor(x / 20 m)``); across-track offsets ``y`` are positive
to the *left* of the direction of travel (x forward, y left, z up), so gt1l is at about +3345 m and
gt3r at about -3345 m. Latitudes and longitudes are spherical (radius 6371008.8 m).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterable

import numpy as np

# -- time ---------------------------------------------------------------------------------------

ATLAS_SDP_GPS_EPOCH = 1198800018.0  # GPS seconds of 2018-01-01T00:00:00Z (ancillary_data/atlas_sdp_gps_epoch)
GPS_EPOCH_UNIX = 315964800.0  # 1980-01-06T00:00:00Z
LEAP_SECONDS = 18.0  # GPS - UTC since 2017-01-01
ATLAS_EPOCH_UNIX = ATLAS_SDP_GPS_EPOCH + GPS_EPOCH_UNIX - LEAP_SECONDS  # 1514764800.0 = 2018-01-01T00:00:00Z
SECONDS_PER_GPS_WEEK = 604800.0
MISSION_START_DELTA_TIME = 24710205.39202261  # first ATLAS science data, 2018-10-13 (read-ICESat-2)


def delta_time_to_unix(delta_time: Any) -> Any:
    """ATLAS ``delta_time`` (s since 2018-01-01, GPS) -> unix seconds (UTC, no leap seconds)."""
    return np.asarray(delta_time, dtype="f8") + ATLAS_EPOCH_UNIX


def unix_to_delta_time(unix: Any) -> Any:
    return np.asarray(unix, dtype="f8") - ATLAS_EPOCH_UNIX


def delta_time_to_datetime(delta_time: float) -> datetime:
    return datetime.fromtimestamp(float(delta_time) + ATLAS_EPOCH_UNIX, tz=timezone.utc)


def datetime_to_delta_time(when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp() - ATLAS_EPOCH_UNIX


def gps_week_sow(delta_time: float) -> tuple[int, float]:
    """GPS week number and seconds of week of an ATLAS ``delta_time``."""
    gps = float(delta_time) + ATLAS_SDP_GPS_EPOCH
    week = int(gps // SECONDS_PER_GPS_WEEK)
    return week, gps - week * SECONDS_PER_GPS_WEEK


def utc_string(delta_time: float, digits: int = 6) -> str:
    """ISO UTC string with ``digits`` fractional digits and a trailing Z, as in ancillary_data."""
    d = delta_time_to_datetime(delta_time)
    text = d.strftime("%Y-%m-%dT%H:%M:%S.%f")
    text = text[: len(text) - (6 - digits)] if digits < 6 else text
    return (text.rstrip(".") if digits == 0 else text) + "Z"


# -- orbit constants ----------------------------------------------------------------------------

N_RGT = 1387
REPEAT_NODAL_DAYS = 91
ORBIT_PERIOD_S = 5657.3817  # nodal period, fitted to real granule start times (see module docstring)
CYCLE_DURATION_S = N_RGT * ORBIT_PERIOD_S  # 90.82 days
INCLINATION_DEG = 92.0
EARTH_RADIUS_M = 6371008.8
GM_EARTH = 3.986004418e14
SEMI_MAJOR_AXIS_M = (GM_EARTH * (ORBIT_PERIOD_S / (2 * math.pi)) ** 2) ** (1.0 / 3.0)  # ~6.86e6 m
ORBIT_SPEED_MPS = 2 * math.pi * SEMI_MAJOR_AXIS_M / ORBIT_PERIOD_S  # ~7.6 km/s
PRF_HZ = 10000.0
SEGMENT_LENGTH_M = 20.0
# Earth rotation relative to the orbit plane, chosen so that the ground track repeats exactly after
# 1387 revolutions: the node moves west by 360*91/1387 = 23.62 degrees per revolution.
K_ROT = REPEAT_NODAL_DAYS / N_RGT  # (earth rotation during one revolution) / (2 pi)
OMEGA_REL = 2 * math.pi * K_ROT / ORBIT_PERIOD_S
NODE_SHIFT_DEG = -360.0 * K_ROT

ANCHOR_RGT = 235
ANCHOR_CYCLE = 1
ANCHOR_NODE_UNIX = 1539475426.6009  # 2018-10-14T00:03:46.6Z, ascending node of RGT 235 in cycle 1
ANCHOR_LAN_DEG = -127.0020  # puts gt1l of RGT 295 (cycle 1) through the real first photon of 02950102

_SIN_I = math.sin(math.radians(INCLINATION_DEG))
_COS_I = math.cos(math.radians(INCLINATION_DEG))

# -- beams --------------------------------------------------------------------------------------

BEAMS: tuple[str, ...] = ("gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r")
PAIR_SEPARATION_M = 3300.0
BEAM_SEPARATION_M = 90.0
SC_BACKWARD, SC_FORWARD, SC_TRANSITION = 0, 1, 2
_SPOTS = {SC_BACKWARD: (1, 2, 3, 4, 5, 6), SC_FORWARD: (6, 5, 4, 3, 2, 1)}
STRONG_SPOTS = (1, 3, 5)


def beam_offset_m(beam: str) -> float:
    """Nominal across-track offset of a beam from the RGT, positive to the left of travel."""
    pair = int(beam[2])
    return (2 - pair) * PAIR_SEPARATION_M + (0.5 if beam[3] == "l" else -0.5) * BEAM_SEPARATION_M


def sc_orient_for_cycle(cycle: int) -> int:
    """Deterministic spacecraft orientation: two cycles backward, two forward, ... (yaw flips about
    every six months, as on the mission; cycle 1 backward like the real one)."""
    return SC_BACKWARD if ((cycle - 1) // 2) % 2 == 0 else SC_FORWARD


def spot_number(beam: str, sc_orient: int) -> int:
    if sc_orient not in _SPOTS:
        raise ValueError(f"no spot mapping for sc_orient={sc_orient} (transition)")
    return _SPOTS[sc_orient][BEAMS.index(beam)]


def beam_type(beam: str, sc_orient: int) -> str:
    return "strong" if spot_number(beam, sc_orient) in STRONG_SPOTS else "weak"


def pce_number(spot: int) -> int:
    """Photon-counting electronics card of a spot (1,2 -> pce1; 3,4 -> pce2; 5,6 -> pce3)."""
    return (spot + 1) // 2


# -- orbit timeline -----------------------------------------------------------------------------


def orbit_index(rgt: Any, cycle: Any) -> Any:
    """Revolutions since the anchor node (RGT 235, cycle 1)."""
    return (np.asarray(cycle) - ANCHOR_CYCLE) * N_RGT + (np.asarray(rgt) - ANCHOR_RGT)


def node_unix(rgt: Any, cycle: Any) -> Any:
    """Unix time of the ascending-node crossing that starts ``rgt`` in ``cycle``."""
    return ANCHOR_NODE_UNIX + orbit_index(rgt, cycle) * ORBIT_PERIOD_S


def node_delta_time(rgt: Any, cycle: Any) -> Any:
    return node_unix(rgt, cycle) - ATLAS_EPOCH_UNIX


def lan_deg(rgt: Any) -> Any:
    """Longitude of the ascending node of an RGT (the same every cycle), in [-180, 180)."""
    lan = ANCHOR_LAN_DEG + (np.asarray(rgt) - ANCHOR_RGT) * NODE_SHIFT_DEG
    return (lan + 180.0) % 360.0 - 180.0


def orbit_number(rgt: int, cycle: int) -> int:
    """Synthetic absolute orbit number (orbits since launch on 2018-09-15; RGT 1 of cycle 1 is orbit 199)."""
    return int((cycle - 1) * N_RGT + rgt + 198)


def rgt_cycle_at(unix: float) -> tuple[int, int, float]:
    """(rgt, cycle, seconds since that RGT's node) of a unix time."""
    n = math.floor((unix - ANCHOR_NODE_UNIX) / ORBIT_PERIOD_S)
    since = unix - (ANCHOR_NODE_UNIX + n * ORBIT_PERIOD_S)
    k = n + (ANCHOR_RGT - 1) + (ANCHOR_CYCLE - 1) * N_RGT
    return int(k % N_RGT) + 1, int(k // N_RGT) + 1, since


# -- ground track ------------------------------------------------------------------------------


def _node_frame(u: np.ndarray, offset_m: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit position of the (offset) footprint in the node frame (x to the node, z north), before
    the earth rotation since the node is applied."""
    su, cu = np.sin(u), np.cos(u)
    px, py, pz = cu, _COS_I * su, _SIN_I * su
    # earth-fixed velocity direction (per unit u) expressed in the node frame: dp/du - K z x p
    wx = -su + K_ROT * py
    wy = _COS_I * cu - K_ROT * px
    wz = _SIN_I * cu
    # left normal n = p x w
    nx = py * wz - pz * wy
    ny = pz * wx - px * wz
    nz = px * wy - py * wx
    norm = np.sqrt(nx * nx + ny * ny + nz * nz)
    a = np.asarray(offset_m, dtype="f8") / EARTH_RADIUS_M
    ca, sa = np.cos(a), np.sin(a) / norm
    return ca * px + sa * nx, ca * py + sa * ny, ca * pz + sa * nz


def ground_track(u: Any, lan: float, offset_m: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude (degrees) of a footprint at argument of latitude ``u`` (radians) of an
    orbit with ascending node longitude ``lan`` (degrees), ``offset_m`` to the left of the RGT."""
    u = np.asarray(u, dtype="f8")
    qx, qy, qz = _node_frame(u, offset_m)
    lat = np.degrees(np.arcsin(np.clip(qz, -1.0, 1.0)))
    lon = np.degrees(np.arctan2(qy, qx) - K_ROT * u) + lan
    return (lon + 180.0) % 360.0 - 180.0, lat


def track_azimuth(u: Any) -> np.ndarray:
    """Azimuth (radians, clockwise from north) of the earth-fixed RGT direction at ``u``."""
    u = np.asarray(u, dtype="f8")
    su, cu = np.sin(u), np.cos(u)
    px, py, pz = cu, _COS_I * su, _SIN_I * su
    wx, wy, wz = -su + K_ROT * py, _COS_I * cu - K_ROT * px, _SIN_I * cu
    lam = np.arctan2(py, px)
    phi = np.arcsin(pz)
    east = -np.sin(lam) * wx + np.cos(lam) * wy
    north = -np.sin(phi) * np.cos(lam) * wx - np.sin(phi) * np.sin(lam) * wy + np.cos(phi) * wz
    return np.arctan2(east, north)


def spacecraft_velocity_ecef(u: Any, lan: float) -> np.ndarray:
    """Earth-fixed spacecraft velocity (m/s), shape (N, 3)."""
    u = np.asarray(u, dtype="f8")
    su, cu = np.sin(u), np.cos(u)
    px, py = cu, _COS_I * su
    wx, wy, wz = -su + K_ROT * py, _COS_I * cu - K_ROT * px, _SIN_I * cu
    theta = math.radians(lan) - K_ROT * u
    ct, st = np.cos(theta), np.sin(theta)
    scale = SEMI_MAJOR_AXIS_M * 2 * math.pi / ORBIT_PERIOD_S
    return np.stack([scale * (ct * wx - st * wy), scale * (st * wx + ct * wy), scale * wz], axis=-1)


@lru_cache(maxsize=1)
def _arc_table() -> tuple[np.ndarray, np.ndarray]:
    """Along-track distance of the earth-fixed RGT as a function of u over one revolution.
    |dp/du|^2 = 1 - 2 K cos i + K^2 cos^2(lat), integrated with Simpson steps."""
    n = 2**17
    u = np.linspace(0.0, 2 * math.pi, n + 1)
    cos2lat = 1.0 - (_SIN_I * np.sin(u)) ** 2
    f = np.sqrt(1.0 - 2 * K_ROT * _COS_I + K_ROT**2 * cos2lat)
    um = 0.5 * (u[1:] + u[:-1])
    fm = np.sqrt(1.0 - 2 * K_ROT * _COS_I + K_ROT**2 * (1.0 - (_SIN_I * np.sin(um)) ** 2))
    steps = (u[1:] - u[:-1]) / 6.0 * (f[:-1] + 4 * fm + f[1:])
    s = np.concatenate([[0.0], np.cumsum(steps)]) * EARTH_RADIUS_M
    return u, s


def track_length_m() -> float:
    """Length of one revolution of the earth-fixed RGT (about 40,190 km)."""
    return float(_arc_table()[1][-1])


def x_from_u(u: Any) -> np.ndarray:
    """Along-track distance (m) since the ascending node of argument of latitude ``u`` (radians)."""
    tu, ts = _arc_table()
    u = np.asarray(u, dtype="f8")
    turns = np.floor(u / (2 * math.pi))
    return np.interp(u - turns * 2 * math.pi, tu, ts) + turns * ts[-1]


def u_from_x(x: Any) -> np.ndarray:
    tu, ts = _arc_table()
    x = np.asarray(x, dtype="f8")
    turns = np.floor(x / ts[-1])
    return np.interp(x - turns * ts[-1], ts, tu) + turns * 2 * math.pi


def u_from_time(seconds_since_node: Any) -> np.ndarray:
    return np.asarray(seconds_since_node, dtype="f8") * (2 * math.pi / ORBIT_PERIOD_S)


def time_from_u(u: Any) -> np.ndarray:
    return np.asarray(u, dtype="f8") * (ORBIT_PERIOD_S / (2 * math.pi))


def segment_id_from_x(x: Any) -> np.ndarray:
    return (np.floor(np.asarray(x, dtype="f8") / SEGMENT_LENGTH_M) + 1).astype(np.int64)


# -- granule regions ----------------------------------------------------------------------------

# Latitude boundaries of the 14 granule regions (spec section 1.5, approximations of the user guide).
_NORTH = (27.0, 59.5, 80.0)
_SOUTH = (27.0, 50.0, 79.0)
REGIONS = tuple(range(1, 15))
ASCENDING_REGIONS = (1, 2, 3, 4, 11, 12, 13, 14)
DESCENDING_REGIONS = (4, 5, 6, 7, 8, 9, 10, 11)


def _u_at_lat(lat_deg: float) -> float:
    return math.asin(math.sin(math.radians(lat_deg)) / _SIN_I)


@lru_cache(maxsize=1)
def _region_edges() -> np.ndarray:
    """u (radians) at the start of regions 1..14 and the end of region 14."""
    n27, n59, n80 = (_u_at_lat(v) for v in _NORTH)
    s27, s50, s79 = (_u_at_lat(v) for v in _SOUTH)
    pi = math.pi
    return np.array([0.0, n27, n59, n80, pi - n80, pi - n59, pi - n27, pi,
                     pi + s27, pi + s50, pi + s79, 2 * pi - s79, 2 * pi - s50, 2 * pi - s27, 2 * pi])


def region_u_bounds(region: int) -> tuple[float, float]:
    if region not in REGIONS:
        raise ValueError(f"granule region {region!r} is not in 1..14")
    e = _region_edges()
    return float(e[region - 1]), float(e[region])


def region_x_bounds(region: int) -> tuple[float, float]:
    u0, u1 = region_u_bounds(region)
    return float(x_from_u(u0)), float(x_from_u(u1))


def region_of_u(u: Any) -> np.ndarray:
    e = _region_edges()
    u = np.mod(np.asarray(u, dtype="f8"), 2 * math.pi)
    return np.clip(np.searchsorted(e, u, side="right"), 1, 14)


# -- names ----------------------------------------------------------------------------------------

GRANULE_RE = re.compile(
    r"(processed_)?(ATL\d{2})_(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})_(\d{4})(\d{2})(\d{2})_(\d{3})_(\d{2})(.*?).h5$"
)
PRODUCTS: tuple[str, ...] = ("ATL03", "ATL06")
RELEASE = "006"


def granule_name(product: str, start_delta_time: float, rgt: int, cycle: int, region: int,
                 release: str = RELEASE, revision: int = 1) -> str:
    """``ATLxx_YYYYMMDDhhmmss_TTTTCCRR_VVV_RR.h5`` with the start time rounded to the second."""
    start = delta_time_to_datetime(round(float(start_delta_time)))
    return f"{product}_{start:%Y%m%d%H%M%S}_{rgt:04d}{cycle:02d}{region:02d}_{release}_{revision:02d}.h5"


def parse_granule_name(name: str) -> dict[str, Any]:
    """Fields of a granule file name (the read-ICESat-2 regex); raises ValueError when it does not match."""
    m = GRANULE_RE.search(name.rsplit("/", 1)[-1])
    if not m:
        raise ValueError(f"{name!r} is not an ICESat-2 granule name (ATLxx_YYYYMMDDhhmmss_TTTTCCRR_VVV_RR.h5)")
    g = m.groups()
    return {
        "product": g[1],
        "start": datetime(*map(int, g[2:8]), tzinfo=timezone.utc),
        "rgt": int(g[8]), "cycle": int(g[9]), "region": int(g[10]),
        "release": g[11], "revision": int(g[12]),
    }


# -- granule specification ----------------------------------------------------------------------


@dataclass(frozen=True)
class GranuleSpec:
    """Everything needed to generate one granule deterministically.

    ``x_start``/``x_end`` is the along-track window (m since the ascending node, multiples of 20 m).
    The whole region is the real granule; a narrower window is a shortened granule (said so in its
    metadata). ``surface`` names the surface model (see :mod:`is2cloud.granules.surface`).
    """

    product: str
    rgt: int
    cycle: int
    region: int
    surface: str = "generic"
    x_start: float | None = None
    x_end: float | None = None
    seed: int = 2018
    release: str = RELEASE
    revision: int = 1
    reason: str = field(default="", compare=False)  # why the window is what it is (for metadata)

    def __post_init__(self) -> None:
        if self.product not in PRODUCTS:
            raise ValueError(f"unknown product {self.product!r}; choose one of {', '.join(PRODUCTS)}")
        if not 1 <= self.rgt <= N_RGT:
            raise ValueError(f"RGT {self.rgt} is not in 1..{N_RGT}")
        if self.cycle < 1:
            raise ValueError(f"cycle {self.cycle} must be >= 1")
        region_u_bounds(self.region)

    # region and window
    @property
    def region_x(self) -> tuple[float, float]:
        """Segment-aligned along-track extent of the whole region."""
        x0, x1 = region_x_bounds(self.region)
        return _align_down(x0), _align_down(x1)

    @property
    def window(self) -> tuple[float, float]:
        r0, r1 = self.region_x
        x0 = r0 if self.x_start is None else max(r0, _align_down(self.x_start))
        x1 = r1 if self.x_end is None else min(r1, _align_up(self.x_end))
        if x1 <= x0:
            raise ValueError(f"empty along-track window for {self.name}")
        return x0, x1

    @property
    def shortened(self) -> bool:
        return self.window != self.region_x

    # time
    @property
    def node_delta_time(self) -> float:
        return float(node_delta_time(self.rgt, self.cycle))

    @property
    def start_delta_time(self) -> float:
        """Start of the granule region (the time in the file name)."""
        return self.node_delta_time + float(time_from_u(region_u_bounds(self.region)[0]))

    @property
    def end_delta_time(self) -> float:
        return self.node_delta_time + float(time_from_u(region_u_bounds(self.region)[1]))

    def delta_time_at(self, x: Any) -> np.ndarray:
        return self.node_delta_time + time_from_u(u_from_x(x))

    @property
    def data_start_delta_time(self) -> float:
        return float(self.delta_time_at(self.window[0]))

    @property
    def data_end_delta_time(self) -> float:
        return float(self.delta_time_at(self.window[1]))

    # geometry and mission state
    @property
    def lan(self) -> float:
        return float(lan_deg(self.rgt))

    @property
    def sc_orient(self) -> int:
        return sc_orient_for_cycle(self.cycle)

    @property
    def orbit_number(self) -> int:
        return orbit_number(self.rgt, self.cycle)

    @property
    def ascending(self) -> bool:
        return self.region in (1, 2, 3, 12, 13, 14)

    # names
    @property
    def name(self) -> str:
        return granule_name(self.product, self.start_delta_time, self.rgt, self.cycle, self.region,
                            self.release, self.revision)

    @property
    def date_path(self) -> str:
        return f"{delta_time_to_datetime(self.start_delta_time):%Y/%m/%d}"

    @property
    def key(self) -> str:
        """S3 key below the archive bucket, as at NSIDC: ``ATLAS/<PRODUCT>/006/YYYY/MM/DD/<name>``."""
        return f"ATLAS/{self.product}/{self.release}/{self.date_path}/{self.name}"

    def with_window(self, x_start: float | None, x_end: float | None, reason: str = "") -> "GranuleSpec":
        return replace(self, x_start=x_start, x_end=x_end, reason=reason)


def _align_down(x: float) -> float:
    return math.floor(x / SEGMENT_LENGTH_M) * SEGMENT_LENGTH_M


def _align_up(x: float) -> float:
    return math.ceil(x / SEGMENT_LENGTH_M) * SEGMENT_LENGTH_M


def pointing_offset_m(seed: int, rgt: int, cycle: int) -> float:
    """Repeat-track pointing error of one pass (a few tens of metres, the same for all beams)."""
    rng = np.random.default_rng([seed, rgt, cycle, 7])
    return float(np.clip(rng.normal(0.0, 20.0), -60.0, 60.0))


def beam_y(spec: GranuleSpec, beam: str, x: Any) -> np.ndarray:
    """Across-track position (m, positive left) of a beam's footprints along ``x``: the nominal beam
    offset, the pass's pointing offset and a slow +/-4 m wander."""
    phase = 0.7 * BEAMS.index(beam) + 0.001 * spec.rgt
    wander = 4.0 * np.sin(2 * math.pi * np.asarray(x, dtype="f8") / 37_000.0 + phase)
    return beam_offset_m(beam) + pointing_offset_m(spec.seed, spec.rgt, spec.cycle) + wander


def beam_positions(spec: GranuleSpec, beam: str, x: Any, dy: Any = 0.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(delta_time, lon, lat, y) of a beam's footprints at along-track distances ``x``; ``dy`` moves
    the footprints further left (e.g. the line-of-sight displacement of photons off the surface)."""
    x = np.asarray(x, dtype="f8")
    u = u_from_x(x)
    y = beam_y(spec, beam, x)
    lon, lat = ground_track(u, spec.lan, y + dy)
    return spec.node_delta_time + time_from_u(u), lon, lat, y


# -- planner ------------------------------------------------------------------------------------

_TEMPLATE_STEP_M = 400.0


@lru_cache(maxsize=1)
def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Beam tracks of one revolution for lan = 0: u (K,), lon (6, K) unwrapped along u, lat (6, K)."""
    n = int(track_length_m() / _TEMPLATE_STEP_M)
    u = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    offsets = np.array([beam_offset_m(b) for b in BEAMS])[:, None]
    lon, lat = ground_track(u[None, :], 0.0, offsets)
    lon = np.degrees(np.unwrap(np.radians(lon), axis=1))
    return u, lon, lat


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs where ``mask`` is true."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def aoi_crossings(aoi: Any) -> list[tuple[int, float, float]]:
    """Every RGT whose six beams touch the AOI: a list of (rgt, u_min, u_max) per contiguous pass
    (radians; an RGT may cross twice, ascending and descending). Vectorized over the 1387 RGTs."""
    from is2cloud.aoi import load_aoi

    aoi = load_aoi(aoi)
    u, tlon, tlat = _template()
    rgts = np.arange(1, N_RGT + 1)
    lans = lan_deg(rgts)
    out: list[tuple[int, float, float]] = []
    pad_deg = 0.02
    for (w, s, e, n) in aoi.bboxes:
        band = ((tlat >= s - pad_deg) & (tlat <= n + pad_deg)).any(axis=0)
        for i0, i1 in _runs(band):
            seg_lon = tlon[:, i0:i1]
            lo = w - seg_lon.max() - pad_deg  # lan range that can put a sample inside the bbox
            hi = e - seg_lon.min() + pad_deg
            cand = rgts[np.mod(lans - lo, 360.0) <= (hi - lo)] if hi - lo < 360 else rgts
            for rgt in cand:
                hit = _crossing(aoi, float(lan_deg(rgt)), u[i0:i1], seg_lon, tlat[:, i0:i1])
                if hit is not None:
                    out.append((int(rgt), hit[0], hit[1]))
    return _merge_crossings(out)


def _crossing(aoi: Any, lan: float, u: np.ndarray, lon_rel: np.ndarray, lat: np.ndarray) -> tuple[float, float] | None:
    lon = (lon_rel + lan + 180.0) % 360.0 - 180.0
    inside = aoi.contains(lon.ravel(), lat.ravel()).reshape(lon.shape).any(axis=0)
    if inside.any():
        idx = np.flatnonzero(inside)
        return float(u[idx[0]]), float(u[idx[-1]])
    # thin crossings between samples: test the beam polylines themselves
    import shapely
    from shapely.geometry import LineString

    for k in range(lon.shape[0]):
        line_lon = lon_rel[k] + lan
        for shift in (-360.0, 0.0, 360.0):
            line = LineString(np.column_stack([line_lon + shift, lat[k]]))
            if shapely.intersects(line, aoi.geometry):
                p = shapely.intersection(line, aoi.geometry).representative_point()
                j = int(np.argmin(np.abs(line_lon + shift - p.x) + np.abs(lat[k] - p.y)))
                return float(u[j]), float(u[j])
    return None


def _merge_crossings(items: list[tuple[int, float, float]]) -> list[tuple[int, float, float]]:
    items.sort()
    merged: list[tuple[int, float, float]] = []
    for rgt, a, b in items:
        if merged and merged[-1][0] == rgt and a <= merged[-1][2] + 0.01:
            merged[-1] = (rgt, merged[-1][1], max(b, merged[-1][2]))
        else:
            merged.append((rgt, a, b))
    return merged


def plan_granules(
    aoi: Any,
    product: str,
    cycles: Iterable[int] | int,
    *,
    window: str | None = None,
    margin_m: float = 2000.0,
    surface: str | None = None,
    seed: int = 2018,
) -> list[GranuleSpec]:
    """Every (rgt, cycle, region) granule whose six beams cross ``aoi``, sorted by start time.

    ``window``: ``"aoi"`` shortens each granule to the AOI crossing +/- ``margin_m`` along track,
    ``"region"`` keeps the whole granule region; the default is ``"aoi"`` for ATL03 and ``"region"``
    for ATL06. ``surface`` defaults to the surface model of the AOI's centre.
    """
    from is2cloud.aoi import load_aoi
    from is2cloud.granules.surface import surface_key_for

    aoi = load_aoi(aoi)
    product = product.upper()
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; choose one of {', '.join(PRODUCTS)}")
    window = window or ("aoi" if product == "ATL03" else "region")
    if window not in ("aoi", "region"):
        raise ValueError(f"window must be 'aoi' or 'region', not {window!r}")
    cycles = sorted({int(c) for c in ([cycles] if isinstance(cycles, int) else cycles)})
    if not cycles or cycles[0] < 1:
        raise ValueError(f"cycles must be positive integers, got {cycles!r}")
    if surface is None:
        c = aoi.geometry.centroid
        surface = surface_key_for(c.x, c.y)
    base: list[GranuleSpec] = []
    for rgt, ua, ub in aoi_crossings(aoi):
        regions = sorted(set(region_of_u(np.linspace(ua, ub, 64)).tolist()))
        for region in regions:
            r0, r1 = region_u_bounds(region)
            lo, hi = max(ua, r0), min(ub, r1)
            if hi < lo:
                continue
            spec = GranuleSpec(product, rgt, cycles[0], region, surface=surface, seed=seed)
            if window == "aoi":
                x0, x1 = float(x_from_u(lo)) - margin_m, float(x_from_u(hi)) + margin_m
                spec = spec.with_window(x0, x1, reason=f"AOI crossing +/- {margin_m:.0f} m")
            base.append(spec)
    specs = [replace(s, cycle=c) for c in cycles for s in base]
    specs = [s for s in specs if s.end_delta_time > MISSION_START_DELTA_TIME]  # no data before 2018-10-13
    specs.sort(key=lambda s: (s.start_delta_time, s.region))
    return specs


__all__ = [
    "ATLAS_EPOCH_UNIX", "ATLAS_SDP_GPS_EPOCH", "BEAMS", "CYCLE_DURATION_S", "GRANULE_RE", "GranuleSpec",
    "N_RGT", "ORBIT_PERIOD_S", "PRF_HZ", "PRODUCTS", "SEGMENT_LENGTH_M", "aoi_crossings", "beam_offset_m",
    "beam_type", "delta_time_to_datetime", "delta_time_to_unix", "granule_name", "ground_track", "lan_deg",
    "node_delta_time", "parse_granule_name", "plan_granules", "region_of_u", "region_u_bounds",
    "region_x_bounds", "sc_orient_for_cycle", "spot_number", "track_length_m", "u_from_x", "x_from_u",
]
