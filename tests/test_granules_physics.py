"""The values in the synthetic granules are physically consistent with the surface model and with each other."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from is2cloud.granules import orbit
from is2cloud.granules.atl03 import C_LIGHT, SHOTS_PER_BCKGRD, write_atl03
from is2cloud.granules.atl06 import write_atl06
from is2cloud.granules.orbit import BEAMS, GranuleSpec, plan_granules
from is2cloud.granules.surface import surface_dhdt, surface_height
from granule_specs import short_spec

REPO = Path(__file__).resolve().parents[1]



def _write(tmp_path_factory, spec: GranuleSpec) -> tuple[GranuleSpec, Path]:
    path = tmp_path_factory.mktemp("physics") / spec.name
    (write_atl03 if spec.product == "ATL03" else write_atl06)(spec, path)
    return spec, path


@pytest.fixture(scope="module")
def mesa03(tmp_path_factory):
    return _write(tmp_path_factory, short_spec("grandmesa.geojson", "ATL03", 3, 295, 3000))


@pytest.fixture(scope="module")
def ice03(tmp_path_factory):
    return _write(tmp_path_factory, short_spec("greenland_aoi.geojson", "ATL03", 5, 94, 2500))


@pytest.fixture(scope="module")
def ice06(tmp_path_factory):
    return {c: _write(tmp_path_factory, short_spec("greenland_aoi.geojson", "ATL06", c, 94, 20_000)) for c in (3, 8)}


def _photons(f: h5py.File, beam: str) -> dict[str, np.ndarray]:
    h = f[f"{beam}/heights"]
    return {k: h[k][...] for k in ("h_ph", "lat_ph", "lon_ph", "delta_time", "signal_conf_ph", "quality_ph",
                                   "weight_ph")}


def _truth(spec: GranuleSpec, lon, lat, delta_time) -> np.ndarray:
    return surface_height(lon, lat, orbit.delta_time_to_unix(delta_time), spec.surface, spec.seed)


@pytest.mark.parametrize("which,considered", [("mesa03", (0, 4)), ("ice03", (0, 3))])
def test_signal_photons_scatter_around_the_surface(which, considered, request):
    spec, path = request.getfixturevalue(which)
    with h5py.File(path, "r") as f:
        assert f.attrs["is2cloud_surface_model"].decode() == spec.surface
        for beam in BEAMS:
            p = _photons(f, beam)
            conf = p["signal_conf_ph"]
            others = [c for c in range(5) if c not in considered]
            assert np.all(conf[:, others] == -1), "surface types that are not considered are -1"
            np.testing.assert_array_equal(conf[:, considered[0]], conf[:, considered[1]])
            level = conf[:, considered[0]]
            assert level.min() >= 0 and level.max() == 4
            r = p["h_ph"] - _truth(spec, p["lon_ph"], p["lat_ph"], p["delta_time"])
            sig = level >= 2
            assert np.count_nonzero(level == 4) > 0.8 * np.count_nonzero(sig)
            assert abs(np.median(r[sig])) < 0.05
            assert np.mean(np.abs(r[sig]) < 1.0) > 0.95
            if spec.surface == "greenland":  # smooth ice: the pulse width and a little roughness
                assert 0.08 < np.std(r[sig]) < 0.3
            # background: 1 within 10 m of the surface, 0 further away
            assert np.all(np.abs(r[level == 1]) < 10.5) and np.all(np.abs(r[level == 0]) > 9.5)
            assert np.mean(p["quality_ph"] == 0) > 0.99
            assert np.median(p["weight_ph"][sig]) > 150 > np.median(p["weight_ph"][level == 0])


def test_background_density_matches_bckgrd_rate(ice03, mesa03):
    for spec, path in (ice03, mesa03):
        with h5py.File(path, "r") as f:
            for beam in BEAMS:
                p = _photons(f, beam)
                b = f[f"{beam}/bckgrd_atlas"]
                rate, height = b["bckgrd_rate"][:].astype("f8"), b["bckgrd_int_height"][:].astype("f8")
                top, counts, start = b["bckgrd_hist_top"][:], b["bckgrd_counts"][:], b["delta_time"][:]
                bg = p["signal_conf_ph"][:, 0] <= 1
                row = np.searchsorted(start, p["delta_time"] + 1e-7, side="right") - 1
                np.testing.assert_array_equal(np.bincount(row[bg], minlength=counts.size), counts)
                # background photons lie in the telemetry band of their 50-shot row
                h = p["h_ph"][bg]
                assert np.all(h <= top[row[bg]] + 1e-3) and np.all(h >= top[row[bg]] - height[row[bg]] - 1e-3)
                inner = slice(1, -1)  # the first and last rows are cut by the window
                expected = rate[inner] * SHOTS_PER_BCKGRD * 2 * height[inner] / C_LIGHT
                ratio = counts[inner].sum() / expected.sum()
                assert abs(ratio - 1) < 4 / np.sqrt(expected.sum()) + 0.01, (path.name, beam, ratio)


def test_strong_beams_return_about_four_times_the_weak_signal(mesa03, ice03):
    for spec, path in (mesa03, ice03):
        with h5py.File(path, "r") as f:
            n = {}
            for beam in BEAMS:
                n[beam] = np.count_nonzero(f[f"{beam}/heights/signal_conf_ph"][:, 0] >= 2)
                assert f[beam].attrs["atlas_beam_type"] == orbit.beam_type(beam, spec.sc_orient).encode()
            strong = [n[b] for b in BEAMS if orbit.beam_type(b, spec.sc_orient) == "strong"]
            weak = [n[b] for b in BEAMS if orbit.beam_type(b, spec.sc_orient) == "weak"]
            assert 3.0 < np.mean(strong) / np.mean(weak) < 5.5


def test_atl06_heights_follow_the_surface_within_their_sigma(ice06):
    spec, path = ice06[3]
    with h5py.File(path, "r") as f:
        for beam in BEAMS:
            g = f[f"{beam}/land_ice_segments"]
            h, sigma = g["h_li"][:].astype("f8"), g["h_li_sigma"][:].astype("f8")
            truth = _truth(spec, g["longitude"][:], g["latitude"][:], g["delta_time"][:])
            z = (h - truth) / sigma
            assert abs(np.median(h - truth)) < 0.02
            assert 0.85 < np.std(z) < 1.2
            qs = g["atl06_quality_summary"][:]
            assert 0.0 < np.mean(qs) < 0.2
            good = sigma[qs == 0]
            assert 0.012 <= good.min() and np.median(good) < 0.2
            fs = g["fit_statistics"]
            h_mean = fs["h_mean"][:].astype("f8")
            assert np.all((h - h_mean > 0) & (h - h_mean < 0.1))
            assert np.all(fs["w_surface_window_final"][:] >= 3.0)
            assert np.all(g["sigma_geo_h"][:] > 0.25)
            # along-track slope of the surface between the two 20 m halves of the segment
            x = g["ground_track/x_atc"][:]
            _, lon_a, lat_a, _ = orbit.beam_positions(spec, beam, x - 20.0)
            _, lon_b, lat_b, _ = orbit.beam_positions(spec, beam, x + 20.0)
            dt = g["delta_time"][:]
            slope = (_truth(spec, lon_b, lat_b, dt) - _truth(spec, lon_a, lat_a, dt)) / 40.0
            dx = fs["dh_fit_dx"][:]
            assert np.median(np.abs(dx - slope)) < 0.002
            assert np.corrcoef(dx, slope)[0, 1] > 0.9
        n_fit = {b: np.median(f[f"{b}/land_ice_segments/fit_statistics/n_fit_photons"][:]) for b in BEAMS}
        strong = [n_fit[b] for b in BEAMS if orbit.beam_type(b, spec.sc_orient) == "strong"]
        weak = [n_fit[b] for b in BEAMS if orbit.beam_type(b, spec.sc_orient) == "weak"]
        assert np.mean(strong) > 3 * np.mean(weak) > 0
        for pair in ("gt1", "gt2", "gt3"):  # the across-track slope comes from the pair
            left, right = f[f"{pair}l/land_ice_segments"], f[f"{pair}r/land_ice_segments"]
            ids = np.intersect1d(left["segment_id"][:], right["segment_id"][:])
            dy_l = left["fit_statistics/dh_fit_dy"][:][np.isin(left["segment_id"][:], ids)]
            dy_r = right["fit_statistics/dh_fit_dy"][:][np.isin(right["segment_id"][:], ids)]
            assert np.median(np.abs(dy_l - dy_r)) < 0.005


def test_repeat_tracks_show_the_ice_thinning(ice06):
    (s3, p3), (s8, p8) = ice06[3], ice06[8]
    with h5py.File(p3, "r") as a, h5py.File(p8, "r") as b:
        ga, gb = a["gt2l/land_ice_segments"], b["gt2l/land_ice_segments"]
        ids = np.intersect1d(ga["segment_id"][:], gb["segment_id"][:])
        ia = np.isin(ga["segment_id"][:], ids)
        ib = np.isin(gb["segment_id"][:], ids)
        dh = gb["h_li"][:][ib].astype("f8") - ga["h_li"][:][ia].astype("f8")
        years = (gb["delta_time"][:][ib] - ga["delta_time"][:][ia]) / (365.25 * 86400)
        rate = surface_dhdt(ga["longitude"][:][ia], ga["latitude"][:][ia], "greenland")
    assert years.mean() > 1.0
    assert np.median(dh / years) < -0.3  # thinning, as the surface model says
    assert abs(np.median(dh / years - rate)) < 0.7  # up to the pointing offset x slope and the seasonal term


def test_signal_photons_per_pulse_of_strong_beams(mesa03, ice03):
    for spec, path in (mesa03, ice03):
        with h5py.File(path, "r") as f:
            for beam in BEAMS:
                h = f[f"{beam}/heights"]
                cnt = f[f"{beam}/geolocation/segment_ph_cnt"][:]
                seg = np.repeat(np.arange(cnt.size), cnt)
                signal = np.bincount(seg[h["signal_conf_ph"][:, 0] >= 2], minlength=cnt.size)
                per_pulse = np.median(signal[1:-1]) / (20.0 / 0.7)  # clear-sky median over 20 m segments
                if orbit.beam_type(beam, spec.sc_orient) == "strong":
                    assert 2.3 < per_pulse < 4.0, (spec.surface, beam, per_pulse)
                else:
                    assert 0.4 < per_pulse < 1.1, (spec.surface, beam, per_pulse)
