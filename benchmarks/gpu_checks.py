"""GPU checks, for a session with a lent CUDA device (none of this runs in the CPU test suite).

One prepared script, each section independent (a failure is recorded and the next section runs):

1. **2:4 matmul speedup**: ``F.linear`` of float16 activations ``[tokens, in]`` with a 2:4-pruned weight,
   dense kernels vs ``torch.sparse`` semi-structured (:func:`hf_prune.postprocess.semi_structured.
   to_semi_structured`'s backend), for Llama-7B-sized projections; CUDA-event timing, median.
2. **2:4 forward speedup**: a Llama (hidden 2048, 8 layers, MLP 5632, float16) pruned with
   ``MagnitudeConfig(pattern="2:4")`` and finalized, timed dense-kernel vs converted with
   :func:`hf_prune.evaluation.speed.compare_latency` (interleaved, median), logits compared.
3. **vLLM** (only if ``vllm`` imports): the trained zoo Llama ``llama-gqa-small`` pruned in width
   (``round_to=256``, the layout's granularity) and depth, saved with ``format="nemotron-nas"``; vLLM
   loads the folder and its greedy tokens are compared with ``transformers``' ``generate``. Then vLLM
   prefill latency (1 x ``--seqlen`` prompt, one new token) of the 124M ``serving_formats`` Llama, dense
   (plain Llama folder) vs depth 25% / uniform 50% MLP / non-uniform 50% MLP (nemotron-nas folders) --
   the vLLM column of ``benchmarks/serving_formats.py``.

The GPU tests are separate: ``pytest -m gpu tests/test_semi_structured.py``.

Run: ``python -m benchmarks.gpu_checks [--skip-vllm] [--seqlen 256]`` (about 5-10 minutes on one GPU).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import print_table, write_results


def _cuda_ms(fn: Callable[[], Any], repeats: int = 50, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _two_four(weight: torch.Tensor) -> torch.Tensor:
    groups = weight.reshape(weight.shape[0], -1, 4)
    keep = groups.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return (groups * mask).reshape(weight.shape)


def check_matmul(tokens: int) -> list[dict[str, Any]]:
    from hf_prune.postprocess.semi_structured import _resolve_backend

    backend = _resolve_backend("auto")
    cls = (
        torch.sparse.SparseSemiStructuredTensorCUSPARSELT
        if backend == "cusparselt"
        else torch.sparse.SparseSemiStructuredTensorCUTLASS
    )
    rows = []
    for out_f, in_f in ((4096, 4096), (11008, 4096), (4096, 11008)):
        weight = _two_four(torch.randn(out_f, in_f, device="cuda", dtype=torch.float16))
        sparse = cls.from_dense(weight)
        x = torch.randn(tokens, in_f, device="cuda", dtype=torch.float16)
        err = float((F.linear(x, sparse) - F.linear(x, weight)).abs().max())
        dense_ms = _cuda_ms(lambda x=x, w=weight: F.linear(x, w))
        sparse_ms = _cuda_ms(lambda x=x, w=sparse: F.linear(x, w))
        rows.append(
            {
                "weight": f"{out_f}x{in_f}",
                "tokens": tokens,
                "backend": backend,
                "dense_ms": dense_ms,
                "sparse_ms": sparse_ms,
                "speedup": dense_ms / sparse_ms,
                "max_abs_err": err,
            }
        )
    return rows


def _byte_tokenizer() -> Any:
    class _Bytes:
        def __call__(
            self, text: str, return_tensors: str | None = None, add_special_tokens: bool = False
        ) -> Any:
            return {"input_ids": torch.tensor([[3 + b for b in text.encode()]])}

    return _Bytes()


def _calibration() -> Any:
    from hf_prune import CalibrationConfig

    return CalibrationConfig(
        dataset=[f"gpu check calibration text {i} " * 20 for i in range(8)], nsamples=4, seqlen=64
    )


def check_forward(batch_size: int, seqlen: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from hf_prune import MagnitudeConfig, prune
    from hf_prune.evaluation.speed import compare_latency
    from hf_prune.postprocess.semi_structured import to_semi_structured

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    pruned = prune(
        model, MagnitudeConfig(pattern="2:4"), calibration=_calibration(), tokenizer=_byte_tokenizer()
    )
    plain = pruned.finalize().half().cuda().eval()
    dense_kernels = copy.deepcopy(plain)
    converted = to_semi_structured(plain, strict=True)
    ids = torch.randint(0, 32000, (batch_size, seqlen), device="cuda")
    with torch.no_grad():
        diff = float(
            (plain(input_ids=ids).logits.float() - dense_kernels(input_ids=ids).logits.float()).abs().max()
        )
    speed = compare_latency(dense_kernels, plain, input_ids=ids, repeats=20, warmup=5, flops=False)
    return {
        "converted_linears": len(converted["converted"]),
        "skipped": converted["skipped"],
        "backend": converted["backend"],
        "dense_kernel_ms": speed["baseline_ms"],
        "semi_structured_ms": speed["pruned_ms"],
        "speedup": speed["speedup"],
        "logits_max_abs_diff": diff,
        "batch_size": batch_size,
        "seqlen": seqlen,
    }


# ------------------------------------------------------------------------------------------- vLLM
_DECILM_CONFIG = '''"""A minimal config class for the nemotron-nas (DeciLM) layout (hf_prune's gpu_checks).

vLLM's nemotron_nas model reads ``config.block_configs[i].attention.no_op`` etc. as attributes, so the
per-block dicts are wrapped in a dict subclass with attribute access (still plain JSON when saved).
"""

from transformers import LlamaConfig


class _Attr(dict):
    def __getattr__(self, name):
        try:
            value = self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc
        return _Attr(value) if isinstance(value, dict) and not isinstance(value, _Attr) else value


class DeciLMConfig(LlamaConfig):
    model_type = "nemotron-nas"

    def __init__(self, block_configs=None, **kwargs):
        super().__init__(**kwargs)
        self.block_configs = [_Attr(b) for b in (block_configs or [])]
'''


def _add_remote_config(folder: Path) -> None:
    """Give a nemotron-nas folder the config code that loaders building a transformers config need."""
    (folder / "configuration_decilm.py").write_text(_DECILM_CONFIG)
    data = json.loads((folder / "config.json").read_text())
    data["auto_map"] = {"AutoConfig": "configuration_decilm.DeciLMConfig"}
    (folder / "config.json").write_text(json.dumps(data, indent=2))


def _vllm_llm(folder: Path, dtype: str, max_len: int) -> Any:
    from vllm import LLM

    # Prompts are given as token ids, so no tokenizer is needed (the latency folders have none).
    kwargs = {
        "dtype": dtype,
        "enforce_eager": True,
        "gpu_memory_utilization": 0.3,
        "max_model_len": max_len,
        "skip_tokenizer_init": True,
    }
    try:
        return LLM(model=str(folder), **kwargs)
    except Exception as first:  # no built-in config for nemotron-nas in this vLLM: add the config code
        is_nas = "nemotron" in (folder / "config.json").read_text()
        if is_nas and not (folder / "configuration_decilm.py").exists():
            _add_remote_config(folder)
            try:
                return LLM(model=str(folder), trust_remote_code=True, **kwargs)
            except Exception as second:
                raise second from first
        raise


def _free() -> None:
    """Collect a deleted ``LLM`` (the caller drops its last reference first) and release its memory."""
    gc.collect()
    torch.cuda.empty_cache()


def check_vllm_greedy(work: Path, new_tokens: int = 16) -> dict[str, Any]:
    from vllm import SamplingParams

    from hf_prune import AngularDepthConfig, StructuredMagnitudeConfig, prune
    from hf_prune.zoo import load_zoo_model

    model, tokenizer = load_zoo_model("llama-gqa-small")
    calib = _calibration()
    folder = None
    # Global allocation may leave a block whole (688 neurons, not a multiple of 256, which the layout
    # cannot express): then fall back to the uniform allocation.
    for allocation in ("global", "uniform"):
        pruned = prune(
            copy.deepcopy(model),
            StructuredMagnitudeConfig(sparsity=0.4, scope="mlp", allocation=allocation, round_to=256),
            calibration=calib,
            tokenizer=tokenizer,
        )
        pruned = prune(pruned, AngularDepthConfig(num_layers=1), calibration=calib, tokenizer=tokenizer)
        try:
            folder = pruned.save_pretrained(work / "zoo_nas", format="nemotron-nas", tokenizer=tokenizer)
            break
        except ValueError as exc:
            print(f"allocation={allocation!r} not representable as nemotron-nas ({exc}); trying uniform")
    if folder is None:
        raise RuntimeError("no pruned zoo model could be written as nemotron-nas")
    prompt = "The pruned model keeps most of what the dense model"
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    results: dict[str, Any] = {"folder_config": json.loads((Path(folder) / "config.json").read_text())}
    for dtype, torch_dtype in (("float32", torch.float32), ("float16", torch.float16)):
        hf_model = copy.deepcopy(pruned.base_model).to("cuda", torch_dtype).eval()
        with torch.no_grad():
            hf = hf_model.generate(ids.cuda(), max_new_tokens=new_tokens, do_sample=False)[0, ids.shape[1] :]
        del hf_model
        try:
            llm = _vllm_llm(Path(folder), dtype, 256)
        except Exception as exc:
            results[dtype] = {"error": repr(exc)}
            continue
        out = llm.generate(
            [{"prompt_token_ids": ids[0].tolist()}],
            SamplingParams(temperature=0.0, max_tokens=new_tokens, detokenize=False),
        )
        vllm_tokens = list(out[0].outputs[0].token_ids)
        del llm
        _free()
        hf_tokens = hf.tolist()
        same = 0
        for a, b in zip(hf_tokens, vllm_tokens, strict=False):
            if a != b:
                break
            same += 1
        results[dtype] = {
            "hf_tokens": hf_tokens,
            "vllm_tokens": vllm_tokens,
            "identical": hf_tokens == vllm_tokens,
            "matching_prefix": same,
        }
        if hf_tokens == vllm_tokens:
            break
    return results


def check_vllm_latency(work: Path, seqlen: int, repeats: int) -> list[dict[str, Any]]:
    from transformers import AutoModelForCausalLM, LlamaConfig
    from vllm import SamplingParams

    from benchmarks.serving_formats import _heterogeneous_mlp
    from hf_prune import AngularDepthConfig, StructuredMagnitudeConfig, prune

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    dense = AutoModelForCausalLM.from_config(config).eval()
    _heterogeneous_mlp(dense)
    folders = {"dense": work / "dense"}
    dense.save_pretrained(folders["dense"])
    cases = {
        "depth 25%": AngularDepthConfig(num_layers=3),
        "uniform width 50% MLP": StructuredMagnitudeConfig(sparsity=0.5, scope="mlp", round_to=256),
        "non-uniform width 50% MLP": StructuredMagnitudeConfig(
            sparsity=0.5, scope="mlp", allocation="global", round_to=256
        ),
    }
    for i, (name, cfg) in enumerate(cases.items()):
        pruned = prune(copy.deepcopy(dense), cfg, calibration=_calibration(), tokenizer=_byte_tokenizer())
        folders[name] = Path(pruned.save_pretrained(work / f"case{i}", format="nemotron-nas"))
    prompt = [
        {
            "prompt_token_ids": torch.randint(
                0, 32000, (seqlen,), generator=torch.Generator().manual_seed(0)
            ).tolist()
        }
    ]
    params = SamplingParams(temperature=0.0, max_tokens=1, detokenize=False)
    rows = []
    base_ms = None
    for name, folder in folders.items():
        try:
            llm = _vllm_llm(folder, "float16", max(512, seqlen + 8))
            ms = _cpu_timed_median(lambda llm=llm: llm.generate(prompt, params, use_tqdm=False), repeats)
            del llm
            _free()
        except Exception as exc:
            rows.append({"model": name, "vllm_prefill_ms": f"error: {exc!r}"[:200]})
            continue
        base_ms = ms if name == "dense" else base_ms
        rows.append(
            {"model": name, "vllm_prefill_ms": ms, "speedup": (base_ms / ms) if base_ms else float("nan")}
        )
    return rows


def _cpu_timed_median(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=2048, help="activation rows of the matmul check")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-vllm", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"args": vars(args)}
    from hf_prune.postprocess.semi_structured import semi_structured_available

    ok, reason = semi_structured_available()
    results["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    results["semi_structured_available"] = ok
    if not torch.cuda.is_available():
        print(f"no CUDA device: nothing to check ({reason})")
        write_results("gpu_checks", results)
        return
    sections: list[tuple[str, Callable[[], Any]]] = []
    if ok:
        sections += [
            ("matmul_2to4", lambda: check_matmul(args.tokens)),
            ("forward_2to4", lambda: check_forward(args.batch_size, args.seqlen)),
        ]
    else:
        results["semi_structured_reason"] = reason
    work = Path(tempfile.mkdtemp(prefix="gpu_checks-"))
    if args.skip_vllm:
        results["vllm"] = "skipped (--skip-vllm)"
    else:
        try:
            import vllm

            results["vllm_version"] = vllm.__version__
            sections += [
                ("vllm_greedy", lambda: check_vllm_greedy(work)),
                ("vllm_latency", lambda: check_vllm_latency(work, args.seqlen, args.repeats)),
            ]
        except ImportError as exc:
            results["vllm"] = f"skipped (vllm not importable: {exc})"
    for name, run in sections:
        print(f"== {name}", flush=True)
        try:
            results[name] = run()
        except Exception as exc:
            results[name] = {"error": repr(exc), "traceback": traceback.format_exc()[-3000:]}
        value = results[name]
        if isinstance(value, list):
            print_table(value)
        else:
            print(json.dumps(value, indent=2, default=str)[:4000])
    write_results("gpu_checks", results)


if __name__ == "__main__":
    main()
