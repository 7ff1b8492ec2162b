"""The HTTP side of an OpenAI-compatible test double on 127.0.0.1: ``/v1/models`` and
``/v1/chat/completions`` routed to a handler's ``chat(request)``. The oracle teacher and the tests'
scripted server are such doubles; what they answer is theirs, the wire is this module's.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatServer(ThreadingHTTPServer):
    # The stdlib default backlog (5) drops connections beyond it; the client then waits a 1 s SYN
    # retransmit, which would show up as a client slowdown at 16 in flight.
    request_queue_size = 256


class ChatHandler(BaseHTTPRequestHandler):
    """Subclass with ``model_name()`` and ``chat(request) -> (status, body)``."""

    protocol_version = "HTTP/1.1"

    def model_name(self) -> str:
        raise NotImplementedError

    def chat(self, request: dict) -> tuple[int, dict]:
        raise NotImplementedError

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read counts, not access logs
        pass

    def serving(self) -> bool:
        """False once this handler's server was stopped: a kept-alive connection then drops without an answer,
        as a killed server's would."""
        return True

    def _drop(self) -> bool:
        if self.serving():
            return False
        self.close_connection = True
        return True

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout): nothing to answer

    def do_GET(self) -> None:
        if self._drop():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.model_name(), "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self._drop():
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            request = json.loads(raw)
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "body is not JSON"}})
            return
        self._send(*self.chat(request))


def serve(handler: type[ChatHandler], port: int = 0) -> ChatServer:
    """``handler`` answering on ``port`` (0: a free one) of 127.0.0.1, in a daemon thread."""
    server = ChatServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def shut(server: ChatServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
