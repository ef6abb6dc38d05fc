"""Loaded by every Python process of the rehearsal (the notebook kernels and their Dask workers)."""

import os

if os.environ.get("IS2CLOUD_REHEARSAL_NASA"):
    from rehearsal import pod

    pod.install()
