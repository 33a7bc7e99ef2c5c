"""Model cards: metadata, body sections, loading snippets that really load, HTML rendering per family."""

from __future__ import annotations

import argparse
import itertools
import json
import re

import pytest
import torch
from families import logits, make_model
from huggingface_hub import ModelCard, metadata_load

import hf_prune
from hf_prune import CustomConfig, MagnitudeConfig, prune
from hf_prune.arch import get_arch, get_layers, head_geometry
from hf_prune.integration.card import validate_card_metadata, write_card

CALIB = {
    "dataset": "wikitext2",
    "nsamples": 128,
    "seqlen": 2048,
    "seed": 0,
    "batch_size": 1,
    "split": "train",
    "text_column": None,
}


def _kind(kind: str, family: str = "llama"):
    model, fam = make_model(family)
    if kind == "unstructured":
        return prune(model, MagnitudeConfig(sparsity=0.5), progress=False), fam
    pm = prune(model, CustomConfig(description=f"{kind} by hand"), progress=False)
    for spec in get_arch(model).stacks:
        n = len(get_layers(model, spec))
        gqa = head_geometry(model, spec, 0)
        if kind == "uniform_width":
            for i in range(n):
                pm.prune_neurons(i, list(range(0, 48, 2)), stack=spec.name)
                pm.prune_heads(i, [0, 1] if gqa.num_kv_heads < gqa.num_heads else [1, 3], stack=spec.name)
        elif kind == "nonuniform_width":
            for i in range(n):
                pm.prune_neurons(i, list(range(8 + 4 * i)), stack=spec.name)
        elif kind == "depth":
            pm.remove_layers([1], stack=spec.name)
    return pm, fam


def _sections(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, re.M)


def _assert_clean(text: str) -> None:
    """No field renders as None, no table is empty, no template leftovers."""
    assert "None" not in text
    assert "{{" not in text and "{%" not in text
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"\|( ?-+:? \|)+", line.strip()):  # a table's separator row
            assert i + 1 < len(lines) and lines[i + 1].startswith("|"), (
                f"empty table at line {i}: {lines[i - 1]}"
            )
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert all(cells[1:]), f"empty cell in {line!r}"
    for a, b in itertools.pairwise(lines):
        assert not (a.startswith("## ") and b.startswith("## ")), f"empty section {a!r}"


