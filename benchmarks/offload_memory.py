"""Pruning a model whose fp32 weights exceed an imposed memory cap, through accelerate disk offload.

A Llama with ~300 MB of fp32 weights is loaded in fresh subprocesses: fully in memory, and with
``device_map="auto", max_memory={"cpu": CAP}`` so accelerate offloads the blocks to disk. Both are
pruned with Wanda (sequential runner) and saved with the streamed writer
(``hf_prune.surgery.offload.save_weights_streaming``, 32 MB shards); the table shows the process's
peak RSS and anonymous RSS above the starting level and the time, checks that the pruned models give
the same logits, and that the offloaded model's saved checkpoint reloads with identical logits.

The starting level is taken after the same pipeline ran once on a 2-block model in the same process
(library code pages and imported modules are a per-process constant, not memory that grows with the
model); the ``offloaded-cold`` row skips that warm-up and shows the constant. Plain RSS includes the
memory-mapped checkpoint pages of the weights accelerate keeps in memory (within the cap); anonymous
RSS does not.

Run: ``python -m benchmarks.offload_memory [--cap 64MB]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from benchmarks.common import RssSampler, print_table, write_results

SETUP = dict(hidden=768, intermediate=2048, layers=12, heads=12, kv=4, vocab=2048)


#: The 2-block model of the warm-up (same family and vocabulary, tiny widths).
WARM_UP_SETUP = dict(SETUP, hidden=64, intermediate=128, layers=2, heads=4, kv=2)


def _build(folder: str, s: dict = SETUP) -> int:
    """Save a random Llama of shape ``s`` to ``folder``; return its fp32 bytes."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=s["vocab"],
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv"],
    )
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters()) * 4


def _block_bytes() -> int:
    """fp32 bytes of one decoder block of SETUP (q, k, v, o, gate, up, down and two norms)."""
    s = SETUP
    head_dim = s["hidden"] // s["heads"]
    attn = 2 * s["hidden"] * s["hidden"] + 2 * s["hidden"] * s["kv"] * head_dim
    return 4 * (attn + 3 * s["hidden"] * s["intermediate"] + 2 * s["hidden"])


#: Calibration of the benchmark (see _pipeline).
CALIB_NSAMPLES, CALIB_SEQLEN = 8, 128


def _activation_bytes() -> int:
    """fp32 bytes of one copy of a block's inputs over the calibration set (what the runner keeps)."""
    return 4 * CALIB_NSAMPLES * CALIB_SEQLEN * SETUP["hidden"]


def _parse_mb(text: str) -> float:
    units = {"KB": 2**-10, "MB": 1.0, "GB": 2**10}
    for unit, scale in units.items():
        if text.upper().endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text) / 2**20


def _pipeline(folder: str, offloaded: bool, cap: str, save_dir: str):
    """Load (offloaded or not), prune with Wanda, run a forward, save streamed; return (pruned, logits)."""
    import torch
    from transformers import AutoModelForCausalLM

    from hf_prune import CalibrationConfig, WandaConfig, prune
    from hf_prune.surgery.offload import save_weights_streaming

    if offloaded:
        model = AutoModelForCausalLM.from_pretrained(
            folder, device_map="auto", max_memory={"cpu": cap}, offload_folder=tempfile.mkdtemp()
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(str(int(v)) for v in torch.randint(0, 2048, (400,), generator=g)) for _ in range(8)]

    class Tok:
        def __call__(self, text, return_tensors=None, add_special_tokens=False):
            return {"input_ids": torch.tensor([[int(t) % 2048 for t in text.split()]])}

    calib = CalibrationConfig(dataset=texts, nsamples=CALIB_NSAMPLES, seqlen=CALIB_SEQLEN, batch_size=2)
    pruned = prune(model, WandaConfig(sparsity=0.5), calibration=calib, tokenizer=Tok(), progress=False)
    with torch.no_grad():
        logits = pruned(input_ids=torch.arange(32).unsqueeze(0)).logits
    # Streamed save: one tensor in memory at a time; offloaded weights read from their maps.
    save_weights_streaming(pruned.base_model, save_dir, max_shard_size="32MB")
    pruned.base_model.config.save_pretrained(save_dir)
    return pruned, logits


def _warm_up(offloaded: bool) -> None:
    """Run the same pipeline once on a 2-block model of the same family, then free it.

    Library code pages first touched by loading, pruning and saving (16 MB of ``libtorch_cpu.so``
    alone) and the modules imported on the way are a per-process constant, not memory that grows with
    the model; after this warm-up they are part of the baseline the peak is measured from.
    """
    import gc

    from hf_prune.utils import release_freed_memory

    with tempfile.TemporaryDirectory() as tmp:
        _build(f"{tmp}/model", WARM_UP_SETUP)
        pruned, _ = _pipeline(f"{tmp}/model", offloaded, "600KB", f"{tmp}/saved")
        del pruned
    gc.collect()
    release_freed_memory()


