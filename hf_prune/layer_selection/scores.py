"""Layer significance extraction and the ``*_scores.json`` file format.

A :class:`LayerScores` lists every prunable projection of a model (in module order, as
:func:`hf_prune.arch.iter_block_linears` yields them) with its parameter count, its pruning ratio and its
significance ``1 - pruning_ratio``. It is the input of the MV-BCS layer-selection optimizer, where the
significance is the benefit and the parameter count the cost.

Metrics:

* ESD metrics (``"alpha_peak"`` and whatever else :func:`hf_prune.esd.compute_esd_metrics` supports):
  the pruning ratios are AlphaPruning's (:func:`hf_prune.allocation.alpha_pruning_ratios`) at the given
  ``sparsity`` / ``epsilon`` / ``mapping``.
* ``"weight_norm"``: significance is each weight's Frobenius norm, min-max normalized to ``[0, 1]``
  (all ones when every norm is equal); the pruning ratio is its complement.
* ``"uniform"``: every layer gets the pruning ratio ``sparsity`` (significance ``1 - sparsity``).

The raw metric values (alpha, norm) are kept in ``metadata["metric_values"]`` in layer order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SCHEMA_FILE",
    "BlockScore",
    "LayerScore",
    "LayerScores",
    "extract_layer_scores",
    "load_schema",
]

#: Name of the packaged JSON Schema of a scores file.
SCHEMA_FILE = "layer_scores.schema.json"

_BUILTIN_METRICS = ("weight_norm", "uniform")


def load_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) that every scores file satisfies.

    Returns:
        The schema as a dict.
    """
    text = resources.files("hf_prune.layer_selection").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@dataclass
class LayerScore:
    """One prunable projection.

    Args:
        index: Position in module order (0-based, over the whole model).
        name: Full dotted module name.
        num_parameters: Elements of the weight matrix (the prunable parameters; biases excluded).
        significance_score: ``1 - pruning_ratio``, in ``[0, 1]``.
        pruning_ratio: Fraction of the layer's weights to prune, in ``[0, 1]``.
        weight_shape: ``[out_features, in_features]`` (also for GPT-2's transposed ``Conv1D``).
    """

    index: int
    name: str
    num_parameters: int
    significance_score: float
    pruning_ratio: float
    weight_shape: list[int]


@dataclass
class BlockScore:
    """Aggregate of the projections of one transformer block.

    Args:
        index: Running block index in module order (over all stacks of the model).
        num_parameters: Sum of the block's layer parameter counts.
        mean_significance: Mean significance of the block's layers.
        mean_pruning_ratio: Mean pruning ratio of the block's layers.
        layer_indices: Indices (into ``layers``) of the block's projections.
    """

    index: int
    num_parameters: int
    mean_significance: float
    mean_pruning_ratio: float
    layer_indices: list[int]


def _stats(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "std": 0.0}
    return {"min": float(x.min()), "max": float(x.max()), "mean": float(x.mean()), "std": float(x.std())}


def _require(data: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}.")
    if key not in data:
        raise ValueError(f"{where} is missing the required key {key!r}.")
    return data[key]


