"""Names for themes and firm topics, from an LLM behind any OpenAI-compatible endpoint.

Naming one topic per request at 1-2 s each is what made the earlier pipeline take days (100,000
topics a quarter). So here many topics share one request (`llm.topics_per_request`), many
requests are in flight at once (`llm.concurrency`), and every request starts with the same fixed
instruction block, so that vLLM reuses its KV cache for that prefix. Every reply is validated
(pydantic, and its ids against those sent) and persisted as it arrives, in a cache keyed by a hash
of the prompt, the model and `PROMPT_VERSION`: a re-run sends nothing twice and a kill loses only
the requests in flight. A request that keeps failing gives keyword names (`source="keywords"`),
which are not cached, so the next run asks again. Without an endpoint every name is a keyword name.

The library never prints: progress goes to a callback, the outcome is returned.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ftm import layout
from ftm.errors import SettingsError, UsageError
from ftm.quarters import Quarter
from ftm.schemas import FIRM_TOPICS, THEME_NAMES, THEMES, TOPIC_NAMES, conform, content_hash
from ftm.settings import FtmSettings, LlmSettings
from ftm.storage import Store

Kind = Literal["theme", "topic"]
What = Literal["themes", "topics", "all"]

# Part of every cache key: bump it when the prompt's meaning or the reply's reading changes, so
# that replies to the old prompt are never reused.
PROMPT_VERSION = "1"

# What one topic shows the model; enough to name it, bounded so a prompt stays small.
MAX_KEYWORDS = 10
MAX_SENTENCES = 3
MAX_SENTENCE_CHARS = 300
# Output budget per topic: a name and one sentence are ~40 tokens; the rest is JSON and slack.
MAX_TOKENS_PER_TOPIC = 80
# The prompt's length in Qwen3's tokens at its largest, measured with Qwen's byte-level BPE on
# `prompt_messages` of call text (benchmarks/name_context.py): the instructions and chat template
# take 193 tokens and a topic at most 297 (its id, 10 long keywords, 3 sentences clipped to
# MAX_SENTENCE_CHARS). About 10 % more here, for text that splits into more tokens.
PROMPT_TOKENS = 210
PROMPT_TOKENS_PER_TOPIC = 330
# A server may ask for a long pause; longer than this and the request is better counted failed.
MAX_RETRY_AFTER_S = 120.0
# A retry after an invalid reply runs warmer, so that it is not the same reply again.
RETRY_TEMPERATURE = 0.5

# The fixed block every request starts with (the prefix a server caches); topics come after it.
INSTRUCTIONS = """\
You name topics found in company earnings calls, for finance researchers.
Each topic has an id, its keywords (most characteristic first) and a few representative \
sentences from the calls.
For every topic write:
- "name": a short, specific label of at most four words in title case that names the business \
or economic theme, such as "Data Center Demand", "Freight Cost Inflation" or "Share Buyback \
Program". Avoid generic labels such as "Business Update" or "Financial Results".
- "description": one sentence of at most 25 words saying what the firms discuss.
Use only the information given. Answer with one JSON object and nothing else, in this form:
{"topics": [{"id": "<the id as given>", "name": "...", "description": "..."}]}
with exactly one entry per topic, every id exactly as given, in the order given."""


@dataclass(frozen=True)
class Item:
    """A theme or firm topic to name: what the prompt shows of it, and its keyword fallback."""

    kind: Kind
    id: str  # what the prompt calls it: a theme's id, or firm_id/topic_id (see `_keys`)
    keywords: tuple[str, ...]
    sentences: tuple[str, ...]
    representation: str | None = None


@dataclass(frozen=True)
class Name:
    """One row of topic_names.parquet or theme_names.parquet (with the quarter and, from the id,
    the keys of what it names)."""

    kind: Kind
    id: str
    name: str
    description: str
    source: str  # "llm:<model>" or "keywords"


@dataclass
class NamingProgress:
    """Where the naming of one kind stands; passed to the progress callback after each change."""

    kind: Kind
    total: int
    done: int = 0  # names settled, whatever their source
    from_cache: int = 0
    fallback: int = 0  # keyword names given after a failed request
    requests: int = 0  # HTTP requests sent, retries included
    in_flight: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finished: bool = False


@dataclass(frozen=True)
class NamingResult:
    kind: Kind
    quarter: str
    path: str  # relative to the storage root
    n_names: int
    source: str  # "llm:<model>", or "keywords" when no endpoint is configured
    n_llm: int  # named by the LLM, now or in an earlier run
    n_from_cache: int
    n_fallback: int  # keyword names after a request failed: the next run asks for them again
    requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    elapsed_s: float
    problem: str | None = None  # why requests failed, when some did


ProgressCallback = Callable[[NamingProgress], None]


def name_quarter(
    settings: FtmSettings,
    quarter: Quarter,
    what: What = "all",
    on_progress: ProgressCallback | None = None,
) -> list[NamingResult]:
    """Names the quarter's themes and/or firm topics and writes the names files.

    Raises UsageError when an input is missing (naming the command that makes it), SettingsError
    when the endpoint refuses the key or does not know the model.
    """
    store = Store.from_settings(settings.storage)
    kinds = _kinds(what)
    for kind in kinds:  # refuse before any work, so a missing input costs nothing
        check_input(store, quarter, kind)
    results = []
    for kind in kinds:
        total, chunks = _chunks(store, quarter, kind, settings.llm.topics_per_request)
        results.append(name_items(store, quarter, kind, total, chunks, settings.llm, on_progress))
    return results


def requests_to_send(settings: FtmSettings, quarter: Quarter, what: What = "all") -> int:
    """How many requests `name_quarter` would send now: its chunks whose reply is not cached.

    Reads the inputs and the cache, sends nothing. `ftm name --serve` starts no server when this
    is 0, since loading a model takes minutes of GPU time. Raises UsageError like name_quarter.
    """
    store = Store.from_settings(settings.storage)
    kinds = _kinds(what)
    for kind in kinds:
        check_input(store, quarter, kind)
    cached = _cached_keys(store, quarter)
    size = settings.llm.topics_per_request
    return sum(
        cache_key(prompt_messages(chunk), settings.llm.model) not in cached
        for kind in kinds
        for chunk in _chunks(store, quarter, kind, size)[1]
    )


def name_items(
    store: Store,
    quarter: Quarter,
    kind: Kind,
    total: int,
    chunks: Iterable[Sequence[Item]],
    llm: LlmSettings,
    on_progress: ProgressCallback | None = None,
) -> NamingResult:
    """Names items given in request-sized chunks (read lazily) and writes the kind's names file."""
    started = time.monotonic()
    progress = NamingProgress(kind=kind, total=total)
    if llm.base_url:
        namer = _Namer(store, quarter, llm, progress, on_progress or _ignore)
        names, problem = asyncio.run(namer.run(chunks))
        source = f"llm:{llm.model}"
    else:
        names, problem, source = [], None, "keywords"
        for chunk in chunks:
            names.extend(keyword_name(item) for item in chunk)
            progress.done += len(chunk)
            (on_progress or _ignore)(progress)
    path = _names_path(quarter, kind)
    store.write_table(path, _names_table(names, quarter, kind), _names_schema(kind))
    progress.finished = True
    (on_progress or _ignore)(progress)
    n_fallback = sum(name.source == "keywords" for name in names) if llm.base_url else 0
    return NamingResult(
        kind=kind,
        quarter=str(quarter),
        path=path,
        n_names=len(names),
        source=source,
        n_llm=len(names) - n_fallback if llm.base_url else 0,
        n_from_cache=progress.from_cache,
        n_fallback=n_fallback,
        requests=progress.requests,
        retries=progress.retries,
        prompt_tokens=progress.prompt_tokens,
        completion_tokens=progress.completion_tokens,
        elapsed_s=time.monotonic() - started,
        problem=problem,
    )


