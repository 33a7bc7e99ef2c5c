"""Bridge to EleutherAI's lm-evaluation-harness (``lm_eval``, optional extra ``hf_prune[eval]``).

Three ways in:

* :func:`run_lm_eval` evaluates an in-memory :class:`~hf_prune.PrunedModel` (or any causal
  ``PreTrainedModel``) by wrapping it in lm-eval's ``HFLM``, or a saved checkpoint folder through the
  ``hf-pruned`` model type.
* :func:`register_hf_pruned` registers the ``hf-pruned`` model type: an ``HFLM`` whose loading goes
  through :class:`~hf_prune.AutoPrunedModelForCausalLM`, so checkpoints with per-layer widths (which
  plain transformers refuses) load too.
* ``hf-prune lm-eval ARGS...`` registers ``hf-pruned`` and hands ``ARGS`` unchanged to lm-eval's own
  command line (lm-eval reads no plugin entry points, so ``lm_eval --model hf-pruned`` alone cannot
  see the class).

:func:`local_task_dir` holds two small offline tasks built from the zoo corpus' held-out split:
``hfp_code_ppl`` (``loglikelihood_rolling`` perplexity) and ``hfp_code_mc`` (4-way multiple choice:
which line comes next), tagged ``hf_prune_local``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hf_prune.report import PruningReport

__all__ = [
    "LOCAL_TASKS",
    "build_local_task_data",
    "local_task_dir",
    "record_lm_eval",
    "register_hf_pruned",
    "run_lm_eval",
    "summarize_results",
]

#: The offline tasks shipped in :func:`local_task_dir`.
LOCAL_TASKS: tuple[str, ...] = ("hfp_code_ppl", "hfp_code_mc")

#: Name of the lm-eval model type registered by :func:`register_hf_pruned`.
MODEL_TYPE = "hf-pruned"

_EXTRA_HINT = "pip install 'hf_prune[eval]'"
_HF_PRUNED_CLASS: Any = None


def require_lm_eval() -> Any:
    """Import ``lm_eval`` or fail with a message naming the extra to install.

    Returns:
        The ``lm_eval`` module.

    Raises:
        ImportError: If lm-evaluation-harness is not installed.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401  (needs the [hf] extra)
    except ImportError as err:
        raise ImportError(
            f"The lm-evaluation-harness bridge needs lm-eval with its HF backend: {_EXTRA_HINT} "
            f"(or pip install 'lm_eval[hf]>=0.4.13'). Original error: {err}"
        ) from err
    return lm_eval


def local_task_dir() -> Path:
    """Return the folder of hf_prune's offline lm-eval tasks (pass it as ``--include_path``).

    The YAMLs there use ``dataset_path: json``; their ``data_files`` resolve (through lm-eval's
    ``!function`` tag and ``paths.py`` next to them) to the JSON files shipped in the same folder, so
    the folder works from any working directory and needs no network.

    Returns:
        The absolute path of ``hf_prune/evaluation/tasks``.
    """
    return Path(__file__).resolve().parent / "tasks"


# ----------------------------------------------------------------------------------- task data
def _chunks(text: str, min_chars: int, max_chars: int) -> list[str]:
    """Cut a source file into runs of whole lines of ``min_chars..max_chars`` characters."""
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for line in text.split("\n"):
        if size + len(line) + 1 > max_chars and size >= min_chars:
            out.append("\n".join(cur).strip("\n"))
            cur, size = [], 0
        cur.append(line)
        size += len(line) + 1
    if size >= min_chars:
        out.append("\n".join(cur).strip("\n"))
    return [c for c in out if min_chars <= len(c) <= max_chars and c.strip()]


