"""The code package: ftm's code zipped deterministically, uploaded once, and run in place of the
installed ftm when FTM_CODE names it (what a Batch container does)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest

import ftm
from ftm import layout
from ftm.aws import code_package
from ftm.errors import FtmError
from ftm.settings import CODE_ACTIVE_ENV, CODE_ENV
from ftm.storage import Store


def test_build_is_deterministic_and_holds_the_package_without_compiled_files() -> None:
    first, second = code_package.build(), code_package.build()
    assert first.data == second.data and first.sha256 == second.sha256
    assert first.sha256 == hashlib.sha256(first.data).hexdigest()
    names = zipfile.ZipFile(io.BytesIO(first.data)).namelist()
    assert names == sorted(names)
    assert "ftm/__init__.py" in names and "ftm/__main__.py" in names
    sql = {name for name in names if name.startswith("ftm/prefetch/sources/") and name.endswith(".sql")}
    shipped = {
        f"ftm/prefetch/sources/{path.name}"
        for path in (Path(ftm.__file__).parent / "prefetch" / "sources").glob("*.sql")
    }
    assert sql == shipped and sql
    assert not [name for name in names if name.endswith(".pyc") or "__pycache__" in name]
    assert first.version == ftm.__version__
    assert first.path == layout.code_package(first.sha256) == f"code/{first.sha256}.zip"


def test_build_ignores_caches_and_temporary_files_but_sees_code_changes(tmp_path: Path) -> None:
    package = _copy_of_ftm(tmp_path / "modified-ftm")
    before = code_package.build(package)
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"compiled")
    (package / "name" / "naming.py~").write_text("editor backup")
    (package / ".settings.py.swp").write_text("editor swap")
    os.utime(package / "layout.py", (0, 0))  # timestamps are not content
    assert code_package.build(package).sha256 == before.sha256
    (package / "layout.py").write_text((package / "layout.py").read_text() + "\n# changed\n")
    assert code_package.build(package).sha256 != before.sha256


def test_upload_puts_the_package_once(s3_root: str, s3_endpoint: str) -> None:
    store = Store(s3_root, endpoint_url=s3_endpoint)
    package = code_package.build()
    assert code_package.upload(store, package) == f"code/{package.sha256}.zip"
    assert code_package.upload(store, package) == f"code/{package.sha256}.zip"
    bucket, prefix = s3_root.removeprefix("s3://").split("/", 1)
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert [item["Key"] for item in listed["Contents"]] == [f"{prefix}/code/{package.sha256}.zip"]
    assert store.read_bytes(f"code/{package.sha256}.zip") == package.data


def test_uploaded_code_runs_in_place_of_the_installed_ftm(
    tmp_path: Path, s3_root: str, s3_endpoint: str
) -> None:
    package = code_package.build(_copy_of_ftm(tmp_path / "modified-ftm", version="9.9.9-uploaded"))
    path = code_package.upload(Store(s3_root, endpoint_url=s3_endpoint), package)
    env = _environment(tmp_path, s3_root, s3_endpoint, code=path)

    result = _ftm(["--version"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ftm 9.9.9-uploaded"
    unpacked = tmp_path / "tmp" / "ftm-code" / package.sha256
    assert (unpacked / "ftm" / "__init__.py").is_file()

    # Unpacked once per machine: with the object gone, the unpacked copy still serves.
    bucket, prefix = s3_root.removeprefix("s3://").split("/", 1)
    boto3.client("s3", endpoint_url=s3_endpoint).delete_object(Bucket=bucket, Key=f"{prefix}/{path}")
    again = _ftm(["--version"], env)
    assert again.returncode == 0 and again.stdout.strip() == "ftm 9.9.9-uploaded"

    # As in a container: the console script, in a working folder whose `ftm/` must not shadow it.
    decoy = tmp_path / "workdir" / "ftm"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise SystemExit('the decoy in the working folder ran')\n")
    script = subprocess.run(
        [str(Path(sys.executable).parent / "ftm"), "--version"],
        env=env, cwd=decoy.parent, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert script.returncode == 0, script.stderr
    assert script.stdout.strip() == "ftm 9.9.9-uploaded"

    plain = _ftm(["--version"], _environment(tmp_path, s3_root, s3_endpoint, code=None))
    assert plain.returncode == 0 and plain.stdout.strip() == f"ftm {ftm.__version__}"


def test_a_package_whose_bytes_do_not_match_its_name_is_refused(
    tmp_path: Path, s3_root: str, s3_endpoint: str
) -> None:
    package = code_package.build()
    forged = layout.code_package("0" * 64)
    Store(s3_root, endpoint_url=s3_endpoint).create_bytes(forged, package.data)
    result = _ftm(["--version"], _environment(tmp_path, s3_root, s3_endpoint, code=forged))
    assert result.returncode == 1
    assert "damaged or was replaced" in result.stderr and "sha256:000000000000" in result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "tmp" / "ftm-code" / ("0" * 64)).exists()


def test_activation_replaces_the_process_with_the_same_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(str(tmp_path / "store"))
    package = code_package.build()
    path = code_package.upload(store, package)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda exe, args, env: calls.append((exe, args, env)))
    environ = {CODE_ENV: path, "FTM_STORAGE__ROOT": str(tmp_path / "store"), "PYTHONPATH": "/elsewhere"}

    code_package.activate(["/usr/bin/ftm", "map-batch", "--batch", "batch_003"], environ)

    [(executable, arguments, env)] = calls
    folder = tmp_path / "tmp" / "ftm-code" / package.sha256
    assert executable == sys.executable
    assert arguments[:2] == [sys.executable, "-c"] and "from ftm.__main__ import run" in arguments[2]
    assert arguments[3:] == ["map-batch", "--batch", "batch_003"]
    assert env["PYTHONPATH"] == f"{folder}{os.pathsep}/elsewhere"
    assert env[CODE_ACTIVE_ENV] == package.sha256 and env[CODE_ENV] == path
    assert (folder / "ftm" / "__init__.py").read_bytes() == (
        Path(ftm.__file__).parent / "__init__.py"
    ).read_bytes()


def test_activation_does_nothing_without_a_package_or_when_it_runs_already(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail("must not re-run"))
    sha = "a" * 64
    code_package.activate(["ftm", "--version"], {})
    # The storage root does not exist: reading anything would fail.
    code_package.activate(
        ["ftm"], {CODE_ENV: f"code/{sha}.zip", CODE_ACTIVE_ENV: sha, "FTM_STORAGE__ROOT": "/nonexistent"}
    )


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("code/latest.zip", "does not name a code package"),
        (f"code/{'b' * 64}.whl", "does not name a code package"),
        (f"code/{'c' * 64}.zip", "does not exist"),
    ],
)
def test_activation_errors_say_what_to_do(
    reference: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(FtmError, match=message) as raised:
        code_package.activate(["ftm"], {CODE_ENV: reference, "FTM_STORAGE__ROOT": str(tmp_path / "store")})
    assert raised.value.exit_code == 1


def test_running_code_names_the_version_and_the_package_hash() -> None:
    sha = code_package.build().sha256
    assert code_package.running_code({}) == f"ftm {ftm.__version__} sha256:{sha[:12]}"
    assert (
        code_package.running_code({CODE_ACTIVE_ENV: "d" * 64}) == f"ftm {ftm.__version__} sha256:{'d' * 12}"
    )


# --- helpers -----------------------------------------------------------------------------------


def _copy_of_ftm(target: Path, version: str | None = None) -> Path:
    shutil.copytree(Path(ftm.__file__).parent, target, ignore=shutil.ignore_patterns("__pycache__"))
    if version is not None:
        init = target / "__init__.py"
        text = init.read_text()
        assert text.count('__version__ = version("ftm")') == 1
        init.write_text(text.replace('__version__ = version("ftm")', f"__version__ = {version!r}"))
    return target


def _environment(tmp_path: Path, s3_root: str, s3_endpoint: str, code: str | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("FTM_")}
    env.update(
        {
            "FTM_STORAGE__ROOT": s3_root,
            "FTM_STORAGE__ENDPOINT_URL": s3_endpoint,
            "TMPDIR": str(tmp_path / "tmp"),  # where the package is unpacked: this test's own
        }
    )
    env.pop("PYTHONPATH", None)
    if code is not None:
        env[CODE_ENV] = code
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return env


def _ftm(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftm", *arguments], env=env, capture_output=True, text=True, timeout=180
    )
