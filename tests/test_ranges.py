"""methods.ranges: coalescing, ETag/URL helpers, numcodecs codecs, and checked range GETs against the
embedded S3 (changed and missing objects, a block-cached file)."""

from __future__ import annotations

import h5py
import numcodecs
import numpy as np
import pytest

from is2cloud.methods.ranges import (
    BlockFile,
    Codec,
    ObjectChangedError,
    ObjectId,
    ObjectMissingError,
    RangeRequest,
    coalesce,
    fetch_ranges,
    head_object,
    normalize_etag,
    split_url,
)

# -- coalesce -------------------------------------------------------------------------------------------------


def test_coalesce_merges_touching_and_overlapping_ranges_only():
    assert coalesce([(0, 100), (100, 250), (900, 1000)]) == [(0, 250), (900, 1000)]
    assert coalesce([(50, 80), (0, 100)]) == [(0, 100)]                   # contained
    assert coalesce([(0, 100), (101, 200)]) == [(0, 100), (101, 200)]     # one byte apart, max_gap=0
    assert coalesce([(300, 400), (0, 100), (100, 200)]) == [(0, 200), (300, 400)]  # unsorted input
    assert coalesce([]) == []
    assert coalesce([(5, 5), (7, 3)]) == []                               # empty and reversed ranges dropped


def test_coalesce_gap_and_size_limits():
    assert coalesce([(0, 100), (150, 200)], max_gap=49) == [(0, 100), (150, 200)]
    assert coalesce([(0, 100), (150, 200)], max_gap=50) == [(0, 200)]
    # max_size caps merged ranges, but a single longer input range is kept whole
    assert coalesce([(0, 60), (60, 120), (120, 180)], max_size=120) == [(0, 120), (120, 180)]
    assert coalesce([(0, 500), (500, 510)], max_size=100) == [(0, 500), (500, 510)]


def _check_cover(ranges, out, gap):
    assert out == sorted(out)
    assert all(b > a for a, b in out)
    assert all(out[i][1] <= out[i + 1][0] for i in range(len(out) - 1)), out  # disjoint
    for a, b in ranges:  # every input range lies inside one output range
        assert any(s <= a and b <= e for s, e in out), (a, b, out)
    # nothing outside the inputs is fetched except gaps of at most max_gap
    covered = np.zeros(12_000, bool)
    for a, b in ranges:
        covered[a:b] = True
    for s, e in out:
        holes = np.flatnonzero(~covered[s:e])
        if holes.size:
            runs = np.split(holes, np.flatnonzero(np.diff(holes) > 1) + 1)
            assert max(len(r) for r in runs) <= gap


def test_coalesce_overlapping_inputs_give_disjoint_ranges():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 30))
        ranges = [(int(a), int(a + rng.integers(1, 700))) for a in rng.integers(0, 10_000, n)]
        gap, size = int(rng.integers(0, 300)), int(rng.integers(500, 3000))
        _check_cover(ranges, coalesce(ranges, max_gap=gap, max_size=size), gap)
    # overlapping inputs are merged even past max_size (a range may not be fetched twice)
    assert coalesce([(0, 600), (100, 700)], max_size=650) == [(0, 700)]


def test_coalesce_disjoint_inputs_respect_max_size():
    """HDF5 chunks never overlap: merged ranges stay within max_size, unless one chunk is longer."""
    rng = np.random.default_rng(8)
    for _ in range(300):
        cuts = np.unique(rng.integers(0, 11_000, int(rng.integers(2, 40))))
        pairs = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]
        ranges = [p for p in pairs if rng.random() < 0.6]  # some are left out: gaps
        # shrink some ranges from the right, so neighbours do not always touch
        ranges = [(a, max(a + 1, b - int(rng.integers(0, 50)))) for a, b in ranges]
        rng.shuffle(ranges)
        gap, size = int(rng.integers(0, 300)), int(rng.integers(300, 3000))
        out = coalesce(ranges, max_gap=gap, max_size=size)
        _check_cover(ranges, out, gap)
        for s, e in out:
            assert e - s <= size or (s, e) in ranges
        # fewest ranges: two neighbours are apart only if the gap is too wide or the merge too long
        for (s1, e1), (s2, e2) in zip(out, out[1:]):
            assert s2 - e1 > gap or e2 - s1 > size


def test_coalesce_gap_budget():
    ranges = [(0, 100), (110, 200), (300, 400), (402, 500), (1000, 1100)]
    assert coalesce(ranges, max_gap=1000) == [(0, 1100)]
    assert coalesce(ranges, max_gap=1000, max_extra=10**9) == coalesce(ranges, max_gap=1000)
    assert coalesce(ranges, max_gap=1000, max_extra=0) == coalesce(ranges, max_gap=0)
    # the smallest gaps first: 2 bytes, then 10; the 100-byte gap does not fit in what is left
    assert coalesce(ranges, max_gap=1000, max_extra=12) == [(0, 200), (300, 500), (1000, 1100)]
    assert coalesce(ranges, max_gap=1000, max_extra=111) == [(0, 200), (300, 500), (1000, 1100)]
    assert coalesce(ranges, max_gap=1000, max_extra=112) == [(0, 500), (1000, 1100)]
    assert coalesce(ranges, max_gap=5, max_extra=10**9) == [(0, 100), (110, 200), (300, 500), (1000, 1100)]
    assert coalesce(ranges, max_gap=1000, max_extra=10**9, max_size=250) == [(0, 200), (300, 500), (1000, 1100)]


