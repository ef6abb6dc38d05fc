"""Credentials for the current mode: the one call a notebook makes, ``get_credentials(purpose)``.

It sits above :mod:`is2cloud.credentials` (the value and its sources) and :mod:`is2cloud.localcloud`
(the embedded cloud, which issues credentials through its STS), so neither of those imports the other
both ways.

* local mode: web identity against the embedded STS (``cloud``, or the process-wide local cloud).
* earthdata mode, ``purpose="read"`` (the NSIDC archive): earthaccess DAAC credentials.
* earthdata mode, ``purpose="write"`` (your bucket): the CryoCloud role via ``AWS_ROLE_ARN`` and
  ``AWS_WEB_IDENTITY_TOKEN_FILE``.
"""

from __future__ import annotations

import os
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
    role = os.environ.get("AWS_ROLE_ARN")
    token_file = settings.web_identity_token_file
    if not role or not token_file:
        raise CredentialsError("missing CryoCloud credentials: AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE are not set "
                               "(they are set on the CryoCloud hub)")
    return from_web_identity(role, token_file, region=settings.region)
