"""A scripted AWS Batch on 127.0.0.1, for what moto does not model: jobs waiting for capacity,
Spot reclaims retried, out-of-memory exits, throttling. It speaks Batch's REST-JSON protocol, so
ftm's real boto3 client talks to it (AWS_ENDPOINT_URL_BATCH) with the SDK's own retries, and it
keeps AWS's limits that moto does not: 100 ids per DescribeJobs, arrays of 2 to 10,000 children,
30 KiB per SubmitJob, 20 dependencies. A test sets each job's state; the server only answers,
except for two rules that are AWS's own and that moto leaves out:

- A job's container overrides, with the variables Batch adds, become the ECS task's overrides,
  which ECS caps at 8,192 characters "including the JSON formatting characters" (RunTask,
  `overrides`); SubmitJob takes larger ones, and the job then fails with "Container Overrides
  length must be at most 8192" (as Metaflow #1482 and convox/rack #1906 saw it).
- When a test ends an attempt (`end_attempt`), the job's retry strategy decides as Batch's does
  (job_retries.html, API_EvaluateOnExit): the first rule whose patterns all match (exact, or a
  prefix before a trailing *) says RETRY or EXIT, none matching means RETRY, and no attempt
  beyond `attempts`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FINAL = ("SUCCEEDED", "FAILED")
ECS_OVERRIDES_LIMIT = 8192
# The longest names Batch allows (128 characters) for the queue and compute environment it names.
LONGEST_NAME = "q" * 128
STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")


class BatchStandIn:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.throttle: Counter[str] = Counter()  # operation → how many next calls get a 429
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                status, reply = stand_in.answer(self.path.rstrip("/").rsplit("/", 1)[-1], body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status >= 400:
                    self.send_header("x-amzn-ErrorType", reply["__type"])
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what a test scripts -----------------------------------------------------------------

    def add_job(self, size: int = 1, **fields: Any) -> str:
        """A job as submitted; an array parent with `size` children (`parent:index`)."""
        job_id = str(uuid.uuid4())
        self.jobs[job_id] = {
            "jobId": job_id,
            "jobName": "ftm",
            "status": "SUBMITTED",
            "attempts": [],
            **fields,
        }
        if size > 1:
            self.jobs[job_id]["arrayProperties"] = {"size": size}
            for index in range(size):
                child = f"{job_id}:{index}"
                self.jobs[child] = {"jobId": child, "jobName": "ftm", "status": "SUBMITTED", "attempts": []}
                self.jobs[child]["arrayProperties"] = {"index": index}
        return job_id

    def set(self, job_id: str, **fields: Any) -> None:
        with self.lock:
            self.jobs[job_id].update(fields)

    def count(self, operation: str) -> int:
        return sum(op == operation for op, _ in self.calls)

    # --- the protocol ------------------------------------------------------------------------

    def answer(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append((operation, body))
            if self.throttle[operation] > 0:
                self.throttle[operation] -= 1
                return 429, {"__type": "TooManyRequestsException", "message": "Too Many Requests"}
            try:
                return 200, getattr(self, f"_{operation}")(body)
            except ValueError as error:
                return 400, {"__type": "ClientException", "message": str(error)}

    def _describejobs(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("jobs", [])
        if len(ids) > 100:
            raise ValueError("jobs: a list of up to 100 job IDs")
        return {"jobs": [self._detail(job_id) for job_id in ids if job_id in self.jobs]}

    def _listjobs(self, body: dict[str, Any]) -> dict[str, Any]:
        parent = body["arrayJobId"]
        state = body.get("jobStatus", "RUNNING")  # as AWS: without a status, only RUNNING jobs
        children = [
            job for key, job in self.jobs.items() if key.startswith(f"{parent}:") and job["status"] == state
        ]
        start = int(body.get("nextToken") or 0)
        page = int(body.get("maxResults") or 100)
        reply: dict[str, Any] = {
            "jobSummaryList": [self._summary(job) for job in children[start : start + page]]
        }
        if start + page < len(children):
            reply["nextToken"] = str(start + page)
        return reply

    def _submitjob(self, body: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(body).encode()) > 30 * 1024:
            raise ValueError("the request is larger than 30 KiB")
        size = body.get("arrayProperties", {}).get("size")
        if size is not None and not 2 <= size <= 10_000:
            raise ValueError("array size must be between 2 and 10,000")
        if len(body.get("dependsOn", [])) > 20:
            raise ValueError("at most 20 dependencies")
        job_id = self.add_job(
            size or 1, jobName=body["jobName"], submitted=body, retryStrategy=body.get("retryStrategy")
        )
        if _ecs_overrides_length(job_id, body) > ECS_OVERRIDES_LIMIT:
            # Accepted here; the job fails when Batch hands it to ECS.
            for key, job in self.jobs.items():
                if key == job_id or key.startswith(f"{job_id}:"):
                    job.update(
                        status="FAILED",
                        statusReason=f"Container Overrides length must be at most {ECS_OVERRIDES_LIMIT}",
                    )
        return {"jobId": job_id, "jobName": body["jobName"], "jobArn": f"arn:aws:batch:::job/{job_id}"}

    def end_attempt(self, job_id: str, **attempt: Any) -> str:
        """Ends the job's current attempt as given (statusReason, container: exitCode, reason) and
        applies its retry strategy as Batch does; returns the job's status after it."""
        with self.lock:
            job = self.jobs[job_id]
            job["attempts"] = [*job.get("attempts", []), attempt]
            strategy = job.get("retryStrategy") or self._parent_strategy(job_id) or {}
            action = _retry_action(strategy.get("evaluateOnExit") or [], attempt)
            retry = action == "RETRY" and len(job["attempts"]) < int(strategy.get("attempts") or 1)
            job.update(status="RUNNABLE" if retry else "FAILED", statusReason=attempt.get("statusReason"))
            return job["status"]

    def _parent_strategy(self, job_id: str) -> dict[str, Any] | None:
        parent = self.jobs.get(job_id.split(":")[0])
        return parent.get("retryStrategy") if parent else None

    def _terminatejob(self, body: dict[str, Any]) -> dict[str, Any]:
        for key, job in self.jobs.items():
            if (key == body["jobId"] or key.startswith(f"{body['jobId']}:")) and job["status"] not in FINAL:
                job.update(status="FAILED", statusReason=body.get("reason", "terminated"))
        return {}

    def _detail(self, job_id: str) -> dict[str, Any]:
        job = {key: value for key, value in self.jobs[job_id].items() if key != "submitted"}
        size = job.get("arrayProperties", {}).get("size")
        if size:
            children = [j for key, j in self.jobs.items() if key.startswith(f"{job_id}:")]
            summary = Counter(child["status"] for child in children)
            job["arrayProperties"] = {"size": size, "statusSummary": {s: summary.get(s, 0) for s in STATES}}
            job["status"] = _parent_status(summary, size)
        return job

    def _summary(self, job: dict[str, Any]) -> dict[str, Any]:
        fields = ("jobId", "jobName", "status", "statusReason", "startedAt", "stoppedAt", "arrayProperties")
        return {key: job[key] for key in fields if key in job}


