"""The one settings model that every command reads.

Sources, strongest first: command-line flags (passed in as overrides), `FTM_*` environment
variables (`__` nests: `FTM_STORAGE__ROOT`), the TOML file (`--config`, default `./ftm.toml`),
then the defaults below. Secrets are `SecretStr` and come only from the environment (or, for
WRDS, `~/.pgpass` and AWS Secrets Manager); a secret in the TOML file is refused.
"""

from __future__ import annotations

import difflib
import json
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ftm.errors import SettingsError
from ftm.schemas import content_hash

ENV_PREFIX = "FTM_"
ENV_NESTING = "__"
DEFAULT_CONFIG = Path("ftm.toml")
# Environment variables with the prefix that are not settings themselves: the settings file,
# the code package a container runs instead of its own ftm, and the settings a job gets from
# storage when they are too long for its environment (see ftm.aws.code_package).
CONFIG_ENV = "FTM_CONFIG"
CODE_ENV = "FTM_CODE"
CODE_ACTIVE_ENV = "FTM_CODE_ACTIVE"
JOB_SETTINGS_ENV = "FTM_JOB_SETTINGS"
RESERVED_ENV = frozenset({CONFIG_ENV, CODE_ENV, CODE_ACTIVE_ENV, JOB_SETTINGS_ENV})

SpeakerType = Literal["presenter", "question", "answer", "operator", "unknown"]


