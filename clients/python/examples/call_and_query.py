"""Call an API through api_service and read the call log through db_service.

    python clients/python/examples/call_and_query.py [URL]

Needs a running stack (``make run``). Errors arrive as typed exceptions from paca.client.
"""

from __future__ import annotations

import asyncio
import sys

from paca.api.v1 import api_service_pb2, api_service_pb2_grpc
from paca.client import ClientOptions, PacaError, connect
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc


async def main(url: str) -> int:
    options = ClientOptions(timeout_s=10)
    async with connect("127.0.0.1:50051", options) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        try:
            reply = await api.Call(api_service_pb2.CallRequest(url=url))
        except PacaError as error:
            print(f"call failed: {error} {error.field_violations}")
            return 1
        print(f"HTTP {reply.status_code}: {len(reply.body)} bytes, {reply.attempts} attempt(s)")
    async with connect("127.0.0.1:50052", options) as channel:
        db = db_service_pb2_grpc.DbServiceStub(channel)
        rows = await db.Query(
            db_service_pb2.QueryRequest(
                sql="SELECT provider, success, response_time_ms FROM external_api_logs "
                "ORDER BY id DESC LIMIT 5",
                read_only=True,
            )
        )
        for row in rows.rows:
            provider, success, elapsed = (v for v in row.values)
            ok = success.bool_value or success.int64_value == 1  # BOOLEAN, or 0/1 on MySQL
            print(f"{provider.string_value:<20} ok={ok} {elapsed.double_value:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9464/")))