def _child(folder: str, mode: str, cap: str, out_logits: str) -> dict:
    import torch

    import hf_prune  # noqa: F401 - imported before the baseline in every mode, as a user's script does

    torch.set_num_threads(1)
    offloaded = mode.startswith("offloaded")
    if not mode.endswith("cold"):
        _warm_up(offloaded)
    sampler = RssSampler()
    anon = AnonRssSampler()
    t0 = time.perf_counter()
    save_dir = out_logits.replace(".pt", "_saved")
    pruned, logits = _pipeline(folder, offloaded, cap, save_dir)
    devices = sorted(set(getattr(pruned.base_model, "hf_device_map", {"": "cpu"}).values()))
    torch.save(logits, out_logits)
    peak_mb = sampler.stop()
    anon.stop()
    return {
        "mode": mode,
        "devices": ",".join(devices),
        "peak_rss_above_start_mb": peak_mb,
        "peak_anon_rss_above_start_mb": anon.peak_mb(),
        "seconds": time.perf_counter() - t0,
        "sparsity": pruned.report.sparsity,
        "saved": save_dir,
    }


class AnonRssSampler:
    """Peak of the process's *anonymous* RSS (``RssAnon``): memory-mapped offload files count in plain
    RSS while their pages are cached, but the kernel can drop them; anonymous memory it cannot."""

    def __init__(self) -> None:
        import threading

        self.start = self._read()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _read() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs=4)
    parser.add_argument("--cap", default="64MB")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child)))
        return
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        fp32_bytes = _build(f"{tmp}/model")
        rows = []
        for mode in ("in-memory", "offloaded", "offloaded-cold"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.offload_memory",
                    "--child",
                    f"{tmp}/model",
                    mode,
                    args.cap,
                    f"{tmp}/{mode}.pt",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        same = torch.allclose(torch.load(f"{tmp}/in-memory.pt"), torch.load(f"{tmp}/offloaded.pt"), atol=1e-4)
        from transformers import AutoModelForCausalLM

        with torch.no_grad():
            reloaded = AutoModelForCausalLM.from_pretrained(rows[1]["saved"])(
                input_ids=torch.arange(32).unsqueeze(0)
            ).logits
        reload_diff = float((reloaded - torch.load(f"{tmp}/offloaded.pt")).abs().max())
        reload_same = reload_diff <= 1e-5
        for row in rows:
            row.pop("saved")
    block_mb = _block_bytes() / 2**20
    act_mb = _activation_bytes() / 2**20
    cap_mb = _parse_mb(args.cap)
    # The bound: the weights held in memory (the cap), one block's weights loaded from the
    # offload store, and that block's activations (one copy) and statistics (Wanda: a vector per
    # projection, < 0.1 MB; not counted).
    bound_mb = cap_mb + block_mb + act_mb
    print(
        f"model fp32 weights: {fp32_bytes / 2**20:.0f} MB; cap: {args.cap}; one block: {block_mb:.1f} MB "
        f"weights + {act_mb:.1f} MB activations"
    )
    print_table(rows)
    off = next(r for r in rows if r["mode"] == "offloaded")
    cold = next(r for r in rows if r["mode"] == "offloaded-cold")

    def verdict(mb: float) -> str:
        return "within" if mb <= bound_mb else f"over by {mb - bound_mb:.1f} MB"

    anon_mb, rss_mb = off["peak_anon_rss_above_start_mb"], off["peak_rss_above_start_mb"]
    print(
        f"bound cap + one block (weights, activations) = {bound_mb:.1f} MB: offloaded peak RSS "
        f"{rss_mb:.1f} MB ({verdict(rss_mb)}; "
        f"it includes the memory-mapped checkpoint pages of the weights kept in memory), anonymous "
        f"{anon_mb:.1f} MB ({verdict(anon_mb)})"
    )
    print(
        f"cold process (no warm-up: library code pages and imports count too): peak RSS "
        f"{cold['peak_rss_above_start_mb']:.1f} MB, anonymous {cold['peak_anon_rss_above_start_mb']:.1f} MB"
    )
    print(f"pruned logits identical (atol 1e-4): {same}")
    print(
        f"offloaded model saved shard by shard and reloaded: logits equal (max |diff| {reload_diff:.1e} "
        f"<= 1e-5): {reload_same}"
    )
    write_results(
        "offload_memory",
        {
            "setup": SETUP,
            "fp32_mb": fp32_bytes / 2**20,
            "cap": args.cap,
            "one_block_mb": block_mb,
            "activations_mb": act_mb,
            "bound_mb": bound_mb,
            "rows": rows,
            "logits_equal": same,
            "reload_equal": reload_same,
        },
    )


if __name__ == "__main__":
    main()
