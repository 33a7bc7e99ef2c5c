"""N:M selection: pattern parsing and per-group exact-count masks, checked against brute force."""

from __future__ import annotations

import itertools

import pytest
import torch

from hf_prune.selection import nm_mask, nm_sparsity, parse_pattern


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("unstructured", None),
        ("UNSTRUCTURED", None),
        (None, None),
        ("2:4", (2, 4)),
        (" 4 : 8 ", (4, 8)),
        ("1:4", (1, 4)),
    ],
)
def test_parse_pattern_valid(pattern, expected):
    assert parse_pattern(pattern) == expected


@pytest.mark.parametrize("bad", ["3:2", "0:4", "4:4", "a:b", "2:", ":4", "2-4", "2:4:8", "-1:4", ""])
def test_parse_pattern_invalid_names_value_and_form(bad):
    with pytest.raises(ValueError) as err:
        parse_pattern(bad)
    msg = str(err.value)
    assert repr(bad) in msg
    assert "N:M" in msg


def test_parse_pattern_rejects_non_string():
    with pytest.raises(TypeError, match="pattern must be a string"):
        parse_pattern(24)  # type: ignore[arg-type]


def test_nm_sparsity():
    assert nm_sparsity(2, 4) == 0.5
    assert nm_sparsity(1, 4) == 0.75


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8), (3, 4)])
def test_nm_mask_keeps_exactly_n_per_group_and_matches_brute_force(n, m):
    gen = torch.Generator().manual_seed(n * 10 + m)
    scores = torch.randn(6, 4 * m, generator=gen)
    mask = nm_mask(scores, n, m)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    groups = mask.reshape(6, 4, m)
    assert (groups.sum(-1) == n).all()
    # Brute force: for every group, the kept set is the size-n subset with the largest score sum.
    for r, g in itertools.product(range(6), range(4)):
        vals = scores[r, g * m : (g + 1) * m].tolist()
        best = max(itertools.combinations(range(m), n), key=lambda c: sum(vals[i] for i in c))
        kept = [i for i in range(m) if mask[r, g * m + i]]
        assert kept == sorted(best)


def test_nm_mask_ties_keep_earlier_columns():
    scores = torch.ones(2, 8)
    mask = nm_mask(scores, 2, 4)
    assert mask[0].tolist() == [True, True, False, False] * 2


def test_nm_mask_bad_shape_and_args():
    with pytest.raises(ValueError, match="in_features=6"):
        nm_mask(torch.randn(3, 6), 2, 4)
    with pytest.raises(ValueError, match="0 < n < m"):
        nm_mask(torch.randn(3, 8), 4, 4)
    with pytest.raises(ValueError, match="2-D"):
        nm_mask(torch.randn(8), 2, 4)