@dataclass
class LayerScores:
    """Per-layer significance of a model: the content of a ``*_scores.json`` file.

    Args:
        model_name: Model id or path the scores were computed for.
        total_parameters: All parameters of the model (embeddings and heads included).
        num_prunable_layers: ``len(layers)``.
        num_blocks: ``len(blocks)``.
        layers: One :class:`LayerScore` per prunable projection, in module order.
        blocks: One :class:`BlockScore` per transformer block, in module order.
        metadata: Metric, sparsity, epsilon, mapping, raw metric values and summary statistics.
    """

    model_name: str
    total_parameters: int
    num_prunable_layers: int
    num_blocks: int
    layers: list[LayerScore]
    blocks: list[BlockScore]
    metadata: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ convenience views
    @property
    def significance(self) -> np.ndarray:
        """Significance scores in layer order."""
        return np.array([layer.significance_score for layer in self.layers], dtype=np.float64)

    @property
    def pruning_ratios(self) -> np.ndarray:
        """Pruning ratios in layer order."""
        return np.array([layer.pruning_ratio for layer in self.layers], dtype=np.float64)

    @property
    def num_parameters(self) -> np.ndarray:
        """Parameter counts in layer order."""
        return np.array([layer.num_parameters for layer in self.layers], dtype=np.int64)

    @property
    def layer_names(self) -> list[str]:
        """Module names in layer order."""
        return [layer.name for layer in self.layers]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        *,
        model_name: str,
        total_parameters: int,
        names: Sequence[str],
        num_parameters: Sequence[int],
        pruning_ratios: Sequence[float],
        weight_shapes: Sequence[Sequence[int]],
        block_ids: Sequence[int],
        metadata: dict[str, Any] | None = None,
    ) -> LayerScores:
        """Build scores from per-layer arrays; blocks and statistics are derived.

        Args:
            model_name: Model id or path.
            total_parameters: Parameters of the whole model.
            names: Module names, in module order.
            num_parameters: Weight elements per layer.
            pruning_ratios: Pruning ratio per layer in ``[0, 1]``; significance is ``1 - ratio``.
            weight_shapes: ``[out, in]`` per layer.
            block_ids: Running block index of each layer (non-decreasing).
            metadata: Extra metadata (metric, sparsity, ...); statistics are added.

        Returns:
            The scores.

        Raises:
            ValueError: If the arrays disagree in length or a ratio lies outside ``[0, 1]``.
        """
        n = len(names)
        for label, seq in (
            ("num_parameters", num_parameters),
            ("pruning_ratios", pruning_ratios),
            ("weight_shapes", weight_shapes),
            ("block_ids", block_ids),
        ):
            if len(seq) != n:
                raise ValueError(f"{label} has {len(seq)} entries but there are {n} layer names.")
        ratios = np.asarray(pruning_ratios, dtype=np.float64)
        bad = ~np.isfinite(ratios) | (ratios < 0) | (ratios > 1)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"pruning ratios must lie in [0, 1], but layer {k} ({names[k]}) has {ratios[k]}."
            )
        params = np.asarray(num_parameters, dtype=np.int64)
        sig = 1.0 - ratios
        layers = [
            LayerScore(
                index=i,
                name=str(names[i]),
                num_parameters=int(params[i]),
                significance_score=float(sig[i]),
                pruning_ratio=float(ratios[i]),
                weight_shape=[int(d) for d in weight_shapes[i]],
            )
            for i in range(n)
        ]
        blocks: list[BlockScore] = []
        order: list[int] = []
        members: dict[int, list[int]] = {}
        for i, b in enumerate(block_ids):
            if int(b) not in members:
                order.append(int(b))
                members[int(b)] = []
            members[int(b)].append(i)
        for bi, b in enumerate(order):
            idx = members[b]
            blocks.append(
                BlockScore(
                    index=bi,
                    num_parameters=int(params[idx].sum()),
                    mean_significance=float(sig[idx].mean()),
                    mean_pruning_ratio=float(ratios[idx].mean()),
                    layer_indices=idx,
                )
            )
        meta = dict(metadata or {})
        prunable = int(params.sum())
        meta["prunable_parameters"] = prunable
        # The parameter-weighted ratio is the sparsity the allocation actually reaches over these layers.
        meta["weighted_pruning_ratio"] = float((ratios * params).sum() / prunable) if prunable else 0.0
        meta["statistics"] = {
            "significance_score": _stats(sig),
            "pruning_ratio": _stats(ratios),
            "num_parameters": _stats(params.astype(np.float64)),
        }
        return cls(
            model_name=str(model_name),
            total_parameters=int(total_parameters),
            num_prunable_layers=n,
            num_blocks=len(blocks),
            layers=layers,
            blocks=blocks,
            metadata=meta,
        )

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready dict (the schema in ``layer_scores.schema.json``).

        Returns:
            A dict of plain Python values.
        """
        return {
            "model_name": self.model_name,
            "total_parameters": self.total_parameters,
            "num_prunable_layers": self.num_prunable_layers,
            "num_blocks": self.num_blocks,
            "layers": [
                {
                    "index": layer.index,
                    "name": layer.name,
                    "num_parameters": layer.num_parameters,
                    "significance_score": layer.significance_score,
                    "pruning_ratio": layer.pruning_ratio,
                    "weight_shape": list(layer.weight_shape),
                }
                for layer in self.layers
            ],
            "blocks": [
                {
                    "index": block.index,
                    "num_parameters": block.num_parameters,
                    "mean_significance": block.mean_significance,
                    "mean_pruning_ratio": block.mean_pruning_ratio,
                    "layer_indices": list(block.layer_indices),
                }
                for block in self.blocks
            ],
            "metadata": json.loads(json.dumps(self.metadata)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerScores:
        """Rebuild scores from :meth:`to_dict` output, checking structure and consistency.

        Args:
            data: The parsed JSON object.

        Returns:
            The scores.

        Raises:
            ValueError: If a required key is missing, a value has the wrong type, or the counts
                disagree with the lists (the message names the key / layer).
        """
        try:
            layers = [
                LayerScore(
                    index=int(_require(d, "index", f"layers[{i}]")),
                    name=str(_require(d, "name", f"layers[{i}]")),
                    num_parameters=int(_require(d, "num_parameters", f"layers[{i}]")),
                    significance_score=float(_require(d, "significance_score", f"layers[{i}]")),
                    pruning_ratio=float(_require(d, "pruning_ratio", f"layers[{i}]")),
                    weight_shape=[int(x) for x in _require(d, "weight_shape", f"layers[{i}]")],
                )
                for i, d in enumerate(_require(data, "layers", "scores"))
            ]
            blocks = [
                BlockScore(
                    index=int(_require(d, "index", f"blocks[{i}]")),
                    num_parameters=int(_require(d, "num_parameters", f"blocks[{i}]")),
                    mean_significance=float(_require(d, "mean_significance", f"blocks[{i}]")),
                    mean_pruning_ratio=float(_require(d, "mean_pruning_ratio", f"blocks[{i}]")),
                    layer_indices=[int(x) for x in _require(d, "layer_indices", f"blocks[{i}]")],
                )
                for i, d in enumerate(_require(data, "blocks", "scores"))
            ]
            scores = cls(
                model_name=str(_require(data, "model_name", "scores")),
                total_parameters=int(_require(data, "total_parameters", "scores")),
                num_prunable_layers=int(_require(data, "num_prunable_layers", "scores")),
                num_blocks=int(_require(data, "num_blocks", "scores")),
                layers=layers,
                blocks=blocks,
                metadata=dict(_require(data, "metadata", "scores")),
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"Invalid layer scores: {err}") from None
        if scores.num_prunable_layers != len(layers):
            raise ValueError(
                f"Invalid layer scores: num_prunable_layers={scores.num_prunable_layers} but "
                f"{len(layers)} layers are listed."
            )
        if scores.num_blocks != len(blocks):
            raise ValueError(
                f"Invalid layer scores: num_blocks={scores.num_blocks} but {len(blocks)} blocks are listed."
            )
        for i, layer in enumerate(layers):
            if layer.index != i:
                raise ValueError(f"Invalid layer scores: layers[{i}] has index {layer.index}.")
            if layer.num_parameters <= 0:
                raise ValueError(
                    f"Invalid layer scores: layers[{i}] has num_parameters={layer.num_parameters}."
                )
            for key in ("significance_score", "pruning_ratio"):
                value = getattr(layer, key)
                if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                    raise ValueError(
                        f"Invalid layer scores: layers[{i}] has {key}={value} (must be in [0, 1])."
                    )
        return scores

    def save(self, path: str | Path, indent: int | None = 2) -> Path:
        """Write the scores as JSON.

        Args:
            path: Output file (parent folders are created).
            indent: JSON indentation (``None`` for a compact single line).

        Returns:
            The written path.
        """
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=indent) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path) -> LayerScores:
        """Read a scores JSON file.

        Args:
            path: The file written by :meth:`save` (or any file following the schema).

        Returns:
            The scores.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If it is not valid JSON or not a valid scores file.
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"Layer scores file not found: {p}")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{p} is not valid JSON: {err}") from None
        return cls.from_dict(data)


