"""Pruning a model that accelerate offloaded to disk (device_map="auto" under a memory cap)."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from families import CharTokenizer
from test_unstructured import CALIB

from hf_prune import (
    AlphaAllocation,
    AutoPrunedModelForCausalLM,
    MagnitudeConfig,
    SNIPConfig,
    SparseGPTConfig,
    WandaConfig,
    prune,
)


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory):
    torch.manual_seed(0)
    cfg = T.LlamaConfig(
        vocab_size=96,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    folder = tmp_path_factory.mktemp("dense") / "m"
    T.AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    return folder


def _offloaded(folder, tmp_path):
    model = T.AutoModelForCausalLM.from_pretrained(
        folder, device_map="auto", max_memory={"cpu": "400KB"}, offload_folder=str(tmp_path / "offload")
    )
    assert "disk" in set(model.hf_device_map.values())  # the cap really forced offloading
    return model


@pytest.mark.parametrize("cls", [MagnitudeConfig, WandaConfig, SparseGPTConfig])
def test_offloaded_pruning_equals_in_memory(dense_folder, tmp_path, cls):
    x = torch.randint(3, 90, (1, 16), generator=torch.Generator().manual_seed(0))
    in_memory = prune(
        T.AutoModelForCausalLM.from_pretrained(dense_folder),
        cls(sparsity=0.5),
        calibration=CALIB,
        tokenizer=CharTokenizer(),
        progress=False,
    )
    offloaded = prune(
        _offloaded(dense_folder, tmp_path),
        cls(sparsity=0.5),
        calibration=CALIB,
        tokenizer=CharTokenizer(),
        progress=False,
    )
    with torch.no_grad():
        expected = in_memory(input_ids=x).logits
        torch.testing.assert_close(offloaded(input_ids=x).logits, expected, atol=1e-5, rtol=1e-5)
    assert offloaded.report.sparsity == pytest.approx(in_memory.report.sparsity)
    assert offloaded.report.nonzero_after == in_memory.report.nonzero_after
    folder = offloaded.save_pretrained(tmp_path / "pruned")
    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=x).logits, expected, atol=1e-5, rtol=1e-5)


def test_offloaded_unsupported_paths_are_clear(dense_folder, tmp_path):
    with pytest.raises(ValueError, match="full backward pass"):
        prune(
            _offloaded(dense_folder, tmp_path),
            SNIPConfig(),
            calibration=CALIB,
            tokenizer=CharTokenizer(),
            progress=False,
        )
    with pytest.raises(ValueError, match="needs precomputed metrics"):
        prune(
            _offloaded(dense_folder, tmp_path), MagnitudeConfig(allocation=AlphaAllocation()), progress=False
        )
