"""The batch backend: AWS Batch array jobs on Spot GPUs, each child running `ftm map-batch`.

`submit` puts the current ftm code on S3 as a content-addressed package (the image's `ftm` runs
it, so a code change needs no image rebuild), writes the batch ids of each array job beside the
plan, and submits one array job per 10,000 batches; the child index picks the batch. A Spot
reclaim (`Host EC2*`) and an attempt that never started ftm are retried by Batch (RETRY_RULES);
ftm's own failures are not, since a re-run of a user error fails the same way and costs money.
Reduce and name follow as jobs that depend on the arrays. Settings too long for a job's
overrides travel beside the code package (MAX_OVERRIDES_CHARS).

`status` reads the array parents' `statusSummary` (one DescribeJobs per 100 parents) and lists
children (`list_jobs(arrayJobId=…)`) only for states whose counts changed or that live; a child
is described (attempts, reasons) only when its summary changed. The SDK's standard retries back
off with jitter when Batch throttles. Cost is instance time so far × the Spot price: one GPU
job per instance, since the job definitions ask for the whole GPU of the smallest type.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ftm import __version__, layout
from ftm.aws import clients, code_package
from ftm.backends.base import MAP_BATCH_SECTIONS, BackendStatus, JobState, JobStatus
from ftm.errors import FtmError, UsageError
from ftm.quarters import Quarter
from ftm.schemas import Batch, RunRecord
from ftm.settings import CODE_ENV, ENV_PREFIX, JOB_SETTINGS_ENV, FtmSettings, section_environment
from ftm.storage import Store

# AWS Batch's own limits (service_limits.html, API_DescribeJobs, API_SubmitJob); moto enforces
# none of them, so ftm does. SubmitJob's 30 KiB is never reached: the overrides, the only long
# part of a submission, are capped far below it (MAX_OVERRIDES_CHARS).
MAX_ARRAY_SIZE = 10_000
MAX_DESCRIBE = 100
MAX_DEPENDENCIES = 20
# ECS caps a task's overrides at 8,192 characters, JSON formatting included (RunTask,
# `overrides`), and Batch makes them of a job's container overrides: SubmitJob takes longer ones
# and the job then fails ("Container Overrides length must be at most 8192"). Batch adds the
# container's name and its own variables (AWS_BATCH_JOB_ID with the array index,
# AWS_BATCH_JQ_NAME and AWS_BATCH_CE_NAME of up to 128 characters each, the attempt, the index):
# 1,024 characters are left for them.
MAX_OVERRIDES_CHARS = 8192 - 1024
LIST_PAGE = 1000

# What Batch retries (job_retries.html: at most 5 rules, the first that matches decides, a
# trailing * matches any rest): a Spot reclaim, and an attempt that never ran ftm, as AWS's own
# example has it: the task failed to start (the image pull, ECS setting up secrets or logs:
# CannotPullContainerError, ResourceInitializationError), a pull error reported otherwise, an
# ECS agent error. Never ftm's own exit: a re-run of a user error fails the same way and costs
# money. Without the last rule Batch retries every failure that no rule matches.
RETRY_RULES = [
    {"onStatusReason": "Host EC2*", "action": "RETRY"},
    {"onStatusReason": "Task failed to start", "action": "RETRY"},
    {"onReason": "CannotPullContainerError*", "action": "RETRY"},
    {"onReason": "AGENT", "action": "RETRY"},
    {"onReason": "*", "action": "EXIT"},
]
# The settings each command's job runs with, as FTM_* variables; the rest keep their defaults.
SECTIONS = {
    "map-batch": MAP_BATCH_SECTIONS,
    "reduce": ("storage", "reduce"),
    "name": ("storage", "llm"),
    "prefetch": ("storage", "source", "preprocess", "prefetch"),
    "trends": ("storage", "trends"),
    "report": ("storage",),
}
# Where each kind of job runs: (queue, job definition), as aws.* settings that `ftm deploy` writes.
JOB_KINDS = {
    "map": ("job_queue", "map_job_definition"),  # Spot GPU
    "llm": ("llm_job_queue", "llm_job_definition"),  # Spot GPUs of 24 GB, for a vLLM server
    "cpu": ("cpu_job_queue", "cpu_job_definition"),
}
FINAL = ("SUCCEEDED", "FAILED")
# Children not yet scheduled: waiting for their dependencies or the queue. Not listed: a fresh
# array of 10,000 would cost 10 calls a look for nothing, and a child never returns to these.
UNSTARTED = ("SUBMITTED", "PENDING")
# What ftm's own exit codes mean, for a failed attempt's reason (errors.py).
EXIT_MEANINGS = {
    1: "an error",
    2: "a usage error",
    3: "firms failed or the circuit breaker tripped",
    4: "settings or credentials",
    130: "interrupted",
}


def array_chunks(batch_ids: Sequence[str]) -> list[list[str]]:
    """Batch ids in groups of at most MAX_ARRAY_SIZE, one array job each, in plan order."""
    return _chunks(batch_ids, MAX_ARRAY_SIZE)


def describe_chunks(job_ids: Sequence[str]) -> list[list[str]]:
    return _chunks(job_ids, MAX_DESCRIBE)


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def require_deployed(settings: FtmSettings, *keys: str) -> None:
    """Refuses, before anything is written, when the stack's outputs are not in the settings."""
    missing = [key for key in keys if not getattr(settings.aws, key)]
    if missing:
        names = ", ".join(f"aws.{key}" for key in missing)
        raise UsageError(
            f"the batch backend needs {names}: run `ftm deploy` once (it writes them to ftm.toml), "
            f"or set them (FTM_AWS__{missing[0].upper()}); `ftm doctor` checks the set-up"
        )


