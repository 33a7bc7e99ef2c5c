"""Calibration data: registered Hub sets, local files, ``datasets.Dataset`` or strings -> token windows.

Windows follow the Wanda / SparseGPT loaders: the texts are joined, tokenized once, and ``nsamples``
windows of ``seqlen`` tokens start at seeded random positions.

Labelled data (``CalibrationConfig.label_column``) gives classification batches instead: whole rows
(a text, optionally a second text of a sentence pair, and a label), padded to ``seqlen``; task-loss
methods such as the Fisher mask search of Kwon et al. need them for a classifier.

Image-text data (LLaVA) is different: each sample is one image with its caption, encoded by the
model's processor as ``"<image>"``, a newline and the caption, so it runs through the whole
vision-language forward (vision tower, projector, language model) and the statistics include the
image tokens.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hf_prune.config import CalibrationConfig
from hf_prune.registry import Registry
from hf_prune.utils import quiet_tokenize


@dataclass(frozen=True)
class HubDataset:
    """How to read a registered calibration set from the Hub.

    Args:
        path: ``datasets.load_dataset`` path.
        name: Its config name.
        split: Split to use when the user keeps the default ``"train"``.
        format: Turns one row into calibration text.
        data_files: ``data_files`` argument (C4 reads one shard, as the Wanda loader does).
    """

    path: str
    name: str | None
    split: str
    format: Callable[[dict[str, Any]], str]
    data_files: dict[str, str] | None = None


def _choices(row: dict[str, Any]) -> str:
    choices = row.get("choices")
    if isinstance(choices, dict):  # ARC: {"text": [...], "label": [...]}
        choices = choices.get("text", [])
    return " ".join(str(c) for c in choices or [])


HUB_DATASETS: Registry[HubDataset] = Registry("calibration dataset")
for _key, _ds in (
    ("wikitext2", HubDataset("wikitext", "wikitext-2-raw-v1", "train", lambda r: r["text"])),
    (
        "c4",
        HubDataset(
            "allenai/c4",
            None,
            "train",
            lambda r: r["text"],
            data_files={"train": "en/c4-train.00000-of-01024.json.gz"},
        ),
    ),
    ("mmlu", HubDataset("cais/mmlu", "all", "auxiliary_train", lambda r: f"{r['question']} {_choices(r)}")),
    (
        "hellaswag",
        HubDataset("Rowan/hellaswag", None, "train", lambda r: f"{r['ctx']} {' '.join(r['endings'])}"),
    ),
    ("winogrande", HubDataset("allenai/winogrande", "winogrande_xl", "train", lambda r: r["sentence"])),
    (
        "arc_easy",
        HubDataset("allenai/ai2_arc", "ARC-Easy", "train", lambda r: f"{r['question']} {_choices(r)}"),
    ),
    (
        "arc_challenge",
        HubDataset("allenai/ai2_arc", "ARC-Challenge", "train", lambda r: f"{r['question']} {_choices(r)}"),
    ),
    ("gsm8k", HubDataset("openai/gsm8k", "main", "train", lambda r: f"{r['question']} {r['answer']}")),
):
    HUB_DATASETS.register(_key, _ds)

_LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _texts_from_table(ds: Any, column: str | None, fmt: Callable[[dict[str, Any]], str] | None) -> list[str]:
    if fmt is not None and column is None:
        return [t for t in (fmt(row) for row in ds) if t and t.strip()]
    col = column or "text"
    if col not in ds.column_names:
        raise ValueError(
            f"Calibration data has no column {col!r}; columns are {ds.column_names}. Set "
            "CalibrationConfig(text_column=...)."
        )
    return [t for t in ds[col] if isinstance(t, str) and t.strip()]


def load_calibration_texts(config: CalibrationConfig) -> list[str]:
    """Return the raw calibration texts described by ``config``.

    Args:
        config: The calibration config.

    Raises:
        ValueError: For an unknown name that is not an existing path, or an empty dataset.
    """
    data = config.dataset
    if isinstance(data, (list, tuple)):
        texts = list(data)
    elif isinstance(data, str):
        path = Path(data).expanduser()
        if path.exists():
            texts = _local_texts(path, config)
        elif data in HUB_DATASETS:
            import datasets

            spec = HUB_DATASETS.get(data)
            split = spec.split if config.split == "train" else config.split
            ds = datasets.load_dataset(spec.path, spec.name, split=split, data_files=spec.data_files)
            texts = _texts_from_table(ds, config.text_column, spec.format)
        else:
            raise ValueError(
                f"CalibrationConfig.dataset={data!r} is neither an existing path nor a registered name "
                f"({', '.join(HUB_DATASETS.names())}). Pass a local text/JSON/JSONL/parquet file, a "
                "datasets.Dataset or a list of strings."
            )
    else:  # datasets.Dataset (checked in CalibrationConfig)
        texts = _texts_from_table(data, config.text_column, None)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError(f"Calibration dataset {config.describe()['dataset']!r} holds no text.")
    return texts


def _local_texts(path: Path, config: CalibrationConfig) -> list[str]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", *_LOCAL_BUILDERS))
        if not files:
            raise ValueError(
                f"Calibration folder {str(path)!r} holds no .txt/.json/.jsonl/.parquet/.csv files."
            )
        return [t for f in files for t in _local_texts(f, config)]
    suffix = path.suffix.lower()
    if suffix in ("", ".txt", ".md"):
        # One document per blank-line-separated paragraph, as the wikitext loaders see it.
        return [p for p in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if p.strip()]
    if suffix in _LOCAL_BUILDERS:
        import datasets

        ds = datasets.load_dataset(_LOCAL_BUILDERS[suffix], data_files=str(path), split="train")
        return _texts_from_table(ds, config.text_column, None)
    raise ValueError(
        f"Unsupported calibration file type {suffix!r} ({str(path)!r}); "
        "use .txt, .json, .jsonl, .csv or .parquet."
    )


def text_tokenizer(tokenizer: Any) -> Any:
    """Return what encodes plain text: a processor's ``tokenizer``, else ``tokenizer`` itself.

    A multimodal processor (``LlavaProcessor``) takes ``images`` as its first argument, so calibration
    text goes to its tokenizer.

    Args:
        tokenizer: A tokenizer, a processor, or any callable tokenizer.
    """
    from transformers import ProcessorMixin

    if isinstance(tokenizer, ProcessorMixin) and getattr(tokenizer, "tokenizer", None) is not None:
        return tokenizer.tokenizer
    return tokenizer


def build_calibration_batches(config: CalibrationConfig, tokenizer: Any) -> list[dict[str, torch.Tensor]]:
    """Tokenize the calibration texts and cut seeded random windows (or encode image-text samples).

    For labelled data (``config.label_column`` set) this returns :func:`build_classification_batches`
    instead, and for image-text data (see :func:`is_image_text`) :func:`build_image_text_batches`.

    The picked texts are joined and tokenized once, without transformers' "sequence length is longer
    than the specified maximum" warning (the length is intended).

    Args:
        config: The calibration config.
        tokenizer: A transformers tokenizer, or a processor (its ``tokenizer`` encodes the text).

    Returns:
        Batches of ``{"input_ids", "attention_mask"}``, each ``[batch_size, seqlen]`` (the last may be
        smaller).

    Raises:
        ValueError: If the data holds fewer than ``seqlen + 1`` tokens, or image-text data comes without
            a processor.
    """
    if config.label_column is not None:
        return build_classification_batches(config, tokenizer)
    if is_image_text(config):
        return build_image_text_batches(config, tokenizer)
    texts = load_calibration_texts(config)
    rng = random.Random(config.seed)
    # Shuffle documents with the seed and stop once there is plenty of text: tokenizing a whole C4
    # shard to draw 128 windows would dominate the run.
    order = list(range(len(texts)))
    rng.shuffle(order)
    budget_chars = config.nsamples * config.seqlen * 12
    picked, size = [], 0
    for i in order:
        picked.append(texts[i])
        size += len(texts[i])
        if size >= budget_chars:
            break
    # The joined text is far longer than model_max_length on purpose: windows are cut below.
    encoded = quiet_tokenize(
        text_tokenizer(tokenizer), "\n\n".join(picked), return_tensors="pt", add_special_tokens=False
    )
    ids = encoded["input_ids"][0]
    n = int(ids.numel())
    if n <= config.seqlen:
        raise ValueError(
            f"Calibration data has only {n} tokens, fewer than seqlen+1={config.seqlen + 1}; lower seqlen or "
            "give more text."
        )
    windows = []
    for _ in range(config.nsamples):
        start = rng.randint(0, n - config.seqlen - 1)
        windows.append(ids[start : start + config.seqlen])
    stacked = torch.stack(windows)
    return [
        {"input_ids": chunk, "attention_mask": torch.ones_like(chunk)}
        for chunk in stacked.split(config.batch_size)
    ]


# ------------------------------------------------------------------ labelled classification data
def load_labelled_table(config: CalibrationConfig) -> Any:
    """Return the ``datasets.Dataset`` holding labelled calibration rows.

    Args:
        config: A calibration config with ``label_column`` set; its ``dataset`` is a ``datasets.Dataset``
            or a local CSV / JSON / JSONL / parquet file.

    Raises:
        ValueError: For a registered text set, a missing file, an unsupported file type, or a table
            without the text, text-pair or label column (the message lists the columns found).
    """
    data = config.dataset
    if isinstance(data, str):
        path = Path(data).expanduser()
        suffix = path.suffix.lower()
        if not path.is_file():
            what = "a registered text set (unlabelled)" if data in HUB_DATASETS else "no such file"
            raise ValueError(
                f"CalibrationConfig(label_column={config.label_column!r}) needs a labelled table, but "
                f"dataset={data!r} is {what}. Pass a datasets.Dataset or a local .csv/.json/.jsonl/.parquet "
                "file with text and label columns."
            )
        if suffix not in _LOCAL_BUILDERS:
            raise ValueError(
                f"Labelled calibration file {str(path)!r} has type {suffix or '(none)'!r}; use .csv, .json, "
                ".jsonl or .parquet."
            )
        import datasets

        table = datasets.load_dataset(_LOCAL_BUILDERS[suffix], data_files=str(path), split="train")
    elif isinstance(data, (list, tuple)):  # pragma: no cover - refused by CalibrationConfig
        raise ValueError("label_column needs a table, not a list of strings.")
    else:
        table = data
    columns = list(table.column_names)
    wanted = {
        "text_column": config.text_column or "text",
        "text_pair_column": config.text_pair_column,
        "label_column": config.label_column,
    }
    for field_name, column in wanted.items():
        if column is not None and column not in columns:
            raise ValueError(
                f"Labelled calibration data {config.describe()['dataset']!r} has no column {column!r} "
                f"(CalibrationConfig.{field_name}); its columns are {sorted(columns)}. Set {field_name} to "
                "one of them."
            )
    if len(table) == 0:
        raise ValueError(f"Labelled calibration data {config.describe()['dataset']!r} has no rows.")
    return table


def _label_tensor(values: list[Any], column: str) -> torch.Tensor:
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and v != v):
            raise ValueError(
                f"Label column {column!r} must hold integer class ids (or floats for regression); picked "
                f"row {i} holds {v!r}. Map string labels to ids first (e.g. Dataset.class_encode_column)."
            )
    if all(isinstance(v, int) for v in values):
        return torch.tensor(values, dtype=torch.long)
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def build_classification_batches(config: CalibrationConfig, tokenizer: Any) -> list[dict[str, torch.Tensor]]:
    """Encode labelled rows as sequence-classification batches.

    The rows are shuffled with ``seed`` and the first ``nsamples`` are kept (all of them when there are
    fewer). Each is encoded as ``tokenizer(text, text_pair)`` (``text_pair`` only with
    ``text_pair_column``), padded and truncated to ``seqlen`` tokens, as the GLUE pipeline of Kwon et
    al. (NeurIPS 2022) does with 128.

    Args:
        config: A calibration config with ``label_column`` set (``text_column`` defaults to ``"text"``).
        tokenizer: A transformers tokenizer with a pad token (a processor's tokenizer is used).

    Returns:
        Batches of ``{"input_ids", "attention_mask", "labels"}`` (plus ``token_type_ids`` when the
        tokenizer makes them), ``batch_size`` rows each (the last may be smaller); ``labels`` is long
        for integer labels, float for regression targets.

    Raises:
        ValueError: For missing columns, non-text cells, string labels, or a tokenizer that cannot pad.
    """
    table = load_labelled_table(config)
    text_col = config.text_column or "text"
    rng = random.Random(config.seed)
    order = list(range(len(table)))
    rng.shuffle(order)
    rows = table.select(order[: config.nsamples])
    texts = list(rows[text_col])
    pairs = list(rows[config.text_pair_column]) if config.text_pair_column else None
    for column, values in ((text_col, texts), (config.text_pair_column, pairs)):
        bad = [i for i, t in enumerate(values or []) if not isinstance(t, str)]
        if bad:
            raise ValueError(
                f"Column {column!r} of the labelled calibration data must hold text; picked row {bad[0]} "
                f"holds {values[bad[0]]!r}."  # type: ignore[index]
            )
    labels = _label_tensor(list(rows[config.label_column]), str(config.label_column))
    tok = text_tokenizer(tokenizer)
    if not callable(tok) or getattr(tok, "pad_token", None) is None:
        raise ValueError(
            f"Classification calibration pads every row to seqlen={config.seqlen}, so it needs a "
            f"transformers tokenizer with a pad token (got {type(tok).__name__}"
            f"{' without pad_token' if callable(tok) else ''}). Set tokenizer.pad_token (e.g. to the EOS "
            "token, and the model config's pad_token_id to match)."
        )
    try:
        encoded = tok(
            texts,
            pairs,
            padding="max_length",
            truncation=True,
            max_length=config.seqlen,
            return_tensors="pt",
        )
    except TypeError as err:
        raise ValueError(
            f"{type(tok).__name__} cannot encode (text, text_pair) batches with padding/truncation: {err}. "
            "Use a transformers tokenizer."
        ) from None
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    out = []
    for start in range(0, labels.shape[0], config.batch_size):
        stop = start + config.batch_size
        batch = {k: encoded[k][start:stop] for k in keys}
        if "attention_mask" not in batch:
            batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        batch["labels"] = labels[start:stop]
        out.append(batch)
    return out


# ------------------------------------------------------------------ image-text data (LLaVA)
_TEXT_DEFAULTS = ("text", "caption")
_DEFAULT_IMAGE_COLUMN = "image"
_CAPTIONS_FILE = "captions.jsonl"


@dataclass(frozen=True)
class ImageTextSample:
    """One image-text calibration sample.

    Args:
        image: A PIL image, or the path of an image file (opened only when the sample is picked).
        text: Its caption.
    """

    image: Any
    text: str

    def load_image(self) -> Any:
        """Return the image as an RGB PIL image."""
        from PIL import Image

        image = Image.open(self.image) if isinstance(self.image, (str, Path)) else self.image
        if not isinstance(image, Image.Image):
            raise ValueError(
                f"Image-text calibration sample holds a {type(image).__name__}, not a PIL image."
            )
        return image.convert("RGB")


def _jsonl_files(path: Path) -> list[Path]:
    if path.is_dir():
        captions = path / _CAPTIONS_FILE
        return [captions] if captions.is_file() else sorted(path.glob("*.jsonl"))
    return [path]


def _first_row(path: Path) -> dict[str, Any] | None:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return row if isinstance(row, dict) else None
    return None


def is_image_text(config: CalibrationConfig) -> bool:
    """Whether ``config`` describes image-text (LLaVA) calibration data rather than text.

    It does when ``image_column`` is set, when a ``datasets.Dataset`` has an ``"image"`` column, when
    a folder holds ``captions.jsonl``, or when a JSONL file's (or a folder's first JSONL file's) first
    row has an ``"image"`` field.

    Args:
        config: The calibration config.
    """
    if config.image_column is not None:
        return True
    data = config.dataset
    if isinstance(data, (list, tuple)):
        return False
    if not isinstance(data, str):  # datasets.Dataset
        return _DEFAULT_IMAGE_COLUMN in data.column_names
    path = Path(data).expanduser()
    if path.is_dir() and (path / _CAPTIONS_FILE).is_file():
        return True
    files = (
        [f for f in _jsonl_files(path) if f.suffix.lower() == ".jsonl" and f.is_file()]
        if path.exists()
        else []
    )
    if not files:
        return False
    row = _first_row(files[0])
    return row is not None and _DEFAULT_IMAGE_COLUMN in row


def _text_column(config: CalibrationConfig, columns: list[str], where: str) -> str:
    if config.text_column is not None:
        if config.text_column not in columns:
            raise ValueError(
                f"Image-text calibration data {where} has no text column {config.text_column!r} "
                f"(CalibrationConfig.text_column); its columns are {sorted(columns)}. Set text_column to one "
                "of them."
            )
        return config.text_column
    for name in _TEXT_DEFAULTS:
        if name in columns:
            return name
    raise ValueError(
        f"Image-text calibration data {where} has neither a 'text' nor a 'caption' column; its columns are "
        f"{sorted(columns)}. Set CalibrationConfig(text_column=...)."
    )


def load_image_text_samples(config: CalibrationConfig) -> list[ImageTextSample]:
    """Return every image-text sample of ``config`` (images from files stay unopened paths).

    Args:
        config: A calibration config for which :func:`is_image_text` holds: a JSONL file whose rows
            have an image path (relative to the file) and a caption, a folder holding
            ``captions.jsonl`` (or other ``.jsonl`` files) beside its images, or a ``datasets.Dataset``
            with an image column of PIL images and a text column.

    Raises:
        ValueError: For a missing column, a missing image file, a malformed row or no samples; the
            message names the field and the value.
    """
    image_col = config.image_column or _DEFAULT_IMAGE_COLUMN
    data = config.dataset
    samples: list[ImageTextSample] = []
    if isinstance(data, (list, tuple)):
        raise ValueError("Image-text calibration needs a JSONL file / folder or a datasets.Dataset.")
    if not isinstance(data, str):  # datasets.Dataset
        columns = list(data.column_names)
        if image_col not in columns:
            raise ValueError(
                f"Image-text calibration Dataset has no image column {image_col!r} "
                f"(CalibrationConfig.image_column); its columns are {sorted(columns)}. Set image_column to "
                "the column holding PIL images."
            )
        text_col = _text_column(config, columns, "(datasets.Dataset)")
        for i, row in enumerate(data):
            if not isinstance(row[text_col], str) or not row[text_col].strip():
                continue  # an empty caption carries no text statistics
            if row[image_col] is None:
                raise ValueError(f"Row {i} of the calibration Dataset has no image in column {image_col!r}.")
            samples.append(ImageTextSample(row[image_col], row[text_col]))
    else:
        path = Path(data).expanduser()
        if not path.exists():
            raise ValueError(f"CalibrationConfig.dataset={data!r}: no such file or folder.")
        files = _jsonl_files(path)
        if not files or any(f.suffix.lower() != ".jsonl" for f in files):
            raise ValueError(
                f"Image-text calibration data {data!r} must be a .jsonl file or a folder holding "
                f"{_CAPTIONS_FILE} (rows like {{{image_col!r}: 'img.png', 'text': 'a caption'}}, image paths "
                "relative to the file)."
            )
        for f in files:
            samples.extend(_jsonl_samples(f, config, image_col))
    if not samples:
        raise ValueError(
            f"Image-text calibration data {config.describe()['dataset']!r} holds no captioned images."
        )
    return samples


def _jsonl_samples(path: Path, config: CalibrationConfig, image_col: str) -> list[ImageTextSample]:
    out = []
    with path.open(encoding="utf-8") as fh:
        lines = [(n, line) for n, line in enumerate(fh, start=1) if line.strip()]
    for n, line in lines:
        where = f"{str(path)!r} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Image-text calibration file {where} is not valid JSON: {exc}.") from None
        if not isinstance(row, dict):
            raise ValueError(f"Image-text calibration file {where} must hold a JSON object per line.")
        if image_col not in row:
            raise ValueError(
                f"Image-text calibration file {where} has no image field {image_col!r} "
                f"(CalibrationConfig.image_column); its fields are {sorted(row)}. Set image_column to the "
                "field holding the image path."
            )
        text_col = _text_column(config, list(row), where)
        text = row[text_col]
        if not isinstance(text, str) or not text.strip():
            continue
        image = (path.parent / str(row[image_col])).expanduser()
        if not image.is_file():
            raise ValueError(
                f"Image-text calibration file {where}: {image_col}={row[image_col]!r} points to "
                f"{str(image)!r}, which does not exist. Image paths are relative to the JSONL file; fix "
                "the path or add the image."
            )
        out.append(ImageTextSample(image, text))
    return out


def _check_processor(processor: Any) -> None:
    from transformers import ProcessorMixin

    if (
        not isinstance(processor, ProcessorMixin)
        or getattr(processor, "image_processor", None) is None
        or getattr(processor, "tokenizer", None) is None
    ):
        got = "None" if processor is None else type(processor).__name__
        raise ValueError(
            f"image-text calibration needs a processor (got {got}): pass "
            "tokenizer=AutoProcessor.from_pretrained(model_id), or load the model with "
            "AutoPrunedModelForImageTextToText, which loads its processor."
        )


def build_image_text_batches(config: CalibrationConfig, processor: Any) -> list[dict[str, torch.Tensor]]:
    """Encode seeded image-text samples with a vision-language processor.

    Each sample is ``processor(images=[image], text=[image_token + newline + caption])``: the processor
    expands the image token to one token per image feature, so the model's forward runs the vision
    tower and projector and puts the image features into the language model's input. ``nsamples``
    samples are picked with ``seed`` (all of them when there are fewer); captions are cut after
    ``seqlen`` text tokens (the image tokens are never cut: LLaVA checks their count). Samples of equal
    length share a batch of up to ``batch_size``; nothing is padded, so no padding position enters
    the statistics.

    Args:
        config: An image-text calibration config (see :func:`is_image_text`).
        processor: The model's processor (``LlavaProcessor``).

    Returns:
        Batches of ``{"input_ids", "attention_mask", "pixel_values", ...}``.

    Raises:
        ValueError: Without a processor (a plain tokenizer or ``None``), or for bad data (see
            :func:`load_image_text_samples`).
    """
    _check_processor(processor)
    samples = load_image_text_samples(config)
    rng = random.Random(config.seed)
    picked = rng.sample(range(len(samples)), min(config.nsamples, len(samples)))
    image_token = getattr(processor, "image_token", None) or "<image>"
    image_id = processor.tokenizer.convert_tokens_to_ids(image_token)
    encoded = []
    for i in picked:
        sample = samples[i]
        enc = processor(
            images=[sample.load_image()], text=[f"{image_token}\n{sample.text}"], return_tensors="pt"
        )
        ids = enc["input_ids"]
        # Keep every image token and the first ``seqlen`` text tokens after them.
        is_text = ids[0] != image_id
        text_seen = torch.cumsum(is_text.long(), dim=0)
        keep = int((text_seen <= config.seqlen).sum())
        item = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}
        for key in ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"):
            if key in item and item[key].shape[-1] == ids.shape[-1]:
                item[key] = item[key][:, :keep]
        encoded.append(item)
    # Group equal lengths (in seeded order) so batches need no padding.
    groups: dict[int, list[dict[str, torch.Tensor]]] = {}
    for item in encoded:
        groups.setdefault(int(item["input_ids"].shape[-1]), []).append(item)
    batches = []
    for items in groups.values():
        for start in range(0, len(items), config.batch_size):
            chunk = items[start : start + config.batch_size]
            batches.append({k: torch.cat([c[k] for c in chunk], dim=0) for k in chunk[0]})
    return batches


def write_texts(texts: list[str], path: str | os.PathLike[str]) -> Path:
    """Write texts to a local calibration file (paragraphs separated by blank lines).

    Args:
        texts: The texts.
        path: Destination ``.txt`` file.
    """
    out = Path(path)
    out.write_text("\n\n".join(t.strip() for t in texts) + "\n", encoding="utf-8")
    return out
