"""Shared helpers for benchmarks: environment capture, table printing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    """Versions, CPU and thread settings, recorded with every result."""
    import numpy
    import torch
    import transformers

    import hf_prune

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "hf_prune": hf_prune.__version__,
        "cuda": torch.cuda.is_available(),
    }


def print_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Print rows as a Markdown table."""
    if not rows:
        print("(no rows)")
        return
    columns = columns or list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the environment attached."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "environment": environment(), **payload}, indent=2))
    print(f"wrote {path}")
    return path


class RssSampler:
    """Samples the process RSS every few ms (ru_maxrss is a high-water mark that imports already set)."""

    def __init__(self) -> None:
        import threading

        import psutil

        self._proc = psutil.Process()
        self.start = self._proc.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.005)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return (self.peak - self.start) / 2**20


class ByteTokenizer:
    """Bytes as token ids: enough to calibrate a random-weight model (scores do not matter here)."""

    def __call__(self, text: str, return_tensors: str | None = None, add_special_tokens: bool = False) -> Any:
        import torch

        return {"input_ids": torch.tensor([[3 + b for b in text.encode()]])}


def byte_calibration(tag: str) -> Any:
    """A small calibration set of repeated text, for :class:`ByteTokenizer` on random-weight models."""
    from hf_prune import CalibrationConfig

    return CalibrationConfig(
        dataset=[f"{tag} calibration text {i} " * 20 for i in range(8)], nsamples=4, seqlen=64
    )


def add_llama_args(parser: Any) -> None:
    """The random Llama shape and timing options shared by the speed benchmarks (125M by default)."""
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


def random_llama(args: Any) -> Any:
    """Set the thread count and seed, and build the random-init Llama that ``add_llama_args`` describes."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

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
    return AutoModelForCausalLM.from_config(config).eval()
