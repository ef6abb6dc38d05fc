"""Synthetic ATL06 v006 (land ice height) granules.

One row per 40 m segment posted every 20 m (``segment_id`` = the id of the second of the two 20 m
ATL03 segments, ``x_atc`` = its start = the segment centre), on each of the six beams, over the whole
granule region minus gaps (clouds shared by all beams, short dropouts per beam, isolated fit
failures), so ``segment_id`` is not contiguous. ``h_li`` is the surface model plus noise of the
segment's own ``h_li_sigma``; the fit statistics follow from the photon rates, the background and
the surface slopes (``dh_fit_dy`` from the pair of beams, as in the real product).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from is2cloud.granules import common as c
from is2cloud.granules import orbit, surface
from is2cloud.granules.common import FLT_MAX, WrittenGranule, cf, put, put_scalar
from is2cloud.granules.orbit import BEAMS, SEGMENT_LENGTH_M, GranuleSpec

SEGMENTS_PER_HISTOGRAM = 200  # residual_histogram rows cover 200 segments (4 km)
HISTOGRAM_BINS = 700  # 0.1 m bins over +/-35 m
QA_INTERVAL = 10_000  # segments per quality_assessment row (ancillary_data/qa_at_interval)
BLOCK = 50  # segments per value of the slowly varying filler fields (1 km)


def _rng(spec: GranuleSpec, beam_index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([spec.seed, spec.rgt, spec.cycle, spec.region, 6, beam_index, stream])


# -- model of one beam ------------------------------------------------------------------------------


@dataclass
class _Beam:
    beam: str
    strong: bool
    seg_id: np.ndarray  # all segments of the window (int64)
    x: np.ndarray
    dtime: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    y: np.ndarray
    h: np.ndarray  # surface truth at the segment centres
    valid: np.ndarray  # rows written to land_ice_segments


def _segment_ids(spec: GranuleSpec) -> np.ndarray:
    x0, x1 = spec.window
    j0 = int(round(x0 / SEGMENT_LENGTH_M)) + 2
    j1 = int(round(x1 / SEGMENT_LENGTH_M))
    return np.arange(j0, j1 + 1, dtype=np.int64)


def _beam_model(spec: GranuleSpec, beam: str, seg_id: np.ndarray, pass_gaps: np.ndarray) -> _Beam:
    k = BEAMS.index(beam)
    strong = orbit.beam_type(beam, spec.sc_orient) == "strong"
    x = (seg_id - 1) * SEGMENT_LENGTH_M
    dtime, lon, lat, y = orbit.beam_positions(spec, beam, x)
    h = surface.surface_height(lon, lat, orbit.delta_time_to_unix(dtime), spec.surface, spec.seed)
    rng = _rng(spec, k, 1)
    own = surface.cloud_gaps(spec.seed, spec.rgt, spec.cycle, beam_index=k)
    fail = rng.random(x.size) < (0.002 if strong else 0.012)
    valid = ~surface.in_intervals(x, pass_gaps) & ~surface.in_intervals(x, own) & ~fail
    return _Beam(beam, strong, seg_id, x, dtime, lon, lat, y, h, valid)


def _blocky(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return values[np.clip(idx, 0, values.size - 1)]


def build_beams(spec: GranuleSpec) -> dict[str, _Beam]:
    seg_id = _segment_ids(spec)
    pass_gaps = surface.cloud_gaps(spec.seed, spec.rgt, spec.cycle)
    return {b: _beam_model(spec, b, seg_id, pass_gaps) for b in BEAMS}


# -- writer ------------------------------------------------------------------------------------------


def write_atl06(spec: GranuleSpec, path: str | Path, *, created: str | None = None) -> WrittenGranule:
    """Write one synthetic ATL06 v006 granule to ``path`` and report what was written."""
    if spec.product != "ATL06":
        raise ValueError(f"write_atl06 needs an ATL06 spec, got {spec.product}")
    t_start = time.perf_counter()
    path = Path(path)
    created = created or c.production_time(spec)
    beams = build_beams(spec)
    across = _across_slopes(beams)
    lon_all = np.concatenate([b.lon[b.valid] for b in beams.values()])
    lat_all = np.concatenate([b.lat[b.valid] for b in beams.values()])
    extent = c.track_extent(lon_all, lat_all) if lon_all.size else c.track_extent(
        np.concatenate([b.lon for b in beams.values()]), np.concatenate([b.lat for b in beams.values()]))
    records: dict[str, int] = {}
    footprints: dict[str, np.ndarray] = {}
    seg_id = next(iter(beams.values())).seg_id
    with c.open_new(path) as f:
        c.set_attrs(f, c.root_attrs(spec, extent, created))
        for name, beam in beams.items():
            g = f.create_group(name)
            c.set_attrs(g, c.beam_group_attrs(name, spec.sc_orient))
            records[name] = _write_beam(g, spec, beam, across[name])
            step = max(1, beam.x.size // 400)
            footprints[name] = np.column_stack([beam.lon[::step], beam.lat[::step]])
        _write_ancillary(f, spec, int(seg_id[0]), int(seg_id[-1]))
        c.write_orbit_info(f, spec)
        _write_quality(f, spec, beams)
        c.write_metadata(f, spec, extent, created, inputs=("ATL03", "ATL09"))
    return WrittenGranule(spec, path, extent, records, time.perf_counter() - t_start, footprints)


def _across_slopes(beams: dict[str, _Beam]) -> dict[str, np.ndarray]:
    """dh_fit_dy per beam from the two beams of its pair (y positive left)."""
    out: dict[str, np.ndarray] = {}
    for pair in ("gt1", "gt2", "gt3"):
        left, right = beams[pair + "l"], beams[pair + "r"]
        slope = (left.h - right.h) / (left.y - right.y)
        out[pair + "l"] = out[pair + "r"] = slope
    return out


def _write_beam(g: h5py.Group, spec: GranuleSpec, b: _Beam, across_all: np.ndarray) -> int:
    props = surface.surface_props(spec.surface)
    k = BEAMS.index(b.beam)
    rng = _rng(spec, k, 2)
    v = b.valid
    n = int(v.sum())
    h = b.h[v]
    x = b.x[v]
    along = np.gradient(b.h, b.x)[v] if b.x.size > 1 else np.zeros(n)
    across = across_all[v]
    dtime = b.dtime[v]
    unix = orbit.delta_time_to_unix(dtime)

    # slowly varying fields, one value per km block
    block = ((b.seg_id - b.seg_id[0]) // BLOCK)[v]
    nb = int((b.seg_id.size - 1) // BLOCK) + 1
    bx = b.x[::BLOCK][:nb]
    bsel = np.arange(0, b.x.size, BLOCK)[:nb]
    b_unix = orbit.delta_time_to_unix(b.dtime[bsel])
    sun_el = surface.solar_elevation(b.lon[bsel], b.lat[bsel], b_unix)
    sun_az = surface.solar_azimuth(b.lon[bsel], b.lat[bsel], b_unix)
    bckgrd = surface.background_rate_hz(sun_el, spec.surface, b.strong)
    dem = surface.dem_height(b.lon[bsel], b.lat[bsel], spec.surface, spec.seed)
    geoid = surface.geoid_height(b.lon[bsel], b.lat[bsel], spec.surface)

    # photon statistics of a 40 m segment
    ground_speed = 2 * math.pi * orbit.EARTH_RADIUS_M / orbit.ORBIT_PERIOD_S * 1.004
    pulses = np.float32(40.0 * orbit.PRF_HZ / ground_speed)
    atmos = 0.75 + 0.25 * np.cos(2 * math.pi * bx / 83_000.0 + k)
    rate = (3.2 if b.strong else 0.8) * props.reflectance * atmos
    n_fit = rng.poisson(pulses * _blocky(rate, block)).astype(np.int32)
    n_fit = np.maximum(n_fit, 10)
    slope_mag = np.hypot(along, across)
    expected = np.sqrt(0.1**2 + props.roughness_m**2 + (4.25 * slope_mag) ** 2).astype(np.float32)
    misfit = (expected * rng.uniform(0.9, 1.25, n)).astype(np.float32)
    bg_per_m = _blocky(bckgrd, block) * pulses / (299792458.0 / 2)  # background photons per metre of window
    window = np.maximum(3.0, 6.0 * expected).astype(np.float32)
    bg_frac = (bg_per_m * window) / n_fit
    sigma = (misfit * np.sqrt(1.0 + bg_frac) / np.sqrt(n_fit) * 1.5).astype(np.float32)
    sigma = np.maximum(sigma, np.float32(0.012))

    # quality: near gap edges and a few random segments are flagged and worse
    edge = np.zeros(b.valid.size, dtype=bool)
    gap = ~b.valid
    if gap.any():
        grow = np.convolve(gap.astype(np.int8), np.ones(9, dtype=np.int8), mode="same") > 0
        edge = grow & b.valid
    flagged = edge[v] | (rng.random(n) < 0.01)
    sigma = np.where(flagged, sigma * 4.0, sigma).astype(np.float32)
    h_li = (h + rng.normal(0.0, 1.0, n) * sigma).astype(np.float32)
    fpb = (0.004 + 0.03 * np.clip(n_fit / pulses / 6.0, 0, 1)).astype(np.float32)
    tx_corr = np.float32(0.012)
    h_mean = (h_li - fpb - tx_corr).astype(np.float32)
    dx_sigma = (misfit * math.sqrt(12.0) / 40.0 / np.sqrt(n_fit)).astype(np.float32)
    dh_fit_dx = (along + rng.normal(0.0, 1.0, n) * dx_sigma).astype(np.float32)
    dh_fit_dy = (across + rng.normal(0.0, 0.002, n)).astype(np.float32)
    snr = (n_fit / np.maximum(bg_per_m * window, 0.05)).astype(np.float32)
    sigma_geo_h = np.sqrt(0.3**2 + (3.5 * slope_mag) ** 2).astype(np.float32)

    li = g.create_group("land_ice_segments")
    c.set_attrs(li, {"Description": "The land_ice_segments group contains the primary set of derived land ice "
                     "products. This includes geolocation, height, and standard error and quality measures for "
                     "each segment. This group is sparse, meaning that parameters are provided only for pairs "
                     "of segments for which at least one beam has a valid surface-height measurement.",
                     "data_rate": "Data within this group are sparse.  Data values are provided only for those "
                     "ICESat-2 20m segments where at least one beam has a valid land ice height measurement."})
    coords = "segment_id delta_time latitude longitude"
    sub = "../segment_id ../delta_time ../latitude ../longitude"
    dt = c.make_scale(put(li, "delta_time", dtime, cf(
        "seconds since 2018-01-01", "Elapsed GPS seconds",
        "Number of GPS seconds since the ATLAS SDP epoch. The ATLAS Standard Data Products (SDP) epoch offset is "
        "defined within /ancillary_data/atlas_sdp_gps_epoch as the number of GPS seconds between the GPS epoch "
        "(1980-01-06T00:00:00.000000Z UTC) and the ATLAS SDP epoch. By adding the offset contained within "
        "atlas_sdp_gps_epoch to delta time parameters, the time in gps_seconds relative to the GPS epoch can be "
        "computed.", content="physicalMeasurement", coordinates="segment_id latitude longitude",
        source="section 4.1.4", standard_name="time")))
    d1 = (dt,)
    put(li, "atl06_quality_summary", flagged.astype(np.int8), cf(
        "1", "ATL06_Quality_Summary",
        "The ATL06_quality_summary parameter indicates the best-quality subset of all ATL06 data. A zero in this "
        "parameter implies that no data-quality tests have found a problem with the segment, a one implies that "
        "some potential problem has been found. Users who select only segments with zero values for this flag "
        "can be relatively certain of obtaining high-quality data, but will likely miss a significant fraction "
        "of usable data, particularly in cloudy, rough, or low-surface-reflectance conditions.",
        content="qualityInformation", coordinates=coords, source="section 4.4",
        flag_meanings="best_quality potential_problem", flag_values=np.array([0, 1], dtype="i1"),
        valid_min=0, valid_max=1), dims=d1)
    put(li, "h_li", h_li, cf(
        "meters", "Land Ice height",
        "Standard land-ice segment height determined by land ice algorithm, corrected for first-photon bias, "
        "representing the median- based height of the selected PEs", coordinates=coords,
        source="section 4.4", standard_name="h_li"), fill=FLT_MAX, dims=d1)
    put(li, "h_li_sigma", sigma, cf(
        "meters", "Expected RMS segment misfit",
        "Propagated error due to sampling error and FPB correction from the land ice algorithm",
        content="qualityInformation", coordinates=coords, source="section 4.4"), fill=FLT_MAX, dims=d1)
    put(li, "latitude", b.lat[v], cf(
        "degrees_north", "Latitude", "Latitude of segment center, WGS84, North=+",
        coordinates="segment_id delta_time longitude", source="section 3.10", standard_name="latitude",
        valid_min=-90.0, valid_max=90.0), dims=d1)
    put(li, "longitude", b.lon[v], cf(
        "degrees_east", "Longitude", "Longitude of segment center , WGS84, East=+",
        coordinates="segment_id delta_time latitude", source="section 3.10", standard_name="longitude",
        valid_min=-180.0, valid_max=180.0), dims=d1)
    put(li, "segment_id", b.seg_id[v].astype(np.int32), cf(
        "1", "Reference Point, m",
        "Segment number, counting from the equator. Equal to the segment_id for the second of the two 20m ATL03 "
        "segments included in the 40m ATL06 segment", content="referenceInformation",
        coordinates="delta_time latitude longitude", source="section 3.1.2.1"), dims=d1)
    put(li, "sigma_geo_h", sigma_geo_h, cf(
        "meters", "Vertical Geolocation Error",
        "Total vertical geolocation error due to PPD and POD, including the effects of horizontal geolocation "
        "error on the segment vertical error.", content="qualityInformation", coordinates=coords,
        source="ATBD Section 3.10"), fill=FLT_MAX, dims=d1)

    ones = np.ones(n, dtype=np.float32)
    bc = li.create_group("bias_correction")
    c.set_attrs(bc, {"Description": "The bias_correction subgroup contains information about the estimated "
                     "first-photon bias, and the transmit-pulse-shape bias.",
                     "data_rate": "Data within this group are stored at the land_ice_segments segment rate."})
    fpb_sigma = (0.2 * fpb + 0.001).astype(np.float32)
    for name, data, ln in (
        ("fpb_mean_corr", fpb * np.float32(1.05), "first photon bias mean correction"),
        ("fpb_mean_corr_sigma", fpb_sigma, "first photon bias mean correction error"),
        ("fpb_med_corr", fpb, "first photon bias median correction"),
        ("fpb_med_corr_sigma", fpb_sigma, "first photon bias median correction error"),
        ("med_r_fit", (rng.normal(0.0, 0.01, n)).astype(np.float32).round(3), "middle of TX distribution"),
        ("tx_mean_corr", ones * np.float32(0.014), "tx-pulse mean correction"),
        ("tx_med_corr", ones * tx_corr, "tx-pulse median correction"),
    ):
        put(bc, name, data.astype(np.float32), cf("meters", ln, f"Estimated {ln} for the segment.",
                                                 content="qualityInformation", coordinates=sub,
                                                 source="section 3.5"), fill=FLT_MAX, dims=d1)
    put(bc, "fpb_n_corr", n_fit, cf("counts", "corrected number of pulses",
                                    "Estimated photon count after the first photon bias correction.",
                                    content="qualityInformation", coordinates=sub, source="section 3.5"),
        fill=np.int32(2147483647), dims=d1)

    dem_g = li.create_group("dem")
    c.set_attrs(dem_g, {"Description": "The dem group contains the reference digital elevation model and geoid "
                        "heights.", "data_rate": "Data within this group are stored at the land_ice_segments "
                        "segment rate."})
    put(dem_g, "dem_flag", np.full(n, props.dem_flag, dtype=np.int8), cf(
        "1", "DEM source flag", "Indicates source of the DEM height. Values: 0=None, 1=Arctic, 2=GMTED, 3=MERIT, "
        "4=Antarctic", content="qualityInformation", coordinates=sub, source="ATL03",
        flag_meanings="none arcticdem gmted merit rema", flag_values=np.arange(5, dtype="i1")), dims=d1)
    put(dem_g, "dem_h", _blocky(dem, block).astype(np.float32), cf(
        "meters", "DEM Height", "Best available DEM (in priority of GIMP/ANTARCTIC/GMTED/MSS) value at the "
        "geolocation point. Height is in meters above the WGS84 Ellipsoid.", content="modelResult",
        coordinates=sub, source="ATL03"), fill=FLT_MAX, dims=d1)
    put(dem_g, "geoid_free2mean", np.full(n, -0.04, dtype=np.float32), cf(
        "meters", "EGM2008 Geoid Free-to-Mean conversion", "Value to convert the geoid from the tide-free system "
        "to the mean-tide system.", content="modelResult", coordinates=sub, source="ATL03"), fill=FLT_MAX, dims=d1)
    put(dem_g, "geoid_h", _blocky(geoid, block).astype(np.float32), cf(
        "meters", "Geoid Height", "Geoid height above WGS-84 reference ellipsoid (range -107 to 86m), based on "
        "the EGM2008 model.", content="modelResult", coordinates=sub, source="ATL03"), fill=FLT_MAX, dims=d1)

    fs = li.create_group("fit_statistics")
    c.set_attrs(fs, {"Description": "The fit_statistics subgroup contains a variety of parameters that might "
                     "indicate the quality of the fitted segment data.",
                     "data_rate": "Data within this group are stored at the land_ice_segments segment rate."})
    fields_f32 = (
        ("dh_fit_dx", dh_fit_dx, "meters/meters", "Fit along track slope", "Along-track slope from along-track "
         "segment fit", "modelResult"),
        ("dh_fit_dx_sigma", dx_sigma, "meters/meters", "Expected uncertainty in slope", "Propagated error in the "
         "along-track segment slope", "qualityInformation"),
        ("dh_fit_dy", dh_fit_dy, "meters/meters", "Across track slope", "Across-track slope from segment fits to "
         "weak and strong beam; the same slope is reported for both laser beams in each pair", "modelResult"),
        ("h_expected_rms", expected, "meters", "Expected RMS misfit", "Expected RMS misfit from the surface "
         "slope, roughness and the transmit pulse", "qualityInformation"),
        ("h_mean", h_mean, "meters", "Height Mean", "Mean surface height, not corrected for first-photon bias or "
         "pulse truncation", "modelResult"),
        ("h_rms_misfit", misfit, "meters", "height rms misfit", "RMS misfit of the photon heights about the "
         "segment fit", "qualityInformation"),
        ("h_robust_sprd", (misfit * np.float32(0.96)).astype(np.float32), "meters", "Robust Spread", "RDE of "
         "misfit between PE heights and the along-track segment fit.", "qualityInformation"),
        ("n_seg_pulses", np.full(n, pulses, dtype=np.float32), "1", "number of pulses in segment", "The number "
         "of pulses potentially included in the segment", "qualityInformation"),
        ("sigma_h_mean", (sigma * np.float32(0.93)).astype(np.float32), "meters", "Height Error", "Propagated "
         "height error due to PE-height sampling error for height from the along-track fit", "qualityInformation"),
        ("snr", snr, "1", "SNR", "Signal-to-noise ratio in the final refined window", "qualityInformation"),
        ("snr_significance", (np.exp(-np.minimum(snr, 80.0)) * 0.02).astype(np.float32), "1",
         "SNR significance", "Probability that signal-finding routine would converge to at least the observed "
         "SNR for a random-noise input", "qualityInformation"),
        ("w_surface_window_final", window, "meters", "Surface Window Width", "Width of the surface window, top "
         "to bottom", "qualityInformation"),
    )
    for name, data, units, ln, desc, content in fields_f32:
        put(fs, name, data.astype(np.float32), cf(units, ln, desc, content=content, coordinates=sub,
                                                  source="section 4.2"), fill=FLT_MAX, dims=d1)
    put(fs, "n_fit_photons", n_fit, cf("1", "Number of photons in final signal selection", "Number of PEs found "
                                       "in the final signal selection", content="qualityInformation",
                                       coordinates=sub, source="section 4.2"),
        fill=np.int32(2147483647), dims=d1)
    src = np.where(flagged & (rng.random(n) < 0.3), 1, 0).astype(np.int8)
    put(fs, "signal_selection_source", src, cf(
        "1", "Signal selection source", "Indicates the last algorithm attempted to select the signal for ATL06 "
        "fitting. 0=ATL03 high confidence, 1=ATL03 medium and low, 2=backup selection, 3=none",
        content="qualityInformation", coordinates=sub, source="section 4.2",
        flag_values=np.arange(4, dtype="i1"), flag_meanings="atl03_pe_selection backup_1 backup_2 none"), dims=d1)
    put(fs, "signal_selection_source_status", np.where(src > 0, 2, 1).astype(np.int8), cf(
        "1", "Signal selection source status", "Status of the last signal-selection algorithm attempted",
        content="qualityInformation", coordinates=sub, source="section 4.2"), dims=d1)

    geo = li.create_group("geophysical")
    c.set_attrs(geo, {"Description": "The geophysical subgroup contains parameters used to correct segment "
                      "heights for geophysical effects, parameters related to solar background and atmospheric "
                      "conditions.", "data_rate": "Data within this group are stored at the land_ice_segments "
                      "segment rate."})
    tide = 0.05 * np.sin(2 * math.pi * orbit.delta_time_to_unix(b.dtime[bsel]) / 44712.0)  # M2-like, blocky
    cloud_near = _blocky(np.convolve(_block_gap_fraction(b, nb), np.ones(3) / 3.0, mode="same"), block)
    for name, data, units, ln, desc in (
        ("bckgrd", _blocky(bckgrd, block), "counts / second", "background count rate", "The background count "
         "rate from the 50-shot ATL03 altimetric histogram after removing the signal"),
        ("bsnow_h", np.full(n, FLT_MAX), "meters", "Blowing snow layer top height", "Blowing snow layer top height"),
        ("bsnow_od", np.full(n, FLT_MAX), "1", "Blowing snow OD", "Blowing snow layer optical depth"),
        ("dac", _blocky(0.02 * np.cos(bx / 4.0e5), block), "meters", "Dynamic Atmosphere Correction",
         "Dynamic Atmospheric Correction (DAC) includes inverted barometer (IB) effect"),
        ("e_bckgrd", _blocky(bckgrd * 0.97, block), "counts / second", "expected background count rate",
         "Expected background rate from the sun angle, surface slope and reflectance"),
        ("neutat_delay_total", _blocky(2.3 - 0.0003 * (dem - 2000.0) / 10.0, block), "meters",
         "Total Neutral Atmosphere Delay", "Total neutral atmosphere delay correction (wet+dry)"),
        ("r_eff", _blocky(np.full(nb, 0.3 + 0.6 * props.albedo), block), "1", "Effective Reflectance",
         "Effective, uncorrected reflectance of the surface"),
        ("solar_azimuth", _blocky(sun_az, block), "degrees_east", "solar azimuth", "The direction, eastwards "
         "from north, of the sun vector as seen by an observer at the laser ground spot."),
        ("solar_elevation", _blocky(sun_el, block), "degrees", "solar elevation", "Solar Angle above or below "
         "the plane tangent to the ellipsoid surface at the laser spot."),
        ("tide_earth", _blocky(0.12 * np.sin(bx / 3.1e5), block), "meters", "Earth Tide", "Solid Earth Tide"),
        ("tide_earth_free2mean", np.full(n, 0.03), "meters", "Earth Tide Free-to-Mean conversion",
         "Value to convert the solid earth tide from the tide-free system to the mean-tide system"),
        ("tide_equilibrium", _blocky(0.01 * np.cos(bx / 2.2e5), block), "meters", "Long-period equilibrium tide",
         "Long-period equilibrium tide self-consistent with ocean tide model"),
        ("tide_load", _blocky(0.3 * tide, block), "meters", "Load Tide", "Load Tide - Local displacement due to "
         "Ocean Loading"),
        ("tide_ocean", np.full(n, FLT_MAX), "meters", "Ocean Tide", "Ocean Tides including diurnal and "
         "semi-diurnal (harmonic analysis), and longer period tides (dynamic and self-consistent equilibrium); "
         "not computed over grounded ice"),
        ("tide_pole", _blocky(0.002 * np.cos(bx / 5.0e5), block), "meters", "Pole Tide", "Pole Tide -Rotational "
         "deformation due to polar motion"),
    ):
        put(geo, name, np.asarray(data, dtype=np.float32), cf(units, ln, desc, content="modelResult",
                                                              coordinates=sub, source="ATL03/ATL09"),
            fill=FLT_MAX, dims=d1)
    for name, data, ln, meanings in (
        ("bsnow_conf", np.full(n, -1, dtype=np.int8), "Blowing snow confidence",
         "no_atl09 no_retrieval clear_high clear_med clear_low bs_low bs_med bs_high surface_retrieved unknown"),
        ("cloud_flg_asr", np.clip(np.round(cloud_near * 8), 0, 5).astype(np.int8), "Cloud flag (ASR)",
         "clear_high clear_med clear_low cloud_low cloud_med cloud_high"),
        ("cloud_flg_atm", np.clip(np.round(cloud_near * 6), 0, 3).astype(np.int8), "Cloud flag (ATM)",
         "layers"),
        ("layer_flag", (cloud_near > 0.2).astype(np.int8), "Consolidated cloud flag", "likely_clear likely_cloudy"),
        ("msw_flag", np.clip(np.round(cloud_near * 5), 0, 5).astype(np.int8), "Multiple Scattering warning flag",
         "no_layers layer_no_bs_low_od ..."),
    ):
        put(geo, name, data, cf("1", ln, f"{ln} (from ATL09, synthetic)", content="qualityInformation",
                                coordinates=sub, source="ATL09", flag_meanings=meanings), dims=d1)
    geo["bsnow_conf"].attrs.create("flag_values", np.arange(-3, 7, dtype="i1"))

    gt = li.create_group("ground_track")
    c.set_attrs(gt, {"Description": "The ground_track subgroup contains parameters describing the GT and RGT "
                     "for each land ice segment, as well as angular information about the beams.",
                     "data_rate": "Data within this group are stored at the land_ice_segments segment rate."})
    azimuth = np.degrees(orbit.track_azimuth(orbit.u_from_x(bx)))
    for name, data, units, ln, desc, dtype in (
        ("ref_azimuth", _blocky(np.mod(azimuth + 90.0, 360.0) - 180.0, block), "degrees", "Reference azimuth",
         "Azimuth of the unit pointing vector for the reference photon in the local ENU frame", "f4"),
        ("ref_coelv", np.full(n, 89.7 if b.beam[2] != "2" else 89.98), "degrees", "Coelevation of the unit "
         "pointing vector", "Coelevation (CE) is direction from vertical of the laser beam", "f4"),
        ("seg_azimuth", _blocky(azimuth, block), "degrees", "Segment azimuth", "The azimuth of the segment, in "
         "degrees east of north", "f4"),
        ("sigma_geo_at", np.full(n, 3.5), "meters", "Along track geolocation error", "Geolocation error in the "
         "along-track direction", "f4"),
        ("sigma_geo_r", np.full(n, 0.03), "meters", "Radial orbit error", "Radial orbit error", "f4"),
        ("sigma_geo_xt", np.full(n, 3.5), "meters", "Across track geolocation error", "Geolocation error in the "
         "across-track direction", "f4"),
        ("x_atc", x, "meters", "Along Track X Distance", "The along-track x-coordinate of the segment, measured "
         "parallel to the RGT, measured from the ascending node of the equatorial crossing of a given RGT.", "f8"),
        ("y_atc", b.y[v], "meters", "Across Track Y Distance", "Across-track coordinate of the segment center, "
         "measured from the RGT, positive to the left of the direction of travel.", "f4"),
    ):
        fill = FLT_MAX if dtype == "f4" else None
        put(gt, name, np.asarray(data, dtype=dtype), cf(units, ln, desc, content="referenceInformation",
                                                        coordinates=sub, source="section 3.3"),
            fill=fill, dims=d1)

    _write_residual_histogram(g, spec, b, n_fit, bg_per_m, rng)
    _write_segment_quality(g, b)
    return n


def _block_gap_fraction(b: _Beam, nb: int) -> np.ndarray:
    gap = (~b.valid).astype(np.float64)
    pad = nb * BLOCK - gap.size
    return np.concatenate([gap, np.zeros(pad)]).reshape(nb, BLOCK).mean(axis=1)


def _write_residual_histogram(g: h5py.Group, spec: GranuleSpec, b: _Beam, n_fit: np.ndarray, bg_per_m: np.ndarray,
                              rng: np.random.Generator) -> None:
    rh = g.create_group("residual_histogram")
    c.set_attrs(rh, {"Description": "The residual_histogram group contains histograms of the photon-height "
                     "residuals relative to the segment fits, summed over 200 segments (4 km).",
                     "data_rate": "Data within this group are stored at the histogram rate (every 200 segments)."})
    nh = max(1, -(-b.seg_id.size // SEGMENTS_PER_HISTOGRAM))
    rows = np.arange(nh) * SEGMENTS_PER_HISTOGRAM
    first = b.seg_id[np.minimum(rows, b.seg_id.size - 1)]
    valid_rows = np.flatnonzero(b.valid) // SEGMENTS_PER_HISTOGRAM
    photons = np.bincount(valid_rows, weights=n_fit, minlength=nh)
    bg = np.bincount(valid_rows, weights=bg_per_m, minlength=nh) * 0.1
    centers = (np.arange(HISTOGRAM_BINS) - HISTOGRAM_BINS / 2 + 0.5) * 0.1
    shape = np.exp(-0.5 * (centers / 0.15) ** 2)
    shape /= shape.sum()
    count = np.rint(photons[:, None] * shape[None, :] + bg[:, None]).astype(np.int32)
    mid = np.minimum(rows + SEGMENTS_PER_HISTOGRAM // 2, b.seg_id.size - 1)
    dt = c.make_scale(put(rh, "delta_time", b.dtime[mid], cf(
        "seconds since 2018-01-01", "Elapsed GPS seconds", "Time of the center of the histogram interval",
        content="referenceInformation", source="section 3.6", standard_name="time")))
    dsid = c.make_scale(put(rh, "ds_segment_id", np.arange(SEGMENTS_PER_HISTOGRAM, dtype=np.int32), cf(
        "1", "histogram segment index", "Dimension scale for the segments of a histogram",
        content="auxiliaryInformation"), layout="contiguous"))
    top = c.make_scale(put(rh, "bin_top_h", (centers + 0.05).astype(np.float32), cf(
        "meters", "Bin top height", "Top of each histogram bin, relative to the segment fits",
        content="auxiliaryInformation"), layout="contiguous"))
    put(rh, "count", count, cf("counts", "Residual histogram count", "Counts of photon residuals per 0.1 m bin",
                               content="modelResult", source="section 3.6"), dims=(dt, top),
        chunk_rows=max(1, c.CHUNK // HISTOGRAM_BINS))
    ids = first[:, None] + np.arange(SEGMENTS_PER_HISTOGRAM)[None, :]
    put(rh, "segment_id_list", ids.astype(np.int32), cf(
        "1", "segment IDs in histogram", "List of the segment_id values of the segments in each histogram",
        content="referenceInformation", source="section 3.6"), dims=(dt, dsid),
        chunk_rows=max(1, c.CHUNK // SEGMENTS_PER_HISTOGRAM))
    for name, data, units, desc in (
        ("bckgrd_per_m", bg.astype(np.float32), "counts / meter", "Background photons per vertical metre"),
        ("lat_mean", b.lat[mid], "degrees_north", "Mean latitude of the histogrammed segments"),
        ("lon_mean", b.lon[mid], "degrees_east", "Mean longitude of the histogrammed segments"),
        ("pulse_count", np.full(nh, SEGMENTS_PER_HISTOGRAM * 28, dtype=np.int32), "counts", "Number of pulses"),
        ("x_atc_mean", b.x[mid], "meters", "Mean along-track coordinate of the histogrammed segments"),
    ):
        put(rh, name, data, cf(units, desc, desc, content="modelResult", source="section 3.6"), dims=(dt,))


def _write_segment_quality(g: h5py.Group, b: _Beam) -> None:
    sq = g.create_group("segment_quality")
    c.set_attrs(sq, {"Description": "The segment_quality group contains the signal-selection status of every "
                     "segment, including those without a land-ice height.",
                     "data_rate": "Data within this group are stored at the 20m segment rate."})
    n = b.seg_id.size
    dt = c.make_scale(put(sq, "delta_time", b.dtime, cf(
        "seconds since 2018-01-01", "Elapsed GPS seconds", "Time of the segment center",
        content="referenceInformation", source="section 4.1.4", standard_name="time")))
    d1 = (dt,)
    put(sq, "record_number", np.arange(1, n + 1, dtype=np.int32), cf(
        "1", "Record number", "Record number of the segment in this granule", content="referenceInformation"),
        dims=d1)
    put(sq, "reference_pt_lat", b.lat, cf("degrees_north", "Reference point latitude", "Latitude of the "
                                          "segment reference point", content="referenceInformation",
                                          standard_name="latitude", valid_min=-90.0, valid_max=90.0), dims=d1)
    put(sq, "reference_pt_lon", b.lon, cf("degrees_east", "Reference point longitude", "Longitude of the "
                                          "segment reference point", content="referenceInformation",
                                          standard_name="longitude", valid_min=-180.0, valid_max=180.0), dims=d1)
    put(sq, "segment_id", b.seg_id.astype(np.int32), cf("1", "Reference Point, m", "Segment number, counting "
                                                        "from the equator", content="referenceInformation"),
        dims=d1)
    status = np.where(b.valid, 0, 3).astype(np.int8)
    put(sq, "signal_selection_source", status, cf("1", "Signal selection source", "0 = ATL03 signal selection, "
                                                  "3 = no signal found", content="qualityInformation"), dims=d1)
    ssg = sq.create_group("signal_selection_status")
    c.set_attrs(ssg, {"Description": "Status of the signal-selection algorithms for every segment."})
    for name in ("signal_selection_status_all", "signal_selection_status_backup", "signal_selection_status_confident"):
        put(ssg, name, status, cf("1", name.replace("_", " "), f"{name} (0 = success)",
                                  content="qualityInformation"), dims=d1)


def _write_ancillary(f: h5py.File, spec: GranuleSpec, first: int, last: int) -> None:
    params = {"n_sigmas": 3.0, "min_n_pe": 10, "fit_maxiter": 10, "proc_interval": 20.0}
    a = c.write_common_ancillary(f, spec, first, last, c.control_text(spec, params))
    put_scalar(a, "qa_at_interval", QA_INTERVAL, "f8", cf(
        "1", "QA interval", "Statistics time interval for along-track QA data.", content="auxiliaryInformation",
        source="Operations"))
    li = a.create_group("land_ice")
    c.set_attrs(li, {"Description": "Contains ancillary parameters related to the land ice height processing.",
                     "data_rate": "Data within this group pertain to the granule in its entirety."})
    for name, value, dtype, units, desc in (
        ("dt_hist", 1.0, "f8", "seconds", "histogram time interval"),
        ("fit_maxiter", 10, "i4", "1", "maximum number of iterations for the surface fit"),
        ("fpb_maxiter", 5, "i4", "1", "maximum number of iterations for the first-photon-bias correction"),
        ("max_res_ids", 200, "i4", "1", "maximum number of segment ids per residual histogram"),
        ("min_dist", 20.0, "f8", "meters", "minimum along-track spread of the selected photons"),
        ("min_gain_th", 0.001, "f8", "1", "minimum gain threshold"),
        ("min_n_pe", 10, "i4", "1", "minimum number of photons in a segment"),
        ("min_n_sel", 10, "i4", "1", "minimum number of selected photons"),
        ("min_signal_conf", 2, "i4", "1", "minimum signal confidence of ATL03 photons"),
        ("n_hist", HISTOGRAM_BINS, "i4", "1", "number of histogram bins"),
        ("n_sigmas", 3.0, "f8", "1", "number of standard deviations of the surface window"),
        ("nhist_bins", HISTOGRAM_BINS, "i4", "1", "number of residual histogram bins"),
        ("proc_interval", 20.0, "f8", "meters", "processing interval (segment posting)"),
        ("qs_lim_bsc", 0.02, "f8", "1", "quality summary limit: background SNR significance"),
        ("qs_lim_hrs", 1.0, "f8", "meters", "quality summary limit: h_robust_sprd"),
        ("qs_lim_hsigma", 1.0, "f8", "meters", "quality summary limit: h_li_sigma"),
        ("qs_lim_msw", 5, "i4", "1", "quality summary limit: multiple scattering warning"),
        ("qs_lim_snr", 0.02, "f8", "1", "quality summary limit: SNR significance"),
        ("qs_lim_sss", 1, "i4", "1", "quality summary limit: signal selection source"),
        ("rbin_width", 0.1, "f8", "meters", "residual histogram bin width"),
        ("sigma_beam", 4.25, "f8", "meters", "assumed laser footprint standard deviation"),
        ("sigma_tx", 6.8e-10, "f8", "seconds", "transmitted pulse duration standard deviation"),
        ("t_dead", 3.2e-9, "f8", "seconds", "detector dead time"),
        ("txp_maxiter", 20, "i4", "1", "maximum iterations of the transmit-pulse correction"),
    ):
        put_scalar(li, name, value, dtype, cf(units, name, desc, content="auxiliaryInformation",
                                              source="ATL06 ATBD"))


def _write_quality(f: h5py.File, spec: GranuleSpec, beams: dict[str, _Beam]) -> None:
    q = f.create_group("quality_assessment")
    c.set_attrs(q, {"Description": "Contains quality assessment data. This may include QA counters, QA along-track "
                    "data and/or QA summary data.", "data_rate": "Data are stored at the qa_at_interval rate."})
    c.put_qa_flags(q)
    for name, b in beams.items():
        g = q.create_group(name)
        idx = np.arange(b.seg_id.size) // QA_INTERVAL
        nq = int(idx[-1]) + 1 if idx.size else 1
        cnt = np.maximum(np.bincount(idx, minlength=nq), 1)
        ok = np.bincount(idx, weights=b.valid, minlength=nq)
        mid = np.minimum(np.arange(nq) * QA_INTERVAL + QA_INTERVAL // 2, b.seg_id.size - 1)
        dt = c.make_scale(put(g, "delta_time", b.dtime[mid], cf(
            "seconds since 2018-01-01", "Elapsed GPS seconds", "Time of the center of the QA interval",
            content="referenceInformation", standard_name="time")))
        put(g, "lat_mean", b.lat[mid], cf("degrees_north", "Mean latitude", "Mean latitude of the QA interval",
                                          content="qualityInformation"), dims=(dt,))
        put(g, "lon_mean", b.lon[mid], cf("degrees_east", "Mean longitude", "Mean longitude of the QA interval",
                                          content="qualityInformation"), dims=(dt,))
        fractions = (ok / cnt, np.zeros(nq), np.zeros(nq), 1.0 - ok / cnt)
        for i, frac in enumerate(fractions):
            put(g, f"signal_selection_source_fraction_{i}", frac.astype(np.float32), cf(
                "1", f"Fraction of segments with signal_selection_source = {i}",
                f"Fraction of the segments of the QA interval with signal_selection_source = {i}",
                content="qualityInformation"), fill=FLT_MAX, dims=(dt,))


__all__ = ["build_beams", "write_atl06"]
