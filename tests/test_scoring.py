"""Scorers: Wanda, SparseGPT, SNIP, AFR, ReFer-SVD and magnitude against brute force / closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_prune.scoring import (
    afr_neuron_scores,
    afr_scores,
    magnitude_scores,
    neuron_taylor_scores,
    refer_svd_neuron_scores,
    refer_svd_scores,
    representation_svd_loss,
    snip_scores,
    sparsegpt_prune,
    standardize_group,
    wanda_mask,
    wanda_scores,
)
from hf_prune.selection import num_to_prune, unstructured_mask


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- magnitude / Wanda


def test_magnitude_scores_are_abs_fp32():
    w = torch.tensor([[-2.0, 0.5], [0.0, -0.25]], dtype=torch.float16)
    s = magnitude_scores(w)
    assert s.dtype == torch.float32
    assert s.tolist() == [[2.0, 0.5], [0.0, 0.25]]
    with pytest.raises(TypeError):
        magnitude_scores(torch.ones(2, 2, dtype=torch.int64))


def test_wanda_rowwise_selection_matches_brute_force_sort():
    w = torch.randn(7, 13, generator=_gen(0))
    x = torch.randn(50, 13, generator=_gen(1)) * torch.linspace(0.1, 3.0, 13)
    sq = (x**2).sum(0)
    scores = wanda_scores(w, sq)
    torch.testing.assert_close(scores, w.abs() * x.norm(dim=0), rtol=1e-5, atol=1e-6)
    sparsity = 0.4
    mask = unstructured_mask(scores, sparsity, compare="row")
    per_row = (~mask).sum(dim=1).tolist()
    assert sum(per_row) == num_to_prune(w.numel(), sparsity)  # exact layer count
    for r in range(7):
        k = per_row[r]
        assert abs(k - sparsity * 13) < 1  # each row within one weight of the target
        row = scores[r].tolist()
        pruned = sorted(range(13), key=lambda j: row[j])[:k]  # brute force: k smallest of the row
        assert sorted(j for j in range(13) if not mask[r, j]) == sorted(pruned)
    assert torch.equal(wanda_mask(w, sq, sparsity), mask)


def test_wanda_nm_and_validation():
    w = torch.randn(4, 8, generator=_gen(2))
    sq = torch.rand(8, generator=_gen(3))
    mask = wanda_mask(w, sq, 0.0, nm=(2, 4))
    assert (mask.reshape(4, 2, 4).sum(-1) == 2).all()
    with pytest.raises(ValueError, match="in_features=8"):
        wanda_scores(w, torch.rand(7))
    with pytest.raises(ValueError, match=">= 0"):
        wanda_scores(w, -torch.ones(8))


# ---------------------------------------------------------------- SparseGPT


def _correlated_inputs(n: int, d: int, seed: int) -> torch.Tensor:
    base = torch.randn(n, d, generator=_gen(seed))
    mix = torch.eye(d) + 2.0 * torch.randn(d, d, generator=_gen(seed + 1)) / d**0.5
    return base @ mix * torch.linspace(0.2, 2.0, d)


def _naive_sparsegpt(w: torch.Tensor, h: torch.Tensor, sparsity: float, blocksize: int, percdamp: float):
    """Textbook sequential OBS in float64 with an explicit inverse of H restricted to the remaining columns."""
    w = w.double().clone()
    h = h.double() + percdamp * torch.diag(h.double()).mean() * torch.eye(h.shape[0], dtype=torch.float64)
    rows, cols = w.shape
    keep = torch.ones(rows, cols, dtype=torch.bool)
    for b0 in range(0, cols, blocksize):
        b1 = min(b0 + blocksize, cols)
        # Saliency w^2 / [H_F^-1]_ii with F = {i, ..., cols-1}, on the weights as updated so far.
        d2 = torch.tensor(
            [float(torch.linalg.inv(h[i:, i:])[0, 0]) for i in range(b0, b1)], dtype=torch.float64
        )
        sal = (w[:, b0:b1] ** 2 / d2).flatten()
        k = num_to_prune(rows * b1, sparsity) - num_to_prune(rows * b0, sparsity)
        order = torch.argsort(sal, stable=True)[:k]
        block_keep = torch.ones(rows * (b1 - b0), dtype=torch.bool)
        block_keep[order] = False
        keep[:, b0:b1] = block_keep.reshape(rows, b1 - b0)
        for i in range(b0, b1):
            hinv = torch.linalg.inv(h[i:, i:])
            for r in range(rows):
                if not keep[r, i]:
                    w[r, i:] -= w[r, i] / hinv[0, 0] * hinv[0, :]
    w[~keep] = 0.0
    return w, keep


def test_sparsegpt_matches_textbook_sequential_obs():
    w = torch.randn(6, 24, generator=_gen(12))
    x = _correlated_inputs(200, 24, 13)
    h = x.T @ x / 200
    new_w, keep = sparsegpt_prune(w, h, 0.6, blocksize=8, percdamp=0.01)
    ref_w, ref_keep = _naive_sparsegpt(w, h, 0.6, 8, 0.01)
    assert torch.equal(keep, ref_keep)
    torch.testing.assert_close(new_w.double(), ref_w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_sparsegpt_beats_magnitude_reconstruction_and_is_exact(sparsity):
    out_f, in_f = 24, 64
    w = torch.randn(out_f, in_f, generator=_gen(10))
    x = _correlated_inputs(512, in_f, 11)
    h = 2.0 / x.shape[0] * x.T @ x
    new_w, keep = sparsegpt_prune(w, h, sparsity, blocksize=16)
    k = num_to_prune(w.numel(), sparsity)
    assert int((~keep).sum()) == k
    assert (new_w[~keep] == 0).all()
    mag_keep = unstructured_mask(w.abs(), sparsity, compare="layer")
    err_sgpt = torch.linalg.norm(x @ (w - new_w).T)
    err_mag = torch.linalg.norm(x @ (w - w * mag_keep).T)
    assert err_sgpt < 0.9 * err_mag


def test_sparsegpt_two_column_obs_update_closed_form():
    # One row [w0, w1]; pruning the smaller-saliency column 0 must move w1 to the least-squares optimum
    # of ||w X - w' X|| with w'0 = 0:  w1' = w1 + w0 * H01 / H11  ==  w1 - w0 * Hinv[1,0] / Hinv[0,0].
    w = torch.tensor([[0.3, 2.0]])
    h = torch.tensor([[2.0, 0.8], [0.8, 1.5]])
    new_w, keep = sparsegpt_prune(w, h, 0.5, percdamp=0.0)
    assert keep.tolist() == [[False, True]]
    hinv = torch.linalg.inv(h.double())
    expected = 2.0 + 0.3 * 0.8 / 1.5
    assert new_w[0, 0].item() == 0.0
    assert new_w[0, 1].item() == pytest.approx(expected, rel=1e-6)
    assert new_w[0, 1].item() == pytest.approx(2.0 - 0.3 * float(hinv[1, 0] / hinv[0, 0]), rel=1e-6)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_sparsegpt_nm_pattern_respected(n, m):
    w = torch.randn(10, 32, generator=_gen(20))
    x = _correlated_inputs(256, 32, 21)
    new_w, keep = sparsegpt_prune(w, x.T @ x, 0.0, prune_n=n, prune_m=m, blocksize=16)
    assert (keep.reshape(10, -1, m).sum(-1) == n).all()
    assert (new_w[~keep] == 0).all()
    assert torch.isfinite(new_w).all()


def test_sparsegpt_accepts_transposed_views():
    # Conv1D weights reach the solver as a transposed (non-contiguous) view of [in, out] storage.
    stored = torch.randn(16, 6, generator=_gen(25))
    x = _correlated_inputs(64, 16, 26)
    h = x.T @ x
    got_w, got_keep = sparsegpt_prune(stored.t(), h, 0.5, blocksize=8)
    ref_w, ref_keep = sparsegpt_prune(stored.t().contiguous(), h, 0.5, blocksize=8)
    assert torch.equal(got_keep, ref_keep) and torch.equal(got_w, ref_w)


def test_sparsegpt_dead_inputs_and_dtype():
    w = torch.randn(5, 8, generator=_gen(30)).half()
    x = _correlated_inputs(64, 8, 31)
    x[:, 3] = 0.0  # an input that never fires
    new_w, keep = sparsegpt_prune(w, x.T @ x, 0.5)
    assert new_w.dtype == torch.float16
    assert (new_w[:, 3] == 0).all()
    assert int((~keep).sum()) == 20
    assert torch.isfinite(new_w).all()


def test_sparsegpt_validation():
    w = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        sparsegpt_prune(w, torch.eye(7), 0.5)
    with pytest.raises(ValueError, match="sparsity"):
        sparsegpt_prune(w, torch.eye(8), 1.5)
    with pytest.raises(ValueError, match="positive definite"):
        sparsegpt_prune(w, -torch.eye(8), 0.5, percdamp=0.0)
    with pytest.raises(ValueError, match="multiple of 3"):
        sparsegpt_prune(w, torch.eye(8), 0.0, prune_n=1, prune_m=3)
    with pytest.raises(ValueError, match="blocksize"):
        sparsegpt_prune(w, torch.eye(8), 0.0, prune_n=2, prune_m=4, blocksize=6)
    with pytest.raises(ValueError, match="prune_n"):
        sparsegpt_prune(w, torch.eye(8), 0.0, prune_n=4, prune_m=4)


# ---------------------------------------------------------------- SNIP / first-order neuron scores


def test_snip_scores_and_shape_check():
    w = torch.randn(3, 4, generator=_gen(40))
    g = torch.randn(3, 4, generator=_gen(41))
    torch.testing.assert_close(snip_scores(w, g), (w * g).abs())
    with pytest.raises(ValueError, match="does not match weight shape"):
        snip_scores(w, g.T)


@pytest.mark.parametrize("trim", [0.0, 0.2])
def test_neuron_taylor_scores_brute_force(trim):
    hidden, inter = 10, 6
    gate, up = torch.randn(inter, hidden, generator=_gen(50)), torch.randn(inter, hidden, generator=_gen(51))
    down = torch.randn(hidden, inter, generator=_gen(52))
    g_gate, g_up = (
        torch.randn(inter, hidden, generator=_gen(53)),
        torch.randn(inter, hidden, generator=_gen(54)),
    )
    g_down = torch.randn(hidden, inter, generator=_gen(55))
    got = neuron_taylor_scores([gate, up], [g_gate, g_up], down, g_down, trim=trim)
    cut = int(hidden * trim)
    for k in range(inter):
        terms = sorted(
            float(down[h, k] * g_down[h, k] + gate[k, h] * g_gate[k, h] + up[k, h] * g_up[k, h])
            for h in range(hidden)
        )
        kept = terms[cut : hidden - cut]
        assert got[k].item() == pytest.approx(abs(sum(kept) / len(kept)), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(
        refer_svd_neuron_scores([gate, up], [g_gate, g_up], down, g_down, trim=trim), got
    )
    with pytest.raises(ValueError, match="expected \\[intermediate, hidden\\]"):
        neuron_taylor_scores([gate.T], [g_gate.T], down, g_down)


# ---------------------------------------------------------------- AFR


def test_afr_scores_standardize_over_whole_group():
    ws = [torch.randn(4, 5, generator=_gen(60)), torch.randn(3, 2, generator=_gen(61))]
    fo = [torch.randn(4, 5, generator=_gen(62)), torch.randn(3, 2, generator=_gen(63)) * 10]
    sn = [torch.randn(4, 5, generator=_gen(64)) * 1e-3, torch.randn(3, 2, generator=_gen(65))]
    got = afr_scores(ws, fo, sn)

    def z(parts):
        flat = torch.cat([p.flatten() for p in parts]).double()
        return (flat - flat.mean()) / flat.std()

    expected = z([(w * g).abs() for w, g in zip(ws, fo, strict=True)]) + z(
        [(w * g).abs() for w, g in zip(ws, sn, strict=True)]
    )
    torch.testing.assert_close(torch.cat([g.flatten() for g in got]).double(), expected, rtol=1e-5, atol=1e-5)
    assert [g.shape for g in got] == [w.shape for w in ws]
    # Scale invariance of each term: multiplying one gradient set by 1000 changes nothing.
    again = afr_scores(ws, [f * 1000 for f in fo], sn)
    torch.testing.assert_close(torch.cat([g.flatten() for g in again]), torch.cat([g.flatten() for g in got]))
    with pytest.raises(TypeError, match="sequence"):
        afr_scores(ws[0], fo[0], sn[0])
    with pytest.raises(ValueError, match="one entry"):
        afr_scores(ws, fo[:1], sn)


def test_afr_neuron_scores_and_constant_group():
    fo = [torch.rand(6, generator=_gen(70)), torch.rand(6, generator=_gen(71))]
    sn = [torch.rand(6, generator=_gen(72)), torch.rand(6, generator=_gen(73))]
    got = torch.cat(afr_neuron_scores(fo, sn))
    f, s = torch.cat(fo).double(), torch.cat(sn).double() ** 2
    expected = (f - f.mean()) / f.std() + (s - s.mean()) / s.std()
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    const = standardize_group([torch.ones(3), torch.ones(2)])
    assert all((c == 0).all() for c in const)


# ---------------------------------------------------------------- ReFer-SVD


def test_representation_svd_loss_matches_numpy_and_backprops():
    feats = torch.randn(2, 9, 5, generator=_gen(80), requires_grad=True)
    loss = representation_svd_loss(feats)
    expected = sum(
        np.linalg.svd(feats[b].detach().double().numpy(), compute_uv=False).mean() for b in range(2)
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        representation_svd_loss(torch.randn(4))


def test_refer_svd_scores_use_representation_gradient():
    lin = torch.nn.Linear(6, 4, bias=False)
    x = torch.randn(3, 7, 6, generator=_gen(81))
    representation_svd_loss(lin(x)).backward()
    scores = refer_svd_scores(lin.weight, lin.weight.grad)
    torch.testing.assert_close(scores, (lin.weight * lin.weight.grad).abs().detach())
    assert (scores >= 0).all() and scores.sum() > 0
