"""The AWS side of ftm as one CloudFormation stack (deploy/ftm.yaml): deploy it, check it, destroy it.

`deploy` goes through change sets, so that a deploy with nothing to change changes nothing (and
says so), and the stack's outputs become ftm settings (`aws.job_queue`, …). `doctor` checks what
a run on AWS Batch needs, each check saying what to do when it fails. Nothing here prints:
progress goes to an `on_event` callback, results are returned.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ftm.aws import clients
from ftm.errors import FtmError, UsageError
from ftm.name import longest_request_tokens, model_config, serving_fit
from ftm.settings import AwsSettings, LlmSettings

# Stack output → the setting `ftm deploy` writes it to.
OUTPUT_SETTINGS = {
    "BucketName": "aws.bucket",
    "JobQueue": "aws.job_queue",
    "CpuJobQueue": "aws.cpu_job_queue",
    "LlmJobQueue": "aws.llm_job_queue",
    "MapJobDefinition": "aws.map_job_definition",
    "CpuJobDefinition": "aws.cpu_job_definition",
    "LlmJobDefinition": "aws.llm_job_definition",
    "Repository": "aws.repository",
    "LogGroup": "aws.log_group",
}

# "All G and VT Spot Instance Requests" (vCPUs, per region): 0 in a new account, so Spot GPU jobs
# stay RUNNABLE forever until an increase is granted.
SPOT_GPU_QUOTA_CODE = "L-3819A6DF"
# The values CloudWatch Logs accepts for a retention period (the template allows only these).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)  # fmt: skip
# Seconds between polls, and how many: a change set is ready in seconds; a stack's compute
# environments take minutes; an hour without an end means something is wrong.
CHANGE_SET_POLL = {"Delay": 2, "MaxAttempts": 150}
STACK_POLL = {"Delay": 10, "MaxAttempts": 360}
# Statuses from which a change set can update the stack.
UPDATABLE = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE",
             "IMPORT_ROLLBACK_COMPLETE"}  # fmt: skip
# CloudFormation's reasons for a change set that changes nothing (CreateChangeSet has no flag for it).
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
# A secret's full ARN, with the 6 characters Secrets Manager appends to its name: the execution
# role's policy names exactly this ARN, which a partial one would not match (the template checks it too).
SECRET_ARN = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}"
)


# doctor's queue checks: name → the setting that holds the queue.
QUEUES = {"GPU job queue": "job_queue", "CPU job queue": "cpu_job_queue", "LLM job queue": "llm_job_queue"}


@dataclass(frozen=True)
class DeployResult:
    """What `deploy` did, and the stack's outputs as the settings they become."""

    stack_name: str
    action: Literal["created", "updated", "unchanged"]
    outputs: dict[str, str]  # setting (aws.job_queue) → value, for every output of the stack
    changes: list[str]  # "Add GpuJobQueue (AWS::Batch::JobQueue)", as CloudFormation planned them
    region: str  # where the stack is: aws.region, or the one boto3 resolved (AWS_REGION, the profile)

    @property
    def changed(self) -> bool:
        return self.action != "unchanged"


@dataclass(frozen=True)
class Check:
    """One of `doctor`'s findings; `fix` says what to do when it is not ok."""

    name: str
    ok: bool | None  # None: a warning, things work but not as configured
    detail: str
    fix: str = ""


EventCallback = Callable[[str], None]


def template_text() -> str:
    """The CloudFormation template: inside the wheel when installed, else the repository's."""
    shipped = resources.files("ftm") / "deploy" / "ftm.yaml"
    if shipped.is_file():
        return shipped.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[3] / "deploy" / "ftm.yaml").read_text(encoding="utf-8")


