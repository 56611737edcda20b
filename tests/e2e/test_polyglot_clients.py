"""The Go and Node.js clients, built from protos/, call the real stack."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import Upstream
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CLIENTS = Path(__file__).resolve().parents[2] / "clients"


def require(tool: str, ready: Path | None = None) -> str:
    path = shutil.which(tool)
    missing = path is None or (ready is not None and not ready.exists())
    if missing:
        message = f"{tool} client test needs `make clients` ({ready or tool} missing)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert path is not None
    return path


async def run_client_tests(command: list[str], cwd: Path, stack: Stack, upstream: Upstream) -> str:
    env = {
        **os.environ,
        "PACA_API_ADDRESS": stack.address("api_service"),
        "PACA_DB_ADDRESS": stack.address("db_service"),
        "PACA_UPSTREAM_URL": upstream.url,
    }
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


async def test_go_client_calls_api_and_db_and_health(stack: Stack, upstream: Upstream) -> None:
    go = require("go")
    output = await run_client_tests(
        [go, "test", "-count=1", "-v", "."], CLIENTS / "go", stack, upstream
    )
    for name in (
        "TestCallRelaysTheUpstreamResponse",
        "TestBadInputIsInvalidArgument",
        "TestQueryReturnsTypedRows",
        "TestEveryServiceIsServing",
    ):
        assert f"--- PASS: {name}" in output, output
    assert "SKIP" not in output


async def test_node_client_calls_api_and_db_and_health(stack: Stack, upstream: Upstream) -> None:
    node = require("node", CLIENTS / "node" / "node_modules" / "@grpc" / "grpc-js")
    output = await run_client_tests([node, "--test", "test/"], CLIENTS / "node", stack, upstream)
    assert "# pass 4" in output, output
    assert "# skipped 0" in output, output