def require_s3_storage(store: Store) -> None:
    if not store.is_s3:
        raise UsageError(
            f"the batch backend needs the storage root on S3, where its containers can read it, not "
            f"{store.uri()}: set storage.root to s3://BUCKET/PREFIX (ftm deploy printed it), or use "
            "--backend local"
        )


@dataclass(frozen=True)
class Submitted:
    """A job ftm submitted."""

    job_id: str
    size: int  # children of an array job; 1 for a single job


class AwsBatchBackend:
    name = "batch"

    def __init__(self, settings: FtmSettings, *, reduce: bool = True, name: bool = True):
        self.settings = settings
        self.follow = {"reduce": reduce, "name": name and reduce}
        self._client: Any = None
        self._price: float | None | bool = False  # False: not looked up yet
        self._children: dict[str, _Child] = {}  # job id (array child or plain) → its last look
        self._settled: dict[tuple[str, str], int] = {}  # (parent, final status) → children listed

    # --- submit --------------------------------------------------------------------------------

    def check_submit(self) -> None:
        """Refuses what `submit` cannot do: a stack not deployed, a storage root not on S3."""
        require_deployed(self.settings, *JOB_KINDS["map"])
        if self.follow["reduce"]:
            require_deployed(self.settings, *JOB_KINDS["cpu"])
        if self.follow["name"]:
            require_deployed(self.settings, *JOB_KINDS[name_kind(self.settings)])
        require_s3_storage(Store.from_settings(self.settings.storage))

    def submit(self, run: RunRecord, batches: list[Batch]) -> RunRecord:
        self.check_submit()
        store = Store.from_settings(self.settings.storage)
        code = _upload_code(store)
        quarter = Quarter.parse(run.quarter)
        chunks = array_chunks([batch.batch_id for batch in batches])
        if len(chunks) > MAX_DEPENDENCIES and self.follow["reduce"]:
            raise UsageError(
                f"{len(chunks)} array jobs are more than the {MAX_DEPENDENCIES} a reduce job can wait "
                "for: use a larger --batch-size"
            )
        stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
        job_ids: dict[str, str] = {}
        arrays: list[str] = []
        for number, chunk in enumerate(chunks):
            listing = layout.array_batches(quarter, f"{run.run_id}-{stamp}-{number}")
            store.write_json(listing, chunk)
            job = self.submit_job(
                _map_command(quarter, chunk, listing),
                name=f"ftm-map-{run.run_id}-{number}",
                kind="map",
                code=code,
                size=len(chunk),
                run_id=run.run_id,
            )
            arrays.append(job.job_id)
            if job.size == 1:
                job_ids[chunk[0]] = job.job_id
            else:
                job_ids.update({batch: f"{job.job_id}:{index}" for index, batch in enumerate(chunk)})
        followers: dict[str, str] = {}
        if self.follow["reduce"]:
            followers["reduce"] = self.submit_job(
                ["reduce", "--quarter", str(quarter)],
                name=f"ftm-reduce-{run.run_id}",
                kind="cpu",
                code=code,
                depends_on=arrays,
                run_id=run.run_id,
            ).job_id
        if self.follow["name"]:
            followers["name"] = self.submit_job(
                name_command(self.settings, quarter),
                name=f"ftm-name-{run.run_id}",
                kind=name_kind(self.settings),
                code=code,
                depends_on=[followers["reduce"]],
                run_id=run.run_id,
            ).job_id
        firms = sum(len(batch.firm_ids) for batch in batches)
        return run.model_copy(
            update={
                "job_ids": {**run.job_ids, **job_ids},
                "follow_jobs": followers,
                "code": f"ftm {__version__} {store.uri(code)}",
                "image": self.settings.aws.image or _default_image(self.settings),
                "estimated_cost_usd": self.estimate_cost(firms),
            }
        )

    def submit_job(
        self,
        command: list[str],
        *,
        name: str,
        kind: str,
        code: str,
        size: int = 1,
        depends_on: Sequence[str] = (),
        run_id: str | None = None,
    ) -> Submitted:
        """Submits one job (an array job when size > 1) running `ftm <command>` in the image, on
        the queue and job definition of its kind (JOB_KINDS), with the settings its command
        reads (SECTIONS) and the code package `code` (a path under the storage root)."""
        queue_key, definition_key = JOB_KINDS[kind]
        require_deployed(self.settings, queue_key, definition_key)
        queue = getattr(self.settings.aws, queue_key)
        definition = getattr(self.settings.aws, definition_key)
        # The jobs' storage is in the region the jobs run in: aws.region, else the one boto3
        # resolved here (AWS_REGION, the profile). pyarrow in the container would otherwise take
        # us-east-1, as it does not ask the instance metadata for the region.
        storage = self.settings.storage
        region = self.settings.aws.region or self._batch().meta.region_name
        if storage.region is None and region:
            storage = storage.model_copy(update={"region": region})
        job_settings = self.settings.model_copy(update={"storage": storage})
        environment = {**section_environment(job_settings, SECTIONS[command[0]]), CODE_ENV: code}
        overrides = _overrides(command, environment)
        if len(json.dumps(overrides)) > MAX_OVERRIDES_CHARS:
            # The settings go beside the code package instead, all but storage, which the
            # container needs to fetch them (and which is short).
            kept = {f"{ENV_PREFIX}STORAGE", CODE_ENV}
            shipped = {key: value for key, value in environment.items() if key not in kept}
            path = code_package.upload_settings(Store.from_settings(storage), shipped)
            environment = {key: environment[key] for key in kept} | {JOB_SETTINGS_ENV: path}
            overrides = _overrides(command, environment)
        length = len(json.dumps(overrides))
        if length > MAX_OVERRIDES_CHARS:
            raise FtmError(
                f"the job's command is too long for AWS Batch: {length:,} characters of container "
                f"overrides, above the {MAX_OVERRIDES_CHARS:,} that ECS takes with what Batch adds; "
                "name fewer firms (--firms) or run it here"
            )
        aws_settings = self.settings.aws
        request: dict[str, Any] = {
            "jobName": _job_name(name),
            "jobQueue": queue,
            "jobDefinition": definition,
            "containerOverrides": overrides,
            "retryStrategy": {"attempts": aws_settings.spot_attempts, "evaluateOnExit": RETRY_RULES},
            "timeout": {"attemptDurationSeconds": aws_settings.job_timeout_s},
            "propagateTags": True,
        }
        if run_id:
            request["tags"] = {"ftm-run": run_id}
        if size > 1:
            if size > MAX_ARRAY_SIZE:
                raise ValueError(f"an array job holds at most {MAX_ARRAY_SIZE} children, not {size}")
            request["arrayProperties"] = {"size": size}
        if depends_on:
            if len(depends_on) > MAX_DEPENDENCIES:
                raise ValueError(f"a job depends on at most {MAX_DEPENDENCIES} jobs, not {len(depends_on)}")
            request["dependsOn"] = [{"jobId": job} for job in depends_on]
        try:
            reply = self._batch().submit_job(**request)
        except Exception as error:
            raise clients.explain(error, f"submitting {request['jobName']} to {queue}") from None
        return Submitted(job_id=reply["jobId"], size=size)

    def submit_command(self, command: list[str], *, kind: str, depends_on: Sequence[str] = ()) -> Submitted:
        """Runs one ftm command as an AWS Batch job in the image, with this machine's ftm code,
        once the jobs of `depends_on` have succeeded."""
        store = Store.from_settings(self.settings.storage)
        require_s3_storage(store)
        require_deployed(self.settings, *JOB_KINDS[kind])
        name = f"ftm-{command[0]}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
        return self.submit_job(command, name=name, kind=kind, code=_upload_code(store), depends_on=depends_on)

    def job_status(self, job_id: str) -> JobStatus | None:
        """A job's state, attempts, reason and cost; None when AWS Batch does not know it."""
        job = self.describe([job_id]).get(job_id)
        return None if job is None else _Child.of(job).status(self.price_per_hour(), time.time())

    def estimate_cost(self, firms: int) -> float | None:
        """Instance hours at aws.firms_per_instance_hour × the Spot price; None without a price."""
        price = self.price_per_hour()
        if price is None:
            return None
        return firms / self.settings.aws.firms_per_instance_hour * price

    def price_per_hour(self) -> float | None:
        """The Spot price of the cheapest configured GPU type now (the median of its zones)."""
        if self._price is False:
            self._price = spot_price(self.settings)
        return self._price  # type: ignore[return-value]

    # --- status --------------------------------------------------------------------------------

    def status(self, run: RunRecord) -> BackendStatus:
        parents = sorted({job.split(":")[0] for job in run.job_ids.values()})
        followers = dict(run.follow_jobs)
        described = self.describe([*parents, *followers.values()])
        price = self.price_per_hour()
        now = time.time()
        batch_of = {job: batch for batch, job in run.job_ids.items()}
        jobs: dict[str, JobStatus] = {}
        active = False
        for parent_id in parents:
            parent = described.get(parent_id)
            if parent is None:  # Batch forgets jobs some days after they end
                continue
            active = active or parent["status"] not in FINAL
            if parent.get("arrayProperties", {}).get("size"):
                self._refresh_children(parent)
            else:  # one batch as a plain job
                self._children[parent_id] = _Child.of(parent)
        for job_id, batch in batch_of.items():
            if job_id in self._children:
                jobs[batch] = self._children[job_id].status(price, now)
        follower_states = {}
        for what, job_id in followers.items():
            job = described.get(job_id)
            if job is not None:
                active = active or job["status"] not in FINAL
                follower_states[what] = _Child.of(job).status(price, now)
        return BackendStatus(active=active, jobs=jobs, followers=follower_states)

    def describe(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """DescribeJobs in chunks of 100 ids (the API's limit)."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in describe_chunks(list(dict.fromkeys(job_ids))):
            try:
                reply = self._batch().describe_jobs(jobs=chunk)
            except Exception as error:
                raise clients.explain(error, "reading the run's jobs from AWS Batch") from None
            found.update({job["jobId"]: job for job in reply.get("jobs", [])})
        return found

    def _refresh_children(self, parent: dict[str, Any]) -> None:
        """Lists the children of the states that can still change, and describes those whose
        summary changed since the last look (for their attempts)."""
        parent_id = parent["jobId"]
        changed: list[dict[str, Any]] = []
        for state, count in parent["arrayProperties"].get("statusSummary", {}).items():
            if not count or state in UNSTARTED:  # nothing to tell yet, and never again later
                continue
            if state in FINAL and self._settled.get((parent_id, state)) == count:
                continue
            listed = list(self._list_children(parent_id, state))
            if state in FINAL:
                self._settled[(parent_id, state)] = len(listed)
            for summary in listed:
                known = self._children.get(summary["jobId"])
                if known is None or known.key != _Child.key_of(summary):
                    changed.append(summary)
        details = self.describe([summary["jobId"] for summary in changed]) if changed else {}
        for summary in changed:
            detail = details.get(summary["jobId"])
            self._children[summary["jobId"]] = _Child.of(detail or summary, key=_Child.key_of(summary))

    def _list_children(self, parent_id: str, state: str) -> Iterator[dict[str, Any]]:
        token = None
        while True:
            request: dict[str, Any] = {"arrayJobId": parent_id, "jobStatus": state, "maxResults": LIST_PAGE}
            if token:
                request["nextToken"] = token
            try:
                reply = self._batch().list_jobs(**request)
            except Exception as error:
                raise clients.explain(error, f"listing the children of array job {parent_id}") from None
            yield from reply.get("jobSummaryList", [])
            token = reply.get("nextToken")
            if not token:
                return

    # --- cancel --------------------------------------------------------------------------------

    def cancel(self, run: RunRecord) -> None:
        """Terminates the run's array jobs (and so their children) and the jobs that follow them.
        A child stopped this way writes its checkpoint first (SIGTERM); resubmitting goes on."""
        parents = sorted({job.split(":")[0] for job in run.job_ids.values()} | set(run.follow_jobs.values()))
        for job_id, job in self.describe(parents).items():
            if job["status"] in FINAL:
                continue
            try:
                self._batch().terminate_job(jobId=job_id, reason=f"cancelled by ftm cancel {run.run_id}")
            except Exception as error:
                raise clients.explain(error, f"cancelling job {job_id}") from None

    def _batch(self) -> Any:
        if self._client is None:
            self._client = clients.client("batch", self.settings.aws)
        return self._client


def name_command(settings: FtmSettings, quarter: Quarter) -> list[str]:
    return ["name", "--quarter", str(quarter), *(["--serve"] if settings.llm.serve else [])]


def name_kind(settings: FtmSettings) -> str:
    """A name job that serves its own LLM needs a big GPU; one that calls an endpoint, a CPU."""
    return "llm" if settings.llm.serve else "cpu"


def spot_price(settings: FtmSettings) -> float | None:
    """US dollars per hour for the cheapest of aws.gpu_instance_types, as Spot, now; None when
    AWS does not say (no permission, no offers), so that a missing price never stops a run."""
    try:
        ec2 = clients.client("ec2", settings.aws)
        reply = ec2.describe_spot_price_history(
            InstanceTypes=settings.aws.gpu_instance_types,
            ProductDescriptions=["Linux/UNIX"],
            StartTime=datetime.now(timezone.utc) - timedelta(hours=1),
        )
    except Exception:
        return None
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    for offer in reply.get("SpotPriceHistory", []):
        key = (offer["InstanceType"], offer.get("AvailabilityZone", ""))
        stamp = offer.get("Timestamp") or datetime.min.replace(tzinfo=timezone.utc)
        if key not in latest or stamp > latest[key][0]:
            latest[key] = (stamp, float(offer["SpotPrice"]))
    by_type: dict[str, list[float]] = {}
    for (kind, _), (_, price) in latest.items():
        by_type.setdefault(kind, []).append(price)
    medians = [statistics.median(prices) for prices in by_type.values()]
    return min(medians) if medians else None


def attempt_reason(attempt: dict[str, Any]) -> str:
    """Why an attempt ended, in the user's terms: a Spot reclaim, AWS not running it (both
    retried), a timeout, out of memory, or the command's own exit (a user error, not retried)."""
    reason = attempt.get("statusReason") or ""
    container = attempt.get("container") or {}
    code = container.get("exitCode")
    detail = container.get("reason") or ""
    rule = _first_rule(reason, detail)
    if rule is RETRY_RULES[0]:
        return f"Spot reclaim: {reason}"
    if rule["action"] == "RETRY":
        return f"AWS could not run it: {detail or reason}"
    if "timeout" in reason.lower():
        return f"timeout: {reason}"
    if "OutOfMemory" in detail or code == 137:
        return f"out of memory: {detail or 'exit 137'}"
    if code is not None:
        meaning = EXIT_MEANINGS.get(code, "an error")
        return f"user error: ftm exited {code} ({meaning})"
    return reason or detail or "unknown"


