"""Every artifact's path, relative to the storage root; nothing else spells a path, and
docs/architecture.md lists them all.

Every output is a dataset: a folder of `quarter=Q` folders (hive partitioning) holding that
output's Parquet files only, each file with `quarter` as a column too. Names that start with an
underscore are ftm's own bookkeeping, which dataset readers skip. Files of the earlier layout
(`moved`) are moved here by `ftm.migrate`.
"""

from __future__ import annotations

import re

from ftm.quarters import Quarter


def batch_id(index: int) -> str:
    return f"batch_{index:03d}"


# --- prefetch ---------------------------------------------------------------------------------


def prefetch_folder(quarter: Quarter) -> str:
    return _partition(DATASETS["sentences"], quarter)


def prefetch_chunk(quarter: Quarter, index: int) -> str:
    return f"{prefetch_folder(quarter)}/{chunk_name(index)}"


def chunk_name(index: int) -> str:
    return f"chunk_{index:04d}.parquet"


def prefetch_manifest(quarter: Quarter) -> str:
    """Named with `_` so that dataset readers skip it (an earlier ftm named it manifest.json)."""
    return f"{prefetch_folder(quarter)}/_manifest.json"


def prefetch_checkpoint(quarter: Quarter) -> str:
    return f"{prefetch_folder(quarter)}/_checkpoint.json"


def prefetch_staging(quarter: Quarter) -> str:
    """Parts of the chunk being built, kept between checkpoints and removed once it is written."""
    return f"{prefetch_folder(quarter)}/_staging"


def prefetch_staged_part(quarter: Quarter, index: int) -> str:
    return f"{prefetch_staging(quarter)}/part_{index:04d}.parquet"


# --- plan and runs ----------------------------------------------------------------------------


def batch_plan(quarter: Quarter) -> str:
    return f"{_partition('manifests', quarter)}/batches.jsonl"


def run_record(run_id: str) -> str:
    return f"runs/{run_id}.json"


def array_batches(quarter: Quarter, name: str) -> str:
    """The batch ids of one AWS Batch array job, in child-index order (a JSON list): a resumed
    run's unfinished batches are not a range of the plan, and 10,000 ids are too many for the
    job's overrides (8,192 characters)."""
    return f"{_partition('manifests', quarter)}/arrays/{name}.json"


def code_package(sha256: str) -> str:
    """ftm's code as a zip of its package folder, named by content (see ftm.aws.code_package)."""
    return f"code/{sha256}.zip"


def job_settings(sha256: str) -> str:
    """A job's FTM_* settings as JSON, when too long for its environment, named by content."""
    return f"code/settings-{sha256}.json"


# --- map --------------------------------------------------------------------------------------


def firm_topics_folder(quarter: Quarter) -> str:
    return _partition(DATASETS["firm_topics"], quarter)


def firm_topics_part(quarter: Quarter, batch: str, part: int) -> str:
    return f"{firm_topics_folder(quarter)}/{batch}_part_{part:04d}.parquet"


def sentence_embeddings_folder(quarter: Quarter) -> str:
    """Every mapped sentence's embedding, for the reduce, which never embeds again."""
    return _partition(DATASETS["sentence_embeddings"], quarter)


def sentence_embeddings_part(quarter: Quarter, batch: str, part: int) -> str:
    return f"{sentence_embeddings_folder(quarter)}/{batch}_part_{part:04d}.parquet"


def progress_folder(quarter: Quarter) -> str:
    return _partition("progress", quarter)


def batch_checkpoint(quarter: Quarter, batch: str) -> str:
    return f"{progress_folder(quarter)}/{batch}_checkpoint.json"


def batch_failures(quarter: Quarter, batch: str) -> str:
    return f"{progress_folder(quarter)}/{batch}_failures.json"


def batch_progress(quarter: Quarter, batch: str) -> str:
    return f"{progress_folder(quarter)}/{batch}_progress.json"


# --- reduce and name --------------------------------------------------------------------------

