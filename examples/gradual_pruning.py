"""Gradual pruning while fine-tuning with ``transformers.Trainer`` and ``hf_prune.PruningCallback`` (offline).

Fine-tunes the bundled trained zoo model ``llama-gqa-small`` on its own training text while Wanda (or
magnitude) pruning ramps the sparsity up on Zhu & Gupta's cubic schedule, then saves the result in
hf_prune's format (the run is recorded in ``pruning_config.json`` and the model card) and prints the
held-out perplexity.

    python examples/gradual_pruning.py --output gradual-out
    accelerate launch --multi_gpu --num_processes 2 examples/gradual_pruning.py --output gradual-ddp

``--tiny`` swaps in a small random-init Llama with the zoo tokenizer (seconds; used by the tests).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import (
    DataCollatorForLanguageModeling,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainingArguments,
)

from hf_prune import MagnitudeConfig, PruningCallback, WandaConfig, zoo
from hf_prune.calibration.distributed import world
from hf_prune.data import causal_lm_dataset
from hf_prune.evaluation import perplexity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--method", choices=["wanda", "magnitude"], default="wanda")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--end-step", type=int, default=40)
    parser.add_argument("--frequency", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (0: none)")
    parser.add_argument("--resume", default=None, help="Trainer checkpoint folder to resume from")
    parser.add_argument("--tiny", action="store_true", help="small random-init Llama (fast, for tests)")
    parser.add_argument("--dump-masks", default=None, help="write this rank's final masks here (tests)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model, tokenizer = zoo.load_zoo_model("llama-gqa-small")
    if args.tiny:
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    model = model.float()  # train in fp32 (the zoo ships fp16 weights)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_text = zoo.write_split_text("train", Path(args.output) / "data" / "train.txt")
    train = causal_lm_dataset(str(train_text), tokenizer, seqlen=args.seqlen, max_windows=2000)

    method = WandaConfig if args.method == "wanda" else MagnitudeConfig
    callback = PruningCallback(
        method(sparsity=args.sparsity), schedule="cubic", start_step=0, end_step=args.end_step,
        frequency=args.frequency,
    )  # fmt: skip
    training = TrainingArguments(
        output_dir=str(Path(args.output) / "trainer"), max_steps=args.steps,
        per_device_train_batch_size=args.batch_size, learning_rate=args.lr, weight_decay=0.01,
        logging_steps=max(1, args.frequency // 2), save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500, report_to=[], use_cpu=True, seed=0, data_seed=0,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=training, train_dataset=train,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), callbacks=[callback],
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=args.resume)

    rank, size = world()
    if args.dump_masks:
        masks = {name: mask.to(torch.uint8) for name, mask in callback.masks().items()}
        from safetensors.torch import save_file

        Path(args.dump_masks).mkdir(parents=True, exist_ok=True)
        save_file(masks, str(Path(args.dump_masks) / f"masks-rank{rank}.safetensors"))
    if rank == 0:
        pruned = callback.pruned
        pruned.save_pretrained(Path(args.output) / "model", tokenizer=tokenizer)
        heldout = zoo.write_split_text("heldout", Path(args.output) / "data" / "heldout.txt")
        ppl = perplexity(
            pruned.base_model, tokenizer, str(heldout), seqlen=128, max_windows=16, progress=False
        )
        summary = {
            "processes": size,
            "final_sparsity": callback.sparsity,
            "history": callback.history,
            "heldout_ppl": round(ppl, 3),
        }
        print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
