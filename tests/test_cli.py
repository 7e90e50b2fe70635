"""The command line as a user meets it: version, help with examples, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ftm import __version__
from ftm.cli import app, main


def test_version(capsys: pytest.CaptureFixture) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ftm {__version__}"


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    names = [command.name for command in app.registered_commands]
    overview = capsys.readouterr().out
    assert names and all(name in overview for name in names)
    for name in names:
        assert main([name, "--help"]) == 0, name
        assert "Example" in capsys.readouterr().out, f"`ftm {name} --help` shows no example"


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["prefetch", "2016Q4", "--no-such-option"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_console_script_runs_as_a_real_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ftm", "prefetch", "2023Q5"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "2023Q5" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["calls[/].jsonl", "calls[old].jsonl", "[bold]x.jsonl"])
def test_user_text_in_messages_is_shown_verbatim_never_as_markup(
    name: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["prefetch", "2016Q4", "--source", "files", "--input", name]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert name in err and "Traceback" not in err


def test_config_table_shows_values_verbatim(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FTM_STORAGE__ROOT", "/data/[bold]odd[/]")
    assert main(["config"]) == 0
    assert "/data/[bold]odd[/]" in capsys.readouterr().err
