"""A real HTTP server on 127.0.0.1 (http.server in a thread) whose answers a test scripts.

Plays the LLM (chat completions) for the writer tests and the webhook receiver for the alert
queue tests. Every request is recorded (path, headers, JSON body); in-flight requests are
counted so tests can check a concurrency cap.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering


def chat_reply(content: str) -> Reply:
    """An OpenAI-style chat.completion answer."""
    return Reply(200, {
        "id": "chatcmpl-test", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    })


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedServer:
    """``respond(request, n)`` (n = 1-based request number) decides each reply."""

    def __init__(self, respond: Callable[[Request, int], Reply], port: int | None = None) -> None:
        self.respond = respond
        self.port = port or free_port()
        self.requests: list[Request] = []
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ScriptedServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = Request(self.path, {k: v for k, v in self.headers.items()}, self.rfile.read(length))
                with owner._lock:
                    owner.requests.append(req)
                    n = len(owner.requests)
                    owner.inflight += 1
                    owner.max_inflight = max(owner.max_inflight, owner.inflight)
                counted = True
                try:
                    reply = owner.respond(req, n)
                    if reply.delay:
                        time.sleep(reply.delay)
                    with owner._lock:  # done before answering: the client cannot start its next call earlier
                        owner.inflight -= 1
                        counted = False
                    if reply.drop:
                        self.close_connection = True
                        return
                    body = reply.body
                    if isinstance(body, dict):
                        body = json.dumps(body)
                    data = body.encode() if isinstance(body, str) else body
                    self.send_response(reply.status)
                    for k, v in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    if counted:
                        with owner._lock:
                            owner.inflight -= 1

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