class Section(BaseModel):
    """A settings section: unknown keys are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class StorageSettings(Section):
    root: str = Field("./ftm-data", description="where every artifact goes: a folder or s3://bucket/prefix")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    region: str | None = Field(None, description="S3 region; None lets the AWS SDK decide")


class WrdsSettings(Section):
    username: str | None = Field(None, description="WRDS user name; None reads PGUSER")
    host: str = Field("wrds-pgdata.wharton.upenn.edu", description="WRDS PostgreSQL host")
    port: int = Field(9737, ge=1, le=65535, description="WRDS PostgreSQL port")
    dbname: str = Field("wrds", description="WRDS database name")
    password: SecretStr | None = Field(
        None, description="secret: set FTM_SOURCE__WRDS__PASSWORD (or use PGPASSWORD or ~/.pgpass)"
    )
    aws_secret: str | None = Field(
        None, description="AWS Secrets Manager secret with JSON username and password, e.g. wrds-credentials"
    )
    sslmode: Literal["require", "verify-ca", "verify-full", "prefer", "disable"] = Field(
        "require", description="libpq sslmode; WRDS requires SSL"
    )
    login_timeout_s: int = Field(
        120, ge=5, description="seconds the login may take, waiting for the Duo approval included"
    )
    transcripts_per_query: int = Field(
        200, ge=1, le=5000, description="transcripts whose components one query reads"
    )
    link_required: Literal["none", "gvkey", "permno"] = Field(
        "none", description="keep every call (none), or only calls linked to a GVKEY or a PERMNO"
    )


class SourceSettings(Section):
    kind: Literal["wrds", "files"] = Field("wrds", description="where transcripts come from")
    path: str | None = Field(None, description="files source: a .jsonl, .jsonl.gz, .csv or .csv.gz file")
    format: Literal["auto", "jsonl", "csv"] = Field(
        "auto", description="files source: auto guesses from the name"
    )
    firm_id_field: str = Field("ticker", description="files source: the record field that identifies a firm")
    quarter_rule: Literal["call_date_then_fiscal", "call_date", "fiscal"] = Field(
        "call_date_then_fiscal",
        description="files source: how a call gets its quarter (calendar quarter of call_date, "
        "fiscal_quarter label, or the date when present and else the label)",
    )
    wrds: WrdsSettings = WrdsSettings()


# Words that fill every earnings call and carry no theme. spaCy's English stop words are
# removed as well; this list adds the finance-call boilerplate on top.
FINANCE_STOP_WORDS = [
    "quarter",
    "quarterly",
    "year",
    "annual",
    "company",
    "thank",
    "thanks",
    "call",
    "operator",
    "question",
    "answer",
    "analyst",
    "good",
    "morning",
    "afternoon",
    "everyone",
    "welcome",
    "today",
    "think",
    "know",
    "like",
    "just",
    "go",
    "look",
    "lot",
    "thing",
    "way",
    "kind",
    "sort",
    "yes",
    "okay",
    "right",
    "obviously",
    "basically",
    "actually",
    "really",
    "bit",
    "little",
    "maybe",
    "mean",
    "want",
    "talk",
    "say",
    "guess",
    "let",
    "come",
    "great",
    "sure",
    "line",
]

# Entity types whose words are names of people, dates or amounts rather than a theme. Names of
# organisations, places and products stay: "China", "FDA" or "COVID-19" (which the small spaCy
# model tags as an ORG or a PERSON as often as not) are what a cross-firm theme is about; a firm's
# own name is dropped from its sentences instead (text.py), as are words in capitals that a
# PERSON tag would otherwise drop (acronyms).
DROPPED_ENTITY_LABELS = [
    "PERSON",
    "DATE",
    "TIME",
    "MONEY",
    "PERCENT",
    "QUANTITY",
    "ORDINAL",
    "CARDINAL",
]


# Bumped whenever prefetch/text.py's cleaning rules change what cleaned_text holds.
_CLEANING_RULES = 2


class PreprocessSettings(Section):
    spacy_model: str = Field("en_core_web_sm", description="spaCy pipeline: a package name or a path")
    extra_stop_words: list[str] = Field(
        FINANCE_STOP_WORDS, description="removed from cleaned_text on top of spaCy's stop words"
    )
    drop_entity_labels: list[str] = Field(
        DROPPED_ENTITY_LABELS,
        description="named-entity types removed from cleaned_text (words in capitals, acronyms, are kept)",
    )
    mask_tokens: list[str] = Field(["<UNK>"], description="masking tokens removed from the text")
    min_tokens: int = Field(3, ge=1, description="a sentence needs this many cleaned tokens to be kept")
    speaker_types: list[SpeakerType] = Field(
        ["presenter", "question", "answer", "unknown"],
        description="speaker types kept (operator turns are dropped)",
    )
    max_chars: int = Field(
        100_000, ge=1_000, description="longer components are split at paragraph or sentence ends"
    )
    workers: int = Field(0, ge=0, description="spaCy processes; 0 means one per CPU core")
    batch_size: int = Field(256, ge=1, description="texts per nlp.pipe batch")

    def fingerprint(self) -> str:
        """A hash of everything that changes the sentences; not of how fast they are made."""
        # `rules` names the version of text.py's cleaning rules: a change there changes the
        # sentences as surely as a setting does, so a half-done quarter is not resumed across it.
        return content_hash({"rules": _CLEANING_RULES, **self.model_dump(exclude={"workers", "batch_size"})})


class PrefetchSettings(Section):
    firms_per_chunk: int = Field(200, ge=1, description="firms per chunk_NNNN.parquet")
    checkpoint_every: int = Field(100, ge=1, description="firms between checkpoints")
    # A CSV whose `order` column is text, or dates in another format, makes every record a
    # problem: a quarter finished from what is left would look done and block the good run.
    max_problem_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="stop, writing no manifest, when more than this share of input records is unusable",
    )


class EmbeddingSettings(Section):
    model: str = Field("sentence-transformers/all-MiniLM-L6-v2", description="model name or local path")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto uses a GPU when there is one")
    batch_size: int = Field(
        0, ge=0, description="sentences per forward pass; 0: 256 on a GPU, 16 on a CPU (less padding)"
    )
    cpu_threads: int = Field(
        0,
        ge=0,
        description="torch or onnxruntime threads on a CPU; 0 keeps the library's default (one per core)",
    )
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description=(
            "torch, or onnx (onnxruntime, CPU only); auto: torch on a GPU or a CPU with AMX (amx_bf16), "
            "else onnx when onnxruntime is installed"
        ),
    )
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto",
        description=(
            "auto is fp16 on a GPU, bf16 on torch on a CPU with native bf16 (AVX512-BF16, AMX), int8 "
            "on onnx, else fp32; int8 needs the onnx backend"
        ),
    )
    int8_kernels: Literal["auto", "avx2", "avx512", "avx512_vnni", "arm64"] = Field(
        "auto",
        description=(
            "the int8 model's kernels (onnx): auto follows the CPU; avx2 runs on every x86-64 CPU, "
            "so one int8 path can be forced on mixed machines"
        ),
    )
    cache_dir: str = Field(
        "", description="folder for the exported ONNX models; empty: $XDG_CACHE_HOME/ftm/models or ~/.cache"
    )


class TopicsSettings(Section):
    # cpu by default: it is the measured and tested path. cuML has never run under ftm (no machine
    # here has had both a GPU and cuML), and the CUDA 11 releases the gpu extra can install
    # (cuml-cu11 < 25.07, as pinned) predate NVIDIA's fix for UMAP points thrown far out on
    # small inputs (rapidsai/cuml#7473), which is what one firm is. See the README's map section.
    backend: Literal["auto", "cuml", "cpu"] = Field(
        "cpu",
        description=(
            "cpu: umap-learn and hdbscan; cuml: cuML on the GPU; auto: cuML when a GPU and cuML are present"
        ),
    )
    umap_n_neighbors: int = Field(15, ge=2, description="UMAP neighbours")
    umap_n_components: int = Field(5, ge=1, description="UMAP output dimensions")
    umap_min_dist: float = Field(0.0, ge=0.0, description="UMAP minimum distance")
    umap_metric: str = Field("cosine", description="UMAP metric")
    umap_n_epochs: int | None = Field(
        200, ge=1, description="UMAP layout epochs; None uses umap-learn's (500 below 10,000 sentences)"
    )
    umap_init: Literal["spectral", "random"] = Field(
        "spectral", description="UMAP initial layout (both umap-learn and cuML have these)"
    )
    hdbscan_min_cluster_size: int = Field(
        10, ge=2, description="HDBSCAN minimum cluster size (firms of 190+ sentences; smaller get less)"
    )
    small_firm_min_cluster_size: int = Field(
        5,
        ge=2,
        description=(
            "a firm of n sentences gets min(hdbscan_min_cluster_size, max(this, round(n / 20))); "
            "set it to hdbscan_min_cluster_size for one size for all"
        ),
    )
    hdbscan_min_samples: int | None = Field(
        None, description="HDBSCAN min_samples; None uses the cluster size"
    )
    top_n_words: int = Field(10, ge=1, description="keywords per topic")
    n_representative: int = Field(3, ge=1, description="representative sentences per topic")
    random_state: int = Field(42, description="seed, so a re-run gives the same topics")


class MapSettings(Section):
    firms_per_part: int = Field(50, ge=1, description="firms per part file and checkpoint")
    workers: int = Field(0, ge=0, description="local backend worker processes; 0 means one per CPU core")
    cluster_processes: int = Field(
        0,
        ge=0,
        description=(
            "processes clustering one batch's firms; 0 means one per CPU core it may use "
            "(the local backend gives each of its workers an equal share)"
        ),
    )
    allow_failures: bool = Field(True, description="record a failed firm and go on")
    max_consecutive_failures: int = Field(
        5, ge=1, description="stop a batch after this many failures in a row"
    )
    max_failure_rate: float = Field(
        0.05, ge=0.0, le=1.0, description="stop a batch above this failure rate ..."
    )
    failure_rate_after: int = Field(100, ge=1, description="... once this many firms were tried")
    heartbeat_s: float = Field(
        10.0, gt=0, description="seconds between a worker's progress records, which `ftm watch` reads"
    )


class ReduceSettings(Section):
    min_firms: int = Field(
        3, ge=2, description="a theme must be talked about by this many firms (firm_min_sentences each)"
    )
    firm_min_sentences: int = Field(
        2, ge=1, description="a firm talks about a theme when this many of its sentences are in it"
    )
    min_similarity: float = Field(
        0.15,
        ge=0.0,
        le=1.0,
        description=(
            "average-linkage threshold: mean cosine of all pairs of sentences of two clusters for them "
            "to merge (vectors less the quarter's mean); lower gives broader themes"
        ),
    )
    micro_clusters: int = Field(
        0, ge=0, description="k-means cells the linkage starts from; 0 means 1.5 × √(sentences)"
    )
    lexical_weight: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="weight of a sentence's words beside its embedding (0: embedding only)",
    )
    lexical_dimensions: int = Field(
        100, ge=2, description="dimensions of the word vectors (truncated SVD of TF-IDF)"
    )
    memberships: int = Field(3, ge=1, description="themes a sentence can belong to at most")
    min_membership: float = Field(
        0.2, ge=-1.0, le=1.0, description="cosine to a theme's centroid a sentence needs to belong to it"
    )
    membership_ratio: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="and at least this times the median cosine of the theme's own sentences",
    )
    reporting_number_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="a theme of which this share of sentences states numbers is reporting",
    )
    reporting_evenness: float = Field(
        0.7, ge=0.0, description="evenness over firms from which ordinary language is reporting"
    )
    reporting_ordinary_similarity: float = Field(
        0.5, ge=-1.0, le=1.0, description="cosine to the reference's ordinary language that makes it ordinary"
    )
    salience_smoothing: float = Field(
        0.002,
        gt=0.0,
        le=1.0,
        description=(
            "share of attention added to a theme's share and its ordinary share before their ratio, "
            "so that a small theme with no ordinary attention does not lead by a ratio of tiny numbers"
        ),
    )
    salient: float = Field(
        1.1,
        ge=0.0,
        description=(
            "salience (ln of attention over its ordinary level) from which a theme is of kind theme "
            "whatever its numbers or spread; 1.1 is about three times the ordinary attention"
        ),
    )
    routine_evenness: float = Field(
        0.5,
        ge=0.0,
        description="evenness over firms from which a theme at its ordinary level is routine",
    )
    top_n_words: int = Field(10, ge=1, description="keywords per theme")
    keyword_min_firms: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="share of the firms talking about a theme that must use a word for it to be a keyword",
    )
    n_representative: int = Field(5, ge=1, description="representative sentences per theme")
    random_state: int = Field(
        42, description="seed of the k-means and the samples: a re-run gives the same themes"
    )


class TrendsSettings(Section):
    min_similarity: float = Field(
        0.8,
        ge=-1.0,
        le=1.0,
        description=(
            "cosine of two quarters' theme centroids, each less its quarter's mean, for the themes to be "
            "one lineage (benchmarks/README.md, Trends)"
        ),
    )
    parent_similarity: float = Field(
        0.7,
        ge=-1.0,
        le=1.0,
        description=(
            "cosine at which a theme that starts a lineage records its nearest known lineage as its "
            "parent (a narrower part of that subject)"
        ),
    )
    window: int = Field(
        2,
        ge=1,
        description="quarters before a quarter that its trend compares with; all must be in the range",
    )
    change_ratio: float = Field(
        1.5,
        gt=1.0,
        description=(
            "emerging: the measured share of firms with history at least this times theirs over the "
            "window (and a significant rise); fading: at most 1/this"
        ),
    )


class LlmSettings(Section):
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; unset: keyword names"
    )
    model: str = Field("Qwen/Qwen3-8B", description="model name the endpoint serves")
    api_key: SecretStr | None = Field(None, description="secret: set FTM_LLM__API_KEY")
    concurrency: int = Field(
        64, ge=1, description="requests in flight; vLLM batches them, lower it for rate-limited APIs"
    )
    timeout_s: float = Field(120.0, gt=0, description="seconds per request")
    max_retries: int = Field(4, ge=0, description="retries on 429, 5xx, timeouts and invalid replies")
    backoff_s: float = Field(
        1.0, ge=0, description="wait before the first retry, doubled at each next one (Retry-After wins)"
    )
    topics_per_request: int = Field(10, ge=1, description="topics named in one request")
    serve: bool = Field(
        False, description="start a vLLM server for the naming run (in the Batch name job), then stop it"
    )
    serve_command: str = Field("vllm serve", description="the command that serves llm.model")
    serve_args: list[str] = Field(
        default_factory=list, description='extra arguments for it, e.g. ["--gpu-memory-utilization", "0.95"]'
    )
    # Not the model's own maximum (Qwen3-8B: 40,960 tokens), whose KV cache a 24 GB GPU cannot
    # hold next to the weights, so vLLM would refuse to start: what ftm's longest request takes
    # at topics_per_request = 10 (naming.longest_request_tokens: 8,064), with room to spare.
    serve_max_model_len: int = Field(
        8192,
        ge=1024,
        description="the server's context (vLLM's --max-model-len); ftm doctor checks the GPU holds it",
    )
    serve_port: int = Field(8000, ge=1, le=65535, description="port of that server on 127.0.0.1")
    serve_startup_timeout_s: float = Field(
        1200.0, gt=0, description="seconds the server may take to load the model and answer /health"
    )


class AwsSettings(Section):
    region: str | None = Field(None, description="AWS region; None lets the AWS SDK decide")
    stack_name: str = Field("ftm", description="CloudFormation stack that ftm deploy manages")
    # What `ftm deploy` builds the stack from.
    vpc_id: str | None = Field(None, description="deploy: the existing VPC the Batch instances run in")
    subnet_ids: list[str] = Field(
        default_factory=list, description="deploy: subnets of that VPC, with a route to the internet"
    )
    existing_bucket: str | None = Field(None, description="deploy: use this bucket instead of creating one")
    prefix: str = Field("ftm", description="key prefix in the bucket; the job role reaches only this")
    gpu_instance_types: list[str] = Field(
        default_factory=lambda: ["g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge"],
        description="Spot GPU instance types for the map, preferred first",
    )
    llm_instance_types: list[str] = Field(
        default_factory=lambda: ["g5.xlarge", "g6.xlarge"],
        description="Spot GPU types for a name job serving its own LLM: 24 GB of GPU memory or more",
    )
    llm_api_key_secret_arn: str | None = Field(
        None, description="deploy: a Secrets Manager secret the name jobs get as FTM_LLM__API_KEY"
    )
    max_gpu_vcpus: int = Field(
        64, ge=1, description="most vCPUs of Spot GPU instances at once (g4dn.xlarge: 4 each)"
    )
    max_cpu_vcpus: int = Field(16, ge=1, description="most vCPUs of CPU instances for reduce and name")
    runnable_timeout_s: int = Field(
        3600, ge=600, description="a job waiting this long for capacity (RUNNABLE) is cancelled"
    )
    log_retention_days: int = Field(30, ge=1, description="days the jobs' logs are kept")
    # What the stack made: `ftm deploy` writes these.
    bucket: str | None = Field(None, description="S3 bucket of the stack")
    job_queue: str | None = Field(None, description="AWS Batch job queue for the map (Spot GPU)")
    cpu_job_queue: str | None = Field(None, description="AWS Batch job queue for reduce and name (CPU)")
    map_job_definition: str | None = Field(None, description="GPU job definition for map-batch")
    cpu_job_definition: str | None = Field(None, description="CPU job definition for reduce and name")
    llm_job_queue: str | None = Field(
        None, description="AWS Batch job queue for name with a vLLM server in the job (24 GB GPUs)"
    )
    llm_job_definition: str | None = Field(
        None, description="GPU job definition for name with a vLLM server in the job (llm.serve)"
    )
    repository: str | None = Field(None, description="ECR repository URI of the stack")
    log_group: str | None = Field(None, description="CloudWatch log group of the jobs")
    image: str | None = Field(None, description="container image URI; `ftm image build` sets it")
    llm_image: str | None = Field(
        None, description="image with vLLM for the name job (llm.serve); `ftm image build --target llm`"
    )
    spot_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="attempts per job; only Spot losses and tasks that failed to start are retried",
    )
    job_timeout_s: int = Field(3600, ge=60, description="seconds per attempt")
    firms_per_instance_hour: float = Field(
        2000.0, gt=0, description="map speed on one GPU instance, for the cost estimate at submit"
    )


class FtmSettings(BaseSettings):
    """Every setting of every command, in the sections docs/architecture.md lists."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTING,
        extra="forbid",
        validate_default=True,
    )

    storage: StorageSettings = StorageSettings()
    source: SourceSettings = SourceSettings()
    preprocess: PreprocessSettings = PreprocessSettings()
    prefetch: PrefetchSettings = PrefetchSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    topics: TopicsSettings = TopicsSettings()
    map: MapSettings = MapSettings()
    reduce: ReduceSettings = ReduceSettings()
    trends: TrendsSettings = TrendsSettings()
    llm: LlmSettings = LlmSettings()
    aws: AwsSettings = AwsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML layer is merged in by `load_settings` as the weakest input, so that it can be
        # checked for secrets and unknown keys before anything else reads it. The environment is
        # read as `load_settings` reads it: lists also comma-separated.
        return (init_settings, _EnvSource(settings_cls, case_sensitive=False))

    def masked(self) -> dict[str, Any]:
        """The settings as plain JSON data, secrets shown as asterisks when set."""
        return json.loads(self.model_dump_json())