def build_local_task_data(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    texts: Sequence[str] | None = None,
    n_ppl: int = 40,
    n_mc: int = 60,
    seed: int = 0,
) -> dict[str, Path]:
    """(Re)build the JSON data of the local tasks from the zoo corpus' held-out split.

    The shipped files were made with the defaults on Python 3.11; the stdlib text differs between
    Python versions, so rebuilding elsewhere gives similar but not identical items.

    ``hfp_code_ppl.json``: ``{"text"}`` rows, runs of whole lines (300-700 characters).
    ``hfp_code_mc.json``: ``{"context", "choices", "label"}`` rows: a context of consecutive lines, the
    true next line and three distractor lines of similar length drawn from other places.

    Args:
        out_dir: Destination folder (default: :func:`local_task_dir`).
        texts: Source texts (default: ``hf_prune.zoo.get_eval_texts("heldout")``).
        n_ppl: Number of perplexity documents.
        n_mc: Number of multiple-choice items.
        seed: Seed of the sampling.

    Returns:
        ``{"hfp_code_ppl": path, "hfp_code_mc": path}``.

    Raises:
        ValueError: If the texts are too short for the requested number of items.
    """
    if texts is None:
        from hf_prune.zoo import get_eval_texts

        texts = get_eval_texts("heldout")
    rng = random.Random(seed)
    chunks = [c for t in texts for c in _chunks(t, 300, 700)]
    if len(chunks) < n_ppl:
        raise ValueError(f"only {len(chunks)} text chunks available, fewer than n_ppl={n_ppl}")
    ppl = [{"text": c} for c in rng.sample(chunks, n_ppl)]

    # Lines worth predicting: not blank, not too short, not pure punctuation.
    lines = [
        (ti, li, line)
        for ti, t in enumerate(texts)
        for li, line in enumerate(t.split("\n"))
        if 12 <= len(line.strip()) <= 80
    ]
    if len(lines) < 4 * n_mc:
        raise ValueError(f"only {len(lines)} candidate lines, too few for n_mc={n_mc}")
    by_len = sorted(lines, key=lambda x: len(x[2]))
    mc = []
    for ti, li, target in rng.sample(lines, len(lines)):
        if len(mc) >= n_mc:
            break
        src = texts[ti].split("\n")
        context_lines = [x for x in src[max(0, li - 6) : li]]
        context = "\n".join(context_lines)
        if len(context.strip()) < 40:
            continue
        # Distractors of similar length from another file, so length alone does not give it away.
        pos = next(i for i, x in enumerate(by_len) if x[2] == target)
        window = by_len[max(0, pos - 60) : pos + 60]
        others = [x[2] for x in window if x[0] != ti and x[2].strip() != target.strip()]
        others = sorted(set(others))
        if len(others) < 3:
            continue
        distractors = rng.sample(others, 3)
        choices = [target, *distractors]
        rng.shuffle(choices)
        mc.append({"context": context + "\n", "choices": choices, "label": choices.index(target)})
    if len(mc) < n_mc:
        raise ValueError(f"could only build {len(mc)} multiple-choice items, fewer than n_mc={n_mc}")
    out = Path(out_dir) if out_dir is not None else local_task_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = {"hfp_code_ppl": out / "hfp_code_ppl.json", "hfp_code_mc": out / "hfp_code_mc.json"}
    for name, rows in (("hfp_code_ppl", ppl), ("hfp_code_mc", mc)):
        paths[name].write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths


# --------------------------------------------------------------------------- the hf-pruned model
def _is_local_pruned(pretrained: str, subfolder: str = "") -> bool:
    from hf_prune.config import CONFIG_NAME

    return (Path(pretrained).expanduser() / (subfolder or "") / CONFIG_NAME).is_file()


