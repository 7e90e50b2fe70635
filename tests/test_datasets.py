"""Every output is a dataset pandas, polars and duckdb read in one call, one quarter or many, as
README's *Read the outputs* says: the call takes `layout.dataset_files`' glob, never the folder
(manifest.json sits beside the chunks, and `quarter=` would become a second `quarter` column)."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from ftm import layout
from ftm.cli import main
from reduce_inputs import QUARTER, mapped

OTHER = "2017Q1"  # a second quarter: a copy of the first's files under its own quarter= folders


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mapped, reduced and (keyword-)named quarter, and a copy of it as a second quarter."""
    source, config, _ = mapped(tmp_path_factory)
    root = tmp_path_factory.mktemp("datasets") / "root"
    shutil.copytree(source, root)
    for command in ("reduce", "name"):
        assert main(["--config", str(config), command, "--quarter", str(QUARTER), "--root", str(root)]) == 0
    for folder in list(root.glob(f"*/quarter={QUARTER}")) + list(root.glob(f"*/*/quarter={QUARTER}")):
        shutil.copytree(folder, folder.with_name(f"quarter={OTHER}"))
    return root


def _rows(root: Path, pattern: str) -> int:
    files = glob.glob(str(root / pattern))
    assert files, pattern
    return sum(pq.read_metadata(file).num_rows for file in files)


def _pandas(pattern: str) -> Any:
    import pandas as pd

    return pd.read_parquet(glob.glob(pattern), partitioning=None)


def _polars(pattern: str) -> Any:
    import polars as pl

    return pl.read_parquet(pattern, hive_partitioning=False)


def _duckdb(pattern: str) -> Any:
    import duckdb

    return duckdb.sql(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = false)").df()


@pytest.mark.parametrize("reader", [_pandas, _polars, _duckdb], ids=["pandas", "polars", "duckdb"])
@pytest.mark.parametrize("name", sorted(layout.DATASETS))
def test_every_output_reads_as_one_dataset_of_one_quarter_or_many(root: Path, name: str, reader: Any) -> None:
    one, every = layout.dataset_files(name, QUARTER), layout.dataset_files(name)
    expected = _rows(root, one)
    columns = pq.read_schema(glob.glob(str(root / one))[0]).names

    table = reader(str(root / one))
    assert (len(table), list(table.columns)) == (expected, columns)
    both = reader(str(root / every))
    assert (len(both), list(both.columns)) == (2 * expected, columns)  # no partition column added