SECRET_KEYS = ("source.wrds.password", "llm.api_key")


def load_settings(
    config: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> FtmSettings:
    """Build the settings from flags (`overrides`), the environment, the TOML file and defaults."""
    return _resolve(config, overrides, environ)[0]


def explain_settings(
    config: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, Any, str]]:
    """Every setting as (dotted key, masked value, source), source being flag, env, toml or default."""
    settings, layers = _resolve(config, overrides, environ)
    origin: dict[str, str] = {}
    for name, layer in reversed(layers):  # weakest first, so stronger layers overwrite
        for key in _flatten(layer):
            origin[key] = name
    return [(key, value, origin.get(key, "default")) for key, value in _flatten(settings.masked()).items()]


def usable_cores() -> int:
    """The CPU cores this process may run on: what a setting's "0 means one per CPU core" means."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def config_path(config: Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The TOML file to read: the flag, else FTM_CONFIG, else ./ftm.toml when it exists."""
    environ = os.environ if environ is None else environ
    if config is None and environ.get(CONFIG_ENV):
        config = Path(environ[CONFIG_ENV])
    if config is None:
        return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None
    if not config.is_file():
        raise SettingsError(f"config file {config} does not exist: pass an existing --config or leave it out")
    return config


def _resolve(
    config: Path | None, overrides: Mapping[str, Any] | None, environ: Mapping[str, str] | None
) -> tuple[FtmSettings, list[tuple[str, dict[str, Any]]]]:
    environ = dict(os.environ if environ is None else environ)
    path = config_path(config, environ)
    toml_layer = _read_toml(path) if path else {}
    env_layer = _read_env(environ)
    flag_layer = _prune(dict(overrides or {}))
    layers = [("flag", flag_layer), ("env", env_layer), ("toml", toml_layer)]
    merged: dict[str, Any] = {}
    for _, layer in reversed(layers):
        merged = _deep_merge(merged, layer)
    try:
        # Validate the merged dict directly: the layers were read above with the same
        # pydantic-settings sources, and validating once gives one error list for all of them.
        settings = FtmSettings.model_validate(merged)
    except ValidationError as error:
        raise SettingsError(_describe(error, layers, path)) from None
    return settings, layers


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        layer = TomlConfigSettingsSource(FtmSettings, toml_file=path)()
    except ValueError as error:  # tomllib.TOMLDecodeError is a ValueError
        raise SettingsError(f"{path} is not valid TOML: {error}") from None
    for key in SECRET_KEYS:
        if key in _flatten(layer):
            env = ENV_PREFIX + key.upper().replace(".", ENV_NESTING)
            raise SettingsError(
                f"{path} sets {key}, a secret: ftm never reads secrets from the TOML file. "
                f"Remove it there and set {env} in the environment instead."
            )
    return layer


