"""Every output is a dataset that pandas, polars and duckdb read in one call on its folder, one
quarter or every quarter, with `quarter` as a column (README, *Read the outputs as datasets*);
README's examples run as written; and a storage root in the earlier layout (a quarter's reduce in
one folder, `manifest.json` among the chunks) is moved to the current one, also when a move is
stopped half-way."""

from __future__ import annotations

import gzip
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ftm import layout, migrate
from ftm.cli import main
from ftm.storage import Store
from reduce_inputs import QUARTER, mapped

README = Path(__file__).resolve().parents[1] / "README.md"
OTHER = "2017Q1"  # a second quarter: a copy of the first's files, with its own quarter


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A mapped, reduced and (keyword-)named quarter, and a copy of it as a second quarter; and
    the config they were made with."""
    source, config, _ = mapped(tmp_path_factory)
    root = tmp_path_factory.mktemp("datasets") / "root"
    shutil.copytree(source, root)
    for command in ("reduce", "name"):
        assert main(["--config", str(config), command, "--quarter", str(QUARTER), "--root", str(root)]) == 0
    store = Store(str(root))
    for name in layout.DATASETS:
        folder = layout.dataset(name, QUARTER)
        for path in store.list(folder):
            if path.endswith(".parquet"):
                table = store.read_table(path)
                index = table.column_names.index("quarter")
                table = table.set_column(index, "quarter", pa.array([OTHER] * table.num_rows))
                store.write_table(path.replace(folder, layout.dataset(name, OTHER)), table)
    manifest = store.read_json(layout.prefetch_manifest(QUARTER))
    store.write_json(layout.prefetch_manifest(OTHER), {**manifest, "quarter": OTHER})
    return root, config


@pytest.fixture(scope="module")
def root(configured: tuple[Path, Path]) -> Path:
    return configured[0]


def _files(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.rglob("*.parquet") if not any(p.startswith("_") for p in path.parts)
    )


def _pandas(folder: Path, every: bool) -> Any:
    import pandas as pd

    return pd.read_parquet(folder)


def _polars(folder: Path, every: bool) -> Any:
    import polars as pl

    return pl.read_parquet(f"{folder}/{'*/' if every else ''}*.parquet", hive_partitioning=True).to_pandas()


def _duckdb(folder: Path, every: bool) -> Any:
    import duckdb

    files = f"{folder}/{'*/' if every else ''}*.parquet"
    return duckdb.sql(f"SELECT * FROM read_parquet('{files}', hive_partitioning = true)").df()


@pytest.mark.parametrize("reader", [_pandas, _polars, _duckdb], ids=["pandas", "polars", "duckdb"])
@pytest.mark.parametrize("name", sorted(layout.DATASETS))
def test_every_output_folder_reads_as_one_dataset_of_one_quarter_or_many(
    root: Path, name: str, reader: Any
) -> None:
    one = root / layout.dataset(name, QUARTER)
    files = _files(one)
    assert files, one
    expected = sum(pq.read_metadata(file).num_rows for file in files)
    columns = set(pq.read_schema(files[0]).names)
    assert "quarter" in columns  # a file read alone has its quarter too

    table = reader(one, every=False)
    assert (len(table), set(table.columns)) == (expected, columns)
    assert Counter(table["quarter"].astype(str)) == {str(QUARTER): expected}
    both = reader(root / layout.dataset(name), every=True)
    assert (len(both), set(both.columns)) == (2 * expected, columns)  # `quarter` once, not twice
    assert Counter(both["quarter"].astype(str)) == {str(QUARTER): expected, OTHER: expected}


def test_readme_reads_the_outputs_as_datasets_as_written(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = re.findall(r"^```py\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    blocks = [block for block in blocks if "hive_partitioning" in block]
    assert len(blocks) == 1, "README should show one block that reads the outputs as datasets"
    (tmp_path / "ftm-data").symlink_to(root)
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(blocks[0], f"{README}:datasets", "exec"), scope)

    def rows(name: str, quarter: Any = None) -> int:
        return sum(pq.read_metadata(file).num_rows for file in _files(root / layout.dataset(name, quarter)))

    assert len(scope["panel"]) == rows("firm_theme_exposure") > 0
    assert set(scope["panel"]["quarter"]) == {str(QUARTER), OTHER}
    assert len(scope["sentences"]) == rows("sentences", QUARTER) > 0
    assert set(scope["sentences"]["quarter"]) == {str(QUARTER)}
    assert len(scope["topics"]) == rows("firm_topics") > 0


# --- the earlier layout ---------------------------------------------------------------------

EARLIER = {  # output → its file in the earlier layout, by quarter
    "themes": "themes/quarter={}/themes.parquet",
    "theme_sentences": "themes/quarter={}/theme_sentences.parquet",
    "theme_topics": "themes/quarter={}/theme_topics.parquet",
    "firm_theme_exposure": "themes/quarter={}/firm_theme_exposure.parquet",
    "firms": "themes/quarter={}/firms.parquet",
    "theme_names": "names/quarter={}/theme_names.parquet",
    "topic_names": "names/quarter={}/topic_names.parquet",
}


def _as_an_earlier_ftm_wrote_it(store: Store) -> dict[str, bytes]:
    """The root rewritten in the earlier layout: outputs in one folder a quarter, `quarter` a
    plain string column, the manifest gzipped as the earlier AWS pipeline wrote it. Returns
    each earlier path's tables as pyarrow reads them (for the comparison after the move)."""
    before = {}
    for quarter in (str(QUARTER), OTHER):
        for name, pattern in EARLIER.items():
            (new,) = [path for path in store.list(layout.dataset(name, quarter)) if path.endswith(".parquet")]
            table = store.read_table(new)
            index = table.column_names.index("quarter")
            table = table.set_column(index, "quarter", table.column(index).cast(pa.string()))
            old = pattern.format(quarter)
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            store.write_bytes(old, sink.getvalue().to_pybytes())
            store.delete(new)
            before[old] = table
        for path in store.list(layout.prefetch_folder(quarter)):
            if re.search(r"/chunk_\d+\.parquet$", path):
                table = store.read_table(path)
                table = table.set_column(
                    table.column_names.index("quarter"), "quarter", table.column("quarter").cast(pa.string())
                )
                sink = pa.BufferOutputStream()
                pq.write_table(table, sink)
                store.write_bytes(path, sink.getvalue().to_pybytes())
        manifest = layout.prefetch_manifest(quarter)
        old_manifest = manifest.replace("_manifest.json", "manifest.json")
        store.write_bytes(old_manifest, gzip.compress(store.read_bytes(manifest)))
        store.delete(manifest)
    store.write_json(
        f"names/quarter={QUARTER}/_cache/9f2c.json", {"reply": "cached"}
    )  # keyword names cache none
    return before


