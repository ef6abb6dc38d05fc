"""Command line: ``is2cloud serve | sample-data | search | index | bench``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return deco


# -- serve ---------------------------------------------------------------------------------------


@command("serve")
def cmd_serve(args: argparse.Namespace) -> int:
    from is2cloud.localcloud import LocalCloud
    from is2cloud.settings import get_profile, get_settings

    settings = get_settings()
    profile = get_profile(args.profile or settings.profile)
    archive = None
    if args.preset != "none":
        from is2cloud.granules import publish_archive

        archive = publish_archive(args.preset, cache_dir=settings.cache_dir).root
    cloud = LocalCloud(profile=profile.name, archive=archive, port=args.port, seed=settings.seed,
                       fault_rate=args.fault_rate).start()
    host_port = cloud.endpoint.removeprefix("http://")
    print(f"""is2cloud local cloud (moto S3 + STS) on loopback
  endpoint  {cloud.endpoint}
  region    {cloud.region}
  profile   {profile.name}: {profile.description}
  buckets   {cloud.archive_bucket} (read-only archive, {getattr(cloud, 'archive_objects', 0)} objects), {', '.join(cloud.buckets)}
  data      synthetic ICESat-2 granules ({args.preset} preset), not NASA data

Point a notebook or script at it:
  export IS2CLOUD_ENDPOINT={cloud.endpoint}
  python -c 'from is2cloud.access import get_credentials; c = get_credentials(); print(c)'

Then hand the credentials to a client (the adapters fill in endpoint, region and keys):
  boto3    creds.boto3_client("s3")    boto3.client("s3", endpoint_url="{cloud.endpoint}", region_name="{cloud.region}", ...)
  s3fs     creds.s3fs()                s3fs.S3FileSystem(endpoint_url="{cloud.endpoint}", key=..., secret=..., token=...)
  obstore  creds.obstore(bucket)       S3Store(bucket, endpoint="{cloud.endpoint}", client_options={{"allow_http": True}}, ...)
  pyarrow  creds.pyarrow_fs()          pyarrow.fs.S3FileSystem(endpoint_override="{host_port}", scheme="http", ...)
  GDAL     creds.gdal_env()            AWS_S3_ENDPOINT={host_port} AWS_HTTPS=NO AWS_VIRTUAL_HOSTING=FALSE + AWS_* keys
The embedded STS issues the keys (web identity, as on CryoCloud); they are never printed here.

Press Ctrl-C to stop.""", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):
        if not cloud.running:
            print("the local cloud stopped unexpectedly", file=sys.stderr)
            return 1
    cloud.stop()
    print("stopped.")
    return 0


# -- sample-data ---------------------------------------------------------------------------------


@command("sample-data")
def cmd_sample_data(args: argparse.Namespace) -> int:
    import time

    from is2cloud.settings import get_settings

    settings = get_settings()
    t0 = time.perf_counter()
    if args.aoi:
        from is2cloud.granules import sample_data

        cycles = [int(c) for c in args.cycles.split(",")] if args.cycles else None
        archive = sample_data(args.aoi, args.product, cycles=cycles, out_dir=args.out, seed=settings.seed,
                              progress=True)
    else:
        from is2cloud.granules import publish_archive

        archive = publish_archive(args.preset, cache_dir=settings.cache_dir, force=args.force, progress=True)
    print(f"{archive} ready in {time.perf_counter() - t0:.1f} s")
    return 0


# -- search --------------------------------------------------------------------------------------


@command("search")
def cmd_search(args: argparse.Namespace) -> int:
    from is2cloud.catalog import find_granules

    temporal = tuple(args.temporal.split(",")) if args.temporal else None
    granules = find_granules(args.aoi, args.product, args.version, temporal=temporal)
    total = 0.0
    for g in granules:
        size = float(g.size)
        total += size
        print(f"{g['umm']['GranuleUR']}  {size:8.1f} MB  {g.data_links(access='direct')[0]}")
    print(f"{len(granules)} granules, {total:.1f} MB")
    return 0


# -- index (the chunk index of notebook 07) ------------------------------------------------------


def _ephemeral_note(location: str) -> str:
    """A hint when an s3:// index lives in a local cloud that stops with this command."""
    from is2cloud.settings import get_settings

    settings = get_settings()
    if settings.mode == "local" and not settings.endpoint and location.startswith("s3://"):
        return ("\nnote: this command started its own local cloud, which stops with it; to keep the index run "
                "`is2cloud serve` and export IS2CLOUD_ENDPOINT, or pass --out a local path")
    return ""


