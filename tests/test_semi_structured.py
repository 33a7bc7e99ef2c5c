"""2:4 semi-structured conversion: the pattern check and the CPU message everywhere, the kernels on CUDA."""

from __future__ import annotations

import pytest
import torch
from families import CharTokenizer, make_model
from torch import nn

from hf_prune import CalibrationConfig, MagnitudeConfig, prune
from hf_prune.postprocess.semi_structured import (
    is_semi_structured,
    pattern_violations,
    semi_structured_available,
    semi_structured_constraints,
    to_semi_structured,
)

CALIB = CalibrationConfig(dataset=["some calibration words " * 10] * 4, nsamples=2, seqlen=16)


def _two_four(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    groups = w.reshape(rows, -1, 4)
    keep = groups.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return (groups * mask).reshape(rows, cols)


def test_pattern_check_hand_made():
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0], [0.0, 5.0, 6.0, 0.0, 1.0, 1.0, 0.0, 0.0]])
    assert pattern_violations(w) == 0 and is_semi_structured(w)
    w[0, 1] = 7.0  # the first group now keeps 3 of 4
    assert pattern_violations(w) == 1 and not is_semi_structured(w)
    assert pattern_violations(torch.ones(4, 8)) == 8
    assert not is_semi_structured(torch.zeros(2, 6))  # 6 is not a multiple of 4
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        pattern_violations(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="n=4, m=4"):
        pattern_violations(w, n=4, m=4)
    assert is_semi_structured(_two_four(8, 16))


def test_constraints_from_torch():
    assert semi_structured_constraints(torch.float16, "cusparselt") == (16, 16)
    assert semi_structured_constraints(torch.bfloat16, "cutlass") == (32, 64)
    with pytest.raises(ValueError, match=r"model.to\(torch.float16\)"):
        semi_structured_constraints(torch.float32, "cusparselt")
    with pytest.raises(ValueError, match="backend='triton'"):
        semi_structured_constraints(torch.float16, "triton")
    # Our table is torch's own (guards against a torch upgrade changing the kernels' requirements).
    for backend, cls in (
        ("cusparselt", torch.sparse.SparseSemiStructuredTensorCUSPARSELT),
        ("cutlass", torch.sparse.SparseSemiStructuredTensorCUTLASS),
    ):
        for dtype, spec in cls._DTYPE_SHAPE_CONSTRAINTS.items():
            assert semi_structured_constraints(dtype, backend) == (spec.sparse_min_rows, spec.sparse_min_cols)


def _pruned_24():
    model, fam = make_model("llama")
    pm = prune(
        model, MagnitudeConfig(pattern="2:4"), calibration=CALIB, tokenizer=CharTokenizer(), progress=False
    )
    return pm, fam


def test_masked_model_must_be_finalized_first():
    pm, _ = _pruned_24()
    with pytest.raises(ValueError, match=r"finalize\(\)"):
        to_semi_structured(pm)


def test_cpu_keeps_dense_kernels_with_a_clear_message():
    # A fresh model, finalized in place: deepcopy + finalize would share torch's parametrized class
    # with the original and break it (see the export module's notes).
    pm, fam = _pruned_24()
    plain = pm.finalize()
    before = plain(**fam.inputs).logits
    with pytest.warns(RuntimeWarning, match="dense kernels") as record:
        result = to_semi_structured(plain)
    assert "exist only on CUDA" in str(record[0].message)
    assert result["dense_kernels"] and result["converted"] == []
    # Exactly the 2:4-pruned projections are found: 7 per block, not lm_head or the embeddings.
    assert len(result["candidates"]) == 7 * len(plain.model.layers)
    assert all(name.startswith("model.layers.") for name in result["candidates"])
    assert all(type(m.weight) is nn.Parameter for m in plain.modules() if isinstance(m, nn.Linear))
    torch.testing.assert_close(plain(**fam.inputs).logits, before)
    with pytest.raises(RuntimeError, match="dense kernels"):
        to_semi_structured(plain, strict=True)
    # The finalized PrunedModel itself is accepted too, with the plain model's module names.
    with pytest.warns(RuntimeWarning):
        assert to_semi_structured(pm)["candidates"] == result["candidates"]


def test_bad_inputs():
    dense, _ = make_model("llama")
    with pytest.raises(ValueError, match="pattern='2:4'"):
        to_semi_structured(dense)
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        to_semi_structured(dense, modules=["*.conv*"])
    with pytest.raises(ValueError, match="does not have the 2:4 pattern"):
        to_semi_structured(dense, modules=["*.mlp.up_proj"])
    with pytest.raises(TypeError, match="list of name patterns"):
        to_semi_structured(dense, modules="*.mlp.*")
    with pytest.raises(TypeError, match="nn.Module"):
        to_semi_structured("model")


def test_available_reports_why_not_on_cpu():
    ok, reason = semi_structured_available("cpu")
    assert not ok and "CPU" in reason


def _needs_sparse_gpu() -> None:
    ok, reason = semi_structured_available()
    if not ok:
        pytest.skip(f"2:4 semi-structured kernels unavailable: {reason}")


@pytest.mark.gpu
def test_linear_conversion_matches_dense_on_gpu():
    _needs_sparse_gpu()
    layer = nn.Linear(256, 128, bias=True).half().cuda()
    with torch.no_grad():
        layer.weight.copy_(_two_four(128, 256).half())
    x = torch.randn(64, 256, dtype=torch.float16, device="cuda")
    want = layer(x)
    holder = nn.Sequential(layer)
    result = to_semi_structured(holder)
    assert result["converted"] == ["0"]
    assert isinstance(layer.weight, torch.sparse.SparseSemiStructuredTensor)
    torch.testing.assert_close(layer(x), want, atol=2e-2, rtol=1e-2)


@pytest.mark.gpu
def test_pruned_llama_conversion_on_gpu():
    _needs_sparse_gpu()
    import transformers as T

    config = T.LlamaConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = T.AutoModelForCausalLM.from_config(config)
    pm = prune(
        model, MagnitudeConfig(pattern="2:4"), calibration=CALIB, tokenizer=CharTokenizer(), progress=False
    )
    plain = pm.finalize().half().cuda().eval()
    ids = torch.randint(0, 256, (2, 64), device="cuda")
    with torch.no_grad():
        want = plain(input_ids=ids).logits.float()
        result = to_semi_structured(plain)
        got = plain(input_ids=ids).logits.float()
    assert len(result["converted"]) == 7 * 2 and not result["skipped"]
    torch.testing.assert_close(got, want, atol=5e-2, rtol=5e-2)
