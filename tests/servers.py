"""Real servers on 127.0.0.1 for the remote tests (started once by fixtures in conftest.py, stopped after them):
moto's S3 server, which can hold a tar's upload until told to let it go, and a standard-library HTTP server with
Range support that misbehaves on demand."""

import io
import logging
import threading
import uuid
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.1"  # never another address


class S3:
    """moto's S3 server (its WSGI app under werkzeug, as ThreadedMotoServer runs it), on HOST."""

    def __init__(self):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.held, self.release, self.answered = threading.Event(), threading.Event(), threading.Event()
        self.holding, self.let_through, self.puts = False, 0, 0
        self.app = DomainDispatcherApplication(create_backend_app)
        self.server = make_server(HOST, 0, self.wsgi, threaded=True)
        self.url = f"http://{HOST}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hold(self, let_through: int) -> None:
        """From now on, let `let_through` tar uploads pass, then hold the next until release is set."""
        self.held.clear(), self.release.clear(), self.answered.clear()
        self.holding, self.let_through, self.puts = True, let_through, 0

    def wsgi(self, environ, start_response):
        """moto's app. A held tar's PUT waits (at most 20 s) before its body is read. One whose body did not all
        arrive gets a 400 without reaching moto, as S3 drops a PUT it did not receive whole (a small body may well
        have arrived whole before its client was killed: the kernel had it)."""
        if self.holding and environ["REQUEST_METHOD"] == "PUT" and environ["PATH_INFO"].endswith(".tar"):
            self.puts += 1
            if self.puts > self.let_through:
                self.held.set()
                self.release.wait(20)
                size = int(environ.get("CONTENT_LENGTH") or 0)
                try:
                    body = environ["wsgi.input"].read(size)
                except OSError:
                    body = b""
                if len(body) < size:
                    self.answered.set()
                    start_response("400 Bad Request", [("Content-Length", "0")])
                    return [b""]
                environ["wsgi.input"] = io.BytesIO(body)
                answer = self.app(environ, start_response)
                self.answered.set()
                return answer
        return self.app(environ, start_response)

    def bucket(self) -> str:
        """A new, empty bucket: its s3:// URL."""
        import fsspec

        name = f"b{uuid.uuid4().hex[:12]}"
        fsspec.filesystem("s3").mkdir(name)
        return f"s3://{name}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.thread.join(10)


class Web:
    """A folder served over HTTP on HOST, with Range requests. fail(name, *faults) makes the next requests of that
    file misbehave, one fault each, in order: 503, 404, 403, "drop" (close halfway), "short" / "long" (a file 100
    bytes shorter or longer), "flip" (one byte changed), "ignore-range" (200 and the whole file), "slow" (a byte
    every 0.2 s, 40 at most). Every GET is counted, and the first byte it asked for is kept."""

    def __init__(self, folder: Path):
        self.folder, self.faults, self.gets, self.starts = folder, defaultdict(list), Counter(), defaultdict(list)
        self.sent = 0
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                web.answer(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail(self, name: str, *faults) -> None:
        self.faults[name] += [str(f) for f in faults]

    def reset(self) -> None:
        self.faults.clear(), self.gets.clear(), self.starts.clear()
        self.sent = 0

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.lstrip("/").split("?")[0]
        self.gets[name] += 1
        fault = self.faults[name].pop(0) if self.faults[name] else None
        path = self.folder / name
        if fault in ("503", "404", "403") or not path.is_file():
            handler.send_error(int(fault or 404))
            return
        data = path.read_bytes()
        if fault == "short":
            data = data[:-100]
        elif fault == "long":
            data += bytes(100)
        elif fault == "flip":
            data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1:]
        start, end = _range(handler.headers.get("Range"), len(data))
        self.starts[name].append(start)
        if fault == "ignore-range" or start is None:
            handler.send_response(200)
            start, end = 0, len(data)
        elif start >= len(data):
            handler.send_error(416)
            return
        else:
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        body = data[start:end]
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        self.send(handler, body, fault)

    def send(self, handler, body: bytes, fault: str | None) -> None:
        try:
            self._send(handler, body, fault)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up on us, as it should
            handler.close_connection = True

    def _send(self, handler, body: bytes, fault: str | None) -> None:
        if fault == "drop":
            body = body[:len(body) // 2]
        if fault == "slow":
            for i in range(min(len(body), 40)):
                handler.wfile.write(body[i:i + 1])
                handler.wfile.flush()
                threading.Event().wait(0.2)
            handler.close_connection = True
            return
        handler.wfile.write(body)
        self.sent += len(body)
        if fault == "drop":
            handler.close_connection = True

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


def _range(header: str | None, size: int) -> tuple[int | None, int]:
    if not header or not header.startswith("bytes="):
        return None, size
    first, _, last = header[6:].partition("-")
    return int(first), min(int(last) + 1, size) if last else size