def _read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    sections = set(FtmSettings.model_fields)
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in RESERVED_ENV:
            continue
        section = name[len(ENV_PREFIX) :].split(ENV_NESTING, 1)[0].lower()
        if section not in sections:
            raise SettingsError(
                f"environment variable {name} is not an ftm setting: known sections are "
                f"{', '.join(sorted(sections))} (as in FTM_STORAGE__ROOT); unset it or fix its name"
            )
    source = _EnvSource(
        FtmSettings,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTING,
        case_sensitive=False,
    )
    source.env_vars = {key.lower(): value for key, value in environ.items()}
    try:
        return source()
    except Exception as error:  # pydantic-settings raises SettingsError for undecodable JSON values
        cause = error.__cause__
        if isinstance(cause, _NotJson):
            ending = (ENV_NESTING + cause.field).upper()
            names = [n for n in environ if n.upper().startswith(ENV_PREFIX) and n.upper().endswith(ending)]
            name = names[0] if names else ENV_PREFIX + cause.field.upper()
            raise SettingsError(f"environment variable {name} is not valid JSON: {cause.expected}") from None
        raise SettingsError(f"an FTM_* variable could not be read: {error}") from None


class _NotJson(ValueError):
    """A variable of a list or section setting that is neither JSON nor comma-separated values."""

    def __init__(self, field: str, value: str, expected: str):
        super().__init__(f"{field}: {expected}")
        self.field, self.value, self.expected = field, value, expected


