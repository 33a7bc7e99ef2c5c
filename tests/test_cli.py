"""The hf-prune command line: happy paths and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from families import logits, make_model

from hf_prune import AutoPrunedModelForCausalLM
from hf_prune.cli import build_parser, main


@pytest.fixture
def dense_folder(tmp_path):
    model, fam = make_model("llama")
    model.save_pretrained(tmp_path / "dense")
    return tmp_path / "dense", fam


def test_prune_command(dense_folder, tmp_path, capsys):
    folder, fam = dense_folder
    rc = main(
        [
            "prune",
            str(folder),
            "--method",
            "magnitude",
            "--sparsity",
            "0.6",
            "-o",
            str(tmp_path / "out"),
            "--exclude-modules",
            "down_proj",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "saved to" in capsys.readouterr().out
    pm = AutoPrunedModelForCausalLM.from_pretrained(tmp_path / "out")
    assert pm.pruning_config.sparsity == 0.6 and pm.pruning_config.exclude_modules == ["down_proj"]
    assert all("down_proj" not in r.name for r in pm.report.layers)
    assert logits(pm, fam.inputs).shape[-1] == 96


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "magnitude", "--sparsity", "1.2"], "sparsity must be in [0.0, 1.0), got 1.2"),
        (["--method", "nope"], "Unknown pruning method 'nope'"),
        ([], "give --method"),
        (["--method", "magnitude", "--target-modules", "qproj"], "match no Linear/Conv1D module"),
        (["--method", "magnitude", "--set", "oops"], "--set expects KEY=VALUE"),
    ],
)
def test_prune_command_bad_input(dense_folder, tmp_path, capsys, argv, message):
    folder, _ = dense_folder
    rc = main(["prune", str(folder), "-o", str(tmp_path / "out"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("hf-prune prune: error:") and message in errors[0]
    assert not (tmp_path / "out").exists()


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"prune", "demo", "zoo"} <= set(commands)
    for name in commands:
        if name == "lm-eval":  # a pass-through: lm-eval's own CLI answers --help
            continue
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
    assert "usage: hf-prune" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys, monkeypatch):
    from hf_prune.zoo import build as zoo_build

    def no_build(*args, **kwargs):
        raise AssertionError("the demo must use the shipped weights, not train")

    monkeypatch.setattr(zoo_build, "build_zoo_model", no_build)
    torch.manual_seed(0)
    out_dir = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--output",
            str(out_dir),
            "--methods",
            "magnitude",
            "sparsegpt",
            "--sparsities",
            "0.5",
            "0.7",
            "--eval-windows",
            "4",
            "--nsamples",
            "4",
            "--seqlen",
            "64",
            "--latency-repeats",
            "2",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "reload reproduces logits: True" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| method | sparsity | perplexity")
    methods = [row.split("|")[1].strip() for row in table[1:]]
    assert methods == ["dense", *["magnitude", "sparsegpt"] * 2, "structured_wanda"]
    results = json.loads((out_dir / "results.json").read_text())
    by_key = {(r["method"], r["sparsity"]): r for r in results["rows"]}
    dense = results["dense"]["perplexity"]
    # On the trained model pruning costs perplexity, more at 70% than at 50%.
    for method in ("magnitude", "sparsegpt"):
        assert dense < by_key[(method, 0.5)]["value"] < by_key[(method, 0.7)]["value"]
    assert all(abs(r["measured_sparsity"] - r["sparsity"]) < 0.01 for r in results["rows"])
    best = min((by_key[(m, 0.7)] for m in ("magnitude", "sparsegpt")), key=lambda r: r["value"])
    assert f"best at 70%: {best['method']}" in out
    card = (out_dir / "pruned" / "README.md").read_text()
    assert "## Measured speed" in card and "x" in card.split("## Measured speed")[1]
    assert (out_dir / "pruned" / "tokenizer.json").is_file()
    assert (out_dir / "perplexity_vs_sparsity.png").stat().st_size > 10_000
    # The structured result is physically smaller and loads with plain transformers, same logits.
    structured = by_key[("structured_wanda", 0.25)]
    assert structured["params"] < results["rows"][0]["params"]
    from transformers import AutoModelForCausalLM

    from hf_prune import AutoPrunedModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(out_dir / "structured")
    ours = AutoPrunedModelForCausalLM.from_pretrained(out_dir / "structured")
    ids = torch.randint(0, 100, (1, 16))
    assert sum(p.numel() for p in plain.parameters()) == structured["params"]
    assert torch.allclose(plain(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-5)
    assert "## Measured speed" in (out_dir / "structured" / "README.md").read_text()
