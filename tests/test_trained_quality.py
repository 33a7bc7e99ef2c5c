"""Quality claims on a *trained* model (the zoo's llama-gqa-small), each against a baseline in the same run.

The zoo model is the shipped one (package data, sha256-checked at load): nothing is trained here.
"""

from __future__ import annotations

import copy

import jsonschema
import pytest

from hf_prune import CalibrationConfig, MagnitudeConfig, SparseGPTConfig, prune, zoo
from hf_prune.evaluation import perplexity
from hf_prune.layer_selection import LayerScores, extract_layer_scores, load_schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    model, tok = zoo.load_zoo_model("llama-gqa-small")
    calib = zoo.write_split_text("calibration", tmp_path_factory.mktemp("calib") / "calibration.txt")
    return model, tok, calib


def _ppl(model, tok):
    return perplexity(model, tok, zoo.get_eval_texts("heldout"), seqlen=256, max_windows=24, progress=False)


@pytest.mark.parametrize("sparsity", [0.6, 0.7])
def test_sparsegpt_beats_magnitude_on_trained_model(trained, sparsity):
    model, tok, calib_file = trained
    calib = CalibrationConfig(dataset=str(calib_file), nsamples=16, seqlen=256, seed=0)
    dense = _ppl(model, tok)
    mag = _ppl(prune(copy.deepcopy(model), MagnitudeConfig(sparsity=sparsity), progress=False), tok)
    sgpt = _ppl(
        prune(
            copy.deepcopy(model),
            SparseGPTConfig(sparsity=sparsity),
            calibration=calib,
            tokenizer=tok,
            progress=False,
        ),
        tok,
    )
    assert dense < sgpt < mag, (dense, sgpt, mag)


def test_layer_scores_on_zoo_model(trained, tmp_path):
    model, _, _ = trained
    scores = extract_layer_scores(
        model, metric="alpha_peak", sparsity=0.7, epsilon=0.3, model_name="llama-gqa-small"
    )
    path = scores.save(tmp_path / "scores.json")
    import json

    data = json.loads(path.read_text())
    jsonschema.validate(data, load_schema())
    assert data["num_prunable_layers"] == 6 * 7 and data["num_blocks"] == 6
    again = LayerScores.load(path)
    assert again.to_dict() == scores.to_dict()
