"""Cloud-optimized copies (notebook 06): paged aggregation, rechunking, everything else identical."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from h5py import h5a, h5d, h5f, h5o

from is2cloud.geoparquet import OutputPathError
from is2cloud.repack import (
    DEFAULT_PAGE_SIZE,
    MIN_RECHUNK_ROWS,
    RepackError,
    auto_page_size,
    h5repack_command,
    layout_summary,
    repack,
    repack_to_s3,
    run_h5repack,
)
from is2cloud.settings import get_settings

SCALE_LINKS = ("DIMENSION_LIST", "REFERENCE_LIST")
needs_h5repack = pytest.mark.skipif(shutil.which("h5repack") is None,
                                    reason="h5repack is not installed (Debian hdf5-tools / conda-forge hdf5)")
needs_h5dump = pytest.mark.skipif(shutil.which("h5dump") is None,
                                  reason="h5dump is not installed (Debian hdf5-tools / conda-forge hdf5)")


def granule(archive, product: str) -> Path:
    key = next(k for k in archive.keys if f"/{product}/" in k)
    return archive.path_of(key)


@pytest.fixture(scope="module")
def copies(test_archive, tmp_path_factory):
    """One h5py copy per product at the published page size."""
    tmp = tmp_path_factory.mktemp("repack")
    out = {}
    for product in ("ATL03", "ATL06"):
        src = granule(test_archive, product)
        out[product] = (src, repack(src, tmp / f"{product}.h5"))
    return out


# -- comparing two files object by object ---------------------------------------------------------


def addresses(f: h5py.File) -> dict[int, str]:
    found: dict[int, str] = {}

    def visit(name: str, obj) -> None:  # returning a value would stop the visit
        found.setdefault(h5o.get_info(obj.id).addr, "/" + name)

    f.visititems(visit)
    return found


def raw_attr(obj, name: str):
    aid = h5a.open(obj.id, name.encode())
    return aid.get_type(), aid.get_space().shape, obj.attrs[name]


def assert_same_attrs(a, b, where: str) -> None:
    names_a = sorted(n for n in a.attrs if n not in SCALE_LINKS)
    assert names_a == sorted(n for n in b.attrs if n not in SCALE_LINKS), where
    for n in names_a:
        (ta, sa, va), (tb, sb, vb) = raw_attr(a, n), raw_attr(b, n)
        assert ta == tb and sa == sb, f"{where} attribute {n}: type or shape differs"
        assert np.asarray(va).tobytes() == np.asarray(vb).tobytes(), f"{where} attribute {n}: value differs"


def assert_same_content(a_path: Path, b_path: Path, *, rechunked: int | None = None) -> dict[str, int]:
    """Every group, dataset, attribute, layout, filter and dimension scale of ``a`` is in ``b``; values
    byte-identical. ``rechunked``: the chunk rows expected for the record datasets. Returns the number of
    datasets, COMPACT datasets and dimension scales compared."""
    with h5py.File(a_path) as a, h5py.File(b_path) as b:
        names_a, names_b = [], []
        a.visit(names_a.append)
        b.visit(names_b.append)
        assert names_a == names_b
        assert_same_attrs(a, b, "/")
        addr_a, addr_b = addresses(a), addresses(b)
        counts = {"datasets": 0, "compact": 0, "scales": 0}
        for name in names_a:
            oa, ob = a[name], b[name]
            assert type(oa) is type(ob), name
            assert_same_attrs(oa, ob, name)
            if not isinstance(oa, h5py.Dataset):
                continue
            counts["datasets"] += 1
            assert oa.id.get_type() == ob.id.get_type() and oa.shape == ob.shape and oa.maxshape == ob.maxshape, name
            pa, pb = oa.id.get_create_plist(), ob.id.get_create_plist()
            assert pa.get_layout() == pb.get_layout(), f"{name}: layout changed"
            assert [pa.get_filter(i) for i in range(pa.get_nfilters())] == \
                   [pb.get_filter(i) for i in range(pb.get_nfilters())], f"{name}: filters changed"
            assert pa.fill_value_defined() == pb.fill_value_defined(), f"{name}: fill value changed"
            assert np.asarray(oa.fillvalue).tobytes() == np.asarray(ob.fillvalue).tobytes(), name
            counts["compact"] += pa.get_layout() == h5d.COMPACT
            counts["scales"] += bool(oa.is_scale)
            if oa.chunks is not None:
                expected = oa.chunks
                if rechunked and oa.maxshape[0] is None and oa.chunks[0] > MIN_RECHUNK_ROWS:
                    expected = (rechunked,) + oa.chunks[1:]
                assert ob.chunks == expected, f"{name}: chunks {ob.chunks}, expected {expected}"
            assert oa[()].tobytes() == ob[()].tobytes(), f"{name}: values differ"
            assert oa.is_scale == ob.is_scale, name
            if oa.is_scale:
                assert h5py.h5ds.get_scale_name(oa.id) == h5py.h5ds.get_scale_name(ob.id), name
            for axis in range(oa.ndim):
                sa = [addr_a[h5o.get_info(s.id).addr] for s in oa.dims[axis].values()]
                sb = [addr_b[h5o.get_info(s.id).addr] for s in ob.dims[axis].values()]
                assert sa == sb, f"{name} axis {axis}: scales {sb}, expected {sa}"
        return counts


# -- the h5py copy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("product", ["ATL03", "ATL06"])
def test_copy_is_identical(copies, product):
    src, report = copies[product]
    counts = assert_same_content(src, Path(report.dst))
    assert counts["datasets"] == report.datasets > 100
    assert counts["scales"] > 6  # the test granules do exercise dimension scales, and ATL03 COMPACT datasets
    assert counts["compact"] > 0 if product == "ATL03" else counts["compact"] == 0
    print(f"\n{report}")


@pytest.mark.parametrize("product", ["ATL03", "ATL06"])
def test_copy_is_paged_with_persisted_free_space(copies, product):
    src, report = copies[product]
    with h5py.File(report.dst) as f:
        assert f.id.get_create_plist().get_file_space_strategy() == (h5f.FSPACE_STRATEGY_PAGE, True, 1)
        assert f.id.get_create_plist().get_file_space_page_size() == DEFAULT_PAGE_SIZE
    before, after = layout_summary(src), layout_summary(report.dst)
    assert (before.strategy, before.page_size) == ("FSM_AGGR", None)
    assert (after.strategy, after.page_size, after.persist) == ("PAGE", DEFAULT_PAGE_SIZE, True)
    assert after.file_size % DEFAULT_PAGE_SIZE == 0
    assert (after.datasets, after.chunked, after.chunks, after.raw_bytes) == \
           (before.datasets, before.chunked, before.chunks, before.raw_bytes)
    assert after.metadata_extents < before.metadata_extents / 10  # metadata gathered in a few pages
    assert report.dst_bytes == after.file_size and report.src_bytes == before.file_size


def test_other_page_size_and_rechunking(test_archive, tmp_path):
    src = granule(test_archive, "ATL06")
    report = repack(src, tmp_path / "v007.h5", page_size=2**20, chunk_rows=100_000)
    assert layout_summary(report.dst).page_size == 2**20
    assert report.datasets_rechunked > 0
    assert assert_same_content(src, Path(report.dst), rechunked=100_000)["datasets"] == report.datasets
    with h5py.File(report.dst) as f:
        assert f["gt1l/land_ice_segments/h_li"].chunks == (100_000,)
        assert f["gt1l/residual_histogram/count"].chunks == (14, 700)  # a table of few rows per chunk: kept


@pytest.mark.parametrize("product", ["ATL03", "ATL06"])
def test_auto_page_size_holds_the_metadata_in_one_page(copies, tmp_path, product):
    src, _ = copies[product]
    meta = layout_summary(src).metadata_bytes
    page = auto_page_size(src)
    # the smallest power of two from 1 MiB with 10 % to spare (the test granules' metadata is far below 8 MB)
    assert page >= 2**20 and page & (page - 1) == 0 and page >= 1.1 * meta and (page == 2**20 or page / 2 < 1.1 * meta)
    report = repack(src, tmp_path / "auto.h5", page_size="auto")
    after = layout_summary(report.dst)
    assert report.page_size == after.page_size == page and after.strategy == "PAGE"
    assert after.metadata_blocks == 1  # every object header in one page: one GET for a page-buffered reader
    assert report.dst_bytes < layout_summary(copies[product][1].dst).file_size  # smaller than at 8,000,000 B
    assert assert_same_content(src, Path(report.dst))["datasets"] == report.datasets


def test_auto_page_size_is_capped_at_the_published_size(copies, monkeypatch):
    import is2cloud.repack as repack_module

    src, _ = copies["ATL06"]
    real = layout_summary(src)
    for meta, want in ((3 * 2**20, 4 * 2**20), (4 * 2**20, DEFAULT_PAGE_SIZE), (50 * 2**20, DEFAULT_PAGE_SIZE)):
        monkeypatch.setattr(repack_module, "layout_summary", lambda _: replace(real, metadata_bytes=meta))
        assert auto_page_size(src) == want, meta


def test_layout_summary_of_an_open_file_and_its_text(copies):
    src, report = copies["ATL06"]
    with h5py.File(src) as f:
        summary = layout_summary(f)
    assert summary == layout_summary(src)
    assert summary.chunk_elements[10_000] > 0 and summary.median_chunk_bytes > 0
    assert summary.raw_bytes + summary.metadata_bytes + summary.free_bytes + summary.other_bytes == summary.file_size
    text = str(summary)
    assert "FSM_AGGR" in text and f"{summary.datasets} datasets" in text
    assert "PAGE, page 8,000,000 B" in str(layout_summary(report.dst))


# -- bad input -------------------------------------------------------------------------------------


def test_not_hdf5(tmp_path):
    bad = tmp_path / "ATL06_fake.h5"
    bad.write_text("not an HDF5 file")
    with pytest.raises(RepackError, match="ATL06_fake.h5 is not an HDF5 file"):
        repack(bad, tmp_path / "out.h5")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        repack(tmp_path / "missing.h5", tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("page_size", [4095, 64 * 2**20 + 1, 0, 8.0e6])
def test_page_size_out_of_range(test_archive, tmp_path, page_size):
    with pytest.raises(ValueError, match="page_size"):
        repack(granule(test_archive, "ATL06"), tmp_path / "out.h5", page_size=page_size)
    with pytest.raises(ValueError, match="page_size"):
        h5repack_command("a.h5", "b.h5", page_size)
    assert list(tmp_path.iterdir()) == []


def test_auto_is_for_the_h5py_writer_only():
    with pytest.raises(ValueError, match="page_size must be an integer number of bytes, not 'auto'"):
        h5repack_command("a.h5", "b.h5", "auto")


def test_interrupted_repack_leaves_nothing(test_archive, tmp_path, monkeypatch):
    import is2cloud.repack as repack_module

    copy_values, calls = repack_module._copy_values, []

    def interrupt(*args, **kwargs):  # Ctrl-C while the 50th dataset is copied
        calls.append(1)
        if len(calls) % 50 == 0:
            raise KeyboardInterrupt
        return copy_values(*args, **kwargs)

    monkeypatch.setattr(repack_module, "_copy_values", interrupt)
    with pytest.raises(KeyboardInterrupt):
        repack(granule(test_archive, "ATL06"), tmp_path / "out.h5")
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "old.h5"
    old.write_bytes(b"the previous copy")
    with pytest.raises(KeyboardInterrupt):
        repack(granule(test_archive, "ATL06"), old)
    assert old.read_bytes() == b"the previous copy" and list(tmp_path.iterdir()) == [old]


def test_output_in_the_archive_bucket_is_refused_before_any_work():
    archive = get_settings().archive_bucket
    with pytest.raises(OutputPathError, match=f"{archive} is the read-only archive bucket"):
        repack_to_s3("s3://nowhere/ATL06_missing.h5", f"s3://{archive}/ATLAS/copy.h5", credentials=None)


# -- S3 --------------------------------------------------------------------------------------------


def test_repack_to_s3(test_archive, archive_cloud, creds, tmp_path):
    obj = next(o for o in test_archive.objects if "/ATL06/" in o["key"])
    src_url = f"s3://{obj['bucket']}/{obj['key']}"
    dst_url = f"s3://{archive_cloud.buckets[0]}/repacked/{Path(obj['key']).name}"
    report = repack_to_s3(src_url, dst_url, credentials=creds, page_size=2**20)
    assert report.source_etag == obj["etag"] and (report.src, report.dst) == (src_url, dst_url)
    s3 = creds.boto3_client("s3")
    bucket, key = dst_url[5:].split("/", 1)
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"] == {"source-url": src_url, "source-etag": obj["etag"], "page-size": str(2**20)}
    assert head["ContentLength"] == report.dst_bytes and head["ContentType"] == "application/x-hdf5"
    local = tmp_path / "copy.h5"
    local.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert layout_summary(local).page_size == 2**20
    assert assert_same_content(test_archive.path_of(obj["key"]), local)["datasets"] == report.datasets
    with pytest.raises(FileNotFoundError, match="no object at"):
        repack_to_s3(src_url + ".missing", dst_url + ".2", credentials=creds)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=key + ".2")


# -- h5repack and the HDF5 1.10 tools --------------------------------------------------------------


@needs_h5repack
def test_h5repack_and_h5py_copies_agree(copies, tmp_path):
    src, mine = copies["ATL06"]
    theirs = run_h5repack(src, tmp_path / "h5repack.h5")
    assert theirs.tool == "h5repack" and h5repack_command(src, "x.h5")[:7] == \
        ["h5repack", "-S", "PAGE", "-G", "8000000", "-P", "1"]
    for summary in (layout_summary(mine.dst), layout_summary(theirs.dst)):
        assert (summary.strategy, summary.page_size, summary.persist) == ("PAGE", DEFAULT_PAGE_SIZE, True)
    assert assert_same_content(Path(mine.dst), Path(theirs.dst))["datasets"] == mine.datasets
    bad = tmp_path / "fake.h5"
    bad.write_text("not HDF5")
    with pytest.raises(RepackError, match="fake.h5 is not an HDF5 file"):
        run_h5repack(bad, tmp_path / "never.h5")
    assert not (tmp_path / "never.h5").exists()


@needs_h5dump
@pytest.mark.parametrize("which", ["generated granule", "h5py copy"])
def test_hdf5_1_10_tools_read_the_files(copies, which):
    src, report = copies["ATL03"]
    path = src if which == "generated granule" else report.dst
    done = subprocess.run(["h5dump", "-H", str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'DATASET "h_ph"' in done.stdout and "DIMENSION_LIST" in done.stdout


# -- command line ----------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "IS2CLOUD_SCALE": "test", "IS2CLOUD_MODE": "local"}
    env.pop("IS2CLOUD_ENDPOINT", None)
    return subprocess.run([sys.executable, "-m", "is2cloud.cli", "repack", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_cli(test_archive, tmp_path):
    src = granule(test_archive, "ATL06")
    done = run_cli(str(src), "copy.h5", "--page-size", "1048576", "--chunk-rows", "100000", "--summary",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "rechunked to 100,000 rows" in done.stdout and "PAGE, page 1,048,576 B" in done.stdout
    with h5py.File(tmp_path / "copy.h5") as f:
        assert f["gt1l/land_ice_segments/h_li"].chunks == (100_000,)
        assert f.id.get_create_plist().get_file_space_page_size() == 2**20
    bad = run_cli(str(src), "other.h5", "--page-size", "1000", cwd=tmp_path)
    assert bad.returncode == 2 and "outside 4,096 (4 KiB)" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "other.h5").exists()
