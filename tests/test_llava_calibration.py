"""Image-text (LLaVA) calibration: loading, processor encoding, and calibrated pruning with images."""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers as T
from families import save_tiny_llava
from PIL import Image

import hf_prune
from hf_prune import (
    AutoPrunedModelForImageTextToText,
    CalibrationConfig,
    SparseGPTConfig,
    StructuredAFRConfig,
    StructuredSNIPConfig,
    StructuredWandaConfig,
    WandaConfig,
)
from hf_prune.arch import get_arch
from hf_prune.calibration.data import (
    build_calibration_batches,
    is_image_text,
    load_image_text_samples,
    write_texts,
)
from hf_prune.calibration.runner import capture_block_inputs

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "white": (240, 240, 240)}
CAPTIONS = [f"a {c} square on black" for c in COLOURS] + [f"a {c} stripe" for c in COLOURS]
IMAGE_TOKENS = 16  # 8x8 images, patch 2, CLS dropped ("default" feature selection)


def _render(colour: str, stripe: bool, seed: int) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (8, 8), (0, 0, 0))
    x0, y0 = rng.randint(0, 3), rng.randint(0, 3)
    for x in range(8):
        for y in range(8):
            inside = (x0 <= x < x0 + 4) if stripe else (x0 <= x < x0 + 4 and y0 <= y < y0 + 4)
            if inside:
                img.putpixel((x, y), COLOURS[colour])
    return img


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    """A saved tiny LLaVA with its processor, and a folder of PNGs + captions.jsonl."""
    from hf_prune.zoo.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("llava")
    tokenizer = train_bpe_tokenizer(CAPTIONS * 4, vocab_size=300, model_max_length=64)
    dense = root / "dense"
    processor = save_tiny_llava(tokenizer, dense)

    data = root / "images"
    (data / "img").mkdir(parents=True)
    rows, pil, texts = [], [], []
    for i in range(12):
        colour = list(COLOURS)[i % 4]
        stripe = i % 8 >= 4
        image = _render(colour, stripe, seed=i)
        image.save(data / "img" / f"{i}.png")
        caption = f"a {colour} {'stripe' if stripe else 'square on black'}"
        rows.append({"image": f"img/{i}.png", "text": caption})
        pil.append(image)
        texts.append(caption)
    (data / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        "dense": dense,
        "processor": processor,
        "tokenizer": tokenizer,
        "data": data,
        "pil": pil,
        "texts": texts,
    }


def _image_count(batch: dict[str, torch.Tensor], image_id: int) -> list[int]:
    return [int(n) for n in (batch["input_ids"] == image_id).sum(dim=1)]


def test_folder_and_jsonl_load_and_encode_with_image_tokens(llava):
    proc = llava["processor"]
    image_id = proc.tokenizer.convert_tokens_to_ids("<image>")
    folder = CalibrationConfig(dataset=str(llava["data"]), nsamples=5, seqlen=32, seed=1)
    jsonl = CalibrationConfig(dataset=str(llava["data"] / "captions.jsonl"), nsamples=5, seqlen=32, seed=1)
    assert is_image_text(folder) and is_image_text(jsonl)
    assert not is_image_text(CalibrationConfig(dataset=["plain text"]))
    assert len(load_image_text_samples(folder)) == 12

    batches = build_calibration_batches(folder, proc)
    assert sum(b["input_ids"].shape[0] for b in batches) == 5  # nsamples limits
    for b in batches:
        assert b["pixel_values"].shape == (b["input_ids"].shape[0], 3, 8, 8)
        assert _image_count(b, image_id) == [IMAGE_TOKENS] * b["input_ids"].shape[0]
        assert bool(b["attention_mask"].all())  # equal-length groups: no padding
    same = build_calibration_batches(jsonl, proc)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, same, strict=True))

    # The seed picks the samples: another seed picks (and orders) other ones.
    def picked(seed: int) -> list[torch.Tensor]:
        cfg = CalibrationConfig(dataset=str(llava["data"]), nsamples=5, seqlen=32, seed=seed, batch_size=1)
        return [b["pixel_values"] for b in build_calibration_batches(cfg, proc)]

    assert not all(torch.equal(a, b) for a, b in zip(picked(1), picked(2), strict=True))

    # Long captions are cut after seqlen text tokens; image tokens are never cut.
    short = CalibrationConfig(dataset=str(llava["data"]), nsamples=3, seqlen=2)
    for b in build_calibration_batches(short, proc):
        assert b["input_ids"].shape[1] == IMAGE_TOKENS + 2
        assert _image_count(b, image_id) == [IMAGE_TOKENS] * b["input_ids"].shape[0]


