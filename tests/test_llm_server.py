"""`ftm.name.llm_server` and `ftm name --serve` against tests/stand_in_vllm.py, a real executable that
takes `vllm serve`'s arguments and serves vLLM's routes on 127.0.0.1: started, waited for, named
through, and stopped with its whole process group, whatever happens."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat_server import expected_name
from ftm import layout
from ftm.cli import main
from ftm.errors import FtmError, SettingsError
from ftm.name import llm_server, longest_request_tokens
from ftm.name.llm_server import serving
from ftm.quarters import Quarter
from ftm.settings import LlmSettings
from ftm.storage import Store
from naming_inputs import corpus_topics, write_firm_topics, write_model_config, write_themes
from stand_in_vllm import FAILURE

QUARTER = Quarter.parse("2016Q4")
MODEL = "test/served-1"
STAND_IN = Path(__file__).with_name("stand_in_vllm.py")
SERVE_COMMAND = shlex.join([sys.executable, str(STAND_IN), "serve"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    """Whether the process still runs; a zombie (dead, not yet reaped by init) does not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def _gone(pids: list[int], within_s: float = 3.0) -> bool:
    # The worker is orphaned when the server dies; its end can lag the server's by a moment.
    deadline = time.monotonic() + within_s
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class StandIn:
    """How the stand-in should behave (its environment) and what it recorded."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.record = tmp_path / "stand_in.json"
        self.port = _free_port()
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("STAND_IN_RECORD", str(self.record))
        for mode in ("READY_AFTER_S", "FAIL", "NEVER_READY", "IGNORE_SIGTERM", "KV_CACHE_TOKENS"):
            monkeypatch.delenv(f"STAND_IN_{mode}", raising=False)

    def behave(self, **modes: Any) -> None:
        for mode, value in modes.items():
            self.monkeypatch.setenv(f"STAND_IN_{mode.upper()}", str(value))

    def settings(self, **fields: Any) -> LlmSettings:
        return LlmSettings(
            model=MODEL, serve_command=SERVE_COMMAND, serve_port=self.port, serve=True, **fields
        )

    def recorded(self) -> dict[str, Any]:
        return json.loads(self.record.read_text())

    def pids(self) -> list[int]:
        recorded = self.recorded()
        return [recorded["pid"], recorded["worker_pid"]]


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the logs kept after a failure
    return StandIn(tmp_path, monkeypatch)


@pytest.fixture
def events() -> list[str]:
    return []


# --- the command ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def topic_rows(shared_corpus: Path) -> list[dict[str, Any]]:
    return corpus_topics(shared_corpus, 30)


@pytest.fixture
def root(tmp_path: Path, topic_rows: list[dict[str, Any]]) -> str:
    folder = str(tmp_path / "store")
    write_firm_topics(Store(folder), QUARTER, topic_rows, firms_per_part=2)
    write_themes(Store(folder), QUARTER, topic_rows, 5)
    return folder


def _use(monkeypatch: pytest.MonkeyPatch, root: str, stand_in: StandIn, **llm: Any) -> None:
    monkeypatch.setenv("FTM_STORAGE__ROOT", root)
    monkeypatch.setenv("FTM_LLM__MODEL", MODEL)
    monkeypatch.setenv("FTM_LLM__SERVE_COMMAND", SERVE_COMMAND)
    monkeypatch.setenv("FTM_LLM__SERVE_PORT", str(stand_in.port))
    for key, value in llm.items():
        monkeypatch.setenv(f"FTM_LLM__{key.upper()}", value)


def test_name_serve_starts_the_server_names_through_it_and_stops_it(
    tmp_path: Path,
    root: str,
    topic_rows: list[dict[str, Any]],
    stand_in: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    _use(monkeypatch, root, stand_in, serve_args='["--api-key", "sk-local"]')
    # Not listening at first: the wait must bridge that. And as on a g5.xlarge, whose A10G leaves
    # Qwen3-8B's KV cache about 13,000 tokens (serving_fit): the model's own 40,960 would not start.
    stand_in.behave(ready_after_s=1.0, kv_cache_tokens=13_000)

    assert main(["name", "--quarter", str(QUARTER), "--serve"]) == 0
    err = capsys.readouterr().err

    assert stand_in.recorded()["argv"] == [
        "serve", MODEL, "--host", "127.0.0.1", "--port", str(stand_in.port),
        "--max-model-len", "8192", "--api-key", "sk-local",
    ]  # fmt: skip
    store = Store(root)
    themes = store.read_table(layout.theme_names(QUARTER)).to_pylist()
    topics = store.read_table(layout.topic_names(QUARTER)).to_pylist()
    assert len(themes) == 5 and len(topics) == len(topic_rows)
    assert {row["source"] for row in themes + topics} == {f"llm:{MODEL}"}
    assert themes[0]["name"] == expected_name(topic_rows[0]["keywords"])["name"]
    assert f"{MODEL} ready at http://127.0.0.1:{stand_in.port}/v1" in err
    assert "llm server: stopping" in err
    assert "8192" in err and "--api-key" in err and "sk-local" not in err
    assert _gone(stand_in.pids())
    assert _port_is_free(stand_in.port)
    assert not list(tmp_path.glob("ftm-llm-server-*"))  # the log goes with a run that went well

    # The same command again: every reply is cached, so no server is started for nothing.
    stand_in.record.unlink()
    assert main(["name", "--quarter", str(QUARTER), "--serve"]) == 0
    assert "every reply is cached: no server started" in capsys.readouterr().err
    assert not stand_in.record.exists()
    assert store.read_table(layout.topic_names(QUARTER)).to_pylist()[0]["source"] == f"llm:{MODEL}"
    again = store.read_table(layout.theme_names(QUARTER)).to_pylist()
    assert [row["name"] for row in again] == [row["name"] for row in themes]


def test_name_serve_with_a_base_url_is_a_usage_error_and_starts_nothing(
    root: str, stand_in: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _use(monkeypatch, root, stand_in)
    code = main(["name", "--quarter", str(QUARTER), "--serve", "--base-url", "http://127.0.0.1:9/v1"])
    assert code == 2
    assert "choose one" in capsys.readouterr().err
    assert not stand_in.record.exists()


def test_name_serve_refuses_a_missing_input_before_starting_the_server(
    tmp_path: Path, stand_in: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _use(monkeypatch, str(tmp_path / "empty"), stand_in)
    assert main(["name", "--quarter", str(QUARTER), "--serve"]) == 2
    assert "ftm reduce" in capsys.readouterr().err
    assert not stand_in.record.exists()


def test_the_context_is_ftms_setting_and_holds_its_longest_request(stand_in: StandIn) -> None:
    with pytest.raises(SettingsError, match="set llm.serve_max_model_len instead"):
        llm_server.serve_argv(stand_in.settings(serve_args=["--max-model-len=40960"]))
    # 11 topics a request make chunks of up to 21, more than 8,192 tokens with their replies.
    assert longest_request_tokens(10) <= LlmSettings().serve_max_model_len < longest_request_tokens(11)
    with (
        pytest.raises(SettingsError, match="raise llm.serve_max_model_len"),
        serving(stand_in.settings(topics_per_request=11)),
    ):
        pass
    assert not stand_in.record.exists()  # refused before anything started
    with serving(stand_in.settings(topics_per_request=11, serve_max_model_len=9216)):
        assert stand_in.recorded()["argv"][-2:] == ["--max-model-len", "9216"]


def test_serving_fit_is_vllms_arithmetic_from_the_models_config(tmp_path: Path) -> None:
    a10g = 22_888  # MiB, as EC2 reports g5.xlarge's GPU (and g6.xlarge's L4)
    qwen3_8b = llm_server.model_config(write_model_config(tmp_path / "qwen3-8b"))
    fit = llm_server.serving_fit(qwen3_8b, LlmSettings(), a10g)
    # 8.19 billion parameters in bfloat16; 2 × 36 layers × 8 heads × 128 × 2 bytes = 144 KiB a token.
    assert fit.weights_gib == pytest.approx(15.26, abs=0.01)
    assert fit.kv_cache_gib == pytest.approx(8192 * 144 / 2**20)
    assert fit.fits and fit.room_gib == pytest.approx(0.9 * a10g / 1024 - 15.26 - 3.05, abs=0.01)
    assert 13_000 < fit.longest_fitting < 13_400  # 1.8 GiB at 144 KiB a token
    # The model's own maximum does not fit: what made vLLM refuse to start on these GPUs.
    assert not llm_server.serving_fit(qwen3_8b, LlmSettings(serve_max_model_len=40_960), a10g).fits
    # An fp8 KV cache halves it; more of the GPU for vLLM leaves more room.
    fp8 = LlmSettings(serve_max_model_len=40_960, serve_args=["--kv-cache-dtype", "fp8"])
    assert llm_server.serving_fit(qwen3_8b, fp8, a10g).kv_cache_gib == pytest.approx(40_960 * 72 / 2**20)
    more = LlmSettings(serve_args=["--gpu-memory-utilization=0.95"])
    assert llm_server.serving_fit(qwen3_8b, more, a10g).room_gib > fit.room_gib
    # A 16 GB T4 cannot hold the weights at all; a model with tied embeddings is smaller.
    assert not llm_server.serving_fit(qwen3_8b, LlmSettings(), 15_360).fits
    tied = llm_server.model_config(write_model_config(tmp_path / "tied", tie_word_embeddings=True))
    assert llm_server.serving_fit(tied, LlmSettings(), a10g).weights_gib == pytest.approx(
        fit.weights_gib - 151936 * 4096 * 2 / 2**30
    )
    # What it cannot size, it says so rather than guess.
    for odd in (
        {"num_experts": 128},
        {"quantization_config": {"quant_method": "awq"}},
        {"torch_dtype": "int8"},
    ):
        config = llm_server.model_config(write_model_config(tmp_path / "odd", **odd))
        with pytest.raises(FtmError):
            llm_server.serving_fit(config, LlmSettings(), a10g)
    with pytest.raises(FtmError, match="config.json"):
        llm_server.model_config(str(tmp_path))  # a folder without one


def test_a_server_that_fails_at_start_is_reported_at_once_with_its_log(
    root: str, stand_in: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _use(monkeypatch, root, stand_in, serve_startup_timeout_s="60")
    stand_in.behave(fail=1)
    started = time.monotonic()
    assert main(["name", "--quarter", str(QUARTER), "--serve"]) == 1
    assert time.monotonic() - started < 15  # not the 60 s timeout
    err = capsys.readouterr().err
    assert "exited before it was ready (exit code 3)" in err
    assert FAILURE in err
    assert "Traceback" not in err
    assert _gone(stand_in.pids())


def test_a_missing_command_says_to_install_vllm_or_set_the_command(
    root: str, stand_in: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _use(monkeypatch, root, stand_in, serve_command="/nonexistent/bin/vllm serve")
    assert main(["name", "--quarter", str(QUARTER), "--serve"]) == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "pip install vllm" in err and "llm.serve_command" in err and "llm.base_url" in err
    assert "Traceback" not in err


# --- the library ------------------------------------------------------------------------------


def test_a_server_never_ready_is_stopped_after_the_startup_timeout(
    stand_in: StandIn, events: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in.behave(never_ready=1)
    monkeypatch.setattr(llm_server, "REPORT_EVERY_S", 1.0)
    started = time.monotonic()
    settings = stand_in.settings(serve_startup_timeout_s=3)
    timeout = r"not ready after 3 s \(llm.serve_startup_timeout_s\)"
    with pytest.raises(FtmError, match=timeout) as caught, serving(settings, events.append):
        pytest.fail("the context must not be entered")
    assert 3 <= time.monotonic() - started < 12
    assert "INFO listening on" in str(caught.value)  # the log's last lines
    assert any(event.startswith(f"loading {MODEL}… ") for event in events)
    assert _gone(stand_in.pids())
    assert _port_is_free(stand_in.port)


def test_a_server_that_ignores_sigterm_is_killed(
    stand_in: StandIn, events: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in.behave(ignore_sigterm=1)
    monkeypatch.setattr(llm_server, "STOP_GRACE_S", 0.5)
    with serving(stand_in.settings(), events.append) as url:
        assert httpx.get(f"{url}/models").json()["data"][0]["id"] == MODEL
        pids = stand_in.pids()
        os.killpg(pids[0], signal.SIGTERM)  # ignored, as it will be at the exit
        time.sleep(0.2)
        assert all(_alive(pid) for pid in pids)
    assert _gone(pids)
    assert any("did not stop within 0.5 s of SIGTERM" in event for event in events)


def test_an_interrupt_inside_the_context_stops_the_server_and_keeps_its_log(
    stand_in: StandIn, events: list[str]
) -> None:
    with pytest.raises(KeyboardInterrupt), serving(stand_in.settings(), events.append) as url:
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200
        raise KeyboardInterrupt
    assert _gone(stand_in.pids())
    assert _port_is_free(stand_in.port)
    kept = events[-1].removeprefix("the server's log is kept at ")
    assert "INFO listening on" in Path(kept).read_text()


def test_sigterm_to_ftm_stops_the_server_before_ftm_ends(stand_in: StandIn) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:  # serving leaves another's handler alone; this test needs none
        pytest.skip("something in this pytest already handles SIGTERM")
    with pytest.raises(KeyboardInterrupt), serving(stand_in.settings()):
        os.kill(os.getpid(), signal.SIGTERM)  # would end this process outright without the handler
        time.sleep(5)
        pytest.fail("SIGTERM did not interrupt")
    assert signal.getsignal(signal.SIGTERM) is previous
    assert _gone(stand_in.pids())


def test_a_taken_port_is_refused_before_anything_starts(stand_in: StandIn) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", stand_in.port))
        other.listen()
        taken = rf"port {stand_in.port} on 127.0.0.1 is already in use"
        with pytest.raises(FtmError, match=taken), serving(stand_in.settings()):
            pytest.fail("the context must not be entered")
    assert not stand_in.record.exists()


def test_a_server_serving_another_model_name_is_refused(stand_in: StandIn) -> None:
    settings = stand_in.settings(serve_args=["--served-model-name", "other"])
    with pytest.raises(FtmError, match="serves other, not llm.model"), serving(settings):
        pytest.fail("the context must not be entered")
    assert _gone(stand_in.pids())


@pytest.fixture(autouse=True)
def _no_server_left(stand_in: StandIn) -> Iterator[None]:
    """Whatever a test does, no stand-in outlives it (a failed test must not hold a port)."""
    yield
    if stand_in.record.exists():
        for pid in stand_in.pids():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
