"""Every artifact's path, relative to the storage root; nothing else spells a path, and
docs/architecture.md lists them all.

The layout matches what the earlier AWS pipeline wrote, so its prefetched quarters stay readable.
Names that start with an underscore are ftm's own bookkeeping, which dataset readers skip.
"""

from __future__ import annotations

from ftm.quarters import Quarter


def batch_id(index: int) -> str:
    return f"batch_{index:03d}"


# --- prefetch ---------------------------------------------------------------------------------


def prefetch_folder(quarter: Quarter) -> str:
    return f"prefetch/transcripts/quarter={quarter}"


def prefetch_chunk(quarter: Quarter, index: int) -> str:
    return f"{prefetch_folder(quarter)}/{chunk_name(index)}"


def chunk_name(index: int) -> str:
    return f"chunk_{index:04d}.parquet"


def prefetch_manifest(quarter: Quarter) -> str:
    return f"{prefetch_folder(quarter)}/manifest.json"


def prefetch_checkpoint(quarter: Quarter) -> str:
    return f"{prefetch_folder(quarter)}/_checkpoint.json"


def prefetch_staging(quarter: Quarter) -> str:
    """Parts of the chunk being built, kept between checkpoints and removed once it is written."""
    return f"{prefetch_folder(quarter)}/_staging"


def prefetch_staged_part(quarter: Quarter, index: int) -> str:
    return f"{prefetch_staging(quarter)}/part_{index:04d}.parquet"


# --- plan and runs ----------------------------------------------------------------------------


def batch_plan(quarter: Quarter) -> str:
    return f"manifests/quarter={quarter}/batches.jsonl"


def run_record(run_id: str) -> str:
    return f"runs/{run_id}.json"


def array_batches(quarter: Quarter, name: str) -> str:
    """The batch ids of one AWS Batch array job, in child-index order (a JSON list): a resumed
    run's unfinished batches are not a range of the plan, and 10,000 ids are too many for the
    job's overrides (8,192 characters)."""
    return f"manifests/quarter={quarter}/arrays/{name}.json"


def code_package(sha256: str) -> str:
    """ftm's code as a zip of its package folder, named by content (see ftm.aws.code_package)."""
    return f"code/{sha256}.zip"


def job_settings(sha256: str) -> str:
    """A job's FTM_* settings as JSON, when too long for its environment, named by content."""
    return f"code/settings-{sha256}.json"


# --- map --------------------------------------------------------------------------------------


def firm_topics_folder(quarter: Quarter) -> str:
    return f"intermediate/firm-topics/quarter={quarter}"


def firm_topics_part(quarter: Quarter, batch: str, part: int) -> str:
    return f"{firm_topics_folder(quarter)}/{batch}_part_{part:04d}.parquet"


def sentence_embeddings_folder(quarter: Quarter) -> str:
    """Every mapped sentence's embedding, for the reduce, which never embeds again."""
    return f"intermediate/sentence-embeddings/quarter={quarter}"


def sentence_embeddings_part(quarter: Quarter, batch: str, part: int) -> str:
    return f"{sentence_embeddings_folder(quarter)}/{batch}_part_{part:04d}.parquet"


def progress_folder(quarter: Quarter) -> str:
    return f"progress/quarter={quarter}"


def batch_checkpoint(quarter: Quarter, batch: str) -> str:
    return f"{progress_folder(quarter)}/{batch}_checkpoint.json"


def batch_failures(quarter: Quarter, batch: str) -> str:
    return f"{progress_folder(quarter)}/{batch}_failures.json"


def batch_progress(quarter: Quarter, batch: str) -> str:
    return f"{progress_folder(quarter)}/{batch}_progress.json"


# --- reduce and name --------------------------------------------------------------------------


def themes_folder(quarter: Quarter) -> str:
    return f"themes/quarter={quarter}"


def themes(quarter: Quarter) -> str:
    return f"{themes_folder(quarter)}/themes.parquet"


def theme_sentences(quarter: Quarter) -> str:
    return f"{themes_folder(quarter)}/theme_sentences.parquet"


def theme_topics(quarter: Quarter) -> str:
    return f"{themes_folder(quarter)}/theme_topics.parquet"


def theme_firms(quarter: Quarter) -> str:
    return f"{themes_folder(quarter)}/firms.parquet"


def firm_theme_exposure(quarter: Quarter) -> str:
    return f"{themes_folder(quarter)}/firm_theme_exposure.parquet"


def names_folder(quarter: Quarter) -> str:
    return f"names/quarter={quarter}"


def topic_names(quarter: Quarter) -> str:
    return f"{names_folder(quarter)}/topic_names.parquet"


def theme_names(quarter: Quarter) -> str:
    return f"{names_folder(quarter)}/theme_names.parquet"


def name_cache_entry(quarter: Quarter, key: str) -> str:
    """One cached LLM reply, content-addressed by a hash of prompt, model and prompt version."""
    return f"{names_folder(quarter)}/_cache/{key}.json"


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


# --- outputs as datasets ----------------------------------------------------------------------

# Each output as the files of one dataset, for readers that take a glob (polars, duckdb) or a
# list of files (pandas). A folder read trips over manifest.json beside the chunks, and over the
# `quarter=` folder, which readers take for a partition column clashing with the files' own
# `quarter`; the glob names only the output's files and readers leave partitioning off.
DATASETS = {
    "sentences": lambda quarter: f"{prefetch_folder(quarter)}/chunk_*.parquet",
    "firm_topics": lambda quarter: f"{firm_topics_folder(quarter)}/batch_*_part_*.parquet",
    "sentence_embeddings": lambda quarter: f"{sentence_embeddings_folder(quarter)}/batch_*_part_*.parquet",
    "themes": themes,
    "theme_sentences": theme_sentences,
    "theme_topics": theme_topics,
    "firm_theme_exposure": firm_theme_exposure,
    "firms": theme_firms,
    "theme_names": theme_names,
    "topic_names": topic_names,
}


def dataset_files(name: str, quarter: Quarter | str = "*") -> str:
    """The glob of an output's files in every quarter, or in one (see DATASETS)."""
    return DATASETS[name](quarter)  # type: ignore[arg-type]


# --- measures ---------------------------------------------------------------------------------


def measure_folder(name: str) -> str:
    """One measured subject (`ftm measure --name NAME`): its panel, evidence and subject record."""
    return f"measures/{name}"


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
