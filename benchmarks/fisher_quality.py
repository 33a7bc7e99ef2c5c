"""Retraining-free Fisher mask search (Kwon et al., 2022) on trained zoo models, with its ablation.

Encoder (``bert-small-cls``, real MiniLM weights fine-tuned by the zoo on a code-continuation task):
held-out accuracy at 60%, 50% and 40% of the dense MAC for the search alone, + mask rearrangement and
+ least-squares rescaling (the paper's ablation), and for the latency metric with a latency table
measured on this CPU in the same run; end-to-end pruning time and the measured CPU speedup of each
pruned model against the dense one.

Decoder (``llama-gqa-small``, LM loss on the zoo's calibration text): held-out perplexity at 70% of
the dense MAC against structured magnitude pruning of heads and neurons at the same FLOP count.

Run: ``python -m benchmarks.run fisher_quality [--samples 2048] [--constraints 0.6 0.5 0.4]``
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import datasets
import torch

from benchmarks.common import RESULTS, print_table, write_results
from hf_prune import CalibrationConfig, FisherMaskConfig, StructuredMagnitudeConfig, prune, zoo
from hf_prune.evaluation import perplexity
from hf_prune.evaluation.lut import measure_latency_lut, save_lut
from hf_prune.evaluation.speed import count_flops
from hf_prune.zoo.build_cls import accuracy
from hf_prune.zoo.tasks import continuation_examples


def _task_dataset(split: str) -> datasets.Dataset:
    ex = continuation_examples(split)
    return datasets.Dataset.from_dict(
        {"first": [e.first for e in ex], "second": [e.second for e in ex], "label": [e.label for e in ex]}
    )


def run_encoder(args: argparse.Namespace) -> list[dict[str, Any]]:
    dense, tok = zoo.load_zoo_model("bert-small-cls")
    heldout = continuation_examples("heldout")[: args.eval_examples]

    def acc(model: Any) -> float:
        return accuracy(model, tok, heldout, args.seq_len, 64)

    calib = CalibrationConfig(
        dataset=_task_dataset("calibration"),
        text_column="first",
        text_pair_column="second",
        label_column="label",
        nsamples=args.samples,
        seqlen=args.seq_len,
        batch_size=32,
    )
    t0 = time.perf_counter()
    lut = measure_latency_lut(
        dense, batch_size=args.lut_batch, seq_len=args.seq_len, repeats=5, progress=False
    )
    lut_seconds = time.perf_counter() - t0
    lut_path = save_lut(lut, RESULTS / "bert_small_cls_latency_lut.json")
    dense_acc = acc(dense)
    rows = [{"model": "bert-small-cls", "variant": "dense", "constraint": 1.0, "accuracy": dense_acc}]
    print(f"dense accuracy {dense_acc:.4f}; latency table measured in {lut_seconds:.1f} s", flush=True)
    variants = [
        ("mac: search", {"metric": "mac", "rearrange": False, "rescale": False}),
        ("mac: + rearrange", {"metric": "mac", "rearrange": True, "rescale": False}),
        ("mac: + rearrange + rescale", {"metric": "mac", "rearrange": True, "rescale": True}),
        (
            "latency (CPU LUT): all",
            {"metric": "latency", "rearrange": True, "rescale": True, "lut": str(lut_path)},
        ),
    ]
    for constraint in args.constraints:
        for label, kw in variants:
            cfg = FisherMaskConfig(
                constraint=constraint, num_samples=args.samples, seq_len=args.seq_len, **kw
            )
            t0 = time.perf_counter()
            pm = prune(copy.deepcopy(dense), cfg, calibration=calib, tokenizer=tok, progress=False)
            seconds = time.perf_counter() - t0
            speed = pm.measure_speed(
                dense, batch_size=args.speed_batch, seqlen=args.seq_len, repeats=args.repeats
            )
            fisher = pm.report.extra.get("fisher", {})
            rows.append(
                {
                    "model": "bert-small-cls",
                    "variant": label,
                    "constraint": constraint,
                    "accuracy": acc(pm),
                    "achieved": fisher.get("achieved_fraction"),
                    "seconds": seconds,
                    "speedup": speed["speedup"],
                    "ideal_speedup": speed.get("ideal_speedup"),
                }
            )
            print(
                f"{label:<28} {constraint:.1f}: acc {rows[-1]['accuracy']:.4f} in {seconds:.1f} s, "
                f"speedup {speed['speedup']:.2f}x",
                flush=True,
            )
    return rows


def run_decoder(args: argparse.Namespace) -> list[dict[str, Any]]:
    dense, tok = zoo.load_zoo_model("llama-gqa-small")
    heldout = zoo.get_eval_texts("heldout")
    calib_file = zoo.write_split_text("calibration", RESULTS / "zoo_calibration.txt")
    calib = CalibrationConfig(dataset=str(calib_file), nsamples=args.lm_samples, seqlen=256, seed=0)

    def ppl(model: Any) -> float:
        return perplexity(model, tok, heldout, seqlen=256, max_windows=args.eval_windows, progress=False)

    ids = torch.randint(0, dense.config.vocab_size, (1, 256), generator=torch.Generator().manual_seed(0))
    dense_flops = count_flops(dense, ids)
    rows = [{"model": "llama-gqa-small", "variant": "dense", "constraint": 1.0, "perplexity": ppl(dense)}]
    t0 = time.perf_counter()
    cfg = FisherMaskConfig(constraint=args.lm_constraint, num_samples=args.lm_samples, seq_len=256)
    fisher = prune(copy.deepcopy(dense), cfg, calibration=calib, tokenizer=tok, progress=False)
    seconds = time.perf_counter() - t0
    fisher_flops = count_flops(fisher, ids)
    speed = fisher.measure_speed(dense, seqlen=256, repeats=args.repeats)
    rows.append(
        {
            "model": "llama-gqa-small",
            "variant": "fisher (mac, rearrange, rescale)",
            "constraint": args.lm_constraint,
            "perplexity": ppl(fisher),
            "flops_ratio": fisher_flops / dense_flops,
            "seconds": seconds,
            "speedup": speed["speedup"],
            "ideal_speedup": speed.get("ideal_speedup"),
        }
    )
    # Structured magnitude at the same FLOPs: bisect its sparsity (heads and neurons alike).
    target = fisher_flops / dense_flops
    lo, hi, best = 0.0, 0.95, None
    for _ in range(8):
        mid = (lo + hi) / 2
        mag = prune(
            copy.deepcopy(dense), StructuredMagnitudeConfig(sparsity=mid, scope="both"), progress=False
        )
        ratio = count_flops(mag, ids) / dense_flops
        if best is None or abs(ratio - target) < abs(best[2] - target):
            best = (mid, mag, ratio)
        lo, hi = (mid, hi) if ratio > target else (lo, mid)
    sparsity, mag, ratio = best
    rows.append(
        {
            "model": "llama-gqa-small",
            "variant": f"structured magnitude (sparsity {sparsity:.3f})",
            "constraint": args.lm_constraint,
            "perplexity": ppl(mag),
            "flops_ratio": ratio,
        }
    )
    for r in rows:
        print(r, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=2048, help="calibration examples for the encoder")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--constraints", type=float, nargs="+", default=[0.6, 0.5, 0.4])
    parser.add_argument("--eval-examples", type=int, default=2000)
    parser.add_argument("--lut-batch", type=int, default=32)
    parser.add_argument("--speed-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lm-samples", type=int, default=64)
    parser.add_argument("--lm-constraint", type=float, default=0.7)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=["encoder", "decoder"], default=["encoder", "decoder"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    if "encoder" in args.parts:
        rows += run_encoder(args)
    if "decoder" in args.parts:
        rows += run_decoder(args)
    columns = ["model", "variant", "constraint", "accuracy", "perplexity", "achieved", "flops_ratio"]
    print_table(rows, [*columns, "seconds", "speedup", "ideal_speedup"])
    name = "fisher_quality" if len(args.parts) == 2 else f"fisher_quality_{args.parts[0]}"
    write_results(name, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
