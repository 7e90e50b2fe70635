"""`ftm name`: short human names for a quarter's themes and firm topics, by an LLM or keywords."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import Enum
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeRemainingColumn,
)

from ftm.backends.aws_batch import name_command, name_kind
from ftm.commands import ProgressDisplay, RootOption, print_json, settings_from, stderr, writable_store
from ftm.commands.batch_job import BackendOption, DetachOption, run_as_job, wants_batch
from ftm.commands.ranges import each_quarter
from ftm.errors import PartialFailure, UsageError
from ftm.name import NamingProgress, NamingResult, name_quarter, requests_to_send, serving
from ftm.quarters import Quarter, parse_quarters
from ftm.settings import FtmSettings

EXAMPLES = """\
Examples:

  # themes and firm topics; keyword names without an endpoint
  ftm name --quarter 2016Q4

  # the themes only, through a vLLM server
  FTM_LLM__BASE_URL=http://127.0.0.1:8000/v1 \\
    ftm name --quarter 2016Q4 --what themes

  # an API with a key: a secret, from the environment only, never ftm.toml
  export FTM_LLM__API_KEY=...
  ftm name --quarter 2016Q4 --base-url https://api.x.ai/v1 --model MODEL

  # on a GPU machine with vLLM: serves llm.model for the run, then stops it
  ftm name --quarter 2016Q4 --serve
  FTM_LLM__SERVE_ARGS='["--max-model-len", "8192"]' \\
    ftm name --quarter 2016Q4 --serve --model Qwen/Qwen3-4B

  # an AWS Batch GPU job that serves its own LLM
  ftm name --quarter 2016Q4 --serve --backend batch

