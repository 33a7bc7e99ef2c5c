"""The hf-prune command line: happy paths and one-line errors."""

from __future__ import annotations

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
def test_demo_end_to_end(tmp_path, capsys):
    torch.manual_seed(0)
    rc = main(
        [
            "demo",
            "--train-steps",
            "4",
            "--output",
            str(tmp_path / "demo"),
            "--eval-windows",
            "3",
            "--nsamples",
            "4",
            "--seqlen",
            "64",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "reload reproduces logits: True" in out
    assert (tmp_path / "demo" / "pruned" / "README.md").is_file()
    assert (tmp_path / "demo" / "layer_sparsity.png").stat().st_size > 1000
