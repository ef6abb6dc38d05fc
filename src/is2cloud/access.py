"""Credentials for the current mode: the one call a notebook makes, ``get_credentials(purpose)``.

It sits above :mod:`is2cloud.credentials` (the value and its sources) and :mod:`is2cloud.localcloud`
(the embedded cloud, which issues credentials through its STS), so neither of those imports the other
both ways.

* local mode: web identity against the embedded STS (``cloud``, or the process-wide local cloud).
* earthdata mode, ``purpose="read"`` (the NSIDC archive): earthaccess DAAC credentials.
* earthdata mode, ``purpose="write"`` (your bucket): the CryoCloud role (``IS2CLOUD_ROLE_ARN`` or
  ``AWS_ROLE_ARN``) with the token in ``IS2CLOUD_WEB_IDENTITY_TOKEN_FILE`` or ``AWS_WEB_IDENTITY_TOKEN_FILE``.

In earthdata mode the S3 and STS endpoints are AWS's regional ones unless ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL_STS`` (or ``AWS_ENDPOINT_URL``) say otherwise (see :mod:`is2cloud.settings`); either
way every client is handed its endpoint and region explicitly.
"""

from __future__ import annotations

from typing import Any

from is2cloud.credentials import Credentials, CredentialsError, Purpose, from_earthdata, from_web_identity
from is2cloud.settings import get_settings

__all__ = ["get_credentials"]


def get_credentials(purpose: Purpose = "read", cloud: Any = None) -> Credentials:
    """Credentials to ``read`` the granules or to ``write`` (and read back) your own outputs."""
    settings = get_settings()
    if purpose not in ("read", "write"):
        raise ValueError(f"purpose must be 'read' or 'write', not {purpose!r}")
    if settings.mode == "local":
        if cloud is None:
            from is2cloud.localcloud import ensure_cloud

            cloud = ensure_cloud(settings)
        return cloud.credentials()
    if purpose == "read":
        return from_earthdata("NSIDC")
    if not settings.role_arn or not settings.web_identity_token_file:
        raise CredentialsError("missing CryoCloud credentials: AWS_ROLE_ARN (or IS2CLOUD_ROLE_ARN) and "
                               "AWS_WEB_IDENTITY_TOKEN_FILE are not set (they are set on the CryoCloud hub)")
    return from_web_identity(settings.role_arn, settings.web_identity_token_file, sts_endpoint=settings.sts_endpoint,
                             region=settings.region, endpoint_url=settings.s3_endpoint)
