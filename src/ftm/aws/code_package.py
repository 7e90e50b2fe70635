"""The code package: ftm's own code, shipped to containers so that a code change needs no new image.

The image holds the dependencies (rebuilt only when they change: `ftm image build`); the code
travels as a zip of the `ftm` package folder, named by its content hash and put once under the
storage root (`layout.code_package`). A container started with `FTM_CODE=code/<sha256>.zip`
fetches it, checks that its bytes hash to its name, unpacks it into a temporary folder and runs
the same command again with that folder first on `PYTHONPATH` and `FTM_CODE_ACTIVE=<sha256>`, so
the uploaded code runs on the image's dependencies. The seed's Spark pipeline did the same with
EMR's `--py-files`; SkyPilot ships its own wheel the same way.

A zip of the package folder rather than a wheel: Python imports it as it is, with no pip and no
install step at container start, and the image's installed ftm stays what it was.

Settings travel the same way when a job's environment cannot hold them (AWS Batch's overrides
are capped at 8,192 characters, see ftm.backends.aws_batch): `upload_settings` puts the job's
FTM_* variables beside the code packages as JSON named by its hash, and `activate` fetches them
(`FTM_JOB_SETTINGS`), checks the hash and hands them to the command as its environment.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

from ftm import layout
from ftm.errors import DataError, FtmError, UsageError
from ftm.settings import CODE_ACTIVE_ENV, CODE_ENV, ENV_PREFIX, JOB_SETTINGS_ENV, RESERVED_ENV
from ftm.storage import Store

PACKAGE = "ftm"
# Every entry gets the same timestamp and mode, so the bytes depend on the code alone. 1980-01-01
# is the earliest time a zip can hold.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o100644 << 16  # a regular file, rw-r--r--
_UNIX = 3  # ZipInfo.create_system; the default depends on the building machine
_SHA256 = re.compile(r"[0-9a-f]{64}")
# `python -m ftm`, less the current folder on sys.path, as the `ftm` console script runs: a
# folder in the job's working directory must not shadow the package (or anything it imports).
_BOOTSTRAP = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "sys.argv[0] = 'ftm'\n"
    "from ftm.__main__ import run\n"
    "run()\n"
)


@dataclass(frozen=True)
class CodePackage:
    """A zip of the `ftm` package folder (`ftm/...` at its root), named by its sha256."""

    sha256: str
    data: bytes = field(repr=False)
    version: str  # ftm's version as installed where the package was built, for run records

    @property
    def path(self) -> str:
        """Where it lives under the storage root."""
        return layout.code_package(self.sha256)


def build(package_dir: Path | None = None) -> CodePackage:
    """Zips the running ftm package (or `package_dir`, a folder laid out like it) deterministically:
    the same code gives the same bytes and hash, whenever and wherever it is built.

    Left out: `__pycache__`, compiled files, hidden files and editors' temporary files."""
    import ftm

    folder = Path(ftm.__file__).parent if package_dir is None else Path(package_dir)
    if not (folder / "__init__.py").is_file():
        raise UsageError(f"{folder} is not a Python package folder (no __init__.py)")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for relative in _package_files(folder):
            info = zipfile.ZipInfo(f"{PACKAGE}/{relative}", date_time=_ZIP_TIME)
            info.external_attr = _FILE_MODE
            info.create_system = _UNIX
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (folder / relative).read_bytes(), compresslevel=9)
    data = buffer.getvalue()
    return CodePackage(sha256=hashlib.sha256(data).hexdigest(), data=data, version=ftm.__version__)


def upload(store: Store, package: CodePackage) -> str:
    """Puts the package under the storage root, create-only, and returns its path there.

    Content-addressed: a package already there has the same bytes, so it is never rewritten, and
    runs submitted with the same code share one object."""
    store.create_bytes(package.path, package.data)
    return package.path


def upload_settings(store: Store, variables: Mapping[str, str]) -> str:
    """Puts a job's FTM_* variables under the storage root as JSON named by its sha256, create-only
    as the code package, and returns the path a container finds them by (`FTM_JOB_SETTINGS`)."""
    data = json.dumps(dict(variables), sort_keys=True).encode()
    path = layout.job_settings(hashlib.sha256(data).hexdigest())
    store.create_bytes(path, data)
    return path


def activate(argv: list[str], environ: Mapping[str, str] = os.environ) -> None:
    """Runs the command in `argv` with the code package `FTM_CODE` names, if it names one.

    Called first thing by `ftm`. Without `FTM_CODE`, or when that package is already the running
    code (`FTM_CODE_ACTIVE`), it returns and the installed ftm runs. Otherwise it does not return:
    it replaces this process with `python -m ftm <argv[1:]>` running the package's code. Raises
    FtmError when the package is missing, damaged or misnamed."""
    reference = environ.get(CODE_ENV)
    if not reference:
        return
    sha256 = _sha_of(reference)
    if environ.get(CODE_ACTIVE_ENV) == sha256:
        return
    folder = _unpacked(reference, sha256, argv, environ)
    env = dict(environ)
    if environ.get(JOB_SETTINGS_ENV):
        env.update(_job_settings(env.pop(JOB_SETTINGS_ENV), argv, environ))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), environ.get("PYTHONPATH")]))
    env[CODE_ACTIVE_ENV] = sha256
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, [sys.executable, "-c", _BOOTSTRAP, *argv[1:]], env)


