"""``hf-prune layers`` CLI actions and the objective benchmark."""

from __future__ import annotations

import argparse
import json
import re

import jsonschema
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_prune.cli.layers import add_parser, parse_budget
from hf_prune.layer_selection import LayerScores, load_schema, run_benchmark, solve_mvbcs


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="hf-prune")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def scores_file(tmp_path):
    rng = np.random.default_rng(0)
    n = 12
    scores = LayerScores.from_arrays(
        model_name="toy",
        total_parameters=10_000_000,
        names=[f"model.layers.{i // 4}.proj{i % 4}" for i in range(n)],
        num_parameters=[1_000_000, 2_000_000, 1_500_000, 500_000] * 3,
        pruning_ratios=rng.uniform(0.3, 0.9, n).tolist(),
        weight_shapes=[[1000, 1000], [1000, 2000], [1500, 1000], [500, 1000]] * 3,
        block_ids=[i // 4 for i in range(n)],
        metadata={"metric": "alpha_peak", "sparsity": 0.6, "epsilon": 0.3, "mapping": "block_wise"},
    )
    jsonschema.validate(scores.to_dict(), load_schema())
    return scores, scores.save(tmp_path / "toy_scores.json")


def test_optimize_writes_assignments(scores_file, tmp_path, capsys):
    scores, path = scores_file
    out = tmp_path / "assign.json"
    budgets = ["3000000", "2.5M", "1e6"]
    code = run_cli(["layers", "optimize", str(path), "--budgets", *budgets, "--output", str(out), "--pretty"])
    assert code == 0
    data = json.loads(out.read_text())
    benefit, assignments = solve_mvbcs(scores.significance, scores.num_parameters, [3e6, 2.5e6, 1e6])
    assert data["benefit"] == pytest.approx(benefit)
    assert [v["assignment"] for v in data["verifiers"]] == [
        None if a is None else list(a) for a in assignments
    ]
    assert data["model_name"] == "toy" and data["order"] == "fixed"
    for v, budget in zip(data["verifiers"], [3e6, 2.5e6, 1e6], strict=True):
        assert v["total_cost"] <= budget and v["budget"] == budget
        if v["assignment"]:
            s, e = v["assignment"]
            assert v["layer_names"] == scores.layer_names[s : e + 1]
    assert "benefit" in capsys.readouterr().err


def test_optimize_to_stdout_with_any_order(scores_file, capsys):
    _, path = scores_file
    assert run_cli(["layers", "optimize", str(path), "--budgets", "1M", "3M", "--order", "any"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["order"] == "any" and data["num_verifiers"] == 2


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        (["10M", "abc"], "--budgets: 'abc' is not a number"),
        (["10M", "-5"], r"budgets\[1\] = -5.0"),
        (["nan"], "is not a number"),
    ],
)
def test_optimize_bad_budget_fails_with_one_line(scores_file, capsys, budgets, message):
    _, path = scores_file
    code = run_cli(["layers", "optimize", str(path), "--budgets", *budgets])
    assert code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("hf-prune layers optimize: error:")
    assert re.search(message, err), err


def test_optimize_missing_or_invalid_scores_file(tmp_path, capsys):
    assert run_cli(["layers", "optimize", str(tmp_path / "nope.json"), "--budgets", "1M"]) == 1
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_name": "x"}))
    assert run_cli(["layers", "optimize", str(bad), "--budgets", "1M"]) == 1
    assert "missing the required key" in capsys.readouterr().err


def test_visualize_writes_figures(scores_file, tmp_path, capsys):
    _, path = scores_file
    assign = tmp_path / "assign.json"
    assert run_cli(["layers", "optimize", str(path), "--budgets", "3M", "2M", "-o", str(assign)]) == 0
    outdir = tmp_path / "plots"
    code = run_cli(
        ["layers", "visualize", str(path), "--assignments", str(assign), "--output-dir", str(outdir)]
    )
    assert code == 0
    for name in ("significance.png", "pruning_ratios.png", "assignments.png"):
        assert (outdir / name).stat().st_size > 1000
    assert str(outdir / "assignments.png") in capsys.readouterr().out


def test_extract_from_a_saved_model(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "tiny")
    out = tmp_path / "tiny_scores.json"
    code = run_cli(["layers", "extract", str(tmp_path / "tiny"), "--metric", "weight_norm", "-o", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    jsonschema.validate(data, load_schema())
    # loaded with the config's architecture class, so names match the causal-LM module tree
    assert data["layers"][0]["name"] == "model.layers.0.self_attn.q_proj"
    code = run_cli(["layers", "extract", str(tmp_path / "tiny"), "--metric", "uniform", "--sparsity", "1.5"])
    assert code == 1 and "sparsity must be in [0, 1)" in capsys.readouterr().err


def test_benchmark_cli_on_synthetic_table(tmp_path, capsys):
    out = tmp_path / "bench"
    assert (
        run_cli(["layers", "benchmark", "--num-cases", "3", "--num-verifiers", "3", "--output", str(out)])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"]["alpha_pruning"]["optimal_cases"] == 3
    assert len(list((out / "cases").glob("case_*.json"))) == 3
    assert (out / "strategy_comparison.png").exists()
    assert "alpha_pruning" in capsys.readouterr().out


def test_benchmark_reference_is_optimal_and_proxies_are_not_better(scores_file):
    scores, _ = scores_file
    rng = np.random.default_rng(1)
    report = run_benchmark(
        scores.significance,
        scores.num_parameters,
        weight_norm=rng.random(scores.num_prunable_layers),
        num_cases=6,
        num_verifiers=2,
        seed=3,
        fraction_range=(0.1, 0.3),
    )
    assert report.settings["strategies"] == ["alpha_pruning", "weight_norm", "uniform", "random"]
    for case in report.cases:
        best = case["optimal_reference_benefit"]
        for name, res in case["strategies"].items():
            assert res["reference_benefit"] <= best + 1e-9, name
        assert case["strategies"]["alpha_pruning"]["relative_benefit"] == 1.0
    assert report.summary["alpha_pruning"]["optimal_cases"] == 6
    # seeded: the same call gives the same cases
    again = run_benchmark(
        scores.significance,
        scores.num_parameters,
        weight_norm=rng.random(scores.num_prunable_layers),
        num_cases=6,
        num_verifiers=2,
        seed=3,
        fraction_range=(0.1, 0.3),
    )
    assert [c["budgets"] for c in again.cases] == [c["budgets"] for c in report.cases]
    assert [c["strategies"]["random"] for c in again.cases] == [
        c["strategies"]["random"] for c in report.cases
    ]


def test_parse_budget():
    assert parse_budget("10000000") == 1e7
    assert parse_budget("10M") == 1e7
    assert parse_budget("1.5b") == 1.5e9
    assert parse_budget("500K") == 5e5
    assert parse_budget("inf") == float("inf")
    with pytest.raises(ValueError, match="not a number"):
        parse_budget("ten")


def test_layers_without_action_returns_usage_code(capsys):
    assert run_cli(["layers"]) == 2
    assert "extract" in capsys.readouterr().err


def test_assignments_are_recorded_in_checkpoint(tmp_path):
    import json

    from families import make_model

    from hf_prune import AutoPrunedModelForCausalLM, CustomConfig, prune
    from hf_prune.layer_selection import LayerSelectionOptimizer, extract_layer_scores

    model, _ = make_model("llama")
    scores = extract_layer_scores(model, metric="weight_norm")
    result = LayerSelectionOptimizer.from_layer_scores(scores, [5000, 3000]).solve()
    pm = prune(model, CustomConfig(description="verifier partition"), progress=False)
    pm.record_layer_selection(result, scores)
    folder = pm.save_pretrained(tmp_path / "ckpt")
    record = json.loads((folder / "pruning_config.json").read_text())
    assert record["report"]["assignments"] == [list(a) if a else None for a in result.assignments]
    assert record["report"]["extra"]["layer_scores"]["num_prunable_layers"] == scores.num_prunable_layers
    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    assert again.report.extra["layer_selection"]["benefit"] == pytest.approx(result.benefit)