Replies are cached beside the names: running the same command again sends nothing twice,
and an interrupted run goes on where it stopped. Exit code 3 when an endpoint was configured
and some requests failed, so that their names are keywords: run again to ask for them, or
pass --keywords-ok to accept them (exit 0).
"""

NO_ENDPOINT_HINT = (
    "no LLM endpoint is configured (llm.base_url), so the names are the top keywords. To name with "
    "an LLM, set FTM_LLM__BASE_URL to an OpenAI-compatible endpoint (vLLM: http://127.0.0.1:8000/v1, "
    "xAI: https://api.x.ai/v1), FTM_LLM__MODEL to the model it serves and, if it needs one, "
    "FTM_LLM__API_KEY; or pass --base-url and --model. Then run the same command again."
)


class What(str, Enum):
    themes = "themes"
    topics = "topics"
    all = "all"


def name(
    ctx: typer.Context,
    quarter: Annotated[
        str,
        typer.Option(
            "--quarter",
            help="Calendar quarter, as 2023Q1, or quarters: 2020Q1..2021Q4, 2020Q1,2020Q3.",
            show_default=False,
        ),
    ],
    what: Annotated[
        What, typer.Option("--what", help="Name the themes, the firm topics, or all.")
    ] = What.all,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="OpenAI-compatible endpoint (llm.base_url).", show_default=False),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model the endpoint serves (llm.model).", show_default=False)
    ] = None,
    serve: Annotated[
        bool | None,
        typer.Option(
            "--serve/--no-serve",
            help="Start `vllm serve` for llm.model on 127.0.0.1 for this run, then stop it (llm.serve).",
            show_default=False,
        ),
    ] = None,
    root: RootOption = None,
    keywords_ok: Annotated[
        bool,
        typer.Option(
            "--keywords-ok",
            help="Exit 0 when failed requests gave keyword names.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary as JSON to stdout.")] = False,
    backend: BackendOption = "local",
    detach: DetachOption = False,
) -> None:
    """Give every theme and firm topic of a quarter a short name and a one-sentence description.

    Many topics go in one request (llm.topics_per_request) and many requests are in flight at
    once (llm.concurrency), each starting with the same instructions so the server can reuse its
    prefix cache. A request that keeps failing gives keyword names (source "keywords"), which the
    next run asks for again. Writes names/theme_names/quarter=Q/theme_names.parquet (keyed by
    theme_id) and names/topic_names/quarter=Q/topic_names.parquet (firm_id, topic_id), which join
    the themes and the panel as they are.

    With --serve (llm.serve) no endpoint needs to be running: ftm starts llm.serve_command
    ("vllm serve", arguments from llm.serve_args) on 127.0.0.1:llm.serve_port, waits until the model
    is loaded (llm.serve_startup_timeout_s), names through it and stops it, also on an error or
    Ctrl-C. It needs a GPU and vLLM on this machine; the Batch name job runs it this way.
    """
    quarters = parse_quarters(quarter)
    if len(quarters) > 1:
        each_quarter(
            quarters,
            lambda one: name(ctx, str(one), what, base_url, model, serve, root, as_json, backend, detach),
        )
        return
    the_quarter = quarters[0]
    settings = settings_from(
        ctx, storage__root=root, llm__base_url=base_url, llm__model=model, llm__serve=serve
    )
    if wants_batch(backend):  # a GPU job with its own vLLM server (--serve), else a CPU job
        command = [*name_command(settings, the_quarter), "--what", what.value]
        command += ["--keywords-ok"] if keywords_ok else []
        run_as_job(settings, command, kind=name_kind(settings), detach=detach)
        return
    store = writable_store(settings)
    with _endpoint(settings, the_quarter, what) as settings, _ProgressDisplay(str(the_quarter)) as display:
        results = name_quarter(settings, the_quarter, what.value, on_progress=display.update)
    if as_json:
        print_json([{**asdict(result), "location": store.uri(result.path)} for result in results])
    for result in results:
        _report(result, store.uri(result.path))
    if not settings.llm.base_url:
        stderr.print(f"[yellow]{escape(NO_ENDPOINT_HINT)}[/]", highlight=False)
    fallen = sum(result.n_fallback for result in results)
    if fallen and not keywords_ok:
        # An endpoint was asked for: names that silently became keywords would pass for its work.
        problem = next((result.problem for result in results if result.problem), None) or "unknown reason"
        raise PartialFailure(
            f"{fallen:,} name(s) are keywords because their requests to {settings.llm.base_url} failed "
            f"({problem}); the names files are written. Run the same command again to ask for them, "
            "or pass --keywords-ok to accept keyword names"
        )


@contextmanager
def _endpoint(settings: FtmSettings, quarter: Quarter, what: What) -> Iterator[FtmSettings]:
    """The settings to name with: as they are, or pointing at a server started for the run."""
    if not settings.llm.serve:
        yield settings
        return
    if settings.llm.base_url:
        raise UsageError(
            f"llm.serve starts a server for this run, but llm.base_url is set too "
            f"({settings.llm.base_url}): choose one. Leave out --base-url (and unset FTM_LLM__BASE_URL "
            "or llm.base_url in ftm.toml) to name through a started server, or pass --no-serve to "
            "name through that endpoint."
        )
    # Counted before the model loads (minutes of GPU time); a missing input is refused here too.
    if requests_to_send(settings, quarter, what.value) == 0:
        _server_event("every reply is cached: no server started")
        # The address a started server would have: nothing is sent there, every reply is cached.
        llm = settings.llm.model_copy(update={"base_url": f"http://127.0.0.1:{settings.llm.serve_port}/v1"})
        yield settings.model_copy(update={"llm": llm})
        return
    with serving(settings.llm, on_event=_server_event) as url:
        llm = settings.llm.model_copy(update={"base_url": url})
        yield settings.model_copy(update={"llm": llm})


def _server_event(message: str) -> None:
    stderr.print(f"[dim]llm server:[/] {escape(message)}", highlight=False)


def _report(result: NamingResult, location: str) -> None:
    kind = f"{result.kind}s"
    if result.n_names == 0:
        stderr.print(
            f"no {kind} to name in {result.quarter}: {'reduce' if result.kind == 'theme' else 'the map'} "
            f"found none (an empty names file → {escape(location)})",
            highlight=False,
        )
        return
    if result.source == "keywords":
        stderr.print(
            f"named {result.n_names:,} {kind} of {result.quarter} from keywords → {escape(location)}",
            highlight=False,
        )
        return
    tokens = result.prompt_tokens + result.completion_tokens
    stderr.print(
        f"[green]named {result.n_names:,} {kind}[/] of {result.quarter} in {result.elapsed_s:.1f} s: "
        f"{result.n_llm:,} by {escape(result.source)} ({result.n_from_cache:,} from the cache), "
        f"{result.requests:,} requests, {result.retries:,} retries, {tokens:,} tokens → {escape(location)}",
        highlight=False,
    )
    if result.n_fallback:
        stderr.print(
            f"[yellow]{result.n_fallback:,} {kind} got keyword names because their requests failed[/]: "
            f"{escape(result.problem or 'unknown reason')}. Run the same command again to ask for them "
            "again; the names already given are cached.",
            highlight=False,
        )


class _ProgressDisplay(ProgressDisplay):
    """A rich progress bar on a terminal; a count line every few seconds otherwise (logs, CI)."""

    PLAIN_EVERY_S = 10.0

    def __init__(self, quarter: str):
        # One line that fits 80 columns even at 100,000 topics; the cached count is in the report.
        super().__init__(
            TextColumn("[bold]{task.fields[kind]}s[/]"),
            BarColumn(bar_width=8),
            MofNCompleteColumn(),
            TextColumn(
                "{task.fields[in_flight]} in flight · {task.fields[retries]} retries · "
                "{task.fields[tokens]} tok"
            ),
            TimeRemainingColumn(),
        )
        self.quarter = quarter
        self.tasks: dict[str, int] = {}

    def update(self, state: NamingProgress) -> None:
        fields = {
            "in_flight": state.in_flight,
            "retries": state.retries,
            "cached": state.from_cache,
            "tokens": _count(state.prompt_tokens + state.completion_tokens),
        }
        if self.live:
            if state.kind not in self.tasks:
                self.tasks[state.kind] = self.progress.add_task(
                    "", total=state.total, kind=state.kind, **fields
                )
            self.progress.update(self.tasks[state.kind], completed=state.done, total=state.total, **fields)
            return
        if self.line_due(self.PLAIN_EVERY_S, now=state.finished):
            stderr.print(
                f"name {state.kind}s {self.quarter}: {state.done:,}/{state.total:,} names, "
                f"{state.in_flight} in flight, {state.retries:,} retries, {state.from_cache:,} cached, "
                f"{fields['tokens']} tokens",
                highlight=False,
            )


def _count(n: int) -> str:
    """A token count short enough for a progress line: 950, 12.3k, 4.56M."""
    if n < 1000:
        return str(n)
    return f"{n / 1000:.1f}k" if n < 1_000_000 else f"{n / 1_000_000:.2f}M"
