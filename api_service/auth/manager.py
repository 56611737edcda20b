"""AuthManager: the credentials of every endpoint that has an auth policy.

An endpoint's ``auth`` names a pool (``key_pool``, else its provider). A key pool puts one of its
keys on each request as the policy says (bearer, header, query parameter, basic) and learns from
the answer (see :mod:`api_service.auth.keys`); an OAuth2 pool puts its client's access token on
as a bearer token. A request refused with 401 or 403 is sent once more with another credential
(another key, or a freshly fetched token) when there is one: a revoked key costs its first call
nothing.

Secrets stay inside: errors that pass through here are scrubbed of every known secret, and
``health()`` names keys by label only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

from paca.api.v1 import api_types_pb2

from api_service.auth.keys import (
    KeyHealth,
    KeyPool,
    KeyState,
    NoUsableKey,
    Strategy,
    UnknownKeyPool,
)
from api_service.auth.oauth import ClientCredentials
from api_service.auth.placement import place
from api_service.auth.settings import AuthSettings, pool_setting
from api_service.auth.sources import read_sources
from api_service.errors import UpstreamError, UpstreamUnavailable
from api_service.transport import HttpRequest, HttpResponse
from paca_runtime.redact import REDACTED

logger = logging.getLogger(__name__)
Sender = Callable[[HttpRequest], Awaitable[HttpResponse]]
# Headers a key pool learns from (quotas, Retry-After).
LEARNED_HEADERS = (
    "retry-after",
    "ratelimit",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)


class Reply(Protocol):
    """A whole or streamed response: a status and headers."""

    @property
    def status(self) -> int: ...

    def header(self, name: str) -> str | None: ...


R = TypeVar("R", bound=Reply)
# Answers that condemn the credential rather than the request.
REFUSED = frozenset({401, 403})
_KEY_STATES = {
    KeyState.ACTIVE: api_types_pb2.KEY_STATE_ACTIVE,
    KeyState.COOLING: api_types_pb2.KEY_STATE_COOLING,
    KeyState.RESTED: api_types_pb2.KEY_STATE_RESTED,
    KeyState.QUARANTINED: api_types_pb2.KEY_STATE_QUARANTINED,
}


async def _no_sender(request: HttpRequest) -> HttpResponse:
    raise UpstreamUnavailable("HTTP transport is not bound to the auth manager")


class AuthManager:
    """Key pools and OAuth2 clients by pool name.

    Lifecycle: build (reads every secret source; a missing one fails here, naming the setting),
    ``bind(send)`` to the HTTP transport for token requests, use; ``reload()`` re-reads the
    sources and lifts quarantines.

    Args:
        settings: The pools.
        send: Sends token requests (can be bound later with ``bind``).
        environ: Environment for ``env:`` sources (default: the process's).
        clock: Monotonic seconds.
        wall_clock: Epoch seconds (epoch quota resets).
    """

    def __init__(
        self,
        settings: AuthSettings | None = None,
        *,
        send: Sender | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or AuthSettings()
        self._environ = environ
        self._clock = clock
        self._wall_clock = wall_clock
        self._send: Sender = send or _no_sender
        self.pools: dict[str, KeyPool] = {}
        self.clients: dict[str, ClientCredentials] = {}
        self.retried = 0
        self.reload()

    def __repr__(self) -> str:
        return f"<AuthManager pools={sorted(self.pools)} oauth={sorted(self.clients)}>"

    def bind(self, send: Sender) -> None:
        """Send token requests with ``send`` (the process's HTTP transport)."""
        self._send = send

    def reload(self) -> None:
        """Re-read every key source; keys kept keep their counters and leave quarantine.

        All or nothing: when a source fails (SettingsError naming it), nothing changes.
        """
        read = {
            pool.name: read_sources(
                [pool.client_secret_source] if pool.is_oauth else pool.key_sources,
                pool_setting(pool.name, "CLIENT_SECRET" if pool.is_oauth else "KEYS"),
                self._environ,
            )
            for pool in self.settings.pools
        }
        for pool in self.settings.pools:
            secrets = read[pool.name]
            client = self.clients.get(pool.name)
            existing = self.pools.get(pool.name)
            if client is not None:
                client.rotate(secrets[0])
            elif pool.is_oauth:
                self.clients[pool.name] = ClientCredentials(
                    pool.name,
                    pool.token_url,
                    pool.client_id,
                    secrets[0],
                    pool.scope,
                    lambda request: self._send(request),
                    refresh_margin_s=self.settings.refresh_margin_s,
                    clock=self._clock,
                )
            elif existing is not None:
                existing.reload(secrets)
            else:
                self.pools[pool.name] = KeyPool(
                    pool.name,
                    secrets,
                    quarantine_s=pool.quarantine_s,
                    cooldown_s=self.settings.cooldown_s,
                    quota_reserve=self.settings.quota_reserve,
                    clock=self._clock,
                    wall_clock=self._wall_clock,
                )

    @staticmethod
    def applies(endpoint: api_types_pb2.Endpoint | None) -> bool:
        """Whether calls of ``endpoint`` carry a credential of a pool."""
        return endpoint is not None and endpoint.HasField("auth")

    async def send(
        self,
        endpoint: api_types_pb2.Endpoint,
        request: HttpRequest,
        send: Callable[[HttpRequest], Awaitable[R]],
        discard: Callable[[R], Awaitable[None]] | None = None,
    ) -> R:
        """Send ``request`` with a credential of the endpoint's pool; once more on 401/403.

        A refused reply that is followed by another try is handed to ``discard`` first (a
        streamed body is closed there).

        Raises:
            UnknownKeyPool: No pool of that name is configured.
            NoUsableKey: Every key of the pool is resting.
            UpstreamError: As ``send`` raises it, scrubbed of secrets.
        """
        name = endpoint.auth.key_pool or endpoint.provider
        try:
            if name in self.clients:
                return await self._send_oauth(self.clients[name], request, send, discard)
            pool = self.pools.get(name)
            if pool is None:
                raise UnknownKeyPool(name)
            return await self._send_key(pool, endpoint.auth, request, send, discard)
        except UpstreamError as exc:
            exc.args = tuple(self.scrub(str(arg)) for arg in exc.args)
            raise

    async def _send_key(
        self,
        pool: KeyPool,
        policy: api_types_pb2.AuthPolicy,
        request: HttpRequest,
        send: Callable[[HttpRequest], Awaitable[R]],
        discard: Callable[[R], Awaitable[None]] | None,
    ) -> R:
        strategy = (
            Strategy.LEAST_USED
            if policy.strategy == api_types_pb2.KEY_STRATEGY_LEAST_USED
            else Strategy.ROUND_ROBIN
        )
        refused: R | None = None
        for _ in range(2):
            try:
                key = pool.acquire(strategy)
            except NoUsableKey:
                if refused is not None:
                    return refused  # no other key to try: the caller sees the refusal
                raise
            if refused is not None and discard is not None:
                await discard(refused)
            status: int | None = None
            headers: list[tuple[str, str]] = []
            try:
                response = await send(
                    place(request, key.secret, policy.placement, policy.parameter_name)
                )
                status = response.status
                headers = [(n, v) for n in LEARNED_HEADERS if (v := response.header(n)) is not None]
            finally:
                pool.release(key, status, headers)
            if response.status not in REFUSED or refused is not None:
                return response
            logger.warning("key %s refused with HTTP %d, quarantined", key.label, response.status)
            refused = response
            self.retried += 1
        assert refused is not None
        return refused

    async def _send_oauth(
        self,
        client: ClientCredentials,
        request: HttpRequest,
        send: Callable[[HttpRequest], Awaitable[R]],
        discard: Callable[[R], Awaitable[None]] | None,
    ) -> R:
        token = await client.token()
        response = await send(place(request, token, api_types_pb2.KEY_PLACEMENT_BEARER, ""))
        if response.status != 401:
            return response
        # The token was revoked or expired early: fetch a new one, try once more.
        client.invalidate(token)
        self.retried += 1
        if discard is not None:
            await discard(response)
        token = await client.token()
        return await send(place(request, token, api_types_pb2.KEY_PLACEMENT_BEARER, ""))

    def health(self) -> list[KeyHealth]:
        """Every key and OAuth2 client, by pool then label; no secret in it."""
        found = [h for pool in self.pools.values() for h in pool.health()]
        found += [client.health() for client in self.clients.values()]
        return sorted(found, key=lambda h: (h.pool, h.label))

    def messages(self) -> list[api_types_pb2.KeyHealth]:
        """``health()`` as the KeyHealth messages of GetStats."""
        found = []
        for health in self.health():
            message = api_types_pb2.KeyHealth(
                pool=health.pool,
                label=health.label,
                state=_KEY_STATES[health.state],
                uses=health.uses,
                quota_remaining=-1 if health.quota_remaining is None else health.quota_remaining,
            )
            if math.isfinite(health.available_in_s):
                message.available_in.FromMilliseconds(round(health.available_in_s * 1000))
            found.append(message)
        return found

    def scrub(self, text: str) -> str:
        """``text`` with every secret known here replaced by REDACTED."""
        for secret in self._secrets():
            if secret and secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def _secrets(self) -> list[str]:
        found = [s for pool in self.pools.values() for s in pool.secrets]
        found += [s for client in self.clients.values() for s in client.secrets]
        return found