def register_hf_pruned() -> type:
    """Register lm-eval's ``hf-pruned`` model type (idempotent) and return its class.

    ``hf-pruned`` takes the same ``--model_args`` as lm-eval's ``hf`` (``pretrained=FOLDER_OR_REPO``,
    ``tokenizer=``, ``dtype=``, ``device=``, ``batch_size=`` ...). An hf_prune checkpoint (one with
    ``pruning_config.json``) is rebuilt exactly with
    :class:`~hf_prune.AutoPrunedModelForCausalLM`, per-layer widths included; any other model
    falls back to ``hf``'s own loading.

    Returns:
        The registered ``HFLM`` subclass.

    Raises:
        ImportError: If lm-eval is not installed.
    """
    global _HF_PRUNED_CLASS
    if _HF_PRUNED_CLASS is not None:
        return _HF_PRUNED_CLASS
    require_lm_eval()
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM

    class HFPrunedLM(HFLM):
        """lm-eval ``HFLM`` that loads hf_prune checkpoints through ``AutoPrunedModelForCausalLM``."""

        def __init__(self, pretrained: Any, *args: Any, **kwargs: Any) -> None:
            self._pruned: Any = None
            if isinstance(pretrained, os.PathLike):
                pretrained = os.fspath(pretrained)
            super().__init__(pretrained, *args, **kwargs)

        def _get_config(
            self,
            pretrained: str,
            *,
            revision: str = "main",
            trust_remote_code: bool = False,
            gguf_file: str | None = None,
            subfolder: str = "",
        ) -> None:
            """Load the pruned checkpoint (its config is the rebuilt model's) or defer to ``HFLM``."""
            from hf_prune.integration.auto import AutoPrunedModelForCausalLM

            target = str(Path(pretrained).expanduser() / subfolder) if subfolder else pretrained
            local = Path(target).expanduser().is_dir()
            if local and not _is_local_pruned(target):
                return super()._get_config(
                    pretrained,
                    revision=revision,
                    trust_remote_code=trust_remote_code,
                    gguf_file=gguf_file,
                    subfolder=subfolder,
                )
            try:
                self._pruned = AutoPrunedModelForCausalLM.from_pretrained(
                    target, revision=None if local else revision
                )
            except FileNotFoundError:
                # A Hub repo without pruning_config.json: an ordinary model, load it as `hf` does.
                return super()._get_config(
                    pretrained,
                    revision=revision,
                    trust_remote_code=trust_remote_code,
                    gguf_file=gguf_file,
                    subfolder=subfolder,
                )
            self._config = self._pruned.base_model.config

        def _create_tokenizer(self, pretrained: Any, tokenizer: Any, *args: Any, **kwargs: Any) -> None:
            """Load the folder's tokenizer with the rebuilt config.

            ``AutoTokenizer`` otherwise re-reads ``config.json``, which transformers cannot parse when it
            holds ``per_layer_config``.
            """
            if self._pruned is not None and not tokenizer and isinstance(pretrained, str):
                from transformers import AutoTokenizer

                local = Path(pretrained).expanduser()
                source = str(local / kwargs.get("subfolder", "")) if local.is_dir() else pretrained
                tokenizer = AutoTokenizer.from_pretrained(
                    source,
                    config=self._pruned.base_model.config,
                    use_fast=kwargs.get("use_fast_tokenizer", True),
                    **(
                        {"revision": kwargs["revision"]}
                        if kwargs.get("revision") and not local.is_dir()
                        else {}
                    ),
                )
            return super()._create_tokenizer(pretrained, tokenizer, *args, **kwargs)

        def _create_model(self, pretrained: str, *args: Any, **kwargs: Any) -> None:
            """Use the model rebuilt in ``_get_config``; cast to ``dtype`` when one is asked for."""
            if self._pruned is None:
                return super()._create_model(pretrained, *args, **kwargs)
            from lm_eval.models.utils_hf import get_dtype

            for unsupported in ("peft", "delta", "autogptq", "gptqmodel", "gguf_file"):
                if kwargs.get(unsupported):
                    raise ValueError(f"hf-pruned does not support {unsupported}=; use the 'hf' model type.")
            model = self._pruned.base_model
            dtype = kwargs.get("dtype", "auto")
            if dtype not in (None, "auto"):
                model = model.to(get_dtype(dtype))
            self._model = model

        def get_model_info(self) -> dict:
            """Model info for lm-eval's results; no Hub lookup for a local folder."""
            info = {
                "model_num_parameters": sum(p.numel() for p in self._model.parameters()),
                "model_dtype": str(getattr(self._model, "dtype", "")),
                "model_revision": self.revision,
                "model_sha": "",
            }
            if isinstance(self.pretrained, str) and not Path(self.pretrained).expanduser().exists():
                info = {**super().get_model_info(), **{k: v for k, v in info.items() if k != "model_sha"}}
            if self._pruned is not None:
                info["hf_prune_method"] = self._pruned.report.method
            return info

    HFPrunedLM.__module__ = __name__
    register_model(MODEL_TYPE)(HFPrunedLM)
    _HF_PRUNED_CLASS = HFPrunedLM
    return HFPrunedLM


