"""The batch backend: `ftm submit --backend batch` on moto's AWS Batch and S3 (the array job, its
environment, the jobs after it, the plan and the code package), a child run as AWS Batch would run
it, and `ftm watch`/`ftm cancel` over states that moto does not model, scripted by a Batch
stand-in on 127.0.0.1 (tests/batch_stand_in.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

import run_inputs
from batch_stand_in import BatchStandIn
from ftm import layout
from ftm.backends.aws_batch import (
    MAX_ARRAY_SIZE,
    MAX_DESCRIBE,
    array_chunks,
    attempt_reason,
    describe_chunks,
)
from ftm.cli import app, main
from ftm.map import records
from ftm.plan import read_plan
from ftm.runs.record import write_run
from ftm.schemas import RunRecord
from ftm.storage import Store
from map_inputs import QUARTER, copy_prefetch, prefetched, sample_firms, topic_rows, write_config

HOUR_MS = 3_600_000


# --- limits and reasons, without AWS -----------------------------------------------------------


def test_arrays_hold_at_most_10000_batches_and_describe_calls_100_ids() -> None:
    ids = [f"batch_{index:05d}" for index in range(2 * MAX_ARRAY_SIZE + 1)]
    chunks = array_chunks(ids)
    assert [len(chunk) for chunk in chunks] == [MAX_ARRAY_SIZE, MAX_ARRAY_SIZE, 1]
    assert [item for chunk in chunks for item in chunk] == ids  # plan order, nothing lost
    assert [len(chunk) for chunk in describe_chunks(ids[:250])] == [MAX_DESCRIBE, MAX_DESCRIBE, 50]


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        ({"statusReason": "Host EC2 (instance i-0abc) terminated."}, "Spot reclaim"),
        ({"statusReason": "Job attempt duration exceeded timeout"}, "timeout"),
        (
            {
                "statusReason": "Essential container in task exited",
                "container": {
                    "exitCode": 137,
                    "reason": "OutOfMemoryError: Container killed due to memory usage",
                },
            },
            "out of memory",
        ),
        ({"statusReason": "Essential container in task exited", "container": {"exitCode": 3}}, "user error"),
        (
            {
                "statusReason": "Task failed to start",
                "container": {"reason": "CannotPullContainerError: pull image manifest has been retried"},
            },
            "AWS could not run it: CannotPullContainerError",
        ),
    ],
)
def test_a_failed_attempt_is_told_by_its_cause(attempt: dict[str, Any], expected: str) -> None:
    assert attempt_reason(attempt).startswith(expected)


# --- moto: submit, the child, reduce as a job --------------------------------------------------


@pytest.fixture
def batch_stack(aws_endpoint: str) -> dict[str, str]:
    """The stack's outputs, made on moto through the Batch API (the template's own test deploys it)."""
    ec2, iam, batch = (boto3.client(name) for name in ("ec2", "iam", "batch"))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="ftm", Description="ftm", VpcId=vpc)["GroupId"]
    role = iam.create_role(RoleName="ftm-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="ftm")["InstanceProfile"]["Arn"]
    outputs = {}
    queues = {"gpu": "job_queue", "cpu": "cpu_job_queue", "llm": "llm_job_queue"}
    for kind, types in (("gpu", ["g4dn.xlarge"]), ("cpu", ["c6i.large"]), ("llm", ["g5.xlarge"])):
        environment = batch.create_compute_environment(
            computeEnvironmentName=f"ftm-{kind}",
            type="MANAGED",
            state="ENABLED",
            serviceRole=role,
            computeResources={
                "type": "SPOT",
                "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED",
                "minvCpus": 0,
                "maxvCpus": 16,
                "instanceTypes": types,
                "subnets": [subnet],
                "securityGroupIds": [group],
                "instanceRole": profile,
            },
        )["computeEnvironmentArn"]
        order = [{"order": 1, "computeEnvironment": environment}]
        queue = batch.create_job_queue(
            jobQueueName=f"ftm-{kind}", state="ENABLED", priority=1, computeEnvironmentOrder=order
        )["jobQueueArn"]
        outputs[queues[kind]] = queue
    for name in ("map", "cpu", "llm"):
        outputs[f"{name}_job_definition"] = batch.register_job_definition(
            jobDefinitionName=f"ftm-{name}",
            type="container",
            containerProperties={
                "image": "ftm:test",
                "resourceRequirements": [
                    {"type": "VCPU", "value": "4"},
                    {"type": "MEMORY", "value": "15000"},
                ],
            },
        )["jobDefinitionArn"]
    return outputs


@pytest.fixture
def batch_env(
    batch_stack: dict[str, str], s3_root: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """FTM_* settings for the batch backend on moto: the stack's outputs and an S3 root."""
    env = {f"FTM_AWS__{key.upper()}": value for key, value in batch_stack.items()}
    # The root is s3://BUCKET/PREFIX of the stack, as `ftm deploy` writes it (aws.prefix).
    env.update(FTM_STORAGE__ROOT=s3_root, FTM_STORAGE__ENDPOINT_URL=s3_endpoint, FTM_AWS__PREFIX="research")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prefetched(tmp_path_factory)