def _ecs_overrides_length(job_id: str, body: dict[str, Any]) -> int:
    """The length of the ECS overrides Batch makes of a submission: its command and environment,
    the container's name, and the variables Batch adds (the longest an array child gets)."""
    overrides = body.get("containerOverrides") or {}
    added = {
        "AWS_BATCH_JOB_ID": f"{job_id}:9999",
        "AWS_BATCH_JOB_ATTEMPT": "10",
        "AWS_BATCH_JOB_ARRAY_INDEX": "9999",
        "AWS_BATCH_JQ_NAME": LONGEST_NAME,
        "AWS_BATCH_CE_NAME": LONGEST_NAME,
    }
    environment = [*overrides.get("environment", []), *({"name": k, "value": v} for k, v in added.items())]
    ecs = {"name": "default", "command": overrides.get("command", []), "environment": environment}
    return len(json.dumps(ecs, separators=(",", ":")))


def _retry_action(rules: list[dict[str, str]], attempt: dict[str, Any]) -> str:
    container = attempt.get("container") or {}
    fields = {
        "onStatusReason": attempt.get("statusReason") or "",
        "onReason": container.get("reason") or "",
        "onExitCode": "" if container.get("exitCode") is None else str(container["exitCode"]),
    }
    for rule in rules:
        patterns = {key: rule[key] for key in fields if key in rule}
        if all(_glob(pattern, fields[key]) for key, pattern in patterns.items()):
            return rule["action"].upper()
    return "RETRY"


def _glob(pattern: str, text: str) -> bool:
    return text.startswith(pattern[:-1]) if pattern.endswith("*") else text == pattern


def _parent_status(summary: Counter[str], size: int) -> str:
    """As AWS: an array parent ends when every child ended, FAILED if any child failed."""
    if summary["SUCCEEDED"] + summary["FAILED"] == size:
        return "FAILED" if summary["FAILED"] else "SUCCEEDED"
    return "PENDING" if summary["SUBMITTED"] + summary["PENDING"] + summary["RUNNABLE"] else "RUNNING"
