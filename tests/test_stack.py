"""The AWS stack: the template as shipped, and `ftm deploy`, `ftm doctor`, `ftm destroy` against
moto's server (CloudFormation, Batch, S3, ECR, IAM, EC2 on 127.0.0.1)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import boto3
import cfnlint.api
import pytest
from botocore.stub import Stubber
from cfnlint.decode.cfn_yaml import loads

from ftm import layout
from ftm.aws import stack
from ftm.backends.aws_batch import RETRY_RULES
from ftm.cli import main
from ftm.errors import FtmError, UsageError
from ftm.quarters import Quarter
from ftm.settings import AwsSettings, load_settings

# moto skips the bucket policy (no CloudFormation support for it) and says so; the stack completes.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS..S3..BucketPolicy:UserWarning")

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_BODY_LIMIT = 51_200  # bytes CloudFormation accepts as TemplateBody
OUTPUT_SETTINGS = set(stack.OUTPUT_SETTINGS.values())
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ftm/llm-key-AbC123"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return loads(stack.template_text())


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: item for name, item in template["Resources"].items() if item["Type"] == kind}


# --------------------------------------------------------------------------- the template itself


def test_shipped_template_is_the_repositorys() -> None:
    assert stack.template_text() == (REPO / "deploy" / "ftm.yaml").read_text()


def test_template_passes_cfn_lint_without_errors_or_warnings() -> None:
    matches = cfnlint.api.lint(stack.template_text(), config=cfnlint.api.ManualArgs(regions=["us-east-1"]))
    assert [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches] == []


def test_template_fits_cloudformations_template_body_limit() -> None:
    assert len(stack.template_text().encode()) < TEMPLATE_BODY_LIMIT


def test_every_job_definition_retries_spot_losses_and_failed_starts_and_has_a_timeout(
    template: dict[str, Any],
) -> None:
    definitions = _resources(template, "AWS::Batch::JobDefinition")
    parameters = template["Parameters"]
    assert set(definitions) == {"MapJobDefinition", "CpuJobDefinition", "LlmJobDefinition"}
    for name, definition in definitions.items():
        properties = definition["Properties"]
        retry = properties["RetryStrategy"]
        attempts = parameters[retry["Attempts"]["Ref"]]
        # cfn-lint does not check these: Batch allows 1-10 attempts and 60 s at least per attempt.
        assert 1 <= attempts["MinValue"] <= attempts["Default"] <= attempts["MaxValue"] <= 10, name
        # The rules submit sends too, in CloudFormation's spelling; Batch takes at most 5.
        assert retry["EvaluateOnExit"] == [
            {key[0].upper() + key[1:]: value for key, value in rule.items()} for rule in RETRY_RULES
        ], name
        assert len(retry["EvaluateOnExit"]) <= 5 and retry["EvaluateOnExit"][-1] == {
            "OnReason": "*",
            "Action": "EXIT",
        }, name
        timeout = parameters[properties["Timeout"]["AttemptDurationSeconds"]["Ref"]]
        assert timeout["MinValue"] >= 60 and timeout["Default"] >= 60, name
        container = properties["ContainerProperties"]
        assert "Command" not in container, f"{name}: ftm passes the command at submit time"
        assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "LogGroup"}, name


def test_settings_stay_within_the_templates_parameter_limits(template: dict[str, Any]) -> None:
    settings = AwsSettings(vpc_id="vpc-1", subnet_ids=["subnet-1"], spot_attempts=10, job_timeout_s=60)
    given = {item["ParameterKey"]: item["ParameterValue"] for item in stack.parameters(settings)}
    assert set(given) == set(template["Parameters"])  # every parameter, so no default is ever used
    for key, value in given.items():
        limits = template["Parameters"][key]
        if "MinValue" in limits:
            assert limits["MinValue"] <= int(value) <= limits.get("MaxValue", float("inf")), key


def test_parameters_come_from_the_settings() -> None:
    settings = AwsSettings(
        vpc_id="vpc-1",
        subnet_ids=["subnet-1"],
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/ftm:map-0123456789ab",
        llm_image="123456789012.dkr.ecr.us-east-1.amazonaws.com/ftm:llm-0123456789ab",
        llm_instance_types=["g6e.xlarge", "g5.xlarge"],
        llm_api_key_secret_arn=SECRET,
    )
    given = {item["ParameterKey"]: item["ParameterValue"] for item in stack.parameters(settings)}
    assert given["ImageUri"] == settings.image and given["LlmImageUri"] == settings.llm_image
    assert given["LlmInstanceTypes"] == "g6e.xlarge,g5.xlarge"
    assert given["LlmApiKeySecretArn"] == SECRET
    unset = {
        item["ParameterKey"]: item["ParameterValue"]
        for item in stack.parameters(AwsSettings(vpc_id="vpc-1", subnet_ids=["subnet-1"]))
    }
    # Empty: the template's defaults (REPOSITORY:latest, REPOSITORY:llm-latest, no secret).
    assert unset["ImageUri"] == unset["LlmImageUri"] == unset["LlmApiKeySecretArn"] == ""
    assert unset["LlmInstanceTypes"] == "g5.xlarge,g6.xlarge"


def test_a_partial_secret_arn_is_refused_with_how_to_get_the_full_one(template: dict[str, Any]) -> None:
    import re

    partial = SECRET.removesuffix("-AbC123")
    with pytest.raises(UsageError, match="full ARN") as raised:
        stack.parameters(AwsSettings(vpc_id="vpc-1", subnet_ids=["subnet-1"], llm_api_key_secret_arn=partial))
    assert "describe-secret" in str(raised.value)
    pattern = template["Parameters"]["LlmApiKeySecretArn"]["AllowedPattern"]  # CloudFormation's own check
    assert re.fullmatch(pattern, SECRET) and re.fullmatch(pattern, "") and not re.fullmatch(pattern, partial)


def test_llm_job_runs_the_llm_image_and_the_others_the_map_image(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    image = {
        name: resources[name]["Properties"]["ContainerProperties"]["Image"]
        for name in ("MapJobDefinition", "CpuJobDefinition", "LlmJobDefinition")
    }
    assert (
        image["MapJobDefinition"]
        == image["CpuJobDefinition"]
        == {
            "Fn::If": ["DefaultImage", {"Fn::Sub": "${Repository.RepositoryUri}:latest"}, {"Ref": "ImageUri"}]
        }
    )
    assert image["LlmJobDefinition"] == {
        "Fn::If": [
            "DefaultLlmImage",
            {"Fn::Sub": "${Repository.RepositoryUri}:llm-latest"},
            {"Ref": "LlmImageUri"},
        ]
    }
    assert template["Conditions"]["DefaultLlmImage"] == {"Fn::Equals": [{"Ref": "LlmImageUri"}, ""]}


def test_name_jobs_get_the_llm_key_from_the_secret_and_only_the_execution_role_reads_it(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    assert template["Conditions"]["HasLlmSecret"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "LlmApiKeySecretArn"}, ""]}]
    }
    wired = {
        "Fn::If": [
            "HasLlmSecret",
            [{"Name": "FTM_LLM__API_KEY", "ValueFrom": {"Ref": "LlmApiKeySecretArn"}}],
            {"Ref": "AWS::NoValue"},
        ]
    }
    for name in ("CpuJobDefinition", "LlmJobDefinition"):
        container = resources[name]["Properties"]["ContainerProperties"]
        assert container["Secrets"] == wired, name
        # ECS reads the secret with the execution role, before the container starts.
        assert container["ExecutionRoleArn"] == {"Fn::GetAtt": ["ExecutionRole", "Arn"]}, name
    assert "Secrets" not in resources["MapJobDefinition"]["Properties"]["ContainerProperties"]
    policies = resources["ExecutionRole"]["Properties"]["Policies"]
    assert policies["Fn::If"][0] == "HasLlmSecret" and policies["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    statements = [s for policy in policies["Fn::If"][1] for s in policy["PolicyDocument"]["Statement"]]
    assert statements == [
        {
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": {"Ref": "LlmApiKeySecretArn"},
        }
    ]
    # The container sees only the value: the job role reads no secret.
    assert "secretsmanager" not in json.dumps(resources["JobRole"])


def test_llm_queue_runs_on_its_own_spot_gpus(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    order = resources["LlmJobQueue"]["Properties"]["ComputeEnvironmentOrder"]
    assert order == [{"Order": 1, "ComputeEnvironment": {"Ref": "LlmComputeEnvironment"}}]
    llm = resources["LlmComputeEnvironment"]["Properties"]
    gpu = resources["GpuComputeEnvironment"]["Properties"]
    assert llm["Type"] == "MANAGED" and llm["ComputeResources"]["InstanceTypes"] == {
        "Ref": "LlmInstanceTypes"
    }
    # Otherwise the same as the map's: Spot, nothing when idle, the same roles, network and disk.
    assert {**llm["ComputeResources"], "InstanceTypes": None} == {
        **gpu["ComputeResources"],
        "InstanceTypes": None,
    }
    assert llm["ComputeResources"]["MinvCpus"] == 0
    assert llm["ComputeResources"]["AllocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    defaults = template["Parameters"]["LlmInstanceTypes"]["Default"].split(",")
    assert defaults == AwsSettings.model_fields["llm_instance_types"].default_factory()  # type: ignore[misc]
    assert not any(kind.startswith("g4dn") for kind in defaults)  # 16 GB T4s cannot hold Qwen3-8B
    # The vLLM job fits each of them (g5/g6.xlarge: 4 vCPUs, 16 GiB or more, one 24 GB GPU).
    requirements = {
        item["Type"]: int(item["Value"])
        for item in resources["LlmJobDefinition"]["Properties"]["ContainerProperties"]["ResourceRequirements"]
    }
    assert requirements == {"VCPU": 4, "MEMORY": 15_000, "GPU": 1}


def test_gpu_map_job_fits_a_g4dn_xlarge(template: dict[str, Any]) -> None:
    requirements = {
        item["Type"]: int(item["Value"])
        for item in template["Resources"]["MapJobDefinition"]["Properties"]["ContainerProperties"][
            "ResourceRequirements"
        ]
    }
    assert requirements["GPU"] == 1 and requirements["VCPU"] <= 4
    assert requirements["MEMORY"] <= 15_000  # 16 GiB less what the OS and ECS agent keep


def test_job_role_reaches_only_the_prefix(template: dict[str, Any]) -> None:
    role = template["Resources"]["JobRole"]["Properties"]
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    s3 = [s for s in statements if isinstance(s, dict) and str(s.get("Action")).find("s3:") >= 0]
    assert s3, "the job role has no S3 statement"
    for statement in s3:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any("*" in action for action in actions), actions
        resource = statement["Resource"]["Fn::Sub"][0]
        if actions == ["s3:ListBucket"]:
            assert resource.endswith(":s3:::${BucketName}")
            assert statement["Condition"]["StringLike"]["s3:prefix"] == [
                {"Ref": "Prefix"},
                {"Fn::Sub": "${Prefix}/*"},
            ]
        else:
            assert resource.endswith(":s3:::${BucketName}/${Prefix}/*"), resource


def test_queues_cancel_jobs_stuck_in_runnable(template: dict[str, Any]) -> None:
    queues = _resources(template, "AWS::Batch::JobQueue")
    assert set(queues) == {"GpuJobQueue", "CpuJobQueue", "LlmJobQueue"}
    for name, queue in queues.items():
        actions = queue["Properties"]["JobStateTimeLimitActions"]
        assert {(a["State"], a["Action"]) for a in actions} == {("RUNNABLE", "CANCEL")}, name
        assert {a["Reason"] for a in actions} == {
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
            "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
            "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
        }, name


def _lifecycle_expired(policy: dict[str, Any], images: dict[str, tuple[list[str], int]]) -> set[str]:
    """The images (name → tags, day pushed) an ECR lifecycle policy expires, as the ECR user guide
    describes it (lifecycle_policy_parameters, "How lifecycle policies work"): rules in priority
    order; a tagged rule selects images having a tag with each of its prefixes; imageCountMoreThan
    keeps the newest `countNumber` of its images, sinceImagePushed those younger than it; an image
    that a higher-priority rule selects is never expired by a lower one. ECR's own checks of a
    policy are asserted too: unique priorities, a rule on any image last, one rule on untagged."""
    rules = sorted(policy["rules"], key=lambda rule: rule["rulePriority"])
    assert len({rule["rulePriority"] for rule in rules}) == len(rules)
    statuses = [rule["selection"]["tagStatus"] for rule in rules]
    assert "any" not in statuses[:-1] and statuses.count("untagged") <= 1
    today = max(day for _, day in images.values())
    expired: set[str] = set()
    taken: set[str] = set()
    for rule in rules:
        selection = rule["selection"]
        status = selection["tagStatus"]
        if status == "tagged":
            assert selection["tagPrefixList"], "a tagged rule needs its prefixes"
        chosen = [
            name
            for name, (tags, _) in images.items()
            if status == "any"
            or (status == "untagged" and not tags)
            or (
                status == "tagged"
                and all(any(tag.startswith(p) for tag in tags) for p in selection["tagPrefixList"])
            )
        ]
        chosen.sort(key=lambda name: images[name][1], reverse=True)  # newest first
        if selection["countType"] == "imageCountMoreThan":
            old = chosen[selection["countNumber"] :]
        else:
            old = [name for name in chosen if today - images[name][1] > selection["countNumber"]]
        expired |= set(old) - taken
        taken |= set(chosen)
    return expired


def test_ecr_keeps_the_llm_image_however_many_map_images_are_pushed(template: dict[str, Any]) -> None:
    repository = template["Resources"]["Repository"]["Properties"]
    policy = json.loads(repository["LifecyclePolicy"]["LifecyclePolicyText"])
    # The LLM job definition names one llm image; then a dozen dependency changes of the map.
    images = {"llm-0123456789ab": (["llm-0123456789ab"], 0)}
    images.update({f"map-{day:012d}": ([f"map-{day:012d}"], day) for day in range(1, 13)})
    assert _lifecycle_expired(policy, images) == {"map-000000000001", "map-000000000002"}
    # And the other way round: llm pushes never expire the map image.
    images = {"map-0123456789ab": (["map-0123456789ab"], 0)}
    images.update({f"llm-{day:012d}": ([f"llm-{day:012d}"], day) for day in range(1, 13)})
    assert _lifecycle_expired(policy, images) == {"llm-000000000001", "llm-000000000002"}
    # A tag pushed again leaves its old image untagged, which goes after a while.
    images = {"old": ([], 0), "map-0123456789ab": (["map-0123456789ab"], 30)}
    assert _lifecycle_expired(policy, images) == {"old"}


def test_template_outputs_are_the_settings_deploy_writes(template: dict[str, Any]) -> None:
    assert set(template["Outputs"]) == set(stack.OUTPUT_SETTINGS)
    assert stack.OUTPUT_SETTINGS["LlmJobQueue"] == "aws.llm_job_queue"
    assert template["Outputs"]["LlmJobQueue"]["Value"] == {"Ref": "LlmJobQueue"}


# --------------------------------------------------------------------------- against moto


@pytest.fixture
def network(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """A VPC with two subnets on moto (the stack's compute environments need them to exist)."""
    from moto.cloudformation.models import CloudFormationBackend

    # moto builds a stack's outputs when the stack is created, and a stack made by a change set
    # is created empty; rebuild them once the change set ran, as CloudFormation has them.
    execute = CloudFormationBackend.execute_change_set

    def execute_with_outputs(
        self: CloudFormationBackend, change_set_name: str, stack_name: str | None = None
    ):
        execute(self, change_set_name, stack_name)
        for item in self.stacks.values():
            item._parse_template()
            item.output_map = item._create_output_map()

    monkeypatch.setattr(CloudFormationBackend, "execute_change_set", execute_with_outputs)
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.1.{index}.0/24")["Subnet"]["SubnetId"] for index in (1, 2)
    ]
    return vpc, subnets


