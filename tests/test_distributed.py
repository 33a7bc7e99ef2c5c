"""Data-parallel calibration under `accelerate launch` (2 CPU processes, gloo) equals one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_prune.calibration.distributed import all_reduce_collectors, shard_batches, world

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "prune_llava.py"


def test_single_process_is_a_no_op():
    from hf_prune.calibration.stats import InputSqNorm

    assert world() == (0, 1)
    batches = list(range(5))
    assert shard_batches(batches) is batches
    col = InputSqNorm(3)
    col.update(torch.ones(2, 3))
    all_reduce_collectors({"x": col})
    assert col.tokens == 2 and torch.equal(col.sum_sq, torch.full((3,), 2.0))


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_accelerate_launch_two_processes_equals_one(tmp_path):
    bin_dir = Path(sys.executable).parent
    args = ["--nsamples", "16", "--eval-images", "12"]
    one = _run([sys.executable, str(EXAMPLE), "--output", str(tmp_path / "one"), *args], tmp_path)
    launch = [
        str(bin_dir / "accelerate"),
        "launch",
        "--multi_gpu",  # the torchrun launcher; on a machine without GPUs the example joins with gloo
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    two = _run([*launch, str(EXAMPLE), "--output", str(tmp_path / "two"), *args], tmp_path)
    assert "processes: 1;" in one and "processes: 2;" in two
    a = torch.load(tmp_path / "one" / "result.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "result.pt", weights_only=True)
    assert a["kept"] == b["kept"]
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5)
    assert (tmp_path / "two" / "checkpoint" / "README.md").is_file()