def parameters(settings: AwsSettings) -> list[dict[str, str]]:
    """The stack's parameters from the aws settings; what is missing or invalid is a UsageError."""
    missing = []
    if not settings.vpc_id:
        missing.append("--vpc-id (aws.vpc_id, FTM_AWS__VPC_ID)")
    if not settings.subnet_ids:
        missing.append("--subnet-ids (aws.subnet_ids, FTM_AWS__SUBNET_IDS)")
    if missing:
        raise UsageError(
            "ftm deploy needs the VPC and the subnets the Batch instances run in: give "
            + " and ".join(missing)
            + ", e.g. ftm deploy --vpc-id vpc-0abc --subnet-ids subnet-0a,subnet-0b. The subnets need a "
            "route to the internet (a NAT gateway, or public IPs on launch) to pull the image; "
            "`aws ec2 describe-subnets --filters Name=vpc-id,Values=VPC` lists a VPC's subnets."
        )
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,127}", settings.stack_name):
        raise UsageError(
            f"aws.stack_name {settings.stack_name!r} must be lowercase letters, digits and hyphens, "
            "starting with a letter: it also names the stack's ECR repository, which allows no capitals"
        )
    if settings.log_retention_days not in LOG_RETENTION_DAYS:
        raise UsageError(
            f"aws.log_retention_days = {settings.log_retention_days} is not a retention CloudWatch Logs "
            f"offers: use one of {', '.join(map(str, LOG_RETENTION_DAYS))}"
        )
    secret = settings.llm_api_key_secret_arn or ""
    if secret and not SECRET_ARN.fullmatch(secret):
        raise UsageError(
            f"aws.llm_api_key_secret_arn {secret!r} is not the full ARN of a Secrets Manager secret: "
            "copy it with its 6-character suffix from `aws secretsmanager describe-secret --secret-id NAME "
            "--query ARN` (the jobs' execution role may read exactly that ARN)"
        )
    values = {
        "VpcId": settings.vpc_id,
        "SubnetIds": ",".join(settings.subnet_ids),
        "ExistingBucket": settings.existing_bucket or "",
        "Prefix": settings.prefix.strip("/"),
        "GpuInstanceTypes": ",".join(settings.gpu_instance_types),
        "LlmInstanceTypes": ",".join(settings.llm_instance_types),
        "MaxGpuVcpus": settings.max_gpu_vcpus,
        "MaxCpuVcpus": settings.max_cpu_vcpus,
        "RunnableTimeoutSeconds": settings.runnable_timeout_s,
        "LogRetentionDays": settings.log_retention_days,
        "RetryAttempts": settings.spot_attempts,
        "AttemptTimeoutSeconds": settings.job_timeout_s,
        "ImageUri": settings.image or "",
        "LlmImageUri": settings.llm_image or "",
        "LlmApiKeySecretArn": secret,
    }
    return [{"ParameterKey": key, "ParameterValue": str(value)} for key, value in values.items()]


def deploy(settings: AwsSettings, on_event: EventCallback | None = None) -> DeployResult:
    """Creates the stack, or updates it to the shipped template and the settings; a deploy that
    would change nothing changes nothing. Returns the outputs as settings."""
    report = on_event or _ignore
    stack_parameters = parameters(settings)
    cfn = clients.client("cloudformation", settings)
    name = settings.stack_name
    status = _stack_status(cfn, name)
    if status == "ROLLBACK_COMPLETE":
        # A first deploy that failed leaves an empty stack that can only be deleted.
        report(f"stack {name} is left from a deploy that failed (ROLLBACK_COMPLETE): deleting it first")
        _call(f"deleting the failed stack {name}", cfn.delete_stack, StackName=name)
        _wait(cfn, "stack_delete_complete", name, f"deleting the failed stack {name}", StackName=name)
        status = None
    if status is not None and status not in UPDATABLE and status != "REVIEW_IN_PROGRESS":
        raise UsageError(_busy(name, status))
    kind = "CREATE" if status in (None, "REVIEW_IN_PROGRESS") else "UPDATE"

    report(f"planning the {'creation' if kind == 'CREATE' else 'update'} of stack {name}")
    created = _call(
        f"creating a change set for stack {name}",
        cfn.create_change_set,
        StackName=name,
        ChangeSetName=f"ftm-{time.strftime('%Y%m%d-%H%M%S')}",
        ChangeSetType=kind,
        TemplateBody=template_text(),
        Parameters=stack_parameters,
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        Description="ftm deploy",
    )
    change_set = created["Id"]
    from botocore.exceptions import WaiterError

    try:
        cfn.get_waiter("change_set_create_complete").wait(
            ChangeSetName=change_set, WaiterConfig=CHANGE_SET_POLL
        )
    except WaiterError:
        described = _call("reading the change set", cfn.describe_change_set, ChangeSetName=change_set)
        reason = described.get("StatusReason") or described.get("Status", "unknown")
        if any(phrase in reason for phrase in NO_CHANGES):
            # Delete it: empty change sets pile up on the stack otherwise.
            _call("deleting the empty change set", cfn.delete_change_set, ChangeSetName=change_set)
            return DeployResult(name, "unchanged", _outputs(cfn, name), [], cfn.meta.region_name)
        raise FtmError(
            f"CloudFormation refused the change set for stack {name}: {reason}. Fix what it names "
            "(often a setting under aws.*, see `ftm config`) and run ftm deploy again."
        ) from None

    changes = _changes(cfn, change_set)
    for change in changes:
        report(change)
    _call(f"executing the change set of stack {name}", cfn.execute_change_set, ChangeSetName=change_set)
    report(
        f"{'creating' if kind == 'CREATE' else 'updating'} stack {name}: a few minutes, the compute "
        "environments take longest"
    )
    waiter = "stack_create_complete" if kind == "CREATE" else "stack_update_complete"
    _wait(cfn, waiter, name, f"{'creating' if kind == 'CREATE' else 'updating'} stack {name}", StackName=name)
    action = "created" if kind == "CREATE" else "updated"
    return DeployResult(name, action, _outputs(cfn, name), changes, cfn.meta.region_name)


