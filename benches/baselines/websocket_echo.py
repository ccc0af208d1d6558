"""The WebSocket peer of forkecho's benchmark: Python websockets' own echo server (the one its
documentation starts with), asyncio, one process, on 127.0.0.1 and the port given; it prints
`listening on 127.0.0.1:PORT` once it serves."""

import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main(port):
    async with serve(echo, "127.0.0.1", port, max_size=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
