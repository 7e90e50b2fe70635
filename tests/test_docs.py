"""docs/architecture.md and README against the code: every Parquet schema and JSON record of
schemas.py documented column by column, every path function of layout.py with the path it really
returns, the settings sections and the exit codes; README's column lists; and no pointer out of
the repository to the team's workspace.

The test reads schemas.py and layout.py generically, so a schema, record or path added later
fails here until docs/architecture.md describes it."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pyarrow as pa
import pytest

from ftm import errors, layout, schemas
from ftm.quarters import Quarter
from ftm.settings import FtmSettings

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
HEADING = re.compile(r"^#{2,4} ", re.MULTILINE)
# A pointer out of the repository to the team's workspace: its folder, its first design draft or
# its reference notes, which no one who clones the project has.
OUTSIDE_POINTER = re.compile(r"\.\./shared\b|shared/(?:DESIGN|reference)\b|DESIGN §")


def _section(title: str) -> str:
    """The text of the doc's section whose heading starts with `title`, up to the next heading."""
    text = DOC.read_text()
    for part in HEADING.split(text):
        if part.startswith(title):
            return part
    raise AssertionError(f"docs/architecture.md has no section {title!r}")


def _table(text: str) -> list[list[str]]:
    """The first Markdown table in `text`: its body rows, cells stripped, header and rule left out."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows]
    return cells[2:]  # without the header and the |---| line


def _code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"expected one `code` cell, got {cell!r}"
    return match.group(1)


def _documented(kind: str) -> dict[str, str]:
    """`#### \\`NAME\\`` sections under "### Parquet" or "### JSON": name → the section's text."""
    text = DOC.read_text()
    start = text.index(f"\n### {kind}\n")
    end = text.find("\n### ", start + 1)
    end = text.find("\n## ", start + 1) if end < 0 else min(end, text.find("\n## ", start + 1))
    found = {}
    for part in re.split(r"^#### ", text[start:end], flags=re.MULTILINE)[1:]:
        found[_code(part.split(":")[0].split("\n")[0].strip())] = part
    return found


def _type_name(type_: pa.DataType) -> str:
    """A pyarrow type as the doc spells it."""
    if pa.types.is_fixed_size_list(type_):
        return f"list<{_type_name(type_.value_type)}>[n]"
    if pa.types.is_list(type_):
        return f"list<{_type_name(type_.value_type)}>"
    if pa.types.is_timestamp(type_):
        return f"timestamp[{type_.unit}, {type_.tz}]"
    names = {pa.float32(): "float32", pa.float64(): "float64", pa.date32(): "date32"}
    return names.get(type_, str(type_))


PARQUET = {name: value for name, value in vars(schemas).items() if isinstance(value, pa.Schema)}
RECORDS = {
    name: value
    for name, value in vars(schemas).items()
    if inspect.isclass(value) and issubclass(value, schemas.Record) and value is not schemas.Record
}
PATHS = {
    name: function
    for name, function in inspect.getmembers(layout, inspect.isfunction)
    if function.__module__ == layout.__name__ and not name.startswith("_")
}


def test_the_doc_describes_exactly_the_schemas_and_records_there_are() -> None:
    assert set(_documented("Parquet")) == set(PARQUET)
    assert set(_documented("JSON")) == set(RECORDS)


@pytest.mark.parametrize("name", sorted(PARQUET))
def test_each_parquet_schema_is_documented_column_by_column(name: str) -> None:
    sections = _documented("Parquet")
    assert name in sections, f"docs/architecture.md has no `#### `{name}`: FILE` section under Parquet"
    documented = [(_code(row[0]), row[1], row[2]) for row in _table(sections[name])]
    actual = [(f.name, _type_name(f.type), "yes" if f.nullable else "no") for f in PARQUET[name]]
    assert documented == actual, f"docs/architecture.md's table of {name} disagrees with schemas.py"


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_each_json_record_is_documented_field_by_field(name: str) -> None:
    sections = _documented("JSON")
    assert name in sections, f"docs/architecture.md has no `#### `{name}`` section under JSON"
    documented = [_code(row[0]) for row in _table(sections[name])]
    assert documented == list(RECORDS[name].model_fields), f"docs/architecture.md's {name} disagrees"