def keyword_name(item: Item) -> Name:
    """The name an item gets without an LLM: its top keywords."""
    keywords = [word for word in item.keywords if word.strip()]
    if keywords:
        name = ", ".join(keywords[:3])
        description = "Top keywords: " + ", ".join(keywords[:MAX_KEYWORDS]) + "."
    else:
        name = item.representation or f"{item.kind.title()} {item.id}"
        description = "No keywords were found for this " + item.kind + "."
    return Name(item.kind, item.id, name, description, "keywords")


def prompt_messages(items: Sequence[Item]) -> list[dict[str, str]]:
    """The chat messages for one request: the fixed instructions first, then the items."""
    topics = [
        {
            "id": item.id,
            "keywords": list(item.keywords[:MAX_KEYWORDS]),
            "sentences": [_clip(sentence) for sentence in item.sentences[:MAX_SENTENCES]],
        }
        for item in items
    ]
    body = json.dumps({"topics": topics}, ensure_ascii=False)
    return [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": f"Name these {len(items)} topics:\n{body}"},
    ]


def reply_budget(n_items: int) -> int:
    """The `max_tokens` of a request naming `n_items`."""
    return MAX_TOKENS_PER_TOPIC * n_items + 64


def longest_request_tokens(topics_per_request: int) -> int:
    """The most tokens one request takes of a server's context, prompt and reply budget (which a
    server counts against its context before it answers): the largest chunk is 2 × size − 1
    topics, the remainder joining the last chunk (`_chunked`)."""
    n_items = 2 * topics_per_request - 1
    return PROMPT_TOKENS + PROMPT_TOKENS_PER_TOPIC * n_items + reply_budget(n_items)


