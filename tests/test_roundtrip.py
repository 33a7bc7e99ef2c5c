"""Save -> reload round trips for every family x every kind of structural change."""

from __future__ import annotations

import json

import pytest
import torch
from families import FAMILIES, logits, make_model, save_tiny_llava

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


# ------------------------------------------------------------------ the tokenizer travels with the model
TOK_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def push(self, x):\n        self.items.append(x)\n",
    "for i in range(10):\n    print(i * i)\n",
    "import os\nimport sys\n\nprint(os.getcwd(), sys.argv)\n",
] * 4
PROBE = "def stack_push(items, x):\n    items.append(x)  # print(os.getcwd())"


@pytest.fixture(scope="module")
def bpe_tokenizer():
    from hf_prune.zoo.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(TOK_TEXTS, vocab_size=300, model_max_length=64)


def _bpe_llama(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def _tokenizer_files(folder):
    return {p.name for p in folder.iterdir()} & {"tokenizer.json", "tokenizer_config.json"}


def test_prune_remembers_tokenizer_and_save_writes_it(bpe_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    from hf_prune import WandaConfig

    calibration = hf_prune.CalibrationConfig(dataset=TOK_TEXTS, nsamples=2, seqlen=16)
    pm = prune(
        _bpe_llama(bpe_tokenizer),
        WandaConfig(sparsity=0.5),
        calibration=calibration,
        tokenizer=bpe_tokenizer,
        progress=False,
    )
    assert pm.tokenizer is bpe_tokenizer
    out = pm.save_pretrained(tmp_path / "ckpt")  # no tokenizer= here
    assert _tokenizer_files(out) == {"tokenizer.json", "tokenizer_config.json"}
    reloaded = AutoTokenizer.from_pretrained(out)
    expected = bpe_tokenizer(PROBE)["input_ids"]
    assert len(expected) > 5 and reloaded(PROBE)["input_ids"] == expected
    # The card's loading snippet names the tokenizer the folder now ships.
    assert "AutoTokenizer.from_pretrained" in (out / "README.md").read_text()

    # An explicit tokenizer= to save wins over the remembered one (and is remembered from then on).
    from hf_prune.zoo.tokenizer import train_bpe_tokenizer

    other = train_bpe_tokenizer(["zebra quagga okapi " * 8, "xylophone yak " * 8] * 4, vocab_size=280)
    assert other(PROBE)["input_ids"] != expected
    out2 = pm.save_pretrained(tmp_path / "ckpt2", tokenizer=other)
    assert AutoTokenizer.from_pretrained(out2)(PROBE)["input_ids"] == other(PROBE)["input_ids"]
    assert pm.tokenizer is other


def test_unsaveable_tokenizer_is_refused_explicitly_and_skipped_when_remembered(tmp_path):
    from families import CharTokenizer

    model, _ = make_model("llama")
    pm = prune(model, MagnitudeConfig(sparsity=0.5), tokenizer=CharTokenizer(), progress=False)
    assert isinstance(pm.tokenizer, CharTokenizer)
    out = pm.save_pretrained(tmp_path / "ckpt")  # a stand-in without save_pretrained: weights only
    assert _tokenizer_files(out) == set() and (out / "model.safetensors").is_file()
    with pytest.raises(TypeError, match="save_pretrained"):
        pm.save_pretrained(tmp_path / "ckpt2", tokenizer=CharTokenizer())
    assert not (tmp_path / "ckpt2").exists()


def test_auto_class_loads_tokenizer_for_calibration_and_saves_it(bpe_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    from hf_prune import AutoPrunedModelForCausalLM, WandaConfig
    from hf_prune.calibration.data import write_texts

    dense = tmp_path / "dense"
    _bpe_llama(bpe_tokenizer).save_pretrained(dense)
    bpe_tokenizer.save_pretrained(dense)
    calib = write_texts(TOK_TEXTS, tmp_path / "calib.txt")

    pm = AutoPrunedModelForCausalLM.from_pretrained(
        dense,
        pruning_config=WandaConfig(sparsity=0.5),
        calibration=hf_prune.CalibrationConfig(dataset=str(calib), nsamples=2, seqlen=16),
        progress=False,
    )
    expected = bpe_tokenizer(PROBE)["input_ids"]
    assert pm.tokenizer is not None and pm.tokenizer(PROBE)["input_ids"] == expected
    assert pm.report.sparsity == pytest.approx(0.5, abs=0.01)
    out = pm.save_pretrained(tmp_path / "pruned")
    assert _tokenizer_files(out) == {"tokenizer.json", "tokenizer_config.json"}
    assert AutoTokenizer.from_pretrained(out)(PROBE)["input_ids"] == expected

    # Without calibration nothing is loaded (no tokenizer, no extra download).
    plain = AutoPrunedModelForCausalLM.from_pretrained(dense, pruning_config=MagnitudeConfig(sparsity=0.5))
    assert plain.tokenizer is None
    assert _tokenizer_files(plain.save_pretrained(tmp_path / "no_tok")) == set()


def test_image_text_auto_class_remembers_the_processor(bpe_tokenizer, tmp_path):
    import transformers as T

    from hf_prune import AutoPrunedModelForImageTextToText, WandaConfig
    from hf_prune.calibration.data import write_texts

    dense = tmp_path / "dense"
    save_tiny_llava(bpe_tokenizer, dense, max_position_embeddings=64)
    calib = write_texts(TOK_TEXTS, tmp_path / "calib.txt")

    pm = AutoPrunedModelForImageTextToText.from_pretrained(
        dense,
        # Text-only calibration reaches the language model only.
        pruning_config=WandaConfig(sparsity=0.5, exclude_modules=[r".*vision_tower.*"]),
        calibration=hf_prune.CalibrationConfig(dataset=str(calib), nsamples=2, seqlen=16),
        progress=False,
    )
    assert isinstance(pm.tokenizer, T.LlavaProcessor)
    out = pm.save_pretrained(tmp_path / "pruned")
    again = T.AutoProcessor.from_pretrained(out)
    assert isinstance(again, T.LlavaProcessor)
    assert again.tokenizer(PROBE)["input_ids"] == bpe_tokenizer(PROBE)["input_ids"]
    assert "AutoProcessor.from_pretrained" in (out / "README.md").read_text()
