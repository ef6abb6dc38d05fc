"""Tests of the local ATL06-SR engine (is2cloud.atl06sr) against SlideRule's p-series semantics.

Synthetic photons are built here (no dependence on the granule generator). Besides targeted tests (the LSF
unit-test vectors of UT_Atl06Dispatch.cpp, the extent_id example, flags, spot mapping, parameter
semantics), the vectorized engine is compared with a literal, photon-by-photon transcription of the
p-series traversal (Atl03Reader::subsettingThread) and fit (Atl06Dispatch::iterativeFitStage) written below.
"""

from __future__ import annotations

import math
from dataclasses import replace

import h5py
import numpy as np
import pandas as pd
import pytest

from is2cloud import atl06sr
from is2cloud.atl06sr import Atl03Beam, GranuleInfo, ParameterError

F32 = np.float32
C2 = atl06sr.SPEED_OF_LIGHT / 2.0
INFO = GranuleInfo(rgt=1160, cycle=2, region=3, sc_orient=0, version=6, name="ATL03_20190301010101_11600203_006_01.h5")


# ------------------------------------------------------------------------------------------------
# Synthetic beams
# ------------------------------------------------------------------------------------------------


def make_beam(
    seed: int = 0,
    n_pulses: int = 3000,
    signal: float = 3.0,
    background: float = 0.5,
    slope: float = 0.02,
    noise: float = 0.10,
    window: float = 100.0,
    x0: float = 2_000_000.0,
    h0: float = 1500.0,
    seg_jitter: float = 0.0,
    gap: tuple[float, float] | None = None,
    along_jitter: float = 0.05,
    beam: str = "gt1l",
    empty_head_segments: int = 0,
) -> tuple[Atl03Beam, np.ndarray]:
    """Photons on h = h0 + slope*(x - x0) with Gaussian noise, plus uniform background in a window.

    Returns the beam and a boolean array marking signal photons. Signal photons get confidence 2..4 and
    background 0 (or 1 within 10 m of the surface). Segments are 20 m apart, plus ``seg_jitter`` of
    uniform noise. ``gap`` removes pulses in [gap0, gap1) metres after x0.
    """
    rng = np.random.default_rng(seed)
    xp = x0 + 0.7 * np.arange(n_pulses) + 0.35
    if gap is not None:
        xp = xp[(xp - x0 < gap[0]) | (xp - x0 >= gap[1])]
    n_sig, n_bg = rng.poisson(signal, xp.size), rng.poisson(background, xp.size)
    per = n_sig + n_bg
    pulse = np.repeat(np.arange(xp.size), per)
    within = np.arange(pulse.size) - np.repeat(np.cumsum(per) - per, per)
    is_sig = within < np.repeat(n_sig, per)
    x = xp[pulse] + rng.normal(0.0, along_jitter, pulse.size)
    surf = h0 + slope * (x - x0)
    h = np.where(is_sig, surf + rng.normal(0, noise, x.size), surf + rng.uniform(-window / 2, window / 2, x.size))
    conf = np.where(is_sig, rng.choice([2, 3, 4], x.size, p=[0.1, 0.2, 0.7]), 0)
    conf = np.where(~is_sig & (np.abs(h - surf) < 10.0), 1, conf).astype(np.int8)
    n_seg = int((xp[-1] - x0) // 20.0) + 2 + empty_head_segments
    steps = 20.0 + rng.uniform(-seg_jitter, seg_jitter, n_seg - 1) if seg_jitter else np.full(n_seg - 1, 20.0)
    sdx = x0 - 20.0 * empty_head_segments + np.concatenate([[0.0], np.cumsum(steps)])
    seg = np.searchsorted(sdx, xp[pulse], side="right") - 1
    t0, v = 40_000_000.0, 7000.0
    bt = t0 - 1.0 + 0.005 * np.arange(int((xp[-1] - x0) / v / 0.005) + 400)
    b = Atl03Beam(
        beam=beam,
        delta_time=t0 + (xp[pulse] - x0) / v,
        lat_ph=70.0 + (x - x0) * 8e-6,
        lon_ph=-45.0 + (x - x0) * 2e-6,
        h_ph=h.astype(F32),
        dist_ph_along=(x - sdx[seg]).astype(F32),
        dist_ph_across=rng.normal(0.0, 1.0, x.size).astype(F32),
        signal_conf_ph=np.repeat(conf[:, None], 5, axis=1),
        quality_ph=np.zeros(x.size, np.int8),
        segment_id=(555_000 + np.arange(n_seg)).astype(np.int32),
        segment_dist_x=sdx,
        segment_ph_cnt=np.bincount(seg, minlength=n_seg).astype(np.int32),
        segment_delta_time=t0 + (sdx - x0) / v,
        velocity_sc=np.tile(np.array([6800.0, 2500.0, 2000.0], F32), (n_seg, 1)),
        bckgrd_delta_time=bt,
        bckgrd_rate=(background / window * C2 * (1.0 + 0.2 * np.sin(np.arange(bt.size) / 50.0))).astype(F32),
    )
    return b, is_sig


def beam_from_xh(x, h, conf=4, *, x0: float = 0.0, beam: str = "gt1l", bg_rate: float = 0.0) -> Atl03Beam:
    """A beam from explicit along-track positions (metres after x0, ascending) and heights."""
    x = np.asarray(x, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    n_seg = int(x.max() // 20.0) + 2
    sdx = x0 + 20.0 * np.arange(n_seg)
    seg = (x // 20.0).astype(np.int64)
    conf = np.broadcast_to(np.asarray(conf, dtype=np.int8), x.shape)
    conf5 = np.ascontiguousarray(np.broadcast_to(conf[:, None], (x.size, 5)))
    t0 = 50_000_000.0
    return Atl03Beam(
        beam=beam,
        delta_time=t0 + x / 7000.0,
        lat_ph=-75.0 + x * 9e-6,
        lon_ph=100.0 + x * 1e-6,
        h_ph=h.astype(F32),
        dist_ph_along=(x - 20.0 * seg).astype(F32),
        dist_ph_across=np.zeros(x.size, F32),
        signal_conf_ph=conf5,
        quality_ph=np.zeros(x.size, np.int8),
        segment_id=(100 + np.arange(n_seg)).astype(np.int32),
        segment_dist_x=sdx,
        segment_ph_cnt=np.bincount(seg, minlength=n_seg).astype(np.int32),
        segment_delta_time=t0 + (sdx - x0) / 7000.0,
        velocity_sc=np.tile(np.array([7000.0, 0.0, 0.0], F32), (n_seg, 1)),
        bckgrd_delta_time=np.array([t0 - 1.0, t0 + 100.0]),
        bckgrd_rate=np.array([bg_rate, bg_rate], F32),
    )


def run(beam: Atl03Beam, parms=None, info: GranuleInfo = INFO) -> dict[str, np.ndarray]:
    return atl06sr.fit_beam(beam, atl06sr.parse_parms(parms), info)


def counters(cols) -> np.ndarray:
    return np.array([atl06sr.decode_extent_id(e)["counter"] for e in cols["extent_id"]])


# ------------------------------------------------------------------------------------------------
# Reference: a literal transcription of the p-series, photon by photon (slow, for small inputs)
# ------------------------------------------------------------------------------------------------


def _ref_unix_ns(dt: float) -> int:
    sys_secs = (dt + atl06sr.ATLAS_SDP_EPOCH_GPS) + atl06sr.GPS_EPOCH_UNIX
    return int(np.float64((sys_secs - 18.0) * 1e9))


def _cmax(a: float, b: float) -> float:
    return a if a > b else b


def _ref_lsf(ph, S):
    n = len(S)
    g12 = sum(ph[i]["x"] for i in S)
    g22 = sum(ph[i]["x"] * ph[i]["x"] for i in S)
    det = np.float64(1.0) / np.float64(n * g22 - g12 * g12)
    i11, i12, i22 = g22 * det, -1 * g12 * det, n * det
    hm = sl = ys = 0.0
    for i in S:
        g1, g2 = i11 + i12 * ph[i]["x"], i12 + i22 * ph[i]["x"]
        hm, sl, ys = hm + g1 * ph[i]["h"], sl + g2 * ph[i]["h"], ys + g1 * g1
    return float(hm), float(sl), math.sqrt(ys), float(i11), float(i12)


def _ref_fit(ph, ext_len, velocity, bg_rate, p):
    """Atl06Dispatch::iterativeFitStage + final lsf; returns None for a degenerate (n < 2) fit."""
    bg_dens = (ext_len * atl06sr.PULSE_REPETITION_FREQUENCY) / float(velocity) * bg_rate / C2
    S, W, pflags, invalid, it = list(range(len(ph))), F32(0.0), 0, False, 0
    if len(S) < 2:
        return None
    while True:
        n = len(S)
        hm, sl, ysig, i11, i12 = _ref_lsf(ph, S)
        res = {i: ph[i]["h"] - (hm + ph[i]["x"] * sl) for i in S}
        rs = sorted(res.values())
        if it == 0:
            zmin, zmax = rs[0], rs[-1]
            nbg = bg_dens * (zmax - zmin)
        else:
            nbg, zmin, zmax = bg_dens * float(W), -float(W) / 2.0, float(W) / 2.0
        bck = np.float64(nbg) / np.float64(zmax - zmin)
        nsig = n - nbg
        sigma_r = 0.0
        if nsig <= 1:
            sigma_r = (zmax - zmin) / n
        else:
            i0 = 0
            while i0 < n and (i0 + 1.0 - 0.5 + 1.0) < (0.25 * nsig) + ((rs[i0] - zmin) * bck):
                i0 += 1
            i1 = n - 1
            while i1 >= 0 and (i1 + 1.0 - 0.5 - 1.0) > (0.75 * nsig) + ((rs[i1] - zmin) * bck):
                i1 -= 1
            if i1 < i0:
                i0 = int((n / 2.0) - (nsig / 4.0) + 0.5) - 1
                i1 = int((n / 2.0) + (nsig / 4.0) + 0.5)
            if i0 >= 0 and i1 < n:
                sigma_r = (rs[i1] - rs[i0]) / atl06sr.RDE_SCALE_FACTOR
            else:
                pflags |= 0x8
                invalid = True
        se = math.sqrt(((C2 * atl06sr.SIGMA_XMIT) ** 2) + atl06sr.SIGMA_BEAM**2 * float(F32(sl)) ** 2)
        if sigma_r > p.sigma_r_max:
            sigma_r = p.sigma_r_max
        W = F32(_cmax(_cmax(_cmax(p.H_min_win, 6.0 * se), 6.0 * sigma_r), 0.75 * float(W)))
        half = float(W) / 2.0
        kept = [i for i in S if abs(res[i]) < half]
        xs = [ph[i]["x"] for i in kept]
        if len(kept) < p.cnt:
            pflags, invalid = pflags | 0x2, True
            break
        if (max(xs) - min(xs)) < p.ats:
            pflags, invalid = pflags | 0x1, True
            break
        if len(kept) == n:
            break
        it += 1
        if it >= p.maxi:
            pflags |= 0x4
            break
        S = kept
    rms = math.sqrt(sum(res[i] ** 2 for i in S) / len(S)) if not invalid else 0.0
    h_sigma = F32(F32(rms) * F32(ysig)) if not invalid else F32(0.0)
    lon_shift = ph[S[0]]["lon"] < -150 or ph[S[0]]["lon"] > 150
    lat = lon = t = y = 0.0
    for i in S:
        g1 = i11 + i12 * ph[i]["x"]
        lo = math.fmod(ph[i]["lon"] + 360.0, 360.0) if lon_shift else ph[i]["lon"]
        lat, lon, t, y = lat + g1 * ph[i]["lat"], lon + g1 * lo, t + g1 * float(ph[i]["t"]), y + g1 * ph[i]["y"]
    if lon_shift:
        lon = math.fmod(lon + 180.0, 360.0) - 180.0
    return dict(h_mean=hm, dh_fit_dx=F32(sl), w=W, rms=F32(rms), h_sigma=h_sigma, n=len(S), pflags=pflags,
                latitude=lat, longitude=lon, time=int(t), y_atc=F32(y))  # fmt: skip


def reference(beam: Atl03Beam, p: atl06sr.Atl06Parms, info: GranuleInfo = INFO) -> list[dict]:
    """Atl03Reader::subsettingThread + Atl06Dispatch, literally; one dict per emitted row."""
    n_ph, cnt, sdx = beam.h_ph.size, beam.segment_ph_cnt, beam.segment_dist_x
    m = sdx.size
    conf = atl06sr.photon_confidence(beam.signal_conf_ph, p.srt)
    ext_len = p.len * 20.0 if p.dist_in_seg else p.len
    st = dict(ph_in=0, seg_in=0, seg_ph=0, start_segment=0, start=float(sdx[0]), bckgrd_in=0)
    rows, counter, complete = [], 0, False
    while not complete:
        cur_ph, cur_seg, cur_cnt = st["ph_in"], st["seg_in"], st["seg_ph"]
        ext_done = step_done = False
        start_portion = float(beam.dist_ph_along[cur_ph]) / 20.0
        eseg = st["seg_in"]
        photons = []
        while not ext_done or not step_done:
            cur_cnt += 1
            while cur_seg < m and cur_cnt > cnt[cur_seg]:
                cur_cnt, cur_seg = 1, cur_seg + 1
            if cur_seg >= m:
                complete = True
                break
            x_atc = (sdx[cur_seg] - st["start"]) + float(beam.dist_ph_along[cur_ph])
            segs = cur_seg - eseg
            if not step_done and ((not p.dist_in_seg and x_atc >= p.res) or (p.dist_in_seg and segs >= int(p.res))):
                st.update(ph_in=cur_ph, seg_in=cur_seg, seg_ph=cur_cnt - 1)
                step_done = True
            if (not p.dist_in_seg and x_atc < p.len) or (p.dist_in_seg and segs < p.len):
                ok = int(conf[cur_ph]) in p.cnf and int(beam.quality_ph[cur_ph]) in p.quality_ph
                ok = ok and (beam.inclusion is None or bool(beam.inclusion[cur_seg]))
                if ok:
                    photons.append(dict(
                        x=float(F32(x_atc - ext_len / 2.0)), h=float(beam.h_ph[cur_ph]),
                        lat=float(beam.lat_ph[cur_ph]), lon=float(beam.lon_ph[cur_ph]),
                        t=_ref_unix_ns(float(beam.delta_time[cur_ph])), y=float(beam.dist_ph_across[cur_ph]),
                    ))  # fmt: skip
            else:
                ext_done = True
            cur_ph += 1
            if cur_ph >= n_ph:
                complete = True
                break
        seg_distance = st["start"] + ext_len / 2.0
        if not p.dist_in_seg:
            st["start"] += p.res
            while st["start_segment"] + 1 < m and st["start"] >= sdx[st["start_segment"] + 1]:
                st["start"] += sdx[st["start_segment"] + 1] - sdx[st["start_segment"]]
                st["start"] -= 20.0
                st["start_segment"] += 1
        elif eseg + int(p.res) < m:
            st["start"] = float(sdx[eseg + int(p.res)])
        valid = len(photons) >= p.cnt
        if len(photons) > 1 and float(F32(photons[-1]["x"]) - F32(photons[0]["x"])) < p.ats:
            valid = False
        if (valid or p.pass_invalid) and photons:
            # Atl03Reader::calculateBackground with its persistent pointer
            bt, br = beam.bckgrd_delta_time, beam.bckgrd_rate.astype(np.float64)
            rate = br[-1]
            while st["bckgrd_in"] < bt.size:
                j, ts = st["bckgrd_in"], beam.segment_delta_time[eseg]
                if bt[j] >= ts:
                    rate = ((br[j] - br[j - 1]) / (bt[j] - bt[j - 1])) * (ts - bt[j - 1]) + br[j - 1] if j > 0 else br[0]
                    break
                st["bckgrd_in"] += 1
            v = beam.velocity_sc[eseg].astype(np.float64)
            vel = F32(math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))
            sid = float(beam.segment_id[eseg])
            sid += int(p.len / 2.0) if p.dist_in_seg else start_portion + int((p.len / 20.0) / 2.0)
            fit = _ref_fit(photons, ext_len, vel, float(rate), p)
            rows.append(dict(counter=counter, segment_id=int(sid + 0.5), x_atc=F32(seg_distance), fit=fit))
        counter += 1
    return rows


def assert_matches_reference(beam: Atl03Beam, parms) -> int:
    p = atl06sr.parse_parms(parms)
    ref = reference(beam, p)
    got = run(beam, p)
    assert list(counters(got)) == [r["counter"] for r in ref]
    assert list(got["segment_id"]) == [r["segment_id"] for r in ref]
    assert list(got["x_atc"]) == [r["x_atc"] for r in ref]
    ok = np.array([r["fit"] is not None for r in ref], dtype=bool)
    fits = [r["fit"] for r in ref if r["fit"] is not None]
    assert np.isnan(got["h_mean"][~ok]).all()
    for key, col, tol in [
        ("pflags", "pflags", 0), ("n", "n_fit_photons", 0), ("h_mean", "h_mean", 1e-7),
        ("dh_fit_dx", "dh_fit_dx", 1e-5), ("w", "w_surface_window_final", 1e-6), ("rms", "rms_misfit", 1e-5),
        ("h_sigma", "h_sigma", 1e-5), ("latitude", "latitude", 1e-9), ("longitude", "longitude", 1e-9),
        ("y_atc", "y_atc", 1e-5), ("time", "time", 0),
    ]:  # fmt: skip
        expected = np.array([f[key] for f in fits])
        actual = got[col][ok]
        if key == "time":
            assert np.abs(actual.astype(np.int64) - expected.astype(np.int64)).max(initial=0) < 10_000  # ns: SlideRule sums int64 ns in double (256 ns ulp)
        elif tol == 0:
            np.testing.assert_array_equal(actual, expected, err_msg=col)
        else:
            np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=tol, atol=tol, err_msg=col)
    return len(ref)


# ------------------------------------------------------------------------------------------------
# The least-squares fit (UT_Atl06Dispatch.cpp vectors)
# ------------------------------------------------------------------------------------------------


def test_lsf_unit_test_vectors():
    h_mean, slope, _ = atl06sr.lsf([1, 2, 3, 4], [2, 4, 6, 8])
    assert h_mean == 0.0
    assert abs(slope - 2.0) < 1e-7
    h_mean, slope, _ = atl06sr.lsf([1, 2, 3, 4], [4, 5, 6, 7])
    assert abs(h_mean - 3.0) < 1e-7 and abs(slope - 1.0) < 1e-7


def test_lsf_sigma_is_covariance_element():
    x = np.array([-15.0, -3.0, 2.0, 11.0, 19.0])
    g = np.column_stack([np.ones_like(x), x])
    _, _, ysig = atl06sr.lsf(x, 3 * x + 1)
    assert ysig == pytest.approx(math.sqrt(np.linalg.inv(g.T @ g)[0, 0]), rel=1e-12)


def _spread(rs, zmin, zmax, n_bg):
    rs = np.asarray(rs, dtype=float)
    one = lambda v: np.array([v], dtype=float)  # noqa: E731
    sigma, oob = atl06sr._robust_spread(
        rs, np.zeros(1, np.intp), np.array([rs.size]), np.zeros(rs.size, np.intp), one(zmin), one(zmax), one(n_bg)
    )
    return float(sigma[0]), bool(oob[0])


def test_robust_spread_percentiles_fallback_and_few_signal():
    # no background: the 25th/75th percentile photons of 20 are at sorted indices 4 and 15
    assert _spread(np.arange(20.0), 0.0, 19.0, 0.0) == (pytest.approx(11 / 1.349), False)
    # residuals below the window bottom make the scans cross: the central-values fallback is used,
    # i0 = int(n/2 - Nsig/4 + 0.5) - 1 = 2 and i1 = int(n/2 + Nsig/4 + 0.5) = 7
    assert _spread(np.arange(-10.0, 0.0), 0.0, 1.0, 1.0) == (pytest.approx(5 / 1.349), False)
    # fewer than 2 signal photons expected: (zmax - zmin) / n
    assert _spread(np.arange(10.0), -5.0, 5.0, 9.5) == (pytest.approx(1.0), False)


# ------------------------------------------------------------------------------------------------
# Identifiers, time, background
# ------------------------------------------------------------------------------------------------


def test_extent_id_example_decodes_and_encodes():
    d = atl06sr.decode_extent_id(0x4880002380000002)
    assert (d["rgt"], d["cycle"], d["region"], d["track"], d["pair"], d["counter"]) == (1160, 2, 3, 2, 0, 0)
    assert d["elevation"] and d["gt"] == 30 and d["beam"] == "gt2l"
    assert atl06sr.encode_extent_id(1160, 2, 3, 2, 0, 0) == 0x4880002380000002
    assert atl06sr.encode_extent_id(1160, 2, 3, 2, 1, 5) == 0x4880002380000002 | 1 | (5 << 2)


def test_spot_mapping_both_orientations():
    backward = [atl06sr.spot_number(0, *atl06sr.beam_track_pair(b)) for b in atl06sr.BEAMS]
    forward = [atl06sr.spot_number(1, *atl06sr.beam_track_pair(b)) for b in atl06sr.BEAMS]
    assert backward == [1, 2, 3, 4, 5, 6]
    assert forward == [6, 5, 4, 3, 2, 1]
    assert [atl06sr.ground_track(1, *atl06sr.beam_track_pair(b)) for b in atl06sr.BEAMS] == [10, 20, 30, 40, 50, 60]


@pytest.mark.parametrize("sc_orient, expected", [(0, {"gt1l": 1, "gt2r": 4, "gt3r": 6}), (1, {"gt1l": 6, "gt2r": 3, "gt3r": 1})])
def test_engine_spot_and_gt_per_orientation(sc_orient, expected):
    for beam, spot in expected.items():
        b, _ = make_beam(seed=3, n_pulses=300, beam=beam)
        cols = run(b, info=replace(INFO, sc_orient=sc_orient))
        assert len(cols["spot"]) > 0
        assert set(cols["spot"]) == {spot}
        assert set(cols["gt"]) == {atl06sr.GT_CODES[beam]}


def test_delta_time_epoch_and_leap_seconds():
    assert atl06sr.delta_time_to_unix_ns(0.0) == pd.Timestamp("2018-01-01T00:00:00").value
    assert atl06sr.delta_time_to_unix_ns(1.5) == pd.Timestamp("2018-01-01T00:00:01.5").value
    # GPS-UTC was 17 s before 2017-01-01 and 18 s after
    assert int(atl06sr.leap_seconds(1167264018.0 - 1.0)) == 17
    assert int(atl06sr.leap_seconds(1167264018.0)) == 18


def test_background_interpolation():
    bt = np.array([10.0, 20.0, 30.0])
    br = np.array([100.0, 200.0, 400.0], F32)
    got = atl06sr.interpolate_background(bt, br, np.array([5.0, 10.0, 15.0, 25.0, 30.0, 35.0]))
    np.testing.assert_allclose(got, [100.0, 100.0, 150.0, 300.0, 400.0, 400.0])


# ------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------


def test_defaults_match_server_v5():
    p = atl06sr.parse_parms({})
    assert (p.srt, p.cnf, p.quality_ph) == (-1, frozenset({2, 3, 4}), frozenset({0}))
    assert (p.len, p.res, p.cnt, p.ats, p.maxi, p.H_min_win, p.sigma_r_max) == (40.0, 20.0, 10, 20.0, 5, 3.0, 5.0)
    assert not p.pass_invalid and not p.keep_id and p.beams == atl06sr.BEAMS


@pytest.mark.parametrize(
    "cnf, allowed",
    [
        (2, {2, 3, 4}),
        ([2], {2}),
        ("atl03_medium", {3, 4}),
        (["atl03_low", "atl03_high"], {2, 4}),
        (-2, {-2, -1, 0, 1, 2, 3, 4}),
        ((0, 4), {0, 4}),
    ],
)
def test_cnf_scalar_is_a_level_list_is_exact(cnf, allowed):
    assert atl06sr.parse_parms({"cnf": cnf}).cnf == frozenset(allowed)


def test_cnf_semantics_in_the_engine():
    x = np.linspace(0.5, 39.5, 60)
    b = beam_from_xh(x, 100.0 + 0.01 * x, conf=3)
    assert len(run(b, {"cnf": 2})["h_mean"]) == 1
    assert len(run(b, {"cnf": "atl03_medium"})["h_mean"]) == 1
    assert len(run(b, {"cnf": [2]})["h_mean"]) == 0
    assert len(run(b, {"cnf": ["atl03_high"]})["h_mean"]) == 0
    assert len(run(b, {"cnf": 4})["h_mean"]) == 0


def test_srt_dynamic_uses_max_over_surface_types():
    x = np.linspace(0.5, 39.5, 60)
    b = beam_from_xh(x, 100.0 + 0.01 * x, conf=0)
    conf5 = np.zeros((x.size, 5), np.int8)
    conf5[:, 0] = 4  # land: high; land_ice: background
    conf5[:, 1] = -1
    b = replace(b, signal_conf_ph=conf5)
    assert len(run(b, {"srt": -1})["h_mean"]) == 1
    assert len(run(b, {"srt": "dynamic"})["h_mean"]) == 1
    assert len(run(b, {"srt": "land"})["h_mean"]) == 1
    assert len(run(b, {"srt": 3})["h_mean"]) == 0
    assert len(run(b, {"srt": "land_ice"})["h_mean"]) == 0
    assert atl06sr.parse_parms({"srt": "inland_water"}).srt == 4


def test_quality_ph_scalar_is_exact():
    assert atl06sr.parse_parms({"quality_ph": 1}).quality_ph == frozenset({1})
    assert atl06sr.parse_parms({"quality_ph": ["atl03_quality_nominal", 2]}).quality_ph == frozenset({0, 2})
    x = np.linspace(0.5, 39.5, 60)
    b = replace(beam_from_xh(x, 10.0 + 0 * x), quality_ph=np.ones(x.size, np.int8))
    assert len(run(b)["h_mean"]) == 0
    assert len(run(b, {"quality_ph": 1})["h_mean"]) == 1


@pytest.mark.parametrize(
    "parms, name",
    [
        ({"srt": 7}, "srt"),
        ({"srt": "glacier"}, "srt"),
        ({"cnf": 5}, "cnf"),
        ({"cnf": [-3, 2]}, "cnf"),
        ({"cnf": "atl03_very_high"}, "cnf"),
        ({"len": 0}, "len"),
        ({"len": -40.0}, "len"),
        ({"res": 0.0}, "res"),
        ({"res": float("nan")}, "res"),
        ({"cnt": -1}, "cnt"),
        ({"cnt": 2.5}, "cnt"),
        ({"ats": -1}, "ats"),
        ({"maxi": -1}, "maxi"),
        ({"sigma_r_max": 0}, "sigma_r_max"),
        ({"quality_ph": 30}, "quality_ph"),
        ({"pass_invalid": "yes"}, "pass_invalid"),
        ({"beams": ["gt4l"]}, "beams"),
        ({"track": 5}, "track"),
        ({"atl08_class": ["atl08_ground"]}, "atl08_class"),
        ({"yapc": {"version": 3, "score": 100}}, "yapc.version"),
        ({"atl03_geo_fields": ["solar_elevation"]}, "atl03_geo_fields"),
        ({"dist_in_seg": True, "res": 0.5}, "res"),
    ],
)
def test_bad_parameters_raise_clear_errors(parms, name):
    with pytest.raises(ParameterError, match=name.replace(".", r"\.")):
        atl06sr.parse_parms(parms)


def test_unknown_and_output_keys_are_ignored_like_the_server():
    p = atl06sr.parse_parms({"poly": [{"lon": 0, "lat": 0}], "output": {"path": "x"}, "t0": "2019", "whatever": 1})
    assert p == atl06sr.DEFAULT_PARMS


def test_track_selection_replaces_beams():
    assert atl06sr.parse_parms({"track": 2}).beams == ("gt2l", "gt2r")
    assert atl06sr.parse_parms({"beams": ["gt3r", 10]}).beams == ("gt1l", "gt3r")


# ------------------------------------------------------------------------------------------------
# The fit on synthetic surfaces
# ------------------------------------------------------------------------------------------------


def _errors(cols, b: Atl03Beam, slope: float, h0: float = 1500.0, x0: float = 2_000_000.0, length=40.0, res=20.0):
    centre = b.segment_dist_x[0] + counters(cols) * res + length / 2.0
    return cols["h_mean"] - (h0 + slope * (centre - x0))


def test_recovers_sloped_surface_and_h_sigma_matches_scatter():
    b, _ = make_beam(seed=11, n_pulses=40_000, slope=0.03, noise=0.15, background=0.5)
    cols = run(b, {"keep_id": True})
    assert len(cols["h_mean"]) > 1300 and (cols["pflags"] == 0).all()
    err = _errors(cols, b, 0.03)
    assert abs(err.mean()) < 0.02  # bias within 2 cm
    np.testing.assert_allclose(cols["dh_fit_dx"], 0.03, atol=0.01)
    # h_sigma should describe the real scatter of the h_mean errors
    assert 0.8 < err.std() / np.sqrt(np.mean(cols["h_sigma"].astype(float) ** 2)) < 1.25
    assert 0.7 < np.mean((err / cols["h_sigma"]) ** 2) < 1.4
    assert np.all(cols["w_surface_window_final"] >= 3.0)


def test_recovers_surface_with_background_photons_selected():
    b, is_sig = make_beam(seed=12, n_pulses=20_000, slope=-0.05, noise=0.2, background=3.0, window=60.0)
    cols = run(b, {"cnf": 0, "keep_id": True})
    err = _errors(cols, b, -0.05)
    assert len(err) > 600
    assert abs(np.median(err)) < 0.02 and abs(err.mean()) < 0.02
    # the window closes around the surface: the fit keeps the signal and little of the background
    assert np.median(cols["w_surface_window_final"]) < 6.0
    assert np.median(cols["n_fit_photons"]) < 1.3 * 3.0 * 40.0 / 0.7


def test_flags_too_few_photons_after_windowing_row_is_kept_with_zeroed_stats():
    x = np.linspace(1.0, 39.0, 12)
    h = np.array([-200, 190, -170, 160, -140, 130, -110, 100, -90, 80, -60, 55], dtype=float)
    cols = run(beam_from_xh(x, h))
    assert list(cols["pflags"]) == [atl06sr.PFLAG_TOO_FEW_PHOTONS]
    assert cols["rms_misfit"][0] == 0.0 and cols["h_sigma"][0] == 0.0
    assert cols["n_fit_photons"][0] == 12  # the failing set is not trimmed


def test_flags_spread_too_short():
    x = np.r_[np.linspace(1.0, 5.0, 12), 35.0, 35.2]
    h = np.r_[np.full(12, 10.0) + np.linspace(-0.01, 0.01, 12), 110.0, -90.0]
    cols = run(beam_from_xh(x, h))
    assert list(cols["pflags"]) == [atl06sr.PFLAG_SPREAD_TOO_SHORT]
    assert cols["rms_misfit"][0] == 0.0 and cols["h_sigma"][0] == 0.0
    assert cols["n_fit_photons"][0] == 14


def test_flags_max_iterations_keeps_untrimmed_set_and_stats():
    x = np.r_[np.linspace(1.0, 39.0, 20), 20.5]
    h = np.r_[0.05 * np.linspace(1.0, 39.0, 20) + np.tile([0.02, -0.02], 10), 10.0]  # one 10 m outlier
    order = np.argsort(x)
    b = beam_from_xh(x[order], h[order])
    capped = run(b, {"maxi": 1})
    assert list(capped["pflags"]) == [atl06sr.PFLAG_MAX_ITERATIONS_REACHED]
    assert capped["n_fit_photons"][0] == 21 and capped["rms_misfit"][0] > 1.0 and capped["h_sigma"][0] > 0
    free = run(b)
    assert list(free["pflags"]) == [0] and free["n_fit_photons"][0] == 20
    assert free["rms_misfit"][0] == pytest.approx(0.02, abs=1e-3)
    assert free["dh_fit_dx"][0] == pytest.approx(0.05, abs=1e-3)


def test_precheck_drops_sparse_extents_unless_pass_invalid():
    x = np.linspace(2.0, 38.0, 5)
    b = beam_from_xh(x, 5.0 + 0 * x)
    assert len(run(b)["h_mean"]) == 0
    cols = run(b, {"pass_invalid": True})
    assert list(cols["pflags"]) == [atl06sr.PFLAG_TOO_FEW_PHOTONS] and cols["n_fit_photons"][0] == 5
    assert cols["rms_misfit"][0] == 0.0 and cols["h_sigma"][0] == 0.0


def test_single_photon_extent_is_degenerate_like_the_unguarded_c_fit():
    b = beam_from_xh([5.0, 25.0], [1.0, 2.0])  # extent 0 has both photons, but we keep only the first
    b = replace(b, signal_conf_ph=np.array([[4] * 5, [0] * 5], np.int8))
    cols = run(b, {"pass_invalid": True, "cnt": 1, "keep_id": True})
    assert list(cols["pflags"]) == [atl06sr.PFLAG_TOO_FEW_PHOTONS] and cols["n_fit_photons"][0] == 1
    assert np.isnan(cols["h_mean"][0]) and cols["h_sigma"][0] == 0.0
    gdf = atl06sr.to_geodataframe(cols)
    assert gdf.index.isna().all()


def test_precheck_drops_short_spread_extents():
    x = np.linspace(10.0, 25.0, 30)  # extent 0 sees [10, 25): 15 m < ats
    cols = run(beam_from_xh(x, 5.0 + 0 * x), {"keep_id": True})
    assert len(cols["h_mean"]) == 0
    cols = run(beam_from_xh(x, 5.0 + 0 * x), {"ats": 10.0, "keep_id": True})
    assert list(counters(cols)) == [0]


def test_extent_counter_steps_through_gaps_and_segment_id_rule():
    b, _ = make_beam(seed=5, n_pulses=1000, gap=(200.0, 500.0))
    cols = run(b, {"keep_id": True})
    k = counters(cols)
    # every 20 m step is counted, including the empty ones in the gap
    assert list(k) == sorted(k) and np.diff(k).max() > 10
    np.testing.assert_allclose(cols["x_atc"], b.segment_dist_x[0] + 20.0 * k + 20.0, atol=0.25)
    # segment_id: first segment of the extent + first photon's portion + int(len/20/2), rounded
    expected = b.segment_id[k] + np.trunc(0.35 / 20.0 + 1 + 0.5).astype(int)
    np.testing.assert_array_equal(cols["segment_id"], expected)
    assert not np.any((k * 20.0 + 40.0 > 200.0 + 1.0) & (k * 20.0 < 500.0 - 1.0))


def test_longitude_wraps_across_the_antimeridian():
    x = np.linspace(0.5, 39.5, 80)
    b = beam_from_xh(x, 0.0 * x)
    lon = np.fmod(179.9998 + x * 2e-5 + 180.0, 360.0) - 180.0  # crosses +180 -> -180 at x = 10
    cols = run(replace(b, lon_ph=lon))
    assert cols["longitude"][0] == pytest.approx(-179.9998, abs=1e-7)  # 180.0002 at the extent centre


def test_window_keeps_photons_strictly_inside_half_window():
    # 20 photons on h = 0 at x = -19, -17, ..., 19 around the centre, and two at x = 0 with h = +-1.5:
    # the fit is exactly h = 0, the window is H_min_win = 3 m, so |r| = 1.5 is outside (|r| < W/2).
    xs = np.r_[np.arange(1.0, 40.0, 2.0), 20.0, 20.0]
    hs = np.r_[np.zeros(20), 1.5, -1.5]
    order = np.argsort(xs, kind="stable")
    cols = run(beam_from_xh(xs[order], hs[order]))
    assert list(cols["pflags"]) == [0] and cols["n_fit_photons"][0] == 20
    assert cols["w_surface_window_final"][0] == 3.0 and cols["h_mean"][0] == 0.0


def test_yapc_v0_uses_weight_ph():
    x = np.linspace(0.5, 39.5, 60)
    b = beam_from_xh(x, 0.0 * x)
    b = replace(b, weight_ph=np.where(np.arange(x.size) < 55, 200, 10).astype(np.uint8))
    assert run(b, {"yapc": {"score": 100}})["n_fit_photons"][0] == 55
    assert run(b)["n_fit_photons"][0] == 60


# ------------------------------------------------------------------------------------------------
# Vectorized engine == literal reference
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "beam_kw, parms",
    [
        ({}, {}),
        ({"background": 2.0, "window": 40.0}, {"cnf": 0, "maxi": 3}),
        ({"seg_jitter": 0.3, "gap": (300.0, 900.0), "along_jitter": 0.4}, {"len": 40.0, "res": 15.0, "cnf": [0, 2, 4]}),
        ({"signal": 0.4, "background": 0.5}, {"pass_invalid": True, "cnt": 3, "ats": 5.0}),
        ({"seg_jitter": 0.5}, {"len": 10.0, "res": 25.0, "cnt": 5, "ats": 5.0}),
        ({"empty_head_segments": 3}, {"dist_in_seg": True, "len": 2, "res": 1}),
        ({"empty_head_segments": 1, "seg_jitter": 0.2}, {"ats": 10.0}),
        ({"n_pulses": 500, "background": 15.0, "window": 30.0, "noise": 0.3}, {"cnf": 0, "maxi": 10}),
        ({"background": 1.0}, {"cnf": 1, "H_min_win": 1.0, "sigma_r_max": 2.0, "srt": 3}),
    ],
)
def test_engine_matches_literal_reference(beam_kw, parms):
    b, _ = make_beam(seed=7, **{"n_pulses": 1500, **beam_kw})
    assert assert_matches_reference(b, parms) > 10


def test_engine_matches_reference_with_raster_aoi():
    b, _ = make_beam(seed=8, n_pulses=2000)
    inc = np.ones(b.segment_ph_cnt.size, bool)
    inc[20:26] = False
    assert assert_matches_reference(replace(b, inclusion=inc), {}) > 10


def test_chunked_processing_gives_identical_rows(monkeypatch):
    b, _ = make_beam(seed=9, n_pulses=4000, background=1.0)
    whole = run(b, {"cnf": 1})
    monkeypatch.setattr(atl06sr, "_CHUNK_PHOTONS", 2500)
    chunked = run(b, {"cnf": 1})
    assert len(whole["h_mean"]) > 100
    for col in whole:
        np.testing.assert_array_equal(chunked[col], whole[col], err_msg=col)


# ------------------------------------------------------------------------------------------------
# Region (AOI per segment)
# ------------------------------------------------------------------------------------------------


def test_region_poly_keeps_first_run_raster_spans_to_last():
    cnt = np.array([5, 0, 5, 5, 0, 5, 5, 5, 5])
    inc = np.array([0, 1, 1, 1, 0, 0, 0, 1, 1], bool)
    poly = atl06sr.compute_region(cnt, inc, "poly")
    assert (poly.first_segment, poly.num_segments, poly.first_photon, poly.num_photons) == (2, 3, 5, 10)
    raster = atl06sr.compute_region(cnt, inc, "raster")
    assert (raster.first_segment, raster.num_segments, raster.first_photon, raster.num_photons) == (2, 7, 5, 30)
    assert list(raster.inclusion) == [1, 1, 0, 0, 0, 1, 1]
    assert atl06sr.compute_region(cnt, np.zeros(9, bool)) is None
    assert atl06sr.compute_region(cnt, None).num_photons == 35


# ------------------------------------------------------------------------------------------------
# Reader and process_granule on an ATL03-shaped HDF5 file
# ------------------------------------------------------------------------------------------------

GRANULE = "ATL03_20190301010101_11600203_006_01.h5"


def write_atl03(path, beams: list[Atl03Beam], sc_orient: int = 1) -> None:
    with h5py.File(path, "w") as f:
        f["orbit_info/sc_orient"] = np.array([sc_orient], np.int8)
        f["orbit_info/rgt"] = np.array([1160], np.int16)
        f["orbit_info/cycle_number"] = np.array([2], np.int8)
        f["ancillary_data/atlas_sdp_gps_epoch"] = np.array([1198800018.0])
        for b in beams:
            hp, gp = f"{b.beam}/heights", f"{b.beam}/geolocation"
            for name in ("delta_time", "lat_ph", "lon_ph", "h_ph", "dist_ph_along", "dist_ph_across", "quality_ph"):
                f.create_dataset(f"{hp}/{name}", data=getattr(b, name), chunks=True, compression="gzip")
            f.create_dataset(f"{hp}/signal_conf_ph", data=b.signal_conf_ph, chunks=True, compression="gzip")
            cnt = b.segment_ph_cnt
            f[f"{gp}/segment_ph_cnt"] = cnt
            f[f"{gp}/ph_index_beg"] = np.where(cnt > 0, np.cumsum(cnt) - cnt + 1, 0).astype(np.int64)
            f[f"{gp}/segment_id"] = b.segment_id
            f[f"{gp}/segment_dist_x"] = b.segment_dist_x
            f[f"{gp}/delta_time"] = b.segment_delta_time
            f[f"{gp}/velocity_sc"] = b.velocity_sc
            seg_x = b.segment_dist_x - b.segment_dist_x[0]
            f[f"{gp}/reference_photon_lat"] = 70.0 + seg_x * 8e-6
            f[f"{gp}/reference_photon_lon"] = -45.0 + seg_x * 2e-6
            f[f"{b.beam}/bckgrd_atlas/delta_time"] = b.bckgrd_delta_time
            f[f"{b.beam}/bckgrd_atlas/bckgrd_rate"] = b.bckgrd_rate


@pytest.fixture(scope="module")
def granule(tmp_path_factory):
    beams = [make_beam(seed=21, n_pulses=3000, beam="gt1l")[0], make_beam(seed=22, n_pulses=3000, signal=0.8, beam="gt2r")[0]]
    path = tmp_path_factory.mktemp("atl03") / GRANULE
    write_atl03(path, beams, sc_orient=1)
    return path, beams


def test_process_granule_schema(granule):
    path, _ = granule
    gdf = atl06sr.process_granule(path, {})
    assert list(gdf.columns) == [c for c in atl06sr.OUTPUT_COLUMNS if c != "extent_id"] + ["geometry"]
    assert len(gdf.columns) == 16
    assert gdf.index.name == "time" and str(gdf.index.dtype) == "datetime64[ns]"
    assert gdf.index.is_monotonic_increasing
    assert gdf.crs.to_epsg() == 7912
    for col, dtype in atl06sr.OUTPUT_DTYPES.items():
        if col != "extent_id":
            assert str(gdf[col].dtype) == dtype, col
    assert set(gdf["gt"]) == {10, 40} and set(gdf["spot"]) == {6, 3}  # forward orientation
    assert set(gdf["rgt"]) == {1160} and set(gdf["cycle"]) == {2} and set(gdf["region"]) == {3}
    assert gdf.index.min() > pd.Timestamp("2019-04-08") and gdf.index.max() < pd.Timestamp("2019-04-09")
    assert gdf.geometry.y.between(69.9, 70.1).all()


def test_process_granule_equals_engine_on_the_same_arrays(granule):
    path, beams = granule
    gdf = atl06sr.process_granule(path, {"beams": ["gt1l"]}, keep_id=True)
    cols = run(beams[0], info=replace(INFO, sc_orient=1))
    expected = atl06sr.to_geodataframe(cols, keep_id=True)
    pd.testing.assert_frame_equal(pd.DataFrame(gdf.drop(columns="geometry")), pd.DataFrame(expected.drop(columns="geometry")))
    ids = [atl06sr.decode_extent_id(e) for e in gdf["extent_id"]]
    assert {(d["rgt"], d["cycle"], d["region"], d["beam"]) for d in ids} == {(1160, 2, 3, "gt1l")}


def test_process_granule_aoi_poly_and_raster(granule):
    path, _ = granule
    full = atl06sr.process_granule(path, {"beams": ["gt1l"]})
    lat_lo, lat_hi, hole = 70.0 + 200 * 8e-6, 70.0 + 1400 * 8e-6, (70.0 + 600 * 8e-6, 70.0 + 800 * 8e-6)

    def mask(lon, lat):
        return (lat >= lat_lo) & (lat < lat_hi) & ~((lat >= hole[0]) & (lat < hole[1]))

    poly = atl06sr.process_granule(path, {"beams": ["gt1l"]}, aoi_mask_fn=mask)
    raster = atl06sr.process_granule(path, {"beams": ["gt1l"]}, aoi_mask_fn=mask, aoi_mode="raster")
    assert 0 < len(poly) < len(raster) < len(full)
    assert poly.geometry.y.max() < hole[0] + 0.0005
    assert raster.geometry.y.max() > hole[1]
    gap = raster.geometry.y.between(hole[0] + 0.0004, hole[1] - 0.0004)
    assert not gap.any()


def test_process_granule_empty_aoi_returns_client_empty_frame(granule):
    path, _ = granule
    gdf = atl06sr.process_granule(path, {}, aoi_mask_fn=lambda lon, lat: np.zeros(lon.shape, bool))
    assert len(gdf) == 0 and list(gdf.columns) == ["geometry"] and gdf.crs.to_epsg() == 7912


def test_reader_reads_only_the_srt_column_and_region(granule):
    path, beams = granule
    with h5py.File(path) as f:
        full = atl06sr.read_atl03_beam(f, "gt1l", {"srt": 3})
        assert full.signal_conf_ph.ndim == 1 and full.h_ph.size == beams[0].h_ph.size
        part = atl06sr.read_atl03_beam(f, "gt1l", {}, aoi_mask_fn=lambda lon, lat: lat > 70.0 + 1000 * 8e-6)
        assert part.first_photon > 0 and part.h_ph.size == beams[0].h_ph.size - part.first_photon
        np.testing.assert_array_equal(part.h_ph, beams[0].h_ph[part.first_photon :])
        assert atl06sr.read_atl03_beam(f, "gt3r", {}) is None  # beam absent from the file


def test_process_granule_accepts_any_h5py_like_mapping(granule):
    path, _ = granule
    with h5py.File(path) as f:
        arrays: dict[str, np.ndarray] = {}
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        from_file = atl06sr.process_granule(f, {"beams": ["gt2r"]})
    from_mapping = atl06sr.process_granule(arrays, {"beams": ["gt2r"]}, granule_name=GRANULE)
    assert len(from_mapping) > 100
    pd.testing.assert_frame_equal(pd.DataFrame(from_mapping), pd.DataFrame(from_file))


def test_reader_rejects_inconsistent_photon_index(tmp_path):
    b, _ = make_beam(seed=1, n_pulses=200)
    path = tmp_path / GRANULE
    write_atl03(path, [b])
    with h5py.File(path, "r+") as f:
        f["gt1l/geolocation/ph_index_beg"][3] += 1
    with pytest.raises(atl06sr.Atl03FormatError, match="ph_index_beg"):
        atl06sr.process_granule(path, {})


def test_granule_name_parsing():
    d = atl06sr.parse_granule_name("s3://bucket/ATLAS/ATL03/006/2019/03/01/" + GRANULE)
    assert (d["rgt"], d["cycle"], d["region"], d["version"], d["revision"]) == (1160, 2, 3, 6, 1)
    assert atl06sr.parse_granule_name("not_a_granule.h5") is None
