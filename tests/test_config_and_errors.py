"""Config serialization and every bad-input path named in the foundation issue."""

from __future__ import annotations

import json
import os

import huggingface_hub
import pytest
import torch
import transformers as T
from families import logits, make_model
from safetensors.torch import load_file, save_file

import hf_prune
from hf_prune import AutoPrunedModelForCausalLM, CustomConfig, MagnitudeConfig, PruningConfig, prune
from hf_prune.version import __version__


def test_config_round_trip(tmp_path):
    cfg = MagnitudeConfig(
        sparsity=0.6, target_modules=["q_proj"], exclude_modules="layers.0.self_attn.q_proj"
    )
    path = cfg.save_pretrained(tmp_path)
    data = json.loads(path.read_text())
    assert data["method"] == "magnitude" and data["hf_prune_version"] == __version__
    again = PruningConfig.from_pretrained(tmp_path)
    assert isinstance(again, MagnitudeConfig) and again == cfg
    assert MagnitudeConfig.from_pretrained(path) == cfg


def test_unknown_keys_from_newer_version_warn(tmp_path):
    data = MagnitudeConfig(sparsity=0.4).to_dict()
    data.update(hf_prune_version="9.0.0", shiny_new_option=3)
    (tmp_path / "pruning_config.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="shiny_new_option"):
        cfg = PruningConfig.from_pretrained(tmp_path)
    assert cfg.sparsity == 0.4


def test_config_from_hub_id_uses_huggingface_hub(tmp_path, monkeypatch):
    MagnitudeConfig(sparsity=0.3).save_pretrained(tmp_path)
    calls = []

    def fake_download(repo_id, filename, **kw):
        calls.append((repo_id, filename, kw.get("revision")))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    cfg = PruningConfig.from_pretrained("someone/llama-magnitude-30", revision="v1")
    assert cfg.sparsity == 0.3 and calls == [("someone/llama-magnitude-30", "pruning_config.json", "v1")]


def test_pruned_model_from_hub_id(tmp_path, monkeypatch):
    model, fam = make_model("llama")
    pm = prune(model, MagnitudeConfig(sparsity=0.5), progress=False)
    folder = pm.save_pretrained(tmp_path / "repo")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(folder))
    again = AutoPrunedModelForCausalLM.from_pretrained("me/llama-mag-50")
    torch.testing.assert_close(logits(again, fam.inputs), logits(pm, fam.inputs))


@pytest.mark.parametrize("bad", [1.2, -0.1, 1.0, float("nan")])
def test_bad_sparsity(bad):
    with pytest.raises(ValueError, match=r"sparsity must (be in \[0.0, 1.0\)|not be NaN)"):
        MagnitudeConfig(sparsity=bad)
    with pytest.raises(TypeError, match="sparsity must be a number"):
        MagnitudeConfig(sparsity="half")


