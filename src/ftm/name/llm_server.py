"""A vLLM server for the length of one naming run: started, waited for, used, stopped.

An always-on server costs money while it idles (the earlier system kept one on ECS at ~$9 a day),
so `llm.serve` starts `vllm serve MODEL` next to the naming run instead: inside the Batch name
job's GPU container, or on any GPU machine (`ftm name --serve`). Naming then talks to it through
the same OpenAI-compatible client as to any endpoint, on 127.0.0.1.

The server runs in its own process group, so that stopping it reaches the worker processes vLLM
starts too, and a Ctrl-C in the terminal reaches ftm alone, which then stops the server in order.
Its output goes to a log file, never a pipe: nobody reads a pipe during the run, and a full one
would block the server. The log's last lines go into every error about the server.

The server's context is `llm.serve_max_model_len`, not the model's maximum: vLLM refuses to start
when the KV cache of one request of that length does not fit beside the weights (Qwen3-8B's
40,960 tokens need 5.6 GiB, more than a 24 GB GPU has left). `serving_fit` does vLLM's arithmetic
from the model's config.json, so that `ftm doctor` can say before a job starts whether the model,
the context and a GPU fit; `serving` refuses a context shorter than ftm's longest request.

The library never prints: progress goes to the optional `on_event` callback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from ftm.errors import FtmError, SettingsError
from ftm.name.naming import longest_request_tokens
from ftm.settings import LlmSettings

HOST = "127.0.0.1"  # the server answers this machine only; nothing outside needs it
# How long the server may take to exit after SIGTERM before it is killed: vLLM needs a few
# seconds to stop its engine processes, and a kill skips their clean-up.
STOP_GRACE_S = 30.0
POLL_S = 0.5  # readiness checks are cheap local requests; a short interval saves seconds
REPORT_EVERY_S = 15.0
LOG_TAIL_LINES = 20
_LOG_LINE_IN_PROGRESS_CHARS = 120

# vLLM's start-up check (its memory profile, then "…larger than the available KV cache memory"):
# the KV cache of one request of max_model_len tokens must fit in gpu_memory_utilization × the
# GPU's memory less the weights and what the profile run takes besides them: activations and
# CUDA, cuBLAS and NCCL buffers, 3.05 GiB for an 8B model in vLLM's own profile of Llama-3-8B
# (vllm-project/vllm#10511: 1.79 GiB outside torch, 1.26 GiB of activation peak).
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization
PROFILE_OVERHEAD_GIB = 3.05
# Bytes per weight and per KV-cache value. vLLM's --dtype auto serves float32 checkpoints in
# float16; an fp8 KV cache (--kv-cache-dtype fp8…) takes one byte.
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 2}
GIB = 1024**3

EventCallback = Callable[[str], None]


@dataclass(frozen=True)
class ServingFit:
    """Whether vLLM can serve a model at `max_model_len` tokens on one GPU, and by how much."""

    fits: bool
    max_model_len: int
    weights_gib: float
    kv_cache_gib: float  # for one request of max_model_len tokens
    room_gib: float  # what the GPU leaves for the KV cache
    longest_fitting: int  # the context that would fit, in tokens


def model_config(model: str) -> dict[str, Any]:
    """`llm.model`'s config.json: a local folder's, else the Hugging Face hub's (as vLLM reads it;
    HF_TOKEN for gated models, HF_HUB_OFFLINE honoured). FtmError when it cannot be read."""
    folder = Path(model).expanduser()
    try:
        if folder.is_dir():
            path = folder / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, "config.json"))
        return json.loads(path.read_text(encoding="utf-8"))
    except Exception as error:  # no network, offline, gated, a folder without a config
        raise FtmError(f"cannot read {model}'s config.json: {type(error).__name__}: {error}") from None


def serving_fit(config: Mapping[str, Any], settings: LlmSettings, gpu_mib: float) -> ServingFit:
    """vLLM's start-up arithmetic for `llm.model` (its config.json) at `llm.serve_max_model_len`
    on a GPU of `gpu_mib` MiB, with llm.serve_args' --gpu-memory-utilization and --kv-cache-dtype.

    The weights are those of a dense decoder (embeddings, attention, a gated MLP per layer);
    FtmError for a config this cannot size: mixture of experts, quantized weights, another dtype."""
    if any(key in config for key in ("num_experts", "num_local_experts", "n_routed_experts")):
        raise FtmError("a mixture-of-experts model: its weights are not sized here")
    if "quantization_config" in config:
        raise FtmError("quantized weights: their size is not computed here")
    dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"
    if dtype not in DTYPE_BYTES:
        raise FtmError(f"weights of dtype {dtype}: not sized here")
    try:
        hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
        vocab, intermediate = int(config["vocab_size"]), int(config["intermediate_size"])
    except (KeyError, TypeError, ValueError) as error:
        raise FtmError(f"config.json lacks a field the sizes need ({error})") from None
    attention = hidden * head_dim * 2 * (heads + kv_heads)  # q and o; k and v
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    weights = (layers * (attention + 3 * hidden * intermediate) + embeddings) * DTYPE_BYTES[dtype]
    kv_dtype = _serve_arg(settings.serve_args, "--kv-cache-dtype") or "auto"
    kv_bytes = 1 if kv_dtype.startswith("fp8") else DTYPE_BYTES[dtype]
    per_token = 2 * layers * kv_heads * head_dim * kv_bytes  # a key and a value per layer
    utilization = float(_serve_arg(settings.serve_args, "--gpu-memory-utilization") or GPU_MEMORY_UTILIZATION)
    room = utilization * gpu_mib * 2**20 - weights - PROFILE_OVERHEAD_GIB * GIB
    needed = per_token * settings.serve_max_model_len
    return ServingFit(
        fits=needed <= room,
        max_model_len=settings.serve_max_model_len,
        weights_gib=weights / GIB,
        kv_cache_gib=needed / GIB,
        room_gib=room / GIB,
        longest_fitting=max(int(room // per_token), 0),
    )


def check_context(settings: LlmSettings) -> None:
    """Refuses a served context shorter than ftm's longest request: every such request would be
    refused by the server (prompt and reply budget count against the context)."""
    longest = longest_request_tokens(settings.topics_per_request)
    if settings.serve_max_model_len < longest:
        raise SettingsError(
            f"llm.serve_max_model_len = {settings.serve_max_model_len:,} tokens is shorter than ftm's "
            f"longest request at llm.topics_per_request = {settings.topics_per_request} ({longest:,} "
            "tokens): raise llm.serve_max_model_len (`ftm doctor` checks the GPU holds it) or lower "
            "llm.topics_per_request"
        )


@contextlib.contextmanager
def serving(settings: LlmSettings, on_event: EventCallback | None = None) -> Iterator[str]:
    """Starts `llm.serve_command` for `llm.model` on 127.0.0.1, yields its base URL once it is ready.

    Ready means `GET /health` answers 200 and `GET /v1/models` lists the model. On leaving the
    context, however it is left, the server's process group gets SIGTERM and, after
    `STOP_GRACE_S`, SIGKILL. Raises FtmError when the command is missing, the port is taken, or the
    server exits or stays unready for `llm.serve_startup_timeout_s` (with the last lines of its log).
    """
    report = on_event or _ignore
    argv = serve_argv(settings)
    check_context(settings)
    _check_port_free(settings.serve_port)
    folder = Path(tempfile.mkdtemp(prefix="ftm-llm-server-"))
    log_path = folder / "server.log"
    try:
        server = _Server(_start(argv, log_path), log_path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    report(f"starting {_shown(argv)} (log: {log_path})")
    ready = clean = False
    try:
        with _sigterm_interrupts():
            url = _wait_until_ready(server, settings, report)
            ready = True
            yield url
            if server.process.poll() is not None:
                # Naming got connection errors and gave keyword names; say why, so no one hunts
                # the cause in the naming code.
                report(
                    f"the server exited on its own during the run ({_exit_status(server.process)}); "
                    f"last lines of its log ({log_path}):\n{server.log_tail()}"
                )
            else:
                clean = True
    finally:
        _stop(server.process, report)
        if clean:
            shutil.rmtree(folder, ignore_errors=True)
        elif ready:  # an error at start names the log already
            report(f"the server's log is kept at {log_path}")


def serve_argv(settings: LlmSettings) -> list[str]:
    """The command line that serves `llm.model`, as `vllm serve` takes it (the model positional).

    No `--served-model-name`: vLLM serves the model under the name it was given, which is the
    `llm.model` naming sends. The context is `llm.serve_max_model_len` (see the module docstring).
    """
    try:
        command = shlex.split(settings.serve_command)
    except ValueError as error:
        raise SettingsError(
            f"llm.serve_command {settings.serve_command!r} cannot be parsed: {error}"
        ) from None
    if not command:
        raise SettingsError(
            'llm.serve_command is empty: set it to the command that serves the model, e.g. "vllm serve"'
        )
    if _serve_arg(settings.serve_args, "--max-model-len") is not None:
        raise SettingsError(
            "llm.serve_args sets --max-model-len: set llm.serve_max_model_len instead, which ftm passes "
            "and checks its requests against (and `ftm doctor` the GPU)"
        )
    return [
        *command,
        settings.model,
        "--host",
        HOST,
        "--port",
        str(settings.serve_port),
        "--max-model-len",
        str(settings.serve_max_model_len),
        *settings.serve_args,
    ]


def _serve_arg(args: list[str], name: str) -> str | None:
    """The value of option `name` in llm.serve_args (`--name value` or `--name=value`)."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