# ------------------------------------------------------------------------------------- running
def _task_list(tasks: str | Iterable[str]) -> list[str]:
    if isinstance(tasks, str):
        names = [t.strip() for t in tasks.split(",") if t.strip()]
    else:
        names = list(tasks)
        bad = [t for t in names if not isinstance(t, str) or not t.strip()]
        if bad:
            raise TypeError(f"tasks must be task-name strings; got {bad!r}")
    if not names:
        raise ValueError("tasks is empty: name at least one lm-eval task (e.g. 'hfp_code_mc').")
    return names


def run_lm_eval(
    model: Any,
    tokenizer: Any = None,
    tasks: str | Iterable[str] = LOCAL_TASKS,
    *,
    include_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    batch_size: int = 1,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Evaluate a pruned model with lm-evaluation-harness.

    Args:
        model: A :class:`~hf_prune.PrunedModel` or causal ``PreTrainedModel`` in memory (wrapped in
            lm-eval's ``HFLM``), or the path / Hub id of a saved checkpoint (loaded through the
            ``hf-pruned`` model type, exactly as ``hf-prune lm-eval --model hf-pruned`` does).
        tokenizer: The tokenizer (object or path). Required for in-memory models whose
            ``name_or_path`` has no tokenizer; for a folder, default is the folder's own tokenizer.
        tasks: lm-eval task names (list or comma-separated string): e.g. ``hellaswag``,
            ``arc_easy``, ``winogrande``, ``mmlu``, ``wikitext`` (need the network), or the offline
            :data:`LOCAL_TASKS`.
        include_path: Extra task folder(s); :func:`local_task_dir` is always included.
        batch_size: Batch size of lm-eval's requests.
        limit: Evaluate only this many (int) or this fraction (float < 1) of each task's documents.
        num_fewshot: Few-shot examples per prompt (task default when ``None``).
        device: Device for a model loaded from a path (default: CUDA when available, else CPU).
            In-memory models stay where they are.
        **kwargs: Passed to ``lm_eval.simple_evaluate`` (``log_samples``, ``random_seed``, ...).

    Returns:
        lm-eval's results dict (``results``, ``configs``, ``versions``, ...). Use
        :func:`summarize_results` for a flat ``{task: {metric: value}}`` view.

    Raises:
        ImportError: If lm-eval is not installed.
        TypeError: If ``model`` is neither a model nor a path, or ``tasks`` is malformed.
        ValueError: If ``batch_size``/``limit`` are out of range or no tokenizer can be found.
    """
    require_lm_eval()
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedModel

    from hf_prune.integration.pruned_model import PrunedModel

    names = _task_list(tasks)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0):
        raise ValueError(f"limit={limit!r} must be a positive int (documents) or float (fraction)")
    if isinstance(model, (str, os.PathLike)):
        cls = register_hf_pruned()
        lm = cls(
            pretrained=os.fspath(model),
            tokenizer=os.fspath(tokenizer) if isinstance(tokenizer, os.PathLike) else tokenizer,
            batch_size=batch_size,
            device=device or ("cuda" if torch.cuda.is_available() else "cpu"),
        )
    else:
        base = model.base_model if isinstance(model, PrunedModel) else model
        if not isinstance(base, PreTrainedModel):
            raise TypeError(
                "model must be a PrunedModel, a transformers PreTrainedModel or a checkpoint path; "
                f"got {type(model).__name__}"
            )
        if tokenizer is None:
            source = str(getattr(base.config, "_name_or_path", "") or "")
            if not source:
                raise ValueError(
                    "tokenizer is required for an in-memory model whose config has no _name_or_path."
                )
            tokenizer = source
        lm = HFLM(
            pretrained=base,
            tokenizer=os.fspath(tokenizer) if isinstance(tokenizer, os.PathLike) else tokenizer,
            batch_size=batch_size,
        )
    paths: list[str] = [str(local_task_dir())]
    if include_path is not None:
        extra = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path)
        paths = [os.fspath(p) for p in extra] + paths
    # Indexing lm-eval's thousands of built-in task YAMLs takes seconds; skip it when every requested
    # task lives in the given folders (e.g. the offline local tasks).
    manager = TaskManager(include_path=paths, include_defaults=False)
    if not set(names) <= set(manager.all_tasks):
        manager = TaskManager(include_path=paths)
    results = simple_evaluate(
        model=lm, tasks=names, task_manager=manager, limit=limit, num_fewshot=num_fewshot, **kwargs
    )
    if results is None:  # non-zero ranks under accelerate get None
        return {}
    return results


def summarize_results(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Flatten lm-eval's ``results`` into ``{task: {metric: value}}`` (filters and stderr dropped).

    ``"acc,none"`` becomes ``"acc"``; a non-default filter stays as ``"exact_match (strict-match)"``.

    Args:
        results: The dict returned by :func:`run_lm_eval` / ``simple_evaluate``, or the content of
            lm-eval's ``results_*.json``.

    Returns:
        The flat mapping (numbers only).

    Raises:
        ValueError: If ``results`` has no ``"results"`` section.
    """
    section = results.get("results") if isinstance(results, Mapping) else None
    if not isinstance(section, Mapping):
        raise ValueError("not an lm-eval results dict: it has no 'results' section")
    out: dict[str, dict[str, float]] = {}
    for task, metrics in section.items():
        row: dict[str, float] = {}
        for key, value in metrics.items():
            # sample_len is a count of documents, not a metric.
            if key in ("alias", "sample_len") or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            if isinstance(value, bool):
                continue
            metric, _, filt = key.partition(",")
            row[metric if filt in ("", "none") else f"{metric} ({filt})"] = float(value)
        if row:
            out[task] = row
    return out


def record_lm_eval(
    report: PruningReport,
    results: Mapping[str, Any],
    stage: str = "after",
    *,
    source: str = "lm-evaluation-harness",
) -> dict[str, Any]:
    """Store lm-eval results in ``report.evaluation`` (shown in the card and its ``model-index``).

    Each metric becomes an entry ``"<task>/<metric>": {"before": .., "after": .., "task": ..,
    "metric": .., "source": ..}``; call once with ``stage="before"`` on the dense model's results and
    once with ``stage="after"`` on the pruned model's.

    Args:
        report: The pruning report to update (``pruned.report``).
        results: lm-eval results (see :func:`summarize_results`).
        stage: ``"before"`` or ``"after"``.
        source: Recorded as the results' source in the card.

    Returns:
        ``report.evaluation`` after the update.

    Raises:
        ValueError: If ``stage`` is not ``"before"`` or ``"after"``.
    """
    if stage not in ("before", "after"):
        raise ValueError(f"stage={stage!r} must be 'before' or 'after'")
    for task, metrics in summarize_results(results).items():
        for metric, value in metrics.items():
            entry = report.evaluation.setdefault(f"{task}/{metric}", {})
            entry.update({stage: value, "task": task, "metric": metric, "source": source})
    return report.evaluation
