"""A scripted AWS Batch on 127.0.0.1, for what moto does not model: jobs waiting for capacity,
Spot reclaims retried, out-of-memory exits, throttling. It speaks Batch's REST-JSON protocol, so
ftm's real boto3 client talks to it (AWS_ENDPOINT_URL_BATCH) with the SDK's own retries, and it
keeps AWS's limits that moto does not: 100 ids per DescribeJobs, arrays of 2 to 10,000 children,
30 KiB per SubmitJob, 20 dependencies. A test sets each job's state; the server only answers.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FINAL = ("SUCCEEDED", "FAILED")
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
        job_id = self.add_job(size or 1, jobName=body["jobName"], submitted=body)
        return {"jobId": job_id, "jobName": body["jobName"], "jobArn": f"arn:aws:batch:::job/{job_id}"}

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


def _parent_status(summary: Counter[str], size: int) -> str:
    """As AWS: an array parent ends when every child ended, FAILED if any child failed."""
    if summary["SUCCEEDED"] + summary["FAILED"] == size:
        return "FAILED" if summary["FAILED"] else "SUCCEEDED"
    return "PENDING" if summary["SUBMITTED"] + summary["PENDING"] + summary["RUNNABLE"] else "RUNNING"
