"""A subject measured by `ftm measure` on reduce_inputs' mapped quarter, made once per test session
and shared by the measure's tests (tests/test_measure.py) and its page's (tests/test_measure_report.py):
a description of the planted Quillon Freight Safety Act that shares no word with its sentences."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ftm.cli import main
from reduce_inputs import QUARTER, mapped

# Written to share no word with PLANTED (tests/test_measure.py checks), so that only meaning can
# find them.
DESCRIPTION = "government regulation requiring braking monitors"
NAME = "freight_rule"

_cache: dict[str, Any] = {}


def copy_mapped(source: Path, folder: Path) -> Path:
    """A copy of the mapped root in `folder`, without any measure."""
    root = folder / "root"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("measures"))
    return root


def run_measure(config: Path, *args: str) -> tuple[int, str, str]:
    """`ftm measure ARGS` in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--config", str(config), "measure", *args])
    return code, out.getvalue(), err.getvalue()


def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """(storage root, config file, the command's --json summary): NAME measured over QUARTER.
    Copy the root before changing its measure."""
    if "root" not in _cache:
        source, config, _ = mapped(tmp_path_factory)
        root = copy_mapped(source, tmp_path_factory.mktemp("measured"))
        code, out, err = run_measure(
            config, DESCRIPTION, str(QUARTER), "--name", NAME, "--root", str(root), "--json"
        )
        assert code == 0, err
        _cache.update(root=root, config=config, summary=json.loads(out))
    return _cache["root"], _cache["config"], _cache["summary"]
