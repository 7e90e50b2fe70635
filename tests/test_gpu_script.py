"""benchmarks/gpu.sh, the one command for a lent GPU machine, run here where there is no GPU: it
must still finish, say at the top that there is no GPU and where each row ran instead, and print
its table with a real embedding speed. `--smallest` keeps it to 2 firms of one call each;
`--python` runs it with this interpreter rather than making a venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_script_on_a_machine_without_gpu(shared_corpus: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this checks the CPU-only path; on a GPU machine run bash benchmarks/gpu.sh itself")
    report = tmp_path / "gpu.json"
    command = ["bash", str(REPO / "benchmarks" / "gpu.sh"), "--smallest", "--python", sys.executable]
    # An empty carried folder: no wheels to install, the corpus preprocessed on the spot.
    command += ["--carry", str(tmp_path / "carry"), "--json", str(report)]
    env = {**os.environ, "SHARED_CORPUS": str(shared_corpus), "TMPDIR": str(tmp_path)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    out = done.stdout
    assert "nvidia-smi: not found" in out or "sees no GPU" in out
    assert "NO GPU FOUND" in out
    # Where each row ran, before the table: nothing on a GPU.
    where = next(line for line in out.splitlines() if line.startswith("Rows: "))
    assert "embedding on the CPU instead" in where and "map on the CPU instead" in where
    assert "cuML skipped" in where

    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"embedding, sentences/s", "map, firms/min", "cuML clustering, firms/min"} <= set(rows)
    embedding = [cell.strip() for cell in rows["embedding, sentences/s"].split("|")]
    assert float(embedding[2].replace(",", "")) > 0  # ftm's sentences/s
    assert "CPU" in embedding[5]

    found = {row["row"]: row for row in json.loads(report.read_text())["rows"]}
    assert found["embedding, sentences/s"]["ftm"] > 0 and found["embedding, sentences/s"]["sentences"] > 0
    assert found["map, firms/min"]["ftm"] > 0
    assert found["cuML clustering, firms/min"]["ran_on"] == "skipped"
