"""`ftm submit` on the local backend and `ftm watch`: the whole path from a prefetched quarter to
firm-topic files with real worker processes, a worker killed, a Ctrl-C and a SIGKILL of the whole
command losing nothing, and the watch table, plain lines and JSON snapshot."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftm import layout, sample
from ftm.backends import open_backend
from ftm.cli import app, main
from ftm.commands.watch import COLUMNS
from ftm.map import records
from ftm.plan import read_plan
from ftm.quarters import Quarter
from ftm.runs import RunObserver
from ftm.runs.record import latest_run, write_run
from ftm.schemas import BatchProgress, RunRecord
from ftm.settings import load_settings
from ftm.storage import Store
from map_inputs import (
    CONFIG,
    QUARTER,
    copy_prefetch,
    manifest,
    prefetched,
    quarter_firms,
    topic_rows,
    write_config,
)

BATCH_SIZE = "6"  # two batches of six firms, each written in three parts of two


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prefetched(tmp_path_factory)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("config"))


def _submit(config: Path, root: str, *extra: str) -> list[str]:
    return ["--config", str(config), "submit", "--quarter", str(QUARTER), "--root", root, *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, source: Path, config: Path) -> Store:
    """An uninterrupted run: submitted detached with two workers, followed to its end by `watch`."""
    store = copy_prefetch(source, Store(str(tmp_path_factory.mktemp("reference"))))
    args = _submit(config, store.root, "--batch-size", BATCH_SIZE, "--workers", "2", "--detach")
    assert main(args) == 0
    assert main(["--config", str(config), "watch", "--root", store.root, "--interval", "0.5"]) == 0
    return store


def test_submit_maps_every_firm_into_schema_checked_part_files(reference: Store) -> None:
    firms = set(manifest(reference).firm_to_chunk)
    plan = read_plan(reference, QUARTER)
    assert plan is not None and [len(b.firm_ids) for b in plan] == [6, 6]
    assert sorted(f for b in plan for f in b.firm_ids) == sorted(firms)

    rows = topic_rows(reference)  # every part file checked against FIRM_TOPICS; no (firm, topic) twice
    with_topics = {firm for firm, _ in rows}
    skipped: dict[str, str] = {}
    for batch in plan:
        checkpoint = records.read_checkpoint(reference, QUARTER, batch.batch_id)
        assert checkpoint is not None and checkpoint.finished and not checkpoint.failed_firm_ids
        assert sorted(checkpoint.completed_firm_ids) == sorted(batch.firm_ids)
        assert len(checkpoint.part_files) <= 3 and all(reference.exists(p) for p in checkpoint.part_files)
        skipped.update({s.firm_id: s.reason for s in checkpoint.skipped_firms})
    assert with_topics | set(skipped) == firms and not with_topics & set(skipped)
    assert all(skipped.values()) and len(with_topics) >= 6
    for (_, topic), row in rows.items():
        assert row["quarter"] == "2016Q4" and topic >= 0 and row["keywords"] and row["representation"]
        assert row["n_sentences"] == len(row["sentence_ids"]) > 0 and row["representative_sentences"]
        assert len(row["centroid"]) == 384  # the mean of its sentences' MiniLM embeddings


def test_a_whole_quarter_maps_on_two_workers_and_every_firm_is_accounted_for(
    full_quarter: Store, shared_corpus: Path, tmp_path: Path
) -> None:
    """The whole path on all of 2016Q4 of the shared corpus with the default topic settings: each
    firm of the quarter has topics, or is recorded as skipped with its reason (by the prefetch, or
    by the map when it is too small or all outliers), in exactly one of those places."""
    store = copy_prefetch(Path(full_quarter.root), Store(str(tmp_path / "root")))
    config = tmp_path / "ftm.toml"
    config.write_text("[map]\nheartbeat_s = 1.0\n")
    assert main(_submit(config, store.root, "--batch-size", "90", "--workers", "2")) == 0

    prefetch = manifest(store)
    plan = read_plan(store, QUARTER)
    assert plan is not None and len(plan) == 2
    assert sorted(f for b in plan for f in b.firm_ids) == sorted(prefetch.firm_to_chunk)
    map_skips: dict[str, str] = {}
    for batch in plan:
        checkpoint = records.read_checkpoint(store, QUARTER, batch.batch_id)
        assert checkpoint is not None and checkpoint.finished and not checkpoint.failed_firm_ids
        assert sorted(checkpoint.completed_firm_ids) == sorted(batch.firm_ids)
        map_skips.update({s.firm_id: s.reason for s in checkpoint.skipped_firms})
    prefetch_skips = {s.firm_id: s.reason for s in prefetch.skipped_firms}
    rows = topic_rows(store)  # every part file checked against FIRM_TOPICS; no (firm, topic) twice
    with_topics = {firm for firm, _ in rows}
    places = [with_topics, set(map_skips), set(prefetch_skips)]
    expected = quarter_firms(shared_corpus)
    assert set().union(*places) == expected and sum(map(len, places)) == len(expected)
    assert all(map_skips.values()) and all(prefetch_skips.values())
    assert len(with_topics) >= len(expected) // 4, "the map should find topics in most long calls"

    # Each topic holds the firm's own sentences, and no sentence is in two topics of a firm.
    sentences: dict[str, set[str]] = {}
    for chunk in prefetch.chunks:
        table = store.read_table(f"{layout.prefetch_folder(QUARTER)}/{chunk.file}")
        for firm, sentence in zip(
            table.column("firm_id").to_pylist(), table.column("sentence_id").to_pylist(), strict=True
        ):
            sentences.setdefault(firm, set()).add(sentence)
    used: dict[str, list[str]] = {}
    for (firm, _), row in rows.items():
        assert row["n_sentences"] == len(row["sentence_ids"]) >= 5  # topics.small_firm_min_cluster_size
        assert set(row["sentence_ids"]) <= sentences[firm] and row["keywords"] and row["representation"]
        used.setdefault(firm, []).extend(row["sentence_ids"])
    assert all(len(ids) == len(set(ids)) <= len(sentences[firm]) for firm, ids in used.items())


def test_run_record_holds_the_plan_backend_and_masked_settings(reference: Store) -> None:
    run = latest_run(reference, QUARTER)
    assert run is not None and run.backend == "local" and run.batch_ids == ["batch_000", "batch_001"]
    assert set(run.job_ids) == {"batch_000", "batch_001"} and run.code and run.code.startswith("ftm ")
    assert run.settings["map"]["firms_per_part"] == 2 and run.settings["llm"]["api_key"] is None


def test_watch_json_is_one_snapshot_with_every_column(
    reference: Store, capsys: pytest.CaptureFixture
) -> None:
    capsys.readouterr()
    assert main(["watch", "--root", reference.root, "--json"]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["ended"] and snapshot["succeeded"] and snapshot["quarter"] == "2016Q4"
    assert snapshot["totals"]["firms_total"] == 12 and snapshot["totals"]["succeeded"] == 2
    assert snapshot["totals"]["firms_done"] == 12 and snapshot["totals"]["firms_failed"] == 0
    for batch in snapshot["batches"]:
        assert batch["state"] == "succeeded" and batch["firms_done"] == batch["firms_total"] == 6
        assert batch["attempts"] == 1 and batch["rate_per_min"] > 0 and batch["elapsed_s"] > 0
        assert {"firms_failed", "last_failure", "eta_s", "message"} <= set(batch)


def test_watch_draws_a_live_table_with_every_column_on_a_terminal(reference: Store) -> None:
    run = latest_run(reference, QUARTER)
    assert run is not None
    result = CliRunner().invoke(
        app, ["watch", run.run_id, "--root", reference.root], env={"TTY_COMPATIBLE": "1", "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    table = result.output
    for column in COLUMNS:
        assert column in table, column
    assert table.count("succeeded") >= 2 and "6/6" in table and "12/12" in table  # rows and footer
    assert "batch_000" in table and "batch_001" in table and "2 batches" in table
    assert f"run {run.run_id}" in table and "ended" in table
    assert "\x1b[" in table  # drawn for a terminal, not as plain lines


def test_watch_without_a_terminal_prints_a_line_per_batch_and_ends(
    reference: Store, capsys: pytest.CaptureFixture
) -> None:
    assert main(["watch", "--root", reference.root]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("batch_")]
    assert len(lines) == 2 and all("succeeded: 6/6 firms done, 0 failed" in line for line in lines)
    assert "firms/min" in lines[0] and "elapsed" in lines[0] and "ETA" in lines[0]
    assert "ended: 2 of 2 batches succeeded" in " ".join(err.split())


def test_submit_again_resumes_the_run_and_runs_nothing_finished(
    reference: Store, config: Path, capsys: pytest.CaptureFixture
) -> None:
    run = latest_run(reference, QUARTER)
    parts = {path: reference.read_bytes(path) for path in reference.list(layout.firm_topics_folder(QUARTER))}
    assert main(_submit(config, reference.root)) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert run is not None and f"run {run.run_id} resumes" in err and "nothing to run" in err
    assert {
        path: reference.read_bytes(path) for path in reference.list(layout.firm_topics_folder(QUARTER))
    } == parts
    # A finished map runs no batch again, so another --batch-size cannot matter to it: kept as it is.
    assert main(_submit(config, reference.root, "--batch-size", "4")) == 0
    assert "nothing to run" in " ".join(capsys.readouterr().err.split())
    assert [len(batch.firm_ids) for batch in read_plan(reference, QUARTER) or []] == [6, 6]


def test_another_batch_size_is_refused_while_the_map_is_unfinished(
    reference: Store, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "unfinished"
    shutil.copytree(reference.root, root)
    (root / layout.batch_checkpoint(QUARTER, "batch_001")).unlink()  # its work is left to do
    assert main(_submit(config, str(root), "--batch-size", "4")) == 2  # other batches: refused
    assert "--new" in " ".join(capsys.readouterr().err.split())
    # `ftm run` refuses it too, before it prefetches the range's other quarter.
    run = ["--config", str(config), "run", "2016Q3..2016Q4", "--input", str(sample.PATH), "--root", str(root)]
    assert main([*run, "--batch-size", "4"]) == 2
    assert "--batch-size 4" in " ".join(capsys.readouterr().err.split())
    assert not (root / layout.prefetch_folder(Quarter.parse("2016Q3"))).exists()


def test_submit_refuses_without_a_prefetch_and_the_batch_backend_without_a_stack(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture
) -> None:
    root = str(tmp_path / "empty")
    assert main(_submit(config, root, "--batch-size", "5")) == 2
    assert f"run `ftm prefetch 2016Q4 --root {root}` first" in " ".join(capsys.readouterr().err.split())
    assert main(_submit(config, root, "--backend", "batch")) == 2
    assert "run `ftm deploy` once" in " ".join(capsys.readouterr().err.split())
    assert not Path(root).exists()


def test_dry_run_prints_the_plan_and_writes_nothing(
    source: Path, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture
) -> None:
    store = copy_prefetch(source, Store(str(tmp_path / "root")))
    before = store.list("")
    assert main(_submit(config, store.root, "--batch-size", "5", "--dry-run", "--json")) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [b["firms"] for b in plan["batches"]] == [4, 4, 4] and plan["n_firms"] == 12
    assert sum(b["sentences"] for b in plan["batches"]) == plan["n_sentences"] == manifest(store).n_sentences
    assert store.list("") == before


def test_a_killed_worker_and_ctrl_c_lose_nothing_and_submit_again_gives_identical_topics(
    source: Path, tmp_path: Path, config: Path, reference: Store
) -> None:
    store = copy_prefetch(source, Store(str(tmp_path / "root")))
    command = [sys.executable, "-m", "ftm", *_submit(config, store.root, "--batch-size", BATCH_SIZE)]
    # A new session, so that SIGINT goes to the whole process group, as Ctrl-C in a terminal does.
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while True:  # mid-batch: a part file and its checkpoint written, more firms to go
        checkpoint = records.read_checkpoint(store, QUARTER, "batch_000")
        if checkpoint is not None and checkpoint.part_files and not checkpoint.finished:
            break
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    progress = records.read_progress(store, QUARTER, "batch_000")
    assert progress is not None and progress.pid
    os.kill(progress.pid, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err

    killed = records.read_progress(store, QUARTER, "batch_000")
    assert killed is not None and killed.state == "failed" and "SIGKILL" in (killed.message or "")
    other = records.read_progress(store, QUARTER, "batch_001")
    assert other is not None and other.state in ("stopped", "succeeded")
    assert main(["watch", "--root", store.root]) == 3  # the run ended with an unfinished batch

    assert main(_submit(config, store.root)) == 0
    assert topic_rows(store) == topic_rows(reference)
    for batch_id in ("batch_000", "batch_001"):
        checkpoint = records.read_checkpoint(store, QUARTER, batch_id)
        assert checkpoint is not None and checkpoint.finished
    resumed = records.read_checkpoint(store, QUARTER, "batch_000")
    assert resumed is not None and resumed.attempt == 2


def _mid_batch(store: Store, process: subprocess.Popen[str]) -> None:
    """Waits until batch_000 wrote a part file and its checkpoint, with more firms to go."""
    deadline = time.monotonic() + 240
    while True:
        checkpoint = records.read_checkpoint(store, QUARTER, "batch_000")
        if checkpoint is not None and checkpoint.part_files and not checkpoint.finished:
            return
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def test_submit_is_refused_while_its_run_lives_and_goes_on_at_once_after_a_sigkill_of_it_all(
    source: Path, tmp_path: Path, reference: Store
) -> None:
    """SIGKILL of the whole process group of `ftm submit` (the command, its supervisor thread and
    its workers), then the same command again straight away. Heartbeats an hour apart, so that
    only the processes can tell that nothing of the run is alive any more."""
    store = copy_prefetch(source, Store(str(tmp_path / "root")))
    config = tmp_path / "ftm.toml"
    config.write_text(CONFIG.replace("heartbeat_s = 1.0", "heartbeat_s = 3600.0"))
    command = [sys.executable, "-m", "ftm", *_submit(config, store.root, "--batch-size", BATCH_SIZE)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        _mid_batch(store, process)
        # Frozen, not ended: the run's processes stay alive while the second command starts,
        # however fast the rest of the map would have been (12 small firms take seconds).
        os.killpg(process.pid, signal.SIGSTOP)
        run = latest_run(store, QUARTER)
        assert run is not None
        alive = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert alive.returncode == 2, alive.stderr
        assert (
            f"run {run.run_id} of {QUARTER} is still going: follow it with "
            f"`ftm watch {run.run_id} --root {store.root}`, "
            "or stop it before submitting again"
        ) in " ".join(alive.stderr.split())
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"run {run.run_id} resumes" in " ".join(resumed.stderr.split())
    assert topic_rows(store) == topic_rows(reference)  # and no (firm, topic) written twice
    killed = records.read_checkpoint(store, QUARTER, "batch_000")
    assert killed is not None and killed.finished and killed.attempt == 2


def test_a_running_batch_is_judged_by_its_process_on_this_host_and_by_its_heartbeat_elsewhere(
    tmp_path: Path,
) -> None:
    store = Store(str(tmp_path / "root"))
    here, mine, started = records.host(), os.getpid(), records.process_started()
    assert started, "the process start time comes from /proc"
    ended = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ended_started = records.process_started(ended.pid)
    ended.kill()
    ended.wait()
    fresh, old = records.now(), records.now().replace(year=2000)
    workers = {
        "batch_000": (here, ended.pid, ended_started, fresh),  # gone, though its heartbeat is fresh
        "batch_001": (here, mine, started, old),  # alive, though its heartbeat is long stale
        "batch_002": (here, mine, "1", fresh),  # its pid now belongs to another process
        "batch_003": ("another-host", ended.pid, ended_started, fresh),  # elsewhere: the heartbeat
        "batch_004": (here, ended.pid, None, fresh),  # no start time (an older ftm): the heartbeat
    }
    for batch_id, (host, pid, process_started, beat) in workers.items():
        progress = BatchProgress(
            batch_id=batch_id,
            firms_total=6,
            firms_done=2,
            host=host,
            pid=pid,
            process_started=process_started,
            started_at=beat,
            heartbeat_at=beat,
        )
        records.write_progress(store, QUARTER, progress)
    run = RunRecord(
        run_id="run",
        quarter=str(QUARTER),
        backend="local",
        batch_ids=list(workers),
        job_ids=dict.fromkeys(workers, f"local:{here}:{mine}:{started}"),  # its supervisor lives
        submitted_at=fresh,
    )
    write_run(store, run)
    settings = load_settings(None, overrides={"storage": {"root": store.root}}, environ={})
    views = RunObserver(store, run, open_backend("local", settings)).snapshot().batches
    states = {view.batch_id: (view.state, view.message) for view in views}
    assert states["batch_000"] == (
        "failed",
        f"its worker (pid {ended.pid}) is gone without a word; resubmit to go on",
    )
    assert states["batch_001"][0] == "running" and "no heartbeat for" in (states["batch_001"][1] or "")
    assert states["batch_002"][0] == "failed"
    assert states["batch_003"] == ("running", None)
    assert states["batch_004"] == ("running", None)


def _ended_run(store: Store, states: dict[str, tuple[str, int, str | None]]) -> RunRecord:
    """A local run whose supervisor is gone and whose batches ended as `states` say
    (state, firms failed, message), as their workers' records would tell."""
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = records.process_started(gone.pid)
    gone.kill()
    gone.wait()
    at = records.now()
    for batch_id, (state, failed, message) in states.items():
        records.write_progress(
            store,
            QUARTER,
            BatchProgress(
                batch_id=batch_id,
                firms_total=6,
                firms_done=6 if state == "succeeded" else 2,
                firms_failed=failed,
                state=state,  # type: ignore[arg-type]
                message=message,
                host=records.host(),
                pid=gone.pid,
                process_started=started,
                started_at=at,
                heartbeat_at=at,
            ),
        )
    run = RunRecord(
        run_id=f"{QUARTER}-stopped",
        quarter=str(QUARTER),
        backend="local",
        batch_ids=list(states),
        job_ids=dict.fromkeys(states, f"local:{records.host()}:{gone.pid}:{started}"),
        submitted_at=at,
    )
    write_run(store, run)
    return run