# --- start ------------------------------------------------------------------------------------


class _Server:
    def __init__(self, process: subprocess.Popen[bytes], log_path: Path):
        self.process, self.log_path = process, log_path
        self.started = time.monotonic()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))  # the tail is enough, and a log can be huge
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        # splitlines also splits on the carriage returns of progress bars (model download).
        kept = [line.rstrip() for line in text.splitlines() if line.strip()]
        return "\n".join(kept[-lines:]) or "(the log is empty)"


def _check_port_free(port: int) -> None:
    """Refuses a port something already listens on: naming would talk to it instead of our server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server will bind: a port left in TIME_WAIT by an earlier run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            if error.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            raise FtmError(
                f"port {port} on {HOST} is already in use ({error.strerror}), so no server can be "
                f"started there: set llm.serve_port (FTM_LLM__SERVE_PORT) to a free port, or stop what "
                f"listens on it (`ss -ltnp 'sport = :{port}'` shows it). If that is an LLM server you "
                f"want to use, name through it with llm.base_url=http://{HOST}:{port}/v1 and --no-serve."
            ) from None


def _start(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    # Python servers (vLLM is one) buffer stdout in blocks when it is a file; unbuffered, the log
    # is current for the progress lines and complete when the server dies.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:  # the child holds its own copy of the descriptor
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: see the module's docstring
            )
        except (FileNotFoundError, PermissionError) as error:
            raise FtmError(
                f"cannot run llm.serve_command {shlex.join(argv[:1])!s}: {error.strerror}. Install "
                "vLLM on this machine (`pip install vllm`, which needs a GPU), or set "
                "llm.serve_command (FTM_LLM__SERVE_COMMAND) to the command that serves the model, "
                "or name through an endpoint that already runs: set llm.base_url and leave out --serve."
            ) from None


# --- wait -------------------------------------------------------------------------------------


def _wait_until_ready(server: _Server, settings: LlmSettings, report: EventCallback) -> str:
    root = f"http://{HOST}:{settings.serve_port}"
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
    deadline = server.started + settings.serve_startup_timeout_s
    next_report = server.started + REPORT_EVERY_S
    with httpx.Client(timeout=5.0, headers=headers) as client:
        while True:
            # The exit check comes first: once ours is gone, whatever answers on the port is not it.
            code = server.process.poll()
            if code is not None:
                raise FtmError(
                    f"the LLM server exited before it was ready ({_exit_status(server.process)}); "
                    f"last lines of its log ({server.log_path}):\n{server.log_tail()}"
                )
            served = _served_models(client, root)
            if served is not None:
                if settings.model in served:
                    report(f"{settings.model} ready at {root}/v1 after {_elapsed(server):.0f} s")
                    return f"{root}/v1"
                # vLLM answers only once the model is loaded, so another name will not change.
                raise FtmError(
                    f"the LLM server serves {', '.join(served) or 'no model'}, not llm.model "
                    f"({settings.model!r}): leave --served-model-name out of llm.serve_args, or set "
                    "llm.model to the name it serves"
                )
            now = time.monotonic()
            if now >= deadline:
                raise FtmError(
                    f"the LLM server was not ready after {settings.serve_startup_timeout_s:g} s "
                    "(llm.serve_startup_timeout_s), so it was stopped. A first run downloads the model, "
                    "which can take long: raise llm.serve_startup_timeout_s if the log shows progress. "
                    f"Last lines of its log ({server.log_path}):\n{server.log_tail()}"
                )
            if now >= next_report:
                next_report = now + REPORT_EVERY_S
                last = server.log_tail(1)[-_LOG_LINE_IN_PROGRESS_CHARS:]
                report(f"loading {settings.model}… {_elapsed(server):.0f} s (log: {last})")
            time.sleep(min(POLL_S, max(0.0, deadline - now)))


def _served_models(client: httpx.Client, root: str) -> list[str] | None:
    """The models the server lists once it is healthy; None while it is not (yet)."""
    try:
        if client.get(f"{root}/health").status_code != 200:
            return None
        response = client.get(f"{root}/v1/models")
        if response.status_code != 200:
            return None
        return [str(entry.get("id")) for entry in response.json().get("data") or []]
    except (httpx.HTTPError, ValueError, AttributeError):  # not listening yet, or not JSON yet
        return None


# --- stop -------------------------------------------------------------------------------------


def _stop(process: subprocess.Popen[bytes], report: EventCallback) -> None:
    """SIGTERM to the process group, SIGKILL after STOP_GRACE_S; returns once the leader is reaped."""
    if process.poll() is None:
        report("stopping")
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        report(f"the LLM server did not stop within {STOP_GRACE_S:g} s of SIGTERM; killing it")
    except KeyboardInterrupt:  # a second Ctrl-C while it stops: kill it now, then go on interrupting
        _signal_group(process, signal.SIGKILL)
        process.wait()
        raise
    # Also after a clean exit: a worker the server failed to stop must not keep the GPU's memory.
    _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    # The group's id is the leader's pid (start_new_session); it lives while any member does.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Makes SIGTERM to ftm an interrupt while the server runs, so the server is stopped first.

    By default SIGTERM ends Python without running `finally`, which would leave the server (in
    its own process group) running and holding the GPU. Only in the main thread, and only when
    nobody else handles SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- helpers ----------------------------------------------------------------------------------


def _shown(argv: list[str]) -> str:
    """The command line for a message, without the value of an `--api-key` in llm.serve_args."""
    shown = [
        "***" if previous == "--api-key" else arg
        for previous, arg in zip(["", *argv[:-1]], argv, strict=True)
    ]
    return shlex.join(shown)


def _exit_status(process: subprocess.Popen[bytes]) -> str:
    code = process.returncode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _elapsed(server: _Server) -> float:
    return time.monotonic() - server.started


def _ignore(message: str) -> None:
    pass
