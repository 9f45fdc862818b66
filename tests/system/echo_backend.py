# A TCP echo server on 127.0.0.1:9001 inside the test container: ferry's backend.
import asyncio


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 9001)
    async with server:
        await server.serve_forever()


asyncio.run(main())