@command("index")
def cmd_index(args: argparse.Namespace) -> int:
    from is2cloud.methods import chunkindex

    variables = args.variables.split(",") if args.variables else None
    temporal = tuple(args.temporal.split(",")) if args.temporal else None
    if args.action == "build":
        import importlib

        from is2cloud.catalog import find_granules
        from is2cloud.parallel import get_client

        granules = find_granules(args.aoi, args.product, args.version, temporal=temporal)
        out = args.out or chunkindex.default_index_url(args.product, args.version)
        client = get_client()
        client.run(importlib.import_module, "is2cloud.methods.chunkindex")  # worker start-up is not build time
        idx = chunkindex.build(granules, out, product=args.product, variables=variables, client=client,
                               mode="overwrite" if args.overwrite else "append", progress=False)
        st = idx.stats
        print(f"{idx}\n  {st['added']} granules added, {len(st['replaced'])} re-indexed (changed), "
              f"{st['unchanged']} unchanged; read {st['bytes_read'] / 1e6:.1f} MB in {st['gets']} GETs; "
              f"{st['seconds']:.1f} s ({st['seconds'] / max(1, st['granules']):.2f} s per granule); "
              f"index {st.get('nbytes', 0) / 1e6:.3f} MB at {idx.location}{_ephemeral_note(str(out))}")
        return 0
    from is2cloud.geoparquet import write_geoparquet

    index = args.index or chunkindex.default_index_url(args.product, args.version)
    gdf = chunkindex.subset(index, args.aoi, variables, temporal=temporal, verify=args.verify)
    summary = gdf.attrs.get("chunkindex", {})
    steps = ", ".join(f"{k} {summary[k]}" for k in ("index", "bbox", "time", "h3", "footprint") if k in summary)
    print(f"{len(gdf)} rows from {summary.get('granules', 0)} granules; windows left after each step: {steps}; "
          f"{summary.get('ranges', 0)} byte ranges, {summary.get('range_bytes', 0) / 1e6:.2f} MB")
    if args.out:
        print(f"written to {write_geoparquet(gdf, args.out)}")
    return 0


# -- bench ---------------------------------------------------------------------------------------


@command("bench")
def cmd_bench(args: argparse.Namespace) -> int:
    import pandas as pd

    from is2cloud.bench import SUITES, results_path, run_suites, summary_table

    suites = list(SUITES) if args.suite == "all" else args.suite.split(",")
    scales = args.scale.split(",")
    out = Path(args.out) if args.out else results_path().with_name("bench.csv")
    if out.exists() and not args.append:
        out.unlink()
    measurements = run_suites(suites, scales, profile=args.profile, results=out)
    table = summary_table(measurements)
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.drop(columns=["notes"]).to_string(index=False))
    for m in measurements:
        if m.notes:
            print(f"  {m.scale} {m.name}: {m.notes}")
    print(f"\nwritten to {out}")
    return 0


# -- entry point ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="is2cloud", description="ICESat-2 in the Cloud: helper commands")
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the embedded local cloud until Ctrl-C")
    s.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free port)")
    s.add_argument("--profile", default=None, help="network profile: none, in-region, remote")
    s.add_argument("--preset", default="book", help="archive to serve: test, book, bench or none")
    s.add_argument("--fault-rate", type=float, default=0.0, help="fraction of GETs that fail (503/500/reset)")

    s = sub.add_parser("sample-data", help="generate and cache a synthetic archive")
    s.add_argument("--preset", default="book", help="test, book or bench")
    s.add_argument("--aoi", type=Path, default=None, help="GeoJSON AOI (instead of a preset)")
    s.add_argument("--product", default="ATL06", help="ATL06 or ATL03 (with --aoi)")
    s.add_argument("--cycles", default=None, help="comma-separated cycles (with --aoi)")
    s.add_argument("--out", type=Path, default=None, help="output folder (with --aoi)")
    s.add_argument("--force", action="store_true", help="regenerate even if cached")

    s = sub.add_parser("search", help="find granules for an AOI")
    s.add_argument("--aoi", type=Path, required=True)
    s.add_argument("--product", default="ATL06")
    s.add_argument("--version", default="006")
    s.add_argument("--temporal", default=None, help="start,end (ISO dates)")
    s = sub.add_parser("index", help="build or query the chunk index of a collection (notebook 07)")
    s.add_argument("action", choices=["build", "query"])
    s.add_argument("--aoi", type=Path, required=True, help="GeoJSON AOI: granules to index, or the area to query")
    s.add_argument("--product", default="ATL06", help="ATL06 or ATL03")
    s.add_argument("--version", default="006")
    s.add_argument("--temporal", default=None, help="start,end (ISO dates)")
    s.add_argument("--variables", default=None, help="comma-separated variables below the indexed group")
    s.add_argument("--index", default=None, help="query: the index (local path or s3:// URL; default: the "
                   "collection's index in the output bucket)")
    s.add_argument("--out", default=None, help="build: where to write the index (default: the output bucket); "
                   "query: GeoParquet to write the rows to (local path or s3:// URL)")
    s.add_argument("--overwrite", action="store_true", help="build: start a new index instead of appending")
    s.add_argument("--verify", default="touched", choices=["touched", "all"],
                   help="query: check the objects read (touched) or HEAD every granule of the index (all)")
    s = sub.add_parser("bench", help="performance figures (results/bench.csv)")
    s.add_argument("--suite", default="all", help="all, or a comma-separated list of: atl06sr, baseline, virtual, kerchunk, chunkindex")
    s.add_argument("--scale", default="book,bench", help="comma-separated scales: test, book, bench")
    s.add_argument("--profile", default="in-region", help="network profile of the local cloud")
    s.add_argument("--out", default=None, help="CSV to write (default results/bench.csv)")
    s.add_argument("--append", action="store_true", help="append to the CSV instead of starting a new one")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"is2cloud {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
