"""Prune the language-model MLP of a LLaVA with image-text calibration, on one or several processes.

    python examples/prune_llava.py [--method structured_wanda] [--sparsity 0.3] [--output out/llava]
    accelerate launch --cpu --num_processes 2 examples/prune_llava.py [...]

Defaults: the zoo's shipped ``llava-tiny`` and rendered, captioned shapes written to
``OUTPUT/calibration/`` (offline). Under ``accelerate launch`` every process calibrates on its share of
the samples and hf_prune sums the statistics (input norms, Hessians, gradients) across processes before
each pruning decision, so every process prunes identically and the result equals the one-process run.
Only the main process writes the checkpoint (weights, processor, card with the measured speed).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoProcessor

from hf_prune import CalibrationConfig, PruningConfig, prune, zoo
from hf_prune.zoo.build_llava import CAPTIONS, caption_accuracy, shape_dataset, write_shape_captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", default="structured_wanda")
    parser.add_argument("--sparsity", type=float, default=0.3, help="fraction of MLP neurons removed")
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--output", default="out/llava-tiny-pruned")
    parser.add_argument("--eval-images", type=int, default=48, help="held-out images for caption ranking")
    args = parser.parse_args()
    # Under `accelerate launch` this joins the process group (gloo when there is no GPU).
    state = PartialState(cpu=not torch.cuda.is_available())
    torch.manual_seed(0)
    out = Path(args.output)
    calib_dir = out / "calibration"
    if state.is_main_process:
        write_shape_captions(calib_dir, args.nsamples, seed=123)
    state.wait_for_everyone()

    model, _ = zoo.load_zoo_model("llava-tiny")
    processor = AutoProcessor.from_pretrained(
        zoo.shipped_model_dir("llava-tiny") or zoo.cache_root() / "llava-tiny"
    )
    dense = copy.deepcopy(model)
    config = PruningConfig.from_dict(
        {"method": args.method, "sparsity": args.sparsity, "scope": "mlp", "round_to": 8}
    )
    calibration = CalibrationConfig(dataset=str(calib_dir), nsamples=args.nsamples, seqlen=32, seed=0)
    pruned = prune(model, config, calibration=calibration, tokenizer=processor, progress=False)
    kept = [int(layer.mlp.up_proj.out_features) for layer in pruned.base_model.model.language_model.layers]
    heldout = shape_dataset(args.eval_images, seed=999)
    if state.is_main_process:
        pruned.measure_speed(dense, seqlen=64, repeats=5)
        before, after = (
            caption_accuracy(dense, processor, heldout),
            caption_accuracy(pruned.base_model, processor, heldout),
        )
        pruned.report.evaluation["caption_ranking_accuracy"] = {"before": before, "after": after}
        folder = pruned.save_pretrained(out / "checkpoint")
        probe = processor(images=[heldout[0][0]], text=["<image>\n" + CAPTIONS[0]], return_tensors="pt")
        with torch.no_grad():
            logits = pruned(**probe).logits
        torch.save({"logits": logits, "kept": kept}, out / "result.pt")
        print(f"processes: {state.num_processes}; kept MLP widths {kept}")
        print(f"caption ranking {before:.3f} -> {after:.3f}; speedup {pruned.report.speed['speedup']:.2f}x")
        print(f"checkpoint: {folder}")
    state.wait_for_everyone()


if __name__ == "__main__":
    main()
