"""Building, caching and loading zoo models.

Shipped weights: the trained ``llama-gqa-small``, ``opt-small`` and ``llava-tiny`` are package data
under ``hf_prune/zoo/weights/<name>/`` (float16 safetensors, tokenizer, card, metrics and a
``zoo_manifest.json`` of sha256 hashes). :func:`load_zoo_model` uses them when their manifest was
made from the current recipe, verifies every hash at each load, and refuses a folder whose files do
not match (:class:`ZooIntegrityError`) instead of using it. Models without shipped weights, or
whose recipe changed since shipping, are built into the cache.

Cache layout: ``$HF_PRUNE_CACHE/zoo/<name>/`` (``HF_PRUNE_CACHE`` defaults to ``~/.cache/hf_prune``).
A build writes into a temporary sibling folder and renames it into place, so a crashed build never
leaves a half-written model under the final name. Its last file is ``zoo_manifest.json``, holding the
sha256 of every other file and the recipe fingerprint; a cached folder whose manifest is missing,
whose files do not match their hashes or whose recipe changed is rebuilt with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import tokenizers
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from hf_prune.utils import transformers_progress
from hf_prune.zoo.card import write_model_card
from hf_prune.zoo.corpus import corpus_summary
from hf_prune.zoo.recipes import ZooRecipe, get_recipe

logger = logging.getLogger(__name__)

#: Package data folder holding the shipped, pre-trained zoo models (one sub-folder per name).
SHIPPED_ROOT = Path(__file__).resolve().parent / "weights"
MANIFEST_NAME = "zoo_manifest.json"
METRICS_NAME = "zoo_metrics.json"
MANIFEST_FORMAT = 1
_PIPELINE_TAGS = {
    "causal_lm": "text-generation",
    "sequence_classification": "text-classification",
    "llava": "image-text-to-text",
}


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder that holds zoo models.

    Args:
        cache_dir: The hf_prune cache root; ``None`` reads ``HF_PRUNE_CACHE`` (default
            ``~/.cache/hf_prune``). Models live in its ``zoo/`` sub-folder.

    Returns:
        ``<cache root>/zoo``.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("HF_PRUNE_CACHE") or Path.home() / ".cache" / "hf_prune"
    return Path(cache_dir).expanduser() / "zoo"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(model_dir: Path, recipe: ZooRecipe, extra: dict[str, Any]) -> Path:
    """Write ``zoo_manifest.json`` with the sha256 of every file in ``model_dir`` (call it last).

    Args:
        model_dir: The finished model folder.
        recipe: The recipe it was built from.
        extra: More metadata to record (seed, steps, versions, corpus).

    Returns:
        The manifest's path.
    """
    files = {
        path.relative_to(model_dir).as_posix(): _sha256_file(path)
        for path in sorted(model_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": recipe.name,
        "recipe_fingerprint": recipe.fingerprint(),
        "files": files,
        **extra,
    }
    path = model_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def verify_model_dir(model_dir: Path, recipe: ZooRecipe) -> str | None:
    """Check a cached model folder against its manifest.

    Args:
        model_dir: The cached folder.
        recipe: The current recipe of the model.

    Returns:
        ``None`` if the folder is complete and unaltered, else a short reason why it is not.
    """
    manifest_path = model_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return f"{MANIFEST_NAME} is missing (incomplete build)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        fingerprint = manifest["recipe_fingerprint"]
    except (ValueError, KeyError, TypeError):
        return f"{MANIFEST_NAME} is unreadable"
    if manifest.get("format") != MANIFEST_FORMAT:
        return f"{MANIFEST_NAME} has format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}"
    if fingerprint != recipe.fingerprint():
        return "it was built from a different recipe or build version"
    if not isinstance(files, dict) or not files:
        return f"{MANIFEST_NAME} lists no files"
    for relative, expected in sorted(files.items()):
        path = model_dir / relative
        if not path.is_file():
            return f"file {relative} is missing"
        if _sha256_file(path) != expected:
            return f"file {relative} does not match its recorded sha256"
    return None


class ZooIntegrityError(RuntimeError):
    """A shipped zoo model's files do not match the sha256 hashes of its manifest."""