def _code_blocks(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.parametrize("kind", ["unstructured", "uniform_width", "nonuniform_width", "depth"])
def test_card_sections_and_snippet_that_loads(kind, tmp_path):
    pm, fam = _kind(kind)
    pm.report.evaluation["perplexity"] = {"before": 53.5, "after": 60.1}
    expected = logits(pm, fam.inputs)
    folder = pm.save_pretrained(tmp_path / kind)
    text = (folder / "README.md").read_text()
    _assert_clean(text)
    heads = _sections(text)
    assert heads[:2] == ["Summary", "Evaluation"] and heads[-1] == "How to load"
    assert {"Method", "Calibration data", "Structure after pruning"} <= set(heads)
    assert "| perplexity | — | 53.50 | 60.10 | +12.3% |" in text
    record = json.loads((folder / "pruning_config.json").read_text())
    cfg_block = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    assert json.loads(cfg_block) == {
        k: v for k, v in record.items() if k not in ("structure", "report", "calibration", "base_model")
    }
    assert f"| parameters | {pm.report.params_before:,} | {pm.report.params_after:,} |" in text
    if kind == "unstructured":
        assert "Per-layer report" in heads and "| sparsity measured |" in text
        assert "`model.layers.0.self_attn.q_proj` | 1,024 | 0.5000 | 0.5000 |" in text
    if kind in ("uniform_width", "nonuniform_width"):
        assert "| `decoder.0.mlp` | mlp |" in text
    if kind == "depth":
        assert (
            "| decoder | 4 → 3 |" in text and "Removed blocks of `decoder` (original numbering): 1." in text
        )
    # The loading snippet is correct for this checkpoint: plain transformers unless per_layer_config.
    config = json.loads((folder / "config.json").read_text())
    heterogeneous = "per_layer_config" in json.dumps(config)
    load = text.split("## How to load", 1)[1]
    blocks = _code_blocks(load)
    assert ("from transformers import AutoModelForCausalLM" in blocks[0]) is (not heterogeneous)
    assert (kind == "nonuniform_width") is heterogeneous
    for code in blocks:
        scope: dict = {}
        exec(code.replace("REPO_OR_PATH", str(folder)).replace("print(", "str("), scope)
        torch.testing.assert_close(logits(scope["model"], fam.inputs), expected, atol=1e-5, rtol=1e-5)


def test_metadata_for_hub_base_model_calibration_and_results(tmp_path):
    pm, _ = _kind("unstructured")
    pm.base_model_name = "meta-llama/Llama-3.2-1B"
    pm.calibration = dict(CALIB)
    pm.report.evaluation.update(
        {
            "perplexity": {"before": 53.5, "after": 60.1, "dataset": "wikitext"},
            "hfp_code_mc/acc": {"before": 0.5, "after": 0.45, "task": "hfp_code_mc", "metric": "acc"},
            "not measured": {"before": None},
        }
    )
    folder = pm.save_pretrained(tmp_path / "hub")
    meta = metadata_load(folder / "README.md")
    assert meta["base_model"] == "meta-llama/Llama-3.2-1B"
    assert "base_model_relation" not in meta  # no accepted value describes pruning
    assert meta["library_name"] == "hf_prune" and meta["pipeline_tag"] == "text-generation"
    assert meta["datasets"] == ["wikitext"]
    assert meta["tags"] == ["hf_prune", "pruned", "pruning:magnitude", "llama", "unstructured-pruning"]
    index = meta["model-index"][0]
    assert index["name"] == "Llama-3.2-1B-magnitude-pruned"
    values = {r["metrics"][0]["type"]: r["metrics"][0]["value"] for r in index["results"]}
    assert values == {"perplexity": 60.1, "acc": 0.45}
    text = (folder / "README.md").read_text()
    _assert_clean(text)
    assert "[meta-llama/Llama-3.2-1B](https://huggingface.co/meta-llama/Llama-3.2-1B)" in text
    assert "| dataset | wikitext2 |" in text and "| nsamples | 128 |" in text and "| seqlen | 2,048 |" in text
    assert "| seed | 0 |" in text
    assert "Han et al." in text  # the method's paper
    assert "not measured" not in text  # an entry without values is skipped, not shown as None
    assert validate_card_metadata(folder / "README.md")["library_name"] == "hf_prune"


def test_local_base_model_and_local_calibration_stay_out_of_metadata(tmp_path):
    pm, _ = _kind("depth")
    pm.base_model_name = str(tmp_path / "my-local-llama")
    (tmp_path / "my-local-llama").mkdir()
    pm.calibration = {**CALIB, "dataset": str(tmp_path / "calib.txt")}
    folder = pm.save_pretrained(tmp_path / "local")
    meta = metadata_load(folder / "README.md")
    assert "base_model" not in meta and "datasets" not in meta and "model-index" not in meta
    text = (folder / "README.md").read_text()
    _assert_clean(text)
    assert "`my-local-llama` (a local model)" in text and "calib.txt" in text
    assert "## Evaluation" not in text


def test_allocation_scores_assignments_and_plots(tmp_path):
    from hf_prune.cli.card import add_parser

    pm, _ = _kind("unstructured")
    for i, row in enumerate(pm.report.layers):
        row.score = {**(row.score or {}), "alpha_peak": 2.0 + 0.1 * i}
    pm.report.assignments = [
        {
            "index": 0,
            "budget": 1000.0,
            "assignment": [0, 1],
            "num_layers": 2,
            "total_cost": 900.0,
            "benefit": 1.5,
        },
        {"index": 1, "budget": None, "assignment": None, "num_layers": 0, "total_cost": 0.0, "benefit": 0.0},
    ]
    pm.report.evaluation["perplexity"] = {"before": 53.5, "after": 60.1}
    folder = pm.save_pretrained(tmp_path / "ckpt")
    text = (folder / "README.md").read_text()
    _assert_clean(text)
    assert "| score mean | alpha_peak |" in text and "| 2.0000 |" in text
    assert "## Layer-selection assignments" in text
    assert (
        "| 0 | 0 to 1 | 2 | 1,000.00 | 900.00 | 1.5000 |" in text and "| 1 | none | 0 | unlimited |" in text
    )
    assert "## Plots" not in text
    # `hf-prune card FOLDER --plots` draws the report's plots into the folder and embeds them.
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["card", str(folder), "--plots", "--repo-id", "me/tiny"])
    assert args.func(args) == 0
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == ["benchmarks.png", "layer_sparsity.png", "per_block_pruning.png"]
    assert all((folder / p).stat().st_size > 5000 for p in pngs)
    text = (folder / "README.md").read_text()
    _assert_clean(text)
    for p in pngs:
        assert f"]({p})" in text
    assert 'from_pretrained("me/tiny")' in text
    with pytest.raises(FileNotFoundError):
        args.func(parser.parse_args(["card", str(tmp_path)]))


