"""SparseGPT: one-shot pruning with OBS weight reconstruction (Frantar & Alistarh, ICML 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from hf_prune.calibration.stats import InputHessian, StatCollector
from hf_prune.config import check_range
from hf_prune.methods.unstructured import UnstructuredConfig, check_propagation, propagation_field
from hf_prune.scoring.sparsegpt import sparsegpt_prune
from hf_prune.surgery.masks import apply_mask, has_mask, remove_mask
from hf_prune.surgery.offload import is_offloaded, read_weight_out_in, write_weight_out_in


@dataclass
class SparseGPTConfig(UnstructuredConfig):
    """SparseGPT: prune with an adaptive OBS mask and update the remaining weights.

    Args:
        sparsity: Target fraction of weights removed, in ``[0, 1)``.
        pattern: ``"unstructured"`` or ``"N:M"``.
        allocation: ``"uniform"``, ``"global"`` (Wanda-style proxy scores for the threshold),
            ``AlphaAllocation`` or ``OWLAllocation``.
        blocksize: Columns per lazy-update block.
        percdamp: Hessian dampening as a fraction of its mean diagonal.
        propagation: ``"pruned"`` (default, as the paper) or ``"dense"`` (one forward per block; the
            next block's Hessians come from the dense outputs).
        target_modules: Patterns of projections to prune.
        exclude_modules: Patterns never pruned.
    """

    method: ClassVar[str] = "sparsegpt"
    paper: ClassVar[str] = (
        "Frantar & Alistarh, SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot "
        "(ICML 2023)"
    )
    needs: ClassVar[str] = "hessian"

    blocksize: int = field(default=128, metadata={"help": "Columns per lazy-update block."})
    percdamp: float = field(default=0.01, metadata={"help": "Dampening, fraction of mean diag(H)."})
    propagation: str = propagation_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_propagation(self.propagation)
        check_range("blocksize", self.blocksize, 1, integer=True)
        check_range("percdamp", self.percdamp, 0.0, 1.0, low_inclusive=False)

    def score(self, weight: torch.Tensor, stats: dict[str, StatCollector]) -> torch.Tensor:
        """OBS saliency proxy ``|W| · sqrt(diag H)`` (used only by allocation pre-passes).

        Args:
            weight: ``[out, in]`` weight.
            stats: Must hold ``"hessian"``.
        """
        hess = stats["hessian"]
        assert isinstance(hess, InputHessian)  # internal: the runner collects what `needs` says
        return weight.abs().float() * torch.diagonal(hess.sum_xxt).clamp_min(0).sqrt().to(weight.device)

    @torch.no_grad()
    def prune_layer(self, module: nn.Module, ratio: float, stats: dict[str, StatCollector]) -> torch.Tensor:
        """Prune and reconstruct one projection; the updated weights replace the stored ones.

        Args:
            module: The projection.
            ratio: Its sparsity.
            stats: Must hold ``"hessian"``.
        """
        hess = stats["hessian"]
        assert isinstance(hess, InputHessian)
        if has_mask(module):
            remove_mask(module, make_physical=True)
        w = read_weight_out_in(module).float()
        n, m = self.nm or (0, 0)
        new_w, keep = sparsegpt_prune(
            w,
            hess.sum_xxt,  # scaled inside, on the solver's own copy: one [in, in] matrix fewer
            ratio,
            prune_n=n,
            prune_m=m,
            blocksize=self.blocksize,
            percdamp=self.percdamp,
            hessian_scale=hess.scale,
        )
        if is_offloaded(module):
            write_weight_out_in(module, new_w * keep.to(new_w.dtype))
        else:
            write_weight_out_in(module, new_w)
            apply_mask(module, keep)
        return w.abs()