def destroy(
    settings: AwsSettings,
    confirm: Callable[[str], bool] | None = None,
    on_event: EventCallback | None = None,
) -> None:
    """Deletes the stack and everything it made. `confirm` gets a description of what goes and
    returns whether to go on (None: no question). Refuses while the stack's own bucket holds data."""
    report = on_event or _ignore
    cfn = clients.client("cloudformation", settings)
    name = settings.stack_name
    status = _stack_status(cfn, name)
    if status is None:
        raise UsageError(
            f"there is no stack {name} in {_region(settings) or 'the default region'}: nothing to destroy "
            "(aws.stack_name and aws.region say which stack ftm manages)"
        )
    if status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        raise UsageError(_busy(name, status))
    bucket = _created_bucket(cfn, name)
    if bucket and _holds_objects(settings, bucket):
        raise UsageError(
            f"bucket {bucket}, which stack {name} created, still holds data, and CloudFormation cannot "
            "delete a bucket that is not empty. Keep what you need "
            f"(aws s3 sync s3://{bucket} ./ftm-backup), empty it (aws s3 rm s3://{bucket} --recursive), "
            "then run ftm destroy again."
        )
    what = (
        f"stack {name} ({status}) in {_region(settings) or 'the default region'}: its job queues, compute "
        "environments, job definitions, roles, ECR repository with its images and log group"
        + (f", and the empty bucket {bucket}" if bucket else "")
    )
    if confirm is not None and not confirm(what):
        raise UsageError("not confirmed: nothing was deleted")
    report(f"deleting {what}")
    _call(f"deleting stack {name}", cfn.delete_stack, StackName=name)
    _wait(cfn, "stack_delete_complete", name, f"deleting stack {name}", StackName=name)