def _job(job_id: str) -> dict[str, Any]:
    return boto3.client("batch").describe_jobs(jobs=[job_id])["jobs"][0]


def _s3_store(batch_env: dict[str, str]) -> Store:
    return Store(batch_env["FTM_STORAGE__ROOT"], batch_env["FTM_STORAGE__ENDPOINT_URL"])


def _environment(job: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in job["container"]["environment"]}


def test_submit_on_batch_makes_an_array_job_and_a_child_writes_what_a_local_batch_writes(
    batch_env: dict[str, str], source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = write_config(tmp_path)
    store = copy_prefetch(source, _s3_store(batch_env))
    args = ["--config", str(config), "submit", "--quarter", str(QUARTER), "--batch-size", "6"]
    assert main([*args, "--backend", "batch", "--detach", "--json"]) == 0
    run = RunRecord.model_validate(json.loads(capsys.readouterr().out))

    plan = read_plan(store, QUARTER)
    assert plan is not None and [batch.batch_id for batch in plan] == ["batch_000", "batch_001"]
    parents = {job.split(":")[0] for job in run.job_ids.values()}
    assert len(parents) == 1 and set(run.job_ids) == {"batch_000", "batch_001"}
    parent = _job(parents.pop())
    assert parent["arrayProperties"]["size"] == 2
    command = parent["container"]["command"]
    assert command[:3] == ["map-batch", "--quarter", str(QUARTER)] and "--partial-ok" in command
    listing = command[command.index("--batches") + 1]
    assert store.read_json(listing) == ["batch_000", "batch_001"]  # child index → batch
    environment = _environment(parent)
    assert json.loads(environment["FTM_STORAGE"])["root"] == batch_env["FTM_STORAGE__ROOT"]
    assert json.loads(environment["FTM_MAP"])["firms_per_part"] == 2  # the submitter's settings
    assert store.exists(environment["FTM_CODE"]) and environment["FTM_CODE"] in (run.code or "")
    assert parent["timeout"] == {"attemptDurationSeconds": 3600}

    reduce_job, name_job = _job(run.follow_jobs["reduce"]), _job(run.follow_jobs["name"])
    assert reduce_job["dependsOn"] == [{"jobId": parent["jobId"]}]
    assert reduce_job["container"]["command"] == ["reduce", "--quarter", str(QUARTER)]
    assert reduce_job["jobQueue"] == batch_env["FTM_AWS__CPU_JOB_QUEUE"]
    assert name_job["dependsOn"] == [{"jobId": reduce_job["jobId"]}]
    assert run.estimated_cost_usd is not None and run.estimated_cost_usd > 0

    # The first child, as AWS Batch runs it: the job's command and environment, and the index.
    scratch = tmp_path / "container-tmp"  # the container's /tmp, where the code package unpacks
    scratch.mkdir()
    child_env = {**os.environ, **environment, "AWS_BATCH_JOB_ARRAY_INDEX": "0", "TMPDIR": str(scratch)}
    child_env = {name: value for name, value in child_env.items() if not name.startswith("FTM_AWS")}
    child = subprocess.run(
        [sys.executable, "-m", "ftm", *command], env=child_env, capture_output=True, text=True, timeout=600
    )
    assert child.returncode == 0, child.stderr[-3000:]
    sha = Path(environment["FTM_CODE"]).stem
    assert (scratch / "ftm-code" / sha / "ftm" / "__init__.py").is_file()  # it ran the uploaded code
    checkpoint = records.read_checkpoint(store, QUARTER, "batch_000")
    assert checkpoint is not None and checkpoint.finished

    # The same batch on a local root gives the same topics.
    local = copy_prefetch(source, Store(str(tmp_path / "local")))
    local.write_bytes(layout.batch_plan(QUARTER), store.read_bytes(layout.batch_plan(QUARTER)))
    local_args = ["--config", str(config), "map-batch", "--quarter", str(QUARTER), "--batch-id", "batch_000"]
    assert main([*local_args, "--root", local.root]) == 0
    assert topic_rows(store) == topic_rows(local) and topic_rows(local)


def test_resubmit_on_batch_runs_only_the_unfinished_batch_as_a_single_job(
    batch_env: dict[str, str], source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = write_config(tmp_path)
    store = copy_prefetch(source, _s3_store(batch_env))
    args = ["--config", str(config), "submit", "--quarter", str(QUARTER), "--backend", "batch", "--detach"]
    assert main([*args, "--batch-size", "6", "--no-name", "--json"]) == 0
    first = RunRecord.model_validate(json.loads(capsys.readouterr().out))
    assert set(first.follow_jobs) == {"reduce"}  # --no-name
    # batch_000 finished (as if its child ran); batch_001's child never ran.
    done = records.read_progress(store, QUARTER, "batch_000")
    assert done is not None
    checkpoint = {
        "batch_id": "batch_000",
        "attempt": 1,
        "completed_firm_ids": [],
        "part_files": [],
        "finished": True,
        "updated_at": "2026-01-01T00:00:00Z",
    }
    store.write_json(layout.batch_checkpoint(QUARTER, "batch_000"), checkpoint)
    assert main([*args, "--json"]) == 0
    second = RunRecord.model_validate(json.loads(capsys.readouterr().out))
    assert second.run_id == first.run_id
    job = _job(second.job_ids["batch_001"])
    assert "arrayProperties" not in job or not job["arrayProperties"].get("size")
    assert job["container"]["command"][3:6] == ["--batch-id", "batch_001", "--partial-ok"]
    assert second.job_ids["batch_000"] == first.job_ids["batch_000"]  # kept on record


def test_jobs_get_the_region_boto3_resolved_when_aws_region_is_unset(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow in the container does not ask the instance for its region and takes us-east-1, so
    a job must be told the region of its bucket: the one boto3 resolved at submit."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # the stack, its bucket and the jobs are there
    stack = request.getfixturevalue("batch_stack")  # on moto, like everything below
    bucket = "ftm-test-eu-west-1"
    where = {"LocationConstraint": "eu-west-1"}
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration=where)
    monkeypatch.setenv("FTM_STORAGE__ROOT", f"s3://{bucket}/ftm")
    monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", request.getfixturevalue("s3_endpoint"))
    for key, value in stack.items():
        monkeypatch.setenv(f"FTM_AWS__{key.upper()}", value)
    assert main(["reduce", "--quarter", str(QUARTER), "--backend", "batch", "--detach"]) == 0
    job = boto3.client("batch").describe_jobs(jobs=[capsys.readouterr().out.strip()])["jobs"][0]
    assert json.loads(_environment(job)["FTM_STORAGE"])["region"] == "eu-west-1"


def test_reduce_and_name_run_as_jobs_and_wrds_prefetch_is_refused_on_batch(
    batch_env: dict[str, str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTM_AWS__REGION", "us-east-1")
    assert main(["reduce", "--quarter", str(QUARTER), "--backend", "batch", "--detach"]) == 0
    job = _job(capsys.readouterr().out.strip())
    assert job["container"]["command"] == ["reduce", "--quarter", str(QUARTER)]
    assert job["jobQueue"] == batch_env["FTM_AWS__CPU_JOB_QUEUE"]
    assert "FTM_REDUCE" in _environment(job) and "FTM_CODE" in _environment(job)
    # The job's storage is in the stack's region, whatever the submitting machine's default.
    assert json.loads(_environment(job)["FTM_STORAGE"])["region"] == "us-east-1"

    assert (
        main(["name", "--quarter", str(QUARTER), "--what", "themes", "--backend", "batch", "--detach"]) == 0
    )
    job = _job(capsys.readouterr().out.strip())
    assert job["container"]["command"] == ["name", "--quarter", str(QUARTER), "--what", "themes"]
    assert job["jobQueue"] == batch_env["FTM_AWS__CPU_JOB_QUEUE"]  # an external endpoint: a CPU will do
    assert main(["name", "--quarter", str(QUARTER), "--serve", "--backend", "batch", "--detach"]) == 0
    job = _job(capsys.readouterr().out.strip())
    assert job["container"]["command"] == ["name", "--quarter", str(QUARTER), "--serve", "--what", "all"]
    assert job["jobQueue"] == batch_env["FTM_AWS__LLM_JOB_QUEUE"]  # its own vLLM: a 24 GB GPU
    assert job["jobDefinition"] == batch_env["FTM_AWS__LLM_JOB_DEFINITION"]
    assert json.loads(_environment(job)["FTM_LLM"])["serve"] is True

    assert main(["prefetch", str(QUARTER), "--backend", "batch"]) == 2
    assert "Duo approval" in capsys.readouterr().err
    assert main(["prefetch", str(QUARTER), "--input", "calls.jsonl", "--backend", "batch"]) == 2
    assert "s3://" in capsys.readouterr().err
    # The README's own example: an input outside the prefix, which the jobs' role cannot read.
    bucket = batch_env["FTM_STORAGE__ROOT"].split("/")[2]
    outside = ["prefetch", str(QUARTER), "--input", f"s3://{bucket}/raw/calls.jsonl.gz", "--backend", "batch"]
    assert main(outside) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"reads only s3://{bucket}/research/" in err and f"s3://{bucket}/research/raw/calls.jsonl.gz" in err
    )


def test_files_prefetch_reads_its_input_from_s3_and_runs_as_a_job(
    batch_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ftm import sample

    store = _s3_store(batch_env)
    store.write_bytes("raw/calls.jsonl.gz", Path(sample.PATH).read_bytes())
    uri = store.uri("raw/calls.jsonl.gz")
    config = write_config(tmp_path)
    firms = ",".join(sample_firms(2))
    args = ["--config", str(config), "prefetch", str(QUARTER), "--input", uri, "--firms", firms]
    assert main([*args, "--backend", "batch", "--detach"]) == 0
    job = _job(capsys.readouterr().out.strip())
    assert job["container"]["command"][:6] == ["prefetch", str(QUARTER), "--source", "files", "--input", uri]
    assert main(args) == 0  # what that job runs, here: the files source reads s3://
    manifest = store.read_json(layout.prefetch_manifest(QUARTER))
    assert manifest["n_firms"] == 2 and manifest["source"]["path"] == uri


def test_batch_backend_refuses_a_local_root_and_a_missing_stack(
    batch_stack: dict[str, str], source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = copy_prefetch(source, Store(str(tmp_path / "root"))).root
    args = ["submit", "--quarter", str(QUARTER), "--backend", "batch", "--root", root]
    assert main(args) == 2
    assert "aws.job_queue" in capsys.readouterr().err  # nothing deployed in these settings
    os.environ.update({f"FTM_AWS__{key.upper()}": value for key, value in batch_stack.items()})
    try:
        assert main(args) == 2
        assert "storage root on S3" in capsys.readouterr().err
    finally:
        for key in batch_stack:
            os.environ.pop(f"FTM_AWS__{key.upper()}")


# --- the stand-in: states moto does not model --------------------------------------------------


@pytest.fixture
def stand_in(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchStandIn]:
    server = BatchStandIn()
    monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", server.url)  # Batch here; EC2 (prices) on moto
    yield server
    server.stop()


def _scripted_run(stand_in: BatchStandIn, tmp_path: Path, children: int) -> tuple[Store, RunRecord, str]:
    """A run of `children` batches in one array job, with a reduce job after it, on a local root."""
    store = Store(str(tmp_path / "root"))
    parent = stand_in.add_job(size=children, retryStrategy={"attempts": 3})
    reduce_job = stand_in.add_job(dependsOn=[{"jobId": parent}])
    batch_ids = [layout.batch_id(index) for index in range(children)]
    lines = "".join(json.dumps({"batch_id": b, "firm_ids": [f"F{b}"]}) + "\n" for b in batch_ids)
    store.write_bytes(layout.batch_plan(QUARTER), lines.encode())
    for batch in batch_ids:
        records.mark_pending(store, QUARTER, batch, 1)
    run = RunRecord(
        run_id="2016Q4-20260101T000000Z-test",
        quarter=str(QUARTER),
        backend="batch",
        batch_ids=batch_ids,
        job_ids={batch: f"{parent}:{index}" for index, batch in enumerate(batch_ids)},
        follow_jobs={"reduce": reduce_job},
        settings={"map": {"heartbeat_s": 1.0}},
        submitted_at=records.now(),
    )
    write_run(store, run)
    return store, run, parent


def _watch_json(store: Store) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["watch", "--root", store.root, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_watch_shows_capacity_waits_spot_retries_and_out_of_memory_failures_with_cost(
    stand_in: BatchStandIn, tmp_path: Path
) -> None:
    store, run, parent = _scripted_run(stand_in, tmp_path, children=4)
    now_ms = int(time.time() * 1000)
    capacity = "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - no g4dn.xlarge Spot capacity in us-east-1a"
    reclaim = {
        "statusReason": "Host EC2 (instance i-0abc) terminated.",
        "startedAt": now_ms - 3 * HOUR_MS,
        "stoppedAt": now_ms - 2 * HOUR_MS,
    }
    oom = {
        "statusReason": "Essential container in task exited",
        "container": {"exitCode": 137, "reason": "OutOfMemoryError: Container killed due to memory usage"},
        "startedAt": now_ms - HOUR_MS,
        "stoppedAt": now_ms,
    }
    stand_in.set(f"{parent}:0", status="RUNNABLE", statusReason=capacity)
    stand_in.set(f"{parent}:1", status="RUNNABLE", attempts=[reclaim], retryStrategy={"attempts": 3})
    stand_in.set(
        f"{parent}:2", status="FAILED", attempts=[oom], statusReason="Essential container in task exited"
    )
    stand_in.set(f"{parent}:3", status="RUNNING", startedAt=now_ms - 2 * HOUR_MS)

    snapshot = _watch_json(store)
    batches = {batch["batch_id"]: batch for batch in snapshot["batches"]}
    assert batches["batch_000"]["state"] == "pending" and capacity in batches["batch_000"]["message"]
    assert batches["batch_001"]["state"] == "retrying" and batches["batch_001"]["attempts"] == 2
    assert batches["batch_001"]["message"].startswith("Spot reclaim: Host EC2")
    assert batches["batch_002"]["state"] == "failed" and batches["batch_002"]["attempts"] == 1  # not retried
    assert batches["batch_002"]["message"].startswith("out of memory")
    assert batches["batch_003"]["state"] == "running"
    price = 0.00001  # moto's Spot price for every type
    assert batches["batch_001"]["cost_usd"] == pytest.approx(1 * price)
    assert batches["batch_003"]["cost_usd"] == pytest.approx(2 * price, rel=0.01)
    assert snapshot["totals"]["cost_usd"] == pytest.approx(4 * price, rel=0.01)
    assert snapshot["followers"]["reduce"]["state"] == "queued" and not snapshot["ended"]

    table = CliRunner().invoke(app, ["watch", "--root", store.root, "--json"], env={"COLUMNS": "250"})
    assert table.exit_code == 0
    stand_in.set(f"{parent}:0", status="SUCCEEDED", attempts=[{"startedAt": now_ms, "stoppedAt": now_ms}])
    stand_in.set(
        f"{parent}:1", status="SUCCEEDED", attempts=[reclaim, {"startedAt": now_ms, "stoppedAt": now_ms}]
    )
    stand_in.set(f"{parent}:3", status="SUCCEEDED", attempts=[{"startedAt": now_ms, "stoppedAt": now_ms}])
    stand_in.set(run.follow_jobs["reduce"], status="FAILED", statusReason="Dependent Job failed")
    for batch in ("batch_000", "batch_001", "batch_003"):
        records.mark_ended(store, QUARTER, batch, "succeeded", None)
    result = CliRunner().invoke(
        app, ["watch", "--root", store.root, "--interval", "0.2"], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 3  # an out-of-memory batch and a failed reduce
    assert "out of memory" in result.output and "reduce failed" in result.output
    assert "cost" in result.output


def test_watch_table_shows_the_cost_column_and_the_runnable_reason(
    stand_in: BatchStandIn, tmp_path: Path
) -> None:
    store, _, parent = _scripted_run(stand_in, tmp_path, children=2)
    stand_in.set(
        f"{parent}:0", status="RUNNABLE", statusReason="MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - x"
    )
    stand_in.set(f"{parent}:1", status="RUNNING", startedAt=int(time.time() * 1000) - HOUR_MS)
    from rich.console import Console

    from ftm.backends.aws_batch import AwsBatchBackend
    from ftm.commands.watch import render
    from ftm.runs.state import RunObserver
    from ftm.settings import load_settings

    run = RunRecord.model_validate(store.read_json(layout.run_record("2016Q4-20260101T000000Z-test")))
    snapshot = RunObserver(store, run, AwsBatchBackend(load_settings())).snapshot()
    console = Console(width=250, record=True)
    console.print(render(snapshot))
    text = console.export_text()
    assert "cost" in text and "$0.00" in text and "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT" in text
    assert "then reduce: queued" in text


def test_status_lists_children_in_pages_and_describes_at_most_100_through_throttling(
    stand_in: BatchStandIn, tmp_path: Path
) -> None:
    store, _, parent = _scripted_run(stand_in, tmp_path, children=250)
    started = int(time.time() * 1000) - HOUR_MS
    for index in range(250):
        stand_in.set(f"{parent}:{index}", status="RUNNING", startedAt=started)
    stand_in.throttle["describejobs"] = 2  # Batch says TooManyRequestsException twice
    snapshot = _watch_json(store)
    assert [batch["state"] for batch in snapshot["batches"]] == ["running"] * 250
    described = [body["jobs"] for op, body in stand_in.calls if op == "describejobs"]
    assert max(len(ids) for ids in described) <= MAX_DESCRIBE
    assert stand_in.throttle["describejobs"] == 0  # both throttled calls were retried
    assert snapshot["totals"]["cost_usd"] > 0


def test_batch_retries_a_task_that_failed_to_start_and_never_a_user_error(
    stand_in: BatchStandIn, s3_root: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in applies the submitted retry strategy as AWS Batch does (job_retries.html):
    the first matching rule decides, none matching means a retry, at most `attempts` attempts."""
    from ftm.backends.aws_batch import AwsBatchBackend
    from ftm.settings import load_settings

    for key in ("cpu_job_queue", "cpu_job_definition"):
        monkeypatch.setenv(f"FTM_AWS__{key.upper()}", f"ftm-{key}")
    monkeypatch.setenv("FTM_STORAGE__ROOT", s3_root)
    monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", s3_endpoint)
    backend = AwsBatchBackend(load_settings())
    job = backend.submit_command(["reduce", "--quarter", str(QUARTER)], kind="cpu").job_id
    pull = "CannotPullContainerError: pull image manifest has been retried 5 time(s): i/o timeout"
    assert stand_in.end_attempt(job, statusReason="Task failed to start", container={"reason": pull}) == (
        "RUNNABLE"
    )
    secrets = "ResourceInitializationError: unable to pull secrets or registry auth"
    assert stand_in.end_attempt(job, statusReason="Task failed to start", container={"reason": secrets}) == (
        "RUNNABLE"
    )
    status = backend.job_status(job)
    assert status is not None and status.state == "retrying" and status.attempts == 3
    # watch shows why each retry happened, the latest first.
    assert status.reason.startswith("AWS could not run it: ResourceInitializationError")
    assert "CannotPullContainerError" in status.reason and "attempt 3 of 3 queued" in status.reason
    assert stand_in.end_attempt(job, statusReason="Host EC2 (instance i-0abc) terminated.") == "FAILED"

    for stopped in (
        {"statusReason": "Essential container in task exited", "container": {"exitCode": 1}},  # ftm's error
        {"statusReason": "Essential container in task exited", "container": {"reason": "AGENT"}},
        {"statusReason": "Essential container in task exited", "container": {"reason": pull}},
        {"statusReason": "Host EC2 (instance i-0abc) terminated."},
    ):
        job = backend.submit_command(["reduce", "--quarter", str(QUARTER)], kind="cpu").job_id
        retried = stand_in.end_attempt(job, **stopped) == "RUNNABLE"
        assert retried == ("exitCode" not in stopped.get("container", {})), stopped


def test_settings_too_long_for_a_jobs_overrides_travel_beside_the_code_to_the_container(
    stand_in: BatchStandIn,
    s3_root: str,
    s3_endpoint: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ECS caps a task's overrides at 8,192 characters (the stand-in fails a job over it, as AWS
    does once the job starts); 600 extra stop words are longer, and still reach the container."""
    words = [f"boilerplate{index:04d}" for index in range(600)]
    config = tmp_path / "ftm.toml"
    config.write_text(f"[preprocess]\nextra_stop_words = {json.dumps(words)}\n")
    for key in ("cpu_job_queue", "cpu_job_definition"):
        monkeypatch.setenv(f"FTM_AWS__{key.upper()}", f"ftm-{key}")
    monkeypatch.setenv("FTM_STORAGE__ROOT", s3_root)
    monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("FTM_AWS__PREFIX", "research")  # the stack's prefix: the root's
    store = Store(s3_root, s3_endpoint)
    args = ["--config", str(config), "prefetch", str(QUARTER), "--input", store.uri("raw/calls.jsonl.gz")]
    assert main([*args, "--backend", "batch", "--detach"]) == 0
    job = stand_in.jobs[capsys.readouterr().out.strip()]
    assert job["status"] == "SUBMITTED", job.get("statusReason")  # not failed for its overrides
    environment = {
        item["name"]: item["value"] for item in job["submitted"]["containerOverrides"]["environment"]
    }
    assert "FTM_PREPROCESS" not in environment and store.exists(environment["FTM_JOB_SETTINGS"])

    # The container, as Batch starts it: the job's environment, then `ftm` (here `config --json`).
    child_env = {name: value for name, value in os.environ.items() if not name.startswith("FTM_")}
    child_env.update(environment, TMPDIR=str(tmp_path))
    command = [sys.executable, "-m", "ftm", "config", "--json"]
    child = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    shown = json.loads(child.stdout)
    assert shown["preprocess.extra_stop_words"]["value"] == words
    assert shown["source.path"]["value"] == store.uri("raw/calls.jsonl.gz")
    # Checked by its hash, like the code: replaced bytes are refused.
    store.write_bytes(environment["FTM_JOB_SETTINGS"], b'{"FTM_PREPROCESS": "{}"}')
    child = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 1 and "damaged or was replaced" in child.stderr


def test_cancel_terminates_the_arrays_and_the_jobs_after_them(stand_in: BatchStandIn, tmp_path: Path) -> None:
    store, run, parent = _scripted_run(stand_in, tmp_path, children=3)
    stand_in.set(f"{parent}:0", status="RUNNING")
    result = CliRunner().invoke(app, ["cancel", run.run_id, "--root", store.root])
    assert result.exit_code == 0, result.output
    terminated = {body["jobId"] for op, body in stand_in.calls if op == "terminatejob"}
    assert terminated == {parent, run.follow_jobs["reduce"]}
    assert all(stand_in.jobs[f"{parent}:{index}"]["status"] == "FAILED" for index in range(3))


def test_submit_on_batch_follows_the_run_to_its_end_without_detach(
    batch_env: dict[str, str], source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """moto ends every job at once, without running it: the children never wrote a record, so
    the batches end unstarted (exit 3), and the jobs after the map are shown with their state."""
    config = write_config(tmp_path)
    copy_prefetch(source, _s3_store(batch_env))
    args = ["--config", str(config), "submit", "--quarter", str(QUARTER), "--batch-size", "6"]
    assert main([*args, "--backend", "batch"]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "estimated Spot cost" in err and "ftm cancel" in err
    assert "batch_000 stopped" in err and "reduce succeeded" in err and "name succeeded" in err


def test_run_on_batch_submits_each_quarters_jobs_after_its_map_and_trends_after_every_quarter(
    batch_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`ftm run RANGE --backend batch`: prefetched here into the S3 root, then per quarter a map
    array, a reduce job after it and a name job after that, and one trends job after both
    quarters' jobs, and the range's report after the trends; run again once the maps are
    finished, it submits no map."""
    (tmp_path / "ftm.toml").write_text(run_inputs.CONFIG)
    run_inputs.write_input(tmp_path / "input.jsonl.gz")
    args = ["--config", str(tmp_path / "ftm.toml"), "run", run_inputs.RANGE, "--backend", "batch"]
    args += ["--input", str(tmp_path / "input.jsonl.gz"), "--batch-size", "5"]
    assert main(args) == 0
    said = capsys.readouterr()
    trends_job = _job(said.out.split()[-1])
    report_job = _job(re.search(r"report as job (\S+)", " ".join(said.err.split())).group(1))
    assert report_job["container"]["command"] == ["report", run_inputs.RANGE]
    assert report_job["dependsOn"] == [{"jobId": trends_job["jobId"]}]
    store = _s3_store(batch_env)
    last = []
    for quarter in run_inputs.QUARTERS:
        assert store.exists(layout.prefetch_manifest(quarter))
        runs = [path for path in store.list("runs") if Path(path).name.startswith(str(quarter))]
        run = RunRecord.model_validate(store.read_json(runs[0]))
        (array,) = {job.split(":")[0] for job in run.job_ids.values()}
        reduce_job, name_job = _job(run.follow_jobs["reduce"]), _job(run.follow_jobs["name"])
        assert reduce_job["dependsOn"] == [{"jobId": array}]
        assert reduce_job["container"]["command"] == ["reduce", "--quarter", str(quarter)]
        assert name_job["dependsOn"] == [{"jobId": reduce_job["jobId"]}]
        last += [reduce_job["jobId"], name_job["jobId"]]
    assert trends_job["container"]["command"] == ["trends", run_inputs.RANGE]
    assert trends_job["dependsOn"] == [{"jobId": job} for job in last]
    assert trends_job["jobQueue"] == batch_env["FTM_AWS__CPU_JOB_QUEUE"]
    assert "FTM_TRENDS" in _environment(trends_job)

    # The maps finished (as the array's children would have left them): reduce and name again
    # only, since no themes are there yet, and no map job.
    for quarter in run_inputs.QUARTERS:
        for batch in read_plan(store, quarter) or []:
            checkpoint = records.read_checkpoint(store, quarter, batch.batch_id)
            done = {"batch_id": batch.batch_id, "attempt": 1, "completed_firm_ids": batch.firm_ids}
            done |= {"part_files": [], "finished": True, "updated_at": "2026-01-01T00:00:00Z"}
            assert checkpoint is None
            store.write_json(layout.batch_checkpoint(quarter, batch.batch_id), done)
    assert main(args) == 0
    again = _job(capsys.readouterr().out.split()[-1])
    follow = [_job(job["jobId"]) for job in again["dependsOn"]]
    commands = [job["container"]["command"][:3] for job in follow]
    quarters = run_inputs.QUARTERS
    steps = [[step, "--quarter", str(quarter)] for quarter in quarters for step in ("reduce", "name")]
    assert commands == steps
