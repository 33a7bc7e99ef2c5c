"""Tiny random models of every supported family, built locally from configs (no downloads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import transformers as T

VOCAB = 96


@dataclass
class Family:
    name: str
    config: Any
    auto: Any  # transformers auto class
    pruned_auto: str  # hf_prune auto class name
    inputs: dict[str, torch.Tensor]
    causal: bool = False


def _ids(batch: int = 2, seq: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, seq), generator=g)


def _llama_kwargs(**kw: Any) -> dict[str, Any]:
    base = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    base.update(kw)
    return base


def build_family(name: str) -> Family:
    ids = _ids()
    causal_inputs = {"input_ids": ids}
    enc_inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if name == "llama":
        return Family(
            name,
            T.LlamaConfig(**_llama_kwargs()),
            T.AutoModelForCausalLM,
            "AutoPrunedModelForCausalLM",
            causal_inputs,
            True,
        )
    if name == "mistral":
        return Family(
            name,
            T.MistralConfig(**_llama_kwargs(sliding_window=None)),
            T.AutoModelForCausalLM,
            "AutoPrunedModelForCausalLM",
            causal_inputs,
            True,
        )
    if name == "qwen2":
        return Family(
            name,
            T.Qwen2Config(**_llama_kwargs()),
            T.AutoModelForCausalLM,
            "AutoPrunedModelForCausalLM",
            causal_inputs,
            True,
        )
    if name == "gemma":
        return Family(
            name,
            T.GemmaConfig(**_llama_kwargs(head_dim=8)),
            T.AutoModelForCausalLM,
            "AutoPrunedModelForCausalLM",
            causal_inputs,
            True,
        )
    if name == "opt":
        cfg = T.OPTConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            ffn_dim=48,
            num_hidden_layers=4,
            num_attention_heads=4,
            word_embed_proj_dim=32,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        return Family(name, cfg, T.AutoModelForCausalLM, "AutoPrunedModelForCausalLM", causal_inputs, True)
    if name == "gpt2":
        cfg = T.GPT2Config(
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=4,
            n_head=4,
            n_positions=64,
            n_inner=48,
            bos_token_id=1,
            eos_token_id=2,
        )
        return Family(name, cfg, T.AutoModelForCausalLM, "AutoPrunedModelForCausalLM", causal_inputs, True)
    if name == "bert":
        cfg = T.BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=64,
            num_labels=3,
        )
        return Family(
            name,
            cfg,
            T.AutoModelForSequenceClassification,
            "AutoPrunedModelForSequenceClassification",
            enc_inputs,
        )
    if name == "roberta":
        cfg = T.RobertaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=70,
            num_labels=2,
            pad_token_id=1,
        )
        return Family(
            name,
            cfg,
            T.AutoModelForSequenceClassification,
            "AutoPrunedModelForSequenceClassification",
            enc_inputs,
        )
    if name == "vit":
        cfg = T.ViTConfig(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=4,
            num_attention_heads=4,
            image_size=8,
            patch_size=4,
            num_labels=3,
        )
        g = torch.Generator().manual_seed(0)
        return Family(
            name,
            cfg,
            T.AutoModelForImageClassification,
            "AutoPrunedModelForImageClassification",
            {"pixel_values": torch.randn(2, 3, 8, 8, generator=g)},
        )
    if name == "llava":
        vision = T.CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=8,
            patch_size=2,
            projection_dim=32,
        )
        text = T.LlamaConfig(**_llama_kwargs())
        image_token = VOCAB - 1
        cfg = T.LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_id=image_token,
            image_seq_length=16,
            vision_feature_layer=-1,
            projector_hidden_act="gelu",
        )
        g = torch.Generator().manual_seed(0)
        ids = torch.cat([torch.full((2, 16), image_token), _ids(2, 8)], dim=1)
        return Family(
            name,
            cfg,
            T.AutoModelForImageTextToText,
            "AutoPrunedModelForImageTextToText",
            {"input_ids": ids, "pixel_values": torch.randn(2, 3, 8, 8, generator=g)},
            True,
        )
    raise ValueError(name)


FAMILIES = ["llama", "mistral", "qwen2", "gemma", "opt", "gpt2", "bert", "roberta", "vit", "llava"]


def make_model(name: str, seed: int = 0) -> tuple[Any, Family]:
    fam = build_family(name)
    torch.manual_seed(seed)
    model = fam.auto.from_config(fam.config).eval()
    return model, fam


def logits(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


class CharTokenizer:
    """A tokenizer stand-in: one id per character (enough for calibration windows)."""

    def __call__(self, text, return_tensors=None, add_special_tokens=False):
        return {"input_ids": torch.tensor([[3 + (ord(c) % 90) for c in text]])}


def save_tiny_llava(tokenizer: Any, folder: Any, max_position_embeddings: int = 128) -> Any:
    """Save a tiny LLaVA (8x8 images, 2x2 patches: 16 image tokens) and its processor to ``folder``.

    ``tokenizer`` must encode ``<image>`` as one token. Returns the processor.
    """
    config = T.LlavaConfig(
        vision_config=T.CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=8,
            patch_size=2,
            projection_dim=32,
        ),
        text_config=T.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max_position_embeddings,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
        vision_feature_layer=-1,
    )
    processor = T.LlavaProcessor(
        image_processor=T.CLIPImageProcessorPil(
            size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8}
        ),
        tokenizer=tokenizer,
        patch_size=2,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
    )
    torch.manual_seed(0)
    T.LlavaForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return processor