def test_coalesce_gap_budget_random():
    rng = np.random.default_rng(9)
    for _ in range(300):
        cuts = np.unique(rng.integers(0, 11_000, int(rng.integers(2, 40))))
        ranges = [(int(a), max(int(a) + 1, int(b) - int(rng.integers(0, 80))))
                  for a, b in zip(cuts[:-1], cuts[1:]) if rng.random() < 0.6]
        gap, size, extra = int(rng.integers(0, 300)), int(rng.integers(300, 5000)), int(rng.integers(0, 800))
        out = coalesce(ranges, max_gap=gap, max_size=size, max_extra=extra)
        _check_cover(ranges, out, gap)
        fetched = sum(e - s for s, e in out)
        assert fetched - sum(b - a for a, b in ranges) <= extra
        for s, e in out:
            assert e - s <= size or (s, e) in ranges
        used = fetched - sum(b - a for a, b in ranges)
        for (s1, e1), (s2, e2) in zip(out, out[1:]):  # a gap left open did not fit
            assert s2 - e1 > gap or e2 - s1 > size or s2 - e1 > extra - used


# -- helpers -------------------------------------------------------------------------------------------------


def test_normalize_etag():
    assert normalize_etag('"D239DA9E941C2963D5C56C44301AD92B"') == "d239da9e941c2963d5c56c44301ad92b"
    assert normalize_etag('W/"abc-2"') == "abc-2"
    assert normalize_etag("  abc ") == "abc"
    assert normalize_etag(None) == "" and normalize_etag("") == ""


def test_split_url():
    assert split_url("s3://bucket/a/b/c.h5") == ("bucket", "a/b/c.h5")
    for bad in ("bucket/key", "https://x/y", "s3://bucket", "s3://bucket/", "s3:///key"):
        with pytest.raises(ValueError, match="s3://"):
            split_url(bad)


def test_object_id_check():
    obj = ObjectId("b", "dir/ATL06_x.h5", 100, "abc")
    assert obj.url == "s3://b/dir/ATL06_x.h5" and obj.name == "ATL06_x.h5"
    obj.check(100, '"ABC"')
    obj.check(None, None)
    with pytest.raises(ObjectChangedError, match="ATL06_x.h5.*101 bytes"):
        obj.check(101, "abc")
    with pytest.raises(ObjectChangedError, match="ETag def"):
        obj.check(100, '"def"')


# -- codecs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,row_shape", [("<f4", ()), ("<f8", ()), ("<i2", ()), ("|i1", (5,)), (">f8", ())])
def test_codec_round_trip_with_numcodecs(dtype, row_shape):
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(1000, *row_shape)) * 100).astype(dtype)
    itemsize = np.dtype(dtype).itemsize
    # HDF5's pipeline order: shuffle, then deflate (decoding goes in reverse)
    stored = numcodecs.Zlib(level=4).encode(numcodecs.Shuffle(elementsize=itemsize).encode(data.tobytes()))
    codec = Codec(np.dtype(dtype).str, row_shape, 1000, (("shuffle", itemsize), ("deflate", 4)))
    assert np.array_equal(codec.decode(stored, 1000), data)
    assert np.array_equal(codec.decode(stored, 10), data[:10])  # a partial last chunk: the first rows
    assert codec.row_bytes == itemsize * int(np.prod(row_shape, dtype=int))
    assert Codec.from_json(codec.to_json()) == codec
    with pytest.raises(ValueError, match="fewer"):
        codec.decode(stored, 1001)


def test_codec_fletcher32_and_filter_mask():
    data = np.arange(500, dtype="<i4")
    stored = numcodecs.Fletcher32().encode(numcodecs.Zlib(level=1).encode(data.tobytes()))
    codec = Codec("<i4", (), 500, (("deflate", 1), ("fletcher32",)))
    assert np.array_equal(codec.decode(stored, 500), data)
    # filter_mask bit 0: the chunk was written without the first filter (deflate)
    skipped = codec.without(0b01)
    assert skipped.filters == (("fletcher32",),)
    assert np.array_equal(skipped.decode(numcodecs.Fletcher32().encode(data.tobytes()), 500), data)
    assert codec.without(0) is codec
    with pytest.raises(ValueError, match="unsupported HDF5 filter 'lzf'"):
        Codec("<f4", (), None, (("lzf",),))


def test_codec_fill_rows():
    fill = np.array([3.4028235e38], dtype="<f4").tobytes().hex()
    rows = Codec("<f4", (), None, (), fill).fill_rows(3)
    assert rows.dtype == np.dtype("<f4") and np.all(rows == np.float32(3.4028235e38))
    assert np.array_equal(Codec("|i1", (5,)).fill_rows(2), np.zeros((2, 5), "i1"))


