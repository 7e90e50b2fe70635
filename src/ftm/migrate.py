"""Moves a storage root written in the earlier layout to the current one (`ftm.layout`), so that
every output folder reads as a dataset; every command that writes runs it first (`upgrade`), and
it does nothing on a root already in the current layout.

What moves (`layout.moved`): a reduce's five files from `themes/quarter=Q/` to one folder each,
the name's two files and its cache from `names/quarter=Q/` likewise, and the prefetch's
`manifest.json` (plain or gzipped, as the earlier AWS pipeline wrote it) to `_manifest.json`.
Parquet files are rewritten on the way, so that their `quarter` is as the current layout writes
it (dictionary-encoded, see `storage._partitioned`); the prefetch chunks and firm topics of a
quarter whose manifest has not moved yet are rewritten in place likewise.

Stopped at any point (a kill, a lost connection), the root stays readable and the next run
finishes the move, locally and on S3 alike, through `Store` only:
- each file is written at its new place (atomically) before the old one is removed, and a file
  already at its new place is kept, never overwritten: it is the moved copy or a newer output;
- a quarter's marker moves last: `manifest.json` (a quarter is prefetched when its manifest is
  there) after its chunks are rewritten, and `themes.parquet` (a quarter is reduced when its
  themes are there) after the reduce's other files;
- the lineage registry is told the new themes file's hash before the old file goes, so that
  `ftm trends` does not take a moved quarter for one reduced again.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from ftm import layout
from ftm.quarters import Quarter
from ftm.schemas import LineageRegistry
from ftm.storage import Store


def upgrade(store: Store) -> int:
    """Moves every file of the earlier layout in `store` to its place now; how many it moved."""
    listed = [
        path
        for root, below in layout.EARLIER_ROOTS.items()
        for folder in store.folders(root)
        if layout.quarter_of(f"{folder}/") is not None  # a `quarter=Q` folder, not a dataset's
        for path in store.list(folder, recursive=below)
    ]
    moves = [(path, new) for path in listed if (new := layout.moved(path))]
    markers = {layout.prefetch_manifest, layout.themes}
    # Markers last (module docstring); sorted() is stable, so the rest keep the listing's order.
    moves = sorted(moves, key=lambda move: any(move[1] == marker(_quarter(move[1])) for marker in markers))
    for old, new in moves:
        if new.endswith(".parquet"):
            _move_table(store, old, new)
        else:
            if new == layout.prefetch_manifest(_quarter(new)):
                _rewrite_quarter_column(store, _quarter(new))
            if not store.exists(new):
                store.write_bytes(new, store.read_bytes(old))
        store.delete(old)
    return len(moves)


def _quarter(path: str) -> Quarter:
    return Quarter.parse(layout.quarter_of(path) or "")


def _move_table(store: Store, old: str, new: str) -> None:
    if not store.exists(new):
        store.write_table(new, store.read_table(old))  # write_table encodes `quarter`
    if new == layout.themes(_quarter(new)):
        _rehash_lineages(store, old, new)


def _rewrite_quarter_column(store: Store, quarter: Quarter) -> None:
    """The quarter's chunks and firm topics with `quarter` as the current layout writes it; a
    file already so is left as it is, so a run stopped half-way goes on where it stopped."""
    for folder in (layout.prefetch_folder(quarter), layout.firm_topics_folder(quarter)):
        for path in store.list(folder):
            if not path.endswith(".parquet") or "/_" in path[len(folder) :]:
                continue  # ftm's own files (a staged part) are not the dataset's
            table = store.read_table(path)
            column = layout.PARTITION
            if column in table.column_names and not pa.types.is_dictionary(table.schema.field(column).type):
                store.write_table(path, table)


def _rehash_lineages(store: Store, old: str, new: str) -> None:
    """The registry's hash of the quarter's themes, from the old file's to the new one's."""
    registry_path = layout.lineage_registry()
    if not store.exists(registry_path) or not store.exists(old):
        return
    registry = LineageRegistry.model_validate(store.read_json(registry_path))
    before = hashlib.sha256(store.read_bytes(old)).hexdigest()
    after = hashlib.sha256(store.read_bytes(new)).hexdigest()
    changed = False
    for entry in registry.quarters:
        if entry.quarter == layout.quarter_of(new) and entry.themes_sha256 == before:
            entry.themes_sha256, changed = after, True
    if changed:
        store.write_json(registry_path, registry.to_json())