def doctor(settings: AwsSettings, llm: LlmSettings | None = None) -> list[Check]:
    """Checks what a run on AWS Batch needs, in order; AWS errors are reported, never raised.
    With `llm`, also whether a name job that serves its own model (llm.serve) can start it."""
    region = _region(settings)
    if region is None:
        return [
            Check(
                "region",
                False,
                "no AWS region is set",
                "set aws.region in ftm.toml, FTM_AWS__REGION or AWS_REGION (e.g. us-east-1)",
            )
        ]
    source = "aws.region" if settings.region else "the AWS configuration (AWS_REGION or ~/.aws/config)"
    checks = [Check("region", True, f"{region}, from {source}")]
    identity = _credentials_check(settings)
    checks.append(identity)
    if not identity.ok:
        return checks  # everything below needs credentials

    stack_check, outputs = _stack_check(settings)
    checks.append(stack_check)
    if outputs:
        checks.append(_settings_check(settings, outputs))
    checks.append(_bucket_check(settings, settings.bucket or outputs.get("aws.bucket")))
    repository = outputs.get("aws.repository") or settings.repository
    image = settings.image or _default_image(repository)
    checks.append(_image_check(settings, image))
    llm_image = settings.llm_image or _default_image(repository, "llm-latest")
    # Only name with llm.serve needs it: checked once `ftm image build --target llm` has set it.
    if settings.llm_image:
        checks.append(_image_check(settings, llm_image, "LLM image"))
    if llm is not None and (llm.serve or settings.llm_image):
        checks.append(_llm_fit_check(settings, llm))
    definitions = {
        "map_job_definition": image,
        "cpu_job_definition": image,
        "llm_job_definition": llm_image,
    }
    expected = {
        definition: wanted
        for key, wanted in definitions.items()
        if (definition := getattr(settings, key) or outputs.get(f"aws.{key}"))
    }
    checks.append(_job_image_check(settings, expected))
    for name, key in QUEUES.items():
        checks.append(_queue_check(settings, name, key, getattr(settings, key) or outputs.get(f"aws.{key}")))
    checks.append(_quota_check(settings, region))
    return checks


# ------------------------------------------------------------------------------------ deploy helpers


def _ignore(_: str) -> None:
    pass


def _call(doing: str, method: Callable[..., Any], **kwargs: Any) -> Any:
    """One AWS call; its errors (and botocore's own, such as a reply it cannot parse) become ftm
    errors that say what was being done and what to do."""
    try:
        return method(**kwargs)
    except Exception as error:
        raise clients.explain(error, doing) from None


def _stack_status(cfn: Any, name: str) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        if clients.error_code(error) == "ValidationError" and "does not exist" in str(error):
            return None
        raise clients.explain(error, f"looking up stack {name}") from None
    except BotoCoreError as error:  # no credentials, no network: said plainly
        raise clients.explain(error, f"looking up stack {name}") from None
    return stacks[0]["StackStatus"] if stacks else None


def _busy(name: str, status: str) -> str:
    if status.endswith("_IN_PROGRESS"):
        return (
            f"stack {name} is busy ({status}): wait until it ends (`ftm doctor` shows it), "
            "then run the command again"
        )
    if status == "UPDATE_ROLLBACK_FAILED":
        return (
            f"stack {name} could not roll back a failed update ({status}): see its events in the "
            f"CloudFormation console, then `aws cloudformation continue-update-rollback --stack-name {name}`"
        )
    return (
        f"stack {name} is in state {status}, from which CloudFormation cannot update it: see its events in "
        "the CloudFormation console; `ftm destroy` removes it, and ftm deploy then creates it anew"
    )


def _wait(cfn: Any, waiter: str, name: str, doing: str, **kwargs: Any) -> None:
    from botocore.exceptions import WaiterError

    try:
        cfn.get_waiter(waiter).wait(**kwargs, WaiterConfig=STACK_POLL)
    except WaiterError as error:
        if "Max attempts exceeded" in str(error):
            raise FtmError(
                f"{doing}: still not done after {STACK_POLL['Delay'] * STACK_POLL['MaxAttempts'] // 60} "
                "minutes; `ftm doctor` shows the stack's state, and the same command carries on once it "
                "has ended"
            ) from None
        raise FtmError(_failure(cfn, name, doing)) from None


def _failure(cfn: Any, name: str, doing: str) -> str:
    """What went wrong: the stack's state and the failed resources' reasons, the cause first."""
    status = _stack_status(cfn, name) or "deleted"
    try:
        reasons = _failure_reasons(cfn, name)
    except Exception as error:  # the events are a courtesy; the status still tells what happened
        reasons = [f"  (could not read the stack's events: {clients.explain(error, 'reading them')})"]
    lines = [f"{doing} failed: the stack is {status}"]
    lines += reasons or ["  (CloudFormation gave no reason: see the stack's events in its console)"]
    if status == "ROLLBACK_COMPLETE":
        lines.append("Fix the cause and run ftm deploy again: the failed stack is removed first.")
    elif status == "DELETE_FAILED":
        lines.append("Fix the cause (often a resource still in use) and run ftm destroy again.")
    else:
        lines.append("Fix the cause and run the command again; the stack is back at its earlier version.")
    return "\n".join(lines)


