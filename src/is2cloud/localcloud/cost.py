"""What the embedded S3 server costs per request, for ``make bench`` (``is2cloud bench --suite server``).

Real S3 costs the client's machine nothing to serve a request; the embedded server runs on the same
cores as the methods it serves. The many-small-request methods (chunk index, virtual, kerchunk) would
pay for that artefact of the simulation, so object reads take a lean path
(:func:`~is2cloud.localcloud.server.keep_alive_handler`). This suite measures the server's CPU per
ranged GET, the figure that must stay small (0.3 ms or less) for the comparisons to be fair.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["benchmark"]


def _ranged_gets(store: Any, key: str, starts: list[int], length: int, concurrency: int) -> None:
    import obstore

    async def run() -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(start: int) -> None:
            async with gate:
                await obstore.get_range_async(store, key, start=start, length=length)

        await asyncio.gather(*(one(s) for s in starts))

    asyncio.run(run())


def benchmark(scale: str, cloud: Any, archive: Any, *, requests: int = 3000, length: int = 4096,
              concurrency: int = 8, results: Any = None) -> list:  # -> list[bench.Measurement]
    """Time ``requests`` ranged GETs of ``length`` bytes (spread over one granule of ``archive``, at
    ``concurrency``) with the network model off, so that the server's CPU is all that is measured;
    the measurement's ``server_cpu_s / gets`` is the server's CPU per ranged GET (in its notes)."""
    from is2cloud.bench import append_result, measure

    granule = next(o for o in archive.objects if o["key"].endswith(".h5"))
    store = cloud.credentials().obstore(granule["bucket"])
    span = max(1, int(granule["size"]) - length)
    starts = [(i * 7919 * length) % span for i in range(requests)]
    before = cloud.profile_name
    cloud.set_profile("none")
    try:
        _ranged_gets(store, granule["key"], starts[:200], length, concurrency)  # connections and caches warm
        with measure("S3 server: ranged GETs", method="localcloud", cloud=cloud, scale=scale, record=False,
                     concurrency=concurrency) as m:
            _ranged_gets(store, granule["key"], starts, length, concurrency)
    finally:
        cloud.set_profile(before)
    if m.server_cpu_s is not None and m.gets:
        per_get = 1e3 * m.server_cpu_s / m.gets
        m.notes = (f"server CPU per ranged GET {per_get:.3f} ms (target <= 0.3 ms); client CPU per GET "
                   f"{1e3 * m.cpu_s / m.gets:.3f} ms; {m.gets} GETs of {length} bytes at concurrency {concurrency}, "
                   "network model off")
    append_result(m, results)
    return [m]