# Every output is a dataset of its own: one folder whose `quarter=Q` folders hold nothing but that
# output's Parquet files (and, for the prefetch, ftm's own `_`-named files, which dataset readers
# skip), so pandas, polars and duckdb read a quarter's folder or the dataset's folder in one call.
# A reduce writes five outputs and a name two: each gets its folder under `themes/` or `names/`.
# The file keeps the output's name, so a file read alone still says what it holds.


def themes_root() -> str:
    """The folder of the reduce's five datasets."""
    return "themes"


def names_root() -> str:
    """The folder of the name's two datasets and its cache."""
    return "names"


def _reduced(name: str, quarter: Quarter) -> str:
    return f"{_partition(f'{themes_root()}/{name}', quarter)}/{name}.parquet"


def _named(name: str, quarter: Quarter) -> str:
    return f"{_partition(f'{names_root()}/{name}', quarter)}/{name}.parquet"


def themes(quarter: Quarter) -> str:
    return _reduced("themes", quarter)


def theme_sentences(quarter: Quarter) -> str:
    return _reduced("theme_sentences", quarter)


def theme_topics(quarter: Quarter) -> str:
    return _reduced("theme_topics", quarter)


def theme_firms(quarter: Quarter) -> str:
    return _reduced("firms", quarter)


def firm_theme_exposure(quarter: Quarter) -> str:
    return _reduced("firm_theme_exposure", quarter)


def topic_names(quarter: Quarter) -> str:
    return _named("topic_names", quarter)


def theme_names(quarter: Quarter) -> str:
    return _named("theme_names", quarter)


def name_cache_entry(quarter: Quarter, key: str) -> str:
    """One cached LLM reply, content-addressed by a hash of prompt, model and prompt version;
    under `_cache`, which dataset readers skip, beside the names' datasets rather than in one."""
    return f"{_partition(f'{names_root()}/_cache', quarter)}/{key}.json"


# --- trends -----------------------------------------------------------------------------------


def lineage_registry() -> str:
    """Every lineage given in this storage root, whatever the range (schemas.LineageRegistry)."""
    return "trends/_lineages.json"


def trends_folder(label: str) -> str:
    """A range's trends; `label` as `ftm.quarters.quarters_label` writes it: 2020Q1..2021Q4."""
    return f"trends/{label}"


def lineages(label: str) -> str:
    return f"{trends_folder(label)}/lineages.parquet"


def trends(label: str) -> str:
    return f"{trends_folder(label)}/trends.parquet"


def firm_theme_quarter(label: str) -> str:
    return f"{trends_folder(label)}/firm_theme_quarter.parquet"


# --- report ---------------------------------------------------------------------------------


def report(label: str) -> str:
    """A quarter's or a range's page (`ftm report`); `label` as `ftm.quarters.quarters_label`
    writes it: 2021Q3, or 2020Q1..2021Q4."""
    return f"reports/{label}.html"


def measure_report(name: str) -> str:
    """A measured subject's page (`ftm report --measure NAME`); no quarter label starts with a
    letter, so it never meets a quarter's page."""
    return f"reports/measure-{name}.html"


# --- outputs as datasets ----------------------------------------------------------------------

# Each output's dataset folder, by the name README and the tests use.
DATASETS = {
    "sentences": "prefetch/transcripts",
    "firm_topics": "intermediate/firm-topics",
    "sentence_embeddings": "intermediate/sentence-embeddings",
    "themes": f"{themes_root()}/themes",
    "theme_sentences": f"{themes_root()}/theme_sentences",
    "theme_topics": f"{themes_root()}/theme_topics",
    "firm_theme_exposure": f"{themes_root()}/firm_theme_exposure",
    "firms": f"{themes_root()}/firms",
    "theme_names": f"{names_root()}/theme_names",
    "topic_names": f"{names_root()}/topic_names",
}