def _failure_reasons(cfn: Any, name: str) -> list[str]:
    """The failed resources since the operation began, oldest first: the first failure is usually
    the cause, the later ones CloudFormation giving up on what depended on it."""
    reasons: list[str] = []
    for page in cfn.get_paginator("describe_stack_events").paginate(StackName=name):
        for event in page["StackEvents"]:  # newest first
            state, reason = event["ResourceStatus"], event.get("ResourceStatusReason") or ""
            if event["LogicalResourceId"] == name:
                if state.endswith("_IN_PROGRESS") and "User Initiated" in reason:
                    return reasons[::-1]
            elif state.endswith("_FAILED") and "cancelled" not in reason:
                reasons.append(f"  {event['LogicalResourceId']} ({event['ResourceType']}): {reason}")
    return reasons[::-1]


def _changes(cfn: Any, change_set: str) -> list[str]:
    changes: list[str] = []
    token: str | None = None
    while True:
        kwargs = {"ChangeSetName": change_set} | ({"NextToken": token} if token else {})
        page = _call("reading the change set", cfn.describe_change_set, **kwargs)
        for change in page.get("Changes", []):
            resource = change.get("ResourceChange", {})
            replaced = " (replaced)" if resource.get("Replacement") == "True" else ""
            changes.append(
                f"{resource.get('Action')} {resource.get('LogicalResourceId')} "
                f"({resource.get('ResourceType')}){replaced}"
            )
        token = page.get("NextToken")
        if not token:
            return changes


def _outputs(cfn: Any, name: str) -> dict[str, str]:
    stacks = _call(f"reading the outputs of stack {name}", cfn.describe_stacks, StackName=name)["Stacks"]
    outputs = stacks[0].get("Outputs") or []
    return {
        OUTPUT_SETTINGS[output["OutputKey"]]: output["OutputValue"]
        for output in outputs
        if output["OutputKey"] in OUTPUT_SETTINGS
    }


def _created_bucket(cfn: Any, name: str) -> str | None:
    """The bucket the stack made (none when it uses an existing one)."""
    token: str | None = None
    while True:
        kwargs = {"StackName": name} | ({"NextToken": token} if token else {})
        page = _call(f"listing the resources of stack {name}", cfn.list_stack_resources, **kwargs)
        for resource in page["StackResourceSummaries"]:
            if resource["LogicalResourceId"] == "Bucket" and resource["ResourceStatus"] != "DELETE_COMPLETE":
                return resource.get("PhysicalResourceId") or None
        token = page.get("NextToken")
        if not token:
            return None


def _holds_objects(settings: AwsSettings, bucket: str) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = clients.client("s3", settings)
    try:
        return s3.list_objects_v2(Bucket=bucket, MaxKeys=1).get("KeyCount", 0) > 0
    except ClientError as error:
        if clients.error_code(error) == "NoSuchBucket":
            return False
        raise clients.explain(error, f"looking into bucket {bucket}") from None
    except BotoCoreError as error:
        raise clients.explain(error, f"looking into bucket {bucket}") from None


def _region(settings: AwsSettings) -> str | None:
    if settings.region:
        return settings.region
    import boto3

    return boto3.session.Session().region_name


# ------------------------------------------------------------------------------------ doctor's checks


def _failed(name: str, error: Exception, doing: str, fix: str) -> Check:
    detail = error if isinstance(error, FtmError) else clients.explain(error, doing)
    return Check(name, False, str(detail), fix)


def _credentials_check(settings: AwsSettings) -> Check:
    try:
        identity = clients.client("sts", settings).get_caller_identity()
    except Exception as error:
        return _failed(
            "credentials",
            error,
            "asking AWS who we are",
            "run `aws configure` or `aws sso login`, or set AWS_PROFILE to a profile with credentials",
        )
    return Check("credentials", True, f"account {identity['Account']} as {identity['Arn']}")


