"""A quicker kerchunk check than ``is2cloud bench --suite kerchunk`` (which translates all 28 granules and
the cost rows of two whole granules): in one run at book scale under ``in-region``, the preparation cost of
one ATL06 group (h5cloud's call, the whole object in one read, and the floor: the local copy, no network),
then the tuned baseline and the kerchunk subset on the first N Greenland granules, rows checked identical.

    IS2CLOUD_CACHE=/work/main/.cache .venv/bin/python scripts/bench_kerchunk_quick.py --granules 4 --repeat 2
"""

from __future__ import annotations

import argparse

from is2cloud.aoi import load_aoi
from is2cloud.bench import measure
from is2cloud.catalog import find_granules
from is2cloud.granules.archive import REPO_DATA, publish_archive
from is2cloud.localcloud import LocalCloud
from is2cloud.methods import baseline, kerchunk
from is2cloud.methods.identity import assert_same_rows
from is2cloud.settings import get_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--granules", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--group", default="gt1l", help="the group whose references are timed")
    args = ap.parse_args()
    settings = get_settings()
    archive = publish_archive("book", cache_dir=settings.cache_dir)
    area = load_aoi(REPO_DATA / "greenland_aoi.geojson")
    with LocalCloud(profile="in-region", archive=archive.root, seed=settings.seed) as cloud:
        granules = find_granules(area, "ATL06", archive=archive)[: args.granules]
        cred, bucket = cloud.credentials(), cloud.buckets[0]
        configs = [c for c in kerchunk.COST_CONFIGS if c[1] in ("h5cloud", "all")]
        costs = kerchunk.preparation_costs(granules[0], credentials=cred, cloud=cloud, scale="book",
                                           group=args.group, configs=configs, floor=True)
        for m in costs.attrs["measurements"]:
            print(f"{m.name}: wall {m.wall_s:.2f} s, CPU {m.cpu_s:.2f} s, {m.gets} GETs, "
                  f"{(m.get_bytes or 0) / 1e6:.1f} MB; {m.notes}", flush=True)
        limit = baseline.aoi_physical_limit(granules, area, credentials=cred)
        refs = kerchunk.prepare(granules, out=f"s3://{bucket}/quick/kerchunk", credentials=cred, out_credentials=cred,
                                client="sync", mode="overwrite")
        for i in range(args.repeat):  # the first run also warms the baseline's workers
            with measure("baseline (tuned)", method="baseline", cloud=cloud, scale="book", record=False) as m0:
                want = baseline.subset(granules, area, config="tuned", credentials=cred)
            with measure("kerchunk subset", method="kerchunk", cloud=cloud, scale="book", record=False) as m1:
                got = kerchunk.subset(refs, area, credentials=cred, out_credentials=cred)
            assert_same_rows(want, got, names=("baseline (tuned)", "kerchunk"))
            lazy = limit.nbytes + limit.coordinate_bytes
            print(f"run {i + 1}/{args.repeat}: {len(granules)} granules, {len(got):,} identical rows; baseline (tuned) "
                  f"{m0.wall_s:.2f} s (CPU {m0.cpu_s:.1f} s, {m0.gets} GETs, {(m0.get_bytes or 0) / 1e6:.1f} MB); kerchunk "
                  f"{m1.wall_s:.2f} s (CPU {m1.cpu_s:.1f} s, {m1.gets} GETs, {(m1.get_bytes or 0) / 1e6:.1f} MB = "
                  f"{(m1.get_bytes or 0) / lazy:.2f}x coordinates of the AOI's beams + physical limit): "
                  f"{m0.wall_s / m1.wall_s:.1f}x faster", flush=True)


if __name__ == "__main__":
    main()
