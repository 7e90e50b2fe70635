"""The names files join what they name as they are: README's pandas and duckdb joins, run as
written on a quarter that went through the real map, reduce and name; and names files of an
earlier ftm (a text `id`) are read with their keys and rewritten keyed by `ftm name`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from ftm import layout, read_names
from ftm.cli import main
from ftm.schemas import FIRM_THEME_EXPOSURE, THEME_NAMES, THEME_TOPICS, THEMES, TOPIC_NAMES
from ftm.storage import Store
from naming_inputs import as_an_earlier_ftm_wrote_it
from reduce_inputs import QUARTER, mapped

README = Path(__file__).resolve().parents[1] / "README.md"
README_ROOT = "ftm-data"  # the storage root README's joins read


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage root whose quarter was mapped, reduced and named (keyword names: no endpoint)."""
    source, config, _ = mapped(tmp_path_factory)
    root = tmp_path_factory.mktemp("named") / "root"
    shutil.copytree(source, root)
    for command in ("reduce", "name"):
        assert main(["--config", str(config), command, "--quarter", str(QUARTER), "--root", str(root)]) == 0
    return root


def _readme_block(language: str) -> str:
    """The README's one code block in `language` that joins the names, with its storage root."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    blocks = [block for block in blocks if "theme_names" in block]
    assert len(blocks) == 1, f"README should show one {language} block joining names, not {len(blocks)}"
    assert README_ROOT in blocks[0] and str(QUARTER) in blocks[0]
    return blocks[0]


def _rows(table: pa.Table, *columns: str) -> set[tuple[Any, ...]]:
    return {tuple(row.values()) for row in table.select(list(columns)).to_pylist()}


def test_the_names_files_are_keyed_like_what_they_name(named: Path) -> None:
    store = Store(str(named))
    themes = store.read_table(layout.theme_names(QUARTER), THEME_NAMES)  # checks names and types
    topics = store.read_table(layout.topic_names(QUARTER), TOPIC_NAMES)
    members = store.read_table(layout.theme_topics(QUARTER), THEME_TOPICS)
    named_themes = store.read_table(layout.themes(QUARTER), THEMES)
    # Every theme has its name; a theme need not hold a whole firm topic (themes are of sentences).
    assert themes.num_rows and _rows(named_themes, "theme_id") == _rows(themes, "theme_id")
    assert _rows(members, "theme_id") <= _rows(themes, "theme_id")
    assert _rows(members, "firm_id", "topic_id") <= _rows(topics, "firm_id", "topic_id")


def test_readme_joins_names_to_the_panel_and_topics_in_pandas_and_duckdb(
    named: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(str(named))
    panel = store.read_table(layout.firm_theme_exposure(QUARTER), FIRM_THEME_EXPOSURE)
    members = store.read_table(layout.theme_topics(QUARTER), THEME_TOPICS)
    names = dict(_rows(read_names(store, QUARTER, "theme"), "theme_id", "name"))
    assert panel.num_rows and members.num_rows
    (tmp_path / README_ROOT).symlink_to(named)
    monkeypatch.chdir(tmp_path)

    scope: dict[str, Any] = {}
    exec(compile(_readme_block("python"), f"{README}:python", "exec"), scope)
    # Every panel row and every theme topic got its name: nothing was lost to mismatched keys.
    assert len(scope["panel"]) == panel.num_rows and scope["panel"]["name"].notna().all()
    assert len(scope["members"]) == members.num_rows and scope["members"]["name"].notna().all()
    assert dict(zip(scope["panel"]["theme_id"], scope["panel"]["name"], strict=True)).items() <= names.items()

    rows = duckdb.sql(_readme_block("sql")).fetchall()
    assert len(rows) == panel.num_rows
    expected = {
        (firm, names[theme], share) for firm, theme, share in _rows(panel, "firm_id", "theme_id", "share")
    }
    assert {(firm, theme, share) for _, firm, _, _, theme, share in rows} == expected


def test_names_of_an_earlier_ftm_are_read_with_their_keys_and_rewritten_keyed(
    named: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(named, root)
    store = Store(str(root))
    paths = {"theme": layout.theme_names(QUARTER), "topic": layout.topic_names(QUARTER)}
    schemas = {"theme": THEME_NAMES, "topic": TOPIC_NAMES}
    keyed = {kind: as_an_earlier_ftm_wrote_it(store, QUARTER, kind) for kind in paths}
    for kind, table in keyed.items():
        assert "id" in store.read_table(paths[kind]).column_names
        assert read_names(store, QUARTER, kind).equals(table)  # the keys, converted as read

    assert main(["name", "--quarter", str(QUARTER), "--root", str(root)]) == 0  # the migration
    for kind, table in keyed.items():
        assert store.read_table(paths[kind]).column_names == schemas[kind].names
        assert store.read_table(paths[kind], schemas[kind]).equals(table)