def _stack_check(settings: AwsSettings) -> tuple[Check, dict[str, str]]:
    name = settings.stack_name
    deploy_fix = "run `ftm deploy --vpc-id VPC --subnet-ids SUBNET,SUBNET`"
    try:
        cfn = clients.client("cloudformation", settings)
        status = _stack_status(cfn, name)
        outputs = _outputs(cfn, name) if status else {}
    except Exception as error:
        return _failed("stack", error, f"looking up stack {name}", deploy_fix), {}
    if status is None:
        return Check("stack", False, f"there is no stack {name} (aws.stack_name)", deploy_fix), {}
    if status in UPDATABLE - {"UPDATE_ROLLBACK_COMPLETE"}:
        return Check("stack", True, f"{name}: {status}"), outputs
    if status == "UPDATE_ROLLBACK_COMPLETE":
        return Check(
            "stack",
            None,
            f"{name}: {status}: the last update failed and the stack runs its earlier version",
            "run ftm deploy again; it says which resource failed and why",
        ), outputs
    if status.endswith("_IN_PROGRESS"):
        return Check(
            "stack", None, f"{name}: {status}", "wait until it ends, then run ftm doctor again"
        ), outputs
    return Check("stack", False, f"{name}: {status}", _busy(name, status)), outputs


def _settings_check(settings: AwsSettings, outputs: dict[str, str]) -> Check:
    missing = [key for key in outputs if getattr(settings, key.removeprefix("aws.")) is None]
    different = [
        key
        for key, value in outputs.items()
        if getattr(settings, key.removeprefix("aws.")) not in (None, value)
    ]
    fix = "run ftm deploy: with the stack up to date it only writes the outputs into ftm.toml"
    if missing:
        return Check("settings", False, f"not set, though the stack has them: {', '.join(missing)}", fix)
    if different:
        return Check(
            "settings", None, f"set to something other than the stack's outputs: {', '.join(different)}", fix
        )
    return Check("settings", True, "aws.* settings match the stack's outputs")


def _bucket_check(settings: AwsSettings, bucket: str | None) -> Check:
    if not bucket:
        return Check("bucket", False, "no bucket: aws.bucket is not set", "run ftm deploy, which sets it")
    from botocore.exceptions import ClientError

    s3 = clients.client("s3", settings)
    try:
        s3.head_bucket(Bucket=bucket)
        try:
            block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        except ClientError as error:
            if clients.error_code(error) != "NoSuchPublicAccessBlockConfiguration":
                raise
            block = {}
        try:
            public = s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"]
        except ClientError as error:
            if clients.error_code(error) != "NoSuchBucketPolicy":
                raise
            public = False
    except Exception as error:
        return _failed(
            "bucket",
            error,
            f"reading bucket {bucket}",
            "check aws.bucket and that these credentials may read the bucket's settings",
        )
    flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    open_flags = [flag for flag in flags if not block.get(flag)]
    if public or open_flags:
        problem = (
            "its bucket policy makes it public"
            if public
            else f"public access not blocked: {', '.join(open_flags)}"
        )
        return Check(
            "bucket",
            False,
            f"{bucket}: {problem}",
            f"aws s3api put-public-access-block --bucket {bucket} --public-access-block-configuration "
            "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true",
        )
    return Check("bucket", True, f"{bucket}: reachable, public access blocked")


ECR_IMAGE = re.compile(
    r"(?P<registry>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[^:@]+)(?::(?P<tag>[^@]+))?(?:@(?P<digest>.+))?"
)


def _default_image(repository: str | None, tag: str = "latest") -> str | None:
    """What the job definitions run while aws.image (tag latest) or aws.llm_image (tag llm-latest)
    is unset: the template's defaults."""
    return f"{repository}:{tag}" if repository else None


def _image_check(settings: AwsSettings, image: str | None, name: str = "image") -> Check:
    if name == "image":
        build = "build and push it: `ftm image build` (sets aws.image), then `ftm deploy`"
    else:
        build = "build and push it: `ftm image build --target llm` (sets aws.llm_image), then `ftm deploy`"
    if not image:
        return Check(
            name,
            False,
            "no image: neither aws.image nor a stack repository",
            f"run ftm deploy, then {build}",
        )
    match = ECR_IMAGE.fullmatch(image)
    if not match:
        return Check(
            name, None, f"{image} is not in ECR: not checked", "make sure the Batch instances can pull it"
        )
    image_id = {"imageDigest": match["digest"]} if match["digest"] else {"imageTag": match["tag"] or "latest"}
    try:
        ecr = clients.client("ecr", settings.model_copy(update={"region": match["region"]}))
        ecr.describe_images(
            registryId=match["registry"], repositoryName=match["repository"], imageIds=[image_id]
        )
    except Exception as error:
        if clients.error_code(error) in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return Check(name, False, f"{image} is not in ECR: the jobs could not start", build)
        return _failed(name, error, f"looking for {image}", build)
    return Check(name, True, f"{image} is in ECR")


