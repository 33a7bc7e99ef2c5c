"""Latency look-up tables: measured per kept unit count on a one-block copy, JSON round trip, shape checks."""

from __future__ import annotations

import json

import pytest
import torch
from families import make_model

from hf_prune.evaluation.lut import check_lut, load_lut, lut_shape, measure_latency_lut, save_lut


@pytest.fixture(autouse=True)
def one_thread():
    # Many tiny forwards on 2 shared cores: two intra-op threads oversubscribe and slow each call ~100x.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_lut_measures_every_count_and_round_trips(family, tmp_path):
    model, _ = make_model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lut = measure_latency_lut(
        model, seq_len=16, repeats=2, warmup=1, neuron_counts=[12, 24, 48], progress=False
    )
    units = 2 if family == "llama" else 4  # llama: 2 KV groups of 2 query heads
    assert lut["head_unit"] == ("kv_group" if family == "llama" else "head")
    assert sorted(lut["mha"]) == list(range(units + 1)) and sorted(lut["ffn"]) == [0, 12, 24, 48]
    assert lut["mha"][0] == 0.0 and lut["ffn"][0] == 0.0
    assert all(v > 0 for k, v in {**lut["mha"], **lut["ffn"]}.items() if k)
    assert lut["shape"] == lut_shape(model)
    # The model itself is untouched (a one-block copy is measured).
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    path = save_lut(lut, tmp_path / "lut")
    assert path.name == "latency_lut.json" and "mha" in json.loads(path.read_text())
    again = load_lut(tmp_path / "lut")
    assert again["mha"] == lut["mha"] and again["ffn"] == lut["ffn"]
    check_lut(again, model)


def test_lut_from_another_shape_is_refused(tmp_path):
    bert, _ = make_model("bert")
    llama, _ = make_model("llama")
    lut = measure_latency_lut(bert, seq_len=8, repeats=1, warmup=0, neuron_counts=[48], progress=False)
    with pytest.raises(ValueError, match="another model shape.*num_kv_heads"):
        check_lut(lut, llama)
    with pytest.raises(ValueError, match="outside the block's 4 attention units / 48 MLP neurons"):
        measure_latency_lut(bert, head_counts=[5], progress=False)
    with pytest.raises(FileNotFoundError, match="hf-prune lut"):
        load_lut(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a latency table"):
        load_lut(tmp_path / "bad.json")


def test_lut_command(tmp_path, capsys):
    from hf_prune.cli import main

    model, _ = make_model("bert")
    model.save_pretrained(tmp_path / "bert")
    rc = main(
        [
            "lut",
            str(tmp_path / "bert"),
            "-o",
            str(tmp_path / "luts"),
            "--seq-len",
            "8",
            "--repeats",
            "1",
            "--neuron-points",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0
    lut = load_lut(tmp_path / "luts" / "latency_lut_cpu.json")
    assert sorted(lut["ffn"]) == [0, 24, 48] and lut["seq_len"] == 8
    assert "cpu: attention" in capsys.readouterr().out