def cache_key(messages: list[dict[str, str]], model: str) -> str:
    return content_hash({"prompt_version": PROMPT_VERSION, "model": model, "messages": messages})


# --- inputs -----------------------------------------------------------------------------------


def check_input(store: Store, quarter: Quarter, kind: Kind) -> None:
    if kind == "theme" and not store.exists(layout.themes(quarter)):
        raise UsageError(
            f"{quarter} has no themes yet ({store.uri(layout.themes(quarter))} does not exist): "
            f"run `{store.command(f'reduce --quarter {quarter}')}` first, or name only the firm topics "
            "with --what topics"
        )
    if kind == "topic" and not _topic_parts(store, quarter):
        raise UsageError(
            f"{quarter} has no firm topics yet (nothing in {store.uri(layout.firm_topics_folder(quarter))}): "
            f"run `{store.command(f'submit --quarter {quarter}')}` first"
        )


def _kinds(what: What) -> list[Kind]:
    return ["theme", "topic"] if what == "all" else ["theme" if what == "themes" else "topic"]


def _chunks(store: Store, quarter: Quarter, kind: Kind, size: int) -> tuple[int, Iterator[list[Item]]]:
    """How many items of `kind` there are, and the items in request-sized chunks (read lazily)."""
    if kind == "theme":
        return _theme_chunks(store, quarter, size)
    return _topic_chunks(store, quarter, size)


def _cached_keys(store: Store, quarter: Quarter) -> set[str]:
    """The cache keys of the replies stored for the quarter: one listing, no entry read."""
    folder = layout.name_cache_entry(quarter, "x").rsplit("/", 1)[0]
    return {path.rsplit("/", 1)[-1].removesuffix(".json") for path in store.list(folder)}


def _topic_parts(store: Store, quarter: Quarter) -> list[str]:
    return [
        path
        for path in store.list(layout.firm_topics_folder(quarter))
        if path.endswith(".parquet") and "_part_" in path.rsplit("/", 1)[-1]
    ]


_TOPIC_COLUMNS = ["firm_id", "topic_id", "keywords", "representation", "representative_sentences"]


