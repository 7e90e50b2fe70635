"""The container image: built from the project's checkout with Docker and pushed to ECR.

The image holds ftm's dependencies, not its code: the code travels as a code package
(`ftm.aws.code_package`). So the image is named by a hash of what it depends on, the dependency
lists in pyproject.toml and the Dockerfile, and is rebuilt only when that hash changes: a tag
already in ECR is not built again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ftm.errors import FtmError, SettingsError, UsageError
from ftm.settings import AwsSettings, update_config_file

# The Dockerfile's build targets: `map` (the default, last stage: map-batch, reduce, name without
# a server) and `llm` (vLLM's image with ftm on top, for a name job that serves its own model).
TARGETS = ("map", "llm")
# The setting each target's URI is written to after a push: what the job definitions run.
SETTING = {"map": "aws.image", "llm": "aws.llm_image"}
DOCKERFILE = "containers/Dockerfile"
# What the image is built from. Docker sends its build context to the daemon whole, and a
# checkout holds a virtualenv and data of many GB: the build gets a copy of these paths only.
CONTEXT = ("pyproject.toml", "README.md", "src", "containers", "deploy")
# AWS Batch's GPU instances (g4dn, g5) are x86_64, whatever machine builds the image.
PLATFORM = "linux/amd64"
# Without a repository (`--no-push`), the image gets this local name.
LOCAL_NAME = "ftm"
# Lines of docker's output an error message repeats.
ERROR_LINES = 25

_ECR_URI = re.compile(
    r"(?P<registry>(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?)"
    r"/(?P<name>[a-z0-9][a-z0-9._/-]*)"
)
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")

Report = Callable[[str], None]


@dataclass(frozen=True)
class ImageResult:
    """What `build_image` did."""

    uri: str  # repository:tag
    target: str
    dependency_hash: str
    built: bool  # False when ECR already held this tag
    pushed: bool
    settings_file: Path | None  # where aws.image (or aws.llm_image) was written; None if not


def find_project(start: Path | None = None, package_dir: Path | None = None) -> Path:
    """The ftm checkout to build from: the current folder or one above it, else the checkout the
    running ftm is installed from (an editable install). A plain wheel install has none."""
    if package_dir is None:
        import ftm

        package_dir = Path(ftm.__file__).parent
    start = Path.cwd() if start is None else start
    candidates = [start, *start.parents, package_dir.parent.parent]  # src/ftm → the checkout
    for folder in candidates:
        if _is_ftm_project(folder):
            return folder.resolve()
    raise UsageError(
        "ftm image build needs ftm's source checkout (pyproject.toml, src/, containers/Dockerfile) "
        f"and found none in {start} or above it: run it from the checkout's folder"
    )


def dependency_hash(project: Path) -> str:
    """sha256 of what the image depends on: pyproject.toml's dependency lists and the Dockerfile.

    ftm's own code is left out on purpose: it travels as the code package, so a code change keeps
    the image."""
    import tomlkit

    pyproject = tomlkit.parse((project / "pyproject.toml").read_text()).unwrap()
    project_table = pyproject.get("project", {})
    inputs = {
        "requires-python": project_table.get("requires-python"),
        "dependencies": project_table.get("dependencies", []),
        "optional-dependencies": project_table.get("optional-dependencies", {}),
        "build-system": pyproject.get("build-system", {}),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode())
    digest.update(b"\0")
    digest.update((project / DOCKERFILE).read_bytes())
    return digest.hexdigest()


def image_tag(target: str, dependencies: str) -> str:
    return f"{target}-{dependencies[:12]}"


def build_image(
    aws: AwsSettings,
    *,
    target: str = "map",
    tag: str | None = None,
    push: bool = True,
    force: bool = False,
    settings_file: Path | None = None,
    project: Path | None = None,
    on_step: Report = lambda line: None,
    on_output: Report = lambda line: None,
) -> ImageResult:
    """Builds the image for `target` and pushes it to `aws.repository`, unless ECR has it already.

    The tag is `<target>-<first 12 of the dependency hash>` unless `tag` is given. Once the image
    is in ECR, its URI is written to `settings_file` (when given) as `aws.image` (map) or
    `aws.llm_image` (llm), which `ftm deploy` points the job definitions at. `on_step` gets one
    line per step, `on_output` every line docker prints."""
    if target not in TARGETS:
        raise UsageError(f"unknown image target {target!r}: choose one of {', '.join(TARGETS)}")
    project = find_project() if project is None else project
    dependencies = dependency_hash(project)
    the_tag = tag or image_tag(target, dependencies)
    if not push:
        uri = f"{aws.repository or LOCAL_NAME}:{the_tag}"
        _docker_build(project, target, uri, dependencies, on_step, on_output)
        return ImageResult(uri, target, dependencies, built=True, pushed=False, settings_file=None)

    if not aws.repository:
        raise UsageError(
            "aws.repository is not set, so there is nowhere to push the image: run `ftm deploy` "
            "first (it creates the ECR repository and writes aws.repository), or pass --no-push"
        )
    repository = _parse_repository(aws.repository)
    uri = f"{aws.repository}:{the_tag}"
    ecr = _ecr_client(aws, repository["region"])
    built = force or not _ecr_has(ecr, repository, the_tag)
    if built:
        _docker_build(project, target, uri, dependencies, on_step, on_output)
        _docker_login(ecr, repository, on_step)
        on_step(f"pushing {uri}")
        _run_docker(["push", uri], "docker push", on_output)
    else:
        on_step(f"{uri} is in ECR already (same dependencies): not built again; --force rebuilds it")
    written = None
    if settings_file is not None:
        update_config_file(settings_file, {SETTING[target]: uri})
        written = settings_file
    return ImageResult(uri, target, dependencies, built=built, pushed=built, settings_file=written)


# --- internals ---------------------------------------------------------------------------------


def _is_ftm_project(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    if not (pyproject.is_file() and (folder / DOCKERFILE).is_file()):
        return False
    import tomlkit

    try:
        return tomlkit.parse(pyproject.read_text()).unwrap().get("project", {}).get("name") == "ftm"
    except Exception:  # an unreadable pyproject.toml is simply not ftm's
        return False


def _parse_repository(uri: str) -> dict[str, str]:
    match = _ECR_URI.fullmatch(uri)
    if match is None:
        raise SettingsError(
            f"aws.repository {uri!r} is not an ECR repository URI "
            "(ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME): run `ftm deploy`, which writes it"
        )
    return match.groupdict()


def _ecr_client(aws: AwsSettings, region: str):  # -> botocore client
    from ftm.aws import clients

    # The repository's URI names its region; a different aws.region would look in the wrong one.
    return clients.client("ecr", aws.model_copy(update={"region": region}))


def _ecr_has(ecr, repository: dict[str, str], tag: str) -> bool:
    from ftm.aws.clients import error_code, explain

    try:
        ecr.describe_images(
            registryId=repository["account"],
            repositoryName=repository["name"],
            imageIds=[{"imageTag": tag}],
        )
    except Exception as error:
        if error_code(error) == "ImageNotFoundException":
            return False
        if error_code(error) == "RepositoryNotFoundException":
            raise UsageError(
                f"ECR has no repository {repository['name']!r} in {repository['region']}: run "
                "`ftm deploy` to create it, or fix aws.repository"
            ) from None
        raise explain(error, "looking up the image in ECR") from None
    return True


def _docker_login(ecr, repository: dict[str, str], on_step: Report) -> None:
    from ftm.aws.clients import explain

    try:
        reply = ecr.get_authorization_token(registryIds=[repository["account"]])
    except Exception as error:
        raise explain(error, "getting an ECR login token") from None
    token = base64.b64decode(reply["authorizationData"][0]["authorizationToken"]).decode()
    user, password = token.split(":", 1)
    on_step(f"logging in to {repository['registry']}")
    # The password goes through stdin: on the command line, any user could read it in `ps`.
    _run_docker(
        ["login", "--username", user, "--password-stdin", repository["registry"]],
        "docker login",
        lambda line: None,
        stdin=password,
    )


def _docker_build(
    project: Path, target: str, uri: str, dependencies: str, on_step: Report, on_output: Report
) -> None:
    _docker()  # before copying anything: say plainly when there is no Docker
    on_step(f"building {uri} (target {target}) from {project}")
    with tempfile.TemporaryDirectory(prefix="ftm-image-") as context:
        for name in CONTEXT:
            source = project / name
            if source.is_dir():
                shutil.copytree(source, Path(context) / name, ignore=_IGNORED)
            elif source.is_file():
                shutil.copy2(source, Path(context) / name)
        arguments = [
            "build",
            "--platform", PLATFORM,
            "--progress", "plain",
            "--file", str(Path(context) / DOCKERFILE),
            "--target", target,
            "--build-arg", f"FTM_DEPENDENCY_HASH={dependencies}",
            "--tag", uri,
            context,
        ]  # fmt: skip
        _run_docker(arguments, "docker build", on_output)


def _docker() -> str:
    docker = shutil.which("docker")
    if docker is None:
        raise FtmError(
            "docker is not on PATH: `ftm image build` builds the image with Docker. Install "
            "Docker and start it (Docker Desktop, or `sudo systemctl start docker`), or run this "
            "where Docker runs, e.g. AWS CloudShell or an EC2 instance"
        )
    return docker


def _run_docker(arguments: list[str], doing: str, on_output: Report, stdin: str | None = None) -> None:
    """Runs docker, passing each line it prints to `on_output`; a failure repeats its last lines."""
    # BuildKit builds only the stages the target needs (never the vLLM stage for `map`).
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    tail: deque[str] = deque(maxlen=ERROR_LINES)
    with subprocess.Popen(
        [_docker(), *arguments],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
    ) as process:
        if stdin is not None:
            assert process.stdin is not None
            process.stdin.write(stdin)
            process.stdin.close()
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            on_output(line)
    if process.returncode != 0:
        output = "\n".join(tail)
        raise FtmError(
            f"{doing} failed (exit code {process.returncode}).{_hint(output)} Its last lines:\n{output}"
        )


def _hint(output: str) -> str:
    """What to do about the docker failures that are about the machine, not the image."""
    if "docker daemon" in output.lower():  # "Cannot connect to the Docker daemon at …"
        return " Start Docker (Docker Desktop, or `sudo systemctl start docker`) and run it again."
    if "buildx" in output:  # BuildKit is required: the legacy builder would build the vLLM stage too
        return (
            " Install Docker's buildx plugin (Debian/Ubuntu: `apt-get install docker-buildx-plugin`; "
            "Docker Desktop has it) and run it again."
        )
    return ""