def test_unknown_method_name(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown pruning method 'wandaa'. Known: .*magnitude"):
        PruningConfig.from_dict({"method": "wandaa", "sparsity": 0.5})


def test_unknown_target_modules():
    model, _ = make_model("llama")
    with pytest.raises(ValueError, match=r"target_modules pattern\(s\) \['qproj'\] match no"):
        prune(model, MagnitudeConfig(target_modules=["qproj"]), progress=False)
    with pytest.raises(ValueError, match=r"exclude_modules pattern\(s\) \['lm_haed'\] match no"):
        prune(model, MagnitudeConfig(exclude_modules=["lm_haed"]), progress=False)
    with pytest.raises(TypeError, match="target_modules must be"):
        MagnitudeConfig(target_modules=[1, 2])


def test_unsupported_architecture():
    cfg = T.T5Config(vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)
    model = T.T5ForConditionalGeneration(cfg)
    with pytest.raises(
        ValueError, match=r"Unsupported architecture model_type='t5'. Supported: .*llama.*ArchSpec"
    ):
        prune(model, MagnitudeConfig(), progress=False)
    with pytest.raises(TypeError, match="PruningConfig"):
        prune(make_model("llama")[0], {"method": "magnitude"})


@pytest.fixture
def saved(tmp_path):
    model, fam = make_model("llama")
    pm = prune(model, CustomConfig(), progress=False)
    pm.prune_neurons(0, list(range(10)))
    return pm.save_pretrained(tmp_path / "ckpt"), fam


def test_missing_or_corrupted_pruning_config(saved):
    folder, _ = saved
    (folder / "pruning_config.json").write_text("{ not json")
    with pytest.raises(ValueError, match="pruning config file .* is corrupted"):
        AutoPrunedModelForCausalLM.from_pretrained(folder)
    os.remove(folder / "pruning_config.json")
    with pytest.raises(FileNotFoundError, match="not an hf_prune checkpoint"):
        AutoPrunedModelForCausalLM.from_pretrained(folder)


def test_structure_without_record(saved):
    folder, _ = saved
    data = json.loads((folder / "pruning_config.json").read_text())
    del data["structure"]
    (folder / "pruning_config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no valid 'structure' record"):
        AutoPrunedModelForCausalLM.from_pretrained(folder)


def test_weights_not_matching_structure(saved):
    folder, _ = saved
    state = load_file(str(folder / "model.safetensors"))
    state["model.layers.0.mlp.up_proj.weight"] = torch.zeros(12, 32)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(
        ValueError,
        match=r"do not match the structure .*model.layers.0.mlp.up_proj.weight: file \(12, 32\) vs structure \(10, 32\)",
    ):
        AutoPrunedModelForCausalLM.from_pretrained(folder)


def test_structure_record_edited(saved):
    folder, _ = saved
    data = json.loads((folder / "pruning_config.json").read_text())
    data["structure"]["decoder"]["layers"][1]["intermediate_size"] = 7
    (folder / "pruning_config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="disagrees with the structure|do not match the structure"):
        AutoPrunedModelForCausalLM.from_pretrained(folder)


def test_corrupted_safetensors(saved):
    folder, _ = saved
    (folder / "model.safetensors").write_bytes(b"\x00" * 32)
    with pytest.raises(ValueError, match="corrupted or unreadable"):
        AutoPrunedModelForCausalLM.from_pretrained(folder)


def test_failed_save_leaves_no_partial_folder(tmp_path, monkeypatch):
    model, fam = make_model("llama")
    pm = prune(model, MagnitudeConfig(sparsity=0.5), progress=False)

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr("hf_prune.integration.card.render_card", boom)
    with pytest.raises(OSError, match="simulated"):
        pm.save_pretrained(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp folder is left
    # An existing checkpoint survives a failed overwrite untouched.
    monkeypatch.undo()
    good = pm.save_pretrained(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    monkeypatch.setattr("hf_prune.integration.card.render_card", boom)
    with pytest.raises(OSError):
        pm.save_pretrained(good)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_save_overwrites_existing_checkpoint(tmp_path):
    model, fam = make_model("llama")
    pm = prune(model, MagnitudeConfig(sparsity=0.2), progress=False)
    folder = pm.save_pretrained(tmp_path / "c")
    pm2 = prune(make_model("llama", seed=1)[0], MagnitudeConfig(sparsity=0.6), progress=False)
    pm2.save_pretrained(folder)
    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    assert again.pruning_config.sparsity == 0.6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_no_pickle_on_load(saved, monkeypatch):
    folder, fam = saved

    def forbidden(*a, **k):
        raise AssertionError("torch.load must not be called when loading a checkpoint")

    monkeypatch.setattr(torch, "load", forbidden)
    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    assert again.report.params_after > 0


def test_model_card_contents(saved):
    folder, _ = saved
    card = huggingface_hub.ModelCard.load(folder / "README.md")
    assert card.data.library_name == "hf_prune"
    assert "pruning:custom" in card.data.tags
    text = card.text
    assert "How to load" in text and "AutoPrunedModelForCausalLM" in text
    assert "None" not in text
    assert "| decoder | 4 | 10, 48, 48, 48 |" in text


def test_auto_class_prunes_plain_folder(tmp_path):
    model, fam = make_model("llama")
    model.save_pretrained(tmp_path / "dense")
    pm = AutoPrunedModelForCausalLM.from_pretrained(
        tmp_path / "dense", pruning_config=MagnitudeConfig(sparsity=0.5), progress=False
    )
    assert pm.report.sparsity == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(FileNotFoundError, match="not an hf_prune checkpoint"):
        AutoPrunedModelForCausalLM.from_pretrained(tmp_path / "dense")
    generic = hf_prune.AutoPrunedModel.from_pretrained(
        tmp_path / "dense", pruning_config=MagnitudeConfig(sparsity=0.25), progress=False
    )
    assert type(generic.base_model).__name__ == "LlamaModel"


def test_sharded_checkpoint_round_trip(tmp_path):
    model, fam = make_model("llama")
    pm = prune(model, CustomConfig(), progress=False)
    pm.prune_neurons(2, list(range(5)))
    folder = pm.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    torch.testing.assert_close(logits(again, fam.inputs), logits(pm, fam.inputs))