# ---------------------------------------------------------------------------------------- extraction
def _model_name(model: Any) -> str:
    name = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    return str(name) if name else type(model).__name__


def _total_parameters(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _esd_ratios(
    model: Any,
    names: list[str],
    params: np.ndarray,
    layers_per_block: int | None,
    metric: str,
    sparsity: float,
    epsilon: float,
    mapping: str,
) -> tuple[np.ndarray, np.ndarray]:
    # Imported lazily: the ESD fits and the allocator live in other packages of hf_prune and pull in
    # heavier dependencies; the weight_norm / uniform metrics must work without them.
    try:
        from hf_prune.allocation import alpha_pruning_ratios
        from hf_prune.esd import compute_esd_metrics
    except ImportError as err:
        raise ValueError(
            f"metric={metric!r} needs hf_prune.esd.compute_esd_metrics and "
            f"hf_prune.allocation.alpha_pruning_ratios, which are not available ({err}); "
            f"use one of {_BUILTIN_METRICS} instead."
        ) from None
    metrics = compute_esd_metrics(model, metric=metric)
    missing = [n for n in names if n not in metrics]
    if missing:
        raise ValueError(
            f"compute_esd_metrics returned no {metric!r} value for {len(missing)} prunable layer(s), "
            f"e.g. {missing[0]!r}."
        )
    raw = np.array([float(metrics[n]) for n in names], dtype=np.float64)
    ratios = np.asarray(
        alpha_pruning_ratios(
            raw, params, sparsity, epsilon, mapping=mapping, layers_per_block=layers_per_block
        ),
        dtype=np.float64,
    )
    if ratios.shape != raw.shape:
        raise ValueError(f"alpha_pruning_ratios returned {ratios.shape[0]} ratios for {raw.shape[0]} layers.")
    return raw, np.clip(ratios, 0.0, 1.0)


def extract_layer_scores(
    model: Any,
    metric: str = "alpha_peak",
    sparsity: float = 0.7,
    epsilon: float = 0.3,
    mapping: str = "block_wise",
    model_name: str | None = None,
) -> LayerScores:
    """Compute per-layer significance (``1 - pruning_ratio``) of every prunable projection of a model.

    Args:
        model: A supported ``transformers`` ``PreTrainedModel`` (any head).
        metric: ``"alpha_peak"`` or another ESD metric known to ``hf_prune.esd`` (AlphaPruning ratios),
            ``"weight_norm"`` or ``"uniform"`` (see the module docstring).
        sparsity: Target global sparsity of the allocation, in ``[0, 1)``.
        epsilon: AlphaPruning's ratio spread (ratios lie in ``sparsity +- epsilon``), ``>= 0``.
        mapping: AlphaPruning's mapping (``"block_wise"`` or ``"layer_wise"``); recorded for all metrics.
        model_name: Name stored in the file (default: the model's ``name_or_path``).

    Returns:
        The :class:`LayerScores`.

    Raises:
        ValueError: For an out-of-range argument, an unsupported model, a model without prunable
            layers, or an ESD metric when the ESD / allocation modules are unavailable.
    """
    from hf_prune.arch import iter_block_linears, linear_in_out

    if not isinstance(metric, str) or not metric:
        raise ValueError(f"metric must be a non-empty string, got {metric!r}.")
    if not (isinstance(sparsity, (int, float)) and 0.0 <= float(sparsity) < 1.0):
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}.")
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon >= 0.0):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}.")
    if not isinstance(mapping, str) or not mapping:
        raise ValueError(f"mapping must be a non-empty string, got {mapping!r}.")

    refs = list(iter_block_linears(model))
    if not refs:
        raise ValueError(f"{type(model).__name__} has no prunable projections inside its blocks.")
    names = [r.name for r in refs]
    shapes = []
    params = []
    block_keys: dict[tuple[str, int], int] = {}
    block_ids = []
    for r in refs:
        fan_in, fan_out = linear_in_out(r.module)
        shapes.append([fan_out, fan_in])
        params.append(fan_in * fan_out)
        block_ids.append(block_keys.setdefault((r.stack, r.block_idx), len(block_keys)))
    params_arr = np.asarray(params, dtype=np.int64)
    per_block = np.bincount(np.asarray(block_ids))
    # AlphaPruning's block-wise mapping needs the number of projections per block; families with
    # differently-shaped stacks (LLaVA) have no single value and leave it to the allocator.
    layers_per_block = int(per_block[0]) if np.all(per_block == per_block[0]) else None

    sp = float(sparsity)
    if metric == "uniform":
        raw = np.ones(len(refs))
        ratios = np.full(len(refs), sp)
        ratio_source = "uniform"
    elif metric == "weight_norm":
        import torch

        with torch.no_grad():
            raw = np.array([float(torch.linalg.vector_norm(r.module.weight.float())) for r in refs])
        span = raw.max() - raw.min()
        significance = (raw - raw.min()) / span if span > 0 else np.ones_like(raw)
        ratios = 1.0 - significance
        ratio_source = "complement_of_significance"
    else:
        raw, ratios = _esd_ratios(
            model, names, params_arr, layers_per_block, metric, sp, float(epsilon), mapping
        )
        ratio_source = "alpha_pruning"

    from hf_prune.version import __version__

    return LayerScores.from_arrays(
        model_name=model_name or _model_name(model),
        total_parameters=_total_parameters(model),
        names=names,
        num_parameters=params_arr.tolist(),
        pruning_ratios=ratios.tolist(),
        weight_shapes=shapes,
        block_ids=block_ids,
        metadata={
            "metric": metric,
            "sparsity": sp,
            "epsilon": float(epsilon),
            "mapping": mapping,
            "ratio_source": ratio_source,
            "layers_per_block": layers_per_block,
            "metric_values": raw.tolist(),
            "hf_prune_version": __version__,
        },
    )