class _EnvSource(EnvSettingsSource):
    """FTM_* variables as pydantic-settings reads them, with lists also as comma-separated values
    (FTM_AWS__SUBNET_IDS=subnet-a,subnet-b), which is how a shell user writes a list."""

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            if not isinstance(value, str):
                raise
            if typing.get_origin(field.annotation) in (list, tuple, set):
                if not value.lstrip().startswith("["):
                    return [item.strip() for item in value.split(",") if item.strip()]
                expected = 'write a JSON list (["a", "b"]) or comma-separated values (a,b)'
            else:
                expected = 'write a JSON object ({"key": "value"}), or set its keys one by one'
            raise _NotJson(field_name, value, expected) from None


# Options that are flags of one command, not settings: what a misspelt key may have meant.
FLAG_ONLY = {
    "batch_size": "`ftm submit --batch-size`",
    "firms": "`ftm prefetch --firms`",
    "quarter": "each command's QUARTER argument or --quarter",
    "overwrite": "`ftm prefetch --overwrite`",
    "allow_partial": "`ftm reduce --allow-partial`",
    "backend": "each command's --backend",
}


def _describe(error: ValidationError, layers: list[tuple[str, dict[str, Any]]], path: Path | None) -> str:
    lines = ["invalid settings:"]
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":  # pydantic says "Extra inputs are not permitted"
            message = "not a setting" + _did_you_mean(key)
        else:
            message = problem["msg"]
        lines.append(f"  {key} ({_where(key, layers, path)}): {message}")
    lines.append(
        "Every setting, with its default and what it does: ftm.toml in ftm's checkout, or "
        "`ftm config` once the settings load."
    )
    return "\n".join(lines)