def _job_image_check(settings: AwsSettings, expected: dict[str, str | None]) -> Check:
    """AWS Batch cannot override a job's image at submit time: the job definitions must name it.
    `expected`: job definition → the image it should run (aws.image, aws.llm_image for the llm one)."""
    name = "job definitions"
    definitions = list(expected)
    if not definitions:
        return Check(name, False, "not set (aws.map_job_definition, …)", "run ftm deploy, which sets them")
    try:
        found = clients.client("batch", settings).describe_job_definitions(jobDefinitions=definitions)
    except Exception as error:
        return _failed(name, error, "describing the job definitions", "check aws.*_job_definition")
    images: dict[str, str] = {}
    for item in found["jobDefinitions"]:  # asked for by ARN or by name:revision
        name_revision = f"{item['jobDefinitionName']}:{item['revision']}"
        images[item["jobDefinitionArn"]] = images[name_revision] = item["containerProperties"]["image"]
    missing = [definition for definition in definitions if definition not in images]
    if missing:
        return Check(name, False, f"not found: {', '.join(missing)}", "run ftm deploy, which creates them")
    stale = sorted(
        f"{images[definition]}, not {wanted}"
        for definition, wanted in expected.items()
        if images[definition] != wanted
    )
    if stale:
        return Check(
            name,
            False,
            f"they run {'; '.join(dict.fromkeys(stale))}",
            "run ftm deploy: it points the job definitions at aws.image (and the llm one at aws.llm_image)",
        )
    running = ", ".join(sorted({str(image) for image in expected.values()}))
    return Check(name, True, f"{len(definitions)} job definitions run {running}")


def _llm_fit_check(settings: AwsSettings, llm: LlmSettings) -> Check:
    """Whether vLLM can start llm.model at llm.serve_max_model_len on the GPU of every type the
    LLM queue may launch (a name job lands on any of them), from the model's config.json."""
    name = "LLM fits the GPU"
    what = f"{llm.model} at {llm.serve_max_model_len:,} tokens (llm.serve_max_model_len)"
    longest = longest_request_tokens(llm.topics_per_request)
    if llm.serve_max_model_len < longest:
        return Check(
            name,
            False,
            f"{what} is shorter than ftm's longest request at llm.topics_per_request = "
            f"{llm.topics_per_request} ({longest:,} tokens): the server would refuse it",
            f"raise llm.serve_max_model_len to {longest:,} or more, or lower llm.topics_per_request",
        )
    try:
        config = model_config(llm.model)
        types = clients.client("ec2", settings).describe_instance_types(
            InstanceTypes=settings.llm_instance_types
        )
        gpus = {
            item["InstanceType"]: item["GpuInfo"]["Gpus"][0]["MemoryInfo"]["SizeInMiB"]
            for item in types["InstanceTypes"]
            if item.get("GpuInfo", {}).get("Gpus")
        }
        fits = {
            kind: serving_fit(config, llm, gpus[kind]) for kind in settings.llm_instance_types if kind in gpus
        }
    except Exception as error:
        return Check(
            name,
            None,
            f"{what}: not checked: {error}",
            "make sure the name job's vLLM can start it, or run ftm doctor where the model's "
            "config.json can be read (the Hugging Face hub, or a local folder as llm.model)",
        )
    no_gpu = [kind for kind in settings.llm_instance_types if kind not in gpus]
    too_small = {kind: fit for kind, fit in fits.items() if not fit.fits}
    if no_gpu or too_small:
        problems = [f"{kind} has no GPU" for kind in no_gpu] + [
            f"{kind}'s {gpus[kind]:,} MiB GPU leaves {fit.room_gib:.1f} GiB beside {fit.weights_gib:.1f} GiB "
            f"of weights for {fit.kv_cache_gib:.1f} GiB of KV cache"
            for kind, fit in too_small.items()
        ]
        holds = min((fit.longest_fitting for fit in too_small.values()), default=0)
        lower = holds // 1024 * 1024
        fix = (
            f"lower llm.serve_max_model_len to {lower:,} (ftm needs {longest:,}), or "
            if lower >= longest
            else ""
        ) + "use aws.llm_instance_types with more GPU memory (g6e.xlarge: 48 GB), then ftm deploy"
        return Check(name, False, f"{what}: vLLM would not start: {'; '.join(problems)}", fix)
    fit = min(fits.values(), key=lambda item: item.room_gib)
    return Check(
        name,
        True,
        f"{what} on {', '.join(fits)}: {fit.weights_gib:.1f} GiB of weights, {fit.kv_cache_gib:.1f} GiB "
        f"of KV cache of {fit.room_gib:.1f} GiB left; ftm's longest request is {longest:,} tokens",
    )


