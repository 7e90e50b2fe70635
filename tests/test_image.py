"""The container image: what the Dockerfile promises, and `ftm image build` driving a stand-in
`docker` and moto's ECR (build, log in through stdin, push; skipped when ECR has the tag)."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import boto3
import pytest
import tomlkit

from ftm.aws.image import CONTEXT, dependency_hash, find_project, image_tag
from ftm.cli import main
from ftm.errors import UsageError
from ftm.map.embedding import resolve_model
from ftm.settings import FtmSettings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "containers" / "Dockerfile"


# --- the Dockerfile ----------------------------------------------------------------------------


def test_the_default_image_is_the_map_stage_and_both_images_run_ftm() -> None:
    stages = _stages()
    assert stages[-1]["name"] == "map", "a plain `docker build` must give the map image"
    assert "llm" in [stage["name"] for stage in stages]
    for stage in stages:
        if stage["name"] in ("map", "llm"):
            assert json.loads(_last(stage, "ENTRYPOINT")) == ["ftm"], stage["name"]
            user = _last(stage, "USER")
            assert user and user not in ("root", "0"), f"{stage['name']} runs as root"
            assert any(line.startswith("ARG FTM_DEPENDENCY_HASH") for line in _lines(stage))
            assert 'ftm.dependency-hash="${FTM_DEPENDENCY_HASH}"' in _last(stage, "LABEL")


def test_the_map_image_matches_the_cuda_of_the_gpu_extra() -> None:
    map_stage = _stage("map")
    cuda = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-\S*runtime-ubuntu[\d.]+", map_stage["from"])
    assert cuda, map_stage["from"]
    pyproject = tomlkit.parse((REPO / "pyproject.toml").read_text()).unwrap()
    [cuml] = pyproject["project"]["optional-dependencies"]["gpu"]
    assert re.match(r"cuml-cu(\d+)", cuml).group(1) == cuda.group(1)  # cu11 <-> CUDA 11
    runs = [rest for keyword, rest in map_stage["instructions"] if keyword == "RUN"]
    [torch] = [index for index, run in enumerate(runs) if "download.pytorch.org/whl/cu" in run]
    assert f"whl/cu{cuda.group(1)}{cuda.group(2)}" in runs[torch]  # torch's build for the same CUDA
    [project] = [index for index, run in enumerate(runs) if "/tmp/ftm-src[" in run]
    assert torch < project, "torch must be installed before the project"
    extras = set(re.search(r"/tmp/ftm-src\[([^\]]+)\]", runs[project]).group(1).split(","))
    assert {"gpu", "aws", "models"} <= extras
    assert "--extra-index-url https://pypi.nvidia.com" in runs[project]


def test_the_map_image_has_its_models_baked_in() -> None:
    map_stage = _stage("map")
    env = _env(map_stage)
    assert env["HF_HUB_OFFLINE"] == "1"  # nothing downloads at run time
    # No embedding setting in the image: it would beat the settings a job is submitted with.
    assert not any(name.startswith("FTM_") for name in env)
    # The default model's name loads from the `models` extra (installed here too), by path.
    default = FtmSettings().embedding.model
    assert Path(resolve_model(default)).is_dir()
    runs = " ".join(rest for keyword, rest in map_stage["instructions"] if keyword == "RUN")
    assert f"resolve_model('{default}')" in runs and "SentenceTransformer(" in runs  # loaded at build
    assert "load_model('en_core_web_sm')" in runs


def test_the_llm_image_pins_vllm() -> None:
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", _stage("llm")["from"])


# --- the project and its hash ------------------------------------------------------------------


def test_dependency_hash_follows_dependencies_and_the_dockerfile_not_the_code(tmp_path: Path) -> None:
    project = _fake_project(tmp_path / "checkout")
    before = dependency_hash(project)
    (project / "src" / "ftm" / "__init__.py").write_text("# new code\n")
    assert dependency_hash(project) == before
    (project / "containers" / "Dockerfile").write_text("FROM scratch AS map\n# changed\n")
    changed_file = dependency_hash(project)
    assert changed_file != before
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"typer>=0.15"', '"typer>=0.16"'))
    assert dependency_hash(project) != changed_file
    assert image_tag("map", before) == f"map-{before[:12]}"


def test_the_project_is_found_from_a_checkout_but_not_from_a_wheel_install(tmp_path: Path) -> None:
    project = _fake_project(tmp_path / "checkout")
    (project / "src" / "ftm" / "sources").mkdir()
    assert find_project(project / "src" / "ftm" / "sources", tmp_path / "site" / "ftm") == project.resolve()
    assert find_project(tmp_path / "elsewhere", project / "src" / "ftm") == project.resolve()
    with pytest.raises(UsageError, match="run it from the checkout"):
        find_project(tmp_path / "elsewhere", tmp_path / "site-packages" / "ftm")


# --- ftm image build ---------------------------------------------------------------------------


def test_build_logs_in_through_stdin_and_pushes_the_hashed_tag(
    aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    repository = _repository()
    log = _stand_in_docker(tmp_path, monkeypatch)
    Path("ftm.toml").write_text(f'# the stack\n[aws]\nrepository = "{repository}"\n')
    tag = image_tag("map", dependency_hash(REPO))
    uri = f"{repository}:{tag}"

    assert main(["image", "build"]) == 0, capsys.readouterr().err

    calls = _calls(log)
    assert [call["args"][0] for call in calls] == ["build", "login", "push"]
    build, login, push = calls
    assert _option(build, "--tag") == uri and _option(build, "--target") == "map"
    assert _option(build, "--build-arg") == f"FTM_DEPENDENCY_HASH={dependency_hash(REPO)}"
    assert _option(build, "--platform") == "linux/amd64"
    # The build context holds what the image needs and nothing else (no virtualenv, no data).
    assert {"pyproject.toml", "README.md", "src", "containers"} <= set(build["context"]) <= set(CONTEXT)
    registry = repository.split("/")[0]
    password = "123456789012-auth-token"  # what moto's get_authorization_token hands out
    assert login["args"] == ["login", "--username", "AWS", "--password-stdin", registry]
    assert login["stdin"] == password and not any(password in arg for call in calls for arg in call["args"])
    assert push["args"] == ["push", uri]
    settings = tomlkit.parse(Path("ftm.toml").read_text())
    assert settings["aws"]["image"] == uri and settings["aws"]["repository"] == repository
    assert "# the stack" in Path("ftm.toml").read_text()  # comments kept
    assert "stand-in docker building" in capsys.readouterr().err  # docker's lines are shown

    # ECR holds the tag now: a second run builds nothing and still points aws.image at it.
    _put_image(tag)
    Path("ftm.toml").write_text(f'[aws]\nrepository = "{repository}"\n')
    assert main(["image", "build", "--json"]) == 0
    out = capsys.readouterr()
    assert len(_calls(log)) == 3, "nothing is built or pushed again"
    assert json.loads(out.out)["built"] is False and "already in ECR" in out.err
    assert tomlkit.parse(Path("ftm.toml").read_text())["aws"]["image"] == uri


def test_llm_target_and_tag_are_passed_and_set_aws_llm_image(
    aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository = _repository()
    log = _stand_in_docker(tmp_path, monkeypatch)
    Path("ftm.toml").write_text(f'[aws]\nrepository = "{repository}"\n')
    assert main(["image", "build", "--target", "llm", "--tag", "try-1"]) == 0
    build, _, push = _calls(log)
    assert _option(build, "--target") == "llm" and push["args"] == ["push", f"{repository}:try-1"]
    aws = tomlkit.parse(Path("ftm.toml").read_text())["aws"]
    assert aws["llm_image"] == f"{repository}:try-1" and "image" not in aws


def test_no_push_builds_locally_without_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _stand_in_docker(tmp_path, monkeypatch)
    assert main(["image", "build", "--no-push"]) == 0
    [build] = _calls(log)
    assert _option(build, "--tag") == f"ftm:{image_tag('map', dependency_hash(REPO))}"
    assert not Path("ftm.toml").exists()


def test_without_docker_the_error_says_where_to_run_it(
    aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    Path("ftm.toml").write_text(f'[aws]\nrepository = "{_repository()}"\n')
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["image", "build"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "docker is not on PATH" in err and "CloudShell" in err and "Traceback" not in err


def test_a_failing_docker_build_shows_its_last_lines(
    aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    Path("ftm.toml").write_text(f'[aws]\nrepository = "{_repository()}"\n')
    log = _stand_in_docker(tmp_path, monkeypatch)
    monkeypatch.setenv("STAND_IN_FAIL", "1")
    assert main(["image", "build"]) == 1
    err = capsys.readouterr().err
    assert "docker build failed (exit code 17)" in err and "no space left on device" in err
    assert [call["args"][0] for call in _calls(log)] == ["build"]  # no login, no push
    assert "image" not in tomlkit.parse(Path("ftm.toml").read_text())["aws"]


def test_without_a_repository_it_says_to_deploy_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    log = _stand_in_docker(tmp_path, monkeypatch)
    assert main(["image", "build"]) == 2
    assert "ftm deploy" in capsys.readouterr().err
    assert not log.exists()


# --- helpers -----------------------------------------------------------------------------------

STAND_IN = """\
#!{python}
# A stand-in for docker: records its arguments, its stdin and (for build) the context's files.
import json, os, sys
args = sys.argv[1:]
call = {{"args": args, "stdin": sys.stdin.read()}}
if args[0] == "build":
    call["context"] = sorted(os.listdir(args[-1]))
    print("stand-in docker building", flush=True)
