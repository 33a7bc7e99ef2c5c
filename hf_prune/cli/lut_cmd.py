"""``hf-prune lut``: measure a latency look-up table for the latency-constrained Fisher mask search."""

from __future__ import annotations

import argparse
from pathlib import Path

_HF_AUTO = {
    "causal-lm": "AutoModelForCausalLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "base": "AutoModel",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lut``.

    Args:
        subparsers: The ``hf-prune`` sub-parsers.
    """
    p = subparsers.add_parser(
        "lut",
        help="measure attention/MLP latency per kept head/neuron count (for FisherMaskConfig)",
        description=(
            "Measure, on this machine, the latency of one block's attention keeping k heads (KV groups for "
            "GQA models) and of its MLP keeping n neurons; writes DIR/latency_lut_<device>.json (CPU, and "
            "CUDA when present) for FisherMaskConfig(metric='latency', lut=...)."
        ),
    )
    p.add_argument("model", help="local folder or Hub id of the model")
    p.add_argument("--output", "-o", required=True, help="folder for the tables")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--neuron-points", type=int, default=16, help="MLP widths measured (evenly spaced)")
    p.add_argument("--task", choices=sorted(_HF_AUTO), default="sequence-classification")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``hf-prune lut``.

    Args:
        args: Parsed arguments.

    Returns:
        Exit code.
    """
    import torch
    import transformers

    from hf_prune.evaluation.lut import lut_shape, measure_latency_lut, save_lut

    if args.neuron_points < 1:
        raise ValueError(f"--neuron-points must be >= 1, got {args.neuron_points}.")
    model = getattr(transformers, _HF_AUTO[args.task]).from_pretrained(args.model, dtype="float32").eval()
    inter = lut_shape(model)["intermediate_size"]
    points = sorted({max(1, round(inter * i / args.neuron_points)) for i in range(1, args.neuron_points + 1)})
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        lut = measure_latency_lut(
            model,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            neuron_counts=points,
            repeats=args.repeats,
            device=device,
            progress=not args.no_progress,
        )
        path = save_lut(lut, Path(args.output) / f"latency_lut_{device}.json")
        full_h, full_n = max(lut["mha"]), max(lut["ffn"])
        print(
            f"{device}: attention {lut['mha'][full_h]:.3f} ms with all {full_h} {lut['head_unit']}s, "
            f"MLP {lut['ffn'][full_n]:.3f} ms with all {full_n} neurons -> {path}"
        )
    return 0
