"""lm-evaluation-harness bridge: in-memory models, the `hf-pruned` model type, the CLI pass-through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers as T

pytest.importorskip("lm_eval", reason="needs the eval extra: pip install 'hf_prune[eval]'")

from hf_prune import AutoPrunedModelForCausalLM, CustomConfig, MagnitudeConfig, prune
from hf_prune.evaluation.lm_eval import (
    LOCAL_TASKS,
    local_task_dir,
    record_lm_eval,
    register_hf_pruned,
    require_lm_eval,
    run_lm_eval,
    summarize_results,
)

REPO = Path(__file__).resolve().parent.parent
KINDS = ["unstructured", "uniform_width", "nonuniform_width", "depth"]
LIMIT = 6


def make_tokenizer():
    from hf_prune.zoo.tokenizer import train_bpe_tokenizer

    texts = [r["text"] for r in json.loads((local_task_dir() / "hfp_code_ppl.json").read_text())]
    return train_bpe_tokenizer(texts, vocab_size=300, model_max_length=256)


def make_llama(tok, seed: int = 0):
    cfg = T.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    return T.AutoModelForCausalLM.from_config(cfg).eval()


def apply_kind(kind: str, model):
    if kind == "unstructured":
        return prune(model, MagnitudeConfig(sparsity=0.5), progress=False)
    pm = prune(model, CustomConfig(description=kind), progress=False)
    if kind == "uniform_width":
        for i in range(4):
            pm.prune_neurons(i, list(range(0, 48, 2)))
            pm.prune_heads(i, [0, 1])  # GQA: query heads 0,1 = KV group 0
    elif kind == "nonuniform_width":
        for i in range(4):
            pm.prune_neurons(i, list(range(8 + 8 * i)))
        pm.prune_heads(0, [2, 3])
    elif kind == "depth":
        pm.remove_layers([1])
    return pm


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tok = make_tokenizer()
    root = tmp_path_factory.mktemp("lm_eval_ckpts")
    out = {}
    for kind in KINDS:
        pm = apply_kind(kind, make_llama(tok))
        out[kind] = (pm, pm.save_pretrained(root / kind, tokenizer=tok))
    return tok, out


def _cli_prefix() -> list[str]:
    # `hf-prune lm-eval` once the lead has wired the sub-command; the module entry does the same.
    from hf_prune.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    if "lm-eval" in sub.choices:
        return [sys.executable, "-m", "hf_prune", "lm-eval"]
    return [sys.executable, "-m", "hf_prune.cli.lm_eval_cmd"]


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for task in a:
        assert a[task].keys() == b[task].keys(), task
        for metric, value in a[task].items():
            assert b[task][metric] == pytest.approx(value, rel=1e-6, abs=1e-9), (task, metric)


@pytest.mark.slow  # four lm-eval processes (~10 s of imports each)
def test_every_checkpoint_kind_evaluates_through_hf_pruned_cli_like_in_memory(checkpoints, tmp_path):
    tok, ckpts = checkpoints
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    procs = {}
    for kind, (_, folder) in ckpts.items():
        cmd = [
            *_cli_prefix(),
            "--model", "hf-pruned",
            "--model_args", f"pretrained={folder}",
            "--tasks", *LOCAL_TASKS,
            "--include_path", str(local_task_dir()),
            "--limit", str(LIMIT),
            "--device", "cpu",
            "--output_path", str(tmp_path / kind),
        ]  # fmt: skip
        # Run from another folder: the task data paths must not depend on the working directory.
        procs[kind] = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    in_memory = {
        kind: summarize_results(run_lm_eval(pm, tok, LOCAL_TASKS, limit=LIMIT))
        for kind, (pm, _) in ckpts.items()
    }
    for kind, proc in procs.items():
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log[-3000:]
        files = list((tmp_path / kind).rglob("results_*.json"))
        assert len(files) == 1, log[-2000:]
        cli = json.loads(files[0].read_text())
        assert cli["config"]["model"] == "hf-pruned"
        from_cli = summarize_results(cli)
        assert set(from_cli) == set(LOCAL_TASKS)
        assert {"acc", "acc_norm"} <= set(from_cli["hfp_code_mc"])
        assert {"word_perplexity", "byte_perplexity", "bits_per_byte"} <= set(from_cli["hfp_code_ppl"])
        _close(in_memory[kind], from_cli)
    # The kinds really differ (the comparison is not trivially between identical models).
    assert len({round(r["hfp_code_ppl"]["byte_perplexity"], 6) for r in in_memory.values()}) == len(KINDS)


def test_folder_path_matches_in_memory_and_plain_hf_refuses_per_layer_widths(checkpoints):
    from lm_eval.api.registry import get_model
    from lm_eval.models.huggingface import HFLM

    tok, ckpts = checkpoints
    pm, folder = ckpts["nonuniform_width"]
    cls = register_hf_pruned()
    assert register_hf_pruned() is cls and get_model("hf-pruned") is cls and issubclass(cls, HFLM)
    _close(
        summarize_results(run_lm_eval(pm, tok, ["hfp_code_mc"], limit=LIMIT)),
        summarize_results(run_lm_eval(folder, tasks="hfp_code_mc", limit=LIMIT)),
    )
    # lm-eval's own `hf` type goes through plain transformers, which cannot build per-layer widths.
    with pytest.raises(Exception, match="per-layer attribute"):
        HFLM(pretrained=str(folder), device="cpu")
    # hf-pruned on a plain (non-hf_prune) folder falls back to `hf` loading.
    plain = T.AutoModelForCausalLM.from_config(
        pm.base_model.config.__class__(**make_llama(tok).config.to_dict())
    )
    plain_dir = folder.parent / "plain"
    plain.save_pretrained(plain_dir)
    tok.save_pretrained(plain_dir)
    lm = cls(pretrained=str(plain_dir), device="cpu")
    assert lm._pruned is None and type(lm.model).__name__ == "LlamaForCausalLM"


def test_results_go_into_report_and_card_model_index(checkpoints, tmp_path):
    from huggingface_hub import ModelCard

    from hf_prune.integration.card import render_card

    tok, ckpts = checkpoints
    dense = make_llama(tok)
    pm = apply_kind("unstructured", make_llama(tok))
    before = run_lm_eval(dense, tok, ["hfp_code_mc"], limit=LIMIT)
    after = run_lm_eval(pm, tok, ["hfp_code_mc"], limit=LIMIT)
    record_lm_eval(pm.report, before, "before")
    evaluation = record_lm_eval(pm.report, after, "after")
    acc = evaluation["hfp_code_mc/acc"]
    assert acc["before"] == summarize_results(before)["hfp_code_mc"]["acc"]
    assert acc["after"] == summarize_results(after)["hfp_code_mc"]["acc"]
    folder = pm.save_pretrained(tmp_path / "with_results", tokenizer=tok)
    card = ModelCard.load(folder / "README.md")
    got = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert got[("hfp_code_mc", "acc")] == pytest.approx(acc["after"])
    assert "| acc | hfp_code_mc |" in card.text
    # Reloaded checkpoints keep the results (they live in pruning_config.json).
    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    assert again.report.evaluation["hfp_code_mc/acc"] == acc
    record = json.loads((folder / "pruning_config.json").read_text())
    assert str(render_card(again, record, folder=folder)) == card.content


def test_summarize_results_and_bad_input():
    raw = {
        "results": {
            "t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1, "sample_len": 6, "em,strict": 0.25},
            "empty": {"alias": "empty"},
        }
    }
    assert summarize_results(raw) == {"t": {"acc": 0.5, "em (strict)": 0.25}}
    with pytest.raises(ValueError, match="results"):
        summarize_results({"nope": 1})
    with pytest.raises(ValueError, match="tasks is empty"):
        run_lm_eval("x", tasks=[])
    with pytest.raises(TypeError, match="PrunedModel"):
        run_lm_eval(object(), tasks=["hfp_code_mc"])
    with pytest.raises(ValueError, match="limit"):
        run_lm_eval("x", tasks=["hfp_code_mc"], limit=-1)
    with pytest.raises(ValueError, match="stage"):
        record_lm_eval(
            prune(make_llama(make_tokenizer()), CustomConfig(), progress=False).report, raw, "during"
        )


def test_local_tasks_are_small_valid_and_self_locating():
    import yaml

    folder = local_task_dir()
    for name in LOCAL_TASKS:
        data = json.loads((folder / f"{name}.json").read_text())
        assert (folder / f"{name}.json").stat().st_size < 200_000 and len(data) >= 30
        text = (folder / f"{name}.yaml").read_text()
        assert "dataset_path: json" in text and "data_files" in text
        cfg = yaml.load(text.replace("!function ", ""), Loader=yaml.SafeLoader)
        assert cfg["task"] == name and cfg["tag"] == ["hf_prune_local"]
    for row in json.loads((folder / "hfp_code_mc.json").read_text()):
        assert len(row["choices"]) == 4 and 0 <= row["label"] < 4 and len(set(row["choices"])) == 4
    # lm-eval resolves the data files to absolute paths next to the YAML, whatever the cwd.
    from lm_eval.tasks import TaskManager

    tasks = TaskManager(include_path=str(folder), include_defaults=False).load(["hfp_code_mc"])
    cfg = tasks["tasks"]["hfp_code_mc"].config
    assert Path(cfg.dataset_kwargs["data_files"]["test"]) == folder / "hfp_code_mc.json"


def test_cli_passthrough_hands_arguments_to_lm_eval(capsys):
    from hf_prune.cli.lm_eval_cmd import add_parser, run_lm_eval_cli

    assert run_lm_eval_cli(["run", "--help"]) == 0
    assert "--model_args" in capsys.readouterr().out
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lm-eval", "--model", "hf-pruned", "--model_args", "pretrained=x", "-h"])
    assert args.lm_eval_args == ["--model", "hf-pruned", "--model_args", "pretrained=x", "-h"]


def test_missing_lm_eval_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ImportError, match=r"hf_prune\[eval\]"):
        require_lm_eval()


def test_eval_cli_perplexity_and_tasks_recorded_in_card(checkpoints, tmp_path, capsys):
    import argparse

    from hf_prune.cli.eval import add_parser
    from hf_prune.evaluation.perplexity import perplexity

    tok, ckpts = checkpoints
    pm, folder = ckpts["nonuniform_width"]
    import shutil

    folder = Path(shutil.copytree(folder, tmp_path / "ckpt"))
    dense_dir = tmp_path / "dense"
    make_llama(tok).save_pretrained(dense_dir)
    tok.save_pretrained(dense_dir)
    text = tmp_path / "held.txt"
    text.write_text(
        "\n\n".join(r["text"] for r in json.loads((local_task_dir() / "hfp_code_ppl.json").read_text())[:6])
    )
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(["eval", *map(str, argv)])
        return args.func(args)

    assert (
        run(folder, "--perplexity", text, "--seqlen", 64, "--dense", dense_dir, "--record", "--no-progress")
        == 0
    )
    want_after = perplexity(pm, tok, text, seqlen=64, progress=False)
    want_before = perplexity(make_llama(tok), tok, text, seqlen=64, progress=False)
    assert f"perplexity (held.txt): {want_before:.4f} -> {want_after:.4f}" in capsys.readouterr().out
    record = json.loads((folder / "pruning_config.json").read_text())
    entry = record["report"]["evaluation"]["perplexity"]
    assert entry["after"] == pytest.approx(want_after) and entry["before"] == pytest.approx(want_before)
    assert entry["dataset"] == "held.txt"
    assert (
        run(folder, "--tasks", "hfp_code_mc", "--limit", 4, "--record", "--output", tmp_path / "res.json")
        == 0
    )
    saved = json.loads((tmp_path / "res.json").read_text())["evaluation"]
    readme = (folder / "README.md").read_text()
    assert "| perplexity | held.txt |" in readme and "| acc | hfp_code_mc |" in readme
    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    assert again.report.evaluation["hfp_code_mc/acc"]["after"] == saved["hfp_code_mc/acc"]["after"]
    assert again.report.evaluation["perplexity"]["after"] == pytest.approx(want_after)  # earlier result kept
    with pytest.raises(ValueError, match="nothing to evaluate"):
        run(folder)
    with pytest.raises(FileNotFoundError):
        run(tmp_path, "--tasks", "hfp_code_mc")
