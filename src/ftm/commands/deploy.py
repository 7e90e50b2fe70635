"""`ftm deploy`, `ftm doctor`, `ftm destroy`: the AWS stack that the batch backend runs on."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ftm.aws import stack
from ftm.commands import config_file, print_json, settings_from, stderr
from ftm.errors import UsageError
from ftm.settings import DEFAULT_CONFIG, FtmSettings, StorageSettings, config_path, update_config_file

DEPLOY_EXAMPLES = """\
Examples:

  # the first time: creates the stack
  ftm deploy --vpc-id vpc-0abc --subnet-ids subnet-0a,subnet-0b

  # again, after changing aws.* settings: updates it (with nothing to change,
  # it changes nothing)
  ftm deploy

  # with a bucket you have already
  ftm deploy --vpc-id vpc-0abc --subnet-ids subnet-0a,subnet-0b \\
    --existing-bucket my-bucket

  # print the settings to add instead of writing them
  ftm deploy --no-write-config

Creates or updates the CloudFormation stack aws.stack_name in aws.region: an S3 bucket (or the
existing one), an ECR repository, job queues on Spot GPUs (aws.gpu_instance_types, for the map),
on Spot GPUs of 24 GB (aws.llm_instance_types, for name with vLLM) and On-Demand CPUs, job
definitions and least-privilege roles. aws.llm_api_key_secret_arn, when set, gives the name jobs
FTM_LLM__API_KEY from that secret. Writes the stack's outputs (aws.job_queue, …) into the settings
file in use (./ftm.toml when there is none), aws.region when it is unset, and storage.root when
it is still the local default.

Then: `ftm image build` (and `--target llm` for llm.serve), `ftm deploy` again (the job
definitions take aws.image and aws.llm_image), `ftm doctor`.

Exit codes: 0 done or nothing to change, 2 missing VPC or subnets, 4 no usable AWS credentials
or region, 1 CloudFormation failed (with its reasons).
"""

DOCTOR_EXAMPLES = """\
Examples:

  # a table of checks; each failed one says what to do
  ftm doctor

  # only the failed checks
  ftm doctor --json | jq '.[] | select(.ok == false)'

Checks the region, credentials, the stack and its state, that the settings match its outputs,
that the bucket is reachable and private, that aws.image (and aws.llm_image when set) is in ECR
and the job definitions run it, that the GPU, CPU and LLM job queues and their compute
environments are VALID and ENABLED, and the Spot G/VT vCPU quota (L-3819A6DF), which is 0 in a
new account. With llm.serve or aws.llm_image set, also that vLLM can start llm.model at
llm.serve_max_model_len on the GPU of every aws.llm_instance_types (from the model's config.json)
and that this context holds ftm's longest request. Exit codes: 0 nothing failed (warnings
allowed), 4 a check failed.
"""

DESTROY_EXAMPLES = """\
Examples:

  # asks you to type the stack's name
  ftm destroy

  # no question: for scripts
  ftm destroy --yes

