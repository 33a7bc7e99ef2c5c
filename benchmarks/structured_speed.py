"""Speed of structured (width and depth) pruning: measured forward latency vs the FLOP-proportional ideal.

A Llama of ~125M parameters (hidden 768, 12 layers, 12 query / 4 KV heads, MLP 2048, vocab 32000;
random weights: latency does not depend on their values) is pruned with ``StructuredMagnitudeConfig``
at 25% and 50% of MLP neurons and at 25% of query heads (uniform, so plain ``transformers`` loads the
result), and with ``BlockInfluenceConfig`` removing 25% and 50% of the blocks (the first and last two
protected; which blocks go does not change the latency). Each pruned model is timed against the
dense one with interleaved runs
(``PrunedModel.measure_speed``), its FLOPs counted with ``torch``'s ``FlopCounterMode``; the ideal
speedup is dense FLOPs / pruned FLOPs. One of the pruned checkpoints is saved so the card's "Measured
speed" section can be read.

Run: ``python -m benchmarks.run structured_speed [--seqlen 256] [--repeats 10] [--threads 2]``
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    ByteTokenizer,
    add_llama_args,
    byte_calibration,
    print_table,
    random_llama,
    write_results,
)
from hf_prune import BlockInfluenceConfig, StructuredMagnitudeConfig, prune

CALIB = byte_calibration("speed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_llama_args(parser)
    args = parser.parse_args()
    dense = random_llama(args)
    params = sum(p.numel() for p in dense.parameters())
    print(f"dense Llama: {params / 1e6:.1f}M parameters")
    cases = [
        ("MLP neurons 25%", StructuredMagnitudeConfig(sparsity=0.25, scope="mlp", round_to=64)),
        ("MLP neurons 50%", StructuredMagnitudeConfig(sparsity=0.5, scope="mlp", round_to=64)),
        ("query heads 25%", StructuredMagnitudeConfig(sparsity=0.25, scope="attention")),
        ("blocks 25%", BlockInfluenceConfig(ratio=0.25)),
        ("blocks 50%", BlockInfluenceConfig(ratio=0.5)),
    ]
    rows: list[dict[str, Any]] = []
    for name, cfg in cases:
        pruned = prune(
            copy.deepcopy(dense), cfg, calibration=CALIB, tokenizer=ByteTokenizer(), progress=False
        )
        speed = pruned.measure_speed(
            dense, batch_size=args.batch_size, seqlen=args.seqlen, repeats=args.repeats
        )
        rows.append(
            {
                "removed": name,
                "params": pruned.report.params_after,
                "params_ratio": pruned.report.params_after / params,
                "dense_ms": speed["baseline_ms"],
                "pruned_ms": speed["pruned_ms"],
                "speedup": speed["speedup"],
                "ideal_speedup": speed["ideal_speedup"],
                "efficiency": (speed["speedup"] - 1) / max(1e-9, speed["ideal_speedup"] - 1),
            }
        )
        print(
            f"{name}: {speed['baseline_ms']:.1f} -> {speed['pruned_ms']:.1f} ms, "
            f"{speed['speedup']:.2f}x (ideal {speed['ideal_speedup']:.2f}x)",
            flush=True,
        )
        if name in ("MLP neurons 50%", "blocks 25%"):
            tag = "mlp50" if name.startswith("MLP") else "depth25"
            folder = pruned.save_pretrained(Path(RESULTS) / f"structured_speed_{tag}")
            print(f"saved {folder} (see its README.md, 'Measured speed')")
        del pruned
    print_table(
        rows,
        [
            "removed",
            "params",
            "params_ratio",
            "dense_ms",
            "pruned_ms",
            "speedup",
            "ideal_speedup",
            "efficiency",
        ],
    )
    write_results("structured_speed", {"args": vars(args), "dense_params": params, "rows": rows})


if __name__ == "__main__":
    main()