def _queue_check(settings: AwsSettings, name: str, key: str, queue: str | None) -> Check:
    if not queue:
        return Check(name, False, f"not set (aws.{key})", "run ftm deploy, which sets it")
    try:
        batch = clients.client("batch", settings)
        found = batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
        environments = (
            [order["computeEnvironment"] for order in found[0]["computeEnvironmentOrder"]] if found else []
        )
        described = (
            batch.describe_compute_environments(computeEnvironments=environments)["computeEnvironments"]
            if environments
            else []
        )
    except Exception as error:
        return _failed(name, error, f"describing job queue {queue}", f"check aws.{key}")
    if not found:
        return Check(name, False, f"{queue} does not exist", "run ftm deploy, which creates it and sets it")
    problems = [
        f"{item.get('jobQueueName') or item.get('computeEnvironmentName')} is "
        f"{item['state']}/{item['status']}"
        + (f" ({item['statusReason']})" if item.get("statusReason") else "")
        for item in [found[0], *described]
        if (item.get("state"), item.get("status")) != ("ENABLED", "VALID")
    ]
    if problems:
        return Check(
            name,
            False,
            "; ".join(problems),
            "an INVALID compute environment names its cause; fix it and run ftm deploy, or enable a "
            "DISABLED one in the AWS Batch console",
        )
    return Check(
        name, True, f"{found[0]['jobQueueName']}: VALID and ENABLED, {len(described)} compute environment(s)"
    )


def _quota_check(settings: AwsSettings, region: str) -> Check:
    name = "Spot GPU quota"
    needed = settings.max_gpu_vcpus
    request = (
        f"request {needed} vCPUs or more for 'All G and VT Spot Instance Requests' in {region} "
        "(quotas are per region): in the Service Quotas console, or with `aws service-quotas "
        f"request-service-quota-increase --service-code ec2 --quota-code {SPOT_GPU_QUOTA_CODE} "
        f"--desired-value {needed} --region {region}`"
    )
    try:
        quotas = clients.client("service-quotas", settings)
        try:
            value = quotas.get_service_quota(ServiceCode="ec2", QuotaCode=SPOT_GPU_QUOTA_CODE)["Quota"][
                "Value"
            ]
        except Exception as error:
            if clients.error_code(error) != "NoSuchResourceException":
                raise
            # Never changed in this account: the default applies.
            value = quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=SPOT_GPU_QUOTA_CODE)[
                "Quota"
            ]["Value"]
    except Exception as error:
        return Check(
            name,
            None,
            f"could not read the quota ({clients.explain(error, 'reading quota ' + SPOT_GPU_QUOTA_CODE)})",
            f"look it up in the Service Quotas console (EC2, {region}); below {needed}, {request}",
        )
    vcpus = int(value)
    detail = (
        f"{vcpus} vCPUs of Spot G and VT instances in {region}; the stack may use {needed} "
        "(aws.max_gpu_vcpus)"
    )
    if vcpus <= 0:
        return Check(name, False, detail + ": no Spot GPU instance can start, jobs stay RUNNABLE", request)
    if vcpus < needed:
        return Check(name, None, detail + f": at most {vcpus // 4} g4dn.xlarge at once", request)
    return Check(name, True, detail)