def running_code(environ: Mapping[str, str] = os.environ) -> str:
    """The code this process runs, for run records: `ftm 0.1.0 sha256:<first 12 hex digits>`.

    The hash is the code package's: the one activated, else that of the installed package, so
    a local run and a container running the same code record the same hash."""
    import ftm

    sha256 = environ.get(CODE_ACTIVE_ENV) or _installed_sha256()
    return f"{PACKAGE} {ftm.__version__} sha256:{sha256[:12]}"


# --- internals ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _installed_sha256() -> str:
    return build().sha256


def _package_files(folder: Path) -> list[str]:
    """The package's files as sorted POSIX paths relative to `folder`."""
    found: list[str] = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = [name for name in subdirectories if _kept(name) and name != "__pycache__"]
        for name in files:
            if _kept(name) and not name.endswith((".pyc", ".pyo")):
                found.append((Path(directory) / name).relative_to(folder).as_posix())
    return sorted(found)


def _kept(name: str) -> bool:
    """False for hidden files and editors' or ftm's temporary files (`x~`, `x.swp`, `x.tmp-…`)."""
    return not (
        name.startswith((".", "#")) or name.endswith(("~", ".swp", ".tmp", ".bak")) or ".tmp-" in name
    )


def _sha_of(reference: str) -> str:
    """The sha256 a package path names: `code/<sha256>.zip` (as `upload` puts it)."""
    name = PurePosixPath(reference)
    expected = PurePosixPath(layout.code_package("0" * 64))
    if name.suffix != expected.suffix or not _SHA256.fullmatch(name.stem):
        raise FtmError(
            f"{CODE_ENV}={reference!r} does not name a code package: expected a path under the "
            f"storage root like {layout.code_package('<sha256>')}, as `ftm submit` uploads it"
        )
    return name.stem


def _job_settings(reference: str, argv: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The FTM_* variables `upload_settings` put at `reference`, once their bytes hash to its name."""
    name = PurePosixPath(reference).name
    expected = PurePosixPath(layout.job_settings("0" * 64)).name
    prefix, suffix = expected[: expected.index("0")], expected[expected.rindex("0") + 1 :]
    sha256 = name[len(prefix) : -len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
    if not _SHA256.fullmatch(sha256):
        raise FtmError(
            f"{JOB_SETTINGS_ENV}={reference!r} does not name a job's settings: expected a path under "
            f"the storage root like {layout.job_settings('<sha256>')}, as `ftm submit` uploads them"
        )
    variables = json.loads(_fetch(reference, sha256, argv, environ, f"job settings ({JOB_SETTINGS_ENV})"))
    if not isinstance(variables, dict) or not all(
        isinstance(value, str) and name.startswith(ENV_PREFIX) and name not in RESERVED_ENV
        for name, value in variables.items()
    ):
        raise DataError(f"job settings {reference} are not FTM_* settings variables")
    return variables


def _unpacked(reference: str, sha256: str, argv: list[str], environ: Mapping[str, str]) -> Path:
    """The folder holding the package's `ftm/`, unpacked once per machine and reused after."""
    base = Path(tempfile.gettempdir()) / "ftm-code"
    target = base / sha256
    if (target / PACKAGE / "__init__.py").is_file():
        _check_owner(base)
        return target
    data = _fetch(reference, sha256, argv, environ, f"code package ({CODE_ENV})")
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_owner(base)
    # Unpacked beside its final name, then renamed: a crash never leaves a half-unpacked package
    # under the name that `activate` reuses, and of two processes racing, one rename wins.
    staging = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=base))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                parts = PurePosixPath(name).parts
                if not parts or parts[0] != PACKAGE or ".." in parts or name.startswith("/"):
                    raise DataError(f"code package {reference} holds {name!r}, outside {PACKAGE}/")
            archive.extractall(staging)
        os.rename(staging, target)
    except OSError:
        if not (target / PACKAGE / "__init__.py").is_file():
            raise FtmError(f"cannot unpack code package {reference} into {target}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _fetch(reference: str, sha256: str, argv: list[str], environ: Mapping[str, str], what: str) -> bytes:
    """`reference`'s bytes from the storage root of the job's settings (FTM_STORAGE, which always
    travels in the environment), once they hash to `sha256`, its name; `what` names it in errors."""
    from ftm.settings import load_settings

    settings = load_settings(_config_flag(argv), environ=environ)
    store = Store.from_settings(settings.storage)
    try:
        data = store.read_bytes(reference)
    except DataError:
        raise DataError(
            f"{what} {store.uri(reference)} does not exist: check storage.root "
            "(FTM_STORAGE__ROOT), or submit again to upload it"
        ) from None
    except OSError as error:  # an unreachable endpoint
        raise FtmError(f"cannot read {what} {store.uri(reference)}: {error}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DataError(
            f"{what} {reference} is damaged or was replaced: its bytes hash to sha256:{actual[:12]}, "
            f"not to the sha256:{sha256[:12]} its name says. Submit again: `ftm submit` uploads it"
        )
    return data


def _config_flag(argv: list[str]) -> Path | None:
    """The `--config FILE` given on the command line, which the package is read with too."""
    for index, argument in enumerate(argv):
        if argument == "--config" and index + 1 < len(argv):
            return Path(argv[index + 1])
        if argument.startswith("--config="):
            return Path(argument.split("=", 1)[1])
    return None


def _check_owner(base: Path) -> None:
    # Code unpacked there is run: a shared temporary folder made by another user could hold
    # anything under the expected name.
    if hasattr(os, "getuid") and base.stat().st_uid != os.getuid():
        raise FtmError(
            f"{base} belongs to another user, so the code in it cannot be trusted: set TMPDIR to a "
            "folder of your own"
        )
