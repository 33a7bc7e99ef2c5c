"""Export a pruned (or any) ``transformers`` model to ONNX and run it with ONNX Runtime.

Route taken: **transformers' own exporter** (``transformers.exporters.OnnxExporter``, which runs
``torch.export`` and then ``torch.onnx.export`` with onnxscript, plus transformers' own graph fixes). The
alternative, ``optimum-onnx``, does not install beside our pins: every release (0.0.1 to 0.1.0) requires
``transformers<4.58`` while hf_prune needs ``transformers>=5.23`` (checked with ``pip install --dry-run
optimum-onnx transformers==5.23.*``: ``ResolutionImpossible``). The native exporter traces the model that
is in memory, module by module, so per-layer shapes that no config can express (a different MLP width
or head count in every block, removed blocks) are exported exactly as they run in PyTorch; a pruned
folder with ``per_layer_config`` does not even load through ``from_pretrained``, so exporting from memory
is the only route that covers non-uniform width.

What is written (``output_dir``, atomically: built in a temporary sibling folder, then renamed):

* ``model.onnx`` + ``model.onnx.data`` (weights as external data, so models over 2 GB export too). Inputs
  ``input_ids`` and ``attention_mask`` (plus whatever ``sample_inputs`` names), batch and sequence axes
  dynamic; output ``logits``. No KV cache: the graph is a full forward pass, the prefill.
* ``export.json`` — transformers' export manifest (package versions, traced input shapes); with it the
  folder also loads through ``transformers.exporters.ExportedModel.from_pretrained``.
* ``config.json`` — the model's config with the pruned structure (uniform changes as global values,
  per-layer ones as ``per_layer_config``, exactly as ``PrunedModel.save_pretrained`` writes it).
* the tokenizer's files when one is given (or the ``PrunedModel`` remembers one).

Masks are never changed in the caller's model: a model carrying reversible (unstructured / N:M) masks is
exported from a private copy whose masks are baked into plain weights (the zeros are then ordinary
values in the ONNX initializers; ONNX Runtime's CPU kernels are dense, so unstructured sparsity brings
no speedup there, while width and depth pruning do). That copy costs one extra model's memory for the
duration of the export. Structured (width / depth) changes are already physical and need no copy.

This module reads models and plain data only: it recognises a ``PrunedModel`` by duck typing (a
``base_model`` that is a ``PreTrainedModel`` and a ``report``) and does not import
:mod:`hf_prune.integration.pruned_model`. ``onnx``, ``onnxscript`` and ``onnxruntime`` are imported
lazily; without them every function raises an ``ImportError`` naming the ``onnx`` extra.

Latency (:func:`measure_onnx_latency`, :func:`compare_onnx_latency`) follows the protocol of
:mod:`hf_prune.evaluation.speed`: seeded ``batch_size x seqlen`` ids, ``warmup`` untimed runs, the
median of ``repeats`` timed runs (``time.perf_counter``), two models interleaved when compared; ONNX
Runtime runs with ``intra_op_num_threads`` = ``threads`` (default: ``torch.get_num_threads()``, the
thread count the PyTorch measurement uses) and full graph optimisations.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_prune.evaluation.speed import time_interleaved, time_runs

#: Files of an export folder that hold the graph and its weights.
ONNX_FILE = "model.onnx"
_EXTRA_HINT = "install the `onnx` extra: pip install 'hf_prune[onnx]' (onnx, onnxscript, onnxruntime)"


def _require_onnx() -> Any:
    """Import the ONNX stack lazily; raise an ImportError that names the extra when it is missing."""
    try:
        import onnx  # noqa: F401  (transformers' exporter needs it; imported here to fail early and clearly)
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"ONNX export and ONNX Runtime need packages that are not installed ({exc}); {_EXTRA_HINT}."
        ) from exc
    return onnxruntime


# ----------------------------------------------------------------------------------- model handling
def _unwrap(model: Any) -> tuple[PreTrainedModel, Any]:
    """Return ``(plain model, tokenizer or None)`` for a ``PreTrainedModel`` or a ``PrunedModel``."""
    if isinstance(model, PreTrainedModel):
        return model, None
    base = getattr(model, "base_model", None)
    if isinstance(model, nn.Module) and isinstance(base, PreTrainedModel) and hasattr(model, "report"):
        return base, getattr(model, "tokenizer", None)
    raise TypeError(
        "model must be a transformers PreTrainedModel or an hf_prune PrunedModel, got "
        f"{type(model).__name__}. "
        "Pass the model object itself (e.g. the result of hf_prune.prune(...))."
    )


def _is_parametrized(module: nn.Module) -> bool:
    return bool(getattr(module, "parametrizations", None))


def _unparametrized_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A deep copy of ``model`` with every parametrized weight (hf_prune's masks) baked into a plain one.

    ``torch.nn.utils.parametrize.remove_parametrizations`` cannot be used on a copy: ``deepcopy`` keeps
    the dynamically created ``Parametrized<Class>`` class shared between the original and the copy, and
    removal deletes the weight property *from that class*, which breaks the caller's (still masked)
    model. So each copied module is returned to its original class by hand and given its masked weight
    as an ordinary parameter; the original model is not touched.
    """
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if not _is_parametrized(module):
            continue
        with torch.no_grad():
            values = {name: getattr(module, name).detach().clone() for name in list(module.parametrizations)}
        del module._modules["parametrizations"]
        # parametrize injected a subclass whose single base is the module's original class.
        module.__class__ = module.__class__.__bases__[0]
        for name, value in values.items():
            module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    return clone


