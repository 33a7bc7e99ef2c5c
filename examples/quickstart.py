"""Quick start: prune a small Llama with Wanda + AlphaPruning allocation, save, reload, compare.

Runs offline in seconds on a tiny random model; pass --zoo to use the trained zoo model instead
(shipped with hf_prune: it loads in a second).

    python examples/quickstart.py [--zoo] [--output out/quickstart]
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from hf_prune import AutoPrunedModelForCausalLM, CalibrationConfig, WandaConfig, prune, zoo
from hf_prune.evaluation import perplexity
from hf_prune.zoo.tokenizer import train_bpe_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", action="store_true", help="use the trained llama-gqa-small")
    parser.add_argument("--output", default="out/quickstart")
    args = parser.parse_args()
    if args.zoo:
        model, tok = zoo.load_zoo_model("llama-gqa-small")
    else:
        tok = train_bpe_tokenizer(zoo.get_eval_texts("calibration")[:20], vocab_size=512)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(
            LlamaConfig(
                vocab_size=len(tok),
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=256,
            )
        )
    texts = zoo.get_eval_texts("heldout")
    before = perplexity(model, tok, texts, seqlen=128, max_windows=8, progress=False)
    calib = CalibrationConfig(dataset=zoo.get_eval_texts("calibration"), nsamples=16, seqlen=128)
    pruned = prune(model, WandaConfig(sparsity=0.5), calibration=calib, tokenizer=tok)
    after = perplexity(pruned, tok, texts, seqlen=128, max_windows=8, progress=False)
    pruned.report.evaluation["perplexity"] = {"before": round(before, 3), "after": round(after, 3)}
    folder = pruned.save_pretrained(args.output, tokenizer=tok)
    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    ids = tok(texts[0][:500], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        same = torch.allclose(again(input_ids=ids).logits, pruned(input_ids=ids).logits, atol=1e-5)
    print(pruned.report.summary())
    print(f"perplexity {before:.2f} -> {after:.2f}; saved to {folder}; reload identical: {same}")


if __name__ == "__main__":
    main()