def shipped_model_dir(name: str) -> Path | None:
    """Return the folder of a zoo model shipped with hf_prune, or ``None`` if it is not shipped.

    Args:
        name: A zoo model name.

    Returns:
        ``hf_prune/zoo/weights/<name>`` when that folder exists, else ``None``.
    """
    folder = SHIPPED_ROOT / name
    return folder if folder.is_dir() else None


def shipped_recipe_matches(model_dir: Path, recipe: ZooRecipe) -> bool:
    """Tell whether a shipped folder was made from ``recipe`` (by its manifest's fingerprint).

    Args:
        model_dir: A shipped model folder.
        recipe: The current recipe.

    Returns:
        ``False`` when the manifest names another recipe (the copy does not apply: use the cache);
        ``True`` when it names this recipe, or when the manifest is unreadable or missing (the
        integrity check then reports the folder as tampered rather than silently skipping it).
    """
    try:
        manifest = json.loads((model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        return manifest.get("recipe_fingerprint") == recipe.fingerprint()
    except (OSError, ValueError, AttributeError):
        # Unreadable or missing manifest: let the full check report it as tampering.
        return True


def _builder(recipe: ZooRecipe) -> Any:
    # Imported lazily: each builder pulls in what only it needs.
    if recipe.kind == "causal_lm":
        from hf_prune.zoo.build_lm import build_causal_lm

        return build_causal_lm
    if recipe.kind == "sequence_classification":
        from hf_prune.zoo.build_cls import build_sequence_classifier

        return build_sequence_classifier
    from hf_prune.zoo.build_llava import build_llava

    return build_llava


def _check_optional_int(name: str, value: Any, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}={value} is out of range; it must be >= {minimum}")


def build_zoo_model(
    name: str,
    output_dir: str | os.PathLike[str],
    *,
    max_steps: int | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> Path:
    """Build a zoo model from its recipe and save it (weights, tokenizer, card, metrics, manifest).

    Args:
        name: A zoo model name (see :func:`list_models`).
        output_dir: Destination folder; it is replaced if it exists. The build happens in a temporary
            sibling folder that is renamed into place when complete.
        max_steps: Override the recipe's optimizer steps (e.g. a few steps in tests).
        seed: Override the recipe's seed.
        progress: Show progress bars.

    Returns:
        The output folder.

    Raises:
        ValueError: If ``name`` is unknown or an override is out of range.
    """
    _check_optional_int("max_steps", max_steps, minimum=1)
    _check_optional_int("seed", seed, minimum=0)
    registered = get_recipe(name)
    # The overrides become part of the recipe (and its fingerprint), so a shortened build is never
    # mistaken for the registered recipe's model by load_zoo_model.
    recipe = dataclasses.replace(
        registered,
        max_steps=registered.max_steps if max_steps is None else max_steps,
        seed=registered.seed if seed is None else seed,
    )
    steps, run_seed = recipe.max_steps, recipe.seed
    output = Path(output_dir).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.building-", dir=output.parent))
    try:
        # mkdtemp creates the folder private (0700); give it the permissions of a normal folder.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        start = time.perf_counter()
        model, tokenizer, metrics = _builder(recipe)(recipe, staging, steps, run_seed, progress)
        wall_time = time.perf_counter() - start
        if recipe.save_dtype != "float32":
            model = model.to(getattr(torch, recipe.save_dtype))
        with transformers_progress(progress):
            model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        versions = {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        }
        metrics = {
            "name": recipe.name,
            "recipe": recipe.to_dict(),
            "recipe_fingerprint": recipe.fingerprint(),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "corpus": corpus_summary(),
            "versions": versions,
            **metrics,
        }
        metrics["training"].update({"wall_time_s": wall_time, "steps": steps, "seed": run_seed})
        (staging / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        write_model_card(
            staging,
            recipe,
            metrics,
            pipeline_tag=_PIPELINE_TAGS[recipe.kind],
            base_model=recipe.extra.get("base_model"),
        )
        # Written last: its presence certifies a complete build.
        write_manifest(
            staging,
            recipe,
            {
                "seed": run_seed,
                "max_steps": steps,
                "recipe": recipe.to_dict(),
                "python_version": metrics["corpus"]["python_version"],
                "corpus_sha256": metrics["corpus"]["corpus_sha256"],
                "versions": versions,
            },
        )
        _install(staging, output, recipe)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return output


def _install(staging: Path, output: Path, recipe: ZooRecipe) -> None:
    # os.replace cannot overwrite a non-empty folder, so the old copy is removed first. Another process
    # (a parallel test run, another user of the cache) may install the same model in between; its
    # copy is kept when valid and this build is discarded.
    for _ in range(3):
        if output.exists():
            shutil.rmtree(output, ignore_errors=True)
        try:
            os.replace(staging, output)
            return
        except OSError:
            if output.exists() and verify_model_dir(output, recipe) is None:
                return
    raise OSError(f"could not move the finished build {staging} to {output}")


def _load(model_dir: Path, recipe: ZooRecipe) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    # Stored weights may be half precision; pruning math and the recorded metrics are float32.
    with transformers_progress():
        if recipe.kind == "causal_lm":
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        elif recipe.kind == "sequence_classification":
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
        else:
            from transformers import LlavaForConditionalGeneration

            model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer


def load_zoo_model(
    name: str, cache_dir: str | os.PathLike[str] | None = None, rebuild: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a zoo model: the shipped weights when present, else the cache (built when needed).

    Shipped weights (package data, see :data:`SHIPPED_ROOT`) are used when their manifest was made
    from the current recipe; every file's sha256 is checked first. Otherwise the model comes from the
    cache, which is built when missing and rebuilt (with a warning) when altered or outdated.

    Args:
        name: A zoo model name (see :func:`list_models`).
        cache_dir: The hf_prune cache root; ``None`` reads ``HF_PRUNE_CACHE`` (default
            ``~/.cache/hf_prune``). A cached model lives in ``<cache root>/zoo/<name>/``.
        rebuild: Ignore shipped and cached copies and build from the recipe into the cache.

    Returns:
        The model (float32, in eval mode) and its tokenizer.

    Raises:
        ValueError: If ``name`` is unknown (the message lists the known names).
        ZooIntegrityError: If the shipped copy's files do not match their recorded hashes.
    """
    recipe = get_recipe(name)
    shipped = None if rebuild else shipped_model_dir(name)
    if shipped is not None:
        if shipped_recipe_matches(shipped, recipe):
            problem = verify_model_dir(shipped, recipe)
            if problem is not None:
                raise ZooIntegrityError(
                    f"the shipped zoo model {name!r} at {shipped} failed its integrity check: {problem}. "
                    f"Reinstall hf_prune, or build it from the recipe with `hf-prune zoo build {name}` "
                    f"(load_zoo_model({name!r}, rebuild=True))"
                )
            return _load(shipped, recipe)
        logger.info("shipped %s was made from another recipe; using the cache instead", name)
    model_dir = cache_root(cache_dir) / name
    if rebuild or not model_dir.exists():
        build_zoo_model(name, model_dir)
    else:
        problem = verify_model_dir(model_dir, recipe)
        if problem is not None:
            warnings.warn(
                f"cached zoo model {name!r} at {model_dir} is not usable ({problem}); rebuilding it",
                RuntimeWarning,
                stacklevel=2,
            )
            build_zoo_model(name, model_dir)
    return _load(model_dir, recipe)