def _theme_chunks(store: Store, quarter: Quarter, size: int) -> tuple[int, Iterator[list[Item]]]:
    # A quarter has hundreds of themes, not millions: one read is fine.
    table = store.read_table(
        layout.themes(quarter),
        THEMES,
        columns=["theme_id", "keywords", "representation", "representative_sentences"],
    )
    items = [
        Item("theme", str(row["theme_id"]), *_texts(row), row["representation"]) for row in table.to_pylist()
    ]
    return len(items), _chunked(items, size)


def _topic_chunks(store: Store, quarter: Quarter, size: int) -> tuple[int, Iterator[list[Item]]]:
    parts = _topic_parts(store, quarter)
    # Counting reads one small column per part; the texts are read part by part, later.
    total = 0
    for part in parts:
        ids = store.read_table(part, FIRM_TOPICS, columns=["topic_id"]).column("topic_id")
        total += sum(1 for topic_id in ids.to_pylist() if topic_id >= 0)

    def chunks() -> Iterator[list[Item]]:
        seen: set[str] = set()  # a firm written twice (a re-run map) is named once
        for part in parts:
            rows = store.read_table(part, FIRM_TOPICS, columns=_TOPIC_COLUMNS).to_pylist()
            items = []
            for row in rows:
                name_id = f"{row['firm_id']}/{row['topic_id']}"
                # BERTopic's -1 gathers the outliers: noise, not a topic to name.
                if row["topic_id"] < 0 or name_id in seen:
                    continue
                seen.add(name_id)
                items.append(Item("topic", name_id, *_texts(row), row["representation"]))
            # Chunks never span parts, so a part's prompts (and cache keys) depend on it alone.
            yield from _chunked(items, size)

    return total, chunks()


