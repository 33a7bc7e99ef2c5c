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

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from benchmarks.common import RESULTS, print_table, write_results
from hf_prune import BlockInfluenceConfig, CalibrationConfig, StructuredMagnitudeConfig, prune


class _ByteTokenizer:
    """Bytes as token ids: enough to calibrate a random-weight model (scores do not matter here)."""

    def __call__(self, text: str, return_tensors: str | None = None, add_special_tokens: bool = False) -> Any:
        return {"input_ids": torch.tensor([[3 + b for b in text.encode()]])}


CALIB = CalibrationConfig(
    dataset=[f"speed calibration text {i} " * 20 for i in range(8)], nsamples=4, seqlen=64
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(2048, args.seqlen),
        tie_word_embeddings=False,
    )
    dense = AutoModelForCausalLM.from_config(config).eval()
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
            copy.deepcopy(dense), cfg, calibration=CALIB, tokenizer=_ByteTokenizer(), progress=False
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
