"""``PruningReport``: what was pruned, by how much, and what it cost, per layer and in total."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LayerReport:
    """One pruned unit (a projection, a block, an MLP).

    Args:
        name: Module name in the model.
        kind: ``"linear"``, ``"mlp"``, ``"attention"`` or ``"block"``.
        params_before: Parameters before pruning.
        params_after: Parameters after pruning (structural; zeros still count).
        nonzero_after: Non-zero weights after pruning.
        ratio_requested: Sparsity / removal ratio the method asked for.
        sparsity_measured: Fraction of zero weights measured after pruning.
        score: Summary of the importance scores (min, max, mean, std) or a scalar metric.
        kept_units: Kept structure (e.g. ``{"heads": [0, 2], "neurons": 512}``), if any.
        stack: Stack name (``"decoder"``).
        block: Block index in the stack (original numbering).
    """

    name: str
    kind: str = "linear"
    params_before: int = 0
    params_after: int = 0
    nonzero_after: int | None = None
    ratio_requested: float | None = None
    sparsity_measured: float | None = None
    score: dict[str, float] | None = None
    kept_units: dict[str, Any] | None = None
    stack: str | None = None
    block: int | None = None


def score_summary(scores: torch.Tensor) -> dict[str, float]:
    """Summarize a score tensor for the report.

    Args:
        scores: Any score tensor.
    """
    s = scores.detach().float()
    # aminmax: one pass for both ends (torch.std_mean, oddly, is several times slower than std + mean).
    lo, hi = torch.aminmax(s)
    return {
        "min": float(lo),
        "max": float(hi),
        "mean": float(s.mean()),
        "std": float(s.std()) if s.numel() > 1 else 0.0,
    }


@dataclass
class PruningReport:
    """Per-layer and total outcome of a pruning run; saved in ``pruning_config.json`` and the model card.

    Args:
        method: Method name.
        layers: One entry per pruned unit.
        params_before: Model parameters before pruning.
        params_after: Model parameters after pruning (structural).
        nonzero_before: Non-zero parameters before pruning.
        nonzero_after: Non-zero parameters after pruning.
        removed_layers: Original indices of removed blocks, per stack.
        assignments: Layer-selection assignments, when a selection optimizer ran.
        evaluation: Evaluation results (``{"perplexity": {"before": .., "after": ..}}``).
        speed: Measured latency of the pruned model against its baseline
            (:func:`hf_prune.evaluation.compare_latency`: ``baseline_ms``, ``pruned_ms``, ``speedup``
            and the machine), empty until measured.
        extra: Method-specific extras.
    """

    method: str
    layers: list[LayerReport] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    nonzero_before: int = 0
    nonzero_after: int = 0
    removed_layers: dict[str, list[int]] = field(default_factory=dict)
    assignments: list[Any] | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        """Measured sparsity over the pruned layers (zeros / weights)."""
        total = sum(r.params_before for r in self.layers if r.kind == "linear")
        nz = sum(r.nonzero_after or 0 for r in self.layers if r.kind == "linear")
        return 0.0 if total == 0 else 1.0 - nz / total

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningReport:
        """Rebuild a report from :meth:`to_dict` output (unknown keys are ignored).

        Args:
            data: The dict.
        """
        names = {f.name for f in dataclasses.fields(LayerReport)}
        layers = [
            LayerReport(**{k: v for k, v in row.items() if k in names}) for row in data.get("layers", [])
        ]
        top = {f.name for f in dataclasses.fields(cls)} - {"layers"}
        return cls(layers=layers, **{k: v for k, v in data.items() if k in top})

    def to_markdown(self, max_rows: int | None = None) -> str:
        """Return a Markdown table of the per-layer rows plus totals.

        Args:
            max_rows: Show at most this many rows (the rest is summarized).
        """
        head = (
            "| layer | kind | params before | params after | ratio asked | sparsity measured | score mean |"
        )
        lines = [head, "|---|---|---:|---:|---:|---:|---:|"]
        rows = self.layers if max_rows is None else self.layers[:max_rows]
        for r in rows:
            asked = "—" if r.ratio_requested is None else f"{r.ratio_requested:.4f}"
            meas = "—" if r.sparsity_measured is None else f"{r.sparsity_measured:.4f}"
            score = "—" if not r.score or "mean" not in r.score else f"{r.score['mean']:.4g}"
            lines.append(
                f"| `{r.name}` | {r.kind} | {r.params_before:,} | {r.params_after:,} "
                f"| {asked} | {meas} | {score} |"
            )
        if max_rows is not None and len(self.layers) > max_rows:
            lines.append(f"| … {len(self.layers) - max_rows} more rows in pruning_config.json | | | | | | |")
        return "\n".join(lines)

    def summary(self) -> str:
        """Return a short human summary (totals)."""
        pct = 0.0 if self.params_before == 0 else 100.0 * (1 - self.params_after / self.params_before)
        parts = [
            f"method={self.method}",
            f"params {self.params_before:,} -> {self.params_after:,} ({pct:.1f}% removed)",
            f"non-zero {self.nonzero_before:,} -> {self.nonzero_after:,}",
        ]
        if any(r.kind == "linear" for r in self.layers):
            parts.append(f"sparsity of pruned layers {self.sparsity:.4f}")
        if self.removed_layers:
            parts.append(f"removed blocks {self.removed_layers}")
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.summary() + "\n" + self.to_markdown(max_rows=40)
