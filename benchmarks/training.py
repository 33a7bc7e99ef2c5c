"""Pruning with training on the trained zoo ``llama-gqa-small``: healing after one-shot pruning, and
gradual pruning with ``PruningCallback`` vs one-shot pruning at the same final sparsity, in one run.

* **healing**: Wanda 70% and SparseGPT 2:4 one-shot (calibration split), then ``hf_prune.heal`` (LoRA,
  masked merge) on the training split; held-out perplexity dense / pruned / healed, the fraction of the
  lost perplexity recovered ``(ppl_pruned - ppl_healed) / (ppl_pruned - ppl_dense)``, and the non-zero
  count before and after the merge (must be equal; for 2:4 every group of 4 keeps at most 2).
* **gradual**: ``Trainer`` fine-tunes on the training split for ``--steps`` steps while
  ``PruningCallback(WandaConfig(sparsity))`` ramps the sparsity on the cubic schedule; baselines in the
  same run: one-shot Wanda of the dense model (no training), and one-shot Wanda followed by the same
  number of ``Trainer`` steps with the masks kept (``PruningCallback(None)``), i.e. the same training
  budget.

Run: ``python -m benchmarks.run training [--steps 200] [--parts healing gradual]``
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from benchmarks.common import print_table, write_results
from hf_prune import CalibrationConfig, PruningCallback, SparseGPTConfig, WandaConfig, heal, prune, zoo
from hf_prune.data import causal_lm_dataset
from hf_prune.evaluation import perplexity

WORK = Path("/tmp/hf_prune_bench_training")


def _nonzero(model: torch.nn.Module) -> int:
    return sum(int((m.weight != 0).sum()) for _, m in _projections(model))


def _projections(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    return [(n, m) for n, m in model.named_modules() if n.endswith(names)]


def _groups_intact(model: torch.nn.Module) -> bool:
    return all(
        int((m.weight != 0).reshape(m.weight.shape[0], -1, 4).sum(-1).max()) <= 2
        for _, m in _projections(model)
    )


def healing(args: argparse.Namespace, dense: Any, tok: Any, ppl: Any, files: dict[str, Path]) -> list[dict]:
    rows = []
    calib = CalibrationConfig(dataset=str(files["calibration"]), nsamples=args.nsamples, seqlen=args.seqlen)
    for label, config in (
        ("Wanda 70%", WandaConfig(sparsity=0.7)),
        ("SparseGPT 2:4", SparseGPTConfig(pattern="2:4")),
    ):
        pruned = prune(copy.deepcopy(dense), config, calibration=calib, tokenizer=tok, progress=False)
        before = ppl(pruned)
        nz_before = _nonzero(pruned.base_model)
        t0 = time.perf_counter()
        heal(pruned, str(files["train"]), tokenizer=tok, steps=args.heal_steps, lr=args.heal_lr, batch_size=4,
             seqlen=args.seqlen, progress=False)  # fmt: skip
        seconds = time.perf_counter() - t0
        after = ppl(pruned)
        nz_after = _nonzero(pruned.base_model)
        dense_ppl = args.dense_ppl
        rows.append(
            {
                "case": label,
                "dense ppl": round(dense_ppl, 2),
                "pruned ppl": round(before, 2),
                "healed ppl": round(after, 2),
                "recovered": round((before - after) / (before - dense_ppl), 3),
                "nonzero before merge": nz_before,
                "nonzero after merge": nz_after,
                "sparsity kept exactly": nz_before == nz_after,
                "2:4 groups intact": _groups_intact(pruned.base_model) if "2:4" in label else "n/a",
                "heal steps": args.heal_steps,
                "heal s": round(seconds, 1),
            }
        )
    return rows


def _trainer(
    model: Any, tok: Any, train: Any, steps: int, lr: float, callback: PruningCallback, out: Path
) -> Trainer:
    training = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, learning_rate=lr,
        weight_decay=0.0, logging_steps=max(1, steps // 10), save_strategy="no", report_to=[], use_cpu=True,
        seed=0, data_seed=0, disable_tqdm=True, lr_scheduler_type="constant",
    )  # fmt: skip
    return Trainer(
        model=model, args=training, train_dataset=train,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[callback],
    )  # fmt: skip


def gradual(args: argparse.Namespace, dense: Any, tok: Any, ppl: Any, files: dict[str, Path]) -> list[dict]:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    train = causal_lm_dataset(str(files["train"]), tok, seqlen=args.seqlen, max_windows=4000)
    calib = CalibrationConfig(dataset=str(files["calibration"]), nsamples=args.nsamples, seqlen=args.seqlen)
    rows = []
    s = args.sparsity
    oneshot = prune(
        copy.deepcopy(dense), WandaConfig(sparsity=s), calibration=calib, tokenizer=tok, progress=False
    )
    rows.append({"run": f"one-shot Wanda {s:.0%}, no training", "steps": 0, "ppl": round(ppl(oneshot), 2)})

    t0 = time.perf_counter()
    keep = PruningCallback(None, pruned=oneshot)
    _trainer(oneshot.base_model, tok, train, args.steps, args.train_lr, keep, WORK / "keep").train()
    rows.append(
        {
            "run": f"one-shot Wanda {s:.0%} + {args.steps} steps, masks kept",
            "steps": args.steps,
            "ppl": round(ppl(oneshot), 2),
            "final sparsity": round(keep.sparsity, 4),
            "s": round(time.perf_counter() - t0, 1),
        }
    )

    t0 = time.perf_counter()
    model = copy.deepcopy(dense)
    end = int(args.steps * args.ramp)
    cb = PruningCallback(
        WandaConfig(sparsity=s), schedule="cubic", start_step=0, end_step=end, frequency=max(1, end // 8),
        calibration_batches=8,
    )  # fmt: skip
    _trainer(model, tok, train, args.steps, args.train_lr, cb, WORK / "gradual").train()
    rows.append(
        {
            "run": f"gradual Wanda -> {s:.0%} (cubic, end_step {end}) over {args.steps} steps",
            "steps": args.steps,
            "ppl": round(ppl(cb.pruned), 2),
            "final sparsity": round(cb.sparsity, 4),
            "s": round(time.perf_counter() - t0, 1),
            "schedule": [(h["step"], h["scheduled"], h["measured"]) for h in cb.history],
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-gqa-small")
    parser.add_argument("--parts", nargs="+", default=["healing", "gradual"], choices=["healing", "gradual"])
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--heal-steps", type=int, default=150)
    parser.add_argument("--heal-lr", type=float, default=5e-4)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--train-lr", type=float, default=1e-4)
    parser.add_argument("--ramp", type=float, default=0.6, help="end_step as a fraction of --steps")
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dense, tok = zoo.load_zoo_model(args.model)
    dense = dense.float()
    files = {
        split: zoo.write_split_text(split, WORK / f"{split}.txt")
        for split in ("train", "calibration", "heldout")
    }

    def ppl(model: Any) -> float:
        heldout = str(files["heldout"])
        return perplexity(
            model, tok, heldout, seqlen=args.seqlen, max_windows=args.eval_windows, progress=False
        )

    args.dense_ppl = ppl(dense)
    print(f"dense held-out perplexity: {args.dense_ppl:.2f}")
    payload: dict[str, Any] = {"model": args.model, "dense_ppl": args.dense_ppl, "args": vars(args)}
    if "healing" in args.parts:
        rows = healing(args, dense, tok, ppl, files)
        print_table(rows)
        payload["healing"] = rows
    if "gradual" in args.parts:
        rows = gradual(args, dense, tok, ppl, files)
        print_table([{k: v for k, v in r.items() if k != "schedule"} for r in rows])
        print("gradual schedule (step, scheduled, measured):", rows[-1]["schedule"])
        payload["gradual"] = rows
    write_results("training", payload)


if __name__ == "__main__":
    main()
