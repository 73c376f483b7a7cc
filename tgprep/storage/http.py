"""GET a byte range over http(s):// with the standard library's client, every wait bounded.

Why not urllib or fsspec's HTTP file system: a fetch here must send a Range request and see whether the server
honoured it (206) or sent the whole file (200; `python -m http.server` does), bound the time each window of bytes
may take (a server that sends a byte every few seconds never trips a socket timeout), and tell a 404 from a 503.
http.client says all of that in a few lines and imports nothing.
"""

import http.client
import re
import time
import urllib.parse
from typing import Iterator

READ = 1 << 16   # bytes asked of the socket at a time


class Transient(OSError):
    """A failure worth another try: a dropped connection, a timeout, a server too slow, a 5xx or a 429."""


def get(url: str, start: int, end: int, timeout: float, window: int) -> tuple[int, Iterator[bytes]]:
    """Bytes [start, end) of url: (the offset the body starts at, its chunks). The offset is start, or 0 from a
    server that ignores Range. Connecting, each read, and each `window` bytes must take under `timeout` seconds."""
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", target, headers={"Range": f"bytes={start}-{end - 1}"})
        response = conn.getresponse()
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        raise Transient(f"no answer ({_what(e)})") from None
    if response.status == 200:
        return 0, _body(conn, response, timeout, window)
    if response.status == 206:
        return _range_start(conn, response, start), _body(conn, response, timeout, window)
    conn.close()
    if response.status == 416:  # the object ends before start
        return start, iter(())
    raise status_error(response.status, response.reason)


def status_error(status: int, reason: str) -> OSError:
    """What an HTTP status means for a fetch: gone, refused, worth another try, or an error to report."""
    said = f"HTTP {status} {reason}".strip()
    if status in (404, 410):
        return FileNotFoundError(f"not found ({said})")
    if status in (401, 403):
        return PermissionError(f"access denied ({said})")
    if status in (408, 429) or status >= 500:
        return Transient(said)
    return OSError(f"{said} (redirects are not followed: give the final URL)" if 300 <= status < 400 else said)


def _range_start(conn, response, start: int) -> int:
    found = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.getheader("Content-Range", ""))
    if found is None or int(found[1]) != start:
        conn.close()
        raise Transient(f"a Range answer that does not start at byte {start}")
    return start


def _body(conn, response, timeout: float, window: int):
    """The response's bytes as they come; a window of bytes that takes over `timeout` s ends it as Transient."""
    try:
        began, got = time.monotonic(), 0
        while True:
            try:
                data = response.read1(READ)
            except (OSError, http.client.HTTPException) as e:
                raise Transient(f"connection lost ({_what(e)})") from None
            if not data:
                if response.length:  # Content-Length promised more
                    raise Transient(f"connection closed {response.length} bytes before the end")
                return
            yield data
            got += len(data)
            if got >= window:
                began, got = time.monotonic(), 0
            elif time.monotonic() - began > timeout:
                raise Transient(f"under {window} bytes in {timeout:g} s: the server sends too slowly")
    finally:
        conn.close()


def _what(error: BaseException) -> str:
    return str(error) or type(error).__name__

