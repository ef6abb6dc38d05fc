"""The virtual store benchmark: prepare the store, then subset with the tuned baseline and the store."""

from __future__ import annotations

import os
from typing import Any

from is2cloud.methods.virtual.store import prepare, subset


def benchmark(scale: str, cloud: Any, *, aoi: Any = None, profile: str = "in-region", client: Any = None,
              repeat: int = 1, results: str | os.PathLike[str] | None = None) -> list:  # -> list[bench.Measurement]
    """Measure, in one run at ``scale`` on the Greenland AOI (``profile`` network model): ``virtual store
    prepare`` (into ``s3://<output bucket>/bench/virtual-<scale>``, overwritten), then ``repeat`` times
    the tuned baseline and ``virtual store -> GeoParquet``, rows checked identical
    (:func:`is2cloud.methods.methodbench.run`)."""
    from is2cloud.methods import methodbench

    def prep(granules: Any, **kw: Any) -> Any:
        return prepare(granules, mode="overwrite", **kw)

    return methodbench.run("virtual", "virtual store", scale, cloud, prepare=prep, subset=subset, aoi=aoi,
                           profile=profile, client=client, repeat=repeat, results=results)
