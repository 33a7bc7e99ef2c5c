"""hf_prune vs llm-compressor: Wanda and SparseGPT on the same model folder and calibration tokens.

llm-compressor pins its own transformers, so it never enters hf_prune's dependencies: this script
creates a private virtual environment (default ``~/.cache/hf_prune/llmc-venv``) with the CPU torch wheel
pinned first (so pip cannot pull a CUDA build) and a pinned ``llmcompressor``, then runs, each in its
own fresh process and with the same thread count:

* a plain forward pass over the calibration set (the floor of any calibrated method),
* llm-compressor's ``oneshot`` with ``WandaPruningModifier`` / ``SparseGPTModifier``
  (``targets=["Linear"]``, ``ignore=["re:.*lm_head"]``, sequential pipeline),
* hf_prune's ``WandaConfig`` / ``SparseGPTConfig`` (sequential runner),

on the same saved model folder and the same calibration token ids (written once by this script), and
prints for each: pruning time, time / forward floor, the process's peak RSS (``ru_maxrss``: load,
prune, save all included) and held-out perplexity computed by the same code on the same token ids.

Run: ``python -m benchmarks.vs_llmcompressor [--model llama-gqa-small|random-144m] [--seeds 0 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLMC_VERSION = "0.14.0.1"
DEFAULT_VENV = Path(os.environ.get("HF_PRUNE_CACHE", Path.home() / ".cache" / "hf_prune")) / "llmc-venv"
SHAPE_144M = dict(
    vocab_size=4096,
    hidden_size=1024,
    intermediate_size=2816,
    num_hidden_layers=12,
    num_attention_heads=16,
    num_key_value_heads=4,
    max_position_embeddings=2048,
)


# ------------------------------------------------------------------------ shared by both children
def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _ppl(model, ids, seqlen: int) -> float:
    import torch

    n = ids.numel() // seqlen
    windows = ids[: n * seqlen].view(n, seqlen)
    nll, count = 0.0, 0
    with torch.inference_mode():
        for w in windows:
            logits = model(input_ids=w.unsqueeze(0), use_cache=False).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, w[1:], reduction="sum"))
            count += w.numel() - 1
    return float(torch.exp(torch.tensor(nll / count)))


def _forward_floor(model, calib) -> float:
    import torch

    t0 = time.perf_counter()
    with torch.no_grad():
        for row in calib:
            model(input_ids=row.unsqueeze(0), use_cache=False)
    return time.perf_counter() - t0


def _child(tool: str, method: str, folder: str, data: str, sparsity: float, threads: int, out: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    tensors = torch.load(data, weights_only=True)
    calib, heldout, seqlen = tensors["calib"], tensors["heldout"], int(tensors["seqlen"])
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    floor = _forward_floor(model, calib)
    t0 = time.perf_counter()
    if tool == "llmcompressor":
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.pruning import WandaPruningModifier
        from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier

        ds = Dataset.from_dict(
            {"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()}
        )
        cls = WandaPruningModifier if method == "wanda" else SparseGPTModifier
        recipe = cls(sparsity=sparsity, mask_structure="0:0", targets=["Linear"], ignore=["re:.*lm_head"])
        oneshot(
            model=model,
            dataset=ds,
            recipe=recipe,
            num_calibration_samples=calib.shape[0],
            max_seq_length=seqlen,
            shuffle_calibration_samples=False,
            pipeline="sequential",
        )
        prune_s = time.perf_counter() - t0
        model.save_pretrained(out, save_compressed=False)
    else:
        from hf_prune import SparseGPTConfig, WandaConfig
        from hf_prune.integration.pruned_model import PrunedModel
        from hf_prune.methods.base import PruneContext
        from hf_prune.methods.unstructured import run_unstructured

        # "hf_prune-dense": the one-pass variant (next block calibrated on dense outputs).
        propagation = "dense" if tool == "hf_prune-dense" else "pruned"
        config = (WandaConfig if method == "wanda" else SparseGPTConfig)(
            sparsity=sparsity, propagation=propagation
        )
        wrapped = PrunedModel(model, config)
        batches = [{"input_ids": row.unsqueeze(0), "attention_mask": torch.ones(1, seqlen)} for row in calib]
        ctx = PruneContext(progress=False, batches=batches, pruned=wrapped)
        run_unstructured(model, config, ctx)
        prune_s = time.perf_counter() - t0
        model = wrapped.finalize()
        model.save_pretrained(out)
    targeted = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    zeros = sum(int((m.weight == 0).sum()) for m in targeted)
    total = sum(m.weight.numel() for m in targeted)
    return {
        "tool": tool,
        "method": method,
        "prune_s": prune_s,
        "floor_s": floor,
        "ratio_to_floor": prune_s / floor,
        "peak_rss_gb": _peak_rss_gb(),
        "sparsity": zeros / total,
        "ppl": _ppl(model, heldout, seqlen),
    }


# ---------------------------------------------------------------------------------------- parent
def ensure_venv(venv: Path) -> Path:
    """Create the llm-compressor environment once; return its python."""
    python = venv / "bin" / "python"
    probe = [
        str(python),
        "-c",
        f"import llmcompressor, sys; sys.exit(llmcompressor.__version__ != '{LLMC_VERSION}')",
    ]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    import torch

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    torch_pin = f"torch=={torch.__version__}"
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(torch_pin + "\n")  # constraint: the resolver may not swap in another (CUDA) torch
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, torch_pin], check=True)
    subprocess.run([*pip, "-c", fh.name, f"llmcompressor=={LLMC_VERSION}"], check=True)
    return python


def _prepare(model_name: str, folder: Path, data: Path, nsamples: int, seqlen: int, seed: int) -> None:
    import torch

    from hf_prune import CalibrationConfig, zoo
    from hf_prune.calibration.data import build_calibration_batches

    zmodel, tok = zoo.load_zoo_model("llama-gqa-small")
    if model_name == "random-144m":
        from transformers import AutoModelForCausalLM, LlamaConfig

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(LlamaConfig(**{**SHAPE_144M, "vocab_size": len(tok)}))
    else:
        model = zmodel
    if not folder.exists():
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    calib_file = zoo.write_split_text("calibration", folder.parent / "calib.txt")
    calib = build_calibration_batches(
        CalibrationConfig(dataset=str(calib_file), nsamples=nsamples, seqlen=seqlen, seed=seed), tok
    )
    ids = torch.cat([b["input_ids"] for b in calib])
    held = tok("\n\n".join(zoo.get_eval_texts("heldout")), return_tensors="pt")["input_ids"][0]
    torch.save({"calib": ids, "heldout": held[: 24 * seqlen], "seqlen": torch.tensor(seqlen)}, data)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="llama-gqa-small", choices=["llama-gqa-small", "random-144m"])
    parser.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt"])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--tools", nargs="+", help="run only these (llmcompressor, hf_prune, hf_prune-dense)")
    parser.add_argument(
        "--dense-propagation", action="store_true", help="also run hf_prune with propagation='dense'"
    )
    args = parser.parse_args()
    if args.child:
        tool, method, folder, data, sparsity, threads, out = args.child
        print(json.dumps(_child(tool, method, folder, data, float(sparsity), int(threads), out)))
        return
    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo))
    from benchmarks.common import print_table, write_results

    llmc_python = ensure_venv(args.venv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="hf_prune_vs_llmc_") as tmp:
        folder = Path(tmp) / "model"
        for seed in args.seeds:
            data = Path(tmp) / f"data_{seed}.pt"
            _prepare(args.model, folder, data, args.nsamples, args.seqlen, seed)
            for method in args.methods:
                tools = [("llmcompressor", llmc_python), ("hf_prune", Path(sys.executable))]
                if args.dense_propagation:
                    tools.append(("hf_prune-dense", Path(sys.executable)))
                tools = [t for t in tools if args.tools is None or t[0] in args.tools]
                for tool, python in tools:
                    cmd = [
                        str(python),
                        str(Path(__file__).resolve()),
                        "--child",
                        tool,
                        method,
                        str(folder),
                        str(data),
                        str(args.sparsity),
                        str(args.threads),
                        str(Path(tmp) / f"out_{tool}_{method}_{seed}"),
                    ]
                    res = subprocess.run(
                        cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(repo)}
                    )
                    if res.returncode != 0:
                        print(res.stderr[-3000:], file=sys.stderr)
                        raise SystemExit(f"{tool} {method} failed (exit {res.returncode})")
                    row = {"seed": seed, **json.loads(res.stdout.strip().splitlines()[-1])}
                    rows.append(row)
                    print(row, flush=True)
    load = os.getloadavg()
    print(
        f"model={args.model} sparsity={args.sparsity} "
        f"calib={args.nsamples}x{args.seqlen} threads={args.threads}"
    )
    print(f"load average during the run (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print_table(rows)
    write_results(
        f"vs_llmcompressor_{args.model}",
        {"args": {k: str(v) for k, v in vars(args).items()}, "llmcompressor": LLMC_VERSION, "rows": rows},
    )


if __name__ == "__main__":
    main()
