"""Bearer-token auth for every call kind, over a real token-protected server and a channel from
``open_channel``: the token reaches the server on unary and streaming calls alike, and a refused
call of any kind ends with UNAUTHENTICATED or PERMISSION_DENIED (never UNKNOWN).

The server is the stack's own (GrpcServer: tracing, then auth) with a generic handler under
DbService's name, so the scopes come from METHOD_SCOPES; no RPC of the stack streams requests
only, so ``Upload`` (not listed, hence db.admin) stands for that kind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from paca_runtime.channels import open_channel
from paca_runtime.security import SecuritySettings, TokenEntry, TokenTable, token_digest
from paca_runtime.server import GrpcServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

SERVICE = "paca.db.v1.DbService"
# Token -> scopes.
TOKENS = {"admin-token": {"db.admin"}, "monitor-token": {"monitor.read"}}


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"echo:" + request


async def _echo_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for part in (b"one:", b"two:"):
        yield part + request


async def _join(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    return b"+".join([r async for r in requests])


async def _echo_each(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield b"echo:" + request


HANDLERS = {
    "Query": grpc.unary_unary_rpc_method_handler(_echo),
    "StreamQuery": grpc.unary_stream_rpc_method_handler(_echo_stream),
    "Upload": grpc.stream_unary_rpc_method_handler(_join),
    "Transaction": grpc.stream_stream_rpc_method_handler(_echo_each),
}


async def _requests() -> AsyncIterator[bytes]:
    for request in (b"a", b"b"):
        yield request


# Each kind's call on a channel and the replies it must bring back.
Call = Callable[[grpc.aio.Channel], Awaitable[list[bytes]]]


async def _unary_unary(channel: grpc.aio.Channel) -> list[bytes]:
    return [await channel.unary_unary(f"/{SERVICE}/Query")(b"a")]


async def _unary_stream(channel: grpc.aio.Channel) -> list[bytes]:
    return [reply async for reply in channel.unary_stream(f"/{SERVICE}/StreamQuery")(b"a")]


async def _stream_unary(channel: grpc.aio.Channel) -> list[bytes]:
    return [await channel.stream_unary(f"/{SERVICE}/Upload")(_requests())]


async def _stream_stream(channel: grpc.aio.Channel) -> list[bytes]:
    call = channel.stream_stream(f"/{SERVICE}/Transaction")(_requests())
    return [reply async for reply in call]


CALLS: dict[str, tuple[Call, list[bytes]]] = {
    "unary_unary": (_unary_unary, [b"echo:a"]),
    "unary_stream": (_unary_stream, [b"one:a", b"two:a"]),
    "stream_unary": (_stream_unary, [b"a+b"]),
    "stream_stream": (_stream_stream, [b"echo:a", b"echo:b"]),
}


# A refused call sends no request message: the refusal may end the call before a write would
# reach it, and the client library then reports its failed write, not the server's status.
async def _stream_unary_unsent(channel: grpc.aio.Channel) -> list[bytes]:
    return [await channel.stream_unary(f"/{SERVICE}/Upload")()]


async def _stream_stream_unsent(channel: grpc.aio.Channel) -> list[bytes]:
    reply = await channel.stream_stream(f"/{SERVICE}/Transaction")().read()
    return [] if reply is grpc.aio.EOF else [reply]


REFUSED: dict[str, Call] = {
    "unary_unary": _unary_unary,
    "unary_stream": _unary_stream,
    "stream_unary": _stream_unary_unsent,
    "stream_stream": _stream_stream_unsent,
}


@pytest.fixture
async def address() -> AsyncIterator[str]:
    tokens = TokenTable(
        tuple(
            TokenEntry(token.partition("-")[0], token_digest(token), frozenset(scopes))
            for token, scopes in TOKENS.items()
        )
    )
    server = GrpcServer("auth-test", "127.0.0.1:0", security=SecuritySettings(tokens=tokens))
    server.add_service(
        SERVICE,
        lambda grpc_server: grpc_server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, HANDLERS),)
        ),
    )
    await server.start()
    try:
        yield server.bound_address
    finally:
        await server.stop(grace_s=1.0)


async def _refusal(address: str, token: str, call: Call) -> grpc.aio.AioRpcError:
    async with open_channel(address, SecuritySettings(service_token=token)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(channel)
    return caught.value


@pytest.mark.parametrize("kind", sorted(CALLS))
async def test_a_call_of_every_kind_through_open_channel_carries_the_channel_token(
    address: str, kind: str
) -> None:
    call, replies = CALLS[kind]
    async with open_channel(address, SecuritySettings(service_token="admin-token")) as channel:
        assert await call(channel) == replies


@pytest.mark.parametrize("kind", sorted(REFUSED))
async def test_a_call_of_every_kind_with_an_unknown_token_is_unauthenticated(
    address: str, kind: str
) -> None:
    error = await _refusal(address, "no-such-token", REFUSED[kind])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "missing or invalid bearer token"


@pytest.mark.parametrize("kind", sorted(REFUSED))
async def test_a_call_of_every_kind_without_the_scope_is_permission_denied(
    address: str, kind: str
) -> None:
    error = await _refusal(address, "monitor-token", REFUSED[kind])
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (error.details() or "").startswith("the token lacks scope db.")


def test_the_token_interceptors_never_show_the_token() -> None:
    from paca_runtime.auth import bearer_token_interceptors

    shown: list[Any] = [repr(i) for i in bearer_token_interceptors("s3cret-token")]
    assert len(shown) == 4
    assert not [r for r in shown if "s3cret" in r]