class Stopped(Exception):
    pass


def test_a_root_of_the_earlier_layout_is_moved_also_when_stopped_half_way(
    configured: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, config = configured
    earlier = tmp_path / "earlier"
    shutil.copytree(root, earlier)
    store = Store(str(earlier))
    before = _as_an_earlier_ftm_wrote_it(store)
    assert not store.exists(layout.themes(QUARTER))

    # Stopped after a few files: every output is at its old place or its new one, none lost.
    deletes = 0
    delete = Store.delete

    def stopping(self: Store, path: str) -> None:
        nonlocal deletes
        deletes += 1
        if deletes > 5:
            raise Stopped(path)
        delete(self, path)

    monkeypatch.setattr(Store, "delete", stopping)
    with pytest.raises(Stopped):
        migrate.upgrade(store)
    monkeypatch.setattr(Store, "delete", delete)
    for old in before:
        assert store.exists(old) or store.exists(layout.moved(old) or "")
    for quarter in (str(QUARTER), OTHER):  # a quarter prefetched stays prefetched
        assert store.exists(layout.prefetch_manifest(quarter)) or store.exists(
            layout.prefetch_manifest(quarter).replace("_manifest.json", "manifest.json")
        )

    # The next command that writes finishes the move, and then finds nothing to move.
    assert main(["--config", str(config), "report", str(QUARTER), "--root", str(earlier)]) == 0
    assert migrate.upgrade(store) == 0
    assert not [path for path in store.list("") if layout.moved(path)]
    for old, table in before.items():
        moved = store.read_table(layout.moved(old) or "")
        assert pa.types.is_dictionary(moved.schema.field("quarter").type)
        assert moved.cast(table.schema).equals(table)
    assert store.read_json(layout.prefetch_manifest(QUARTER))["quarter"] == str(QUARTER)
    assert store.read_json(layout.name_cache_entry(QUARTER, "9f2c")) == {"reply": "cached"}
    assert not store.list(f"{layout.names_root()}/quarter={QUARTER}")
    for name in layout.DATASETS:
        if name != "sentence_embeddings":  # not rewritten (README)
            assert len(_pandas(earlier / layout.dataset(name), every=True))