def test_datasets_dataset_with_pil_images(llava):
    import datasets

    ds = datasets.Dataset.from_dict({"image": llava["pil"], "caption": llava["texts"]})
    cfg = CalibrationConfig(dataset=ds, nsamples=4, seqlen=32, batch_size=4)
    assert is_image_text(cfg)
    samples = load_image_text_samples(cfg)
    assert [s.text for s in samples] == llava["texts"]  # "caption" is found when "text" is absent
    batches = build_calibration_batches(cfg, llava["processor"])
    image_id = llava["processor"].tokenizer.convert_tokens_to_ids("<image>")
    assert sum(b["pixel_values"].shape[0] for b in batches) == 4
    assert all(set(_image_count(b, image_id)) == {IMAGE_TOKENS} for b in batches)


def test_image_features_reach_language_model_block_0(llava):
    model = T.AutoModelForImageTextToText.from_pretrained(llava["dense"]).eval()
    cfg = CalibrationConfig(dataset=str(llava["data"]), nsamples=2, seqlen=16, batch_size=1)
    batches = build_calibration_batches(cfg, llava["processor"])
    stack = get_arch(model).stack("language_model")
    with torch.no_grad():
        captured = capture_block_inputs(model, stack, batches)
        image_id = model.config.image_token_id
        placeholder = model.get_input_embeddings()(torch.tensor([image_id]))[0]
    for (args, kwargs), batch in zip(captured, batches, strict=True):
        hidden = args[0] if args else kwargs["hidden_states"]
        at_images = hidden[batch["input_ids"] == image_id]
        assert at_images.shape[0] == IMAGE_TOKENS
        # Projected image features, not the <image> embedding, sit at the image positions...
        assert not torch.allclose(at_images, placeholder.expand_as(at_images), atol=1e-4)
        # ...and they differ between patches (the vision tower saw the picture).
        assert at_images.std(dim=0).mean() > 1e-4


def _kept_neurons(pruned: T.PreTrainedModel, dense: T.PreTrainedModel) -> list[list[int]]:
    """Recover each language-model layer's kept neuron indices by matching up_proj rows."""
    out = []
    for p_layer, d_layer in zip(
        pruned.model.language_model.layers, dense.model.language_model.layers, strict=True
    ):
        d_rows = d_layer.mlp.up_proj.weight
        kept = [int((d_rows == row).all(dim=1).nonzero()[0]) for row in p_layer.mlp.up_proj.weight]
        out.append(sorted(kept))
    return out


