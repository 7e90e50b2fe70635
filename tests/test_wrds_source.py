"""`ftm prefetch` from WRDS: the real SQL through the real `wrds` package against a local
PostgreSQL server shaped like WRDS (tests/wrds_server.py), seeded from the shared corpus plus the
rows that make the queries honest: several versions of a call, other event types, dated links."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from ftm import layout
from ftm.errors import FtmError, SettingsError
from ftm.prefetch import PrefetchProgress, prefetch_quarter, prefetch_quarters, survey, survey_quarters
from ftm.quarters import Quarter
from ftm.schemas import SENTENCES, PrefetchManifest
from ftm.settings import FtmSettings, load_settings
from ftm.storage import Store

QUARTER = Quarter.parse("2016Q4")
FOLDER = layout.prefetch_folder(QUARTER)


@pytest.fixture(autouse=True)
def no_pg_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """libpq reads PG* variables and ~/.pgpass: keep this machine's out of the tests."""
    for name in ("PGUSER", "PGPASSWORD", "PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


def _settings(server: Any, root: Path | str, **wrds: Any) -> FtmSettings:
    overrides = {
        "storage": {"root": str(root)},
        "source": {
            "kind": "wrds",
            "wrds": {
                "host": server.host,
                "port": server.port,
                "dbname": server.dbname,
                "username": server.user,
                "password": server.password,
                **wrds,
            },
        },
        # Keep every sentence that has a content word, entities included: these tests look for
        # marker sentences to prove which text was read, and are not about cleaning.
        "preprocess": {"workers": 1, "min_tokens": 1, "drop_entity_labels": []},
    }
    return load_settings(None, overrides=overrides, environ={})


def _cli_env(server: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTM_", "PG"))}
    env.update(
        {
            "FTM_SOURCE__WRDS__HOST": server.host,
            "FTM_SOURCE__WRDS__PORT": str(server.port),
            "FTM_SOURCE__WRDS__USERNAME": server.user,
            "PGPASSFILE": os.devnull,
            **extra,
        }
    )
    return env


def _ftm(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess with stdin closed, as in a batch job: a prompt would fail, not wait."""
    return subprocess.run(
        [sys.executable, "-m", "ftm", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


class ConnectionCounter:
    """Counts `wrds.Connection` objects made, by wrapping the real class (it still connects)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import wrds

        self.count = 0
        real_init = wrds.Connection.__init__

        def counting_init(connection: Any, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            real_init(connection, *args, **kwargs)

        monkeypatch.setattr(wrds.Connection, "__init__", counting_init)


# --- one full quarter ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(
    wrds_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Store, PrefetchManifest, Any]:
    root = tmp_path_factory.mktemp("wrds-full")
    events: list[str] = []
    result = prefetch_quarter(
        _settings(wrds_server, root),
        QUARTER,
        on_progress=lambda p: events.append(p.phase),
    )
    store = Store(str(root))
    table = _sentences(store)
    assert "connecting" in events and "reconnecting" not in events
    return store, result.manifest, table


def _sentences(store: Store) -> Any:
    import pyarrow as pa

    paths = sorted(p for p in store.list(FOLDER) if p.endswith(".parquet") and "/_" not in p)
    return pa.concat_tables([store.read_table(path, SENTENCES) for path in paths])


def _rows_of(table: Any, transcript_id: int) -> Any:
    return table.filter(pc.equal(table["transcript_id"], str(transcript_id)))


def test_every_earnings_call_of_the_quarter_is_there_once_with_its_chosen_version(
    full_run: tuple[Store, PrefetchManifest, Any], wrds_server: Any
) -> None:
    _, manifest, table = full_run
    seed = wrds_server.seed
    expected = {str(call.transcriptid) for call in seed.calls}
    found = set(table["transcript_id"].to_pylist())
    assert found == expected
    assert manifest.n_calls == len(seed.calls)
    assert not found & {str(t) for t in seed.excluded_transcript_ids}
    assert manifest.n_firms == len({call.companyid for call in seed.calls})


def test_each_call_carries_its_ids_as_of_the_call_date(
    full_run: tuple[Store, PrefetchManifest, Any], wrds_server: Any
) -> None:
    _, _, table = full_run
    for call in wrds_server.seed.calls:
        rows = _rows_of(table, call.transcriptid)
        assert rows.num_rows > 0, call
        for column, value in (
            ("firm_id", str(call.companyid)),
            ("firm_name", call.company_name),
            ("gvkey", call.gvkey),
            ("permno", call.permno),
            ("earnings_call_date", call.call_date),
            ("transcript_collection", call.collection_type),
            ("quarter", "2016Q4"),
        ):
            assert set(rows[column].to_pylist()) == {value}, (call, column)


def test_the_special_cases_come_out_as_the_reference_says(
    full_run: tuple[Store, PrefetchManifest, Any], wrds_server: Any
) -> None:
    _, _, table = full_run
    seed = wrds_server.seed
    calls_of = {}
    for call in seed.calls:
        calls_of.setdefault(call.companyid, []).append(call)

    def only(case: str) -> Any:
        (call,) = calls_of[seed.case[case]]
        return call

    versions = " ".join(_rows_of(table, only("three_versions").transcriptid)["raw_text"].to_pylist())
    assert "VERSION-1-MARKER" in versions  # Final, then latest: not the later Preliminary one
    assert "VERSION-2-MARKER" not in versions and "VERSION-7-MARKER" not in versions
    assert "PRELIMINARY-MARKER" not in versions
    tie = " ".join(_rows_of(table, only("version_tie").transcriptid)["raw_text"].to_pylist())
    assert "TIE-HIGHER-ID-MARKER" in tie and "TIE-LOWER-ID-MARKER" not in tie
    assert not any("NON-EARNINGS-MARKER" in text for text in table["raw_text"].to_pylist())
    assert only("three_versions").collection_type == "Proofed Copy"
    assert only("no_gvkey").gvkey is None and only("no_gvkey").permno is None
    assert only("nr_link").gvkey is not None and only("nr_link").permno is None
    assert only("big_companyid").companyid == 2_500_000_000
    assert str(2_500_000_000) in set(table["firm_id"].to_pylist())
    assert only("late_call").call_date == date(2016, 12, 31)
    assert len(calls_of[seed.case["two_calls"]]) == 2
    two = {
        t
        for t in table["transcript_id"].to_pylist()
        if int(t) in {c.transcriptid for c in calls_of[seed.case["two_calls"]]}
    }
    assert len(two) == 2

    long_text = " ".join(_rows_of(table, only("long_component").transcriptid)["raw_text"].to_pylist())
    assert "LONG-COMPONENT-END-MARKER" in long_text  # past character 32,767: nothing was cut
    raw = table["raw_text"].to_pylist()
    assert not any("\r" in text for text in raw)
    crlf = _rows_of(table, only("crlf").transcriptid)
    assert crlf.num_rows > 0


def test_operator_turns_are_dropped_and_roles_come_from_the_lookup_names(
    full_run: tuple[Store, PrefetchManifest, Any], wrds_server: Any
) -> None:
    _, manifest, table = full_run
    assert not any("OPERATOR-MARKER" in text for text in table["raw_text"].to_pylist())
    assert set(table["speaker_type"].to_pylist()) == {"presenter", "question", "answer"}
    assert manifest.n_empty_components == sum(call.n_blank for call in wrds_server.seed.calls)


def test_the_manifest_says_how_the_quarter_and_the_links_were_defined(
    full_run: tuple[Store, PrefetchManifest, Any], wrds_server: Any
) -> None:
    _, manifest, _ = full_run
    calls = wrds_server.seed.calls
    source = manifest.source
    assert source["kind"] == "wrds"
    assert source["call_date_range"] == {
        "column": "mostimportantdateutc",
        "timezone": "UTC",
        "start": "2016-10-01",
        "end": "2017-01-01",
        "half_open": True,
    }
    firms = {c.companyid for c in calls}
    assert source["n_firms_without_gvkey"] == len(firms - {c.companyid for c in calls if c.gvkey})
    assert source["n_firms_without_permno"] == len(firms - {c.companyid for c in calls if c.permno})
    assert source["n_calls_dropped_unlinked"] == 0
    assert source["link_rule"]["required"] == "none"


def test_unlinked_calls_are_dropped_when_the_settings_say_so(wrds_server: Any, tmp_path: Path) -> None:
    found = survey(_settings(wrds_server, tmp_path / "root", link_required="permno"), QUARTER)
    linked = [c for c in wrds_server.seed.calls if c.permno is not None]
    assert found.n_calls == len(linked) < len(wrds_server.seed.calls)
    assert found.n_firms_with_permno == found.n_firms
    assert found.source["n_calls_dropped_unlinked"] == len(wrds_server.seed.calls) - len(linked)


def test_the_run_uses_exactly_one_connection(
    wrds_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = ConnectionCounter(monkeypatch)
    firms = sorted({str(c.companyid) for c in wrds_server.seed.calls})[:4]
    settings = _settings(wrds_server, tmp_path / "root", transcripts_per_query=1)
    result = prefetch_quarter(settings, QUARTER, firms=firms)
    assert result.manifest.n_firms == 4
    assert counter.count == 1  # metadata and four component queries over one connection


def test_a_range_of_three_quarters_is_prefetched_over_exactly_one_connection(
    wrds_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2016Q3 and 2017Q1 hold one call each (just before and just after 2016Q4), of companies
    that have none in 2016Q4: each quarter gets its own chunks and manifest of the listed firms it
    has, and a second run connects no more, every quarter being done."""
    counter = ConnectionCounter(monkeypatch)
    settings = _settings(wrds_server, tmp_path / "root")
    quarters = [Quarter.parse(label) for label in ("2016Q3", "2016Q4", "2017Q1")]
    outside = {case: str(wrds_server.seed.case[case]) for case in ("before_quarter", "after_quarter")}
    inside = sorted({str(c.companyid) for c in wrds_server.seed.calls})[:2]
    events: list[tuple[str, str]] = []
    results = prefetch_quarters(
        settings,
        quarters,
        firms=[*outside.values(), *inside],
        on_progress=lambda quarter, p: events.append((str(quarter), p.phase)),
    )
    assert counter.count == 1
    assert [r.manifest.quarter for r in results] == ["2016Q3", "2016Q4", "2017Q1"]
    firms = [sorted(r.manifest.firm_to_chunk) for r in results]
    assert firms == [[outside["before_quarter"]], inside, [outside["after_quarter"]]]
    assert [e for e in events if e[1] == "connecting"] == [("2016Q3", "connecting")]
    store = Store(str(tmp_path / "root"))
    for quarter in quarters:
        assert store.exists(layout.prefetch_manifest(quarter))
        chunk = store.read_table(layout.prefetch_chunk(quarter, 0), SENTENCES)
        assert set(chunk.column("quarter").to_pylist()) == {str(quarter)}
    # The same command again (another --firms would be refused: the quarters record theirs).
    again = prefetch_quarters(settings, quarters, firms=[*outside.values(), *inside])
    assert all(r.already_done for r in again) and counter.count == 1  # done quarters never connect
    # A dry run of the range: one connection more, and the same calls.
    found = survey_quarters(settings, quarters, firms=[*outside.values(), *inside])
    assert counter.count == 2
    assert [s.n_firms for s in found] == [1, 2, 1]
    assert [s.n_calls for s in found] == [r.manifest.n_calls for r in results]


# --- dry run and credentials --------------------------------------------------------------------


def test_dry_run_counts_and_writes_nothing(wrds_server: Any, tmp_path: Path) -> None:
    env = _cli_env(wrds_server, FTM_SOURCE__WRDS__PASSWORD=wrds_server.password)
    done = _ftm(["prefetch", "2016Q4", "--dry-run", "--json", "--root", "store"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    seed = wrds_server.seed
    firms = {c.companyid for c in seed.calls}
    assert counts["n_calls"] == len(seed.calls)
    assert counts["n_firms"] == len(firms)
    assert counts["n_firms_with_gvkey"] == len({c.companyid for c in seed.calls if c.gvkey})
    assert counts["n_firms_with_permno"] == len({c.companyid for c in seed.calls if c.permno is not None})
    assert counts["n_components"] == seed.n_components_total
    assert "approve the Duo push" in done.stderr
    assert not (tmp_path / "store").exists()
    assert wrds_server.password not in done.stderr + done.stdout


def test_wrong_password_fails_fast_with_exit_4_and_no_prompt(wrds_server: Any, tmp_path: Path) -> None:
    env = _cli_env(wrds_server, FTM_SOURCE__WRDS__PASSWORD="not-the-password")
    started = time.monotonic()
    done = _ftm(["prefetch", "2016Q4", "--dry-run"], env, tmp_path)
    assert done.returncode == 4, done.stderr
    assert time.monotonic() - started < 30
    assert "password authentication failed" in done.stderr and "refused the login" in done.stderr
    assert "Enter your WRDS username" not in done.stderr + done.stdout  # the package's prompt
    assert "wrds-pgdata" not in done.stderr + done.stdout  # never the real host as a fallback
    assert "not-the-password" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_an_unreachable_host_fails_fast_with_exit_4(wrds_server: Any, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on: bind, then close
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _cli_env(wrds_server, FTM_SOURCE__WRDS__PORT=str(port), FTM_SOURCE__WRDS__PASSWORD="x")
    started = time.monotonic()
    done = _ftm(["prefetch", "2016Q4"], env, tmp_path)
    assert done.returncode == 4, done.stderr
    assert time.monotonic() - started < 30
    assert f"cannot reach WRDS at 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr


def test_no_user_name_is_refused_before_connecting(tmp_path: Path) -> None:
    settings = load_settings(None, overrides={"source": {"kind": "wrds"}}, environ={})
    with pytest.raises(SettingsError, match="no WRDS user name"):
        survey(settings, QUARTER)


@pytest.mark.parametrize("way", ["PGPASSWORD", "pgpass"])
def test_the_password_can_come_from_libpq_sources(
    way: str, wrds_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if way == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", wrds_server.password)
    else:  # ~/.pgpass, as `wrds.Connection.create_pgpass_file` writes it
        monkeypatch.delenv("PGPASSFILE")
        monkeypatch.setenv("HOME", str(tmp_path))
        pgpass = tmp_path / ".pgpass"
        pgpass.write_text(
            f"{wrds_server.host}:{wrds_server.port}:wrds:{wrds_server.user}:{wrds_server.password}\n"
        )
        pgpass.chmod(0o600)
    settings = _settings(wrds_server, tmp_path / "root", password=None)
    assert settings.source.wrds.password is None
    assert survey(settings, QUARTER).n_calls == len(wrds_server.seed.calls)


def test_credentials_can_come_from_aws_secrets_manager(
    wrds_server: Any, tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", s3_endpoint)  # moto serves every service
    name = f"wrds-credentials-{tmp_path.name}"
    boto3.client("secretsmanager").create_secret(
        Name=name, SecretString=json.dumps({"username": wrds_server.user, "password": wrds_server.password})
    )
    settings = _settings(wrds_server, tmp_path / "root", username=None, password=None, aws_secret=name)
    assert survey(settings, QUARTER).n_calls == len(wrds_server.seed.calls)

    boto3.client("secretsmanager").create_secret(Name=name + "-bad", SecretString="not json")
    bad = _settings(wrds_server, tmp_path / "root", username=None, password=None, aws_secret=name + "-bad")
    with pytest.raises(SettingsError, match="must be JSON with username and password"):
        survey(bad, QUARTER)


# --- dropped connections --------------------------------------------------------------------------

SMALL = {"transcripts_per_query": 2}


def _small_settings(server: Any, root: Path) -> FtmSettings:
    settings = _settings(server, root, **SMALL)
    return settings.model_copy(
        update={
            "prefetch": settings.prefetch.model_copy(update={"firms_per_chunk": 3, "checkpoint_every": 2})
        }
    )


def _subset(server: Any) -> list[str]:
    return sorted({str(c.companyid) for c in server.seed.calls})[:9]


def _output(root: Path) -> tuple[dict[str, bytes], dict]:
    store = Store(str(root))
    files = {p: store.read_bytes(p) for p in store.list(FOLDER) if p.endswith(".parquet")}
    manifest = store.read_json(layout.prefetch_manifest(QUARTER))
    manifest.pop("created_at")
    return files, manifest


def _killer(server: Any, at: set[int], events: list[str]) -> Callable[[PrefetchProgress], None]:
    """A progress callback that kills ftm's server session, from the server side, after the
    given numbers of firms."""

    def on_progress(progress: PrefetchProgress) -> None:
        events.append(progress.phase)
        if progress.phase == "preprocessing" and progress.firms_done in at:
            at.discard(progress.firms_done)
            assert server.terminate("ftm") == 1

    return on_progress


@pytest.fixture(scope="module")
def uninterrupted(
    wrds_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, bytes], dict]:
    root = tmp_path_factory.mktemp("uninterrupted")
    prefetch_quarter(_small_settings(wrds_server, root), QUARTER, firms=_subset(wrds_server))
    return _output(root)


def test_a_dropped_connection_is_reopened_once_and_nothing_changes(
    wrds_server: Any,
    tmp_path: Path,
    uninterrupted: tuple[dict[str, bytes], dict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = ConnectionCounter(monkeypatch)
    events: list[str] = []
    prefetch_quarter(
        _small_settings(wrds_server, tmp_path),
        QUARTER,
        firms=_subset(wrds_server),
        on_progress=_killer(wrds_server, {3}, events),
    )
    assert events.count("reconnecting") == 1 and counter.count == 2
    assert _output(tmp_path) == uninterrupted


def test_a_second_drop_stops_with_exit_1_and_the_rerun_resumes_identically(
    wrds_server: Any, tmp_path: Path, uninterrupted: tuple[dict[str, bytes], dict]
) -> None:
    settings = _small_settings(wrds_server, tmp_path)
    with pytest.raises(FtmError, match="dropped again") as raised:
        prefetch_quarter(
            settings, QUARTER, firms=_subset(wrds_server), on_progress=_killer(wrds_server, {2, 5}, [])
        )
    assert raised.value.exit_code == 1
    assert not Store(str(tmp_path)).exists(layout.prefetch_manifest(QUARTER))
    again = prefetch_quarter(settings, QUARTER, firms=_subset(wrds_server))
    assert again.resumed_at > 0
    assert _output(tmp_path) == uninterrupted