@pytest.mark.parametrize("family", ["llama", "bert", "vit", "llava"])
def test_family_cards_render_to_html(family, tmp_path):
    markdown = pytest.importorskip("markdown")
    pm, fam = _kind("uniform_width", family)
    pm.calibration = {**CALIB, "dataset": "<list of 8 texts>"}
    pm.report.evaluation["accuracy" if family in ("bert", "vit") else "perplexity"] = {
        "before": 0.8,
        "after": 0.7,
    }
    folder = pm.save_pretrained(tmp_path / family)
    text = (folder / "README.md").read_text()
    _assert_clean(text)
    card = ModelCard(text)
    html = markdown.markdown(card.text, extensions=["tables", "fenced_code"])
    (tmp_path / f"{family}.html").write_text(html)
    assert html.count("<table>") >= 3  # summary, evaluation, structure (+ per-layer)
    for section in (
        "Summary",
        "Evaluation",
        "Method",
        "Calibration data",
        "Structure after pruning",
        "How to load",
    ):
        assert f"<h2>{section}</h2>" in html
    assert "None" not in html and "<td></td>" not in html
    assert "<td>&lt;list of 8 texts&gt;</td>" in html  # in-memory calibration texts stay visible
    tag = {
        "llama": "text-generation",
        "bert": "text-classification",
        "vit": "image-classification",
        "llava": "image-text-to-text",
    }
    assert card.data.pipeline_tag == tag[family]
    assert family in card.data.tags
    stacks = [s.name for s in get_arch(pm.base_model).stacks]
    for stack in stacks:
        assert f"<td>{stack}</td>" in html
    auto = getattr(hf_prune, fam.pruned_auto).__name__
    assert auto in text
    # Reload through the CLI's loader and re-render: same card.
    assert write_card(folder).read_text() == text


def test_speed_section_shows_onnx_runtime_beside_pytorch():
    from hf_prune.integration.card import speed_section
    from hf_prune.report import PruningReport

    report = PruningReport(method="custom")
    report.speed = {"baseline_ms": 10.0, "pruned_ms": 8.0, "speedup": 1.25, "batch_size": 1, "seqlen": 256}
    report.extra["onnx_speed"] = {
        "baseline_ms": 9.0,
        "pruned_ms": 6.0,
        "speedup": 1.5,
        "onnxruntime": "1.32.0",
    }
    table, _ = speed_section(report)
    assert "| forward latency, 1 x 256 tokens | 10.00 ms | 8.00 ms | 1.25x |" in table
    assert "| forward latency, ONNX Runtime 1.32.0 | 9.00 ms | 6.00 ms | 1.50x |" in table
