"""Latency measurement: protocol (interleaving, medians, inputs) and recording in the report and card."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from families import make_model
from torch import nn

from hf_prune import CustomConfig, prune
from hf_prune.evaluation import compare_latency, measure_latency


class _Sleeper(nn.Module):
    """A stand-in model whose forward takes a known time and logs who ran, with which inputs."""

    def __init__(self, name: str, seconds: float, log: list) -> None:
        super().__init__()
        self.name, self.seconds, self.log = name, seconds, log
        self.weight = nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"vocab_size": 50})()

    def forward(self, input_ids: torch.Tensor, use_cache: bool = True) -> torch.Tensor:
        assert use_cache is False
        self.log.append((self.name, tuple(input_ids.shape), int(input_ids.max())))
        time.sleep(self.seconds)
        return input_ids


def test_compare_latency_interleaves_runs_and_reports_the_speedup():
    log = []
    slow, fast = _Sleeper("slow", 0.03, log), _Sleeper("fast", 0.003, log)
    result = compare_latency(slow, fast, batch_size=2, seqlen=7, repeats=4, warmup=1, flops=False)
    assert [name for name, _, _ in log] == ["slow", "fast"] * 5  # A, B, A, B: drift hits both alike
    assert {shape for _, shape, _ in log} == {(2, 7)} and max(v for _, _, v in log) < 50
    assert result["baseline_ms"] >= 30 and result["pruned_ms"] < result["baseline_ms"]
    assert result["speedup"] == pytest.approx(result["baseline_ms"] / result["pruned_ms"])
    assert result["speedup"] > 3
    assert result["batch_size"] == 2 and result["seqlen"] == 7 and result["threads"] >= 1


def test_measure_latency_reports_median_and_rejects_bad_counts():
    log = []
    model = _Sleeper("m", 0.002, log)
    result = measure_latency(model, seqlen=5, repeats=3, warmup=0)
    assert len(log) == 3
    assert result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    assert result["tokens_per_s"] == pytest.approx(5 / (result["median_ms"] / 1000))
    with pytest.raises(ValueError, match="repeats=0"):
        measure_latency(model, repeats=0)
    with pytest.raises(TypeError, match="seqlen"):
        measure_latency(model, seqlen=2.5)
    with pytest.raises(ValueError, match="warmup=-1"):
        compare_latency(model, model, warmup=-1)


def test_measure_speed_records_in_report_and_card(tmp_path):
    model, fam = make_model("llama")
    dense = copy.deepcopy(model)
    pm = prune(model, CustomConfig(description="drop half the blocks"))
    pm.remove_layers([1, 2])
    result = pm.measure_speed(dense, seqlen=16, repeats=3)
    assert pm.report.speed == result and result["speedup"] > 0
    # Two of four blocks gone: the FLOP count (the ideal speedup) drops by well over a third.
    assert result["pruned_flops"] < 0.7 * result["baseline_flops"]
    assert result["ideal_speedup"] == pytest.approx(result["baseline_flops"] / result["pruned_flops"])
    folder = pm.save_pretrained(tmp_path / "ckpt")
    card = (folder / "README.md").read_text()
    section = card.split("## Measured speed")[1].split("##")[0]
    assert f"{result['baseline_ms']:.2f} ms" in section and f"{result['speedup']:.2f}x" in section
    assert "interleaved" in section and f"{result['ideal_speedup']:.2f}x" in section
    # Recorded in pruning_config.json too: the reload carries the measurement.
    from hf_prune import AutoPrunedModelForCausalLM

    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    assert again.report.speed["speedup"] == pytest.approx(result["speedup"])
    alone = pm.measure_speed(seqlen=8, repeats=2)
    assert "speedup" not in alone and alone["pruned_ms"] > 0
