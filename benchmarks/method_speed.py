"""Time and peak memory of pruning per method as a ratio to one plain forward pass; sequential vs whole-model.

Every row runs in its own subprocess (so peak RSS is not shared) and measures, in that same process and
under the same load, one plain forward pass of the whole model over the calibration set (the *forward
floor*: no calibrated method can be faster than seeing its data once), then the pruning itself. The
table gives ``time / floor`` for:

* *sequential*: hf_prune's pipeline (one block calibrated and pruned at a time; ``propagation="pruned"``
  runs each block twice, once for its statistics (up to the block's last pruned projection: the rest
  of the block's forward is not needed) and once more for the pruned outputs that the next block sees;
  ``"dense"`` runs it once);
* *whole-model*: the naive baseline, hooks on every projection, one forward per batch, then every layer
  pruned from those statistics (all statistics alive at once).

Peak memory is reported twice: the sampled peak RSS above the level after the model was built, and the
process's whole-life peak (``ru_maxrss``, load included). Held-out perplexity is measured for the trained
zoo model (a random-init model's perplexity means nothing; timing does not need trained weights).

Run: ``python -m benchmarks.method_speed`` (144M-parameter Llama shape, random init, 32 x 256 tokens,
2 threads) or ``--model llama-gqa-small``. GPU (prepared, not run on the CPU-only CI):
``python -m benchmarks.method_speed --device cuda --dtype bfloat16 --model random-1b``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from benchmarks.common import RssSampler, print_table, write_results

#: Llama shapes built from a config with random weights (timing only).
SHAPES = {
    # 144M parameters: the shape of issue 16's table (0.57 GB of fp32 weights).
    "random-144m": dict(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=12,
        num_attention_heads=16,
        num_key_value_heads=4,
    ),
    # ~1.1B parameters, Llama-3.2-1B's block shape (for the GPU run).
    "random-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
    ),
}

#: (row label, config dict, mode)
ROWS = [
    ("magnitude", {"method": "magnitude"}, "sequential"),
    ("wanda", {"method": "wanda"}, "sequential"),
    ("wanda dense-prop", {"method": "wanda", "propagation": "dense"}, "sequential"),
    ("wanda 2:4", {"method": "wanda", "pattern": "2:4"}, "sequential"),
    ("sparsegpt", {"method": "sparsegpt"}, "sequential"),
    ("sparsegpt dense-prop", {"method": "sparsegpt", "propagation": "dense"}, "sequential"),
    ("sparsegpt 2:4", {"method": "sparsegpt", "pattern": "2:4"}, "sequential"),
    ("wanda", {"method": "wanda"}, "whole-model"),
    ("sparsegpt", {"method": "sparsegpt"}, "whole-model"),
]


def _load(model_name: str, device: str, dtype: str):
    import torch

    from hf_prune import zoo

    zmodel, tok = zoo.load_zoo_model("llama-gqa-small")
    if model_name in SHAPES:
        from transformers import AutoModelForCausalLM, LlamaConfig

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, **SHAPES[model_name])
        model = AutoModelForCausalLM.from_config(cfg)
        del zmodel
    else:
        model = zmodel if model_name == "llama-gqa-small" else zoo.load_zoo_model(model_name)[0]
    model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
    return model, tok


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _child(args: argparse.Namespace, label: str, config_dict: dict, mode: str) -> dict:
    import torch

    from hf_prune import CalibrationConfig, PruningConfig, zoo
    from hf_prune.calibration.data import build_calibration_batches
    from hf_prune.evaluation import perplexity
    from hf_prune.integration.pruned_model import PrunedModel
    from hf_prune.methods.base import PruneContext
    from hf_prune.methods.unstructured import run_unstructured

    torch.set_num_threads(args.threads)
    model, tok = _load(args.model, args.device, args.dtype)
    calib_file = zoo.write_split_text("calibration", "/tmp/hf_prune_bench_calib.txt")
    calib = CalibrationConfig(
        dataset=str(calib_file), nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed
    )
    batches = [{k: v.to(args.device) for k, v in b.items()} for b in build_calibration_batches(calib, tok)]
    config = PruningConfig.from_dict({"sparsity": args.sparsity, **config_dict})
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # Forward floor: one plain pass over the calibration set (after one warm-up batch).
    with torch.no_grad():
        model(**batches[0], use_cache=False)
        _sync(args.device)
        t0 = time.perf_counter()
        c0 = time.process_time()
        for b in batches:
            model(**b, use_cache=False)
        _sync(args.device)
    floor = time.perf_counter() - t0
    # CPU seconds too: on a shared machine wall time swings with other processes' load; the CPU time
    # of this process is the steadier ratio.
    floor_cpu = time.process_time() - c0
    sampler = RssSampler()
    t0 = time.perf_counter()
    c0 = time.process_time()
    if mode == "sequential":
        wrapped = PrunedModel(model, config)
        run_unstructured(model, config, PruneContext(progress=False, batches=batches, pruned=wrapped))
        _sync(args.device)
        seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - c0
        model = wrapped.finalize()
    else:
        _whole_model(model, config, batches)
        _sync(args.device)
        seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - c0
    peak_mb = sampler.stop()
    row = {
        "method": label,
        "mode": mode,
        "seconds": seconds,
        "floor_s": floor,
        "ratio_to_floor": seconds / floor,
        "cpu_ratio_to_floor": cpu_seconds / floor_cpu,
        "peak_rss_above_model_mb": peak_mb,
        "process_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if args.device.startswith("cuda"):
        row["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if args.model not in SHAPES:
        row["ppl"] = perplexity(
            model, tok, zoo.get_eval_texts("heldout"), seqlen=args.seqlen, max_windows=24, progress=False
        )
    return row


def _whole_model(model, config, batches) -> None:
    import torch

    from hf_prune.arch import linear_in_out
    from hf_prune.arch.targets import resolve_targets
    from hf_prune.calibration.stats import InputHessian, InputSqNorm, attach

    refs = resolve_targets(model, None, None)
    kind = {"wanda": ("sq_norm", InputSqNorm), "sparsegpt": ("hessian", InputHessian)}[config.method]
    stats = {r.name: {kind[0]: kind[1](linear_in_out(r.module)[0])} for r in refs}
    handles = [attach(r.module, stats[r.name][kind[0]]) for r in refs]
    with torch.no_grad():
        for b in batches:
            model(**b, use_cache=False)
    for h in handles:
        h.remove()
    for r in refs:
        config.prune_layer(r.module, config.sparsity, stats[r.name])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="random-144m", help="random-144m, random-1b or a zoo model name")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (statistics stay fp32 either way)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--rows", nargs="*", type=int, help="indices into ROWS (default: all)")
    args = parser.parse_args()
    if args.child is not None:
        label, config_dict, mode = ROWS[args.child]
        print(json.dumps(_child(args, label, config_dict, mode)))
        return
    rows = []
    base = [a for a in sys.argv[1:]]
    for i in args.rows if args.rows else range(len(ROWS)):
        cmd = [sys.executable, "-m", "benchmarks.method_speed", *base, "--child", str(i)]
        out = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        )
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"row {ROWS[i]} failed")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    load = os.getloadavg()
    print(
        f"model={args.model} device={args.device} dtype={args.dtype} "
        f"calib={args.nsamples}x{args.seqlen} threads={args.threads}"
    )
    print(f"load average at the end (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print_table(rows)
    write_results(
        f"method_speed_{args.model}_{args.device}", {"args": vars(args), "rows": rows, "loadavg": load}
    )


if __name__ == "__main__":
    main()
