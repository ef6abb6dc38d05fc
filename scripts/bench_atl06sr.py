"""Throughput of the local ATL06-SR engine (photons per second on one core).

    .venv/bin/python scripts/bench_atl06sr.py                 # strong + weak beam, in memory and via HDF5
    .venv/bin/python scripts/bench_atl06sr.py --pulses 400000 --repeat 5

The synthetic beams are built here (not with the granule generator):

- pulses every 0.7 m;
- Poisson(3) surface photons per pulse on a strong beam (0.75 on a weak beam), on a sloped surface with
  10 cm noise;
- Poisson(bg) background photons per pulse, spread uniformly over a 200 m telemetry window;
- ATL03-like signal_conf_ph: surface photons 2..4, background 0 (1 within 10 m of the surface, and a few
  false "low" detections);
- 20 m segments and a 200 Hz background-rate table.

The timings cover the engine end to end: selection, extents, fit and output columns (``fit_beam``). With
``--hdf5``, the figure also includes reading from a local gzip-compressed HDF5 file and building the
GeoDataFrame (``process_granule``). BLAS/OpenMP threads are pinned to 1, so the figure is per core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from is2cloud import atl06sr  # noqa: E402

WINDOW = 200.0  # m, background telemetry window
C2 = atl06sr.SPEED_OF_LIGHT / 2.0


def synthetic_beam(
    n_pulses: int, signal: float, background: float, seed: int = 0, beam: str = "gt1l"
) -> atl06sr.Atl03Beam:
    """A beam of ATL03-like photons over a sloped, gently undulating surface."""
    rng = np.random.default_rng(seed)
    x0 = 2_000_000.0
    xp = x0 + 0.7 * np.arange(n_pulses)
    n_sig = rng.poisson(signal, n_pulses)
    n_bg = rng.poisson(background, n_pulses)
    per_pulse = n_sig + n_bg
    pulse = np.repeat(np.arange(n_pulses), per_pulse)
    within = np.arange(pulse.size) - np.repeat(np.cumsum(per_pulse) - per_pulse, per_pulse)
    is_sig = within < np.repeat(n_sig, per_pulse)
    x = xp[pulse] + rng.normal(0.0, 0.05, pulse.size)
    surface = 1500.0 + 0.02 * (x - x0) + 5.0 * np.sin((x - x0) / 3000.0)
    h = np.where(is_sig, surface + rng.normal(0.0, 0.10, pulse.size), surface + rng.uniform(-WINDOW / 2, WINDOW / 2, pulse.size))
    conf = np.where(is_sig, rng.choice([2, 3, 4], pulse.size, p=[0.05, 0.15, 0.80]), 0)
    near = ~is_sig & (np.abs(h - surface) < 10.0)
    conf = np.where(near, 1, conf)
    false_low = ~is_sig & (rng.random(pulse.size) < 0.02)
    conf = np.where(false_low, 2, conf).astype(np.int8)
    conf5 = np.repeat(conf[:, None], 5, axis=1)
    conf5[:, 1] = -1  # ocean not considered
    n_seg = int(np.ceil((xp[-1] + 1.0 - x0) / 20.0)) + 1
    sdx = x0 + 20.0 * np.arange(n_seg)
    seg = np.searchsorted(sdx, xp[pulse], side="right") - 1  # by pulse, so photons stay in time order
    t0 = 40_000_000.0
    v = 7000.0
    dt = t0 + (xp[pulse] - x0) / v
    n = x.size
    bck_t = t0 - 1.0 + 0.005 * np.arange(int((xp[-1] - x0) / v / 0.005) + 400)
    return atl06sr.Atl03Beam(
        beam=beam,
        delta_time=dt,
        lat_ph=60.0 + (x - x0) * 9e-6,
        lon_ph=-45.0 + (x - x0) * 1e-6,
        h_ph=h.astype(np.float32),
        dist_ph_along=(x - sdx[seg]).astype(np.float32),
        dist_ph_across=rng.normal(0.0, 2.0, n).astype(np.float32),
        signal_conf_ph=conf5,
        quality_ph=np.zeros(n, np.int8),
        segment_id=(1_000_000 + np.arange(n_seg)).astype(np.int32),
        segment_dist_x=sdx,
        segment_ph_cnt=np.bincount(seg, minlength=n_seg).astype(np.int32),
        segment_delta_time=t0 + (sdx - x0) / v,
        velocity_sc=np.tile(np.array([7000.0, 2000.0, 2000.0], np.float32), (n_seg, 1)),
        bckgrd_delta_time=bck_t,
        bckgrd_rate=np.full(bck_t.size, background / WINDOW * C2, np.float32),
    )


def write_granule(path: str, beams: list[atl06sr.Atl03Beam]) -> None:
    """Write beams into an ATL03-shaped HDF5 file (gzip 6, 10,000-element chunks)."""
    import h5py

    kw = dict(compression="gzip", compression_opts=6, shuffle=False)
    with h5py.File(path, "w") as f:
        f["orbit_info/sc_orient"] = np.array([0], np.int8)
        f["orbit_info/rgt"] = np.array([1160], np.int16)
        f["orbit_info/cycle_number"] = np.array([2], np.int8)
        for b in beams:
            hp, gp = f"{b.beam}/heights", f"{b.beam}/geolocation"
            for name in ("delta_time", "lat_ph", "lon_ph", "h_ph", "dist_ph_along", "dist_ph_across", "quality_ph"):
                a = getattr(b, name)
                f.create_dataset(f"{hp}/{name}", data=a, chunks=(10000,), maxshape=(None,), **kw)
            f.create_dataset(f"{hp}/signal_conf_ph", data=b.signal_conf_ph, chunks=(10000, 5), maxshape=(None, 5), **kw)
            cnt = b.segment_ph_cnt
            beg = np.where(cnt > 0, np.cumsum(cnt) - cnt + 1, 0)
            segs = dict(
                segment_id=b.segment_id, segment_dist_x=b.segment_dist_x, segment_ph_cnt=cnt, ph_index_beg=beg,
                delta_time=b.segment_delta_time, reference_photon_lat=np.full(cnt.size, 60.0),
                reference_photon_lon=np.full(cnt.size, -45.0),
            )  # fmt: skip
            for name, a in segs.items():
                f.create_dataset(f"{gp}/{name}", data=a, chunks=(min(10000, a.size),), **kw)
            f.create_dataset(f"{gp}/velocity_sc", data=b.velocity_sc, chunks=(min(10000, cnt.size), 3), **kw)
            f[f"{b.beam}/bckgrd_atlas/delta_time"] = b.bckgrd_delta_time
            f[f"{b.beam}/bckgrd_atlas/bckgrd_rate"] = b.bckgrd_rate


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pulses", type=int, default=250_000, help="pulses per beam (0.7 m apart)")
    ap.add_argument("--background", type=float, default=1.0, help="background photons per pulse")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cnf", type=int, default=None, help="cnf level (default: the server default [2, 3, 4])")
    ap.add_argument("--no-hdf5", action="store_true", help="skip the read-from-HDF5 measurement")
    args = ap.parse_args()

    info = atl06sr.GranuleInfo(rgt=1160, cycle=2, region=3, sc_orient=0, version=6)
    request = {} if args.cnf is None else {"cnf": args.cnf}
    parms = atl06sr.parse_parms(request)
    beams = [
        synthetic_beam(args.pulses, 3.0, args.background, seed=1, beam="gt1l"),
        synthetic_beam(args.pulses, 0.75, args.background / 2, seed=2, beam="gt1r"),
    ]
    total = 0
    total_t = 0.0
    for b in beams:
        n = b.h_ph.size
        rows = len(atl06sr.fit_beam(b, parms, info)["h_mean"])
        t = best_of(lambda b=b: atl06sr.fit_beam(b, parms, info), args.repeat)
        total, total_t = total + n, total_t + t
        print(f"{b.beam}: {n:>9,d} photons -> {rows:>6,d} rows in {t:6.3f} s = {n / t / 1e6:5.2f} M photons/s")
    print(f"engine (selection + extents + fit + columns): {total / total_t / 1e6:.2f} M photons/s/core")

    if not args.no_hdf5:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "ATL03_20190301010101_11600203_006_01.h5")
            write_granule(path, beams)
            p = {**request, "beams": [b.beam for b in beams]}
            t = best_of(lambda: atl06sr.process_granule(path, p), args.repeat)
            rows = len(atl06sr.process_granule(path, p))
            print(
                f"process_granule (HDF5 gzip read + engine + GeoDataFrame): {total:,d} photons -> {rows:,d} rows "
                f"in {t:.3f} s = {total / t / 1e6:.2f} M photons/s/core"
            )


if __name__ == "__main__":
    main()
