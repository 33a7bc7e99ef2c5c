"""Byte-level BPE tokenizer for the zoo's language models, trained on the corpus' train split."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"
#: Reserved from the start so the LLaVA model can reuse the language model's vocabulary unchanged.
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS: tuple[str, ...] = (EOS_TOKEN, PAD_TOKEN, IMAGE_TOKEN)


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 4096, model_max_length: int = 256
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast``.

    ``<|endoftext|>`` is both BOS and EOS (GPT-2 style; nothing is added automatically when
    encoding), ``<pad>`` pads and ``<image>`` is reserved for vision-language models. Training is
    deterministic for a given input (the BPE trainer breaks count ties by pair order).

    Args:
        texts: Training texts, e.g. the corpus' train split.
        vocab_size: Final vocabulary size, special tokens and the 256 byte symbols included.
        model_max_length: The context length recorded in the tokenizer config.

    Returns:
        The wrapped tokenizer.

    Raises:
        ValueError: If ``vocab_size`` cannot hold the byte alphabet and the special tokens.
    """
    minimum = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS)
    if vocab_size <= minimum:
        raise ValueError(f"vocab_size={vocab_size} is too small; it must be greater than {minimum}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(backend, model_max_length=model_max_length)


def wrap_tokenizer(backend: Tokenizer, model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """Wrap a ``tokenizers.Tokenizer`` trained by :func:`train_bpe_tokenizer` for ``transformers``.

    Args:
        backend: The raw tokenizer; it must contain the zoo's special tokens.
        model_max_length: The context length recorded in the tokenizer config.

    Returns:
        The ``PreTrainedTokenizerFast`` with BOS/EOS/PAD set.
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
