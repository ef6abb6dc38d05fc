"""The chunk index benchmark: build the index, then subset with the tuned baseline and the chunk index
and compare (speed, bytes, GETs, index size)."""

from __future__ import annotations

import os
from typing import Any

from is2cloud.methods.chunkindex.builder import prepare
from is2cloud.methods.chunkindex.query import subset
from is2cloud.methods.ranges import split_url
from is2cloud.parallel import close_client


def _warm_worker() -> None:
    """Import the readers in a worker (outside the measurement)."""
    import h3  # noqa: F401
    import obstore  # noqa: F401

    import is2cloud.methods.chunkindex.query  # noqa: F401


def benchmark(scale: str, cloud: Any, *, aoi: Any = None, profile: str = "in-region", client: Any = None,
              repeat: int = 1, results: str | os.PathLike[str] | None = None,
              index_url: str | None = None) -> list:  # -> list[bench.Measurement]
    """Measure, in one run at ``scale`` on the Greenland AOI (``profile`` network model):

    1. ``chunk index build``: indexing every ATL06 granule of the AOI (written to ``index_url``, default
       ``s3://<output bucket>/bench/chunk-index-<scale>.parquet``);
    2. ``baseline (tuned) -> GeoParquet`` and 3. ``chunk index -> GeoParquet``: the subset written as
       GeoParquet to the output bucket, each ``repeat`` times, rows checked identical.

    Each records wall/CPU/memory, GETs and bytes from the ledger and ``physical_bytes`` (the compressed
    bytes of the chunks of the requested variables that hold a row inside the AOI); the notes of the
    chunk index measurement compare it with the targets (speed-up over the tuned baseline, bytes / physical
    limit, GETs / chunk ranges + index reads, index size / archive, build seconds per granule).
    ``cloud`` must serve the ``scale`` archive; its profile is restored afterwards. The query runs in
    this process, so when ``client`` is the shared local cluster (the default) the cluster is closed while
    the query is measured (its idle workers are not the query's memory) and reopened for the next repeat.
    """
    from is2cloud.bench import Stash, measure
    from is2cloud.geoparquet import write_geoparquet
    from is2cloud.methods import baseline
    from is2cloud.methods.identity import assert_same_rows
    from is2cloud.settings import get_settings

    scene = baseline.bench_scene(scale, cloud, aoi=aoi, repeat=repeat, client=client)
    area, granules, credentials, limit, client = (scene.area, scene.granules, scene.credentials, scene.limit,
                                                  scene.client)
    if not isinstance(client, str):
        client.run(_warm_worker)
    # The query runs in this process (no Dask): the shared cluster the build and the baseline use is closed
    # while it is measured, so its idle workers do not count in the query's memory; reopened for a repeat.
    bucket = cloud.buckets[0] if getattr(cloud, "buckets", None) else get_settings().output_bucket
    index_url = index_url or f"s3://{bucket}/bench/chunk-index-{scale}.parquet"
    archive_bytes = sum(int(g["umm"]["DataGranule"]["ArchiveAndDistributionInformation"][0]["SizeInBytes"])
                        for g in granules)
    before = cloud.profile_name
    cloud.set_profile(profile)
    label = f"synthetic ATL06 v006, AOI {area.name}, {len(granules)} granules"
    out: list[Any] = []
    frames = Stash()  # the frames compared at the end, on disk meanwhile
    try:
        with measure("chunk index build", method="chunkindex", cloud=cloud, scale=scale, results=results,
                     notes=label, granules=len(granules)) as mb:
            idx = prepare(granules, out=index_url, mode="overwrite", credentials=credentials,
                          out_credentials=credentials, client=client)
            mb.rows = len(idx)
        nbytes, windows = int(idx.stats["nbytes"]), len(idx)
        del idx  # the index in memory: the queries below read the file, as a user's would
        mb.notes = (f"{label}; index {nbytes / 1e6:.2f} MB = {100 * nbytes / archive_bytes:.3f}% of the "
                    f"{archive_bytes / 1e9:.2f} GB archive; {mb.wall_s / len(granules):.2f} s per granule; "
                    f"{windows} windows")
        out.append(mb)
        for i in range(repeat):
            run = f"run {i + 1}/{repeat}"
            baseline.fresh_workers(scene)  # not the build's workers, nor closed for the last query
            m0 = baseline.bench_tuned_run(scene, cloud, scale=scale, results=results, label=label, run=run,
                                          bucket=bucket)
            out.append(m0)
            if "baseline" not in frames:
                frames.put("baseline", m0.result)
            m0.result = None
            if scene.shared:
                close_client()
            seq = cloud.seq
            with measure("chunk index -> GeoParquet", method="chunkindex", cloud=cloud, scale=scale,
                         results=results, notes=f"{label}; {run}", granules=len(granules),
                         physical_bytes=limit.nbytes) as m1:
                m1.result = gdf = subset(index_url, area, credentials=credentials, out_credentials=credentials)
                write_geoparquet(gdf, f"s3://{bucket}/bench/chunkindex-{scale}.parquet", credentials=credentials)
            ledger = [r for r in cloud.ledger(seq) if r.verb == "GET" and r.key]
            index_gets = sum(1 for r in ledger if r.key == split_url(index_url)[1])
            summary = gdf.attrs.get("chunkindex", {})
            m1.notes = (f"{label}; {run}; {m0.wall_s / m1.wall_s:.1f}x faster than baseline (tuned); bytes "
                        f"{m1.bytes_ratio or float('nan'):.2f}x the physical limit (index reads included); "
                        f"{m1.gets} GETs = {summary.get('ranges')} chunk ranges (of {limit.chunks} chunks) + "
                        f"{index_gets} index reads; {summary.get('footprint')} windows")
            out.append(m1)
            if "chunkindex" not in frames:
                frames.put("chunkindex", gdf)
            m1.result = gdf = None
        assert_same_rows(frames.get("baseline"), frames.get("chunkindex"), names=("baseline (tuned)", "chunk index"))
    finally:
        cloud.set_profile(before)
        frames.close()
    return out