with open({log!r}, "a") as log:
    log.write(json.dumps(call) + "\\n")
if os.environ.get("STAND_IN_FAIL"):
    print("#12 ERROR: failed to copy files: no space left on device")
    sys.exit(17)
"""


def _stand_in_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "docker-calls.jsonl"
    docker = folder / "docker"
    docker.write_text(STAND_IN.format(python=sys.executable, log=str(log)))
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{sys.exec_prefix}/bin:/usr/bin:/bin")
    return log


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _option(call: dict, name: str) -> str:
    return call["args"][call["args"].index(name) + 1]


def _repository() -> str:
    return boto3.client("ecr").create_repository(repositoryName="ftm")["repository"]["repositoryUri"]


def _put_image(tag: str) -> None:
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 1,
            "digest": "sha256:" + "1" * 64,
        },
        "layers": [],
    }
    boto3.client("ecr").put_image(repositoryName="ftm", imageManifest=json.dumps(manifest), imageTag=tag)


def _fake_project(folder: Path) -> Path:
    (folder / "src" / "ftm").mkdir(parents=True)
    (folder / "containers").mkdir()
    (folder / "src" / "ftm" / "__init__.py").write_text("")
    (folder / "containers" / "Dockerfile").write_text("FROM scratch AS map\n")
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "ftm"\ndependencies = ["typer>=0.15"]\n'
        '[project.optional-dependencies]\ngpu = ["cuml-cu11"]\n'
    )
    return folder


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, rest) per instruction: continuation lines joined, comments dropped."""
    joined: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.strip().startswith("#"):  # comments, also between continued lines
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            joined.append(current.strip())
        current = ""
    return [
        (item.split(None, 1)[0].upper(), item.split(None, 1)[1] if " " in item else "") for item in joined
    ]


def _stages() -> list[dict]:
    arguments: dict[str, str] = {}
    stages: list[dict] = []
    for keyword, rest in _instructions(DOCKERFILE.read_text()):
        if keyword == "ARG" and not stages and "=" in rest:
            name, value = rest.split("=", 1)
            arguments[name] = value
        elif keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda match: arguments[match.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append({"from": image, "name": name, "instructions": []})
        else:
            stages[-1]["instructions"].append((keyword, rest))
    return stages


def _stage(name: str) -> dict:
    [stage] = [stage for stage in _stages() if stage["name"] == name]
    return stage


def _last(stage: dict, keyword: str) -> str:
    found = [rest for key, rest in stage["instructions"] if key == keyword]
    return found[-1] if found else ""


def _lines(stage: dict) -> list[str]:
    return [f"{keyword} {rest}".strip() for keyword, rest in stage["instructions"]]


def _env(stage: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage["instructions"]:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env
