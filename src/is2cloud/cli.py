"""Command line: ``is2cloud serve | sample-data | search | index | bench``."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
WRITTEN: list[str] = []  # what the running command has written (for the message on Ctrl-C)


class UsageError(ValueError):
    """An argument that cannot be used; the message names the option and what to give instead."""


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

        cycles = _cycles(args.cycles) if args.cycles else None
        archive = sample_data(args.aoi, args.product, cycles=cycles, out_dir=args.out, seed=settings.seed,
                              progress=True)
    else:
        from is2cloud.granules import publish_archive

        archive = publish_archive(args.preset, cache_dir=settings.cache_dir, force=args.force, progress=True)
    print(f"{archive} ready in {time.perf_counter() - t0:.1f} s")
    return 0


def _cycles(text: str) -> list[int]:
    try:
        cycles = [int(c) for c in text.split(",")]
    except ValueError:
        raise UsageError(f"--cycles {text!r}: give comma-separated cycle numbers, e.g. --cycles 3,6") from None
    if any(c < 1 for c in cycles):
        raise UsageError(f"--cycles {text!r}: cycle numbers start at 1")
    return cycles


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


def _credentials(purpose: str) -> Any:
    """The credentials the notebooks use (``get_credentials``): ``read`` the archive, ``write`` the outputs."""
    from is2cloud.access import get_credentials

    return get_credentials(purpose)  # type: ignore[arg-type]


def _check_output(location: str, *, overwrite: bool, flag: str = "--out") -> None:
    """Fail before any work when ``location`` cannot be written: an existing file without ``--overwrite``,
    a parent that is a file or not writable, an S3 bucket that is missing or refuses writes."""
    if location.startswith("s3://"):
        _check_s3_output(location, overwrite=overwrite, flag=flag)
        return
    import os

    path = Path(location).expanduser().absolute()
    if path.is_dir():
        raise UsageError(f"{flag} {location}: it is a directory; give a file name")
    if path.exists() and not overwrite:
        raise UsageError(f"{flag} {location} exists; give --overwrite to replace it, or another name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {location}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {location}: cannot write in {parent} (permission denied)")


def _check_s3_output(url: str, *, overwrite: bool, flag: str) -> None:
    """The bucket exists and these credentials may write the key (a multipart upload started and aborted:
    it needs the same permission as a PUT and leaves no object)."""
    from botocore.exceptions import ClientError

    from is2cloud.geoparquet import refuse_archive_bucket
    from is2cloud.methods.ranges import split_url

    bucket, key = split_url(url)
    if not key or key.endswith("/"):
        raise UsageError(f"{flag} {url}: give an object URL, s3://bucket/name.parquet")
    refuse_archive_bucket(url, flag)
    s3 = _credentials("write").boto3_client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        what = "does not exist" if code in ("404", "NoSuchBucket") else f"cannot be reached ({code})"
        raise UsageError(f"{flag} {url}: the bucket {bucket} {what}") from None
    if not overwrite:
        try:
            s3.head_object(Bucket=bucket, Key=key)
            exists = True
        except ClientError:
            exists = False
        if exists:
            raise UsageError(f"{flag} {url} exists; give --overwrite to replace it, or another name")
    try:
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise UsageError(f"{flag} {url}: these credentials may not write to the bucket {bucket} ({code})") from None


def _check_variables(granule: Any, product: str, variables: list[str]) -> None:
    """Every variable is in the first granule (its HDF5 metadata only), before the granules are read in parallel."""
    import h5py

    from is2cloud.methods import chunkindex
    from is2cloud.methods.baseline import granule_source, open_granule
    from is2cloud.methods.schema import TRACK_IDS

    source = granule_source(granule)
    group_name = chunkindex.GROUPS[product]
    creds = _credentials("read") if source.url.startswith("s3://") else None
    with open_granule(source, credentials=creds) as fh, h5py.File(fh, "r") as h5:
        for beam in TRACK_IDS:
            group = h5.get(f"{beam}/{group_name}")
            if isinstance(group, h5py.Group):
                missing = [v for v in variables if not isinstance(group.get(v.strip("/")), h5py.Dataset)]
                if missing:
                    raise UsageError(f"--variables: {', '.join(missing)} not in {source.name}: {beam}/{group_name} "
                                     "(checked on the first granule); name datasets below that group")
                return


_INDEX_SUFFIXES = (".parquet", ".geoparquet", ".pq")
_GRANULE_VERSION = re.compile(r"ATL\d{2}_\d{14}_\d{8}_(\d{3})_\d{2}")


def _index_file(location: str) -> Any:  # -> pyarrow.parquet.ParquetFile, or None when there is no file
    """The chunk index at ``location`` opened as Parquet (footer only), or None when nothing is there."""
    import pyarrow.parquet as pq

    try:
        if location.startswith("s3://"):
            fs = _credentials("write").fresh().pyarrow_fs()
            return pq.ParquetFile(fs.open_input_file(location.removeprefix("s3://")))
        return pq.ParquetFile(location) if Path(location).is_file() else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid (a thrift or magic-bytes error) is a ValueError
        raise UsageError(f"{location} is not a readable chunk index (a Parquet file written by `is2cloud index build`): "
                         f"{str(exc)[:200]}") from None


def _existing_product(location: str) -> str | None:
    """The product of the chunk index at ``location``, or None when there is none yet."""
    import json

    from is2cloud.methods import chunkindex

    pf = _index_file(location)
    if pf is None:
        return None
    raw = (pf.schema_arrow.metadata or {}).get(chunkindex.META_KEY.encode())
    if raw is None:
        raise UsageError(f"--out {location} exists and is not a chunk index; give another --out, or --overwrite")
    return str(json.loads(raw).get("product"))


def _index_versions(location: str) -> set[str]:
    """The versions (``006``) of the granules in the chunk index at ``location``, from its granule column."""
    pf = _index_file(location)
    if pf is None:
        raise UsageError(f"--index {location}: there is no chunk index there (build one with `is2cloud index build`)")
    names = pf.read(columns=["granule"]).column("granule").unique().to_pylist()
    return {m.group(1) for m in map(_GRANULE_VERSION.search, names) if m}


def _check_index_path(location: str) -> None:
    """A local ``--index`` is a file whose Parquet footer reads, before any work."""
    if location.startswith("s3://"):
        return
    if not Path(location).is_file():
        raise UsageError(f"--index: there is no chunk index at {location} (build one with `is2cloud index build`)")
    _index_file(location)


@command("index")
def cmd_index(args: argparse.Namespace) -> int:
    from is2cloud.methods import chunkindex

    variables = args.variables.split(",") if args.variables else None
    temporal = tuple(args.temporal.split(",")) if args.temporal else None
    if args.action == "build":
        return _index_build(args, variables, temporal)
    from is2cloud.geoparquet import write_geoparquet

    product = args.product.upper() if args.product else None
    index = args.index or chunkindex.default_index_url(product or "ATL06", args.version or "006")
    _check_index_path(index)
    if args.out:
        _check_output(args.out, overwrite=args.overwrite)
    if args.version:
        found = _index_versions(index)
        if found != {args.version}:
            raise UsageError(f"--version {args.version}: the chunk index {index} holds granules of version "
                             f"{', '.join(sorted(found)) or 'none'}; query an index of version {args.version}")
    source: Any = index
    if not index.endswith(_INDEX_SUFFIXES):  # subset() takes other names for granules: hand it the index itself
        source = chunkindex.read_index(index, credentials=_credentials("write") if index.startswith("s3://") else None)
    gdf = chunkindex.subset(source, args.aoi, variables, product=product, temporal=temporal, verify=args.verify)
    summary = gdf.attrs.get("chunkindex", {})
    steps = ", ".join(f"{k} {summary[k]}" for k in ("index", "bbox", "time", "h3", "footprint") if k in summary)
    print(f"{len(gdf)} rows from {summary.get('granules', 0)} granules; windows left after each step: {steps}; "
          f"{summary.get('ranges', 0)} byte ranges, {summary.get('range_bytes', 0) / 1e6:.2f} MB")
    if not len(gdf):
        print("note: no rows matched: the AOI is inside the index, but no track of its granules crosses it"
              + ("; the file written holds the columns and no rows" if args.out else ""))
    if args.out:
        creds = _credentials("write") if args.out.startswith("s3://") else None
        written = write_geoparquet(gdf, args.out, credentials=creds)
        WRITTEN.append(written)
        print(f"written to {written}{_ephemeral_note(args.out)}")
    return 0


def _index_build(args: argparse.Namespace, variables: list[str] | None, temporal: tuple[str, ...] | None) -> int:
    import importlib

    from is2cloud.catalog import find_granules
    from is2cloud.methods import chunkindex
    from is2cloud.parallel import get_client

    product = (args.product or "ATL06").upper()
    version = args.version or "006"
    out = args.out or chunkindex.default_index_url(product, version)
    _check_output(out, overwrite=True)  # an existing index is appended to (or replaced with --overwrite)
    if not args.overwrite:
        existing = _existing_product(out)
        if existing and existing != product:
            raise UsageError(f"--out {out} indexes {existing} granules, not {product}: an index holds one product; "
                             "give another --out, or --overwrite to start a new index there")
    granules = find_granules(args.aoi, product, version, temporal=temporal)
    if variables:
        _check_variables(granules[0], product, variables)
    client = get_client()
    client.run(importlib.import_module, "is2cloud.methods.chunkindex")  # worker start-up is not build time
    idx = chunkindex.build(granules, out, product=product, variables=variables, client=client,
                           mode="overwrite" if args.overwrite else "append", progress=False)
    WRITTEN.append(str(out))
    st = idx.stats
    print(f"{idx}\n  {st['added']} granules added, {len(st['replaced'])} re-indexed (changed), "
          f"{st['unchanged']} unchanged; read {st['bytes_read'] / 1e6:.1f} MB in {st['gets']} GETs; "
          f"{st['seconds']:.1f} s ({st['seconds'] / max(1, st['granules']):.2f} s per granule); "
          f"index {st.get('nbytes', 0) / 1e6:.3f} MB at {idx.location}{_ephemeral_note(str(out))}")
    return 0


# -- repack (cloud-optimized copies, notebook 06) ------------------------------------------------


@command("repack")
def cmd_repack(args: argparse.Namespace) -> int:
    from is2cloud import repack

    progress = False if args.quiet else None
    if args.tool == "h5repack":
        if args.chunk_rows:
            raise ValueError("--chunk-rows needs --tool h5py (h5repack's published command does not rechunk)")
        report = repack.run_h5repack(args.src, args.dst, page_size=args.page_size)
    else:
        report = repack.repack(args.src, args.dst, page_size=args.page_size, chunk_rows=args.chunk_rows,
                               progress=progress)
    print(report)
    if args.summary:
        print(repack.layout_summary(args.src))
        print(repack.layout_summary(args.dst))
    return 0


# -- bench ---------------------------------------------------------------------------------------


@command("bench")
def cmd_bench(args: argparse.Namespace) -> int:
    import pandas as pd

    from is2cloud.bench import SUITES, results_path, run_suites, summary_table
    from is2cloud.settings import SCALES, get_profile

    suites = list(SUITES) if args.suite == "all" else args.suite.split(",")
    scales = args.scale.split(",")
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise UsageError(f"--suite: unknown suite(s) {', '.join(unknown)}; choose all or from {', '.join(SUITES)}")
    bad = [s for s in scales if s not in SCALES]
    if bad:
        raise UsageError(f"--scale: unknown scale(s) {', '.join(bad)}; choose from {', '.join(SCALES)}")
    get_profile(args.profile)
    out = Path(args.out) if args.out else results_path().with_name("bench.csv")
    if args.out:  # the default CSV is the bench's own and starts afresh; a file the user names is kept
        _check_output(args.out, overwrite=args.overwrite or args.append)
    if out.exists() and not args.append:
        out.unlink()
    WRITTEN.append(str(out))
    pairs = [(scale, suite) for scale in scales for suite in suites]
    if len(pairs) > 1:
        # Each suite in a process of its own: what one suite's process kept (heap, caches, imports) counted in
        # the next one's peak memory (a baseline run after the repacked suite peaked ~400 MB higher).
        import subprocess

        for scale, suite in pairs:
            code = subprocess.call([sys.executable, "-m", "is2cloud.cli", "bench", "--suite", suite, "--scale", scale,
                                    "--profile", args.profile, "--out", str(out), "--append"])
            if code:
                return code  # the suite's process said why
        print(f"\nwritten to {out}")
        return 0
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


def _suites() -> list[str]:
    from is2cloud.bench import SUITES

    return list(SUITES)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="is2cloud", description="ICESat-2 in the Cloud: helper commands")
    ap.add_argument("--traceback", action="store_true", help="on an error, print the Python traceback too")
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the embedded local cloud until Ctrl-C")
    s.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (0: a free port)")
    s.add_argument("--profile", default=None, help="network profile: none, in-region, remote")
    s.add_argument("--preset", default="book", help="archive to serve: test, book, bench or none")
    s.add_argument("--fault-rate", type=_fraction, default=0.0, help="fraction of GETs that fail (503/500/reset), 0..1")

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
    s.add_argument("--product", default=None, help="ATL06 or ATL03 (build: default ATL06; query: the index must "
                   "hold it)")
    s.add_argument("--version", default=None, help="build: default 006; query: the index must hold it")
    s.add_argument("--temporal", default=None, help="start,end (ISO dates)")
    s.add_argument("--variables", default=None, help="comma-separated variables below the indexed group")
    s.add_argument("--index", default=None, help="query: the index (local path or s3:// URL; default: the "
                   "collection's index in the output bucket)")
    s.add_argument("--out", default=None, help="build: where to write the index (default: the output bucket); "
                   "query: GeoParquet to write the rows to (local path or s3:// URL)")
    s.add_argument("--overwrite", action="store_true", help="build: start a new index instead of appending; "
                   "query: replace an existing --out")
    s.add_argument("--verify", default="touched", choices=["touched", "all"],
                   help="query: check the objects read (touched) or HEAD every granule of the index (all)")
    s = sub.add_parser("repack", help="write a cloud-optimized (paged, optionally rechunked) copy of a granule")
    s.add_argument("src", help="the granule (a local path; for S3 use is2cloud.repack.repack_to_s3)")
    s.add_argument("dst", help="the copy (a local path, written atomically)")
    s.add_argument("--page-size", type=int, default=8_000_000, help="file-space page size in bytes (default 8000000)")
    s.add_argument("--chunk-rows", type=int, default=None, help="rechunk the record datasets to this many rows")
    s.add_argument("--tool", default="h5py", choices=["h5py", "h5repack"],
                   help="h5py (default) or the h5repack command (`h5repack -S PAGE -G <page> -P 1`)")
    s.add_argument("--summary", action="store_true", help="print the layout of the granule and of the copy")
    s.add_argument("--quiet", action="store_true", help="no progress")
    s = sub.add_parser("bench", help="performance figures (results/bench.csv)")
    s.add_argument("--suite", default="all", help="all, or a comma-separated list of: " + ", ".join(_suites()))
    s.add_argument("--scale", default="book,bench", help="comma-separated scales: test, book, bench")
    s.add_argument("--profile", default="in-region", help="network profile of the local cloud")
    s.add_argument("--out", default=None, help="CSV to write (default results/bench.csv, replaced on each run)")
    s.add_argument("--append", action="store_true", help="append to the CSV instead of starting a new one")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return ap


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port; give 1..65535, or 0 for a free port")
    return port


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not a fraction of requests; give 0..1 (0.05: 5%)")
    return value


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    prefix = f"is2cloud {args.command}"
    warnings.showwarning = lambda message, category, *_a, **_k: print(f"{prefix}: warning: {message}",
                                                                      file=sys.stderr)
    WRITTEN.clear()
    try:
        from is2cloud.settings import get_settings

        get_settings()  # the environment (IS2CLOUD_*) is checked before anything starts
        return COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError) as exc:
        if args.traceback:
            import traceback

            traceback.print_exc()
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        written = [w for w in WRITTEN if w.startswith("s3://") or Path(w).exists()]
        done = f"; already written: {', '.join(written)}" if written else "; nothing was written"
        print(f"{prefix}: interrupted{done}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
