"""LLaVA width pruning on the zoo's llava-tiny: image-text vs text-only calibration vs magnitude.

The language model's MLP loses 30% of its neurons (uniform) with structured AFR and Wanda, each
calibrated once on image-text pairs (rendered shapes + captions, through the full LLaVA forward) and
once on the captions alone, and with data-free structured magnitude. Metric: caption-ranking
accuracy on freshly rendered held-out images (the true caption must have the lowest NLL among all
12), against the dense model and chance, in the same run. Also the measured speedup.

Run: ``python -m benchmarks.run llava_quality [--sparsity 0.3] [--heldout 240] [--seeds 3]``
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor

from benchmarks.common import print_table, write_results
from hf_prune import CalibrationConfig, PruningConfig, prune, zoo
from hf_prune.zoo.build_llava import CAPTIONS, caption_accuracy, shape_dataset, write_shape_captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sparsity", type=float, default=0.3)
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--heldout", type=int, default=240)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense, _ = zoo.load_zoo_model("llava-tiny")
    folder = zoo.shipped_model_dir("llava-tiny") or zoo.cache_root() / "llava-tiny"
    processor = AutoProcessor.from_pretrained(folder)
    heldout = shape_dataset(args.heldout, seed=777_000)  # neither the training nor the calibration seeds
    dense_acc = caption_accuracy(dense, processor, heldout)
    rows: list[dict[str, Any]] = [
        {"method": "dense", "calibration": "-", "accuracy": dense_acc, "std": 0.0, "speedup": 1.0}
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("structured_magnitude", "none")]
        cases += [(m, c) for m in ("structured_afr", "structured_wanda") for c in ("image-text", "text-only")]
        for method, calibration in cases:
            cfg = PruningConfig.from_dict({"method": method, "sparsity": args.sparsity, "scope": "mlp"})
            seeds = [0] if calibration == "none" else list(range(args.seeds))
            values, speedup = [], None
            for seed in seeds:
                calib = None
                if calibration != "none":
                    root = write_shape_captions(Path(tmp) / f"calib{seed}", args.nsamples, 50_000 + seed)
                    if calibration == "image-text":
                        calib = CalibrationConfig(
                            dataset=str(root), nsamples=args.nsamples, seqlen=32, seed=seed
                        )
                    else:
                        captions = [
                            json.loads(line)["text"]
                            for line in (root / "captions.jsonl").read_text().splitlines()
                        ]
                        # Text-only: the same captions, concatenated, windows of the same token budget.
                        calib = CalibrationConfig(
                            dataset=captions, nsamples=args.nsamples, seqlen=16, seed=seed
                        )
                pm = prune(copy.deepcopy(dense), cfg, calibration=calib, tokenizer=processor, progress=False)
                values.append(caption_accuracy(pm.base_model, processor, heldout))
                if speedup is None:
                    speedup = pm.measure_speed(dense, seqlen=64, repeats=5)["speedup"]
            rows.append(
                {
                    "method": method,
                    "calibration": calibration,
                    "accuracy": statistics.mean(values),
                    "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                    "speedup": speedup,
                    "values": values,
                }
            )
            print(f"{method} {calibration}: {rows[-1]['accuracy']:.3f} ± {rows[-1]['std']:.3f}", flush=True)
    print(f"chance: {1 / len(CAPTIONS):.3f}; held-out images: {len(heldout)}")
    print_table(rows, ["method", "calibration", "accuracy", "std", "speedup"])
    write_results("llava_quality", {"args": vars(args), "chance": 1 / len(CAPTIONS), "rows": rows})


if __name__ == "__main__":
    main()
