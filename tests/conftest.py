"""Fixtures shared by the tests: an isolated working folder, moto's S3 server on 127.0.0.1, and
storage roots on a local folder and on that S3, so the same test runs against both."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# A shell without job control starts its background commands (`make test &` in a script) with
# SIGINT ignored, and a child inherits that: then the tests' own Ctrl-C (SIGINT to a child's process
# group) never reaches ftm. Python installs its handler only where SIGINT was not ignored, so this
# puts it back, for pytest and, through exec's reset of handled signals, for every child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if TYPE_CHECKING:
    from ftm.storage import Store
    from wrds_server import WrdsServer

REPO = Path(__file__).resolve().parents[1]

# Credentials for moto only; set before any AWS client exists, and never real ones.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        # Nothing reaches the Hugging Face hub: a model config (ftm doctor) comes from a folder.
        "HF_HUB_OFFLINE": "1",
    }
)


# The embedding path the suite runs under: these FTM_* variables are kept from the outside, so
# `FTM_EMBEDDING__PRECISION=int8 make test` runs every test that maps under int8 (the README's
# Development section). Tests whose outcome depends on the path pin their own settings.
FORCED_PATH = ("FTM_EMBEDDING__PRECISION", "FTM_EMBEDDING__BACKEND", "FTM_EMBEDDING__INT8_KERNELS")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in its own folder, with no FTM_* variables from the outside but the forced
    embedding path (FORCED_PATH)."""
    for name in list(os.environ):
        if name.upper().startswith("FTM_") and name.upper() not in FORCED_PATH:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback: pyarrow's C++ S3 client cannot be intercepted in-process."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_root(s3_endpoint: str) -> str:
    """A fresh bucket on the moto server, as an s3:// storage root with a prefix."""
    import boto3

    bucket = f"ftm-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/research"


@pytest.fixture(params=["local", "s3"])
def storage_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """`storage` settings for a local folder and for S3 on moto: tests using it run on both."""
    if request.param == "local":
        return {"root": str(tmp_path / "store")}
    s3 = {"root": request.getfixturevalue("s3_root"), "endpoint_url": request.getfixturevalue("s3_endpoint")}
    return s3


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    """The test corpus (tests/corpus.py). Without it the tests that need it fail, saying what to
    do: they are marked `corpus`, so `pytest -m "not corpus"` runs the others."""
    import corpus

    problem = corpus.missing(corpus.PATH)
    if problem:
        pytest.fail(f'{problem}; or run the tests that do not need it: pytest -m "not corpus"', pytrace=False)
    return corpus.PATH


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # fixturenames holds the fixtures a test needs, directly or not
        if "shared_corpus" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.corpus)


@pytest.fixture(scope="session")
def full_quarter(tmp_path_factory: pytest.TempPathFactory, shared_corpus: Path) -> Store:
    """The whole of 2016Q4 from the shared corpus, prefetched once for the session (read-only)."""
    from map_inputs import prefetch_quarter

    return prefetch_quarter(shared_corpus, tmp_path_factory.mktemp("full-quarter"))


@pytest.fixture(scope="session")
def wrds_server(shared_corpus: Path) -> Iterator[WrdsServer]:
    """A throw-away PostgreSQL 15 on 127.0.0.1 with the WRDS tables, seeded with 2016Q4 calls.

    `wrds_server.seed` lists what a correct reader must find; see tests/wrds_server.py.
    """
    from wrds_server import WrdsServer

    server = WrdsServer.start(shared_corpus)
    yield server
    server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import pyarrow.fs

    pyarrow.fs.finalize_s3()  # pyarrow's S3 client must be finalised before interpreter exit


@pytest.fixture
def aws_endpoint(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every boto3 client on moto's server (through the SDK's AWS_ENDPOINT_URL, which subprocesses
    inherit too), with AWS Batch jobs run without Docker; moto's state is reset for each test."""
    import httpx

    httpx.post(f"{s3_endpoint}/moto-api/reset").raise_for_status()
    httpx.post(f"{s3_endpoint}/moto-api/config", json={"batch": {"use_docker": False}}).raise_for_status()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return s3_endpoint


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write, root included (`chattr +i`), as a read-only mount would be."""
    import shutil
    import subprocess

    folder = tmp_path / "immutable"
    folder.mkdir()
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"this file system cannot make a folder immutable: {made.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
