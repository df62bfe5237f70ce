"""A real HTTP server on 127.0.0.1 that plays a webhook: it answers from a script.

Each request takes the next step of :attr:`HookServer.script` (the last step repeats): an HTTP
status to answer, or ``"hang"`` to answer nothing until the test ends (so the client times out).
Received bodies are kept, parsed as JSON.
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HookServer:
    """The server; use the ``hook`` fixture."""

    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        self.script: list[int | str] = [200]
        self.received: list[tuple[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with server._lock:
                    step = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                    server.received.append((self.path, json.loads(body)))
                    server.headers.append(dict(self.headers.items()))
                if step == "hang":
                    server.release.wait(30)
                    return
                assert isinstance(step, int)
                self.send_response(step)
                if 300 <= step < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        """The URL of ``path`` on this server."""
        host, port = self.httpd.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}{path}"

    def __enter__(self) -> HookServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
