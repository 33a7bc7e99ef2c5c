"""Time and peak memory of scoring + pruning a zoo model, per method, sequential vs whole-model.

*sequential* is hf_prune's pipeline (one block calibrated and pruned at a time, pruned outputs fed to
the next block). *whole-model* is the naive baseline: hooks on every projection, one full forward pass
per batch, then every layer pruned from those statistics (all statistics alive at once). Each row runs
in its own subprocess so peak RSS is not shared; perplexity on a few held-out windows shows what the
sequential recompute buys.

Run: ``python -m benchmarks.method_speed [--model llama-gqa-small]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks.common import RssSampler, print_table, write_results

METHODS = ["magnitude", "wanda", "sparsegpt", "snip"]
WHOLE = ["wanda", "sparsegpt"]


def _child(model_name: str, method: str, mode: str, sparsity: float, nsamples: int, seqlen: int) -> dict:
    import torch

    from hf_prune import CalibrationConfig, PruningConfig, prune, zoo
    from hf_prune.evaluation import perplexity

    torch.set_num_threads(1)
    model, tok = zoo.load_zoo_model(model_name)
    calib_file = zoo.write_split_text("calibration", "/tmp/hf_prune_bench_calib.txt")
    calib = CalibrationConfig(dataset=str(calib_file), nsamples=nsamples, seqlen=seqlen)
    config = PruningConfig.from_dict({"method": method, "sparsity": sparsity})
    sampler = RssSampler()
    t0 = time.perf_counter()
    if mode == "sequential":
        prune(
            model, config, calibration=None if method == "magnitude" else calib, tokenizer=tok, progress=False
        )
    else:
        _whole_model(model, config, calib, tok)
    seconds = time.perf_counter() - t0
    peak_mb = sampler.stop()
    ppl = perplexity(model, tok, zoo.get_eval_texts("heldout"), seqlen=seqlen, max_windows=24, progress=False)
    return {
        "method": method,
        "mode": mode,
        "seconds": seconds,
        "peak_rss_above_model_mb": peak_mb,
        "ppl": ppl,
    }


def _whole_model(model, config, calib, tok) -> None:
    import torch

    from hf_prune.arch import linear_in_out
    from hf_prune.arch.targets import resolve_targets
    from hf_prune.calibration.data import build_calibration_batches
    from hf_prune.calibration.stats import InputHessian, InputSqNorm, attach

    refs = resolve_targets(model, None, None)
    kind = {"wanda": ("sq_norm", InputSqNorm), "sparsegpt": ("hessian", InputHessian)}[config.method]
    stats = {r.name: {kind[0]: kind[1](linear_in_out(r.module)[0])} for r in refs}
    handles = [attach(r.module, stats[r.name][kind[0]]) for r in refs]
    with torch.no_grad():
        for b in build_calibration_batches(calib, tok):
            model(**b, use_cache=False)
    for h in handles:
        h.remove()
    for r in refs:
        config.prune_layer(r.module, config.sparsity, stats[r.name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--child", nargs=6, metavar=("MODEL", "METHOD", "MODE", "SPARSITY", "NSAMPLES", "SEQLEN")
    )
    parser.add_argument("--model", default="llama-gqa-small")
    parser.add_argument("--sparsity", type=float, default=0.6)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    args = parser.parse_args()
    if args.child:
        m, method, mode, s, n, L = args.child
        print(json.dumps(_child(m, method, mode, float(s), int(n), int(L))))
        return
    rows = []
    for method, mode in [(m, "sequential") for m in METHODS] + [(m, "whole-model") for m in WHOLE]:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.method_speed",
            "--child",
            args.model,
            method,
            mode,
            str(args.sparsity),
            str(args.nsamples),
            str(args.seqlen),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print_table(rows)
    write_results("method_speed", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
