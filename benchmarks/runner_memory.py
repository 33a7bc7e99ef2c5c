"""Peak memory of collecting SparseGPT-style Hessians: sequential runner vs whole-model hooks.

Each mode runs in its own subprocess (so peaks do not mix) on the same 12-block Llama and the same
calibration batches, and reports the peak RSS above the level after the model is built, plus time.
The statistics themselves are checked equal in tests/test_calibration.py.

Run: ``python -m benchmarks.runner_memory``
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from benchmarks.common import RssSampler, print_table, write_results

SETUP = dict(hidden=512, intermediate=1376, layers=12, heads=8, kv=2, nsamples=8, seqlen=256, batch=2)


def _child(mode: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from hf_prune.arch import iter_block_linears, linear_in_out
    from hf_prune.calibration.runner import run_sequential
    from hf_prune.calibration.stats import InputHessian, attach

    torch.manual_seed(0)
    s = SETUP
    cfg = LlamaConfig(
        vocab_size=1024,
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv"],
    )
    model = AutoModelForCausalLM.from_config(cfg).eval()
    ids = torch.randint(0, 1024, (s["nsamples"], s["seqlen"]))
    batches = [{"input_ids": b} for b in ids.split(s["batch"])]
    sampler = RssSampler()
    t0 = time.perf_counter()
    checksum = 0.0
    if mode == "whole-model":
        refs = list(iter_block_linears(model))
        stats = {r.name: InputHessian(linear_in_out(r.module)[0]) for r in refs}
        handles = [attach(r.module, stats[r.name]) for r in refs]
        with torch.no_grad():
            for b in batches:
                model(**b, use_cache=False)
        for h in handles:
            h.remove()
        checksum = sum(float(c.sum_xxt.trace()) for c in stats.values())
    else:
        names = {id(r.module): r.name for r in iter_block_linears(model)}
        traces = []

        def collectors(i, block):
            return {
                names[id(m)]: (m, InputHessian(linear_in_out(m)[0]))
                for m in block.modules()
                if id(m) in names
            }

        def on_block(i, block, st):
            traces.extend(float(c.sum_xxt.trace()) for c in st.values())

        run_sequential(
            model, batches, collectors=collectors, on_block=on_block, recompute=False, progress=False
        )
        checksum = sum(traces)
    seconds = time.perf_counter() - t0
    peak_mb = sampler.stop()
    return {
        "mode": mode,
        "peak_rss_above_model_mb": peak_mb,
        "seconds": seconds,
        "checksum": checksum,
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2])))
        return
    rows = []
    for mode in ("whole-model", "sequential"):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.runner_memory", "--child", mode],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ratio = rows[1]["peak_rss_above_model_mb"] / max(rows[0]["peak_rss_above_model_mb"], 1e-9)
    print_table(rows)
    print(f"sequential / whole-model peak memory: {ratio:.2f}")
    rel = abs(rows[0]["checksum"] - rows[1]["checksum"]) / abs(rows[0]["checksum"])
    print(f"Hessian trace agreement (relative): {rel:.2e}")
    write_results(
        "runner_memory", {"setup": SETUP, "rows": rows, "memory_ratio": ratio, "checksum_rel_diff": rel}
    )


if __name__ == "__main__":
    main()
