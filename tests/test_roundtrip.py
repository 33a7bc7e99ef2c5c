"""Save -> reload round trips for every family x every kind of structural change."""

from __future__ import annotations

import json

import pytest
import torch
from families import FAMILIES, logits, make_model

import hf_prune
from hf_prune import CustomConfig, MagnitudeConfig, prune
from hf_prune.arch import get_arch, get_layers, head_geometry, param_count

KINDS = ["unstructured", "uniform_mlp", "uniform_width", "nonuniform_width", "depth", "width_depth"]


def _apply(kind: str, model, fam):
    if kind == "unstructured":
        return prune(model, MagnitudeConfig(sparsity=0.5), progress=False)
    pm = prune(model, CustomConfig(description=kind), progress=False)
    arch = get_arch(model)
    for spec in arch.stacks:
        n = len(get_layers(model, spec))
        geo = head_geometry(model, spec, 0)
        if kind == "uniform_mlp":
            for i in range(n):
                pm.prune_neurons(i, list(range(0, 48, 3)), stack=spec.name)  # 48 -> 16 everywhere
        if kind in ("uniform_width", "width_depth"):
            for i in range(n):
                pm.prune_neurons(i, list(range(0, 48, 2)), stack=spec.name)  # 48 -> 24 everywhere
                if geo.num_kv_heads < geo.num_heads:
                    pm.prune_heads(i, [0, 1], stack=spec.name)  # drop the second KV group
                else:
                    pm.prune_heads(i, [1, 3], stack=spec.name)
        if kind == "nonuniform_width":
            for i in range(n):
                pm.prune_neurons(i, list(range(8 + 4 * i)), stack=spec.name)
            pm.prune_heads(0, [0, 1] if geo.num_kv_heads < geo.num_heads else [0, 2, 3], stack=spec.name)
        if kind in ("depth", "width_depth"):
            pm.remove_layers([1], stack=spec.name)
    return pm


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_roundtrip(family, kind, tmp_path):
    model, fam = make_model(family)
    pm = _apply(kind, model, fam)
    expected = logits(pm, fam.inputs)
    out = pm.save_pretrained(tmp_path / "ckpt")
    auto = getattr(hf_prune, fam.pruned_auto)
    again = auto.from_pretrained(out)
    assert isinstance(again, hf_prune.PrunedModel)
    torch.testing.assert_close(logits(again, fam.inputs), expected, atol=1e-5, rtol=1e-5)
    assert param_count(again.base_model) == pm.report.params_after == again.report.params_after
    assert again.report.to_dict() == pm.report.to_dict()
    # Plain transformers: correct for uniform changes, a clear refusal for per-layer widths.
    cfg = json.loads((out / "config.json").read_text())
    sub = [cfg] + [v for v in cfg.values() if isinstance(v, dict)]
    heterogeneous = any("per_layer_config" in s for s in sub)
    if kind == "nonuniform_width" or (
        kind in ("uniform_width", "width_depth") and family not in ("llama", "mistral", "qwen2", "gemma")
    ):
        # Non-uniform widths, and uniform head counts in families whose config derives head_dim from
        # the head count, can only be described by per_layer_config.
        assert heterogeneous
        with pytest.raises(Exception, match="per-layer attribute"):
            fam.auto.from_pretrained(out)
    else:
        assert not heterogeneous
        plain = fam.auto.from_pretrained(out).eval()
        torch.testing.assert_close(logits(plain, fam.inputs), expected, atol=1e-5, rtol=1e-5)
