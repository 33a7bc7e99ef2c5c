"""Every unstructured scorer x pattern x allocator on tiny models of several families."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from families import CharTokenizer, logits, make_model

from hf_prune import (
    AFRConfig,
    AlphaAllocation,
    AutoPrunedModelForCausalLM,
    CalibrationConfig,
    MagnitudeConfig,
    OWLAllocation,
    PruningConfig,
    ReferSVDConfig,
    SNIPConfig,
    SparseGPTConfig,
    WandaConfig,
    prune,
)
from hf_prune.selection.topk import num_to_prune
from hf_prune.surgery.masks import weight_out_in

CALIB = CalibrationConfig(
    dataset=[f"calibration text number {i} with some words" * 5 for i in range(20)],
    nsamples=4,
    seqlen=16,
    batch_size=2,
)
METHODS = {"magnitude": MagnitudeConfig, "wanda": WandaConfig, "sparsegpt": SparseGPTConfig}
GRAD_METHODS = {"snip": SNIPConfig, "afr": AFRConfig, "refer_svd": ReferSVDConfig}
ALLOCS = {
    "uniform": "uniform",
    "global": "global",
    "alpha": AlphaAllocation(epsilon=0.2),
    "owl": OWLAllocation(lamda=0.05),
}


def _check(pm, model, target):
    rows = pm.report.layers
    modules = dict(model.named_modules())
    total = zeros = 0
    for row in rows:
        w = weight_out_in(modules[row.name])
        z = int((w == 0).sum())
        assert abs(z - num_to_prune(w.numel(), row.ratio_requested)) <= 1, row.name
        assert row.sparsity_measured == pytest.approx(z / w.numel())
        total += w.numel()
        zeros += z
    assert zeros / total == pytest.approx(target, abs=1e-3)
    return rows


@pytest.mark.parametrize("family", ["llama", "qwen2", "opt", "gpt2", "bert"])
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("alloc", sorted(ALLOCS))
def test_matrix_unstructured(family, method, alloc):
    model, fam = make_model(family)
    cfg = METHODS[method](sparsity=0.6, allocation=ALLOCS[alloc])
    pm = prune(model, cfg, calibration=CALIB, tokenizer=CharTokenizer(), progress=False)
    rows = _check(pm, model, 0.6)
    ratios = [r.ratio_requested for r in rows]
    if alloc == "uniform":
        assert set(ratios) == {0.6}
    else:
        assert len(set(np.round(ratios, 6))) > 1  # a real per-layer allocation
    assert torch.isfinite(logits(pm, fam.inputs)).all()


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2", "bert"])
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_matrix_nm(family, method, pattern):
    model, _ = make_model(family)
    n, m = map(int, pattern.split(":"))
    pm = prune(
        model, METHODS[method](pattern=pattern), calibration=CALIB, tokenizer=CharTokenizer(), progress=False
    )
    modules = dict(model.named_modules())
    for row in pm.report.layers:
        w = weight_out_in(modules[row.name])
        kept = (w.reshape(w.shape[0], -1, m) != 0).sum(-1)
        # Exactly N kept in every group (a kept weight that is exactly 0.0 is vanishingly unlikely).
        assert (kept == n).all(), row.name
    assert pm.report.sparsity == pytest.approx(1 - n / m)


def test_sparsegpt_beats_magnitude_on_reconstruction():
    # SparseGPT reconstructs each layer's outputs on the calibration inputs; on those inputs the
    # pruned model must stay closer to the dense one than magnitude pruning at the same sparsity.
    from hf_prune.calibration.data import build_calibration_batches

    calib = CalibrationConfig(dataset=CALIB.dataset, nsamples=8, seqlen=16, batch_size=8)
    x = build_calibration_batches(calib, CharTokenizer())[0]
    dense, _ = make_model("llama")
    ref = logits(dense, x)
    errs = {}
    for name, cls in (("magnitude", MagnitudeConfig), ("sparsegpt", SparseGPTConfig)):
        model, _ = make_model("llama")
        prune(model, cls(sparsity=0.5), calibration=calib, tokenizer=CharTokenizer(), progress=False)
        errs[name] = float((logits(model, x) - ref).pow(2).mean())
    assert errs["sparsegpt"] < errs["magnitude"]


def test_alpha_metric_file_and_roundtrip(tmp_path):
    model, fam = make_model("llama")
    n_layers = 4 * 7
    values = np.linspace(2.0, 6.0, n_layers)
    np.save(tmp_path / "alpha.npy", values)
    cfg = WandaConfig(
        sparsity=0.7,
        allocation=AlphaAllocation(
            metric_file=str(tmp_path / "alpha.npy"), epsilon=0.3, mapping="layer_wise"
        ),
    )
    pm = prune(model, cfg, calibration=CALIB, tokenizer=CharTokenizer(), progress=False)
    ratios = np.array([r.ratio_requested for r in pm.report.layers])
    # Higher alpha (less well trained) -> higher sparsity; linear in the metric.
    assert np.all(np.diff(ratios) > 0)
    assert np.allclose(
        np.diff(ratios[:7]) / np.diff(values[:7]), (ratios[1] - ratios[0]) / (values[1] - values[0])
    )
    assert pm.report.layers[0].score["alpha_peak"] == pytest.approx(2.0)
    folder = pm.save_pretrained(tmp_path / "ckpt")
    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    assert again.pruning_config == cfg
    assert isinstance(again.pruning_config.allocation, AlphaAllocation)
    torch.testing.assert_close(logits(again, fam.inputs), logits(pm, fam.inputs))
    card = (folder / "README.md").read_text()
    assert "alpha_peak" in card
    np.save(tmp_path / "short.npy", values[:5])
    bad = WandaConfig(sparsity=0.7, allocation=AlphaAllocation(metric_file=str(tmp_path / "short.npy")))
    with pytest.raises(ValueError, match="5.*28|28.*5"):
        prune(make_model("llama")[0], bad, calibration=CALIB, tokenizer=CharTokenizer(), progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pattern": "3:2"}, "3:2"),
        ({"pattern": "2:4", "allocation": "global"}, "allocation must be 'uniform'"),
        ({"allocation": "alpha"}, "allocation must be one of"),
    ],
)
def test_bad_unstructured_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WandaConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": 1.5}, "epsilon must be in"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"metric": "alpha_pk"}, "Unknown ESD metric"),
    ],
)
def test_bad_alpha(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlphaAllocation(**kwargs)


def test_calibration_required():
    with pytest.raises(ValueError, match="needs calibration data"):
        prune(make_model("llama")[0], WandaConfig(), progress=False)


def test_config_json_round_trip_with_allocation():
    cfg = MagnitudeConfig(sparsity=0.7, allocation=OWLAllocation(M=7, lamda=0.1))
    again = PruningConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.allocation, OWLAllocation)


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2"])
@pytest.mark.parametrize("method", sorted(GRAD_METHODS))
@pytest.mark.parametrize("alloc", ["uniform", "global"])
def test_matrix_first_order(family, method, alloc):
    model, fam = make_model(family)
    flags = [p.requires_grad for p in model.parameters()]
    cfg = GRAD_METHODS[method](sparsity=0.5, allocation=alloc)
    pm = prune(model, cfg, calibration=CALIB, tokenizer=CharTokenizer(), progress=False)
    _check(pm, model, 0.5)
    assert [p.requires_grad for p in model.parameters()] == flags  # flags restored
    assert torch.isfinite(logits(pm, fam.inputs)).all()


def test_first_order_nm_and_encoder_refusal():
    model, _ = make_model("llama")
    pm = prune(model, AFRConfig(pattern="2:4"), calibration=CALIB, tokenizer=CharTokenizer(), progress=False)
    assert pm.report.sparsity == pytest.approx(0.5)
    with pytest.raises(ValueError, match="returned no loss"):
        prune(
            make_model("bert")[0], SNIPConfig(), calibration=CALIB, tokenizer=CharTokenizer(), progress=False
        )


def test_snip_scores_use_gradients():
    # SNIP keeps the weights with the largest |W * grad|: check against a direct autograd computation.
    from hf_prune.calibration.data import build_calibration_batches

    model, _ = make_model("llama")
    batches = build_calibration_batches(CALIB, CharTokenizer())
    target = model.model.layers[1].mlp.down_proj
    for b in batches:
        model(**b, labels=b["input_ids"]).loss.backward()
    expected = (target.weight * target.weight.grad).abs().detach()
    model.zero_grad()
    pm = prune(
        model,
        SNIPConfig(sparsity=0.5, target_modules=["layers.1.mlp.down_proj"]),
        calibration=CALIB,
        tokenizer=CharTokenizer(),
        progress=False,
    )
    kept = target.weight.detach() != 0
    assert expected[kept].min() >= expected[~kept].max() - 1e-9
    assert pm.report.layers[0].score["max"] == pytest.approx(float(expected.max()), rel=1e-4)
