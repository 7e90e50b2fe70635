"""`ftm name` against a real chat-completions server on 127.0.0.1 (tests/chat_server.py): many
topics per request, many requests in flight, a cache that makes a re-run send nothing and a
SIGKILL lose nothing, retries and keyword fallbacks, and an API key that is never shown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chat_server import ChatServer, expected_name
from ftm import layout, read_names
from ftm.cli import main
from ftm.name.naming import INSTRUCTIONS, Item, keyword_name
from ftm.quarters import Quarter
from ftm.schemas import THEME_NAMES, TOPIC_NAMES
from ftm.storage import Store
from naming_inputs import as_an_earlier_ftm_wrote_it, corpus_topics, write_firm_topics, write_themes

QUARTER = Quarter.parse("2016Q4")
KEY = "sk-test-7f3a9c1e5d"
MODEL = "test/namer-1"
N_TOPICS, N_THEMES = 300, 20
LLM = f"llm:{MODEL}"


@pytest.fixture(scope="module")
def topic_rows(shared_corpus: Path) -> list[dict[str, Any]]:
    rows = corpus_topics(shared_corpus, N_TOPICS)
    assert len(rows) == N_TOPICS
    return rows


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with ChatServer() as running:
        yield running


def _inputs(store: Store, rows: list[dict[str, Any]]) -> None:
    assert write_firm_topics(store, QUARTER, rows, firms_per_part=10) >= 3
    write_themes(store, QUARTER, rows, N_THEMES)


@pytest.fixture
def root(tmp_path: Path, topic_rows: list[dict[str, Any]]) -> str:
    """A local storage root holding the quarter's firm topics (several parts) and themes."""
    folder = str(tmp_path / "store")
    _inputs(Store(folder), topic_rows)
    return folder


def _use(monkeypatch: pytest.MonkeyPatch, root: str, server: ChatServer | None, **llm: Any) -> None:
    monkeypatch.setenv("FTM_STORAGE__ROOT", root)
    if server is not None:
        monkeypatch.setenv("FTM_LLM__BASE_URL", server.url)
    monkeypatch.setenv("FTM_LLM__API_KEY", KEY)
    monkeypatch.setenv("FTM_LLM__MODEL", MODEL)
    monkeypatch.setenv("FTM_LLM__BACKOFF_S", "0.01")
    for key, value in llm.items():
        monkeypatch.setenv(f"FTM_LLM__{key.upper()}", str(value))


def _names(store: Store, kind: str = "topic") -> dict[str, dict[str, Any]]:
    """A names file, checked against its schema (keyed like what it names), by prompt id."""
    if kind == "topic":
        rows = store.read_table(layout.topic_names(QUARTER), TOPIC_NAMES).to_pylist()
        return {f"{row['firm_id']}/{row['topic_id']}": row for row in rows}
    rows = store.read_table(layout.theme_names(QUARTER), THEME_NAMES).to_pylist()
    return {str(row["theme_id"]): row for row in rows}