def _config_dict(model: PreTrainedModel) -> dict[str, Any]:
    """``config.json`` content with the pruned structure, computed without touching ``model.config``."""
    from hf_prune.arch import get_arch
    from hf_prune.surgery.structure import config_updates

    config = copy.deepcopy(model.config)
    try:
        get_arch(model)
    except (ValueError, TypeError):  # an architecture hf_prune does not prune: its config is as it is
        return config.to_dict()
    plan = config_updates(model)
    for path, upd in plan.items():
        target = getattr(config, path) if path else config
        for key, value in upd["global"].items():
            setattr(target, key, value)
    data = config.to_dict()
    for path, upd in plan.items():
        if upd["per_layer"]:
            target_dict = data[path] if path else data
            target_dict["per_layer_config"] = {str(k): v for k, v in sorted(upd["per_layer"].items())}
    return data


def _text_vocab(config: Any) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None)
    return int(vocab) if vocab else None


def _default_sample_inputs(model: PreTrainedModel) -> dict[str, Any]:
    vocab = _text_vocab(model.config)
    if vocab is None:
        raise ValueError(
            f"cannot build sample inputs for {type(model).__name__}: its config has no vocab_size. Pass "
            "sample_inputs={'name': tensor, ...} with the forward inputs the graph should take."
        )
    # Batch 2 x 8 tokens: sizes above 1 so torch.export does not specialise the dynamic axes to 1.
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 8), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _check_sample_inputs(sample_inputs: Any) -> dict[str, torch.Tensor]:
    if not isinstance(sample_inputs, Mapping) or not sample_inputs:
        raise TypeError(
            "sample_inputs must be a non-empty dict of forward inputs (name -> tensor), got "
            f"{sample_inputs!r}."
        )
    bad = {k: type(v).__name__ for k, v in sample_inputs.items() if not isinstance(v, torch.Tensor)}
    if bad:
        raise TypeError(
            f"sample_inputs values must be tensors; got {bad}. Convert them with torch.tensor(...)."
        )
    return dict(sample_inputs)


