"""Allocators: uniform, global threshold, AlphaPruning (published LLaMA-7B metrics) and OWL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hf_prune.allocation import (
    alpha_pruning_ratios,
    global_threshold_counts,
    global_threshold_ratios,
    layer_outlier_ratio,
    owl_ratios,
    uniform_ratios,
    weighted_sparsity,
)
from hf_prune.esd import load_metric_file
from hf_prune.selection import num_to_prune, unstructured_mask

DATA = Path(__file__).parent / "data" / "alphapruning"

# LLaMA-7B: 32 blocks x (q, k, v, o, gate, up, down) in transformers module order.
_H, _I = 4096, 11008
_BLOCK = np.array([_H * _H] * 4 + [_I * _H, _I * _H, _H * _I], dtype=np.int64)
LLAMA7B_COUNTS = np.tile(_BLOCK, 32)


@pytest.fixture(scope="module")
def llama7b_alpha() -> np.ndarray:
    return load_metric_file(DATA / "llama-7b-hf.alpha_peak.npy", LLAMA7B_COUNTS.size)


def _published_rule(metrics: np.ndarray, counts: np.ndarray, sparsity: float, eps: float, per_block: int):
    """Independent re-derivation of the published ww_sparsity (block-wise mean, min-max map, rescale)."""
    blocks = [np.mean(metrics[i : i + per_block]) for i in range(0, len(metrics), per_block)]
    scores = np.array([b for b in blocks for _ in range(per_block)])
    s1, s2 = 1.0 - eps, 1.0 + eps
    ratios = (scores - scores.min()) / (scores.max() - scores.min()) * (s2 - s1) + s1
    scaler = counts.sum() * sparsity / np.sum(counts * ratios)
    return ratios * scaler


# ---------------------------------------------------------------- uniform


def test_uniform_ratios():
    r = uniform_ratios([10, 20, 30], 0.5)
    assert r.tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="sparsity"):
        uniform_ratios([10], 1.5)
    with pytest.raises(ValueError, match="param_counts"):
        uniform_ratios([10, 0], 0.5)


# ---------------------------------------------------------------- AlphaPruning


@pytest.mark.parametrize(("sparsity", "eps"), [(0.7, 0.3), (0.5, 0.2), (0.8, 0.1)])
def test_alpha_pruning_reproduces_published_rule_on_llama7b(llama7b_alpha, sparsity, eps):
    ratios = alpha_pruning_ratios(llama7b_alpha, LLAMA7B_COUNTS, sparsity, eps, "block_wise", 7)
    expected = _published_rule(llama7b_alpha, LLAMA7B_COUNTS.astype(np.float64), sparsity, eps, 7)
    assert expected.max() < 0.99  # no capping in these settings: must equal the published rule
    np.testing.assert_allclose(ratios, expected, rtol=1e-12, atol=1e-12)
    assert abs(weighted_sparsity(ratios, LLAMA7B_COUNTS) - sparsity) < 1e-9
    # Direction: blocks with a larger mean alpha (less well trained) are pruned more.
    block_alpha = llama7b_alpha.reshape(32, 7).mean(1)
    block_ratio = ratios.reshape(32, 7)[:, 0]
    assert np.all(np.diff(block_ratio[np.argsort(block_alpha)]) >= 0)
    assert np.ptp(ratios.reshape(32, 7), axis=1).max() == 0.0  # block-wise: one ratio per block


def test_alpha_pruning_layer_wise_and_spread(llama7b_alpha):
    ratios = alpha_pruning_ratios(llama7b_alpha, LLAMA7B_COUNTS, 0.6, 0.25, mapping="layer_wise")
    assert abs(weighted_sparsity(ratios, LLAMA7B_COUNTS) - 0.6) < 1e-9
    assert np.argmax(ratios) == np.argmax(llama7b_alpha) and np.argmin(ratios) == np.argmin(llama7b_alpha)
    # ratios / factors is constant: max/min spread is exactly (1+eps)/(1-eps).
    assert ratios.max() / ratios.min() == pytest.approx(1.25 / 0.75, rel=1e-12)


def test_alpha_pruning_clips_and_redistributes_exactly(llama7b_alpha):
    sparsity, eps, cap = 0.9, 0.9, 0.99
    published = _published_rule(llama7b_alpha, LLAMA7B_COUNTS.astype(np.float64), sparsity, eps, 7)
    assert published.max() >= 1.0  # the published rule would prune whole layers here
    ratios = alpha_pruning_ratios(
        llama7b_alpha, LLAMA7B_COUNTS, sparsity, eps, "block_wise", 7, max_ratio=cap
    )
    assert ratios.max() <= cap and np.all(ratios < 1.0) and np.all(ratios >= 0.0)
    assert abs(weighted_sparsity(ratios, LLAMA7B_COUNTS) - sparsity) < 1e-9
    capped = ratios >= cap - 1e-15
    assert capped.any() and (~capped).any()
    # Unclipped layers keep the published proportions (one common scale for all of them).
    scale = ratios[~capped] / published[~capped]
    np.testing.assert_allclose(scale, scale[0], rtol=1e-12)
    assert scale[0] > 1.0  # the capped excess moved onto them


def test_alpha_pruning_validation(llama7b_alpha):
    for eps in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="epsilon"):
            alpha_pruning_ratios(llama7b_alpha, LLAMA7B_COUNTS, 0.7, eps, "block_wise", 7)
    with pytest.raises(ValueError, match="224 layers"):
        alpha_pruning_ratios(llama7b_alpha[:-1], LLAMA7B_COUNTS, 0.7, 0.3, "block_wise", 7)
    bad = llama7b_alpha.copy()
    bad[5] = np.nan
    with pytest.raises(ValueError, match="layer 5"):
        alpha_pruning_ratios(bad, LLAMA7B_COUNTS, 0.7, 0.3, "block_wise", 7)
    with pytest.raises(ValueError, match="layers_per_block"):
        alpha_pruning_ratios(llama7b_alpha, LLAMA7B_COUNTS, 0.7, 0.3, "block_wise")
    with pytest.raises(ValueError, match="layers_per_block=5"):
        alpha_pruning_ratios(llama7b_alpha, LLAMA7B_COUNTS, 0.7, 0.3, "block_wise", 5)
    with pytest.raises(ValueError, match="mapping"):
        alpha_pruning_ratios(llama7b_alpha, LLAMA7B_COUNTS, 0.7, 0.3, "per_head", 7)
    with pytest.raises(ValueError, match="max_ratio"):
        alpha_pruning_ratios(llama7b_alpha, LLAMA7B_COUNTS, 0.995, 0.3, "block_wise", 7)


def test_alpha_pruning_equal_metrics_is_uniform():
    r = alpha_pruning_ratios([2.0] * 4, [1, 2, 3, 4], 0.5, 0.3, mapping="layer_wise")
    np.testing.assert_allclose(r, 0.5)


# ---------------------------------------------------------------- OWL


def _published_owl(outliers: np.ndarray, sparsity: float, lamda: float) -> np.ndarray:
    d = (outliers - outliers.min()) * (1 / (outliers.max() - outliers.min()) * lamda * 2)
    keep = d - d.mean() + (1 - sparsity)
    return 1 - keep


def test_owl_equals_published_rule_for_equal_layers_without_clipping():
    outliers = np.array([0.01, 0.03, 0.02, 0.04, 0.025, 0.025])  # mean of the min-max map is 1/2: no clip
    ratios = owl_ratios(outliers, [100] * 6, 0.7, lamda=0.08)
    np.testing.assert_allclose(ratios, _published_owl(outliers, 0.7, 0.08), rtol=0, atol=1e-12)
    assert np.argmin(ratios) == np.argmax(outliers)  # more outliers -> lower sparsity


def test_owl_bounds_and_exact_weighted_target():
    rng = np.random.default_rng(0)
    outliers = np.r_[rng.uniform(0.001, 0.01, 20), 0.2]  # one outlier-rich layer: skewed
    counts = rng.integers(1_000, 50_000, outliers.size)
    s, lam = 0.7, 0.08
    published = _published_owl(outliers, s, lam)
    assert published.min() < s - lam  # the published shift breaks the stated band here
    ratios = owl_ratios(outliers, counts, s, lamda=lam)
    assert ratios.min() >= s - lam - 1e-12 and ratios.max() <= s + lam + 1e-12
    assert abs(weighted_sparsity(ratios, counts) - s) < 1e-9
    order = np.argsort(outliers)
    assert np.all(np.diff(ratios[order]) <= 1e-12)  # monotone: more outliers, lower sparsity
    with pytest.raises(ValueError, match="outlier_ratios has 3 values"):
        owl_ratios([0.1, 0.2, 0.3], [1, 2], 0.5)


def test_layer_outlier_ratio_brute_force():
    scores = torch.rand(40, 50, generator=torch.Generator().manual_seed(1)) ** 6
    m = 5.0
    expected = float((scores > m * scores.mean()).double().mean())
    assert layer_outlier_ratio(scores, M=m) == pytest.approx(expected)
    parts = [scores[:10], scores[10:]]
    assert layer_outlier_ratio(parts, M=m) == pytest.approx(expected)
    with pytest.raises(ValueError, match="M must be > 0"):
        layer_outlier_ratio(scores, M=0)


# ---------------------------------------------------------------- global threshold


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.55, 1.0])
def test_global_threshold_exact_count_with_ties(dtype, sparsity):
    gen = torch.Generator().manual_seed(3)
    # Integer-valued scores create many ties, including across layers.
    scores = [torch.randint(0, 20, shape, generator=gen).to(dtype) for shape in [(7, 9), (13,), (4, 4, 3)]]
    counts = global_threshold_counts(scores, sparsity)
    total = sum(s.numel() for s in scores)
    assert counts.sum() == num_to_prune(total, sparsity)
    # Brute force: stable global sort of the concatenation (ties broken by layer order, then position).
    flat = torch.cat([s.flatten().double() for s in scores])
    pruned = torch.argsort(flat, stable=True)[: num_to_prune(total, sparsity)]
    layer_of = torch.cat([torch.full((s.numel(),), i) for i, s in enumerate(scores)])
    expected = np.bincount(layer_of[pruned].numpy(), minlength=len(scores))
    np.testing.assert_array_equal(counts, expected)
    # The ratios reproduce each layer's count through unstructured_mask.
    ratios = global_threshold_ratios(scores, sparsity)
    for s, r, c in zip(scores, ratios, counts, strict=True):
        assert int((~unstructured_mask(s, float(r), compare="layer")).sum()) == c


def test_global_threshold_negative_and_mixed_values():
    scores = [torch.tensor([-3.0, -0.0, 0.0, 2.5]), torch.tensor([-1e-30, 1e30, -7.0])]
    counts = global_threshold_counts(scores, 3 / 7)
    np.testing.assert_array_equal(counts, [1, 2])  # -7, -3, -1e-30
    with pytest.raises(ValueError, match="NaN"):
        global_threshold_counts([torch.tensor([1.0, float("nan")])], 0.5)
    with pytest.raises(ValueError, match="non-empty"):
        global_threshold_counts([], 0.5)
