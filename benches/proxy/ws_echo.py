"""A minimal WebSocket echo server and a pipelining load client, for benches/proxy/bench.py.

Standard library only (asyncio). Just enough of RFC 6455 for a benchmark: the opening
handshake, binary frames with 7-, 16- and 64-bit lengths, masking, and close. Fragmented
messages, pings and extensions are not used by either side.

    python ws_echo.py serve --port 9001
    python ws_echo.py client --url ws://127.0.0.1:9001/ws --size 64 --window 32 --duration 5 \
        [--header 'Cookie: saml-session=...'] [--header 'Origin: http://127.0.0.1:8080']

The client keeps `window` messages in flight on one connection for `duration` seconds and
prints one JSON line: messages echoed, bytes of payload echoed, seconds, messages/s, MB/s.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import struct
import sys
import time
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_BINARY, OP_CLOSE = 0x2, 0x8


def frame_header(opcode, length, mask_key=None):
    first = 0x80 | opcode
    mask_bit = 0x80 if mask_key is not None else 0
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    return head + (mask_key or b"")


def xor_mask(payload, key):
    n = len(payload)
    if n == 0:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


def parse_frame(buf, pos):
    """(opcode, payload start, payload end, mask key or None) of the frame at `pos`, or None
    when the buffer does not hold the whole frame yet."""
    if len(buf) - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    length = b1 & 0x7F
    at = pos + 2
    if length == 126:
        if len(buf) - at < 2:
            return None
        (length,) = struct.unpack_from("!H", buf, at)
        at += 2
    elif length == 127:
        if len(buf) - at < 8:
            return None
        (length,) = struct.unpack_from("!Q", buf, at)
        at += 8
    key = None
    if b1 & 0x80:
        if len(buf) - at < 4:
            return None
        key = bytes(buf[at:at + 4])
        at += 4
    if len(buf) - at < length:
        return None
    return b0 & 0x0F, at, at + length, key


async def read_head(reader):
    """The header block of an HTTP/1.1 message, as text, without the blank line."""
    data = await reader.readuntil(b"\r\n\r\n")
    return data[:-4].decode("latin-1")


async def handle(reader, writer):
    try:
        head = await read_head(reader)
        headers = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        buf = bytearray()
        while True:
            chunk = await reader.read(1 << 18)
            if not chunk:
                break
            buf += chunk
            pos, out = 0, []
            while True:
                frame = parse_frame(buf, pos)
                if frame is None:
                    break
                opcode, start, end, mask = frame
                payload = bytes(buf[start:end])
                if mask is not None:
                    payload = xor_mask(payload, mask)
                pos = end
                if opcode == OP_CLOSE:
                    out.append(frame_header(OP_CLOSE, len(payload)) + payload)
                    writer.write(b"".join(out))
                    await writer.drain()
                    return
                out.append(frame_header(opcode, len(payload)))
                out.append(payload)
            if pos:
                del buf[:pos]
            if out:
                writer.write(b"".join(out))
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"ws echo listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


async def client(url, size, window, duration, extra_headers):
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             *extra_headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await read_head(reader)
    status = head.split("\r\n", 1)[0]
    if " 101 " not in status + " ":
        raise SystemExit(f"handshake failed: {status}")
    mask = os.urandom(4)
    payload = os.urandom(size)
    message = frame_header(OP_BINARY, size, mask) + xor_mask(payload, mask)
    batch = message * window
    writer.write(batch)
    sent = window
    received = 0
    buf = bytearray()
    start = time.perf_counter()
    deadline = start + duration
    sending = True
    while received < sent:
        chunk = await reader.read(1 << 18)
        if not chunk:
            raise SystemExit("connection closed during the run")
        buf += chunk
        pos, got = 0, 0
        while True:
            frame = parse_frame(buf, pos)
            if frame is None:
                break
            _opcode, _start, end, _key = frame
            if end - _start != size:
                raise SystemExit(f"echoed a frame of {end - _start} bytes, sent {size}")
            pos = end
            got += 1
        if pos:
            del buf[:pos]
        received += got
        if sending and got:
            if time.perf_counter() >= deadline:
                sending = False
            else:
                writer.write(message * got)
                sent += got
    elapsed = time.perf_counter() - start
    close_payload = struct.pack("!H", 1000)
    writer.write(frame_header(OP_CLOSE, 2, mask) + xor_mask(close_payload, mask))
    try:
        await asyncio.wait_for(writer.drain(), 2)
    except (asyncio.TimeoutError, ConnectionError):
        pass
    writer.close()
    result = {"messages": received, "bytes": received * size, "seconds": round(elapsed, 3),
              "messages_per_s": received / elapsed, "mb_per_s": received * size / elapsed / 1e6}
    print(json.dumps(result), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--size", type=int, default=64)
    c.add_argument("--window", type=int, default=32)
    c.add_argument("--duration", type=float, default=5.0)
    c.add_argument("--header", action="append", default=[])
    a = p.parse_args()
    if a.cmd == "serve":
        asyncio.run(serve(a.port))
    else:
        asyncio.run(client(a.url, a.size, a.window, a.duration, a.header))


if __name__ == "__main__":
    sys.exit(main())
