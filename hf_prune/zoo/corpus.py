"""The zoo's corpus: the Python standard library's own ``.py`` sources.

Every Python install ships its standard library as source, so this corpus needs no download. The
corpus is deterministic for a given Python version: files are listed in sorted POSIX-path order,
read as UTF-8 with newlines normalised, and assigned to a split by hashing their path relative to the
stdlib root (never by listing order), so adding or removing one file never moves any other file
between splits.

Splits (fixed, by ``sha256("hf_prune-zoo-v1:" + relative_path)`` modulo 100):

* ``heldout`` — buckets 0-4 (about 5% of files): evaluation only, never trained on.
* ``calibration`` — buckets 5-9 (about 5%): data for pruning calibration, never trained on.
* ``train`` — buckets 10-99.

Excluded: tests, ``site-packages`` and the packages that Linux distributions commonly split into
separate OS packages (``distutils``, ``lib2to3``, ``tkinter``, ``turtledemo``, ``idlelib``,
``ensurepip``), the generated codec tables under ``encodings`` and ``pydoc_data``, and the
machine-specific ``_sysconfigdata*`` module. The stdlib text still changes between Python versions
(including patch releases), so every zoo model records the Python version and :func:`corpus_sha256`
in its metadata; a model built on another Python is still valid, it just saw a different corpus.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hf_prune.utils import atomic_write_text

Split = Literal["train", "calibration", "heldout"]
SPLITS: tuple[str, ...] = ("train", "calibration", "heldout")

#: Bumped whenever the file selection, normalisation or split rule changes.
CORPUS_VERSION = 1

_SPLIT_SALT = "hf_prune-zoo-v1:"
_HELDOUT_BUCKETS = 5
_CALIBRATION_BUCKETS = 5

# Directory names excluded anywhere in the relative path.
_EXCLUDED_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "__pycache__",
        "test",
        "tests",
        "idle_test",
        # Generated data tables, not prose or code a person wrote.
        "encodings",
        "pydoc_data",
        # Split into separate OS packages by Debian/Ubuntu and others: absent on some installs.
        "distutils",
        "lib2to3",
        "tkinter",
        "turtledemo",
        "idlelib",
        "ensurepip",
    }
)


@dataclass(frozen=True)
class CorpusDocument:
    r"""One source file of the corpus.

    Args:
        path: POSIX path relative to the stdlib root (e.g. ``"email/utils.py"``).
        split: The split the file belongs to.
        text: The file's text, newlines normalised to ``"\n"``.
    """

    path: str
    split: str
    text: str


def stdlib_root() -> Path:
    """Return the directory holding the running interpreter's pure-Python standard library.

    Returns:
        The ``stdlib`` path from :func:`sysconfig.get_paths`.
    """
    return Path(sysconfig.get_paths()["stdlib"])


def python_version() -> str:
    """Return the ``major.minor.micro`` version of the running interpreter (the corpus depends on it).

    Returns:
        The version string, e.g. ``"3.11.7"``.
    """
    return ".".join(str(v) for v in sys.version_info[:3])


def split_of(relative_path: str) -> str:
    """Return the split a corpus file belongs to, from a hash of its relative path.

    Args:
        relative_path: POSIX path relative to the stdlib root.

    Returns:
        ``"heldout"``, ``"calibration"`` or ``"train"``.
    """
    digest = hashlib.sha256((_SPLIT_SALT + relative_path).encode("utf-8")).hexdigest()
    bucket = int(digest[:8], 16) % 100
    if bucket < _HELDOUT_BUCKETS:
        return "heldout"
    if bucket < _HELDOUT_BUCKETS + _CALIBRATION_BUCKETS:
        return "calibration"
    return "train"


def _is_excluded(relative_path: str) -> bool:
    parts = relative_path.split("/")
    name = parts[-1]
    if name.startswith(("_sysconfigdata", "test_")):
        return True
    return any(part in _EXCLUDED_DIRS or part.startswith("config-") for part in parts[:-1])


def _normalise(raw: bytes) -> str:
    # A few stdlib files carry latin-1 bytes in comments; "replace" keeps reading deterministic.
    text = raw.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


@functools.lru_cache(maxsize=4)
def _load_corpus_cached(root: str) -> tuple[CorpusDocument, ...]:
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"standard library directory {base} does not exist")
    relative = sorted(p.relative_to(base).as_posix() for p in base.rglob("*.py") if p.is_file())
    docs = []
    for rel in relative:
        if _is_excluded(rel):
            continue
        text = _normalise((base / rel).read_bytes())
        if text.strip():
            docs.append(CorpusDocument(path=rel, split=split_of(rel), text=text))
    if not docs:
        raise FileNotFoundError(f"no standard-library sources found under {base}")
    return tuple(docs)


def load_corpus(root: str | Path | None = None) -> tuple[CorpusDocument, ...]:
    """Load every corpus document, in sorted path order.

    Args:
        root: The stdlib directory; ``None`` means the running interpreter's (:func:`stdlib_root`).

    Returns:
        The documents of all splits (cached per root for the life of the process).
    """
    return _load_corpus_cached(str(root if root is not None else stdlib_root()))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a corpus split; allowed: {', '.join(SPLITS)}")


def split_documents(split: str, root: str | Path | None = None) -> list[CorpusDocument]:
    """Return the documents of one split, in sorted path order.

    Args:
        split: ``"train"``, ``"calibration"`` or ``"heldout"``.
        root: The stdlib directory; ``None`` means the running interpreter's.

    Returns:
        The split's documents.

    Raises:
        ValueError: If ``split`` is not a known split.
    """
    _check_split(split)
    return [doc for doc in load_corpus(root) if doc.split == split]


def get_eval_texts(split: str = "heldout") -> list[str]:
    """Return the texts (one per source file) of a corpus split, the ones the zoo models used.

    ``"heldout"`` is what the zoo's perplexities are measured on; ``"calibration"`` is meant as
    pruning calibration data; neither was trained on.

    Args:
        split: ``"heldout"``, ``"calibration"`` or ``"train"``.

    Returns:
        The texts of the split's files, in sorted path order.

    Raises:
        ValueError: If ``split`` is not a known split.
    """
    return [doc.text for doc in split_documents(split)]


def write_split_text(split: str, path: str | Path) -> Path:
    r"""Write a corpus split to a local UTF-8 text file (files joined with ``"\n\n"``).

    The file can be handed to ``CalibrationConfig(dataset=path)`` or to
    :func:`hf_prune.evaluation.perplexity`, which join with the same separator, so the token stream
    is the same as from :func:`get_eval_texts`.

    Args:
        split: ``"heldout"``, ``"calibration"`` or ``"train"``.
        path: Destination file; parent directories are created.

    Returns:
        The path written.

    Raises:
        ValueError: If ``split`` is not a known split.
    """
    texts = get_eval_texts(split)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written as is ("\n" on every OS: the file must hash identically everywhere) and atomically: the
    # ranks of a distributed run write the same file while others already read it.
    return atomic_write_text(out, "\n\n".join(texts))


def corpus_sha256(documents: Sequence[CorpusDocument] | None = None) -> str:
    """Return a sha256 over the corpus' paths, splits and texts (identifies the exact training data).

    Args:
        documents: The documents to hash; ``None`` means :func:`load_corpus`.

    Returns:
        The hex digest.
    """
    docs = load_corpus() if documents is None else documents
    digest = hashlib.sha256(f"corpus-v{CORPUS_VERSION}\n".encode())
    for doc in docs:
        for field_value in (doc.path, doc.split, doc.text):
            encoded = field_value.encode("utf-8")
            # Length-prefix each field so different splittings of the same bytes never collide.
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return digest.hexdigest()


def corpus_summary() -> dict[str, object]:
    """Return a JSON-serialisable description of the corpus (for model cards and metadata).

    Returns:
        Python version, corpus version, sha256, and per-split file and character counts.
    """
    docs = load_corpus()
    splits: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        chosen = [doc for doc in docs if doc.split == split]
        splits[split] = {"files": len(chosen), "chars": sum(len(doc.text) for doc in chosen)}
    return {
        "source": "Python standard library .py sources",
        "python_version": python_version(),
        "corpus_version": CORPUS_VERSION,
        "corpus_sha256": corpus_sha256(docs),
        "splits": splits,
    }