def _forward_kwargs(model: PreTrainedModel, inputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(inputs)
    # A decoder's forward would otherwise build (and the graph would return) a KV cache.
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs["use_cache"] = False
    return kwargs


# ------------------------------------------------------------------------------------------ export
def export_onnx(
    model: Any,
    output_dir: str | os.PathLike[str],
    *,
    opset: int | None = None,
    sample_inputs: Mapping[str, torch.Tensor] | None = None,
    optimize: bool = True,
    tokenizer: Any = None,
    overwrite: bool = False,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> Path:
    """Export a pruned (or dense) model to an ONNX folder that ONNX Runtime runs.

    The model is exported as it is in memory, so every kind of pruning result exports: unstructured /
    N:M (masks baked into a private copy; the caller's masks stay live and reversible), uniform and
    non-uniform width, and depth. See the module docstring for the files written and for why
    transformers' native exporter is used rather than optimum-onnx.

    Args:
        model: A ``transformers`` ``PreTrainedModel`` or an hf_prune ``PrunedModel``.
        output_dir: Folder to write (created; its parent must exist or is created).
        opset: ONNX opset version, or ``None`` for the newest that the installed onnxscript supports.
        sample_inputs: Forward inputs to trace with (name -> tensor). Default: seeded ``input_ids`` and an
            all-ones ``attention_mask`` of shape ``[2, 8]``. Batch and sequence axes are dynamic either way.
        optimize: Run onnxscript's graph optimiser (constant folding, dead-code removal) on the export.
        tokenizer: Tokenizer to save beside the graph (default: the ``PrunedModel``'s, if any).
        overwrite: Replace ``output_dir`` if it already exists and is not empty.
        check: Run the exported graph once in ONNX Runtime on ``sample_inputs`` and compare its logits
            with PyTorch's: it fails when ``max|ORT - PyTorch| > atol + rtol * max|PyTorch|``.
        atol: Absolute part of that tolerance.
        rtol: Part of the tolerance relative to the largest logit. float32 itself is that inexact: on a
            124M-parameter Llama, PyTorch's float32 logits are ~2e-4 from float64's (largest logit ~3),
            and ONNX Runtime's are as close to float64 as PyTorch's; a wrong export is off by O(1).

    Returns:
        The folder written.

    Raises:
        ImportError: If onnx / onnxscript / onnxruntime are missing (install ``hf_prune[onnx]``).
        TypeError: If ``model`` or ``sample_inputs`` has the wrong type.
        ValueError: If ``opset`` / ``atol`` / ``rtol`` is out of range, ``output_dir`` exists and
            ``overwrite`` is false, or the model has weights on the meta device (offloaded).
        RuntimeError: If ``check`` finds ONNX Runtime's logits differ from PyTorch's beyond the tolerance.
    """
    _require_onnx()
    plain, remembered_tokenizer = _unwrap(model)
    tokenizer = tokenizer if tokenizer is not None else remembered_tokenizer
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 18):
        raise ValueError(
            f"opset={opset!r} is not supported; pass an int >= 18 (the torch.onnx dynamo exporter's minimum) "
            "or None for the newest."
        )
    for name, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name}={value!r} must be a number >= 0 (defaults: atol=1e-4, rtol=1e-3).")
    if any(p.is_meta for p in plain.parameters()):
        raise ValueError(
            "the model has weights on the meta device (offloaded with accelerate); load it fully onto one "
            "device (device_map=None) before exporting to ONNX."
        )
    target = Path(output_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise ValueError(
            f"output_dir {str(target)!r} already exists and is not empty; pass overwrite=True to replace it "
            "or choose a new folder."
        )
    inputs = (
        _check_sample_inputs(sample_inputs) if sample_inputs is not None else _default_sample_inputs(plain)
    )

    from transformers.exporters import OnnxConfig, OnnxExporter

    masked = any(_is_parametrized(m) for m in plain.modules())
    export_model = _unparametrized_copy(plain) if masked else plain
    device = next(export_model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    was_training = export_model.training
    export_model.eval()
    try:
        exported = OnnxExporter().export(
            export_model,
            _forward_kwargs(export_model, inputs),
            OnnxConfig(dynamic=True, opset_version=opset, optimize=optimize),
        )
        config_data = _config_dict(export_model)
        if check:
            with torch.no_grad():
                logits = getattr(export_model(**_forward_kwargs(export_model, inputs)), "logits", None)
            if logits is None:
                raise ValueError(
                    f"{type(export_model).__name__} returns no `logits` to check the export against; pass "
                    "check=False (or export a model with a head, e.g. *ForCausalLM)."
                )
            reference = logits.float().cpu()
    finally:
        if was_training:
            export_model.train()
    del export_model

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        # Our config.json replaces the exporter's: the exporter would write the in-memory config, which
        # cannot hold per-layer widths / head counts.
        exported.config = None
        exported.save_pretrained(staging)
        (staging / "config.json").write_text(json.dumps(config_data, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(staging)
        if check:
            got = onnx_logits(staging, {k: v.cpu() for k, v in inputs.items()})
            diff = float((got - reference).abs().max())
            tolerance = atol + rtol * float(reference.abs().max())
            if not diff <= tolerance:
                raise RuntimeError(
                    f"ONNX Runtime's logits differ from PyTorch's by up to {diff:.3g} (tolerance "
                    f"{tolerance:.3g} = atol {atol:g} + rtol {rtol:g} x largest logit); the export is not "
                    "faithful. Try optimize=False, or report the model type."
                )
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _replace_dir(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``; an existing ``target`` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------ ONNX Runtime
def _onnx_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / ONNX_FILE
    if not p.is_file():
        raise ValueError(
            f"no ONNX model at {str(path)!r}; pass a folder written by export_onnx (holding {ONNX_FILE}) "
            "or the path of a .onnx file."
        )
    return p


def _check_threads(threads: int | None) -> int:
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be an int >= 1 (or None for torch.get_num_threads()).")
    return threads


def onnx_session(
    path: str | os.PathLike[str], *, threads: int | None = None, providers: list[str] | None = None
) -> Any:
    """Open an ONNX Runtime ``InferenceSession`` for an exported folder or ``.onnx`` file.

    Args:
        path: A folder written by :func:`export_onnx`, or a ``.onnx`` file.
        threads: Intra-op threads (default: ``torch.get_num_threads()``, as the PyTorch measurement uses).
        providers: Execution providers (default: ``["CPUExecutionProvider"]``).

    Returns:
        The ``onnxruntime.InferenceSession``.
    """
    ort = _require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = _check_threads(threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        str(_onnx_path(path)), sess_options=options, providers=providers or ["CPUExecutionProvider"]
    )


def _feeds(session: Any, inputs: Any) -> dict[str, Any]:
    if isinstance(inputs, torch.Tensor):
        inputs = {"input_ids": inputs}
    if not isinstance(inputs, Mapping):
        raise TypeError(
            "inputs must be a LongTensor of input_ids or a dict of named tensors, got "
            f"{type(inputs).__name__}."
        )
    wanted = [i.name for i in session.get_inputs()]
    feeds: dict[str, Any] = {}
    for name in wanted:
        value = inputs.get(name)
        if value is None and name == "attention_mask" and "input_ids" in inputs:
            value = torch.ones_like(torch.as_tensor(inputs["input_ids"]))
        if value is None:
            raise ValueError(f"the ONNX graph needs input {name!r} (it takes {wanted}); add it to inputs.")
        feeds[name] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
    return feeds


def onnx_logits(path_or_session: Any, inputs: Any) -> torch.Tensor:
    """Run an exported model in ONNX Runtime and return its logits as a float32 CPU tensor.

    Args:
        path_or_session: A folder written by :func:`export_onnx`, a ``.onnx`` file, or an open session
            (:func:`onnx_session`).
        inputs: ``input_ids`` ([batch, seq] LongTensor) or a dict of named tensors; a missing
            ``attention_mask`` is filled with ones.

    Returns:
        The ``logits`` output.
    """
    session = path_or_session if hasattr(path_or_session, "run") else onnx_session(path_or_session)
    outputs = [o.name for o in session.get_outputs()]
    name = "logits" if "logits" in outputs else outputs[0]
    (logits,) = session.run([name], _feeds(session, inputs))
    return torch.from_numpy(logits).float()


def _random_ids(path: str | os.PathLike[str], batch_size: int, seqlen: int, seed: int) -> torch.Tensor:
    from hf_prune.evaluation.perplexity import _check_int

    _check_int("batch_size", batch_size, 1)
    _check_int("seqlen", seqlen, 1)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"no config.json beside {str(path)!r} to read vocab_size from; pass input_ids instead."
        )
    data = json.loads(config_file.read_text())
    vocab = data.get("vocab_size") or data.get("text_config", {}).get("vocab_size")
    if not vocab:
        raise ValueError(f"{config_file} has no vocab_size; pass input_ids instead.")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, int(vocab), (batch_size, seqlen), generator=generator)


def _ort_timer(session: Any, feeds: dict[str, Any]) -> Any:
    def run() -> float:
        start = time.perf_counter()
        session.run(None, feeds)
        return (time.perf_counter() - start) * 1000.0

    return run


def _environment(ids: torch.Tensor, repeats: int, warmup: int, threads: int) -> dict[str, Any]:
    import onnxruntime

    return {
        "batch_size": int(ids.shape[0]),
        "seqlen": int(ids.shape[1]),
        "repeats": repeats,
        "warmup": warmup,
        "device": "cpu",
        "runtime": "onnxruntime",
        "onnxruntime": onnxruntime.__version__,
        "threads": threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "protocol": "median of full forward passes (ONNX Runtime, no KV cache), interleaved when compared",
    }


def _sessions(paths: list[Any], threads: int) -> list[Any]:
    return [p if hasattr(p, "run") else onnx_session(p, threads=threads) for p in paths]


def _check_counts(repeats: int, warmup: int) -> None:
    from hf_prune.evaluation.perplexity import _check_int

    _check_int("repeats", repeats, 1)
    _check_int("warmup", warmup, 0)


def measure_onnx_latency(
    path: str | os.PathLike[str],
    *,
    batch_size: int = 1,
    seqlen: int = 128,
    repeats: int = 10,
    warmup: int = 2,
    input_ids: torch.Tensor | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure an exported model's forward latency in ONNX Runtime (protocol of ``evaluation.speed``).

    Args:
        path: A folder written by :func:`export_onnx` (its ``config.json`` gives the vocabulary size).
        batch_size: Sequences per forward pass (ignored when ``input_ids`` is given).
        seqlen: Tokens per sequence (ignored when ``input_ids`` is given).
        repeats: Timed passes; the median is reported.
        warmup: Untimed passes first.
        input_ids: Use these ids instead of seeded random ones.
        seed: Seed of the random ids.
        threads: ONNX Runtime intra-op threads (default ``torch.get_num_threads()``).

    Returns:
        ``{"median_ms", "min_ms", "max_ms", "tokens_per_s", ...environment}``.
    """
    _check_counts(repeats, warmup)
    n_threads = _check_threads(threads)
    ids = input_ids if input_ids is not None else _random_ids(path, batch_size, seqlen, seed)
    (session,) = _sessions([path], n_threads)
    run = _ort_timer(session, _feeds(session, {"input_ids": ids}))
    stats = time_runs(run, repeats=repeats, warmup=warmup, numel=ids.numel())
    return {**stats, **_environment(ids, repeats, warmup, n_threads)}


def compare_onnx_latency(
    baseline: str | os.PathLike[str],
    candidate: str | os.PathLike[str],
    *,
    batch_size: int = 1,
    seqlen: int = 128,
    repeats: int = 10,
    warmup: int = 2,
    input_ids: torch.Tensor | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time two exported models in ONNX Runtime on the same inputs, interleaved, and report the speedup.

    Args:
        baseline: Folder of the reference export (usually the dense model).
        candidate: Folder of the export to compare (usually the pruned model).
        batch_size: Sequences per forward pass (ignored when ``input_ids`` is given).
        seqlen: Tokens per sequence (ignored when ``input_ids`` is given).
        repeats: Timed passes per model; medians are compared.
        warmup: Untimed passes per model first.
        input_ids: Use these ids instead of seeded random ones.
        seed: Seed of the random ids.
        threads: ONNX Runtime intra-op threads (default ``torch.get_num_threads()``).

    Returns:
        ``{"baseline_ms", "pruned_ms", "speedup" (baseline / pruned), "baseline_tokens_per_s",
        "pruned_tokens_per_s", ...environment}``.
    """
    _check_counts(repeats, warmup)
    n_threads = _check_threads(threads)
    ids = input_ids if input_ids is not None else _random_ids(baseline, batch_size, seqlen, seed)
    sa, sb = _sessions([baseline, candidate], n_threads)
    run_a = _ort_timer(sa, _feeds(sa, {"input_ids": ids}))
    run_b = _ort_timer(sb, _feeds(sb, {"input_ids": ids}))
    stats = time_interleaved(
        run_a, run_b, repeats=repeats, warmup=warmup, numel_a=ids.numel(), numel_b=ids.numel()
    )
    return {**stats, **_environment(ids, repeats, warmup, n_threads)}