def _did_you_mean(key: str) -> str:
    """The known keys closest to an unknown one (in its section first), and the flag it may be."""
    *sections, name = key.split(".")
    known = [dotted for dotted, _, _ in _flatten_fields(FtmSettings)]
    in_section = [k for k in known if k.rsplit(".", 1)[0] == ".".join(sections)]

    def squashed(text: str) -> str:  # batchsize, batch-size and batch_size are one name
        return text.replace("_", "").replace("-", "").lower()

    by_name = {}
    for dotted in sorted(known, key=lambda k: k not in in_section):
        by_name.setdefault(squashed(dotted.rsplit(".", 1)[-1]), []).append(dotted)
    close = [k for k in in_section if squashed(k.rsplit(".", 1)[-1]) == squashed(name)]
    close += by_name.get(squashed(name), [])
    close += [
        dotted
        for match in difflib.get_close_matches(squashed(name), list(by_name), n=3, cutoff=0.75)
        for dotted in by_name[match]
    ]
    close = list(dict.fromkeys(close))[:3]
    hints = [f"did you mean {' or '.join(close)}?"] if close else []
    flag = next((where for flag, where in FLAG_ONLY.items() if squashed(flag) == squashed(name)), None)
    if flag and not any(squashed(k.rsplit(".", 1)[-1]) == squashed(name) for k in in_section):
        hints.append(f"{flag} is a flag, not a setting.")
    return f": {' '.join(hints)}" if hints else ""


