"""All configuration, read from ``IS2CLOUD_*`` environment variables in one place.

| variable | meaning | default |
|---|---|---|
| ``IS2CLOUD_MODE`` | ``local`` (embedded cloud, synthetic data) or ``earthdata`` (CryoCloud, real NASA data) | ``local`` |
| ``IS2CLOUD_PROFILE`` | network model of the local cloud: ``none``, ``in-region``, ``remote`` | ``in-region`` |
| ``IS2CLOUD_REGION`` | AWS region of the archive | ``us-west-2`` |
| ``IS2CLOUD_ARCHIVE_BUCKET`` | bucket that holds the granules | ``nsidc-cumulus-prod-protected`` |
| ``IS2CLOUD_OUTPUT_BUCKET`` | bucket for results (a scratch bucket on CryoCloud) | ``is2cloud-scratch`` locally |
| ``IS2CLOUD_ENDPOINT`` | endpoint of an already running local cloud (``is2cloud serve``) to reuse | unset |
| ``IS2CLOUD_CACHE`` | where generated archives are cached | ``<repo>/.cache`` or ``~/.cache/is2cloud`` |
| ``IS2CLOUD_SCALE`` | data scale used by the notebooks: ``test``, ``book``, ``bench`` | ``book`` |
| ``IS2CLOUD_SEED`` | seed of the synthetic world (granules, jitter, faults) | ``2018`` |
| ``IS2CLOUD_ROLE_ARN`` | role assumed with the CryoCloud web identity | the CryoCloud-like local role |
| ``IS2CLOUD_WEB_IDENTITY_TOKEN_FILE`` | the token file (``AWS_WEB_IDENTITY_TOKEN_FILE`` on CryoCloud) | unset |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

Mode = Literal["local", "earthdata"]
MODES: tuple[str, ...] = ("local", "earthdata")
SCALES: tuple[str, ...] = ("test", "book", "bench")


@dataclass(frozen=True)
class Profile:
    """A named network model: time to first byte and per-connection bandwidth."""

    name: str
    latency_s: float
    bandwidth_Bps: float  # bytes per second per connection; 0 means unlimited
    jitter: float = 0.1  # relative spread of the latency (seeded)
    description: str = ""


PROFILES: dict[str, Profile] = {
    "none": Profile("none", 0.0, 0.0, 0.0, "no added latency or bandwidth limit (tests)"),
    "in-region": Profile(
        "in-region", 0.030, 100e6, 0.1, "about 30 ms to first byte, 100 MB/s per connection (CryoCloud to S3 us-west-2)"
    ),
    "remote": Profile("remote", 0.100, 20e6, 0.1, "about 100 ms to first byte, 20 MB/s per connection (far from the region)"),
}


def get_profile(name: str) -> Profile:
    """Return the network profile called ``name`` or raise a ValueError naming the choices."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown network profile {name!r}; choose one of {', '.join(PROFILES)}") from None


def _default_cache() -> Path:
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists():
        return repo / ".cache"
    return Path.home() / ".cache" / "is2cloud"


@dataclass(frozen=True)
class Settings:
    mode: Mode
    profile: str
    region: str
    archive_bucket: str
    output_bucket: str
    endpoint: str | None
    cache_dir: Path
    scale: str
    seed: int
    role_arn: str
    web_identity_token_file: str | None

    @property
    def is_local(self) -> bool:
        return self.mode == "local"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def load_settings() -> Settings:
    """Read the environment (without caching) and validate it."""
    mode = (_env("IS2CLOUD_MODE", "local") or "local").lower()
    if mode not in MODES:
        raise ValueError(f"IS2CLOUD_MODE={mode!r} is not a mode; choose one of {', '.join(MODES)}")
    profile = _env("IS2CLOUD_PROFILE", "in-region") or "in-region"
    get_profile(profile)
    scale = _env("IS2CLOUD_SCALE", "book") or "book"
    if scale not in SCALES:
        raise ValueError(f"IS2CLOUD_SCALE={scale!r} is not a scale; choose one of {', '.join(SCALES)}")
    seed_text = _env("IS2CLOUD_SEED", "2018") or "2018"
    try:
        seed = int(seed_text)
    except ValueError:
        raise ValueError(f"IS2CLOUD_SEED={seed_text!r} is not an integer") from None
    if seed < 0:
        raise ValueError(f"IS2CLOUD_SEED={seed_text!r} is negative; give an integer >= 0 (default 2018)")
    output_bucket = _env("IS2CLOUD_OUTPUT_BUCKET", "is2cloud-scratch" if mode == "local" else None)
    if output_bucket is None:
        # On CryoCloud the scratch bucket is announced in SCRATCH_BUCKET (s3://cryocloud-scratch/<user>).
        scratch = _env("SCRATCH_BUCKET")
        output_bucket = scratch.removeprefix("s3://").split("/")[0] if scratch else ""
    return Settings(
        mode=mode,  # type: ignore[arg-type]
        profile=profile,
        region=_env("IS2CLOUD_REGION", "us-west-2") or "us-west-2",
        archive_bucket=_env("IS2CLOUD_ARCHIVE_BUCKET", "nsidc-cumulus-prod-protected") or "",
        output_bucket=output_bucket,
        endpoint=_env("IS2CLOUD_ENDPOINT"),
        cache_dir=Path(_env("IS2CLOUD_CACHE") or _default_cache()),
        scale=scale,
        seed=seed,
        role_arn=_env("IS2CLOUD_ROLE_ARN", "arn:aws:iam::123456789012:role/cryocloud-s3-reader") or "",
        web_identity_token_file=_env("IS2CLOUD_WEB_IDENTITY_TOKEN_FILE", _env("AWS_WEB_IDENTITY_TOKEN_FILE")),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return load_settings()


def override(**changes: object) -> Settings:
    """Settings with some fields changed (for tests and explicit calls); does not touch the cache."""
    return replace(get_settings(), **changes)  # type: ignore[arg-type]