def _layout_rows() -> list[tuple[str, str, str]]:
    """(documented path, function name, the path the function returns for the documented call)."""
    rows = []
    for row in _table(_section("4. Storage layout")):
        path, call = _code(row[0]), ast.parse(_code(row[1]), mode="eval").body
        assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name), call
        function = PATHS[call.func.id]
        parameters = list(inspect.signature(function).parameters.values())
        arguments = [ast.literal_eval(argument) for argument in call.args]
        # Quarters are written as their label; the function takes a Quarter.
        values = [
            Quarter.parse(value) if parameter.annotation in (Quarter, "Quarter") else value
            for parameter, value in zip(parameters, arguments, strict=True)
        ]
        rows.append((path, call.func.id, function(*values)))
    return rows


def test_every_layout_path_is_documented_with_what_it_returns() -> None:
    rows = _layout_rows()
    for documented, name, actual in rows:
        assert documented == actual, f"docs/architecture.md says layout.{name} gives {documented}: {actual}"
    missing = sorted(set(PATHS) - {name for _, name, _ in rows})
    assert not missing, f"docs/architecture.md's Storage layout lacks layout.{', layout.'.join(missing)}"


def _file_patterns() -> dict[str, str]:
    """Parquet schema → the file name its heading gives (`chunk_NNNN.parquet`), checked to be the
    name of a documented layout path."""
    names = {Path(actual).name for _, _, actual in _layout_rows()}
    patterns = {}
    for name, text in _documented("Parquet").items():
        heading = text.split("\n")[0]
        assert ":" in heading, f"the heading of {name} names no file"
        pattern = heading.split(":", 1)[1].strip()
        regex = re.escape(pattern).replace("N", r"\d")
        assert any(re.fullmatch(regex, file) for file in names), f"{name}: no layout path names {pattern}"
        patterns[name] = regex
    return patterns


def test_readme_column_lists_match_the_schemas() -> None:
    """README's listings such as `themes/quarter=Q/themes.parquet  theme_id, keywords, ...`: the
    columns named are the schema's, in its order (`...` leaves the rest out)."""
    patterns = _file_patterns()
    listing = re.compile(r"^(\S+\.parquet)\s+([a-z_]+(?:, [a-z_]+)*)(?:, \.\.\.)?$")
    checked = 0
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", (REPO / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    for line in "\n".join(blocks).splitlines():
        match = listing.match(line.strip())
        if not match:
            continue
        file = Path(match.group(1)).name
        schema = [name for name, regex in patterns.items() if re.fullmatch(regex, file)]
        assert len(schema) == 1, f"README lists columns of {file}, which no schema's heading names"
        columns, names = match.group(2).split(", "), iter(PARQUET[schema[0]].names)
        assert all(column in names for column in columns), f"README's {file}: {columns} against {schema[0]}"
        checked += 1
    assert checked >= 5  # the themes, theme topics, exposure and both names files


def test_the_settings_sections_are_documented() -> None:
    documented = [_code(row[0]) for row in _table(_section("7. Settings"))]
    assert documented == list(FtmSettings.model_fields)


def test_the_exit_codes_are_documented_with_the_errors_that_give_them() -> None:
    rows = {int(row[0]): set(re.findall(r"`(\w+)`", row[1])) for row in _table(_section("8. Exit codes"))}
    classes = [c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, errors.FtmError)]
    for error in classes:
        assert error.__name__ in rows.get(error.exit_code, set()), f"{error.__name__}: exit {error.exit_code}"
    assert {0, 130} <= set(rows)


def test_nothing_outside_tests_and_benchmarks_points_at_the_team_workspace() -> None:
    """The project stands on its own; only test and benchmark code reads the shared corpus."""
    files = [REPO / name for name in ("README.md", "Makefile", "ftm.toml", "pyproject.toml")]
    for folder in ("src", "docs", "scripts", "deploy", "containers", ".ci"):
        files += [
            path for path in (REPO / folder).rglob("*") if path.is_file() and "__pycache__" not in path.parts
        ]
    for path in files:
        text = path.read_text(errors="replace") if path.exists() else ""
        found = OUTSIDE_POINTER.search(text)
        assert found is None, f"{path.relative_to(REPO)} points at {found.group(0)}"
    assert "docs/architecture.md" in (REPO / "README.md").read_text()
