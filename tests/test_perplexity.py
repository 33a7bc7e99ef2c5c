import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_prune.evaluation import perplexity
from hf_prune.evaluation.perplexity import encode_dataset, scored_targets, window_plan
from hf_prune.zoo.tokenizer import train_bpe_tokenizer

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n"
    "        self.items.append(x)\n",
    "for i in range(10):\n    print(i * i)\n",
    "import os\nimport sys\n\nprint(os.getcwd(), sys.argv)\n",
] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=64)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def naive_perplexity(model, ids, seqlen, stride=None):
    """Token by token: each scored token's NLL from a separate forward pass over its in-window prefix."""
    stride = stride or seqlen
    total, count, scored_until, begin = 0.0, 0, 0, 0
    with torch.no_grad():
        while begin + seqlen <= len(ids):
            end = begin + seqlen
            for pos in range(max(begin + 1, scored_until), end):
                logits = model(input_ids=ids[begin:pos].unsqueeze(0)).logits[0, -1]
                total -= torch.log_softmax(logits.double(), dim=-1)[ids[pos]].item()
                count += 1
            scored_until = end
            begin += stride
    return math.exp(total / count)


@pytest.mark.parametrize(("seqlen", "stride"), [(16, None), (16, 5), (12, 12)])
def test_matches_naive_token_by_token_reference(model, tokenizer, seqlen, stride):
    ids = encode_dataset(tokenizer, TEXTS)
    expected = naive_perplexity(model, ids, seqlen, stride)
    got = perplexity(model, tokenizer, TEXTS, seqlen=seqlen, stride=stride, batch_size=3, progress=False)
    assert got == pytest.approx(expected, rel=1e-4)
    # A random model over a 300-token vocabulary is near-uniform: the value must be in that range.
    assert 50 < got < 3000


def test_batch_size_and_window_cap(model, tokenizer):
    one = perplexity(model, tokenizer, TEXTS, seqlen=16, batch_size=1, progress=False)
    many = perplexity(model, tokenizer, TEXTS, seqlen=16, batch_size=7, progress=False)
    assert many == pytest.approx(one, rel=1e-5)
    ids = encode_dataset(tokenizer, TEXTS)
    capped = perplexity(model, tokenizer, TEXTS, seqlen=16, max_windows=2, progress=False)
    assert capped == pytest.approx(naive_perplexity(model, ids[:32], 16), rel=1e-4)


def test_dataset_forms_give_the_same_value(model, tokenizer, tmp_path):
    import datasets

    reference = perplexity(model, tokenizer, TEXTS, seqlen=16, progress=False)
    path = tmp_path / "heldout.txt"
    path.write_text("\n\n".join(TEXTS), encoding="utf-8")
    as_string = perplexity(model, tokenizer, "\n\n".join(TEXTS), seqlen=16, progress=False)
    as_str_path = perplexity(model, tokenizer, str(path), seqlen=16, progress=False)
    as_path = perplexity(model, tokenizer, path, seqlen=16, progress=False)
    raw = tmp_path / "wiki.test.raw"
    raw.write_text("\n\n".join(TEXTS), encoding="utf-8")
    as_raw_path = perplexity(model, tokenizer, str(raw), seqlen=16, progress=False)
    as_dataset = perplexity(
        model, tokenizer, datasets.Dataset.from_dict({"text": TEXTS}), seqlen=16, progress=False
    )
    assert as_string == reference
    assert as_str_path == reference
    assert as_path == reference
    assert as_raw_path == reference
    assert as_dataset == reference


def test_wrapper_object_and_train_mode_restored(model, tokenizer):
    class Forwarding:
        def __init__(self, inner):
            self.base_model = inner

        def __call__(self, **kwargs):
            return self.base_model(**kwargs)

    reference = perplexity(model, tokenizer, TEXTS, seqlen=16, progress=False)
    assert perplexity(Forwarding(model), tokenizer, TEXTS, seqlen=16, progress=False) == pytest.approx(
        reference, rel=1e-6
    )
    model.train()
    try:
        assert perplexity(model, tokenizer, TEXTS, seqlen=16, progress=False) == pytest.approx(
            reference, rel=1e-6
        )
        assert model.training
    finally:
        model.eval()


def test_sliding_window_scores_each_token_once():
    plan = window_plan(40, seqlen=16, stride=5)
    scored = [begin + pos for begin, first in plan for pos in range(first, 16)]
    assert scored == list(range(1, plan[-1][0] + 16))
    ids = torch.arange(40)
    assert torch.equal(scored_targets(ids, 16, 5), ids[1 : plan[-1][0] + 16])
    # Non-overlapping: each window's first token is not scored, the trailing partial window is dropped.
    assert torch.equal(scored_targets(ids, 16), torch.cat([ids[1:16], ids[17:32]]))


def test_bad_input(model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        perplexity(model, tokenizer, TEXTS, seqlen=128, progress=False)
    with pytest.raises(ValueError, match="fewer than seqlen=64"):
        perplexity(model, tokenizer, "def f(): pass", seqlen=64, progress=False)
    with pytest.raises(ValueError, match="stride=20"):
        perplexity(model, tokenizer, TEXTS, seqlen=16, stride=20, progress=False)
    with pytest.raises(ValueError, match=r"missing\.txt"):
        perplexity(model, tokenizer, str(tmp_path / "missing.txt"), seqlen=16, progress=False)
    with pytest.raises(TypeError, match="dataset"):
        perplexity(model, tokenizer, 42, seqlen=16, progress=False)
    with pytest.raises(TypeError, match="seqlen"):
        perplexity(model, tokenizer, TEXTS, seqlen=16.0, progress=False)
    with pytest.raises(ValueError, match="batch_size=0"):
        perplexity(model, tokenizer, TEXTS, seqlen=16, batch_size=0, progress=False)


LENGTH_WARNING = "Token indices sequence length is longer than the specified maximum"


def test_long_text_gives_no_length_warning_and_the_same_value(model, tokenizer, transformers_warnings):
    # A fresh tokenizer (the warning is given once per instance) whose context is far shorter than the
    # joined text; same training data, so the same vocabulary as the module's tokenizer.
    short = train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=8)
    joined = "\n\n".join(TEXTS)
    got = perplexity(model, short, TEXTS, seqlen=16, progress=False)
    ids = encode_dataset(short, TEXTS)
    assert [r for r in transformers_warnings if LENGTH_WARNING in r.getMessage()] == []
    # Same ids and value as a plain tokenizer call; that call does warn, so the capture works.
    plain = short(joined)["input_ids"]
    assert len(plain) > 8 * short.model_max_length
    assert ids.tolist() == plain
    assert any(LENGTH_WARNING in r.getMessage() for r in transformers_warnings)
    assert got == pytest.approx(naive_perplexity(model, torch.tensor(plain), 16), rel=1e-4)
    assert got == pytest.approx(perplexity(model, tokenizer, TEXTS, seqlen=16, progress=False), rel=1e-6)