def _keywords(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {f"{row['firm_id']}/{row['topic_id']}": row["keywords"] for row in rows}


def _cached_ids(root: str) -> set[str]:
    folder = Path(root) / layout.name_cache_entry(QUARTER, "x").rsplit("/", 1)[0]
    ids = set()
    for entry in folder.glob("*.json"):
        ids.update(named["id"] for named in json.loads(entry.read_text())["names"])
    return ids


def _assert_key_never_stored(root: str, *outputs: str) -> None:
    for output in outputs:
        assert KEY not in output
    for path in Path(root).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"the API key is in {path}"


@pytest.mark.parametrize("storage_settings", ["local", "s3"], indirect=True)
def test_many_topics_per_request_many_in_flight_and_a_rerun_sends_nothing(
    storage_settings: dict[str, str],
    topic_rows: list[dict[str, Any]],
    server: ChatServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    store = Store(storage_settings["root"], storage_settings.get("endpoint_url"))
    _inputs(store, topic_rows)
    if "endpoint_url" in storage_settings:
        monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", storage_settings["endpoint_url"])
    _use(monkeypatch, storage_settings["root"], server)
    server.latency_s = 1.0  # long enough for all requests to overlap, even on a busy machine

    assert main(["name", "--quarter", str(QUARTER)]) == 0  # settings at their defaults
    first = capsys.readouterr()
    requests = server.requests
    assert sum(len(r.ids) for r in requests) == N_TOPICS + N_THEMES  # each topic sent once
    assert min(len(r.ids) for r in requests) >= 10
    assert server.max_in_flight >= 16
    for request in requests:
        assert request.body["chat_template_kwargs"] == {"enable_thinking": False}
        assert request.body["model"] == MODEL
        # The same instruction block first in every request: the prefix a server caches.
        assert request.body["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
        assert request.headers["authorization"] == f"Bearer {KEY}"
    topics, themes = _names(store, "topic"), _names(store, "theme")
    keywords = _keywords(topic_rows)
    assert len(topics) == N_TOPICS and len(themes) == N_THEMES
    for name_id, row in topics.items():
        assert (row["quarter"], row["source"]) == (str(QUARTER), LLM)
        assert (row["name"], row["description"]) == tuple(expected_name(keywords[name_id]).values())
    assert {row["source"] for row in themes.values()} == {LLM}
    assert "300 topics" in " ".join(first.err.split())

    # Names files of an earlier ftm: read as they are, and rewritten keyed by a run that sends nothing.
    for kind in ("theme", "topic"):
        as_an_earlier_ftm_wrote_it(store, QUARTER, kind)
    assert read_names(store, QUARTER, "theme").to_pylist() == list(themes.values())
    assert read_names(store, QUARTER, "topic").to_pylist() == list(topics.values())
    server.reset()
    assert main(["name", "--quarter", str(QUARTER), "--json"]) == 0
    second = capsys.readouterr()
    assert server.requests == []
    assert _names(store, "topic") == topics and _names(store, "theme") == themes
    summary = {result["kind"]: result for result in json.loads(second.out)}
    assert summary["topic"]["n_from_cache"] == N_TOPICS and summary["topic"]["requests"] == 0
    for output in (first.out, first.err, second.out, second.err):
        assert KEY not in output
    if "endpoint_url" not in storage_settings:
        _assert_key_never_stored(storage_settings["root"])


def test_a_run_killed_half_way_resends_nothing_answered_and_loses_no_name(
    root: str, topic_rows: list[dict[str, Any]], server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    concurrency, per_request = 4, 10
    server.latency_s = 0.25
    env = {name: value for name, value in os.environ.items() if not name.startswith("FTM_")}
    env.update(
        FTM_STORAGE__ROOT=root,
        FTM_LLM__BASE_URL=server.url,
        FTM_LLM__API_KEY=KEY,
        FTM_LLM__MODEL=MODEL,
        FTM_LLM__CONCURRENCY=str(concurrency),
        FTM_LLM__TOPICS_PER_REQUEST=str(per_request),
    )
    command = [sys.executable, "-m", "ftm", "name", "--quarter", str(QUARTER), "--what", "topics"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(_cached_ids(root)) < 80:  # 8 of 28 requests answered and persisted
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the named topics never reached 80"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    out, err = process.communicate()
    answered = _cached_ids(root)
    replied = {i for r in server.requests if r.finished is not None and r.status == 200 for i in r.ids}
    assert 80 <= len(answered) < N_TOPICS
    assert answered <= replied
    # What the server answered but the client had not yet stored: at most the requests in flight.
    assert len(replied - answered) <= concurrency * (2 * per_request - 1)
    assert not Path(root, layout.topic_names(QUARTER)).exists()

    server.reset()
    server.latency_s = 0.01
    _use(monkeypatch, root, server, concurrency=concurrency, topics_per_request=per_request)
    assert main(["name", "--quarter", str(QUARTER), "--what", "topics"]) == 0
    resent = {i for r in server.requests for i in r.ids}
    assert not resent & answered
    assert resent == set(_keywords(topic_rows)) - answered
    names = _names(Store(root))
    assert set(names) == set(_keywords(topic_rows))
    assert {row["source"] for row in names.values()} == {LLM}
    _assert_key_never_stored(root, out, err)


def test_malformed_and_wrong_id_replies_are_retried_then_fall_back_to_keywords(
    root: str,
    topic_rows: list[dict[str, Any]],
    server: ChatServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    ids = list(_keywords(topic_rows))
    always_malformed, always_wrong, once_malformed = ids[0], ids[100], ids[200]

    def script(sent: list[str], seen: int) -> str:
        if always_malformed in sent:
            return "malformed"
        if always_wrong in sent:
            return "wrong_ids"
        return "malformed" if once_malformed in sent and seen == 0 else "ok"

    server.script = script
    _use(monkeypatch, root, server, max_retries=2)
    assert main(["name", "--quarter", str(QUARTER), "--what", "topics"]) == 3  # an endpoint was asked for
    err = " ".join(capsys.readouterr().err.split())
    assert f"20 name(s) are keywords because their requests to {server.url} failed" in err
    assert "--keywords-ok" in err
    sends = {key: [r for r in server.requests if key in r.ids] for key in (always_malformed, always_wrong)}
    assert [len(sends[always_malformed]), len(sends[always_wrong])] == [3, 3]  # 1 try + 2 retries
    assert len([r for r in server.requests if once_malformed in r.ids]) == 2
    assert "20 topics got keyword names" in err and "again" in err

    names = _names(Store(root))
    fallen = set(sends[always_malformed][0].ids) | set(sends[always_wrong][0].ids)
    rows = {f"{row['firm_id']}/{row['topic_id']}": row for row in topic_rows}
    for name_id, row in names.items():
        if name_id in fallen:
            item = Item("topic", name_id, tuple(rows[name_id]["keywords"]), ())
            assert row["source"] == "keywords"
            assert (row["name"], row["description"]) == (
                keyword_name(item).name,
                keyword_name(item).description,
            )
        else:
            assert row["source"] == LLM
    assert len(names) == N_TOPICS

    # Keyword names are never cached: the next run asks for those topics, and only for them.
    server.reset()
    server.script = None
    assert main(["name", "--quarter", str(QUARTER), "--what", "topics"]) == 0
    assert {i for r in server.requests for i in r.ids} == fallen
    assert {row["source"] for row in _names(Store(root)).values()} == {LLM}


def test_429_with_retry_after_is_honoured_and_500_and_timeouts_are_retried(
    root: str, server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = {0: "429", 1: "500"}  # by the order in which the server first saw each prompt
    order: list[str] = []

    def script(sent: list[str], seen: int) -> str:
        if sent[0] not in order:
            order.append(sent[0])
        return faults.get(order.index(sent[0]), "ok") if seen == 0 else "ok"

    server.script = script
    server.slow_s = 1.5
    _use(monkeypatch, root, server, topics_per_request=5, timeout_s=0.5)
    assert main(["name", "--quarter", str(QUARTER), "--what", "themes"]) == 0
    by_prompt: dict[str, list[Any]] = {}
    for request in server.requests:
        by_prompt.setdefault(request.prompt, []).append(request)
    assert len(by_prompt) == N_THEMES // 5
    limited = next(sends for sends in by_prompt.values() if sends[0].reply == "429")
    assert [s.status for s in limited] == [429, 200]
    assert limited[1].arrived - limited[0].finished >= 0.95  # Retry-After: 1
    assert sorted(len(sends) for sends in by_prompt.values()) == [1, 1, 2, 2]
    assert {row["source"] for row in _names(Store(root), "theme").values()} == {LLM}

    server.reset()
    faults = {0: "slow"}  # longer than llm.timeout_s
    Path(root, layout.theme_names(QUARTER)).unlink()
    Store(root).delete_folder(layout.name_cache_entry(QUARTER, "x").rsplit("/", 1)[0])
    assert main(["name", "--quarter", str(QUARTER), "--what", "themes"]) == 0
    slow = [r for r in server.requests if r.reply == "slow"]
    assert len(slow) == 1 and len([r for r in server.requests if r.prompt == slow[0].prompt]) == 2
    assert {row["source"] for row in _names(Store(root), "theme").values()} == {LLM}


def test_a_refused_key_is_a_settings_error_that_never_shows_the_key(
    root: str, server: ChatServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    server.script = lambda sent, seen: "401_echo"  # the server even echoes the key it refused
    _use(monkeypatch, root, server)
    assert main(["name", "--quarter", str(QUARTER), "--what", "themes"]) == 4
    captured = capsys.readouterr()
    assert "FTM_LLM__API_KEY" in captured.err and "401" in captured.err
    assert KEY not in captured.out + captured.err and "Traceback" not in captured.err
    _assert_key_never_stored(root)


def test_an_api_that_refuses_the_qwen3_switch_is_asked_again_without_it(
    root: str, server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script = lambda sent, seen: "strict"
    _use(monkeypatch, root, server, concurrency=2, topics_per_request=5)
    assert main(["name", "--quarter", str(QUARTER), "--what", "themes"]) == 0
    refused = [r for r in server.requests if r.status == 400]
    assert 1 <= len(refused) <= 2  # only the requests sent before the first refusal came back
    answered = [r for r in server.requests if r.status == 200]
    assert len(answered) == N_THEMES // 5
    assert all("chat_template_kwargs" not in r.body and "response_format" in r.body for r in answered)
    assert {row["source"] for row in _names(Store(root), "theme").values()} == {LLM}


def test_an_endpoint_that_keeps_failing_is_given_up_early_with_keyword_names(
    root: str, server: ChatServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    server.script = lambda sent, seen: "500"
    _use(monkeypatch, root, server, concurrency=2, max_retries=1)
    assert main(["name", "--quarter", str(QUARTER), "--what", "topics", "--keywords-ok"]) == 0
    # Two workers each fail a request (2 attempts) in a row: the rest is not sent at all.
    assert len(server.requests) <= 2 * 2 * 2
    assert {row["source"] for row in _names(Store(root)).values()} == {"keywords"}
    assert "HTTP 500" in capsys.readouterr().err


def test_without_an_endpoint_names_come_from_keywords_and_the_command_says_how_to_set_one(
    root: str,
    topic_rows: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    _use(monkeypatch, root, None)
    assert main(["name", "--quarter", str(QUARTER)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "FTM_LLM__BASE_URL" in err and "keywords" in err
    names = _names(Store(root))
    assert len(names) == N_TOPICS and {row["source"] for row in names.values()} == {"keywords"}
    assert names["A/1"]["name"] == ", ".join(_keywords(topic_rows)["A/1"][:3])
    assert {row["source"] for row in _names(Store(root), "theme").values()} == {"keywords"}
    assert not Path(root, layout.name_cache_entry(QUARTER, "x")).parent.exists()


def test_missing_inputs_are_usage_errors_that_name_the_command_to_run_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _use(monkeypatch, str(tmp_path / "empty"), None)
    assert main(["name", "--quarter", str(QUARTER)]) == 2
    assert "ftm reduce --quarter 2016Q4" in " ".join(capsys.readouterr().err.split())
    assert main(["name", "--quarter", str(QUARTER), "--what", "topics"]) == 2
    assert "ftm submit --quarter 2016Q4" in " ".join(capsys.readouterr().err.split())
    assert main(["name", "--quarter", "2016Q5"]) == 2


def test_a_quarter_without_themes_gets_an_empty_theme_names_file_and_its_topic_names(
    tmp_path: Path,
    topic_rows: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    store = Store(str(tmp_path / "store"))
    write_firm_topics(store, QUARTER, topic_rows[:30], firms_per_part=10)
    write_themes(store, QUARTER, topic_rows, 0)  # as reduce writes a quarter without themes
    _use(monkeypatch, store.root, None)

    assert main(["name", "--quarter", str(QUARTER)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no themes to name in 2016Q4: reduce found none" in err
    themes = store.read_table(layout.theme_names(QUARTER), THEME_NAMES)  # `quarter` as the schema's
    assert themes.num_rows == 0 and themes.schema.equals(THEME_NAMES)
    assert len(_names(store)) == 30


def test_an_unreachable_endpoint_gives_keyword_names_and_exit_3_unless_they_are_allowed(
    root: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _use(monkeypatch, root, None, max_retries=0, backoff_s=0.01)
    monkeypatch.setenv("FTM_LLM__BASE_URL", "http://127.0.0.1:1/v1")  # nothing listens there
    assert main(["name", "--quarter", str(QUARTER), "--what", "themes"]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "error:" in err and "name(s) are keywords because their requests to http://127.0.0.1:1/v1" in err
    assert {row["source"] for row in _names(Store(root), "theme").values()} == {"keywords"}

    assert main(["name", "--quarter", str(QUARTER), "--what", "themes", "--keywords-ok"]) == 0
    assert "error:" not in capsys.readouterr().err
