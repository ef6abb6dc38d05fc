"""Synthetic ATL03 v006 (global geolocated photons) granules.

Pulses leave at 10 kHz (one every ~0.7 m along track). Each pulse of a strong beam returns
Poisson(~2.5-3.4) signal photons (a weak beam ~4x fewer; fewer under clouds) scattered around
:func:`~is2cloud.granules.surface.surface_height` by the pulse width, the surface roughness and the
slope across the footprint, plus Poisson background photons spread uniformly over the telemetry band
at the rate written to ``bckgrd_atlas/bckgrd_rate`` (day/night from the sun elevation). Photons carry
their pulse's ``delta_time``; ``lat_ph``/``lon_ph`` include the line-of-sight displacement of photons
above or below the surface. The 20 m ``geolocation`` segments index the photons (``ph_index_beg``,
1-based, 0 = empty; ``segment_ph_cnt``). ``signal_conf_ph`` is 2-4 for signal photons (mostly 4) and
0 for background (1 within 10 m of the surface) in the surface types the model considers, and -1 in
the others.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from is2cloud.granules import common as c
from is2cloud.granules import orbit, surface
from is2cloud.granules.common import FLT_MAX, WrittenGranule, cf, put, put_scalar, put_string
from is2cloud.granules.orbit import BEAMS, PRF_HZ, SEGMENT_LENGTH_M, GranuleSpec

C_LIGHT = 299792458.0
SHOTS_PER_BCKGRD = 50  # bckgrd_atlas rows every 50 shots (200 Hz)
SHOTS_PER_MFRAME = 200  # major frames
SIGNAL_PER_PULSE = {"strong": 4.0, "weak": 1.0}  # times reflectance and atmosphere: ~2.5-3.4 strong
PULSE_SIGMA_M = 0.1  # transmit pulse width as height
CONF_NOT_CONSIDERED = -1
MAX_WINDOW_M = 1_000_000.0  # a whole ATL03 region is GBs of photons: the generator writes windows of it
# (1,000 km: ~430 MB over Greenland, ~1.5 GB of memory while it is written)


def _rng(spec: GranuleSpec, beam_index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([spec.seed, spec.rgt, spec.cycle, spec.region, 3, beam_index, stream])


@dataclass
class _Pulses:
    """The pulses of the window, shared by all beams (the spots fire together)."""

    n: np.ndarray  # pulse index since the node (int64)
    x: np.ndarray  # along-track distance of the footprints
    u: np.ndarray
    seg: np.ndarray  # 0-based segment index within the window
    x0: float
    n_segments: int


def _pulses(spec: GranuleSpec) -> _Pulses:
    x0, x1 = spec.window
    t0 = float(orbit.time_from_u(orbit.u_from_x(x0)))
    t1 = float(orbit.time_from_u(orbit.u_from_x(x1)))
    n = np.arange(math.ceil(t0 * PRF_HZ), math.floor(t1 * PRF_HZ), dtype=np.int64)
    n = n[(n * (1.0 / PRF_HZ) >= t0) & (n * (1.0 / PRF_HZ) < t1)]
    u = orbit.u_from_time(n / PRF_HZ)
    x = orbit.x_from_u(u)
    seg = np.clip(np.floor((x - x0) / SEGMENT_LENGTH_M).astype(np.int64), 0, None)
    n_seg = int(round((x1 - x0) / SEGMENT_LENGTH_M))
    seg = np.minimum(seg, n_seg - 1)
    return _Pulses(n, x, u, seg, x0, n_seg)


@dataclass
class _BeamPhotons:
    beam: str
    strong: bool
    # pulse level
    dtime_p: np.ndarray
    h_p: np.ndarray
    y_p: np.ndarray
    # photon level
    pulse: np.ndarray  # index into the pulse arrays
    h: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    across: np.ndarray
    signal: np.ndarray  # bool
    near: np.ndarray  # bool: background within 10 m of the surface
    # background rows
    blocks: np.ndarray  # global 50-shot block number of each bckgrd row
    rate: np.ndarray
    top: np.ndarray
    height: np.ndarray
    sun_el: np.ndarray
    sun_az: np.ndarray


def _beam_photons(spec: GranuleSpec, p: _Pulses, beam: str) -> _BeamPhotons:
    k = BEAMS.index(beam)
    props = surface.surface_props(spec.surface)
    strong = orbit.beam_type(beam, spec.sc_orient) == "strong"
    rng = _rng(spec, k)
    dtime_p, lon_p, lat_p, y_p = orbit.beam_positions(spec, beam, p.x)
    unix_p = orbit.delta_time_to_unix(dtime_p)
    h_p = surface.surface_height(lon_p, lat_p, unix_p, spec.surface, spec.seed)
    slope = np.abs(np.gradient(h_p, p.x)) if p.x.size > 1 else np.zeros(p.x.size)

    # background rows (50 shots): rate from the sun, telemetry band centred on the surface
    block = p.n // SHOTS_PER_BCKGRD
    blocks, first, inverse = np.unique(block, return_index=True, return_inverse=True)
    sun_el = surface.solar_elevation(lon_p[first], lat_p[first], unix_p[first])
    sun_az = surface.solar_azimuth(lon_p[first], lat_p[first], unix_p[first])
    wobble = 1.0 + 0.08 * np.sin(blocks / 37.0 + k)
    rate = (surface.background_rate_hz(sun_el, spec.surface, strong) * wobble).astype(np.float32)
    height = np.float32(props.telemetry_height_m)
    mid = np.minimum(first + SHOTS_PER_BCKGRD // 2, p.x.size - 1)
    top = (np.round(h_p[mid]) + np.float32(height / 2 + 10.0)).astype(np.float32)

    # photon counts per pulse
    clouds = surface.cloud_gaps(spec.seed, spec.rgt, spec.cycle)
    transmission = np.where(surface.in_intervals(p.x, clouds), 0.03, 1.0)
    atmos = 0.85 + 0.15 * np.cos(2 * math.pi * p.x / 61_000.0 + k)
    lam_s = SIGNAL_PER_PULSE["strong" if strong else "weak"] * props.reflectance * atmos * transmission
    lam_b = rate[inverse] * (2.0 * float(height) / C_LIGHT)
    n_sig = rng.poisson(lam_s)
    n_bg = rng.poisson(lam_b)
    total = n_sig + n_bg
    pulse = np.repeat(np.arange(p.x.size), total)
    starts = np.cumsum(total) - total
    rank = np.arange(pulse.size) - starts[pulse]
    signal = rank < n_sig[pulse]

    # heights: signal around the surface, background uniform over the telemetry band
    sigma = np.sqrt(PULSE_SIGMA_M**2 + props.roughness_m**2 + (4.25 * slope) ** 2)
    h = np.empty(pulse.size)
    ps = pulse[signal]
    h[signal] = h_p[ps] + rng.normal(0.0, 1.0, ps.size) * sigma[ps]
    pb = pulse[~signal]
    h[~signal] = top[inverse[pb]] - height * rng.random(pb.size)
    inside = (h <= top[inverse[pulse]]) & (h >= top[inverse[pulse]] - height)
    if not inside.all():
        pulse, h, signal = pulse[inside], h[inside], signal[inside]
    near = ~signal & (np.abs(h - h_p[pulse]) < 10.0)

    # geolocation of each photon: its pulse's footprint, displaced along the line of sight
    altitude = orbit.SEMI_MAJOR_AXIS_M - orbit.EARTH_RADIUS_M
    across = y_p[pulse] * (1.0 - (h - h_p[pulse]) / altitude)
    lon, lat = orbit.ground_track(p.u[pulse], spec.lan, across)
    return _BeamPhotons(beam, strong, dtime_p, h_p, y_p, pulse, h, lat, lon, across, signal, near,
                        blocks, rate, top, np.full(blocks.size, height, dtype=np.float32), sun_el, sun_az)


# -- writer -----------------------------------------------------------------------------------------


def write_atl03(spec: GranuleSpec, path: str | Path, *, created: str | None = None) -> WrittenGranule:
    """Write one synthetic ATL03 v006 granule to ``path`` and report what was written."""
    if spec.product != "ATL03":
        raise ValueError(f"write_atl03 needs an ATL03 spec, got {spec.product}")
    x0, x1 = spec.window
    if x1 - x0 > MAX_WINDOW_M:
        raise ValueError(f"{spec.name}: an along-track window of {(x1 - x0) / 1000:.0f} km is too long for a synthetic "
                         f"ATL03 granule (at most {MAX_WINDOW_M / 1000:.0f} km, ~{MAX_WINDOW_M / 0.7 * 6 * 5 / 1e6:.0f} M "
                         "photons); shorten it to the AOI (window='aoi')")
    t_start = time.perf_counter()
    path = Path(path)
    created = created or c.production_time(spec)
    p = _pulses(spec)
    first_seg = int(round(p.x0 / SEGMENT_LENGTH_M)) + 1
    records: dict[str, int] = {}
    footprints: dict[str, np.ndarray] = {}
    lons, lats = [], []
    with c.open_new(path) as f:
        ds_surf = c.make_scale(put(f, "ds_surf_type", np.arange(1, 6, dtype=np.int32), cf(
            "1", "Surface Type", "Dimension scale indexing the surface type array. 1=land, 2=ocean, 3=sea ice, "
            "4=land ice, 5=inland water.", content="auxiliaryInformation", source="Operations"),
            layout="contiguous"))
        ds_xyz = c.make_scale(put(f, "ds_xyz", np.arange(1, 4, dtype=np.int32), cf(
            "1", "Cartesian Component", "Dimension scale indexing the x, y, z components of a vector.",
            content="auxiliaryInformation", source="Operations"), layout="contiguous"))
        qa_totals: dict[str, np.ndarray] = {}
        for beam in BEAMS:
            bp = _beam_photons(spec, p, beam)
            g = f.create_group(beam)
            c.set_attrs(g, c.beam_group_attrs(beam, spec.sc_orient))
            records[beam] = int(bp.h.size)
            qa_totals[beam] = _write_beam(g, spec, p, bp, first_seg, ds_surf, ds_xyz)
            step = max(1, p.x.size // 400)
            _, flon, flat, _ = orbit.beam_positions(spec, beam, p.x[::step])
            footprints[beam] = np.column_stack([flon, flat])
            lons.append(flon)
            lats.append(flat)
        extent = c.track_extent(np.concatenate(lons), np.concatenate(lats))
        c.set_attrs(f, c.root_attrs(spec, extent, created))
        _write_ancillary(f, spec, first_seg, first_seg + p.n_segments - 1, ds_surf)
        _write_impulse_response(f, spec)
        c.write_orbit_info(f, spec)
        _write_quality(f, spec, qa_totals, ds_surf)
        c.write_metadata(f, spec, extent, created, inputs=("ATL02", "ATL09"))
    return WrittenGranule(spec, path, extent, records, time.perf_counter() - t_start, footprints)


def _signal_conf(spec: GranuleSpec, bp: _BeamPhotons, rng: np.random.Generator) -> np.ndarray:
    props = surface.surface_props(spec.surface)
    n = bp.h.size
    level = np.zeros(n, dtype=np.int8)
    level[bp.near] = 1
    draw = rng.random(int(bp.signal.sum()))
    level[bp.signal] = np.where(draw < 0.86, 4, np.where(draw < 0.96, 3, 2)).astype(np.int8)
    conf = np.full((n, 5), CONF_NOT_CONSIDERED, dtype=np.int8)
    for col in props.considered:
        conf[:, col] = level
    return conf


def _write_beam(g: h5py.Group, spec: GranuleSpec, p: _Pulses, bp: _BeamPhotons, first_seg: int,
                ds_surf: h5py.Dataset, ds_xyz: h5py.Dataset) -> np.ndarray:
    """Write heights, geolocation, geophys_corr, bckgrd_atlas and signal_find_output of one beam;
    return the (3, 5) counts of high/medium/low confidence photons for quality_assessment."""
    k = BEAMS.index(bp.beam)
    rng = _rng(spec, k, 1)
    props = surface.surface_props(spec.surface)
    n = bp.h.size
    pulse = bp.pulse
    dtime = bp.dtime_p[pulse]
    seg_of = p.seg[pulse]
    conf = _signal_conf(spec, bp, rng)

    # -- heights -------------------------------------------------------------------------------
    hg = g.create_group("heights")
    c.set_attrs(hg, {"Description": "Contains arrays of the parameters for each received photon.",
                     "data_rate": "Data are stored at the photon detection rate."})
    coords = "delta_time lat_ph lon_ph"
    dt = c.make_scale(put(hg, "delta_time", dtime, cf(
        "seconds since 2018-01-01", "Elapsed GPS seconds",
        "Elapsed seconds from the ATLAS SDP GPS Epoch, corresponding to the transmit time of the reference "
        "photon. The ATLAS Standard Data Products (SDP) epoch offset is defined within "
        "/ancillary_data/atlas_sdp_gps_epoch as the number of GPS seconds between the GPS epoch "
        "(1980-01-06T00:00:00.000000Z UTC) and the ATLAS SDP epoch.", content="referenceInformation",
        coordinates="lat_ph lon_ph", source="Operations", standard_name="time")))
    d1 = (dt,)
    put(hg, "dist_ph_across", bp.across.astype(np.float32), cf(
        "meters", "Distance off RGT", "Across-track distance projected to the ellipsoid of the received photon "
        "from the reference ground track, positive to the left. This is needed to (re-)compute the sub-segment "
        "slope.", content="modelResult", coordinates=coords, source="ATL03G ATBD, Section 3.1"),
        fill=FLT_MAX, dims=d1)
    seg_start = p.x0 + seg_of * SEGMENT_LENGTH_M
    put(hg, "dist_ph_along", (p.x[pulse] - seg_start).astype(np.float32), cf(
        "meters", "Distance from Segment start", "Along-track distance in a segment projected to the ellipsoid "
        "of the received photon, based on the Along-Track Segment algorithm. Total along track distance can be "
        "found by adding this value to the sum of segment lengths measured from the start of the most recent "
        "reference groundtrack.", content="modelResult", coordinates=coords, source="ATL03G ATBD, Section 3.1"),
        fill=FLT_MAX, dims=d1)
    put(hg, "h_ph", bp.h.astype(np.float32), cf(
        "meters", "Photon WGS84 height", "Height of each received photon, relative to the WGS-84 ellipsoid "
        "including the geophysical corrections noted in section 6.0 of the ATBD. Please note that neither the "
        "geoid, ocean tide nor the dynamic atmospheric corrections (DAC) are applied to the ellipsoidal heights.",
        coordinates=coords, source="ATL03G ATBD, Section 3.4"), fill=FLT_MAX, dims=d1)
    put(hg, "lat_ph", bp.lat, cf(
        "degrees_north", "Latitude", "Latitude of each received photon. Computed from the ECF Cartesian "
        "coordinates of the bounce point.", coordinates="delta_time lon_ph", source="ATL03G ATBD, Section 3.4",
        standard_name="latitude", valid_min=-90.0, valid_max=90.0), dims=d1)
    put(hg, "lon_ph", bp.lon, cf(
        "degrees_east", "Longitude", "Longitude of each received photon. Computed from the ECF Cartesian "
        "coordinates of the bounce point.", coordinates="delta_time lat_ph", source="ATL03G ATBD, Section 3.4",
        standard_name="longitude", valid_min=-180.0, valid_max=180.0), dims=d1)
    mframe = (p.n[pulse] // SHOTS_PER_MFRAME + int(spec.node_delta_time * PRF_HZ) // SHOTS_PER_MFRAME)
    put(hg, "pce_mframe_cnt", (mframe % 2**32).astype(np.uint32), cf(
        "counts", "PCE Major frame counter", "Major frame counter read from the Digital Flow Controller in a "
        "given PCE card. The counter identifies individual major frames across diag and science packets.",
        content="auxiliaryInformation", coordinates=coords, source="ATL02"), dims=d1)
    channels = rng.integers(1, 17, n) if bp.strong else rng.integers(17, 21, n)
    put(hg, "ph_id_channel", channels.astype(np.uint8), cf(
        "1", "Receive channel id", "Channel number assigned for each received photon event. This is part of the "
        "photon ID. Values range from 1 to 120 to span all channels and rise/fall edges.",
        content="auxiliaryInformation", coordinates=coords, source="ATL02", valid_min=1, valid_max=120), dims=d1)
    put(hg, "ph_id_count", (1 + (rng.random(n) < 0.03)).astype(np.uint8), cf(
        "1", "photon event counter", "Photon event counter is part of photon ID and will count from 1 to 4 for "
        "each TOF.", content="auxiliaryInformation", coordinates=coords, source="ATL02", valid_min=1,
        valid_max=4), dims=d1)
    put(hg, "ph_id_pulse", (p.n[pulse] % SHOTS_PER_MFRAME + 1).astype(np.uint8), cf(
        "1", "laser pulse counter", "The laser transmit pulse number within a major frame that the photon was "
        "received from. This is part of the photon ID. Values range from 1 to 200.",
        content="auxiliaryInformation", coordinates=coords, source="ATL02", valid_min=1, valid_max=200), dims=d1)
    quality = np.zeros(n, dtype=np.int8)
    odd = rng.random(n)
    quality[odd < 0.0015] = 1
    quality[(odd >= 0.0015) & (odd < 0.002)] = 2
    put(hg, "quality_ph", quality, cf(
        "1", "Photon Quality", "Indicates the quality of the associated photon. 0=nominal, 1=possible_afterpulse, "
        "2=possible_impulse_response_effect, 3=possible_tep. Use this flag in conjunction with signal_conf_ph to "
        "identify those photons that are likely noise or likely signal.", content="qualityInformation",
        coordinates=coords, source="ATL03 ATBD, Section 5.2", flag_meanings="nominal possible_afterpulse "
        "possible_impulse_response_effect possible_tep", flag_values=np.arange(4, dtype="i1"), valid_min=0,
        valid_max=3), dims=d1)
    put(hg, "signal_conf_ph", conf, cf(
        "1", "Photon Signal Confidence", "Confidence level associated with each photon event selected as signal. "
        "0=noise. 1=added to allow for buffer but algorithm classifies as background; 2=low; 3=med; 4=high). "
        "This parameter is a 5xN array where N is the number of photons in the granule, and the 5 rows indicate "
        "signal finding for each surface type (in order: land, ocean, sea-ice, land-ice and inland water). "
        "Events not associated with a specific surface type have a confidence level of -1. Events evaluated as "
        "TEP returns have a confidence level of -2.", content="qualityInformation", coordinates=coords,
        source="ATL03 ATBD, Section 5, Conf", flag_meanings="possible_tep not_considered noise buffer low medium "
        "high", flag_values=np.arange(-2, 5, dtype="i1"), valid_min=-2, valid_max=4), dims=(dt, ds_surf))
    weight = np.where(bp.signal, np.clip(rng.normal(205.0, 28.0, n), 60, 255),
                      np.where(bp.near, np.clip(rng.normal(90.0, 40.0, n), 0, 200),
                               np.clip(rng.exponential(12.0, n), 0, 120)))
    put(hg, "weight_ph", weight.astype(np.uint8), cf(
        "1", "Photon Weight", "Signal-to-noise ratio (YAPC) weight of each photon, computed from the density "
        "of its nearest neighbours; 0 to 255 (larger = more likely signal).", content="qualityInformation",
        coordinates=coords, source="ATL03 ATBD, Section 5.3", valid_min=0, valid_max=255), dims=d1)

    # -- geolocation (20 m segments) -----------------------------------------------------------------
    m = p.n_segments
    cnt = np.bincount(seg_of, minlength=m).astype(np.int32)
    beg = np.cumsum(cnt) - cnt
    ref_local = np.where(cnt > 0, cnt // 2, 0)
    ref = np.minimum(beg + ref_local, max(n - 1, 0))
    xc = p.x0 + (np.arange(m) + 0.5) * SEGMENT_LENGTH_M
    seg_dt, seg_lon, seg_lat, seg_y = orbit.beam_positions(spec, bp.beam, xc)
    has = cnt > 0
    ref_lat = np.where(has, bp.lat[ref] if n else 0.0, seg_lat)
    ref_lon = np.where(has, bp.lon[ref] if n else 0.0, seg_lon)
    seg_time = np.where(has, dtime[ref] if n else 0.0, seg_dt)
    u_c = orbit.u_from_x(xc)
    unix_c = orbit.delta_time_to_unix(seg_time)
    sig_count = np.bincount(seg_of[bp.signal], minlength=m)

    geo = g.create_group("geolocation")
    c.set_attrs(geo, {"Description": "Contains parameters related to geolocation.  The rate of all of these "
                      "parameters is at the rate corresponding to the ICESat-2 Geolocation Along Track Segment "
                      "interval (nominally 20 m along-track).",
                      "data_rate": "Data within this group are stored at the ICESat-2 20m segment rate."})
    gcoords = "delta_time reference_photon_lat reference_photon_lon"
    gdt = c.make_scale(put(geo, "delta_time", seg_time, cf(
        "seconds since 2018-01-01", "Elapsed GPS seconds", "Elapsed seconds from the ATLAS SDP GPS Epoch, "
        "corresponding to the transmit time of the reference photon.", content="referenceInformation",
        coordinates="reference_photon_lat reference_photon_lon", source="Operations", standard_name="time")))
    g1 = (gdt,)

    def geo_put(name: str, data: Any, units: str, ln: str, desc: str, content: str = "referenceInformation",
                fill: Any = None, dims: tuple = g1, **extra: Any) -> None:
        put(geo, name, data, cf(units, ln, desc, content=content, coordinates=gcoords, source="ATL03G ATBD",
                                **extra), fill=fill, dims=dims)

    ones = np.ones(m, dtype=np.float32)
    blocky = (np.arange(m) // 50)  # one value per km for slowly varying engineering fields
    nb = int(blocky[-1]) + 1 if m else 1
    altitude = orbit.SEMI_MAJOR_AXIS_M - orbit.EARTH_RADIUS_M + 12_000.0 * np.sin(u_c)
    geo_put("altitude_sc", altitude, "meters", "altitude", "Height of the spacecraft above the WGS84 ellipsoid.",
            content="modelResult")
    geo_put("bounce_time_offset", (ones * np.float32(3.3e-3)), "seconds", "bounce time offset", "The difference "
            "between the transmit time and the ground bounce time of the reference photons.", fill=FLT_MAX)
    geo_put("full_sat_fract", np.zeros(m, dtype=np.float32), "1", "full saturation fraction", "The fraction of "
            "pulses within the segment determined to be fully saturated.", content="qualityInformation",
            fill=FLT_MAX)
    geo_put("near_sat_fract", np.zeros(m, dtype=np.float32), "1", "near saturation fraction", "The fraction of "
            "pulses within the segment determined to be nearly saturated.", content="qualityInformation",
            fill=FLT_MAX)
    geo_put("neutat_delay_derivative", (ones * np.float32(-0.00025)), "meters/meters", "Neutral Atmosphere "
            "Delay Derivative", "Change in neutral atmospheric delay per height change.", content="modelResult",
            fill=FLT_MAX)
    dem_b = surface.dem_height(seg_lon[::50], seg_lat[::50], spec.surface, spec.seed)
    dem_seg = dem_b[np.clip(blocky, 0, dem_b.size - 1)]
    geo_put("neutat_delay_total", (2.3 - 0.00026 * dem_seg).astype(np.float32), "meters", "Total Neutral "
            "Atmosphere Delay", "Total neutral atmosphere delay correction (wet+dry).", content="modelResult",
            fill=FLT_MAX)
    geo_put("neutat_ht", dem_seg.astype(np.float32), "meters", "Neutral Atmosphere Reference Height", "Reference "
            "height of the neutral atmosphere range correction.", content="modelResult", fill=FLT_MAX)
    geo_put("ph_index_beg", np.where(has, beg + 1, 0).astype(np.int64), "1", "Photon Index Begin", "Index "
            "(1-based) within the photon-rate data of the first photon within this each segment; 0 when the "
            "segment has no photons.")
    geo_put("pitch", (ones * np.float32(0.02)), "degrees", "Spacecraft pitch", "Spacecraft pitch.",
            content="auxiliaryInformation", fill=FLT_MAX)
    geo_put("podppd_flag", np.zeros(m, dtype=np.int8), "1", "POD_PPD Flag", "Composite POD/PPD flag that "
            "indicates the quality of input geolocation products for the specific ATL03 segment.",
            content="qualityInformation", flag_meanings="nominal pod_degrade ppd_degrade podppd_degrade "
            "nominal_cal pod_degrade_cal ppd_degrade_cal podppd_degrade_cal",
            flag_values=np.arange(8, dtype="i1"))
    geo_put("range_bias_corr", (ones * np.float32(-0.0142)), "meters", "range bias correction", "The range_bias "
            "estimated from geolocation analysis.", content="modelResult", fill=FLT_MAX)
    azimuth = orbit.track_azimuth(u_c)
    side = 1.0 if seg_y.mean() > 0 else -1.0
    geo_put("ref_azimuth", (np.mod(azimuth + side * math.pi / 2 + math.pi, 2 * math.pi) - math.pi
                            ).astype(np.float32), "radians", "azimuth", "Azimuth of the unit pointing vector for "
            "the reference photon in the local ENU frame in radians.", content="modelResult", fill=FLT_MAX)
    geo_put("ref_elev", (math.pi / 2 - np.abs(seg_y) / altitude).astype(np.float32), "radians", "elevation",
            "Elevation of the unit pointing vector for the reference photon in the local ENU frame in radians.",
            content="modelResult", fill=FLT_MAX)
    geo_put("reference_photon_index", np.where(has, ref_local + 1, 0).astype(np.int32), "1", "Reference Photon "
            "Index", "Index of the reference photon within the set of photons grouped within a segment (1-based).")
    geo_put("reference_photon_lat", ref_lat, "degrees_north", "Latitude", "Latitude of each reference photon.",
            standard_name="latitude", valid_min=-90.0, valid_max=90.0)
    geo_put("reference_photon_lon", ref_lon, "degrees_east", "Longitude", "Longitude of each reference photon.",
            standard_name="longitude", valid_min=-180.0, valid_max=180.0)
    geo_put("roll", (ones * np.float32(-0.01)), "degrees", "Spacecraft roll", "Spacecraft roll.",
            content="auxiliaryInformation", fill=FLT_MAX)
    geo_put("segment_dist_x", p.x0 + np.arange(m) * SEGMENT_LENGTH_M, "meters", "Along Track Distance",
            "Along-track distance from the equator crossing to the start of the 20m geolocation segment.")
    geo_put("segment_id", (first_seg + np.arange(m)).astype(np.int32), "1", "Along-track segment ID number",
            "A 7 digit number identifying the along-track geolocation segment number. These are sequential, "
            "starting with 1 for the first segment after an ascending equatorial crossing node.")
    geo_put("segment_length", np.full(m, SEGMENT_LENGTH_M), "meters", "Along Track Segment Length",
            "The along-track length of the along-track segment. Nominally these are 20m, but they vary from 19.8m "
            "to 20.2m.")
    geo_put("segment_ph_cnt", cnt, "counts", "Number of photons in a given along-track segment",
            "Number of photons in a given along-track segment. In the case of no photons within the segment "
            "(segment_ph_cnt=0), most other parameters are filled with invalid or default value.")
    for name, value, units, ln in (("sigma_across", 5.0, "meters", "Across-track geolocation uncertainty"),
                                   ("sigma_along", 5.0, "meters", "Along-track geolocation uncertainty"),
                                   ("sigma_lat", 4.5e-5, "degrees", "Latitude uncertainty"),
                                   ("sigma_lon", 8.0e-5, "degrees", "Longitude uncertainty")):
        geo_put(name, (ones * np.float32(value)), units, ln, f"Estimated {ln.lower()}.",
                content="qualityInformation", fill=FLT_MAX)
    sigma_h = np.where(sig_count > 0, 0.08 + 0.5 / np.sqrt(np.maximum(sig_count, 1)), FLT_MAX).astype(np.float32)
    geo_put("sigma_h", sigma_h, "meters", "height uncertainty", "Estimated height uncertainty for the reference "
            "photon bounce point.", content="qualityInformation", fill=FLT_MAX)
    pulse_of_seg = np.clip(np.searchsorted(p.seg, np.arange(m)), 0, p.x.size - 1)
    block_of_seg = np.searchsorted(bp.blocks, p.n[pulse_of_seg] // SHOTS_PER_BCKGRD)
    block_of_seg = np.clip(block_of_seg, 0, bp.blocks.size - 1)
    geo_put("solar_azimuth", bp.sun_az[block_of_seg].astype(np.float32), "degrees_east", "solar azimuth",
            "The direction, eastwards from north, of the sun vector as seen by an observer at the laser ground "
            "spot.", content="modelResult", fill=FLT_MAX)
    geo_put("solar_elevation", bp.sun_el[block_of_seg].astype(np.float32), "degrees", "solar elevation",
            "Solar Angle above or below the plane tangent to the ellipsoid surface at the laser spot. Positive "
            "values mean the sun is above the horizon.", content="modelResult", fill=FLT_MAX)
    surf = np.zeros((m, 5), dtype=np.int8)
    for col in props.considered:
        surf[:, col] = 1
    geo_put("surf_type", surf, "1", "Surface Type", "Flags describing which surface types this segment is "
            "associated with. 0=not type, 1=is type. Order of array is land, ocean, sea ice, land ice, inland "
            "water.", content="referenceInformation", dims=(gdt, ds_surf),
            flag_meanings="not_type is_type", flag_values=np.array([0, 1], dtype="i1"))
    energy = 1.7e-4 if bp.strong else 4.3e-5
    geo_put("tx_pulse_energy", (ones * np.float32(energy)), "joules", "Transmit Pulse Energy", "The average "
            "transmit pulse energy, measured by the internal laser energy monitor, split into per-beam "
            "measurements.", content="modelResult", fill=FLT_MAX)
    geo_put("tx_pulse_skew_est", (ones * np.float32(2.0e-11)), "seconds", "Transmit Pulse Shape Skew",
            "The difference between the means of the lower and upper threshold crossing times.",
            content="modelResult", fill=FLT_MAX)
    geo_put("tx_pulse_width_lower", (ones * np.float32(1.5e-9)), "seconds", "Transmit Pulse Width Lower",
            "The distance between the lower threshold crossing times.", content="modelResult", fill=FLT_MAX)
    geo_put("tx_pulse_width_upper", (ones * np.float32(9.0e-10)), "seconds", "Transmit Pulse Width Upper",
            "The distance between the upper threshold crossing times.", content="modelResult", fill=FLT_MAX)
    vel = orbit.spacecraft_velocity_ecef(u_c, spec.lan).astype(np.float32)
    geo_put("velocity_sc", vel, "meters/second", "spacecraft velocity", "Spacecraft velocity components (east "
            "component, north component, up component) an observer on the ground would measure.",
            content="modelResult", fill=FLT_MAX, dims=(gdt, ds_xyz))
    geo_put("yaw", (ones * np.float32(0.03)), "degrees", "Spacecraft yaw", "Spacecraft yaw.",
            content="auxiliaryInformation", fill=FLT_MAX)

    # -- geophys_corr ------------------------------------------------------------------------------
    gc = g.create_group("geophys_corr")
    c.set_attrs(gc, {"Description": "Contains parameters used to correct photon heights for geophysical "
                     "effects, such as tides. These parameters are posted at the same interval as the ICESat-2 "
                     "Geolocation Along-Track Segment interval (nominally 20m along-track).",
                     "data_rate": "These parameters are stored at the ICESat-2 Geolocation Along Track Segment "
                     "rate (nominally every 20 m along-track)."})
    cdt = c.make_scale(put(gc, "delta_time", seg_time, cf(
        "seconds since 2018-01-01", "Elapsed GPS seconds", "Elapsed seconds from the ATLAS SDP GPS Epoch, "
        "corresponding to the transmit time of the reference photon.", content="referenceInformation",
        coordinates="../geolocation/reference_photon_lat ../geolocation/reference_photon_lon",
        source="Operations", standard_name="time")))
    gcoords2 = "delta_time ../geolocation/reference_photon_lat ../geolocation/reference_photon_lon"
    geoid = surface.geoid_height(seg_lon[::50], seg_lat[::50], spec.surface)[np.clip(blocky, 0, None)]
    tide = 0.05 * np.sin(2 * math.pi * unix_c[::50] / 44712.0)
    tide = tide[np.clip(blocky, 0, tide.size - 1)]
    for name, data, units, ln, content in (
        ("dac", 0.02 * np.cos(xc / 4.0e5), "meters", "Dynamic Atmosphere Correction", "modelResult"),
        ("dem_h", dem_seg, "meters", "DEM Height", "modelResult"),
        ("geoid", geoid, "meters", "Geoid", "modelResult"),
        ("geoid_free2mean", np.full(m, -0.04), "meters", "Geoid Free-to-Mean conversion", "modelResult"),
        ("tide_earth", 0.12 * np.sin(xc / 3.1e5), "meters", "Earth Tide", "modelResult"),
        ("tide_earth_free2mean", np.full(m, 0.03), "meters", "Earth Tide Free-to-Mean conversion", "modelResult"),
        ("tide_equilibrium", 0.01 * np.cos(xc / 2.2e5), "meters", "Long-period equilibrium tide", "modelResult"),
        ("tide_load", 0.3 * tide, "meters", "Load Tide", "modelResult"),
        ("tide_oc_pole", np.full(m, 0.001), "meters", "Oceanic pole tide", "modelResult"),
        ("tide_ocean", np.full(m, FLT_MAX), "meters", "Ocean Tide", "modelResult"),
        ("tide_pole", 0.002 * np.cos(xc / 5.0e5), "meters", "Solid Earth Pole Tide", "modelResult"),
    ):
        vals = np.asarray(data, dtype=np.float32)
        if name not in ("dem_h", "geoid", "geoid_free2mean", "tide_earth_free2mean", "tide_oc_pole", "tide_ocean"):
            vals = vals[np.clip(blocky * 50, 0, m - 1)]  # piecewise constant per km
        put(gc, name, vals, cf(units, ln, f"{ln} (synthetic model value)", content=content, coordinates=gcoords2,
                               source="ATL03 ATBD, Section 6"), fill=FLT_MAX, dims=(cdt,))
    put(gc, "dem_flag", np.full(m, props.dem_flag, dtype=np.int8), cf(
        "1", "DEM source flag", "Indicates source of the DEM height. Values: 0=None, 1=Arctic, 2=GMTED, 3=MERIT, "
        "4=Antarctic", content="referenceInformation", coordinates=gcoords2, source="ATL03 ATBD, Section 6",
        flag_meanings="none arctic gmted merit antarctic", flag_values=np.arange(5, dtype="i1")), dims=(cdt,))

    # -- bckgrd_atlas (50 shots) ---------------------------------------------------------------------
    bg = g.create_group("bckgrd_atlas")
    c.set_attrs(bg, {"Description": "Contains parameters related to the background photon rate.",
                     "data_rate": "Data are stored at the 50-shot (200 Hz) rate."})
    nbk = bp.blocks.size
    block_of_ph = np.searchsorted(bp.blocks, p.n[pulse] // SHOTS_PER_BCKGRD)
    bg_counts = np.bincount(block_of_ph[~bp.signal], minlength=nbk).astype(np.int32)
    reduced = np.bincount(block_of_ph[~bp.signal & ~bp.near], minlength=nbk).astype(np.int32)
    block_start = bp.blocks * SHOTS_PER_BCKGRD
    bdt = c.make_scale(put(bg, "delta_time", spec.node_delta_time + block_start / PRF_HZ, cf(
        "seconds since 2018-01-01", "Elapsed GPS seconds", "Time at the start of the 50-shot background "
        "histogram, seconds since the ATLAS SDP GPS Epoch.", content="referenceInformation", source="ATL02",
        standard_name="time")))
    b1 = (bdt,)
    put(bg, "bckgrd_counts", bg_counts, cf("counts", "ATLAS 50-shot background count", "Number of background "
                                           "photons in the 50-shot telemetry band histogram (signal removed).",
                                           content="modelResult", source="ATL03 ATBD, Section 7.3"), dims=b1)
    put(bg, "bckgrd_counts_reduced", reduced, cf("counts", "ATLAS 50-shot background count - reduced",
                                                 "Background count excluding the 20 m around the surface.",
                                                 content="modelResult", source="ATL03 ATBD, Section 7.3"),
        dims=b1)
    put(bg, "bckgrd_hist_top", bp.top, cf("meters", "Top of the ATLAS 50-shot background height", "The height "
                                          "of the top of the altimetric range window.", content="modelResult",
                                          source="ATL03 ATBD, Section 7.3"), fill=FLT_MAX, dims=b1)
    put(bg, "bckgrd_int_height", bp.height, cf("meters", "Altimetric range window width", "The height of the "
                                               "altimetric range window over which background is integrated.",
                                               content="modelResult", source="ATL03 ATBD, Section 7.3"),
        fill=FLT_MAX, dims=b1)
    put(bg, "bckgrd_int_height_reduced", (bp.height - np.float32(20.0)).astype(np.float32), cf(
        "meters", "Altimetric range window width - reduced", "The window height less the 20 m around the "
        "surface.", content="modelResult", source="ATL03 ATBD, Section 7.3"), fill=FLT_MAX, dims=b1)
    put(bg, "bckgrd_rate", bp.rate, cf("counts / second", "Background count rate based on the ATLAS 50-shot sum",
                                       "The background count rate from the 50-shot altimetric histogram after "
                                       "removing the number of likely signal photons. Background photons per "
                                       "50 shots = bckgrd_rate * 50 * 2 * bckgrd_int_height / c.",
                                       content="modelResult", source="ATL03 ATBD, Section 7.3"),
        fill=FLT_MAX, dims=b1)
    put(bg, "pce_mframe_cnt", ((block_start // SHOTS_PER_MFRAME + int(spec.node_delta_time * PRF_HZ)
                                // SHOTS_PER_MFRAME) % 2**32).astype(np.uint32), cf(
        "counts", "PCE Major frame counter", "Major frame counter of the background histogram.",
        content="auxiliaryInformation", source="ATL02"), dims=b1)
    put(bg, "tlm_height_band1", bp.height, cf("meters", "Telemetry band 1 height", "The height of telemetry band "
                                              "1.", content="auxiliaryInformation", source="ATL02"),
        fill=FLT_MAX, dims=b1)
    put(bg, "tlm_height_band2", np.zeros(nbk, dtype=np.float32), cf("meters", "Telemetry band 2 height",
                                                                   "The height of telemetry band 2 (unused).",
                                                                   content="auxiliaryInformation",
                                                                   source="ATL02"), fill=FLT_MAX, dims=b1)
    put(bg, "tlm_top_band1", bp.top, cf("meters", "Telemetry band 1 top", "The top of telemetry band 1 above the "
                                        "WGS84 ellipsoid.", content="auxiliaryInformation", source="ATL02"),
        fill=FLT_MAX, dims=b1)
    put(bg, "tlm_top_band2", np.zeros(nbk, dtype=np.float32), cf("meters", "Telemetry band 2 top", "The top of "
                                                               "telemetry band 2 (unused).",
                                                               content="auxiliaryInformation", source="ATL02"),
        fill=FLT_MAX, dims=b1)

    # -- signal_find_output (per surface type, every major frame) --------------------------------------
    sfo = g.create_group("signal_find_output")
    c.set_attrs(sfo, {"Description": "Contains outputs of the signal finding algorithm per surface type.",
                      "data_rate": "Data are stored at the major frame (50 Hz) rate."})
    frames = np.arange(0, nbk, 4)
    per_bin = bp.rate[frames] * (2 * 3.0 / C_LIGHT) * SHOTS_PER_MFRAME  # background per 3 m bin per frame
    for col, name in enumerate(("land", "ocean", "sea_ice", "land_ice", "inlandwater")):
        sg = sfo.create_group(name)
        considered = col in props.considered
        sdt = c.make_scale(put(sg, "delta_time", spec.node_delta_time + block_start[frames] / PRF_HZ, cf(
            "seconds since 2018-01-01", "Elapsed GPS seconds", "Time of the signal-finding interval.",
            content="referenceInformation", source="ATL03 ATBD, Section 5", standard_name="time")))
        vals = {
            "bckgrd_mean": per_bin if considered else np.full(frames.size, FLT_MAX),
            "bckgrd_sigma": np.sqrt(per_bin) if considered else np.full(frames.size, FLT_MAX),
            "t_pc_delta": np.full(frames.size, 1.0 / 50.0 if considered else FLT_MAX),
            "z_pc_delta": np.full(frames.size, 3.0 if considered else FLT_MAX),
        }
        for vname, data in vals.items():
            put(sg, vname, np.asarray(data, dtype=np.float32), cf(
                "1" if vname.startswith("bckgrd") else ("seconds" if vname[0] == "t" else "meters"),
                vname.replace("_", " "), f"Signal finding output {vname} for surface type {name}.",
                content="modelResult", source="ATL03 ATBD, Section 5"), fill=FLT_MAX, dims=(sdt,))

    level = conf[:, props.considered[0]] if n else np.zeros(0, dtype=np.int8)
    totals = np.zeros((3, 5), dtype=np.int64)
    for i, lv in enumerate((4, 3, 2)):
        cnt_lv = int(np.count_nonzero(level == lv))
        for col in props.considered:
            totals[i, col] = cnt_lv
    return np.vstack([totals, np.full((1, 5), n)])


def _write_quality(f: h5py.File, spec: GranuleSpec, totals: dict[str, np.ndarray], ds_surf: h5py.Dataset) -> None:
    q = f.create_group("quality_assessment")
    c.set_attrs(q, {"Description": "Contains quality assessment data. This may include QA counters, QA along-track "
                    "data and/or QA summary data.", "data_rate": "Data within this group pertain to the granule in "
                    "its entirety."})
    c.put_qa_flags(q)
    qdt = c.make_scale(put(q, "delta_time", np.array([spec.data_start_delta_time]), cf(
        "seconds since 2018-01-01", "Elapsed GPS seconds", "Start time of the QA summary.",
        content="referenceInformation", standard_name="time")))
    for beam, t in totals.items():
        g = q.create_group(beam)
        n = max(int(t[3, 0]), 1)
        for i, name in enumerate(("high", "med", "low")):
            put(g, f"qa_total_signal_conf_ph_{name}", t[i][None, :].astype(np.int32), cf(
                "counts", f"Total {name} confidence photons", f"Number of photons with {name} signal confidence per "
                "surface type.", content="qualityInformation", source="Operations"), dims=(qdt, ds_surf),
                layout="contiguous")
            put(g, f"qa_perc_signal_conf_ph_{name}", (100.0 * t[i][None, :] / n).astype(np.float32), cf(
                "percent", f"Percent {name} confidence photons", f"Percentage of photons with {name} signal "
                "confidence per surface type.", content="qualityInformation", source="Operations"),
                dims=(qdt, ds_surf), layout="contiguous")
        considered = np.zeros((1, 5), dtype=np.float32)
        for col in surface.surface_props(spec.surface).considered:
            considered[0, col] = 100.0
        put(g, "qa_perc_surf_type", considered, cf(
            "percent", "Percent surface type", "Percentage of segments of each surface type.",
            content="qualityInformation", source="Operations"), dims=(qdt, ds_surf), layout="contiguous")


# -- ancillary data ---------------------------------------------------------------------------------

_SIGNAL_FIND_INPUT = (
    ("addpad_flag", "i4", 1), ("alpha_inc", "f4", 1.0), ("alpha_max", "f4", 0.8), ("delta_t_gap_min", "f4", 0.4),
    ("delta_t_lin_fit", "f4", 0.2), ("delta_t_max", "f4", 0.4), ("delta_t_min", "f4", 0.02),
    ("delta_z_bg", "f4", 8.0), ("delta_zmax2", "f4", 120.0), ("delta_zmin", "f4", 10.0), ("e_a", "f4", 0.01),
    ("e_linfit_edit", "f4", 0.5), ("e_linfit_slant", "f4", 0.5), ("e_m", "f4", 5.0), ("e_m_mult", "f4", 2.0),
    ("htspanmin", "f4", 5.0), ("lslant_flag", "i4", 1), ("min_fit_time_fact", "f4", 0.5),
    ("n_delta_z1", "i4", 5), ("n_delta_z2", "i4", 4), ("nbin_min", "i4", 2), ("nphot_min", "i4", 8),
    ("nslw", "f4", 5.0), ("nslw_v", "f4", 10.0), ("out_edit_flag", "i4", 1), ("pc_bckgrd_flag", "i4", 1),
    ("r", "f4", 0.6), ("r2", "f4", 0.8), ("sig_find_t_inc", "f4", 0.2), ("snrlow", "f4", 1.7),
    ("snrmed", "f4", 4.0), ("t_gap_big", "f4", 0.1),
)


def _write_ancillary(f: h5py.File, spec: GranuleSpec, first: int, last: int, ds_surf: h5py.Dataset) -> None:
    params = {"atl03_pad": 5.0, "signal_find": "per surface type, 5 columns of signal_conf_ph"}
    a = c.write_common_ancillary(f, spec, first, last, c.control_text(spec, params))

    alt = a.create_group("altimetry")
    c.set_attrs(alt, {"Description": "Contains parameters related to altimetry processing."})
    for name, value, dtype, units in (("atl03_pad", 5.0, "f8", "seconds"), ("band_tol", 2.0, "f8", "meters"),
                                      ("min_full_sat", 16, "i4", "counts"), ("min_near_sat", 12, "i4", "counts"),
                                      ("min_sat_h", 0.6, "f8", "meters"), ("min_scan_s", 0.01, "f8", "seconds"),
                                      ("ph_sat_flag", 0, "i4", "1"), ("ph_sat_lb", -0.5, "f8", "meters"),
                                      ("ph_sat_ub", 2.0, "f8", "meters"), ("podppd_pad", 1.0, "f8", "seconds"),
                                      ("scan_settle_s", 0.5, "f8", "seconds")):
        put_scalar(alt, name, value, dtype, cf(units, name.replace("_", " "), f"Altimetry parameter {name}.",
                                               content="auxiliaryInformation", source="ATL03 ATBD"))

    eng = a.create_group("atlas_engineering")
    c.set_attrs(eng, {"Description": "Contains ATLAS engineering parameters."})
    ds_gt = c.make_scale(put(eng, "ds_gt", np.arange(1, 7, dtype=np.int32), cf(
        "1", "Ground track index", "Dimension scale for the ground tracks (1=gt1l ... 6=gt3r).",
        content="auxiliaryInformation"), layout="contiguous"))
    put(eng, "ds_stat", np.arange(1, 6, dtype=np.int32), cf("1", "Statistic index", "Dimension scale for "
                                                            "statistics.", content="auxiliaryInformation"),
        layout="contiguous")
    for name in ("det_ab_flag", "hvpc_ab_flag", "laser_12_flag", "lrs_ab_flag", "pdu_ab_flag", "spd_ab_flag",
                 "tams_ab_flag"):
        put_scalar(eng, name, 1, "i4", cf("1", name.replace("_", " "), f"Side/unit selection flag {name}.",
                                          content="auxiliaryInformation", source="ATL02"))
    put(eng, "ph_uncorrelated_error", np.full(6, 0.05), cf("meters", "Photon uncorrelated error", "Uncorrelated "
                                                          "height error per ground track.",
                                                          content="auxiliaryInformation"), dims=(ds_gt,),
        layout="contiguous")
    rx = eng.create_group("receiver")
    for name, value in (("rx_bckgrd_sensitivity", 2.4e-4), ("rx_return_sensitivity", 2.4e-4)):
        put(rx, name, np.full(6, value, dtype=np.float32), cf("1", name.replace("_", " "), f"Receiver {name}.",
                                                              content="auxiliaryInformation"), dims=(ds_gt,),
            layout="contiguous")
    tx = eng.create_group("transmit")
    for name, value in (("tx_pulse_distribution", 1 / 6), ("tx_pulse_energy", 1.7e-4), ("tx_pulse_skew_est", 2e-11),
                        ("tx_pulse_thresh_lower", 0.1), ("tx_pulse_thresh_upper", 0.9),
                        ("tx_pulse_width_lower", 1.5e-9), ("tx_pulse_width_upper", 9e-10)):
        put(tx, name, np.full(6, value, dtype=np.float32), cf("1", name.replace("_", " "), f"Transmitter {name}.",
                                                              content="auxiliaryInformation"), dims=(ds_gt,),
            layout="contiguous")

    cal = a.create_group("calibrations")
    c.set_attrs(cal, {"Description": "Contains calibration products used in the processing."})
    ds_ch = c.make_scale(put(cal, "ds_channel", np.arange(1, 21, dtype=np.int32), cf(
        "1", "Channel index", "Dimension scale for the 20 detector channels of a spot.",
        content="auxiliaryInformation"), layout="contiguous"))
    rng = np.random.default_rng([spec.seed, spec.cycle, 20])

    def cal_meta(g: h5py.Group, product: str) -> None:
        put_string(g, product, f"CAL{product[3:5]}_synthetic_{spec.cycle:02d}.dat",
                   cf("1", "Calibration product", "Name of the calibration product used.",
                      content="auxiliaryInformation"))

    dtg = cal.create_group("dead_time")
    cal_meta(dtg, "cal42_product")
    put_scalar(dtg, "side", 1, "i4", cf("1", "side", "ATLAS side", content="auxiliaryInformation"))
    put_scalar(dtg, "temperature", 20.5, "f4", cf("degrees C", "temperature", "Instrument temperature",
                                                  content="auxiliaryInformation"))
    rad = cal.create_group("dead_time_radiometric_signal_loss")
    cal_meta(rad, "cal34_product")
    fpb = cal.create_group("first_photon_bias")
    cal_meta(fpb, "cal19_product")
    llr = cal.create_group("low_link_impulse_response")
    cal_meta(llr, "cal20_product")
    nbins = 500
    for name, value, dtype in (("bin_width", 5e-11, "f8"), ("laser", 1, "i4"), ("mode", 1, "i4"),
                               ("num_bins", nbins, "i4"), ("return_source", 1, "i4"), ("side", 1, "i4"),
                               ("temperature", 20.5, "f4")):
        put_scalar(llr, name, value, dtype, cf("1", name, f"CAL20 {name}", content="auxiliaryInformation"))
    put(llr, "hist_x", (np.arange(nbins) * 5e-11).astype(np.float32), cf(
        "seconds", "histogram bin times", "Times of the impulse response histogram bins.",
        content="auxiliaryInformation"), layout="contiguous")
    widths = np.linspace(1e-9, 2e-9, 10)
    strengths = np.linspace(0.5, 10.0, 20)
    for gi, beam in enumerate(BEAMS):
        g = dtg.create_group(beam)
        put(g, "dead_time", (3.1e-9 + 1e-11 * rng.standard_normal(20)), cf(
            "seconds", "dead time", "Dead time per channel", content="auxiliaryInformation", source="CAL42"),
            dims=(ds_ch,), layout="compact")
        put(g, "sigma", np.full(20, 1.5e-11), cf("seconds", "dead time sigma", "Dead time uncertainty per channel",
                                                 content="auxiliaryInformation", source="CAL42"),
            dims=(ds_ch,), layout="compact")
        g = rad.create_group(beam)
        put(g, "dead_time", np.full(1, 3.1e-9), cf("seconds", "dead time", "Dead time", content="auxiliaryInformation",
                                                   source="CAL34"), layout="compact")
        put(g, "rad_corr", (1.0 + 0.01 * np.outer(widths * 1e9, strengths)).astype(np.float32), cf(
            "1", "radiometric correction", "Radiometric signal loss table (width x strength)",
            content="auxiliaryInformation", source="CAL34"), layout="contiguous")
        put(g, "strength", strengths.astype(np.float32), cf("counts", "strength", "Signal strength axis",
                                                            content="auxiliaryInformation", source="CAL34"),
            layout="compact")
        put(g, "width", widths.astype(np.float32), cf("seconds", "width", "Pulse width axis",
                                                      content="auxiliaryInformation", source="CAL34"),
            layout="compact")
        g = fpb.create_group(beam)
        put(g, "dead_time", np.full(1, 3.1e-9), cf("seconds", "dead time", "Dead time", content="auxiliaryInformation",
                                                   source="CAL19"), layout="compact")
        put(g, "ffb_corr", (0.002 * np.outer(widths * 1e9, strengths)).astype(np.float32), cf(
            "meters", "first photon bias correction", "First photon bias table (width x strength)",
            content="auxiliaryInformation", source="CAL19"), layout="contiguous")
        put(g, "strength", strengths.astype(np.float32), cf("counts", "strength", "Signal strength axis",
                                                            content="auxiliaryInformation", source="CAL19"),
            layout="compact")
        put(g, "width", widths.astype(np.float32), cf("seconds", "width", "Pulse width axis",
                                                      content="auxiliaryInformation", source="CAL19"),
            layout="compact")
        g = llr.create_group(beam)
        events = (170_000 + rng.integers(0, 60_000, 20)).astype(np.int64)
        hist = np.rint(events[:, None] * np.exp(-0.5 * ((np.arange(nbins) - 60) / 8.0) ** 2) / 20.0)
        put(g, "hist", hist.astype(np.int32), cf("counts", "impulse response histogram", "Per-channel histogram "
                                                 "of the low-link impulse response", content="auxiliaryInformation",
                                                 source="CAL20"), dims=(ds_ch, None), layout="contiguous")
        put(g, "total_events", events, cf("1", "Total Events", "Number of events used in constructing the "
                                          "per-channel histogram", content="auxiliaryInformation", source="CAL20"),
            dims=(ds_ch,), layout="compact")

    tep = a.create_group("tep")
    c.set_attrs(tep, {"Description": "Contains parameters related to the transmitter echo path (TEP)."})
    tgt = c.make_scale(put(tep, "ds_gt", np.arange(1, 7, dtype=np.int32), cf(
        "1", "Ground track index", "Dimension scale for the ground tracks.", content="auxiliaryInformation"),
        layout="contiguous"))
    for name, value, dtype in (("min_tep_ph", 1000, "i4"), ("min_tep_secs", 10.0, "f8"), ("n_tep_bins", 2000, "i4"),
                               ("tep_bin_size", 5e-11, "f8"), ("tep_gap_size", 1e-8, "f8"),
                               ("tep_normalize", 1, "i4"), ("tep_peak_bins", 20, "i4"),
                               ("tep_prim_window", 5e-8, "f8"), ("tep_range_prim", 1e-7, "f8"),
                               ("tep_rm_noise", 1, "i4"), ("tep_sec_window", 1e-7, "f8"),
                               ("tep_start_x", 0.0, "f8")):
        put_scalar(tep, name, value, dtype, cf("1", name.replace("_", " "), f"TEP parameter {name}.",
                                               content="auxiliaryInformation"))
    put(tep, "tep_valid_spot", np.array([1, 1, 3, 3, 3, 3], dtype=np.int32), cf(
        "1", "TEP valid spot", "Spot whose TEP histogram is used for each ground track.",
        content="auxiliaryInformation"), dims=(tgt,), layout="contiguous")

    for beam in BEAMS:
        sfi = a.create_group(beam).create_group("signal_find_input")
        c.set_attrs(sfi, {"Description": "Signal finding input parameters per surface type."})
        for name, dtype, value in _SIGNAL_FIND_INPUT:
            put(sfi, name, np.full(5, value, dtype=dtype), cf("1", name.replace("_", " "), f"Signal finding "
                                                              f"parameter {name} per surface type.",
                                                              content="auxiliaryInformation",
                                                              source="ATL03 ATBD, Section 5"),
                dims=(ds_surf,), layout="contiguous")


def _write_impulse_response(f: h5py.File, spec: GranuleSpec) -> None:
    air = f.create_group("atlas_impulse_response")
    c.set_attrs(air, {"Description": "Contains the transmitter echo path (TEP) histograms.",
                      "data_rate": "Data within this group pertain to the granule in its entirety."})
    nb = 2000
    t = np.arange(nb) * 5e-11
    for i, name in enumerate(("pce1_spot1", "pce2_spot3")):
        g = air.create_group(name).create_group("tep_histogram")
        c.set_attrs(g, {"Description": "TEP histogram of one spot."})
        shape = np.exp(-0.5 * ((np.arange(nb) - 200 - 10 * i) / 12.0) ** 2) + 0.004 * np.exp(
            -0.5 * ((np.arange(nb) - 500) / 40.0) ** 2)
        put_scalar(g, "reference_tep_flag", 0, "i1", cf("1", "reference TEP flag", "1 when the TEP is a "
                                                       "reference TEP", content="auxiliaryInformation"))
        put_scalar(g, "tep_bckgrd", 12.0, "f8", cf("counts", "TEP background", "Background of the TEP histogram",
                                                   content="auxiliaryInformation"))
        put_scalar(g, "tep_duration", 60.0, "f8", cf("seconds", "TEP duration", "Duration of the TEP "
                                                     "accumulation", content="auxiliaryInformation"))
        put(g, "tep_hist", (shape / shape.sum()).astype(np.float64), cf(
            "1", "TEP histogram", "Normalized TEP histogram", content="auxiliaryInformation"), layout="contiguous")
        put_scalar(g, "tep_hist_sum", 212_000 + 1000 * i, "i8", cf("counts", "TEP histogram sum", "Number of TEP "
                                                                   "photons", content="auxiliaryInformation"))
        put(g, "tep_hist_time", t, cf("seconds", "TEP histogram time", "Time of the TEP histogram bins",
                                      content="auxiliaryInformation"), layout="contiguous")
        put_scalar(g, "tep_tod", spec.start_delta_time - 86400.0, "f8", cf(
            "seconds since 2018-01-01", "TEP time of day", "Time of the TEP accumulation",
            content="auxiliaryInformation", standard_name="time"))


__all__ = ["write_atl03"]
