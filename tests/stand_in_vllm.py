"""An executable that behaves like `vllm serve` for the tests of `ftm.name.llm_server`.

    python tests/stand_in_vllm.py serve MODEL --host H --port P [more arguments]

It takes vLLM's arguments, "loads" for a while (printing log lines as vLLM does), then listens on
H:P: `/health`, `/v1/models` (listing MODEL, or --served-model-name) and `/v1/chat/completions`
(tests/chat_server.py's answers). Like vLLM it starts a worker process (vLLM's engine core) that
shares its process group, so a test sees whether stopping reaches the whole group.
Environment variables choose how it behaves:

  STAND_IN_READY_AFTER_S   seconds of "loading" before it listens (default 0)
  STAND_IN_FAIL            exit with code 3 at start, after a few log lines
  STAND_IN_NEVER_READY     listen, but answer /health with 503 forever
  STAND_IN_IGNORE_SIGTERM  ignore SIGTERM, it and its worker: only SIGKILL stops them
  STAND_IN_RECORD          a file to write {"argv", "pid", "worker_pid"} to, once both run
  STAND_IN_KV_CACHE_TOKENS the tokens the GPU's KV cache holds beside the weights: as vLLM, it
                           refuses to start when one request of --max-model-len tokens (without
                           it, the model's maximum, STAND_IN_MODEL_MAX_LEN, default Qwen3-8B's
                           40,960) does not fit, with vLLM's message
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from chat_server import ChatServer, _handler, _Server

FAILURE = "RuntimeError: CUDA out of memory (stand-in failure)"


class StandIn(ChatServer):
    """tests/chat_server.py's server, with vLLM's readiness routes added."""

    def serve(self, host: str, port: int, model: str, healthy: bool) -> None:
        base: type[BaseHTTPRequestHandler] = _handler(self)

        class Handler(base):  # type: ignore[valid-type, misc]
            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(200 if healthy else 503, {}, b"")
                elif self.path == "/v1/models":
                    listing = {"object": "list", "data": [{"id": model, "object": "model"}]}
                    self._send(200, {}, json.dumps(listing).encode())
                else:
                    super().do_GET()

        self._httpd = _Server((host, port), Handler)
        self._httpd.serve_forever(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name")
    parser.add_argument("--max-model-len", type=int)
    args, _extra = parser.parse_known_args()

    if os.environ.get("STAND_IN_IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the worker: ignored stays ignored
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as vLLM: a clean exit on SIGTERM
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"], stdin=subprocess.DEVNULL
    )
    record = os.environ.get("STAND_IN_RECORD")
    if record:
        payload = {"argv": sys.argv[1:], "pid": os.getpid(), "worker_pid": worker.pid}
        Path(record + ".tmp").write_text(json.dumps(payload))
        os.replace(record + ".tmp", record)  # whole or absent, for a test that polls it

    print(f"INFO starting the stand-in for vLLM with {sys.argv[1:]}")
    if os.environ.get("STAND_IN_FAIL"):
        print("INFO loading weights")
        print(FAILURE)
        worker.kill()
        sys.exit(3)
    kv_tokens = os.environ.get("STAND_IN_KV_CACHE_TOKENS")
    max_model_len = args.max_model_len or int(os.environ.get("STAND_IN_MODEL_MAX_LEN", "40960"))
    if kv_tokens and max_model_len > int(kv_tokens):
        print(
            f"ValueError: To serve at least one request with the models's max seq len ({max_model_len}), "
            "KV cache is needed, which is larger than the available KV cache memory. Based on the "
            f"available memory, the estimated maximum model length is {kv_tokens}. Try increasing "
            "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
        )
        worker.kill()
        sys.exit(1)
    ready_after = float(os.environ.get("STAND_IN_READY_AFTER_S", "0"))
    start = time.monotonic()
    while time.monotonic() - start < ready_after:
        print(f"INFO loading {args.model}: {time.monotonic() - start:.1f} s")
        time.sleep(0.2)
    print(f"INFO listening on http://{args.host}:{args.port}")
    server = StandIn()
    # The HTTP server in a thread, so that the main thread takes signals as vLLM's does.
    thread = threading.Thread(
        target=server.serve,
        args=(
            args.host,
            args.port,
            args.served_model_name or args.model,
            not os.environ.get("STAND_IN_NEVER_READY"),
        ),
        daemon=True,
    )
    thread.start()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
