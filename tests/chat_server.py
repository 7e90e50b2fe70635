"""A real HTTP server on 127.0.0.1 that speaks OpenAI's `/v1/chat/completions`, for tests and the
naming benchmark: the stand-in for vLLM or xAI (docs/architecture.md, *Tests*).

It records every request (body, headers, topic ids, arrival and finish times) and the most
requests it ever held at once. By default it answers, after `latency_s`, valid JSON naming every
id it was sent, deterministically from the prompt (`expected_name`). A `script` decides otherwise
per request: given the ids sent and how many times this same prompt came before, it returns one
of REPLIES. A prompt without ids (one topic per request, as BERTopic sends) gets a plain
"topic: <label>" answer.

In a test:  `with ChatServer(latency_s=0.2) as server: ... server.url ...`
As a process (the benchmark):  `python tests/chat_server.py --latency 1` prints its URL; GET
/stats gives the counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLIES = ("ok", "malformed", "wrong_ids", "429", "500", "slow", "401_echo", "strict")
Script = Callable[[list[str], int], str]

_ID = re.compile(r'"id":\s*"([^"]+)"')
_WORD = re.compile(r"[a-z]{4,}")


@dataclass
class Recorded:
    body: dict[str, Any]
    headers: dict[str, str]
    ids: list[str]
    prompt: str  # a hash of the messages: the same prompt sent again has the same one
    reply: str
    arrived: float
    finished: float | None = None
    status: int | None = None


@dataclass
class ChatServer:
    latency_s: float = 0.0
    script: Script | None = None
    retry_after: str = "1"
    slow_s: float = 2.0
    requests: list[Recorded] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._seen: Counter[str] = Counter()
        self._httpd: ThreadingHTTPServer | None = None

    # --- life ---------------------------------------------------------------------------------

    def start(self, port: int = 0) -> ChatServer:
        self._httpd = _Server(("127.0.0.1", port), _handler(self))
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def reset(self) -> None:
        """Forgets what was recorded (not the script)."""
        with self._lock:
            self.requests.clear()
            self._seen.clear()
            self.max_in_flight = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": len(self.requests),
                "ids": sum(len(r.ids) for r in self.requests),
                "max_in_flight": self.max_in_flight,
            }

    # --- answers ------------------------------------------------------------------------------

    def _answer(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[Recorded, int, dict[str, str], bytes]:
        messages = body.get("messages") or []
        prompt = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
        last = str(messages[-1].get("content", "")) if messages else ""  # the topics come last
        ids = _ID.findall(last)
        with self._lock:
            seen = self._seen[prompt]
            self._seen[prompt] += 1
            reply = self.script(ids, seen) if self.script else "ok"
            record = Recorded(body, headers, ids, prompt, reply, arrived=time.monotonic())
            self.requests.append(record)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        time.sleep(self.slow_s if reply == "slow" else self.latency_s)
        status, extra, payload = self._reply(reply, ids, last, headers, body)
        record.status = status
        return record, status, extra, payload

    def _reply(
        self, reply: str, ids: list[str], last: str, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, str], bytes]:
        prompt_text = "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])
        if reply == "429":
            return 429, {"Retry-After": self.retry_after}, b'{"error": {"message": "rate limited"}}'
        if reply == "500":
            return 500, {}, b'{"error": {"message": "internal error"}}'
        if reply == "strict" and "chat_template_kwargs" in body:  # as OpenAI's API answers it
            return (
                400,
                {},
                b'{"error": {"message": "Unrecognized request argument supplied: chat_template_kwargs"}}',
            )
        if reply == "401_echo":  # a careless server that echoes the key it refused
            text = json.dumps({"error": {"message": f"bad key: {headers.get('authorization', '')}"}})
            return 401, {}, text.encode()
        if ids:
            topics = _topics(last)
            answered = [{"id": i, **expected_name(topics.get(i, []))} for i in ids]
            if reply == "wrong_ids":
                answered[0]["id"] = answered[0]["id"] + "-x"
                answered = answered[:-1]
            content = json.dumps({"topics": answered})
        else:
            content = "topic: " + expected_name(_WORD.findall(last.lower())[-3:])["name"]
        if reply == "malformed":
            content = content[: len(content) // 2]  # cut off mid-JSON, as a truncated reply is
        completion = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": len(prompt_text) // 4,
                "completion_tokens": len(content) // 4,
                "total_tokens": (len(prompt_text) + len(content)) // 4,
            },
        }
        return 200, {}, json.dumps(completion).encode()

    def _done(self, record: Recorded) -> None:
        with self._lock:
            record.finished = time.monotonic()
            self._in_flight -= 1


def expected_name(keywords: list[str]) -> dict[str, str]:
    """The name and description the server gives a topic with these keywords."""
    words = [w for w in keywords if w] or ["unnamed"]
    return {
        "name": " ".join(w.title() for w in words[:2]) + " Theme",
        "description": f"Firms discuss {', '.join(words[:3])}.",
    }


def _topics(message: str) -> dict[str, list[str]]:
    """id → keywords of the topics in the user message (the JSON after its first line)."""
    try:
        data = json.loads(message[message.find("{") :])
    except (ValueError, TypeError):
        return {}
    return {str(t.get("id")): list(t.get("keywords") or []) for t in data.get("topics", [])}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a slow reply to a client that gave up must not hold the tests
    request_queue_size = 1024  # many clients connect at once; the default backlog of 5 drops some
    allow_reuse_address = True


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real server
        # Headers and body go out in two writes; with Nagle on, the body waits for the client's
        # delayed ACK (40 ms), which would slow every request and flatter no one.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {}, b'{"error": {"message": "not found"}}')
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, {}, b'{"error": {"message": "body is not JSON"}}')
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            record, status, extra, payload = server._answer(body, headers)
            try:
                self._send(status, extra, payload)
            finally:
                server._done(record)

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._send(200, {}, json.dumps(server.stats()).encode())
            else:
                self._send(404, {}, b"{}")

        def _send(self, status: int, extra: dict[str, str], payload: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet, as a test double should be
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="A local chat-completions server for tests and benchmarks.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    args = parser.parse_args()
    server = ChatServer(latency_s=args.latency).start(args.port)
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
