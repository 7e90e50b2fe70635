"""The command line as a user meets it: version, help with examples, exit codes."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ftm import __version__
from ftm.cli import app, main


def test_version(capsys: pytest.CaptureFixture) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ftm {__version__}"


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as the words that name it: (), ("submit",), ("image", "build")."""
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():  # a group's commands
        paths += _command_paths(sub, (*path, name))
    return paths


COMMANDS = _command_paths(typer.main.get_command(app))
BOX = "│╭╮╰╯─"


def _help(path: tuple[str, ...], width: int) -> list[str]:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return [line.rstrip() for line in result.output.splitlines()]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def test_every_command_is_in_the_overview(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    overview = capsys.readouterr().out
    assert len(COMMANDS) > 12 and all(path[0] in overview for path in COMMANDS if path)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(("ftm", *path)))
def test_help_reads_well_at_80_and_120_columns_and_shows_an_example(path: tuple[str, ...]) -> None:
    """Flags show no type; no word is cut; prose wraps at the terminal's width, not where the
    source broke its lines; examples keep their lines whole; every help has an example."""
    unwrapped = _help(path, 1000)
    examples = [line for line in unwrapped if _indent(line) > 1 and not set(line) & set(BOX)]
    command = " ".join(("ftm", *path))
    shown = [line.split()[: len(path) + 1] for line in examples]
    assert ["ftm", *path] in shown, f"`{command} --help` has no example"
    for width in (80, 120):
        lines = _help(path, width)
        text = "\n".join(lines)
        assert "<bool>" not in text and max(map(len, lines)) <= width
        # A word cut in two would count as two others: the words are those of the unwrapped help.
        words = Counter(text.translate(str.maketrans("", "", BOX)).split())
        assert words == Counter("\n".join(unwrapped).translate(str.maketrans("", "", BOX)).split())
        assert set(examples) <= set(lines), f"an example of `{command} --help` wraps at {width} columns"
        for above, below in itertools.pairwise(lines):
            if set(above + below) & set(BOX) or _indent(above) != 1 or _indent(below) != 1:
                continue  # a panel, a blank line, or an example
            # The help is padded by one column each side: the next word would have fitted here.
            fits = len(above) - 1 + 1 + len(below.split()[0]) <= width - 2
            assert not fits, f"`{command} --help` at {width} columns breaks a line early:\n{above}\n{below}"


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


@pytest.mark.parametrize(
    ("command", "suggested"),
    [
        (["submit", "--quarter", "2017Q1"], "ftm prefetch 2017Q1 --root '{root}'"),
        (["reduce", "--quarter", "2017Q1"], "ftm submit --quarter 2017Q1 --root '{root}'"),
        (["name", "--quarter", "2017Q1"], "ftm reduce --quarter 2017Q1 --root '{root}'"),
        (["watch"], "ftm submit --quarter 2023Q1 --root '{root}'"),
    ],
)
def test_suggested_commands_carry_the_root_that_located_the_data(
    command: list[str], suggested: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = str(tmp_path / "my data")  # a space, so the suggestion must quote it to paste
    assert main([*command, "--root", root]) == 2
    assert suggested.format(root=root) in " ".join(capsys.readouterr().err.split())


def test_suggested_commands_leave_out_the_default_root() -> None:
    from ftm.storage import Store

    assert Store("./ftm-data").command("watch") == "ftm watch"
    assert Store("s3://bucket/ftm").command("watch") == "ftm watch --root s3://bucket/ftm"


def test_ftm_runs_steps_are_short_plain_lines_in_a_log(capsys: pytest.CaptureFixture) -> None:
    from ftm.commands import run

    run._step("prefetch 2021Q3")  # stderr is captured, so not a terminal: as in a log
    err = capsys.readouterr().err
    assert err.strip() == "== ftm run: prefetch 2021Q3"
    assert max(len(line) for line in err.splitlines()) < 80