@pytest.fixture
def deployed(network: tuple[str, list[str]], capsys: pytest.CaptureFixture) -> dict[str, Any]:
    """`ftm deploy` run once; the settings it wrote."""
    vpc, subnets = network
    assert main(["deploy", "--vpc-id", vpc, "--subnet-ids", ",".join(subnets)]) == 0
    capsys.readouterr()
    return load_settings(Path("ftm.toml")).model_dump()


def _quota(monkeypatch: pytest.MonkeyPatch, vcpus: float) -> None:
    """moto has no EC2 quotas: give its Service Quotas the Spot G/VT quota of an account."""
    from moto.servicequotas.models import ServiceQuotasBackend

    def get_service_quota(self: ServiceQuotasBackend, service_code: str, quota_code: str) -> dict[str, Any]:
        assert (service_code, quota_code) == ("ec2", stack.SPOT_GPU_QUOTA_CODE)
        return {"ServiceCode": "ec2", "QuotaCode": quota_code, "QuotaName": "Spot G/VT", "Value": vcpus}

    monkeypatch.setattr(ServiceQuotasBackend, "get_service_quota", get_service_quota)


def _checks(capsys: pytest.CaptureFixture, expected_exit: int) -> dict[str, dict[str, Any]]:
    assert main(["doctor", "--json"]) == expected_exit
    return {check["name"]: check for check in json.loads(capsys.readouterr().out)}


