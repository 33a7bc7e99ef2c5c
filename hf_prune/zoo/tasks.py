"""A locally constructed labelled task for the zoo's sequence classifier: code continuation.

Each example is a pair of chunks of ``chunk_lines`` consecutive non-blank lines from one stdlib file.
Label 1 (``continuation``): the second chunk directly follows the first. Label 0
(``not_continuation``): the second chunk is another chunk of the same file (neither the first chunk
itself nor its successor). Positives and negatives are drawn with probability 1/2, so the majority
class is near 50%, and since both chunks share the file's vocabulary and style the model has to read
the code's flow to do well. Examples inherit the corpus split of their file, so held-out examples
come from files never seen in training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hf_prune.zoo.corpus import split_documents

LABELS: tuple[str, ...] = ("not_continuation", "continuation")


@dataclass(frozen=True)
class PairExample:
    """One example of the continuation task.

    Args:
        first: The first chunk.
        second: The candidate continuation.
        label: 1 if ``second`` directly follows ``first``, else 0.
        path: The source file (relative to the stdlib root).
    """

    first: str
    second: str
    label: int
    path: str


def _chunks(text: str, chunk_lines: int) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n") if line.strip()]
    return [
        "\n".join(lines[i : i + chunk_lines]) for i in range(0, len(lines) - chunk_lines + 1, chunk_lines)
    ]


def continuation_examples(split: str, chunk_lines: int = 6) -> list[PairExample]:
    """Build the continuation-task examples of a corpus split, deterministically.

    Args:
        split: ``"train"``, ``"calibration"`` or ``"heldout"``.
        chunk_lines: Non-blank lines per chunk.

    Returns:
        The examples, in file order.

    Raises:
        ValueError: If ``split`` is unknown or ``chunk_lines`` is not a positive int.
    """
    if isinstance(chunk_lines, bool) or not isinstance(chunk_lines, int) or chunk_lines < 1:
        raise ValueError(f"chunk_lines={chunk_lines!r} must be a positive int")
    examples = []
    for doc in split_documents(split):
        chunks = _chunks(doc.text, chunk_lines)
        if len(chunks) < 4:
            continue  # Too few chunks to draw a negative distinct from the chunk and its successor.
        # A str seed is hashed with sha512 by `random`, so the draw is stable across processes.
        rng = random.Random(f"hf_prune-zoo-continuation:{split}:{doc.path}")
        for i in range(len(chunks) - 1):
            if rng.random() < 0.5:
                examples.append(PairExample(chunks[i], chunks[i + 1], 1, doc.path))
            else:
                j = rng.choice([k for k in range(len(chunks)) if k not in (i, i + 1)])
                examples.append(PairExample(chunks[i], chunks[j], 0, doc.path))
    return examples
