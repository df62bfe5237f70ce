"""The emulator's HTTP/1.1 wire: a threaded loopback server that reads requests and writes answers.

It knows nothing of Braze: it turns bytes into a :class:`Request`, hands it to a handler and
writes the :class:`Answer` back (or closes the connection when the answer has no status). Only
the standard library is used, so the emulator cannot share a bug with the client.

Every answer is written with a single ``sendall`` on a socket with ``TCP_NODELAY``: a header
write followed by a separate body write would stall each keep-alive request by about 40 ms
(Nagle's algorithm against delayed ACKs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import http
import ipaddress
import logging
import socket
import socketserver
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Answer", "HttpServer", "Request", "connect_host", "url_for"]

log = logging.getLogger(__name__)

_MAX_LINE = 65536
_MAX_HEADERS = 100
_SERVER_NAME = "braze-cohorts-emulator"


@dataclasses.dataclass(frozen=True)
class Request:
    """One request as read from the wire.

    Attributes:
        method: The HTTP method.
        target: The request target as sent (path and query).
        head: The request line and header lines, raw (never the body).
        headers: Header names (lower case) mapped to their values.
        body: The body, de-chunked.
        keep_alive: Whether the connection stays open after the answer.
    """

    method: str
    target: str
    head: bytes
    headers: dict[str, str]
    body: bytes
    keep_alive: bool

    @property
    def path(self) -> str:
        """The target's path, without the query string."""
        return urllib.parse.urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """The target's query parameters (the last value of each name)."""
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query))


@dataclasses.dataclass(frozen=True)
class Answer:
    """An answer to write. ``status`` ``None`` means: close the connection without answering."""

    status: int | None
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()
    close: bool = False

    def render(self) -> bytes:
        """The whole answer as bytes: status line, headers and body."""
        status = self.status or 500
        lines = [
            f"HTTP/1.1 {status} {reason_phrase(status, 'Unknown')}",
            f"Server: {_SERVER_NAME}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            "Content-Type: application/json",
            f"Content-Length: {len(self.body)}",
            f"Connection: {'close' if self.close else 'keep-alive'}",
        ]
        lines.extend(f"{k}: {v}" for k, v in self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def reason_phrase(status: int, default: str) -> str:
    """The standard reason phrase of ``status``, or ``default`` for a code without one."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return default


def connect_host(bind_host: str) -> str:
    """The host a client on this machine connects to for a server bound to ``bind_host``.

    A wildcard bind (``0.0.0.0``, ``::`` or empty) listens on every address but is no address to
    connect to: it becomes the loopback address of its family. Other hosts are kept.
    """
    if bind_host in ("", "0.0.0.0"):  # noqa: S104 - recognising a wildcard, not binding one
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(bind_host)
    except ValueError:
        return bind_host
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return bind_host


def url_for(bind_host: str, port: int) -> str:
    """The ``http://`` base URL that reaches a server bound to ``bind_host:port`` from here."""
    host = connect_host(bind_host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


Handler = Callable[[Request], Answer]


class HttpServer:
    """A threaded HTTP/1.1 server: keep-alive, chunked bodies, ``Expect: 100-continue``.

    Args:
        host: The address to bind.
        port: The port; ``0`` picks a free one.
        handle: Called with each request; returns its answer.
        refuse: Called with a reason when the bytes are not a readable request; returns the
            ``400`` answer to send before closing.
    """

    def __init__(
        self, host: str, port: int, handle: Handler, refuse: Callable[[str], Answer]
    ) -> None:
        self._host = host
        self._port = port
        self._handle = handle
        self._refuse = refuse
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def running(self) -> bool:
        """Whether the server is running."""
        return self._server is not None

    @property
    def host(self) -> str:
        """The address bound (or to bind)."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def url(self) -> str:
        """The base URL that reaches the server from this machine."""
        return url_for(self._host, self.port)

    def start(self) -> None:
        """Bind and serve in a background thread; return once ready.

        Raises:
            RuntimeError: If already running.
            OSError: If the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self.stopping.clear()
        server = _Server((self._host, self._port), self)
        ready = threading.Event()

        def serve() -> None:
            ready.set()
            server.serve_forever(poll_interval=0.01)

        self._server = server
        self._thread = threading.Thread(target=serve, name="braze-emulator", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        """Stop serving, close every connection and wait for the handler threads. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        with server.connections_lock:
            open_connections = list(server.connections)
        for sock in open_connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = None
        self._thread = None


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: HttpServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Connection)

    def handle_error(self, request: Any, client_address: Any) -> None:  # pragma: no cover
        log.exception("emulator: unexpected error while handling a connection")


class _Connection(socketserver.BaseRequestHandler):
    server: _Server

    def setup(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(sock)
        self.rfile = sock.makefile("rb")

    def finish(self) -> None:
        sock: socket.socket = self.request
        with self.server.connections_lock:
            self.server.connections.discard(sock)
        self.rfile.close()

    def handle(self) -> None:
        owner = self.server.owner
        sock: socket.socket = self.request
        try:
            while True:
                request = self._read_request()
                if request is None:
                    return
                if isinstance(request, str):
                    sock.sendall(dataclasses.replace(owner._refuse(request), close=True).render())
                    return
                answer = owner._handle(request)
                if answer.status is None:
                    sock.shutdown(socket.SHUT_RDWR)
                    return
                sock.sendall(answer.render())
                if answer.close:
                    return
        except (OSError, ValueError):
            # The peer went away (or the server stopped): nothing left to answer.
            return

    def _read_request(self) -> Request | str | None:
        """Read one request, or the reason it is unreadable, or ``None`` at end of stream."""
        line = self.rfile.readline(_MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests
            line = self.rfile.readline(_MAX_LINE + 1)
        if not line:
            return None
        if len(line) > _MAX_LINE:
            return "Request line too long"
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return "Malformed request line"
        method, target, version = parts
        head = [line]
        headers: dict[str, str] = {}
        while True:
            hline = self.rfile.readline(_MAX_LINE + 1)
            if not hline:
                return None
            if hline in (b"\r\n", b"\n"):
                break
            head.append(hline)
            if len(head) > _MAX_HEADERS or len(hline) > _MAX_LINE:
                return "Request headers too large"
            name, sep, value = hline.decode("latin-1").partition(":")
            if not sep:
                return "Malformed header"
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        if headers.get("expect", "").lower() == "100-continue":
            self.request.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self._read_body(headers)
        if body is None or isinstance(body, str):
            return body
        return Request(method, target, b"".join(head), headers, body, keep_alive)

    def _read_body(self, headers: dict[str, str]) -> bytes | str | None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return "Invalid Content-Length"
        if length < 0:
            return "Invalid Content-Length"
        body = self.rfile.read(length) if length else b""
        return body if len(body) == length else None

    def _read_chunked(self) -> bytes | str:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline(_MAX_LINE + 1)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                return "Malformed chunked body"
            if size == 0:
                while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(_MAX_LINE + 1)