def test_structured_wanda_uses_image_statistics_and_round_trips(llava, tmp_path):
    dense = T.AutoModelForImageTextToText.from_pretrained(llava["dense"]).eval()
    cfg = StructuredWandaConfig(sparsity=0.5, scope="mlp")
    image_text = AutoPrunedModelForImageTextToText.from_pretrained(
        llava["dense"],
        pruning_config=cfg,
        calibration=CalibrationConfig(dataset=str(llava["data"]), nsamples=8, seqlen=16),
        progress=False,
    )
    text_file = write_texts(llava["texts"] * 4, tmp_path / "captions.txt")
    text_only = AutoPrunedModelForImageTextToText.from_pretrained(
        llava["dense"],
        pruning_config=cfg,
        calibration=CalibrationConfig(dataset=str(text_file), nsamples=8, seqlen=16),
        progress=False,
    )
    kept_image, kept_text = (
        _kept_neurons(image_text.base_model, dense),
        _kept_neurons(text_only.base_model, dense),
    )
    assert all(len(k) == 24 for k in kept_image + kept_text)
    assert kept_image != kept_text  # the image tokens changed the neuron scores

    out = image_text.save_pretrained(tmp_path / "pruned")
    again = AutoPrunedModelForImageTextToText.from_pretrained(out).eval()
    batch = build_calibration_batches(
        CalibrationConfig(dataset=str(llava["data"]), nsamples=1, seqlen=16), llava["processor"]
    )[0]
    with torch.no_grad():
        expected = image_text(**batch).logits
        got = again(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", [WandaConfig, SparseGPTConfig])
def test_unstructured_methods_with_images(llava, method):
    calib = CalibrationConfig(dataset=str(llava["data"]), nsamples=4, seqlen=16)
    pm = AutoPrunedModelForImageTextToText.from_pretrained(
        llava["dense"], pruning_config=method(sparsity=0.5), calibration=calib, progress=False
    )
    rows = [r for r in pm.report.layers if r.sparsity_measured is not None]
    # Image-text calibration reaches the vision tower too, so both stacks are pruned.
    assert {r.stack for r in rows} == {"vision_tower", "language_model"}
    assert rows and all(abs(r.sparsity_measured - 0.5) < 0.02 for r in rows)
    batch = build_calibration_batches(calib, llava["processor"])[0]
    with torch.no_grad():
        assert torch.isfinite(pm(**batch).logits).all()


@pytest.mark.parametrize("method", [StructuredSNIPConfig, StructuredAFRConfig])
def test_gradient_structured_methods_with_images(llava, method):
    """SNIP / AFR take the LM loss on the caption tokens (image tokens are not labels)."""
    calib = CalibrationConfig(dataset=str(llava["data"]), nsamples=4, seqlen=16)
    dense = T.AutoModelForImageTextToText.from_pretrained(llava["dense"]).eval()
    pm = AutoPrunedModelForImageTextToText.from_pretrained(
        llava["dense"], pruning_config=method(sparsity=0.25, scope="mlp"), calibration=calib, progress=False
    )
    assert [r.kept_units["neurons"] for r in pm.report.layers] == [36, 36]
    assert {r.stack for r in pm.report.layers} == {"language_model"}
    # The kept neurons are a real choice, not the first 36 of each layer.
    assert any(k != list(range(36)) for k in _kept_neurons(pm.base_model, dense))
    batch = build_calibration_batches(calib, llava["processor"])[0]
    with torch.no_grad():
        assert torch.isfinite(pm(**batch).logits).all()


def test_bad_image_text_inputs(llava, tmp_path):
    proc = llava["processor"]
    data = llava["data"]
    # Unknown image / text columns name the field.
    with pytest.raises(ValueError, match="no image field 'picture'.*image_column"):
        load_image_text_samples(CalibrationConfig(dataset=str(data), image_column="picture"))
    with pytest.raises(ValueError, match="no text column 'alt'.*text_column"):
        load_image_text_samples(CalibrationConfig(dataset=str(data), text_column="alt"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "missing.png", "text": "a red square"}) + "\n")
    with pytest.raises(ValueError, match="image='missing.png'.*does not exist"):
        load_image_text_samples(CalibrationConfig(dataset=str(bad)))
    import datasets

    ds = datasets.Dataset.from_dict({"image": llava["pil"][:2], "words": ["a", "b"]})
    with pytest.raises(ValueError, match="neither a 'text' nor a 'caption' column"):
        load_image_text_samples(CalibrationConfig(dataset=ds))
    with pytest.raises(ValueError, match="no image column 'img'"):
        load_image_text_samples(CalibrationConfig(dataset=ds, image_column="img", text_column="words"))
    with pytest.raises(ValueError, match="image_column='image' needs image-text data"):
        CalibrationConfig(dataset=["text"], image_column="image")
    # Without a processor: a plain tokenizer, or nothing at all.
    calib = CalibrationConfig(dataset=str(data), nsamples=2, seqlen=8)
    with pytest.raises(ValueError, match="image-text calibration needs a processor.*AutoProcessor"):
        build_calibration_batches(calib, proc.tokenizer)
    model = T.AutoModelForImageTextToText.from_pretrained(llava["dense"]).eval()
    with pytest.raises(
        ValueError, match="needs a processor \\(got None\\).*AutoPrunedModelForImageTextToText"
    ):
        hf_prune.prune(model, StructuredWandaConfig(sparsity=0.5), calibration=calib, progress=False)


def test_vision_tower_width_pruning_keeps_the_feature_layer(llava, tmp_path):
    # Width pruning of the vision tower's MLP (named explicitly) with image-text calibration: the
    # tower keeps its depth, so vision_feature_layer still selects the same layer.
    dense = T.AutoModelForImageTextToText.from_pretrained(llava["dense"]).eval()
    cfg = StructuredWandaConfig(sparsity=0.5, scope="mlp", target_modules=[r".*vision_tower.*mlp\.fc1"])
    pm = AutoPrunedModelForImageTextToText.from_pretrained(
        llava["dense"],
        pruning_config=cfg,
        calibration=CalibrationConfig(dataset=str(llava["data"]), nsamples=8, seqlen=16),
        progress=False,
    )
    tower = pm.base_model.model.vision_tower.encoder.layers
    assert [layer.mlp.fc1.out_features for layer in tower] == [24, 24]
    lm = pm.base_model.model.language_model.layers
    assert [layer.mlp.up_proj.out_features for layer in lm] == [48, 48]  # language model untouched
    assert pm.base_model.config.vision_feature_layer == dense.config.vision_feature_layer == -1
    assert len(tower) == len(dense.model.vision_tower.encoder.layers)
    out = pm.save_pretrained(tmp_path / "vision-pruned")
    again = AutoPrunedModelForImageTextToText.from_pretrained(out).eval()
    batch = build_calibration_batches(
        CalibrationConfig(dataset=str(llava["data"]), nsamples=1, seqlen=16), llava["processor"]
    )[0]
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, pm(**batch).logits, atol=1e-5, rtol=1e-5)
