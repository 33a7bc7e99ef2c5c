"""ONNX export of every kind of pruning result, checked against PyTorch in ONNX Runtime."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from families import VOCAB, CharTokenizer, make_model

pytest.importorskip("onnxruntime", reason="the `onnx` extra (onnx, onnxscript, onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the `onnx` extra (onnx, onnxscript, onnxruntime) is not installed")

from hf_prune import (
    AngularDepthConfig,
    CalibrationConfig,
    StructuredMagnitudeConfig,
    WandaConfig,
    prune,
)
from hf_prune.integration.export.onnx import (
    compare_onnx_latency,
    export_onnx,
    measure_onnx_latency,
    onnx_logits,
    onnx_session,
)
from hf_prune.surgery.masks import has_mask, masked_modules

CALIB = CalibrationConfig(
    dataset=[f"calibration text number {i} with some words" * 5 for i in range(20)],
    nsamples=4,
    seqlen=16,
    batch_size=2,
)
KINDS = {
    "unstructured": WandaConfig(sparsity=0.5),
    "uniform_width": StructuredMagnitudeConfig(sparsity=0.5, scope="mlp", round_to=8),
    "nonuniform_width": StructuredMagnitudeConfig(
        sparsity=0.3, scope="both", allocation="global", round_to=8, min_keep=2
    ),
    "depth": AngularDepthConfig(num_layers=2, protect_first=0, protect_last=0),
}


def _prune(family: str, kind: str):
    model, fam = make_model(family)
    return prune(model, KINDS[kind], calibration=CALIB, tokenizer=CharTokenizer(), progress=False), fam


def _ids(batch: int = 3, seq: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _torch_logits(model, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each kind pruned and exported once (a tiny Llama); shared by the checks below."""
    out = {}
    for kind in KINDS:
        pm, _ = _prune("llama", kind)
        before = _torch_logits(pm, _ids())
        folder = export_onnx(pm, tmp_path_factory.mktemp("onnx") / kind)
        out[kind] = (pm, folder, before)
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_ort_logits_match_pytorch(exported, kind):
    pm, folder, _ = exported[kind]
    # A batch and sequence length other than the traced [2, 8]: the exported axes are dynamic.
    ids = _ids()
    got = onnx_logits(folder, ids)
    want = _torch_logits(pm, ids)
    assert got.shape == want.shape == (3, 7, VOCAB)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # A padded batch runs through the exported attention mask too.
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    got = onnx_logits(folder, {"input_ids": ids, "attention_mask": mask})
    want = _torch_logits(pm, ids, mask)
    torch.testing.assert_close(got[1:], want[1:], atol=1e-4, rtol=0)
    torch.testing.assert_close(got[0, 3:], want[0, 3:], atol=1e-4, rtol=0)


def test_export_writes_structure_and_files(exported):
    _, folder, _ = exported["nonuniform_width"]
    assert {"model.onnx", "model.onnx.data", "config.json", "export.json"} <= {
        p.name for p in folder.iterdir()
    }
    config = json.loads((folder / "config.json").read_text())
    per_layer = config["per_layer_config"]
    widths = {config["intermediate_size"]} | {
        v["intermediate_size"] for v in per_layer.values() if "intermediate_size" in v
    }
    assert len(widths) > 1, "global allocation should leave different MLP widths per layer"
    pm, folder, _ = exported["depth"]
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 2
    assert len(pm.base_model.model.layers) == 2
    # No staging folders are left next to the export.
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_export_keeps_the_callers_masks_live(exported):
    pm, folder, before = exported["unstructured"]
    masked = masked_modules(pm.base_model)
    assert masked and all(has_mask(m) for _, m in masked)
    # The model still computes what it did before the export (the copy's masks were baked, not these).
    torch.testing.assert_close(_torch_logits(pm, _ids()), before)
    pm.undo_masks()  # still reversible
    assert not masked_modules(pm.base_model)
    # The exported weights carry the zeros: every masked projection is a (possibly transposed, renamed
    # by the optimiser) 2-D initializer about half of which is zero.
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(folder / "model.onnx")).graph
    sparse = [
        t for t in graph.initializer if len(t.dims) == 2 and (numpy_helper.to_array(t) == 0).mean() >= 0.45
    ]
    assert len(sparse) == len(masked)