def _texts(row: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(row["keywords"] or ()), tuple(row["representative_sentences"] or ())


def _chunked(items: list[Item], size: int) -> Iterator[list[Item]]:
    """Chunks of `size`; the remainder joins the last one, so no request is short of `size`."""
    n_chunks = max(1, len(items) // size)
    for index in range(n_chunks):
        end = len(items) if index == n_chunks - 1 else (index + 1) * size
        if items[index * size : end]:
            yield items[index * size : end]


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_SENTENCE_CHARS else text[: MAX_SENTENCE_CHARS - 1].rstrip() + "…"


def _names_table(names: list[Name], quarter: Quarter, kind: Kind) -> pa.Table:
    keys = [_keys(kind, name.id) for name in names]
    return pa.table(
        {
            **_key_columns(kind, keys),
            # Typed, since a quarter without themes has no names, and an empty list is of no type.
            "quarter": pa.array([str(quarter)] * len(names), pa.string()),
            "name": pa.array([name.name for name in names], pa.string()),
            "description": pa.array([name.description for name in names], pa.string()),
            "source": pa.array([name.source for name in names], pa.string()),
        }
    )


def _keys(kind: Kind, name_id: str) -> tuple[int] | tuple[str, int]:
    """The keys of what an id names: (theme_id,), or (firm_id, topic_id) from "firm_id/topic_id"
    (split at the last slash: a ticker may hold one, a topic id never does)."""
    if kind == "theme":
        return (int(name_id),)
    firm_id, topic_id = name_id.rsplit("/", 1)
    return firm_id, int(topic_id)


def _key_columns(kind: Kind, keys: list[tuple[Any, ...]]) -> dict[str, pa.Array]:
    if kind == "theme":
        return {"theme_id": pa.array([key[0] for key in keys], pa.int32())}
    return {
        "firm_id": pa.array([key[0] for key in keys], pa.string()),
        "topic_id": pa.array([key[1] for key in keys], pa.int32()),
    }


def _names_path(quarter: Quarter, kind: Kind) -> str:
    return layout.theme_names(quarter) if kind == "theme" else layout.topic_names(quarter)


def _names_schema(kind: Kind) -> pa.Schema:
    return THEME_NAMES if kind == "theme" else TOPIC_NAMES


def read_names(store: Store, quarter: Quarter, kind: Kind) -> pa.Table:
    """The quarter's theme or topic names, in THEME_NAMES or TOPIC_NAMES.

    A file an earlier ftm wrote, with `kind` and a text `id` where the keys now are, is converted
    as it is read (`ftm name` rewrites it in the new form, from its cache)."""
    path = _names_path(quarter, kind)
    schema = _names_schema(kind)
    table = store.read_table(path)
    if schema.names[0] not in table.column_names and "id" in table.column_names:
        keys = [_keys(kind, name_id) for name_id in table.column("id").to_pylist()]
        for column, values in _key_columns(kind, keys).items():
            table = table.append_column(column, values)
    return conform(table, schema, store.uri(path))


def _ignore(_: NamingProgress) -> None:
    pass


# --- replies ----------------------------------------------------------------------------------


class _Named(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str = Field(min_length=1, max_length=120)
    description: str = Field(min_length=1, max_length=600)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("name", "description", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> Any:
        return " ".join(value.split()) if isinstance(value, str) else value


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    topics: list[_Named]


class _CacheEntry(BaseModel):
    """One persisted reply: what a re-run uses instead of asking again. Holds no secret."""

    key: str
    prompt_version: str
    model: str
    names: list[_Named]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: datetime


class _InvalidReply(Exception):
    """The reply was not the JSON asked for, or its ids were not those sent."""


_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)


def _parse_reply(content: str, ids: Sequence[str]) -> list[_Named]:
    """The names in a reply, in the order of `ids`; _InvalidReply says what was wrong with it."""
    text = _THINKING.sub("", content).strip()
    start, end = text.find("{"), text.rfind("}")  # tolerate ```json fences and chatter around it
    try:
        data = json.loads(text[start : end + 1] if start >= 0 and end > start else text)
        reply = _Reply.model_validate({"topics": data} if isinstance(data, list) else data)
    except (json.JSONDecodeError, ValidationError) as error:
        raise _InvalidReply(f"not the JSON asked for ({_first_line(error)})") from None
    by_id = {named.id: named for named in reply.topics}
    missing = [i for i in ids if i not in by_id]
    unknown = [named.id for named in reply.topics if named.id not in set(ids)]
    if missing or unknown or len(reply.topics) != len(ids):
        raise _InvalidReply(
            f"ids differ from those sent: {len(missing)} missing, {len(unknown)} not sent, "
            f"{len(reply.topics)} answers for {len(ids)} topics"
        )
    return [by_id[i] for i in ids]


# --- the client -------------------------------------------------------------------------------


class _Failed(Exception):
    """A request that will not succeed by retrying; its items get keyword names."""


class _Namer:
    """Sends the chunks with `llm.concurrency` requests in flight, retries, caches, falls back."""

    def __init__(
        self,
        store: Store,
        quarter: Quarter,
        llm: LlmSettings,
        progress: NamingProgress,
        on_progress: ProgressCallback,
    ):
        self.store, self.quarter, self.llm = store, quarter, llm
        self.progress, self.on_progress = progress, on_progress
        self.url = llm.base_url.rstrip("/") + "/chat/completions"
        self.secret = llm.api_key.get_secret_value() if llm.api_key else None
        self.source = f"llm:{llm.model}"
        # Request fields beyond the protocol's core; dropped for a server that refuses them.
        self.optional: dict[str, Any] = {
            "response_format": {"type": "json_object"},
            # Qwen3 thinks by default (vLLM); for a label that only multiplies the output tokens.
            "chat_template_kwargs": {"enable_thinking": False},
        }
        self.cached: set[str] = set()
        self.resume_at = 0.0  # a 429's Retry-After holds every worker, not only the one it hit
        self.failed_in_a_row = 0
        self.stopped: str | None = None  # set when the endpoint looks down: send nothing more
        self.problem: str | None = None

    async def run(self, chunks: Iterable[Sequence[Item]]) -> tuple[list[Name], str | None]:
        loop = asyncio.get_running_loop()
        # Cache reads and writes are blocking Store calls; on S3 they want as many threads as
        # there are requests in flight, more than asyncio's default pool gives on a small host.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=self.llm.concurrency + 2))
        # One listing says which replies are cached; entries are read only when their chunk comes.
        self.cached = await asyncio.to_thread(_cached_keys, self.store, self.quarter)
        results: dict[int, list[Name]] = {}
        queue: asyncio.Queue[tuple[int, Sequence[Item]] | None] = asyncio.Queue(2 * self.llm.concurrency)
        headers = {"Authorization": f"Bearer {self.secret}"} if self.secret else {}
        limits = httpx.Limits(
            max_connections=self.llm.concurrency, max_keepalive_connections=self.llm.concurrency
        )
        async with httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(self.llm.timeout_s), limits=limits
        ) as client:
            workers = [
                asyncio.create_task(self._worker(client, queue, results)) for _ in range(self.llm.concurrency)
            ]
            try:
                # Chunks are read lazily (a part at a time) in a thread; the bounded queue keeps
                # memory to a part plus the requests in flight.
                iterator = iter(chunks)
                index = 0
                while (chunk := await asyncio.to_thread(next, iterator, None)) is not None:
                    await _put(queue, (index, chunk), workers)
                    index += 1
                for _ in workers:
                    await _put(queue, None, workers)
                await asyncio.gather(*workers)
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        names = [name for index in sorted(results) for name in results[index]]
        return names, self.problem

    async def _worker(
        self,
        client: httpx.AsyncClient,
        queue: asyncio.Queue[tuple[int, Sequence[Item]] | None],
        results: dict[int, list[Name]],
    ) -> None:
        while (job := await queue.get()) is not None:
            index, items = job
            results[index] = await self._name(client, items)
            self.progress.done += len(items)
            self.on_progress(self.progress)

    async def _name(self, client: httpx.AsyncClient, items: Sequence[Item]) -> list[Name]:
        messages = prompt_messages(items)
        key = cache_key(messages, self.llm.model)
        ids = [item.id for item in items]
        path = layout.name_cache_entry(self.quarter, key)
        if key in self.cached:
            entry = await asyncio.to_thread(self._read_entry, path, ids)
            if entry is not None:
                self.progress.from_cache += len(items)
                return self._names(items, entry.names)
        if self.stopped:
            return self._fallback(items)
        try:
            named, usage = await self._ask(client, messages, ids)
        except _Failed as failure:
            self.failed_in_a_row += 1
            if not self.stopped:
                self.problem = self._redact(str(failure))
            # Every worker failing in turn means the endpoint is down or broken: stop sending,
            # rather than wait out every retry of every request left.
            if self.failed_in_a_row >= self.llm.concurrency and not self.stopped:
                self.stopped = self.problem = (
                    f"gave up on the endpoint after {self.failed_in_a_row} failed requests in a row, "
                    f"the last: {self.problem}"
                )
            return self._fallback(items)
        self.failed_in_a_row = 0
        entry = _CacheEntry(
            key=key,
            prompt_version=PROMPT_VERSION,
            model=self.llm.model,
            names=named,
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            created_at=datetime.now(timezone.utc),
        )
        # Persisted before it counts as done: a kill after this loses nothing of this request.
        await asyncio.to_thread(self.store.write_json, path, entry.model_dump(mode="json"))
        return self._names(items, named)

    async def _ask(
        self, client: httpx.AsyncClient, messages: list[dict[str, str]], ids: list[str]
    ) -> tuple[list[_Named], dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.llm.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": reply_budget(len(ids)),
        }
        problem = ""
        for attempt in range(self.llm.max_retries + 1):
            if attempt:
                self.progress.retries += 1
            await self._wait_for_gate()
            self.progress.in_flight += 1
            retry_after: float | None = None
            try:
                response = await self._post(client, body)
                if response.status_code == 200:
                    payload = response.json()
                    usage = payload.get("usage") or {}
                    self.progress.prompt_tokens += usage.get("prompt_tokens") or 0
                    self.progress.completion_tokens += usage.get("completion_tokens") or 0
                    content = payload["choices"][0]["message"]["content"] or ""
                    return _parse_reply(content, ids), usage
                problem = f"{self.url} answered HTTP {response.status_code}: {_snippet(response.text)}"
                if response.status_code in (401, 403):
                    raise SettingsError(
                        self._redact(
                            f"{problem}. The endpoint refused the API key: set FTM_LLM__API_KEY "
                            "to a key it accepts (or unset it for a server that needs none)"
                        )
                    )
                if response.status_code == 404:
                    raise SettingsError(
                        self._redact(
                            f"{problem}. Check llm.base_url (it usually ends in /v1) and llm.model "
                            f"({self.llm.model!r}) against what the server serves"
                        )
                    )
                if response.status_code not in (408, 429) and response.status_code < 500:
                    raise _Failed(problem)  # 400, 413, 422: asking again gives the same answer
                retry_after = _retry_after(response.headers.get("retry-after"))
                if response.status_code == 429 and retry_after is not None:
                    self.resume_at = max(self.resume_at, time.monotonic() + retry_after)
            except httpx.TimeoutException:
                problem = f"{self.url} did not answer within llm.timeout_s = {self.llm.timeout_s:g} s"
            except httpx.TransportError as error:
                problem = f"could not reach {self.url}: {type(error).__name__} {error}"
            except (_InvalidReply, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
                problem = f"{self.url} gave an invalid reply: {error}"
                body["temperature"] = RETRY_TEMPERATURE
            finally:
                self.progress.in_flight -= 1
            if attempt < self.llm.max_retries:
                await asyncio.sleep(retry_after if retry_after is not None else self._backoff(attempt))
        raise _Failed(f"{problem} (after {self.llm.max_retries + 1} attempts)")

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
        while True:
            self.progress.requests += 1
            self.on_progress(self.progress)
            optional = dict(self.optional)  # another request may drop a field while this one runs
            response = await client.post(self.url, json={**body, **optional})
            refused = [name for name in optional if response.status_code == 400 and name in response.text]
            if not refused:
                return response
            # An API that refuses fields it does not know (OpenAI does) is asked again without
            # them, and so is every later request.
            for name in refused:
                self.optional.pop(name, None)

    async def _wait_for_gate(self) -> None:
        while (wait := self.resume_at - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter, so that workers failing together do not retry together.
        return self.llm.backoff_s * 2**attempt * random.uniform(0.5, 1.0)

    def _read_entry(self, path: str, ids: list[str]) -> _CacheEntry | None:
        try:
            entry = _CacheEntry.model_validate(self.store.read_json(path))
        except Exception:  # an unreadable entry is a miss: the request is sent and the entry rewritten
            return None
        return entry if [named.id for named in entry.names] == ids else None

    def _names(self, items: Sequence[Item], named: list[_Named]) -> list[Name]:
        return [
            Name(item.kind, item.id, n.name, n.description, self.source)
            for item, n in zip(items, named, strict=True)
        ]

    def _fallback(self, items: Sequence[Item]) -> list[Name]:
        self.progress.fallback += len(items)
        return [keyword_name(item) for item in items]

    def _redact(self, text: str) -> str:
        return text.replace(self.secret, "**********") if self.secret else text


async def _put(queue: asyncio.Queue, job: Any, workers: list[asyncio.Task]) -> None:
    """queue.put, but a worker's error (a refused key) surfaces instead of a wait forever."""
    put = asyncio.ensure_future(queue.put(job))
    while not put.done():
        await asyncio.wait([put, *workers], return_when=asyncio.FIRST_COMPLETED)
        for worker in workers:
            if worker.done() and not worker.cancelled() and worker.exception() is not None:
                put.cancel()
                raise worker.exception()


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), capped; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0]


__all__ = [
    "INSTRUCTIONS",
    "PROMPT_VERSION",
    "Item",
    "Name",
    "NamingProgress",
    "NamingResult",
    "cache_key",
    "requests_to_send",
    "keyword_name",
    "longest_request_tokens",
    "name_items",
    "name_quarter",
    "prompt_messages",
    "read_names",
    "reply_budget",
]
