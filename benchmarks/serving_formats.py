"""Serving formats: forward latency of pruned Llamas in PyTorch, ONNX Runtime and (GPU) vLLM, vs dense.

A Llama of ~124M parameters (the shape of ``structured_speed``: hidden 768, 12 layers, 12 query / 4 KV
heads, MLP 2048, vocab 32000; random weights, latency does not depend on their values) is pruned three
ways. So that blocks differ as a trained model's do (and a global threshold gives each block its own
width), each MLP neuron's weights are scaled by a log-normal factor whose spread grows from 0 in the
first block to 1 in the last.

* **depth 25%**: ``AngularDepthConfig(num_layers=3)`` removes 3 of the 12 blocks;
* **uniform width 50% MLP**: ``StructuredMagnitudeConfig(sparsity=0.5, scope="mlp", round_to=64)``;
* **non-uniform width**: the same 50% of MLP neurons with ``allocation="global"`` (one threshold over all
  layers, so every block keeps a different width, multiples of 64; ``per_layer_config`` in the card).

For each, in one run: PyTorch latency dense vs pruned (``PrunedModel.measure_speed``: interleaved runs,
median, FLOPs counted with ``FlopCounterMode``; this is what the saved card's "Measured speed" shows),
ONNX Runtime latency of the dense and the pruned export (:func:`hf_prune.integration.export.onnx.
compare_onnx_latency`, same protocol, ORT with the same thread count), the largest ORT-vs-PyTorch logit
difference (next to float32's own error on the model, PyTorch float32 vs float64 logits, for scale), and
the FLOP-proportional ideal speedup (dense FLOPs / pruned FLOPs). The vLLM column needs
a CUDA GPU and ``vllm``; without them it reads ``n/a`` (``benchmarks/gpu_checks.py`` does the vLLM
load / greedy-generation check on a lent GPU).

Run: ``python -m benchmarks.run serving_formats [--seqlen 256] [--batch-size 1] [--repeats 10] [--threads 2]``
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    RESULTS,
    ByteTokenizer,
    add_llama_args,
    byte_calibration,
    print_table,
    random_llama,
    write_results,
)
from hf_prune import AngularDepthConfig, StructuredMagnitudeConfig, prune
from hf_prune.integration.export.onnx import compare_onnx_latency, export_onnx, onnx_logits

CALIB = byte_calibration("serving")


def _vllm_status() -> str:
    if not torch.cuda.is_available():
        return "n/a (no GPU)"
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "n/a (vllm not installed)"
    return "see gpu_checks.py"


def _mlp_widths(model: Any) -> list[int]:
    return [int(layer.mlp.gate_proj.out_features) for layer in model.model.layers]


def _heterogeneous_mlp(model: Any, seed: int = 0) -> None:
    """Scale MLP neurons by ``exp(s_l * z)``, ``s_l`` from 0 (first block) to 1 (last), ``z ~ N(0, 1)``."""
    generator = torch.Generator().manual_seed(seed)
    layers = model.model.layers
    with torch.no_grad():
        for i, layer in enumerate(layers):
            spread = i / max(1, len(layers) - 1)
            scale = torch.exp(spread * torch.randn(layer.mlp.up_proj.out_features, generator=generator))
            layer.mlp.gate_proj.weight.mul_(scale[:, None])
            layer.mlp.up_proj.weight.mul_(scale[:, None])
            layer.mlp.down_proj.weight.mul_(scale[None, :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_llama_args(parser)
    parser.add_argument("--keep-exports", action="store_true", help="keep the ONNX folders under results/")
    args = parser.parse_args()
    dense = random_llama(args)
    _heterogeneous_mlp(dense)
    params = sum(p.numel() for p in dense.parameters())
    print(
        f"dense Llama: {params / 1e6:.1f}M parameters; batch {args.batch_size} x {args.seqlen} tokens, "
        f"{args.threads} threads",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="serving_formats-")) if not args.keep_exports else RESULTS / "onnx"
    n_drop = max(1, args.layers // 4)
    cases = [
        (f"depth 25% ({n_drop} of {args.layers} blocks)", "depth25", AngularDepthConfig(num_layers=n_drop)),
        (
            "uniform width 50% MLP",
            "mlp50",
            StructuredMagnitudeConfig(sparsity=0.5, scope="mlp", round_to=64),
        ),
        (
            "non-uniform width 50% MLP",
            "mlp50_global",
            StructuredMagnitudeConfig(sparsity=0.5, scope="mlp", allocation="global", round_to=64),
        ),
    ]
    vllm = _vllm_status()
    check_ids = torch.randint(0, args.vocab, (2, 32), generator=torch.Generator().manual_seed(1))
    try:
        start = time.perf_counter()
        dense_dir = export_onnx(dense, work / "dense", check=False)
        print(f"exported dense to ONNX in {time.perf_counter() - start:.0f}s", flush=True)
        rows: list[dict[str, Any]] = []
        for name, tag, cfg in cases:
            pruned = prune(
                copy.deepcopy(dense), cfg, calibration=CALIB, tokenizer=ByteTokenizer(), progress=False
            )
            torch_speed = pruned.measure_speed(
                dense, batch_size=args.batch_size, seqlen=args.seqlen, repeats=args.repeats
            )
            start = time.perf_counter()
            folder = export_onnx(pruned, work / tag, check=False)
            export_s = time.perf_counter() - start
            with torch.no_grad():
                want = pruned(input_ids=check_ids, use_cache=False).logits
                # float32's own error on this model: PyTorch float32 vs float64 logits.
                exact = copy.deepcopy(pruned.base_model).double()(input_ids=check_ids, use_cache=False).logits
            diff = float((onnx_logits(folder, check_ids) - want).abs().max())
            floor = float((want.double() - exact).abs().max())
            ort_speed = compare_onnx_latency(
                dense_dir,
                folder,
                batch_size=args.batch_size,
                seqlen=args.seqlen,
                repeats=args.repeats,
                threads=args.threads,
            )
            # ONNX Runtime figures beside the PyTorch ones in the report (the card renders report.speed).
            pruned.report.extra["onnx_speed"] = {
                k: v for k, v in ort_speed.items() if not isinstance(v, dict)
            }
            widths = _mlp_widths(pruned.base_model)
            row = {
                "pruned": name,
                "params_ratio": pruned.report.params_after / params,
                "mlp_widths": f"{min(widths)}-{max(widths)}" if len(set(widths)) > 1 else str(widths[0]),
                "torch_dense_ms": torch_speed["baseline_ms"],
                "torch_pruned_ms": torch_speed["pruned_ms"],
                "torch_speedup": torch_speed["speedup"],
                "ort_dense_ms": ort_speed["baseline_ms"],
                "ort_pruned_ms": ort_speed["pruned_ms"],
                "ort_speedup": ort_speed["speedup"],
                "ideal_speedup": torch_speed["ideal_speedup"],
                "vllm": vllm,
                "ort_max_abs_diff": diff,
                "fp32_vs_fp64": floor,
                "max_logit": float(want.abs().max()),
                "export_s": export_s,
            }
            rows.append(row)
            print(
                f"{name}: torch {row['torch_dense_ms']:.1f} -> {row['torch_pruned_ms']:.1f} ms "
                f"({row['torch_speedup']:.2f}x), ORT {row['ort_dense_ms']:.1f} -> "
                f"{row['ort_pruned_ms']:.1f} ms "
                f"({row['ort_speedup']:.2f}x), ideal {row['ideal_speedup']:.2f}x, ORT |diff| {diff:.1e}",
                flush=True,
            )
            saved = pruned.save_pretrained(RESULTS / f"serving_formats_{tag}")
            print(f"saved {saved} (its README.md shows the measured speedup)", flush=True)
            del pruned
    finally:
        if not args.keep_exports:
            shutil.rmtree(work, ignore_errors=True)
    print_table(
        rows,
        [
            "pruned",
            "params_ratio",
            "mlp_widths",
            "torch_dense_ms",
            "torch_pruned_ms",
            "torch_speedup",
            "ort_dense_ms",
            "ort_pruned_ms",
            "ort_speedup",
            "ideal_speedup",
            "vllm",
            "ort_max_abs_diff",
            "fp32_vs_fp64",
        ],
    )
    write_results("serving_formats", {"args": vars(args), "dense_params": params, "rows": rows})


if __name__ == "__main__":
    main()
