"""Mission geometry of the synthetic granules: timeline, ground tracks, beams, names, segments, determinism."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest

from is2cloud.granules import orbit, surface
from is2cloud.granules.atl03 import write_atl03
from is2cloud.granules.atl06 import write_atl06
from is2cloud.granules.orbit import (
    BEAMS,
    GRANULE_RE,
    GranuleSpec,
    beam_type,
    ground_track,
    parse_granule_name,
    plan_granules,
    sc_orient_for_cycle,
    spot_number,
)

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
GRANDMESA = REPO / "data" / "grandmesa.geojson"
R = orbit.EARTH_RADIUS_M


def _dist_m(lon1, lat1, lon2, lat2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * R * np.arcsin(np.sqrt(a))


def _window(spec: GranuleSpec, half_m: float) -> GranuleSpec:
    x0, x1 = spec.window
    mid = (x0 + x1) / 2
    return spec.with_window(mid - half_m, mid + half_m, reason="test window")


@pytest.fixture(scope="module")
def atl06_pair(tmp_path_factory):
    """One RGT over Greenland in a backward (5) and a forward (3) cycle, 60 km around the AOI."""
    out = {}
    for cycle in (3, 5):
        spec = next(s for s in plan_granules(GREENLAND, "ATL06", [cycle], window="aoi", margin_m=0) if s.rgt == 94)
        spec = _window(spec, 30_000)
        path = tmp_path_factory.mktemp("orbit") / spec.name
        write_atl06(spec, path)
        out[cycle] = (spec, path)
    return out


# -- timeline ---------------------------------------------------------------------------------------------

REAL_GRANULES = [  # (rgt, cycle, region, start time in the name of the real granule)
    (235, 1, 1, "ATL03_20181014000347_02350101_006_02.h5"),
    (295, 1, 2, "ATL03_20181017222812_02950102_005_01.h5"),
    (1381, 1, 10, "ATL03_20181228015957_13810110_003_01.h5"),
    (811, 1, 12, "ATL03_20181120182818_08110112_006_02.h5"),
    (811, 2, 12, "ATL03_20190219140808_08110212_006_02.h5"),
    (1022, 5, 11, "ATL06_20191202203649_10220511_006_01.h5"),
    (721, 8, 11, "ATL06_20200811143458_07210811_006_01.h5"),
    (1368, 19, 1, "ATL03_20230618223036_13681901_006_01.h5"),
]


@pytest.mark.parametrize("rgt,cycle,region,real", REAL_GRANULES)
def test_granule_start_times_match_real_granules(rgt, cycle, region, real):
    fields = parse_granule_name(real)
    assert (fields["rgt"], fields["cycle"], fields["region"]) == (rgt, cycle, region)
    spec = GranuleSpec(fields["product"], rgt, cycle, region)
    start = orbit.delta_time_to_datetime(spec.start_delta_time)
    assert abs((start - fields["start"]).total_seconds()) < 15, (spec.name, real)


def test_cycle_is_1387_orbits_of_91_nodal_days():
    a = orbit.node_unix(100, 4)
    b = orbit.node_unix(100, 5)
    assert b - a == pytest.approx(orbit.CYCLE_DURATION_S)
    assert 90.7 < (b - a) / 86400 < 91.0
    assert orbit.node_unix(101, 4) - a == pytest.approx(orbit.ORBIT_PERIOD_S)
    # the node moves west by 360*91/1387 degrees per revolution and the track repeats every cycle
    assert (orbit.lan_deg(101) - orbit.lan_deg(100)) % 360 == pytest.approx(360 - 360 * 91 / 1387)
    wrap = (orbit.lan_deg(235 + 1387) - orbit.lan_deg(235) + 180) % 360 - 180  # 1387 revolutions later: same node
    assert wrap == pytest.approx(0.0, abs=1e-6)


def test_delta_time_unix_conversion():
    assert orbit.ATLAS_EPOCH_UNIX == 1198800018 + 315964800 - 18
    d = orbit.delta_time_to_datetime(0.0)
    assert d == datetime(2018, 1, 1, tzinfo=timezone.utc)
    week, sow = orbit.gps_week_sow(0.0)
    assert week * 604800 + sow == pytest.approx(1198800018.0)


# -- ground tracks ----------------------------------------------------------------------------------------


def test_inclination_gives_88_degree_turning_latitude():
    u = np.linspace(0, 2 * math.pi, 200_001)
    _, lat = ground_track(u, 0.0)
    assert lat.max() == pytest.approx(88.0, abs=0.01)
    assert lat.min() == pytest.approx(-88.0, abs=0.01)


def test_rgt_295_passes_the_real_grand_mesa_track():
    """HDF Group's notes on the real ATL03_20181017222812_02950102: gt1l reference photons at
    (27.00N, -106.987E), (29.22N, -107.233E) and (49.19N, -109.743E)."""
    spec = GranuleSpec("ATL03", 295, 1, 2)
    u = np.linspace(*orbit.region_u_bounds(2), 400_001)
    lon, lat = ground_track(u, spec.lan, orbit.beam_offset_m("gt1l"))
    for la, lo in ((26.999850, -106.987386), (29.223040, -107.232585), (49.191518, -109.742866)):
        i = int(np.argmin(np.abs(lat - la)))
        assert _dist_m(lon[i], lat[i], lo, la) < 1500.0


def test_along_track_distance_matches_the_ground_track_length():
    """x_atc is the length of the earth-fixed RGT: 20 m of x are 20 m on the ground."""
    x = np.arange(5_000_000.0, 5_000_000.0 + 200_000.0, 20.0)
    lon, lat = ground_track(orbit.u_from_x(x), 12.0)
    step = _dist_m(lon[:-1], lat[:-1], lon[1:], lat[1:])
    assert step.mean() == pytest.approx(20.0, abs=0.002)
    np.testing.assert_allclose(orbit.x_from_u(orbit.u_from_x(x)), x, atol=1e-6)
    assert 4.0e7 < orbit.track_length_m() < 4.03e7


def test_region_boundaries_follow_the_latitude_table():
    spec = GranuleSpec("ATL06", 94, 3, 3)
    x0, x1 = spec.region_x
    for x, lat_want in ((x0, 59.5), (x1, 80.0)):
        _, lat = ground_track(orbit.u_from_x(x), spec.lan)
        assert float(lat) == pytest.approx(lat_want, abs=0.01)
    assert orbit.region_of_u(np.radians([1.0, 30.0, 70.0, 90.0, 110.0, 179.0, 181.0, 270.0, 359.0])).tolist() == [
        1, 2, 3, 4, 5, 7, 8, 11, 14]


# -- beams ----------------------------------------------------------------------------------------------------


def test_spot_mapping_and_strength_for_both_orientations():
    assert [spot_number(b, 0) for b in BEAMS] == [1, 2, 3, 4, 5, 6]
    assert [spot_number(b, 1) for b in BEAMS] == [6, 5, 4, 3, 2, 1]
    assert [beam_type(b, 0) for b in BEAMS] == ["strong", "weak"] * 3  # backward: left strong
    assert [beam_type(b, 1) for b in BEAMS] == ["weak", "strong"] * 3  # forward: left weak
    with pytest.raises(ValueError):
        spot_number("gt1l", 2)


def test_orientation_varies_between_cycles():
    orients = {c: sc_orient_for_cycle(c) for c in range(1, 30)}
    assert orients[1] == 0 and set(orients.values()) == {0, 1}
    changes = sum(orients[c] != orients[c + 1] for c in range(1, 29))
    assert 10 <= changes <= 16  # a yaw flip about every two cycles


def test_beam_attributes_in_files(atl06_pair):
    for cycle, (spec, path) in atl06_pair.items():
        with h5py.File(path, "r") as f:
            assert int(f["orbit_info/sc_orient"][0]) == spec.sc_orient == sc_orient_for_cycle(cycle)
            for beam in BEAMS:
                attrs = f[beam].attrs
                assert attrs["atlas_spot_number"] == str(spot_number(beam, spec.sc_orient)).encode()
                assert attrs["atlas_beam_type"] == beam_type(beam, spec.sc_orient).encode()
                assert attrs["groundtrack_id"] == beam.encode()
                assert attrs["sc_orientation"] == (b"Forward" if spec.sc_orient else b"Backward")
    assert {s.sc_orient for s, _ in atl06_pair.values()} == {0, 1}


def test_pair_and_beam_separations_measured_from_lat_lon(atl06_pair):
    spec, path = atl06_pair[3]
    with h5py.File(path, "r") as f:
        pos = {}
        for beam in BEAMS:
            g = f[f"{beam}/land_ice_segments"]
            pos[beam] = (g["segment_id"][:], g["longitude"][:], g["latitude"][:])

    def sep(a, b):
        ids = np.intersect1d(pos[a][0], pos[b][0])
        ia = np.searchsorted(pos[a][0], ids)
        ib = np.searchsorted(pos[b][0], ids)
        return np.median(_dist_m(pos[a][1][ia], pos[a][2][ia], pos[b][1][ib], pos[b][2][ib]))

    for pair in ("gt1", "gt2", "gt3"):
        assert sep(pair + "l", pair + "r") == pytest.approx(90.0, abs=10.0)
    assert sep("gt1l", "gt2l") == pytest.approx(3300.0, abs=60.0)
    assert sep("gt2r", "gt3r") == pytest.approx(3300.0, abs=60.0)


def test_ground_tracks_are_numbered_left_to_right(atl06_pair):
    spec, path = atl06_pair[5]
    with h5py.File(path, "r") as f:
        y = {b: float(np.median(f[f"{b}/land_ice_segments/ground_track/y_atc"][:])) for b in BEAMS}
        lat = f["gt2l/land_ice_segments/latitude"][:]
        lon = {b: float(np.median(f[f"{b}/land_ice_segments/longitude"][:])) for b in ("gt1l", "gt3r")}
    assert y["gt1l"] > y["gt1r"] > y["gt2l"] > y["gt2r"] > y["gt3l"] > y["gt3r"]
    assert lat[-1] > lat[0]  # region 3 flies north ...
    assert lon["gt1l"] < lon["gt3r"]  # ... so the left beams are west of the right ones


# -- names, segments, time ---------------------------------------------------------------------------------


def test_planned_names_parse_with_the_read_icesat2_regex():
    specs = plan_granules(GREENLAND, "ATL06", [3, 4]) + plan_granules(GRANDMESA, "ATL03", [3])
    assert specs
    for s in specs:
        m = GRANULE_RE.search(s.name)
        assert m, s.name
        assert m.group(2) == s.product and int(m.group(9)) == s.rgt and int(m.group(10)) == s.cycle
        assert int(m.group(11)) == s.region and m.group(12) == "006"
        assert s.key == f"ATLAS/{s.product}/006/{m.group(3)}/{m.group(4)}/{m.group(5)}/{s.name}"


def test_planner_finds_the_beams_that_cross_the_aoi():
    from is2cloud.aoi import load_aoi

    aoi = load_aoi(GREENLAND)
    specs = plan_granules(aoi, "ATL06", [3])
    assert {s.region for s in specs} == {3, 5}  # ascending and descending passes
    for s in specs:
        assert not s.shortened and s.surface == "greenland"
        x0, x1 = s.window
        x = np.arange(x0, x1, 100.0)
        hit = False
        for beam in BEAMS:
            _, lon, lat, _ = orbit.beam_positions(s, beam, x)
            hit |= bool(aoi.contains(lon, lat).any())
        assert hit, s.name
    # a crossing that is not planned must miss the AOI: shift every RGT by one and count hits
    rgts = {s.rgt for s in specs}
    missing = [r for r in range(1, 1388) if r not in rgts][:50]
    for r in missing:
        for region in (3, 5):
            s = GranuleSpec("ATL06", r, 3, region)
            x0, x1 = s.region_x
            x = np.arange(x0, x1, 200.0)
            _, lon, lat, _ = orbit.beam_positions(s, "gt2l", x)
            assert not aoi.contains(lon, lat).any(), (r, region)


def test_atl03_segment_ids_and_distances(tmp_path):
    spec = next(s for s in plan_granules(GRANDMESA, "ATL03", [3]) if s.rgt == 295)
    spec = _window(spec, 2000)
    path = tmp_path / spec.name
    write_atl03(spec, path)
    with h5py.File(path, "r") as f:
        g = f["gt2l/geolocation"]
        seg_id, dist_x = g["segment_id"][:], g["segment_dist_x"][:]
        np.testing.assert_array_equal(seg_id, 1 + np.floor(dist_x / 20.0 + 1e-9).astype(np.int64))
        assert np.all(np.diff(seg_id) == 1) and 1_000_000 > seg_id[0] > 100_000
        beg, cnt = g["ph_index_beg"][:], g["segment_ph_cnt"][:]
        h = f["gt2l/heights"]
        along = h["dist_ph_along"][:]
        assert cnt.sum() == along.size and np.all((beg == 0) == (cnt == 0))
        assert beg[cnt > 0][0] == 1 and np.all(np.diff(beg[cnt > 0]) == cnt[cnt > 0][:-1])
        assert along.min() >= 0.0 and along.max() < 20.0
        x_ph = np.repeat(dist_x, cnt) + along  # SlideRule's x_atc
        assert np.all(np.diff(x_ph) >= -1e-3)
        dt = h["delta_time"][:]
        assert np.all(np.diff(dt) >= 0) and np.unique(dt).size < dt.size  # repeats per pulse
        spacing = np.diff(np.unique(x_ph.round(3)))
        assert np.median(spacing) == pytest.approx(0.7, abs=0.05)  # 10 kHz pulses
        vel = np.linalg.norm(g["velocity_sc"][:], axis=1)
        assert 6900 < vel.mean() < 7800
        start = f["ancillary_data/data_start_utc"][0].decode()
        first = orbit.delta_time_to_datetime(dt[0])
        assert abs((datetime.fromisoformat(start.replace("Z", "+00:00")) - first).total_seconds()) < 0.01
    name_time = parse_granule_name(spec.name)["start"]
    assert abs((orbit.delta_time_to_datetime(spec.start_delta_time) - name_time).total_seconds()) <= 0.5
    assert spec.start_delta_time <= dt[0] <= spec.end_delta_time


def test_atl06_segment_ids_x_atc_and_gaps(atl06_pair):
    spec, path = atl06_pair[3]
    with h5py.File(path, "r") as f:
        for beam in BEAMS:
            g = f[f"{beam}/land_ice_segments"]
            seg, x = g["segment_id"][:], g["ground_track/x_atc"][:]
            np.testing.assert_array_equal(x, 20.0 * (seg.astype(np.int64) - 1))
            assert np.all(np.diff(seg) >= 1)
            dt = g["delta_time"][:]
            assert np.all(np.diff(dt) > 0)
            # delta_time is the time the RGT passes x_atc
            np.testing.assert_allclose(dt, spec.delta_time_at(x), atol=1e-6)
            sq = f[f"{beam}/segment_quality/segment_id"][:]
            assert np.all(np.diff(sq) == 1) and np.isin(seg, sq).all()
        gaps = [np.count_nonzero(np.diff(f[f"{b}/land_ice_segments/segment_id"][:]) > 1) for b in BEAMS]
    assert sum(gaps) > 0  # clouds and dropouts: segment_id is not contiguous


def test_same_seed_same_bytes_of_data(tmp_path):
    spec = next(s for s in plan_granules(GRANDMESA, "ATL03", [5]) if s.rgt == 295)
    spec = _window(spec, 1500)
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    write_atl03(spec, a, created="2020-01-01T00:00:00.000000Z")
    write_atl03(spec, b, created="2020-01-01T00:00:00.000000Z")
    other = tmp_path / "c.h5"
    write_atl03(GranuleSpec(**{**spec.__dict__, "seed": spec.seed + 1}), other, created="2020-01-01T00:00:00.000000Z")
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb, h5py.File(other, "r") as fc:
        for path in ("gt1l/heights/h_ph", "gt1l/heights/lat_ph", "gt3r/heights/signal_conf_ph",
                     "gt2r/geolocation/segment_ph_cnt", "gt1l/bckgrd_atlas/bckgrd_rate"):
            assert fa[path][...].tobytes() == fb[path][...].tobytes(), path
        assert fa["gt1l/heights/h_ph"].shape != fc["gt1l/heights/h_ph"].shape or not np.array_equal(
            fa["gt1l/heights/h_ph"][...], fc["gt1l/heights/h_ph"][...])
    assert a.read_bytes() == b.read_bytes()  # the whole file, given the same creation time


def test_surface_is_deterministic_and_tells_a_story():
    lon, lat = np.meshgrid(np.linspace(-45.38, -44.62, 20), np.linspace(62.64, 62.98, 20))
    t0, t1 = 1.5515e9, 1.5515e9 + 3 * 365.25 * 86400
    h0 = surface.surface_height(lon, lat, t0, "greenland")
    np.testing.assert_array_equal(h0, surface.surface_height(lon, lat, t0, "greenland"))
    assert not np.array_equal(h0, surface.surface_height(lon, lat, t0, "greenland", seed=1))
    assert 2000 < h0.min() and h0.max() < 2900
    dhdt = surface.surface_dhdt(lon, lat, "greenland")
    assert -2.2 <= dhdt.min() < -1.0 and -1.0 < dhdt.max() <= -0.3  # thinning that varies in space
    change = (surface.surface_height(lon, lat, t1, "greenland") - h0) / 3.0
    np.testing.assert_allclose(change, dhdt, atol=0.2)  # the seasonal term is small
    # Grand Mesa: a ~3000 m plateau above ~2000 m valleys, with more snow in March than in September
    top = surface.surface_height(-108.0, 39.03, 1.5835e9, "grandmesa")
    valley = surface.surface_height(-108.45, 39.03, 1.5835e9, "grandmesa")
    assert 2900 < top < 3250 and valley < 2200
    march = datetime(2020, 3, 5, tzinfo=timezone.utc).timestamp()
    sept = datetime(2020, 9, 5, tzinfo=timezone.utc).timestamp()
    snow = surface.surface_height(-108.0, 39.03, march, "grandmesa") - surface.surface_height(-108.0, 39.03, sept,
                                                                                              "grandmesa")
    assert 1.0 < snow < 2.5


def test_planner_input_checks_and_whole_region_atl03_guard(tmp_path):
    assert [s.name for s in plan_granules(GRANDMESA, "ATL03", 3)] == [s.name for s in plan_granules(GRANDMESA, "ATL03", [3])]
    with pytest.raises(ValueError, match="unknown product"):
        plan_granules(GRANDMESA, "ATL08", [3])
    with pytest.raises(ValueError, match="positive"):
        plan_granules(GRANDMESA, "ATL03", [0])
    with pytest.raises(ValueError, match="window"):
        plan_granules(GRANDMESA, "ATL03", [3], window="everything")
    whole = plan_granules(GRANDMESA, "ATL03", [3], window="region")[0]
    assert not whole.shortened
    with pytest.raises(ValueError, match="too long"):
        write_atl03(whole, tmp_path / whole.name)
    assert not (tmp_path / whole.name).exists()
    # no granules before the first ATLAS data (2018-10-13)
    early = plan_granules(GREENLAND, "ATL06", [1])
    assert early and min(s.end_delta_time for s in early) > orbit.MISSION_START_DELTA_TIME


def test_generated_latitudes_turn_at_88_degrees(tmp_path):
    """A polar (region 4) granule shortened to 20 km around the turning point of the orbit."""
    spec = GranuleSpec("ATL06", 94, 3, 4, surface="generic")
    top = float(orbit.x_from_u(math.pi / 2))
    spec = spec.with_window(top - 10_000, top + 10_000, reason="test window")
    path = tmp_path / spec.name
    write_atl06(spec, path)
    with h5py.File(path, "r") as f:
        lat = np.concatenate([f[f"{b}/segment_quality/reference_pt_lat"][:] for b in BEAMS])
        mid = f["gt2l/segment_quality/reference_pt_lat"][:]
    assert lat.max() == pytest.approx(88.0, abs=0.05)
    assert np.argmax(mid) not in (0, mid.size - 1)  # the track turns inside the window