def test_deploy_creates_the_stack_and_writes_its_outputs_and_storage_root(
    network: tuple[str, list[str]], capsys: pytest.CaptureFixture
) -> None:
    vpc, subnets = network
    assert main(["deploy", "--vpc-id", vpc, "--subnet-ids", ",".join(subnets)]) == 0
    err = capsys.readouterr().err
    assert "created stack ftm" in err and "Add GpuJobQueue (AWS::Batch::JobQueue)" in err

    described = boto3.client("cloudformation").describe_stacks(StackName="ftm")["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    assert set(outputs) == set(stack.OUTPUT_SETTINGS)
    assert outputs["LlmJobQueue"].startswith("arn:aws:batch:") and "LlmJobQueue" in outputs["LlmJobQueue"]

    settings = load_settings(Path("ftm.toml"))
    for output, key in stack.OUTPUT_SETTINGS.items():
        assert getattr(settings.aws, key.removeprefix("aws.")) == outputs[output], key
    assert settings.aws.vpc_id == vpc and settings.aws.subnet_ids == subnets  # the next deploy needs no flags
    # aws.region was unset: the region boto3 resolved (AWS_DEFAULT_REGION here) is written down.
    assert settings.aws.region == "us-east-1"
    assert settings.storage.root == f"s3://{outputs['BucketName']}/ftm"
    assert settings.aws.repository.endswith(".dkr.ecr.us-east-1.amazonaws.com/ftm")
    assert settings.aws.llm_job_queue == outputs["LlmJobQueue"] != settings.aws.job_queue


def test_second_deploy_changes_nothing_and_says_so(
    deployed: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    before = Path("ftm.toml").read_text()
    assert main(["deploy"]) == 0  # the VPC and subnets come from ftm.toml now
    assert "stack ftm is up to date: nothing changed" in capsys.readouterr().err
    assert main(["deploy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "unchanged"
    assert Path("ftm.toml").read_text() == before
    # The empty change set is deleted, not left to pile up on the stack.
    change_sets = boto3.client("cloudformation").list_change_sets(StackName="ftm")["Summaries"]
    assert all(item["Status"] != "FAILED" for item in change_sets)


def test_deploy_without_writing_prints_the_settings_to_add(
    network: tuple[str, list[str]], capsys: pytest.CaptureFixture
) -> None:
    vpc, subnets = network
    assert main(["deploy", "--vpc-id", vpc, "--subnet-ids", subnets[0], "--no-write-config"]) == 0
    printed = capsys.readouterr().out
    assert not Path("ftm.toml").exists()
    import tomllib

    written = tomllib.loads(printed)
    assert written["aws"]["job_queue"].startswith("arn:aws:batch:")
    assert written["storage"]["root"].startswith("s3://")


def test_job_definitions_carry_the_spot_retry_strategy(deployed: dict[str, Any]) -> None:
    aws = deployed["aws"]
    batch = boto3.client("batch")
    arns = [aws["map_job_definition"], aws["cpu_job_definition"], aws["llm_job_definition"]]
    definitions = batch.describe_job_definitions(jobDefinitions=arns)["jobDefinitions"]
    assert sorted(d["jobDefinitionArn"] for d in definitions) == sorted(arns)
    for definition in definitions:
        retry = definition["retryStrategy"]
        assert retry["attempts"] == aws["spot_attempts"]
        # moto lowercases the actions; AWS keeps them as given.
        rules = [
            (rule.get("onStatusReason"), rule.get("onReason"), rule["action"].upper())
            for rule in retry["evaluateOnExit"]
        ]
        assert rules == [(r.get("onStatusReason"), r.get("onReason"), r["action"]) for r in RETRY_RULES]
        assert definition["containerProperties"]["logConfiguration"]["options"]["awslogs-group"] == "/ftm/ftm"
    gpus = {
        d["jobDefinitionArn"]: {
            r["type"]: r["value"] for r in d["containerProperties"]["resourceRequirements"]
        }
        for d in definitions
    }
    assert gpus[aws["map_job_definition"]]["GPU"] == "1" and gpus[aws["llm_job_definition"]]["GPU"] == "1"
    assert "GPU" not in gpus[aws["cpu_job_definition"]]


def test_job_queues_run_on_spot_gpus_and_cpus_from_the_settings(deployed: dict[str, Any]) -> None:
    aws = deployed["aws"]
    batch = boto3.client("batch")
    keys = ("job_queue", "cpu_job_queue", "llm_job_queue")
    queues = batch.describe_job_queues(jobQueues=[aws[key] for key in keys])["jobQueues"]
    assert {(q["state"], q["status"]) for q in queues} == {("ENABLED", "VALID")} and len(queues) == 3
    environment_of = {q["jobQueueArn"]: q["computeEnvironmentOrder"][0]["computeEnvironment"] for q in queues}
    assert len({environment_of[aws[key]] for key in keys}) == 3
    gpu, cpu, llm = (
        batch.describe_compute_environments(computeEnvironments=[environment_of[aws[key]]])[
            "computeEnvironments"
        ][0]["computeResources"]
        for key in keys
    )
    for spot in (gpu, llm):
        assert spot["type"] == "SPOT" and spot["allocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
        assert spot["minvCpus"] == 0 and spot["maxvCpus"] == aws["max_gpu_vcpus"]
    assert gpu["instanceTypes"] == aws["gpu_instance_types"]
    assert llm["instanceTypes"] == aws["llm_instance_types"] == ["g5.xlarge", "g6.xlarge"]
    assert cpu["type"] == "EC2" and cpu["maxvCpus"] == aws["max_cpu_vcpus"]


def test_doctor_reports_each_check_with_what_to_do(
    deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _quota(monkeypatch, 0)  # a new account's
    checks = _checks(capsys, 4)
    assert list(checks) == [
        "region",
        "credentials",
        "stack",
        "settings",
        "bucket",
        "image",
        "job definitions",
        "GPU job queue",
        "CPU job queue",
        "LLM job queue",
        "Spot GPU quota",
    ]
    for name in (
        "region",
        "credentials",
        "stack",
        "settings",
        "job definitions",
        "GPU job queue",
        "CPU job queue",
        "LLM job queue",
    ):
        assert checks[name]["ok"] is True, checks[name]
    assert "123456789012" in checks["credentials"]["detail"]
    assert checks["image"]["ok"] is False and "ftm image build" in checks["image"]["fix"]
    assert checks["image"]["detail"].startswith(deployed["aws"]["repository"] + ":latest")
    quota = checks["Spot GPU quota"]
    assert quota["ok"] is False and quota["detail"].startswith("0 vCPUs")
    assert "--desired-value 64" in quota["fix"] and "per region" in quota["fix"]
    # moto's CloudFormation does not apply a bucket's PublicAccessBlockConfiguration; AWS does.
    assert checks["bucket"]["ok"] is False and "put-public-access-block" in checks["bucket"]["fix"]


def test_doctor_passes_once_everything_is_in_place(
    deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    aws = deployed["aws"]
    _quota(monkeypatch, 128)
    boto3.client("s3").put_public_access_block(
        Bucket=aws["bucket"],
        PublicAccessBlockConfiguration={
            key: True
            for key in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
        },
    )
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
    boto3.client("ecr").put_image(repositoryName="ftm", imageManifest=json.dumps(manifest), imageTag="latest")
    checks = _checks(capsys, 0)
    assert {name: check["ok"] for name, check in checks.items()} == dict.fromkeys(checks, True)
    assert checks["Spot GPU quota"]["detail"].startswith("128 vCPUs")


def test_doctor_checks_that_vllm_can_start_the_model_on_every_llm_gpu(
    deployed: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """From the model's config.json (a folder here, the hub's otherwise) and the GPU memory EC2
    gives for aws.llm_instance_types (moto holds AWS's table: 22,888 MiB for g5 and g6.xlarge)."""
    from naming_inputs import write_model_config

    _quota(monkeypatch, 128)
    monkeypatch.setenv("FTM_LLM__MODEL", write_model_config(tmp_path / "qwen3-8b"))
    monkeypatch.setenv("FTM_LLM__SERVE", "true")
    fit = _checks(capsys, 4)["LLM fits the GPU"]  # 4: no image is pushed here
    assert fit["ok"] is True, fit
    assert "at 8,192 tokens" in fit["detail"] and "on g5.xlarge, g6.xlarge" in fit["detail"]
    assert "15.3 GiB of weights, 1.1 GiB of KV cache of 1.8 GiB left" in fit["detail"]

    monkeypatch.setenv("FTM_LLM__SERVE_MAX_MODEL_LEN", "40960")  # Qwen3-8B's own maximum
    fit = _checks(capsys, 4)["LLM fits the GPU"]
    assert fit["ok"] is False and "vLLM would not start" in fit["detail"] and "5.6 GiB" in fit["detail"]
    assert "lower llm.serve_max_model_len to 12,288" in fit["fix"]

    monkeypatch.setenv("FTM_LLM__SERVE_MAX_MODEL_LEN", "4096")  # shorter than ftm's requests
    fit = _checks(capsys, 4)["LLM fits the GPU"]
    assert fit["ok"] is False and "8,064 tokens" in fit["detail"]

    monkeypatch.delenv("FTM_LLM__SERVE_MAX_MODEL_LEN")
    monkeypatch.setenv("FTM_AWS__LLM_INSTANCE_TYPES", '["g4dn.xlarge", "m6i.xlarge"]')
    fit = _checks(capsys, 4)["LLM fits the GPU"]
    assert fit["ok"] is False and "m6i.xlarge has no GPU" in fit["detail"]
    assert "g4dn.xlarge's 16,384 MiB GPU" in fit["detail"] and "lower" not in fit["fix"]

    monkeypatch.setenv("FTM_LLM__MODEL", str(tmp_path / "nowhere"))
    fit = _checks(capsys, 4)["LLM fits the GPU"]
    assert fit["ok"] is None and "not checked" in fit["detail"]  # a warning, not a guess


def test_doctor_flags_settings_the_stack_does_not_match(
    deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _quota(monkeypatch, 128)
    monkeypatch.setenv("FTM_AWS__IMAGE", f"{deployed['aws']['repository']}:map-0123456789ab")
    checks = _checks(capsys, 4)
    # aws.image moved on (ftm image build) but the job definitions still run :latest.
    assert checks["job definitions"]["ok"] is False
    assert "ftm deploy" in checks["job definitions"]["fix"]
    assert "llm-latest" not in checks["job definitions"]["detail"]  # the llm one runs what it should


def test_doctor_names_a_queue_output_missing_from_the_settings(
    deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A settings file from before the LLM queue: doctor says to run ftm deploy, which writes it."""
    _quota(monkeypatch, 128)
    lines = Path("ftm.toml").read_text().splitlines(keepends=True)
    Path("ftm.toml").write_text("".join(line for line in lines if not line.startswith("llm_job_queue")))
    checks = _checks(capsys, 4)
    assert checks["settings"]["ok"] is False and "aws.llm_job_queue" in checks["settings"]["detail"]
    assert checks["LLM job queue"]["ok"] is True  # found through the stack's output meanwhile
    assert main(["deploy"]) == 0
    capsys.readouterr()
    assert load_settings(Path("ftm.toml")).aws.llm_job_queue == deployed["aws"]["llm_job_queue"]
    assert _checks(capsys, 4)["settings"]["ok"] is True


def test_deploy_with_an_llm_image_and_key_secret_wires_them_into_the_name_jobs(
    network: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    vpc, subnets = network
    secret = boto3.client("secretsmanager").create_secret(Name="ftm/llm-key", SecretString="sk-test")["ARN"]
    assert stack.SECRET_ARN.fullmatch(secret)
    llm_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ftm:llm-0123456789ab"
    monkeypatch.setenv("FTM_AWS__LLM_IMAGE", llm_image)
    monkeypatch.setenv("FTM_AWS__LLM_API_KEY_SECRET_ARN", secret)
    assert main(["deploy", "--vpc-id", vpc, "--subnet-ids", ",".join(subnets)]) == 0
    capsys.readouterr()
    cfn = boto3.client("cloudformation")
    given = {
        p["ParameterKey"]: p["ParameterValue"]
        for p in cfn.describe_stacks(StackName="ftm")["Stacks"][0]["Parameters"]
    }
    assert given["LlmImageUri"] == llm_image and given["LlmApiKeySecretArn"] == secret
    aws = load_settings(Path("ftm.toml")).aws
    definitions = {
        d["jobDefinitionArn"]: d["containerProperties"]
        for d in boto3.client("batch").describe_job_definitions(
            jobDefinitions=[aws.map_job_definition, aws.cpu_job_definition, aws.llm_job_definition]
        )["jobDefinitions"]
    }
    assert definitions[aws.llm_job_definition]["image"] == llm_image
    assert (
        definitions[aws.map_job_definition]["image"]
        == definitions[aws.cpu_job_definition]["image"]
        == (f"{aws.repository}:latest")
    )
    for arn in (aws.cpu_job_definition, aws.llm_job_definition):
        assert definitions[arn]["secrets"] == [{"name": "FTM_LLM__API_KEY", "valueFrom": secret}]
    assert not definitions[aws.map_job_definition].get("secrets")
    # The execution role may read that one secret.
    role = definitions[aws.cpu_job_definition]["executionRoleArn"].rsplit("/", 1)[1]
    iam = boto3.client("iam")
    documents = [
        iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
    ]
    # moto's CloudFormation stores an inline policy as the repr of its dict; AWS returns JSON.
    documents = [d if isinstance(d, dict) else ast.literal_eval(d) for d in documents]
    assert [s for d in documents for s in d["Statement"]] == [
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secret}
    ]
    # doctor: each job definition runs the image meant for it; the LLM image is looked for in ECR.
    _quota(monkeypatch, 128)
    checks = _checks(capsys, 4)
    assert checks["job definitions"]["ok"] is True and llm_image in checks["job definitions"]["detail"]
    assert checks["LLM image"]["ok"] is False and "--target llm" in checks["LLM image"]["fix"]


def test_destroy_without_yes_and_without_a_terminal_refuses_and_keeps_the_stack(
    deployed: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    assert main(["destroy"]) == 2
    assert "--yes" in capsys.readouterr().err
    assert boto3.client("cloudformation").describe_stacks(StackName="ftm")["Stacks"][0]["StackStatus"] == (
        "CREATE_COMPLETE"
    )


def test_destroy_yes_deletes_the_stack(deployed: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    assert main(["destroy", "--yes"]) == 0
    assert "deleted stack ftm" in capsys.readouterr().err
    with pytest.raises(Exception, match="does not exist"):
        boto3.client("cloudformation").describe_stacks(StackName="ftm")
    assert main(["destroy", "--yes"]) == 2  # nothing left to destroy: said, not a traceback
    assert "there is no stack ftm" in capsys.readouterr().err


def test_destroy_refuses_while_the_stacks_bucket_holds_data(
    deployed: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    bucket = deployed["aws"]["bucket"]
    key = f"ftm/{layout.themes(Quarter.parse('2023Q1'))}"
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"x")
    assert main(["destroy", "--yes"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"aws s3 rm s3://{bucket} --recursive" in err
    assert boto3.client("cloudformation").describe_stacks(StackName="ftm")["Stacks"]


def test_destroy_on_a_terminal_asks_for_the_stacks_name(
    deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import io

    from ftm.commands import deploy as commands

    monkeypatch.setattr(commands, "_interactive", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO("ftm-other\n"))
    assert main(["destroy"]) == 2
    assert "not confirmed: nothing was deleted" in capsys.readouterr().err
    assert boto3.client("cloudformation").describe_stacks(StackName="ftm")["Stacks"]
    monkeypatch.setattr("sys.stdin", io.StringIO("ftm\n"))
    assert main(["destroy"]) == 0
    assert "deleted stack ftm" in capsys.readouterr().err


def test_deploy_with_an_existing_bucket_uses_it_and_destroy_leaves_it(
    network: tuple[str, list[str]], capsys: pytest.CaptureFixture
) -> None:
    vpc, subnets = network
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="lab-data")
    s3.put_object(Bucket="lab-data", Key="other-project/keep.txt", Body=b"x")
    args = ["--vpc-id", vpc, "--subnet-ids", subnets[0], "--existing-bucket", "lab-data"]
    assert main(["deploy", *args]) == 0
    settings = load_settings(Path("ftm.toml"))
    assert settings.aws.bucket == "lab-data" and settings.aws.existing_bucket == "lab-data"
    assert settings.storage.root == "s3://lab-data/ftm"
    resources = boto3.client("cloudformation").list_stack_resources(StackName="ftm")["StackResourceSummaries"]
    assert "Bucket" not in {resource["LogicalResourceId"] for resource in resources}
    assert main(["destroy", "--yes"]) == 0  # the bucket is not the stack's: data in it does not matter
    assert s3.get_object(Bucket="lab-data", Key="other-project/keep.txt")["Body"].read() == b"x"


def test_deploy_without_vpc_or_subnets_names_the_settings(capsys: pytest.CaptureFixture) -> None:
    assert main(["deploy"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    for name in ("--vpc-id", "aws.vpc_id", "--subnet-ids", "aws.subnet_ids"):
        assert name in err
    assert main(["deploy", "--vpc-id", "vpc-1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "aws.subnet_ids" in err and "aws.vpc_id" not in err


def test_without_credentials_deploy_and_doctor_exit_4(
    aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a session made earlier keeps its credentials

    assert main(["deploy", "--vpc-id", "vpc-1", "--subnet-ids", "subnet-1"]) == 4
    assert "aws configure" in capsys.readouterr().err
    checks = _checks(capsys, 4)
    assert checks["credentials"]["ok"] is False and "aws sso login" in checks["credentials"]["fix"]
    assert "stack" not in checks  # the rest need credentials: not run, not a pile of the same error


def test_failed_stack_names_the_failing_resources_and_their_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto creates a stack in one step and cannot fail it halfway; CloudFormation's replies are
    scripted here instead, as they come when a compute environment cannot be created."""
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    monkeypatch.setattr(stack.clients, "client", lambda service, settings: cfn)
    stack_id = "arn:aws:cloudformation:us-east-1:123456789012:stack/ftm/1"
    change_set = "arn:aws:cloudformation:us-east-1:123456789012:changeSet/ftm-1/1"
    missing = {"Error": {"Code": "ValidationError", "Message": "Stack with id ftm does not exist"}}

    def described(status: str) -> dict[str, Any]:
        return {
            "Stacks": [
                {
                    "StackName": "ftm",
                    "StackId": stack_id,
                    "StackStatus": status,
                    "CreationTime": "2026-01-01T00:00:00Z",
                }
            ]
        }

    def event(logical: str, kind: str, status: str, reason: str) -> dict[str, Any]:
        return {
            "StackId": stack_id,
            "EventId": logical + status,
            "StackName": "ftm",
            "LogicalResourceId": logical,
            "ResourceType": kind,
            "Timestamp": "2026-01-01T00:00:00Z",
            "ResourceStatus": status,
            "ResourceStatusReason": reason,
        }

    with Stubber(cfn) as stub:
        stub.add_client_error(
            "describe_stacks",
            service_error_code="ValidationError",
            http_status_code=400,
            service_message=missing["Error"]["Message"],
        )
        stub.add_response("create_change_set", {"Id": change_set, "StackId": stack_id})
        stub.add_response("describe_change_set", {"Status": "CREATE_COMPLETE", "Changes": []})
        stub.add_response("describe_change_set", {"Status": "CREATE_COMPLETE", "Changes": []})
        stub.add_response("execute_change_set", {})
        stub.add_response("describe_stacks", described("ROLLBACK_COMPLETE"))  # the waiter
        stub.add_response("describe_stacks", described("ROLLBACK_COMPLETE"))
        stub.add_response(
            "describe_stack_events",
            {
                "StackEvents": [  # newest first
                    event("ftm", "AWS::CloudFormation::Stack", "ROLLBACK_COMPLETE", ""),
                    event(
                        "GpuJobQueue", "AWS::Batch::JobQueue", "CREATE_FAILED", "Resource creation cancelled"
                    ),
                    event(
                        "GpuComputeEnvironment",
                        "AWS::Batch::ComputeEnvironment",
                        "CREATE_FAILED",
                        "Subnet subnet-1 does not exist",
                    ),
                    event("ftm", "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated"),
                    event("Old", "AWS::S3::Bucket", "CREATE_FAILED", "from an earlier deploy"),
                ]
            },
        )
        with pytest.raises(FtmError) as raised:
            stack.deploy(AwsSettings(vpc_id="vpc-1", subnet_ids=["subnet-1"]))
    message = str(raised.value)
    assert "ROLLBACK_COMPLETE" in message
    assert "GpuComputeEnvironment (AWS::Batch::ComputeEnvironment): Subnet subnet-1 does not exist" in message
    assert "cancelled" not in message and "earlier deploy" not in message
    assert "run ftm deploy again" in message
