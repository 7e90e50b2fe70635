"""`ftm image build`: the container image AWS Batch runs, built with Docker and pushed to ECR."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.markup import escape

from ftm.aws import image
from ftm.commands import Command, Group, config_file, print_json, settings_from, stderr
from ftm.settings import DEFAULT_CONFIG, config_path

EXAMPLES = """\
Examples:

  # after `ftm deploy`: build, push, set aws.image in ftm.toml
  ftm image build

  # vLLM with ftm, for `ftm name` with llm.serve; sets aws.llm_image
  ftm image build --target llm

  # build here only, to try the Dockerfile
  ftm image build --no-push

  # rebuild and push as REPOSITORY:test
  ftm image build --force --tag test

Run it from ftm's checkout, where Docker runs (a laptop with Docker, CloudShell, an EC2 host).
The tag is TARGET-HASH, HASH being that of pyproject.toml's dependencies and the Dockerfile: code
changes need no new image (the batch backend ships the code as a package), and a tag ECR holds
already is not built again. Exit codes: 0 done, 1 docker or ECR failed, 2 no aws.repository.
"""

app = typer.Typer(
    cls=Group,
    help="The container image that AWS Batch jobs run (Docker, ECR).",
    epilog=EXAMPLES,
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class Target(str, Enum):
    map = "map"
    llm = "llm"


@app.command("build", cls=Command, epilog=EXAMPLES)
def build(
    ctx: typer.Context,
    push: Annotated[
        bool, typer.Option("--push/--no-push", help="Push to aws.repository and set aws.image.")
    ] = True,
    target: Annotated[
        Target,
        typer.Option("--target", help="map: map-batch, reduce and name; llm: vLLM with ftm, for llm.serve."),
    ] = Target.map,
    tag: Annotated[
        str | None,
        typer.Option("--tag", help="Tag instead of TARGET-HASH.", show_default=False),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Build and push even if ECR holds the tag already.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON to stdout.")] = False,
) -> None:
    """Build the GPU image from this checkout and push it to ECR, when its dependencies changed.

    Builds containers/Dockerfile (CUDA 11.8, torch, cuML, the embedding and spaCy models baked
    in; entrypoint `ftm`), logs in to ECR, pushes REPOSITORY:TARGET-HASH, and writes aws.image
    (aws.llm_image for --target llm) to the settings file; `ftm deploy` then points the job
    definitions at it.
    """
    settings = settings_from(ctx)
    settings_file = config_path(config_file(ctx)) or DEFAULT_CONFIG
    result = image.build_image(
        settings.aws,
        target=target.value,
        tag=tag,
        push=push,
        force=force,
        settings_file=settings_file,
        on_step=lambda line: stderr.print(f"[bold]{escape(line)}[/]", highlight=False),
        on_output=lambda line: stderr.print(escape(line), highlight=False, style="dim", soft_wrap=True),
    )
    if as_json:
        print_json(
            {
                "uri": result.uri,
                "target": result.target,
                "dependency_hash": result.dependency_hash,
                "built": result.built,
                "pushed": result.pushed,
                "settings_file": str(result.settings_file) if result.settings_file else None,
            }
        )
    where = ""
    if result.settings_file:
        where = f"; {image.SETTING[result.target]} set in {escape(str(result.settings_file))}"
    done = "pushed" if result.pushed else ("built" if result.built else "already in ECR")
    stderr.print(f"[green]{done}[/]: {escape(result.uri)}{where}", highlight=False)
    if result.settings_file and result.uri != getattr(
        settings.aws, image.SETTING[result.target].split(".")[1]
    ):
        # AWS Batch cannot take an image at submit time: the job definitions must name it.
        stderr.print("next: `ftm deploy`, so that the job definitions run this image", highlight=False)