Deletes the stack and all it made: job queues, compute environments, job definitions, roles,
the ECR repository with its images, the log group and, when the stack created it, the bucket.
Refuses while that bucket holds data, and says how to keep or empty it. An existing bucket
(aws.existing_bucket) is never touched. Exit codes: 0 deleted, 2 no such stack, not confirmed,
or no terminal to ask on without --yes; 1 CloudFormation failed (with its reasons).
"""


def deploy(
    ctx: typer.Context,
    vpc_id: Annotated[
        str | None,
        typer.Option("--vpc-id", help="VPC the Batch instances run in (aws.vpc_id).", show_default=False),
    ] = None,
    subnet_ids: Annotated[
        str | None,
        typer.Option(
            "--subnet-ids",
            help="Comma-separated subnets of that VPC, with a route to the internet (aws.subnet_ids).",
            show_default=False,
        ),
    ] = None,
    existing_bucket: Annotated[
        str | None,
        typer.Option(
            "--existing-bucket",
            help="Use this bucket instead of creating one (aws.existing_bucket).",
            show_default=False,
        ),
    ] = None,
    write_config: Annotated[
        bool,
        typer.Option(
            "--write-config/--no-write-config",
            help="Write the outputs into the settings file, or print the lines to add.",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON to stdout.")] = False,
) -> None:
    """Create or update the AWS stack (S3, ECR, AWS Batch on Spot GPUs); save its outputs.

    The stack is deploy/ftm.yaml, applied through a change set; with nothing to change, nothing
    changes. Its outputs (queues, job definitions, bucket, repository) go into the settings file.
    """
    subnets = [subnet.strip() for subnet in subnet_ids.split(",") if subnet.strip()] if subnet_ids else None
    settings = settings_from(
        ctx, aws__vpc_id=vpc_id, aws__subnet_ids=subnets, aws__existing_bucket=existing_bucket
    )
    result = stack.deploy(settings.aws, on_event=_say)
    values: dict[str, Any] = dict(result.outputs)
    # The flags given are kept too, so that the next `ftm deploy` needs none.
    flags = {"aws.vpc_id": vpc_id, "aws.subnet_ids": subnets, "aws.existing_bucket": existing_bucket}
    values.update({key: value for key, value in flags.items() if value is not None})
    # The stack's region, so that every later command (and the jobs it submits) uses it, whatever
    # AWS_REGION or the profile say on another day or machine.
    if settings.aws.region is None:
        values["aws.region"] = result.region
    bucket = result.outputs.get("aws.bucket")
    root = f"s3://{bucket}/{settings.aws.prefix.strip('/')}" if bucket else None
    if root and settings.storage.root == StorageSettings.model_fields["root"].default:
        values["storage.root"] = root

    path = (config_path(config_file(ctx)) or DEFAULT_CONFIG) if write_config else None
    if path is not None:
        update_config_file(path, values)
    if as_json:
        print_json(
            {
                "stack": result.stack_name,
                "action": result.action,
                "changes": result.changes,
                "settings": values,
                "config_file": str(path) if path else None,
            }
        )
    else:
        _report_deploy(result, values, path, settings, root)
    if path is None and not as_json:
        typer.echo(_toml(values), nl=False)  # stdout, so that it can go straight into a file


def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON to stdout.")] = False,
) -> None:
    """Check that everything a run on AWS Batch needs is in place, and say what to do where not."""
    settings = settings_from(ctx)
    checks = stack.doctor(settings.aws, settings.llm)
    if as_json:
        print_json([asdict(check) for check in checks])
    else:
        table = Table("check", "", "detail, and what to do", box=None, pad_edge=False)
        table.columns[2].overflow = "fold"  # fixes are commands: wrap them, never cut them short
        marks = {True: "[green]ok[/]", None: "[yellow]warn[/]", False: "[bold red]FAIL[/]"}
        for check in checks:
            fix = f"\n[bold]→[/] {escape(check.fix)}" if check.fix and check.ok is not True else ""
            table.add_row(escape(check.name), marks[check.ok], escape(check.detail) + fix)
        stderr.print(table)
    failed = [check.name for check in checks if check.ok is False]
    if failed:
        stderr.print(
            f"[bold red]{len(failed)} check(s) failed[/]: {escape(', '.join(failed))}; "
            "fix them and run ftm doctor again",
            highlight=False,
        )
        raise typer.Exit(code=4)
    if not as_json:
        stderr.print("[green]ready[/]: ftm submit --backend batch can run", highlight=False)


def destroy(
    ctx: typer.Context,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask; needed where there is no terminal.")
    ] = False,
) -> None:
    """Delete the AWS stack and everything it made (not an existing bucket)."""
    settings = settings_from(ctx)
    name = settings.aws.stack_name
    if not yes and not _interactive():
        raise UsageError(
            f"ftm destroy deletes stack {name} and everything it made; without a terminal to ask on, "
            "pass --yes to confirm"
        )

    def confirm(what: str) -> bool:
        stderr.print(f"This deletes {escape(what)}.", highlight=False)
        return (
            typer.prompt(f"Type the stack's name ({name}) to go on", default="", show_default=False, err=True)
            == name
        )

    stack.destroy(settings.aws, confirm=None if yes else confirm, on_event=_say)
    stderr.print(
        f"[green]deleted stack {escape(name)}[/]. The aws.* settings it wrote now point at nothing; "
        "ftm deploy creates the stack anew and rewrites them.",
        highlight=False,
    )


def _say(message: str) -> None:
    stderr.print(f"  {escape(message)}", highlight=False)


def _interactive() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # stdin replaced or closed
        return False


def _report_deploy(
    result: stack.DeployResult,
    values: dict[str, Any],
    path: Path | None,
    settings: FtmSettings,
    root: str | None,
) -> None:
    if result.changed:
        stderr.print(
            f"[green]{result.action} stack {escape(result.stack_name)}[/] ({len(result.changes)} change(s))",
            highlight=False,
        )
    else:
        stderr.print(
            f"[green]stack {escape(result.stack_name)} is up to date[/]: nothing changed", highlight=False
        )
    for key, value in result.outputs.items():
        stderr.print(f"  {key} = {escape(str(value))}", highlight=False)
    if path is not None:
        stderr.print(f"wrote {len(values)} setting(s) to {escape(str(path))}", highlight=False)
    else:
        stderr.print("add these settings to ftm.toml (printed on stdout):", highlight=False)
    if root and "storage.root" not in values and settings.storage.root.rstrip("/") != root:
        stderr.print(
            f"[yellow]storage.root is {escape(settings.storage.root)}[/]: set storage.root = "
            f'"{escape(root)}" so that AWS Batch jobs and this machine share the stack\'s bucket',
            highlight=False,
        )
    stderr.print(
        "next: ftm image build (pushes the image, sets aws.image; --target llm for llm.serve sets "
        "aws.llm_image), ftm deploy again (the job definitions take them), then ftm doctor",
        highlight=False,
    )


def _toml(values: dict[str, Any]) -> str:
    import tomlkit

    document = tomlkit.document()
    for key, value in values.items():
        section, name = key.split(".", 1)
        if section not in document:
            document.add(section, tomlkit.table())
        document[section][name] = value  # type: ignore[index]
    return tomlkit.dumps(document)
