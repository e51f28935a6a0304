"""A botocore client plugin (``BOTOCORE_EXPERIMENTAL__PLUGINS=modelhost=modelhost.botocore_plugin``,
printed by ``modelhost env``): clients created with an explicit AWS URL send to the configured endpoint.

Why: ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``) reach every client botocore builds
*without* an ``endpoint_url``; an explicit one wins over any configuration (botocore ``args.py``,
``_compute_configured_endpoint_url``). The sagemaker SDK passes one for STS
(``sagemaker.utils.sts_regional_endpoint``: ``get_execution_role()``, ``Session.account_id()``,
the default bucket name), so with only the environment set those calls go to
``https://sts.<region>.amazonaws.com``. botocore loads the modules named in that variable for every
client it creates; this one registers, on such a client only, a ``before-sign`` handler that moves
the request to the configured endpoint (signed for it: the signer reads the new host). Nothing of
the SDK or botocore is patched, and no other client is touched. Imports the standard library only.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

AWS_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")


def _configured_url(service_id: str) -> str | None:
    """The endpoint the environment configures for this service (service-specific first), as botocore reads it."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    specific = "AWS_ENDPOINT_URL_" + service_id.replace(" ", "_").replace("-", "_").upper()
    return os.environ.get(specific) or os.environ.get("AWS_ENDPOINT_URL") or None


def _is_aws(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host.endswith(AWS_SUFFIXES)


def initialize_client_plugin(client: Any) -> None:
    """botocore's plugin entry point, called with each new client."""
    meta = client.meta
    target = _configured_url(meta.service_model.service_id.hyphenize())
    config = getattr(meta, "config", None)
    if target is None or getattr(config, "ignore_configured_endpoint_urls", None):
        return
    if not _is_aws(meta.endpoint_url):
        return  # no explicit AWS URL: botocore already uses the configured endpoint (or the user's)
    base = urlsplit(target)

    def redirect(request: Any, **_kwargs: Any) -> None:
        url = urlsplit(request.url)
        if not _is_aws(request.url):
            return
        path = base.path.rstrip("/") + url.path
        request.url = urlunsplit((base.scheme, base.netloc, path, url.query, url.fragment))
        if "Host" in request.headers:  # the signer and the HTTP client take the new one from the URL
            del request.headers["Host"]

    meta.events.register("before-sign", redirect)
