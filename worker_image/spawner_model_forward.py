#!/usr/bin/python3 -IS
"""spawner-model-forward: the agent's loopback door to the fleet's model gateway.

Started (and restarted) by spawner-runnerd when the spawner mounts the agent's run folder on
/run/spawner. Listens on 127.0.0.1:4100 inside the container (network `none` has a loopback) and
splices each connection, bytes unchanged both ways, to /run/spawner/model.sock, the Unix socket
the gateway binds for this agent alone. The agent's CLI gets ANTHROPIC_BASE_URL (or
OPENAI_BASE_URL) = http://127.0.0.1:4100 and a placeholder key; the gateway puts the real key on
each request. Nothing here is trusted by the gateway (the socket is the identity), so the agent
killing or replacing this process only ever affects its own model access. Stdlib only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

LISTEN = ("127.0.0.1", 4100)
GATEWAY_SOCKET = "/run/spawner/model.sock"
CHUNK = 262144


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the request is complete, the answer may still come
    except (ConnectionError, OSError):
        writer.close()


async def _handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    try:
        gate_r, gate_w = await asyncio.open_unix_connection(GATEWAY_SOCKET, limit=CHUNK)
    except OSError:
        # no gateway socket (no model configured, or the gateway is down): the CLI sees a refusal
        client_w.close()
        return
    try:
        await asyncio.gather(_pipe(client_r, gate_w), _pipe(gate_r, client_w))
    finally:
        for w in (client_w, gate_w):
            with contextlib.suppress(Exception):
                w.close()


async def _serve() -> None:
    server = await asyncio.start_server(_handle, *LISTEN, limit=CHUNK, reuse_address=True, backlog=256)
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve())
