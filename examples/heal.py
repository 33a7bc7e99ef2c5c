"""Heal a pruned model with LoRA and merge the adapters *masked*, so the sparsity survives (offline).

Prunes the bundled trained zoo model ``llama-gqa-small`` with Wanda (70% by default, or SparseGPT 2:4
with ``--method sparsegpt-2:4``), heals it for ``--steps`` LoRA steps on the zoo's training text, merges
the adapters with the pruning mask applied to their delta, checks that the non-zero count did not move,
and saves the healed model in hf_prune's format (healing recorded in the report and card).

    python examples/heal.py --output healed
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_prune import CalibrationConfig, SparseGPTConfig, WandaConfig, heal, prune, zoo
from hf_prune.evaluation import perplexity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--method", choices=["wanda-70", "sparsegpt-2:4"], default="wanda-70")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seqlen", type=int, default=128)
    args = parser.parse_args()

    out = Path(args.output)
    model, tok = zoo.load_zoo_model("llama-gqa-small")
    model = model.float()
    splits = ("train", "calibration", "heldout")
    files = {s: zoo.write_split_text(s, out / "data" / f"{s}.txt") for s in splits}
    config = WandaConfig(sparsity=0.7) if args.method == "wanda-70" else SparseGPTConfig(pattern="2:4")
    calib = CalibrationConfig(dataset=str(files["calibration"]), nsamples=32, seqlen=args.seqlen)

    def ppl(m: object) -> float:
        return perplexity(m, tok, str(files["heldout"]), seqlen=args.seqlen, max_windows=32, progress=False)

    dense = ppl(model)
    pruned = prune(model, config, calibration=calib, tokenizer=tok)
    before, nonzero_before = ppl(pruned), pruned.report.nonzero_after
    heal(pruned, str(files["train"]), tokenizer=tok, steps=args.steps, lr=args.lr, seqlen=args.seqlen)
    after = ppl(pruned)
    pruned.refresh()
    pruned.save_pretrained(out / "model")
    print(
        json.dumps(
            {
                "dense_ppl": round(dense, 2),
                "pruned_ppl": round(before, 2),
                "healed_ppl": round(after, 2),
                "recovered": round((before - after) / (before - dense), 3),
                "nonzero_unchanged_by_merge": nonzero_before == pruned.report.nonzero_after,
                "saved": str(out / "model"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
