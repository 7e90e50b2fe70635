"""A storage root (or `--out`) that cannot be written is refused before any work, by every command
that writes: one line naming the path and what to do, exit 4 (settings or storage), nothing left
behind. The folder is made immutable (`chattr +i`), which stops root too, as the tests run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ftm import sample
from ftm.cli import main

COMMANDS = {
    "prefetch": ["prefetch", "2016Q4", "--input", str(sample.PATH)],
    "prefetch a range": ["prefetch", "2016Q3..2016Q4", "--input", str(sample.PATH)],
    "submit": ["submit", "--quarter", "2016Q4"],
    "reduce": ["reduce", "--quarter", "2016Q4"],
    "name": ["name", "--quarter", "2016Q4"],
    "trends": ["trends", "2016Q3..2016Q4"],
    "report": ["report", "2016Q4"],
    "run": ["run", "2016Q4", "--input", str(sample.PATH)],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_root_that_cannot_be_written_is_refused_at_once(
    command: str, immutable: Path, capsys: pytest.CaptureFixture
) -> None:
    started = time.perf_counter()
    code = main([*COMMANDS[command], "--root", str(immutable)])
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 4, err
    assert elapsed < 2.0  # before any work: spaCy alone takes longer to load
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(immutable) in lines[0] and "--root" in lines[0], err
    assert "Traceback" not in err
    assert list(immutable.iterdir()) == []  # nothing left behind


def test_a_bucket_that_does_not_exist_is_refused_at_once(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", s3_endpoint)
    code = main([*COMMANDS["prefetch"], "--root", "s3://no-such-bucket-ftm/research"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "no-such-bucket-ftm" in err and "Traceback" not in err