def test_gpt2_width_export(tmp_path):
    pm, _ = _prune("gpt2", "uniform_width")
    folder = pm.export_onnx(tmp_path / "gpt2", check=False)  # the PrunedModel wrapper
    ids = _ids()
    torch.testing.assert_close(onnx_logits(folder, ids), _torch_logits(pm, ids), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_plain_model_export_and_overwrite(tmp_path):
    model, _ = make_model("llama")
    target = tmp_path / "dense"
    export_onnx(model, target)
    with pytest.raises(ValueError, match="overwrite=True"):
        export_onnx(model, target)
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)
    export_onnx(model, target, overwrite=True)
    ids = _ids()
    torch.testing.assert_close(onnx_logits(target, ids), _torch_logits(model, ids), atol=1e-4, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense"]


def test_latency_helpers(exported):
    _, dense_like, _ = exported["unstructured"]
    _, small, _ = exported["depth"]
    one = measure_onnx_latency(small, seqlen=8, repeats=3, warmup=1, threads=1)
    assert one["median_ms"] > 0 and one["min_ms"] <= one["median_ms"] <= one["max_ms"]
    assert one["threads"] == 1 and one["seqlen"] == 8 and one["runtime"] == "onnxruntime"
    both = compare_onnx_latency(dense_like, small, seqlen=8, repeats=3, warmup=0, threads=1)
    assert both["speedup"] == pytest.approx(both["baseline_ms"] / both["pruned_ms"])
    with pytest.raises(ValueError, match="repeats=0"):
        measure_onnx_latency(small, repeats=0)
    with pytest.raises(ValueError, match="threads=0"):
        onnx_session(small, threads=0)


def test_bad_inputs(tmp_path, exported):
    model, _ = make_model("llama")
    with pytest.raises(TypeError, match="PreTrainedModel or an hf_prune PrunedModel"):
        export_onnx("meta-llama/Llama-3.2-1B", tmp_path / "x")
    with pytest.raises(ValueError, match="rtol=-1"):
        export_onnx(model, tmp_path / "x", rtol=-1)
    with pytest.raises(ValueError, match="opset=9"):
        export_onnx(model, tmp_path / "x", opset=9)
    with pytest.raises(TypeError, match="sample_inputs values must be tensors"):
        export_onnx(model, tmp_path / "x", sample_inputs={"input_ids": [[1, 2]]})
    with pytest.raises(ValueError, match="no ONNX model"):
        onnx_logits(tmp_path / "missing", _ids())
    _, folder, _ = exported["depth"]
    with pytest.raises(ValueError, match="needs input 'input_ids'"):
        onnx_logits(folder, {"attention_mask": torch.ones(1, 4, dtype=torch.long)})
    assert not (tmp_path / "x").exists()


def test_unfaithful_export_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    import hf_prune.integration.export.onnx as onnx_export

    model, _ = make_model("llama")
    real = onnx_export.onnx_logits
    monkeypatch.setattr(onnx_export, "onnx_logits", lambda *a, **k: real(*a, **k) + 0.01)
    with pytest.raises(RuntimeError, match="not faithful"):
        export_onnx(model, tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []  # the staging folder is removed, no target was created


def test_missing_extra_names_it(tmp_path, monkeypatch):
    model, _ = make_model("llama")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ImportError, match=r"hf_prune\[onnx\]"):
        export_onnx(model, tmp_path / "x")
    with pytest.raises(ImportError, match=r"hf_prune\[onnx\]"):
        onnx_session(tmp_path)