def dataset(name: str, quarter: Quarter | None = None) -> str:
    """An output's dataset folder (see DATASETS), or its folder of one quarter: what pandas,
    polars and duckdb read in one call, with `quarter` as a column either way."""
    return DATASETS[name] if quarter is None else _partition(DATASETS[name], quarter)


PARTITION = "quarter"  # the hive partition column: the folder `quarter=Q` and the files' column


def quarter_of(path: str) -> str | None:
    """The quarter a path's `quarter=Q` folder gives its files, or None outside one."""
    for part in path.split("/")[:-1]:
        key, _, value = part.partition("=")
        if key == PARTITION and value:
            return value
    return None


def _partition(folder: str, quarter: Quarter | str) -> str:
    return f"{folder}/{PARTITION}={quarter}"


# --- the layout of an earlier ftm -------------------------------------------------------------

# Before every output was a dataset, a quarter's reduce wrote its five files into one folder
# `themes/quarter=Q/`, the name its two and its cache into `names/quarter=Q/`, and the prefetch
# named its manifest `manifest.json`, which dataset readers do not skip. `ftm.migrate` moves such
# files to where `moved` says. These are the folders whose `quarter=Q` folders it looks in, and
# whether below those too (the name cache): a prefetch quarter's folder is the current layout's as
# well, and only its own files can be the earlier manifest, so its chunks are listed, not its
# staging, and no writing command lists every quarter's outputs to find nothing.
EARLIER_ROOTS = {"prefetch/transcripts": False, "themes": True, "names": True}

_EARLIER = re.compile(
    r"(?:prefetch/transcripts/quarter=(?P<prefetched>[^/]+)/manifest\.json"
    r"|themes/quarter=(?P<reduced>[^/]+)/(?P<output>themes|theme_sentences|theme_topics|firm_theme_exposure|firms)\.parquet"
    r"|names/quarter=(?P<named>[^/]+)/(?P<names>theme_names|topic_names)\.parquet"
    r"|names/quarter=(?P<cached>[^/]+)/_cache/(?P<key>[^/]+)\.json)"
)


def moved(path: str) -> str | None:
    """Where a file of the earlier layout belongs now; None for any other path."""
    match = _EARLIER.fullmatch(path)
    if match is None:
        return None
    found = match.groupdict()
    if found["prefetched"]:
        return prefetch_manifest(found["prefetched"])  # type: ignore[arg-type]
    if found["reduced"]:
        return _reduced(found["output"], found["reduced"])  # type: ignore[arg-type]
    if found["named"]:
        return _named(found["names"], found["named"])  # type: ignore[arg-type]
    return name_cache_entry(found["cached"], found["key"])  # type: ignore[arg-type]


# --- measures ---------------------------------------------------------------------------------


def measures_root() -> str:
    """The folder of every measured subject's folder."""
    return "measures"


def measure_folder(name: str) -> str:
    """One measured subject (`ftm measure --name NAME`): its panel, evidence and subject record."""
    return f"{measures_root()}/{name}"


def measure_firm_quarter(name: str) -> str:
    return f"{measure_folder(name)}/firm_quarter.parquet"


def measure_sentences(name: str) -> str:
    return f"{measure_folder(name)}/sentences.parquet"


def measure_subject(name: str) -> str:
    return f"{measure_folder(name)}/subject.json"


def measure_quarter_folder(name: str, quarter: Quarter) -> str:
    """One quarter's measure, kept so that a killed run goes on from the quarters done."""
    return f"{measure_folder(name)}/_quarters/{quarter}"


def measure_quarter_firms(name: str, quarter: Quarter) -> str:
    return f"{measure_quarter_folder(name, quarter)}/firm_quarter.parquet"


def measure_quarter_sentences(name: str, quarter: Quarter) -> str:
    return f"{measure_quarter_folder(name, quarter)}/sentences.parquet"


def measure_calibration(name: str, quarter: Quarter) -> str:
    """Written after the quarter's two tables: the quarter is done when it is there."""
    return f"{measure_quarter_folder(name, quarter)}/calibration.json"
