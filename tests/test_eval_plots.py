"""Evaluation plots drawn from real reports and measurements write non-empty images."""

from __future__ import annotations

import copy

import matplotlib
import pytest
from families import make_model

from hf_prune import CustomConfig, MagnitudeConfig, prune
from hf_prune.plots.eval import (
    activation_norms,
    plot_activation_norms,
    plot_benchmark_comparison,
    plot_layer_importance,
    plot_layer_ratios,
    plot_semantic_drift,
    report_layer_scores,
)

matplotlib.use("Agg")


def _png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 8000, path
    return data


@pytest.fixture(scope="module")
def reports():
    uniform = prune(make_model("llama")[0], MagnitudeConfig(sparsity=0.5), progress=False).report
    global_ = prune(
        make_model("llama")[0], MagnitudeConfig(sparsity=0.5, allocation="global"), progress=False
    ).report
    pm = prune(make_model("llama")[0], CustomConfig(description="mixed"), progress=False)
    for i in range(4):
        pm.prune_neurons(i, list(range(12 + 8 * i)))
    pm.prune_heads(0, [0, 1])
    pm.remove_layers([2])
    return {"uniform": uniform, "global": global_, "structured": pm.report}


def test_layer_importance_heatmap(reports, tmp_path):
    scores = report_layer_scores(reports["uniform"])
    assert sorted(scores) == [0, 1, 2, 3] and all(v > 0 for v in scores.values())
    fig = plot_layer_importance(
        {
            "magnitude/uniform": reports["uniform"],
            "magnitude/global": reports["global"],
            "given": [3, 1, 2, 0.5],
        },
        save_path=tmp_path / "importance.png",
    )
    _png(tmp_path / "importance.png")
    heat = fig.axes[0]
    assert [t.get_text() for t in heat.get_xticklabels()] == [
        "magnitude/uniform",
        "magnitude/global",
        "given",
    ]
    assert [t.get_text() for t in heat.get_yticklabels()] == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="alpha_peak"):
        report_layer_scores(reports["uniform"], "alpha_peak")
    with pytest.raises(ValueError, match="empty"):
        plot_layer_importance({})


def test_layer_ratio_bars(reports, tmp_path):
    fig = plot_layer_ratios(reports["global"], save_path=tmp_path / "ratios_unstructured.png")
    _png(tmp_path / "ratios_unstructured.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["measured sparsity", "requested ratio"]
    fig = plot_layer_ratios(reports["structured"], save_path=tmp_path / "ratios_structured.png")
    _png(tmp_path / "ratios_structured.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["attention params removed", "mlp params removed", "block removed"]
    removed_bar = [p for p in fig.axes[0].patches if p.get_height() == 1.0]
    assert len(removed_bar) == 1  # block 2
    from hf_prune.report import PruningReport

    with pytest.raises(ValueError, match="no per-layer change"):
        plot_layer_ratios(PruningReport(method="none"))


def test_activation_norm_comparison_dense_vs_depth_pruned(tmp_path):
    dense, fam = make_model("llama")
    pm = prune(copy.deepcopy(dense), CustomConfig(), progress=False)
    pm.remove_layers([1])
    before = activation_norms(dense, fam.inputs)
    after = activation_norms(pm, fam.inputs)
    assert sorted(before) == [0, 1, 2, 3] and sorted(after) == [0, 2, 3]  # original numbering
    assert after[0] == pytest.approx(before[0])  # block 0 is untouched
    plot_activation_norms(before, after, save_path=tmp_path / "norms.png")
    _png(tmp_path / "norms.png")


def test_semantic_drift_from_evaluator_result(tmp_path):
    from hf_prune.evaluation.evaluators import SemanticSimilarityResult

    result = SemanticSimilarityResult(
        prompts=["def f(x):", "import os\n", "class A:", "for i in range(10):"],
        dense_texts=["a", "b", "c", "d"],
        pruned_texts=["a", "x", "c", "y"],
        scores=[1.0, 0.42, 0.97, 0.15],
        exact_match=0.5,
        rouge_l=0.5,
    )
    fig = plot_semantic_drift(result, save_path=tmp_path / "drift.png")
    _png(tmp_path / "drift.png")
    ax = fig.axes[0]
    assert [round(p.get_width(), 2) for p in ax.patches] == [0.15, 0.42, 0.97, 1.0]  # lowest first
    assert ax.get_yticklabels()[0].get_text() == "for i in range(10):"
    with pytest.raises(ValueError):
        plot_semantic_drift([], prompts=[])


def test_benchmark_comparison_from_report(reports, tmp_path):
    report = copy.deepcopy(reports["uniform"])
    report.evaluation = {
        "perplexity": {"before": 53.5, "after": 60.1},
        "hfp_code_mc/acc": {
            "before": 0.5,
            "after": 0.45,
            "task": "hfp_code_mc",
            "metric": "acc",
            "higher_is_better": True,
        },
        "hfp_code_ppl/byte_perplexity": {"after": 3.1},
    }
    fig = plot_benchmark_comparison(report, save_path=tmp_path / "bench.png")
    _png(tmp_path / "bench.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "perplexity\nperplexity (+12.3%)"
    assert titles[1] == "hfp_code_mc\nacc (-10.0%) ↑ better"
    with pytest.raises(ValueError, match="no benchmark"):
        plot_benchmark_comparison({})