def _flatten_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Every setting's dotted key, with its field, sections included only through their keys."""
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += _flatten_fields(annotation, f"{prefix}{name}.")
        else:
            found.append((f"{prefix}{name}", field, annotation))
    return found


def _where(key: str, layers: list[tuple[str, dict[str, Any]]], path: Path | None) -> str:
    for name, layer in layers:
        flat = _flatten(layer)
        if any(k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in flat):
            if name == "env":
                return "environment variable " + ENV_PREFIX + key.upper().replace(".", ENV_NESTING)
            if name == "toml":
                return f"key in {path}"
            return "command-line flag"
    return "default"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _prune(data: dict[str, Any]) -> dict[str, Any]:
    """Drops flags the user did not give (None), so they do not mask weaker sources."""
    pruned = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _prune(value)
            if not value:
                continue
        if value is not None:
            pruned[key] = value
    return pruned


def update_config_file(path: Path, values: Mapping[str, Any]) -> None:
    """Sets dotted keys (`aws.job_queue`) in a TOML settings file, keeping its comments and order.

    The file is created when missing; the values are checked against the model first, and a
    secret is refused, as when reading."""
    import tomlkit

    for key in values:
        if key in SECRET_KEYS:
            raise SettingsError(f"{key} is a secret: ftm never writes secrets to {path}")
    document = tomlkit.parse(path.read_text()) if path.is_file() else tomlkit.document()
    for key, value in values.items():
        *sections, name = key.split(".")
        table: Any = document
        for section in sections:
            if section not in table:
                table.add(section, tomlkit.table())
            table = table[section]
        table[name] = value
    text = tomlkit.dumps(document)
    try:
        FtmSettings.model_validate(tomlkit.parse(text).unwrap())
    except ValidationError as error:
        raise SettingsError(f"cannot write {', '.join(values)} to {path}: {error}") from None
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def section_environment(settings: FtmSettings, sections: tuple[str, ...]) -> dict[str, str]:
    """Sections as FTM_<SECTION> variables of JSON, for a worker or container to run with exactly
    these settings. Secrets are left out: they would travel in plain text (a job's environment is
    visible in the AWS console); a worker gets them from its own environment or secret store."""
    environment = {}
    for section in sections:
        exclude: dict[str, Any] = {}
        for key in SECRET_KEYS:  # "source.wrds.password" → {"wrds": {"password": True}}
            first, *path = key.split(".")
            if first == section:
                target = exclude
                for part in path[:-1]:
                    target = target.setdefault(part, {})
                target[path[-1]] = True
        data = getattr(settings, section).model_dump(mode="json", exclude=exclude or None)
        environment[f"{ENV_PREFIX}{section.upper()}"] = json.dumps(data, sort_keys=True)
    return environment