def _first_rule(status_reason: str, reason: str) -> dict[str, str]:
    """The rule of RETRY_RULES that Batch applies to an attempt that ended so: the first whose
    patterns (exact, or a prefix before a trailing *) all match."""

    def matches(pattern: str | None, text: str) -> bool:
        if pattern is None:
            return True
        return text.startswith(pattern[:-1]) if pattern.endswith("*") else text == pattern

    for rule in RETRY_RULES:
        if matches(rule.get("onStatusReason"), status_reason) and matches(rule.get("onReason"), reason):
            return rule
    return RETRY_RULES[-1]


class _Child:
    """What ftm keeps of one job between looks: enough for its state, attempts and cost."""

    def __init__(self, job: dict[str, Any], key: tuple[Any, ...]):
        self.key = key
        self.state = job["status"]
        self.attempts = list(job.get("attempts") or [])
        self.status_reason = job.get("statusReason")
        self.started_at = job.get("startedAt")
        self.max_attempts = (job.get("retryStrategy") or {}).get("attempts")

    @classmethod
    def of(cls, job: dict[str, Any], key: tuple[Any, ...] | None = None) -> _Child:
        return cls(job, key or cls.key_of(job))

    @staticmethod
    def key_of(summary: dict[str, Any]) -> tuple[Any, ...]:
        fields = ("status", "startedAt", "stoppedAt", "statusReason")
        return tuple(summary.get(name) for name in fields)

    def status(self, price: float | None, now: float) -> JobStatus:
        ended = len(self.attempts)
        reasons = [attempt_reason(attempt) for attempt in self.attempts]
        last = reasons[-1] if reasons else None
        # Each retry's cause, not only the last: two reclaims then a failed pull tell a story.
        earlier = f" (before: {'; '.join(reasons[:-1])})" if ended > 1 else ""
        of = f" of {self.max_attempts}" if self.max_attempts else ""
        state: JobState
        if self.state == "SUCCEEDED":
            state, attempts, reason = "succeeded", max(ended, 1), None
        elif self.state == "FAILED":
            state, attempts = "failed", ended
            # The last attempt's cause first; the job's own reason (a cancel, a failed dependency) beside it.
            both = last and self.status_reason
            reason = f"{last} ({self.status_reason})" if both else last or self.status_reason
            reason = reason and reason + earlier
        elif self.state == "RUNNING":
            state, attempts = "running", ended + 1
            reason = f"attempt {ended + 1}{of}, after {last}{earlier}" if last else None
        else:  # waiting: for capacity, for its dependencies, or for a retry
            attempts = ended + (1 if ended else 0)
            waiting = f"; waiting: {self.status_reason}" if self.status_reason else ""
            if ended:
                state, reason = "retrying", f"{last}; attempt {ended + 1}{of} queued{waiting}{earlier}"
            else:
                state, reason = "queued", self.status_reason if self.state == "RUNNABLE" else None
        return JobStatus(state=state, attempts=attempts, reason=reason, cost_usd=self._cost(price, now))

    def _cost(self, price: float | None, now: float) -> float | None:
        if price is None:
            return None
        seconds = 0.0
        for attempt in self.attempts:
            if attempt.get("startedAt") and attempt.get("stoppedAt"):
                seconds += (attempt["stoppedAt"] - attempt["startedAt"]) / 1000
        if self.state == "RUNNING" and self.started_at:
            seconds += max(now - self.started_at / 1000, 0.0)
        return seconds / 3600 * price


def _overrides(command: list[str], environment: dict[str, str]) -> dict[str, Any]:
    variables = [{"name": key, "value": value} for key, value in sorted(environment.items())]
    return {"command": command, "environment": variables}


def _map_command(quarter: Quarter, chunk: list[str], listing: str) -> list[str]:
    if len(chunk) == 1:  # an array job has 2 to 10,000 children: one batch is a plain job
        return ["map-batch", "--quarter", str(quarter), "--batch-id", chunk[0], "--partial-ok"]
    return ["map-batch", "--quarter", str(quarter), "--batches", listing, "--partial-ok"]


def _job_name(name: str) -> str:
    """Batch job names: up to 128 letters, digits, hyphens and underscores."""
    cleaned = "".join(char if char.isalnum() or char in "-_" else "-" for char in name)
    return cleaned[:128]


def _default_image(settings: FtmSettings) -> str | None:
    return f"{settings.aws.repository}:latest" if settings.aws.repository else None


def _upload_code(store: Store) -> str:
    """The running ftm as a content-addressed package under the root (the same bytes, the same
    path: stored once); its path there."""
    return code_package.upload(store, code_package.build())
