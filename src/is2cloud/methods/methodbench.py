"""The benchmark shared by the virtual methods (notebooks 04 and 05): in one run at a scale, measure the
prepare step, then the tuned baseline and the method's subset, each written as GeoParquet to the
output bucket, with identical rows asserted (:func:`run`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["run"]


def run(method: str, title: str, scale: str, cloud: Any, *, prepare: Callable[..., Any],
        subset: Callable[..., Any], aoi: Any = None, profile: str = "in-region", client: Any = None,
        repeat: int = 1, results: str | os.PathLike[str] | None = None,
        extra: Callable[[Any, Any], list] | None = None) -> list:  # -> list[bench.Measurement]
    """Measure ``<title> prepare`` (``prepare(granules, out=..., credentials=..., out_credentials=...,
    client=...)``),
    then ``repeat`` times ``baseline (tuned) -> GeoParquet`` and ``<title> -> GeoParquet``
    (``subset(prepared, area, credentials=..., out_credentials=...)``) on the Greenland AOI at ``scale``
    (``cloud`` serves that archive; its profile is set to ``profile`` and restored). ``extra(scene,
    prepared)`` may add measurements (e.g. kerchunk's preparation costs). The notes of the method's
    measurement give its speed-up over the tuned baseline, bytes over the physical limit, and how its
    bytes split between granule objects and the artefact.

    The frames compared at the end wait on disk (:class:`is2cloud.bench.Stash`), and the subset runs in
    this process, so when the client is the shared local cluster (the default) the cluster is closed while
    the subset is measured (its idle workers are not the method's memory); the tuned baseline runs on fresh
    workers (:func:`~is2cloud.methods.baseline.fresh_workers`), not on those the prepare step used."""
    from is2cloud.bench import Stash, append_result, measure
    from is2cloud.geoparquet import write_geoparquet
    from is2cloud.methods import baseline
    from is2cloud.methods.identity import assert_same_rows
    from is2cloud.methods.ranges import split_url
    from is2cloud.parallel import close_client
    from is2cloud.settings import get_settings

    scene = baseline.bench_scene(scale, cloud, aoi=aoi, repeat=repeat, client=client)
    area, granules, credentials, limit = scene.area, scene.granules, scene.credentials, scene.limit
    bucket = cloud.buckets[0] if getattr(cloud, "buckets", None) else get_settings().output_bucket
    location = f"s3://{bucket}/bench/{method}-{scale}"
    label = f"synthetic ATL06 v006, AOI {area.name}, {len(granules)} granules"
    before = cloud.profile_name
    cloud.set_profile(profile)
    out: list[Any] = []
    frames = Stash()
    try:
        with measure(f"{title} prepare", method=method, cloud=cloud, scale=scale, record=False, notes=label,
                     granules=len(granules)) as mp:
            prepared = prepare(granules, out=location, credentials=credentials, out_credentials=credentials,
                               client=scene.client)
        mp.notes = (f"{label}; artefact {prepared.nbytes / 1e6:.3f} MB; {mp.wall_s / len(granules):.2f} s per "
                    f"granule; {prepared.stats.get('gets')} GETs, {prepared.stats.get('bytes_read', 0) / 1e6:.2f} MB "
                    "read by the method")
        append_result(mp, results)  # recorded once its notes are complete
        out.append(mp)
        if extra is not None:
            out.extend(extra(scene, prepared))
        artefact_key = split_url(location)[1]
        for i in range(repeat):
            run_ = f"run {i + 1}/{repeat}"
            baseline.fresh_workers(scene)  # not the prepare's workers, nor closed for the last subset
            m0 = baseline.bench_tuned_run(scene, cloud, scale=scale, results=results, label=label, run=run_,
                                          bucket=bucket)
            out.append(m0)
            if "baseline" not in frames:
                frames.put("baseline", m0.result)
            m0.result = None
            if scene.shared:
                close_client()
            seq = cloud.seq
            with measure(f"{title} -> GeoParquet", method=method, cloud=cloud, scale=scale, record=False,
                         notes=f"{label}; {run_}", granules=len(granules), physical_bytes=limit.nbytes) as m1:
                m1.result = gdf = subset(prepared, area, credentials=credentials, out_credentials=credentials)
                write_geoparquet(gdf, f"s3://{bucket}/bench/{method}-{scale}.parquet", credentials=credentials)
            gets = [r for r in cloud.ledger(seq) if r.verb == "GET" and r.key]
            mine = [r for r in gets if r.key.startswith(artefact_key)]
            lazy = limit.nbytes + limit.coordinate_bytes
            m1.notes = (f"{label}; {run_}; {m0.wall_s / m1.wall_s:.1f}x faster than baseline (tuned); bytes "
                        f"{m1.bytes_ratio or float('nan'):.2f}x the physical limit, {(m1.get_bytes or 0) / lazy:.2f}x (the "
                        f"latitude/longitude chunks of the AOI's beams, {limit.coordinate_bytes / 1e6:.1f} MB, + the "
                        f"physical limit, {limit.nbytes / 1e6:.1f} MB); {len(gets) - len(mine)} granule "
                        f"GETs ({sum(r.bytes for r in gets if r not in mine) / 1e6:.2f} MB) + {len(mine)} artefact "
                        f"GETs ({sum(r.bytes for r in mine) / 1e6:.3f} MB)")
            append_result(m1, results)
            out.append(m1)
            if method not in frames:
                frames.put(method, gdf)
            m1.result = gdf = None
        assert_same_rows(frames.get("baseline"), frames.get(method), names=("baseline (tuned)", title))
    finally:
        cloud.set_profile(before)
        frames.close()
    return out