def test_watch_on_a_stopped_run_says_it_was_stopped_and_exits_5_not_3(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store = Store(str(tmp_path / "root"))
    _ended_run(
        store,
        {"batch_000": ("succeeded", 0, None), "batch_001": ("stopped", 0, "interrupted; resubmit to go on")},
    )
    assert main(["watch", "--root", store.root]) == 5
    err = " ".join(capsys.readouterr().err.split())
    assert f"run {QUARTER}-stopped was stopped before the end: 1 of 2 batches succeeded" in err
    assert f"ftm submit --quarter {QUARTER} --root {store.root}" in err


def test_watch_on_a_run_with_failed_firms_exits_3_even_when_a_batch_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store = Store(str(tmp_path / "root"))
    _ended_run(store, {"batch_000": ("succeeded", 1, None), "batch_001": ("stopped", 0, "interrupted")})
    assert main(["watch", "--root", store.root]) == 3
    assert "ended: 1 of 2 batches succeeded" in " ".join(capsys.readouterr().err.split())


def test_the_table_says_what_ctrl_c_does_where_it_is_drawn(tmp_path: Path) -> None:
    from dataclasses import replace

    from rich.console import Console

    from ftm.commands.watch import CTRL_C_DETACHES, CTRL_C_STOPS, render

    store = Store(str(tmp_path / "root"))
    run = _ended_run(store, {"batch_000": ("stopped", 0, None)})
    settings = load_settings(None, overrides={"storage": {"root": store.root}}, environ={})
    going = replace(RunObserver(store, run, open_backend("local", settings)).snapshot(), ended=False)

    def drawn(ctrl_c: str) -> str:
        console = Console(width=200, record=True)
        console.print(render(going, ctrl_c))
        return console.export_text()

    assert "Ctrl-C stops the workers" in drawn(CTRL_C_STOPS) and "detach" not in drawn(CTRL_C_STOPS)
    assert "Ctrl-C stops watching; the run goes on" in drawn(CTRL_C_DETACHES)


def test_a_narrow_table_keeps_states_and_reasons_whole_and_drops_columns_by_priority(tmp_path: Path) -> None:
    from rich.console import Console

    from ftm.commands.watch import render

    store = Store(str(tmp_path / "root"))
    run = _ended_run(
        store,
        {
            "batch_000": ("succeeded", 0, None),
            "batch_001": ("failed", 2, "circuit breaker: 2 firms in a row"),
        },
    )
    settings = load_settings(None, overrides={"storage": {"root": store.root}}, environ={})
    snapshot = RunObserver(store, run, open_backend("local", settings)).snapshot()

    def drawn(width: int) -> list[str]:
        console = Console(width=width, record=True)
        console.print(render(snapshot, width=width))
        return console.export_text().splitlines()

    narrow = drawn(60)
    assert max(map(len, narrow)) <= 60
    text = "\n".join(narrow)
    assert "succeeded" in text and "succeed…" not in text
    assert "circuit" in text and "failed (last" in text  # the reasons keep a column of their own
    assert "attempts" not in text and "elapsed" not in text  # what gave way
    wide = "\n".join(drawn(200))
    assert "attempts" in wide and "elapsed" in wide
    # An ended run has no pace or time left: dashes, not 0.0 firms/min and ETA 0:00.
    footer = next(line for line in drawn(200) if "2 batches" in line)
    assert "0:00" not in footer and "0.0" not in footer and "–" in footer


def test_the_end_of_a_run_counts_skipped_firms_apart_and_says_one_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store = Store(str(tmp_path / "root"))
    _ended_run(store, {"batch_000": ("succeeded", 0, None)})
    records.write_progress(
        store,
        QUARTER,
        records.read_progress(store, QUARTER, "batch_000").model_copy(update={"firms_skipped": 2}),  # type: ignore[union-attr]
    )
    assert main(["watch", "--root", store.root]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "1 of 1 batch succeeded; of 6 firms, 4 got topics, 2 were skipped with a reason, 0 failed" in err


def test_without_a_terminal_lines_are_whole_not_cut_at_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = str(tmp_path / "a folder whose name is long enough to pass eighty columns on its own" / "ftm")
    assert main(["config"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert any("sentence-transformers/all-MiniLM-L6-v2" in line for line in lines)
    assert main(["watch", "--root", root]) == 2
    err = capsys.readouterr().err
    assert any(root in line for line in err.splitlines()), err
