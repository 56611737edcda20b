"""OAuth2 client-credentials grant (RFC 6749 §4.4) with one cached token per client.

Token lifecycle (monotonic clock)::

    none ──first call──▶ fetching ──▶ valid ──refresh_at──▶ valid, refreshed in the background
                            ▲                  │                     (calls keep the old token)
                            └──expires_at, or an upstream 401 (invalidate)──┘

Fetches are single-flight: however many calls find the token missing or due, one request goes
to the token endpoint and they all await it. The client authenticates with HTTP Basic
(RFC 6749 §2.3.1, id and secret form-encoded first), which every provider must accept.

Hand-written rather than authlib's ``AsyncOAuth2Client``: that client is built on httpx, a second
HTTP stack with its own connection pool that would bypass this process's transport (its network
policy, spans with redacted URLs and shared pool); the grant itself is one form POST.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from api_service.auth.keys import KeyHealth, KeyState, key_label
from api_service.errors import UpstreamError, UpstreamUnavailable
from api_service.transport import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)
Sender = Callable[[HttpRequest], Awaitable[HttpResponse]]
# Lifetime assumed when the token endpoint does not say (expires_in is RECOMMENDED only).
DEFAULT_LIFETIME_S = 3600.0


@dataclass(frozen=True, slots=True)
class Token:
    value: str = field(repr=False)
    expires_at: float
    refresh_at: float


class ClientCredentials:
    """A token source for one OAuth2 client.

    Args:
        pool: Pool name (labels, errors).
        token_url: The token endpoint.
        client_id: Client id.
        client_secret: Client secret (kept out of repr, logs and errors).
        scope: Space-separated scopes ("" sends none).
        send: Sends the token request (the process's HTTP transport).
        refresh_margin_s: Refresh this long before expiry (at most half the lifetime).
        timeout_s: Time limit of a token request.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        pool: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str,
        send: Sender,
        *,
        refresh_margin_s: float = 60.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.label = key_label(pool, client_id)
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self._send = send
        self.refresh_margin_s = refresh_margin_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._token: Token | None = None
        self._inflight: asyncio.Future[Token] | None = None
        self.fetches = 0
        self.failures = 0
        self.uses = 0
        self._failing = False

    def __repr__(self) -> str:
        state = "valid" if self._token is not None else "none"
        return f"<ClientCredentials {self.label} token={state} fetches={self.fetches}>"

    @property
    def secrets(self) -> list[str]:
        """The client secret and the current token (for scrubbing text), never to be logged."""
        found = [self._client_secret]
        if self._token is not None:
            found.append(self._token.value)
        return found

    async def token(self) -> str:
        """A valid access token, fetching one if there is none.

        Raises:
            UpstreamUnavailable: The token endpoint failed (its answer's status, no secret).
        """
        self.uses += 1
        token, now = self._token, self._clock()
        if token is not None and now < token.expires_at:
            if now >= token.refresh_at:
                self._start_fetch()
            return token.value
        return (await asyncio.shield(self._start_fetch())).value

    def rotate(self, client_secret: str) -> None:
        """Use ``client_secret`` from now on; a changed secret drops the cached token."""
        if client_secret != self._client_secret:
            self._client_secret = client_secret
            self._token = None
            self._failing = False

    def invalidate(self, value: str) -> None:
        """Forget ``value`` (the upstream refused it); the next ``token()`` fetches anew."""
        if self._token is not None and self._token.value == value:
            self._token = None

    async def settled(self) -> None:
        """Wait until no token request is in flight (its failure is not raised here)."""
        inflight = self._inflight
        if inflight is not None:
            await asyncio.wait([inflight])

    def health(self) -> KeyHealth:
        state = KeyState.COOLING if self._failing else KeyState.ACTIVE
        return KeyHealth(self.pool, self.label, state, self.uses, None, 0.0)

    def _start_fetch(self) -> asyncio.Future[Token]:
        if self._inflight is None:
            task = asyncio.ensure_future(self._fetch())
            self._inflight = task
            task.add_done_callback(self._fetched)
        return self._inflight

    def _fetched(self, task: asyncio.Future[Token]) -> None:
        self._inflight = None
        if not task.cancelled() and task.exception() is not None:
            # Retrieved here: a background refresh nobody awaited must not be reported as lost.
            logger.warning("token request of pool %s failed: %s", self.pool, task.exception())

    async def _fetch(self) -> Token:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        pair = f"{quote(self._client_id, safe='')}:{quote(self._client_secret, safe='')}"
        request = HttpRequest(
            "POST",
            self.token_url,
            [
                ("Authorization", "Basic " + base64.b64encode(pair.encode()).decode()),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Accept", "application/json"),
            ],
            urlencode(form).encode(),
            self.timeout_s,
        )
        started = self._clock()
        try:
            response = await self._send(request)
        except UpstreamError as exc:
            raise self._failed(f"unreachable ({type(exc).__name__})") from None
        if response.status != 200:
            raise self._failed(f"answered HTTP {response.status}")
        try:
            data = json.loads(response.body)
            value = data["access_token"]
            lifetime = float(data.get("expires_in") or DEFAULT_LIFETIME_S)
        except (ValueError, KeyError, TypeError):
            raise self._failed("answered without a usable access_token") from None
        if not isinstance(value, str) or not value:
            raise self._failed("answered without a usable access_token")
        margin = min(self.refresh_margin_s, lifetime / 2)
        self._token = Token(value, started + lifetime, started + lifetime - margin)
        self.fetches += 1
        self._failing = False
        return self._token

    def _failed(self, what: str) -> UpstreamUnavailable:
        self.failures += 1
        self._failing = True
        return UpstreamUnavailable(f"token endpoint of pool {self.pool} {what}")