def test_codec_decodes_chunks_written_by_hdf5(tmp_path):
    path = tmp_path / "c.h5"
    data = np.linspace(-50, 50, 2500).astype("<f4")
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(1000,), compression="gzip", compression_opts=6, shuffle=True,
                         fletcher32=True)
    with h5py.File(path) as f:
        ds = f["x"]
        codec = Codec("<f4", (), 1000, (("shuffle", 4), ("deflate", 6), ("fletcher32",)))
        got = []
        for i, start in enumerate(range(0, 2500, 1000)):
            _mask, raw = ds.id.read_direct_chunk((start,))
            got.append(codec.decode(raw, min(1000, 2500 - start)))
            assert i < 3
    assert np.array_equal(np.concatenate(got), data)


# -- checked range GETs against the embedded S3 -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3obj(cloud):
    creds = cloud.credentials()
    s3 = creds.boto3_client("s3")
    bucket = cloud.buckets[0]
    body = bytes(np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8))

    def put(key: str, data: bytes = body) -> ObjectId:
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        return head_object(creds, bucket, key)

    return creds, put, body, s3, bucket


def test_fetch_ranges_returns_the_bytes_in_order(s3obj, cloud):
    creds, put, body, _, _ = s3obj
    obj = put("ranges/a.bin")
    assert obj.size == len(body) and len(obj.etag) == 32
    reqs = [RangeRequest(obj, 1000, 5000), RangeRequest(obj, 0, 10), RangeRequest(obj, 299_990, 300_000)]
    seq = cloud.seq
    got = fetch_ranges(creds, reqs, concurrency=2)
    assert got == [body[1000:5000], body[0:10], body[299_990:]]
    gets = [r for r in cloud.ledger(seq) if r.verb == "GET" and r.key == "ranges/a.bin"]
    assert len(gets) == 3 and sum(r.bytes for r in gets) == 4000 + 10 + 10
    assert fetch_ranges(creds, [], concurrency=2) == []
    # process() runs on each range as it arrives, results in request order
    sizes = fetch_ranges(creds, reqs, process=lambda i, data: (i, len(data)), workers=2)
    assert sizes == [(0, 4000), (1, 10), (2, 10)]


def test_fetch_ranges_detects_changed_and_missing_objects(s3obj):
    creds, put, body, s3, bucket = s3obj
    obj = put("ranges/b.bin")
    put("ranges/b.bin", body[::-1])  # same size, other bytes: another ETag
    with pytest.raises(ObjectChangedError) as err:
        fetch_ranges(creds, [RangeRequest(obj, 0, 100)])
    msg = str(err.value)
    assert "b.bin" in msg and obj.etag in msg
    assert fetch_ranges(creds, [RangeRequest(obj, 0, 100)], check=False) == [body[::-1][:100]]
    put("ranges/b.bin", body[:1000])  # truncated
    with pytest.raises(ObjectChangedError, match="1000 bytes"):
        fetch_ranges(creds, [RangeRequest(obj, 0, 100)])
    s3.delete_object(Bucket=bucket, Key="ranges/b.bin")
    with pytest.raises(ObjectMissingError, match="no object at s3://.*/ranges/b.bin") as err:
        fetch_ranges(creds, [RangeRequest(obj, 0, 100)])
    with pytest.raises(ObjectMissingError, match="b.bin"):
        head_object(creds, bucket, "ranges/b.bin")
    for secret in (creds.secret_access_key, creds.session_token):
        assert secret not in str(err.value) and secret not in repr(err.value)


def test_fetch_ranges_retries_injected_faults(s3obj, cloud):
    creds, put, body, _, _ = s3obj
    obj = put("ranges/c.bin")
    reqs = [RangeRequest(obj, a, a + 20_000) for a in range(0, 280_000, 20_000)]
    cloud.set_faults(0.3, kinds=["503", "500", "reset"], seed=2)
    try:
        seq = cloud.seq
        got = fetch_ranges(creds, reqs, concurrency=4)
        assert cloud.summary(seq).faults > 0
    finally:
        cloud.set_faults(0.0)
    assert got == [body[r.start:r.end] for r in reqs]


def test_block_file_reads_seeks_and_caches(s3obj, cloud):
    creds, put, body, _, _ = s3obj
    obj = put("ranges/d.bin")
    fh = BlockFile(creds, obj, block_size=64 * 1024)
    assert fh.nblocks == 5
    fh.seek(60_000)
    assert fh.read(10_000) == body[60_000:70_000]          # spans blocks 0 and 1
    assert fh.tell() == 70_000 and fh.gets == 2
    assert fh.pread(100, 50) == body[100:150] and fh.tell() == 70_000 and fh.gets == 2  # cached
    fh.seek(-10, 2)
    assert fh.read() == body[-10:]
    assert fh.read(5) == b""
    seq = cloud.seq
    fh.prefetch()
    assert fh.gets == 5 and fh.bytes_fetched == len(body)
    assert cloud.summary(seq).gets == 2                     # only the blocks not cached yet
    fh.close()
