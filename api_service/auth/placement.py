"""Putting a credential on a request: bearer, a named header, a query parameter or basic auth.

A key placed in the query string is a secret inside the URL, and URLs reach call records, span
attributes and replies. The parameter's name is therefore registered with
:func:`paca_runtime.redact.add_secret_params` before the first request carries it, so every
``redact_url`` of the process hides it along with the usual names (``api_key``, ``token``, ...).
"""

from __future__ import annotations

import base64
from urllib.parse import urlencode, urlsplit

from paca.api.v1 import api_types_pb2

from api_service.transport import HttpRequest
from paca_runtime.redact import add_secret_params


def place(
    request: HttpRequest,
    secret: str,
    placement: api_types_pb2.KeyPlacement.ValueType,
    parameter_name: str,
) -> HttpRequest:
    """A copy of ``request`` carrying ``secret`` as ``placement`` says (unset: bearer).

    A header credential replaces any header of that name the caller set.
    """
    if placement == api_types_pb2.KEY_PLACEMENT_QUERY:
        add_secret_params(parameter_name)
        parts = urlsplit(request.url)
        separator = "&" if parts.query else "?"
        url = request.url.split("#", 1)[0] + separator + urlencode({parameter_name: secret})
        return request._replace(url=url)
    if placement == api_types_pb2.KEY_PLACEMENT_HEADER:
        name, value = parameter_name, secret
    elif placement == api_types_pb2.KEY_PLACEMENT_BASIC:
        name, value = "Authorization", "Basic " + base64.b64encode(secret.encode()).decode()
    else:
        name, value = "Authorization", f"Bearer {secret}"
    lowered = name.lower()
    headers = [(k, v) for k, v in request.headers if k.lower() != lowered]
    headers.append((name, value))
    return request._replace(headers=headers)
