"""``hf-prune eval FOLDER``: perplexity and lm-eval tasks of a saved checkpoint, recorded in its card."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``eval``.

    Args:
        subparsers: The ``hf-prune`` sub-parsers.
    """
    p = subparsers.add_parser(
        "eval",
        help="evaluate a saved checkpoint (perplexity, lm-eval tasks)",
        description=(
            "Evaluate an hf_prune checkpoint: perplexity on a local text file (Wanda/SparseGPT protocol) "
            "and/or lm-evaluation-harness tasks. With --dense, the dense model is evaluated the same way "
            "for the 'before' column. With --record, results go into pruning_config.json and README.md."
        ),
    )
    p.add_argument("folder", help="hf_prune checkpoint folder")
    p.add_argument("--perplexity", metavar="TEXTFILE", default=None, help="local UTF-8 text file to score")
    p.add_argument("--seqlen", type=int, default=None, help="perplexity window (default: min(2048, context))")
    p.add_argument("--max-windows", type=int, default=None, help="score only the first N windows")
    p.add_argument(
        "--tasks", nargs="+", default=None, help="lm-eval tasks, e.g. hellaswag arc_easy hf_prune_local"
    )
    p.add_argument("--include-path", default=None, help="extra lm-eval task folder")
    p.add_argument("--limit", type=float, default=None, help="documents per task (int) or fraction (< 1)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:0 ... (default: CUDA when available)")
    p.add_argument("--dense", default=None, help="dense model (folder / Hub id) to evaluate for 'before'")
    p.add_argument(
        "--record", action="store_true", help="write results into the checkpoint and re-render its card"
    )
    p.add_argument("--output", default=None, help="also write the results as JSON here")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _limit(value: float | None) -> int | float | None:
    if value is None:
        return None
    if value <= 0:
        raise ValueError(f"--limit must be positive, got {value}")
    return int(value) if value >= 1 and float(value).is_integer() else value


def _load_tokenizer(path: str, config: Any = None) -> Any:
    from transformers import AutoTokenizer

    try:
        # config= spares AutoTokenizer from re-reading a config.json with per_layer_config.
        return AutoTokenizer.from_pretrained(path, **({"config": config} if config is not None else {}))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"no tokenizer could be loaded from {path!r} (needed for perplexity): {err}"
        ) from None


def _perplexity(model: Any, tokenizer: Any, text_file: Path, args: argparse.Namespace) -> float:
    from hf_prune.evaluation.perplexity import perplexity

    config = getattr(model, "config", None)
    context = getattr(getattr(config, "get_text_config", lambda: config)(), "max_position_embeddings", None)
    seqlen = args.seqlen or min(2048, context or 2048)
    return perplexity(
        model,
        tokenizer,
        text_file,
        seqlen=seqlen,
        max_windows=args.max_windows,
        progress=not args.no_progress,
    )


def record_results(folder: Path, evaluation: dict[str, Any]) -> None:
    """Merge ``evaluation`` into the checkpoint's report and re-render its card.

    Args:
        folder: Checkpoint folder.
        evaluation: Entries for ``report.evaluation``.
    """
    from hf_prune.config import CONFIG_NAME, read_json
    from hf_prune.integration.card import write_card

    path = folder / CONFIG_NAME
    record = read_json(path, what="pruning config")
    report = record.setdefault("report", {})
    current = report.setdefault("evaluation", {})
    for key, entry in evaluation.items():
        current.setdefault(key, {}).update(entry)
    # Written next to the file and renamed: a crash never leaves half a pruning_config.json.
    fd, tmp = tempfile.mkstemp(prefix=f".{CONFIG_NAME}.", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    write_card(folder)


def run(args: argparse.Namespace) -> int:
    """Execute ``hf-prune eval``.

    Args:
        args: Parsed arguments.

    Returns:
        Exit code.
    """
    from hf_prune.config import CONFIG_NAME
    from hf_prune.integration.auto import load_checkpoint_any

    folder = Path(args.folder).expanduser()
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not an hf_prune checkpoint (no {CONFIG_NAME})")
    if not args.perplexity and not args.tasks:
        raise ValueError("nothing to evaluate: pass --perplexity TEXTFILE and/or --tasks TASK ...")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    limit = _limit(args.limit)
    evaluation: dict[str, dict[str, Any]] = {}
    lines = []

    if args.perplexity:
        text_file = Path(args.perplexity).expanduser()
        if not text_file.is_file():
            raise FileNotFoundError(f"--perplexity file {str(text_file)!r} does not exist")
        pruned = load_checkpoint_any(folder)
        tokenizer = _load_tokenizer(str(folder), pruned.base_model.config)
        entry: dict[str, Any] = {
            "after": _perplexity(pruned, tokenizer, text_file, args),
            "dataset": text_file.name,
        }
        if args.dense:
            from transformers import AutoModelForCausalLM

            dense = AutoModelForCausalLM.from_pretrained(args.dense).eval()
            entry["before"] = _perplexity(dense, tokenizer, text_file, args)
        evaluation["perplexity"] = entry
        before = f"{entry['before']:.4f} -> " if "before" in entry else ""
        lines.append(f"perplexity ({text_file.name}): {before}{entry['after']:.4f}")

    raw: dict[str, Any] = {}
    if args.tasks:
        from hf_prune.evaluation.evaluators import HolisticEvaluator
        from hf_prune.evaluation.lm_eval import run_lm_eval, summarize_results

        kwargs = {"include_path": args.include_path, "limit": limit, "batch_size": args.batch_size}
        if args.dense:
            evaluator = HolisticEvaluator(args.tasks, **kwargs)
            before_res = run_lm_eval(args.dense, None, args.tasks, device=args.device, **kwargs)
            after_res = run_lm_eval(folder, None, args.tasks, device=args.device, **kwargs)
            table = evaluator.compare(before_res, after_res)
            for row in table.rows:
                entry = {"task": row["task"], "metric": row["metric"], "source": "lm-evaluation-harness"}
                entry.update({k: row[k] for k in ("before", "after") if row[k] is not None})
                evaluation[f"{row['task']}/{row['metric']}"] = entry
            lines.append(table.to_markdown())
            raw = {"before": before_res.get("results"), "after": after_res.get("results")}
        else:
            res = run_lm_eval(folder, None, args.tasks, device=args.device, **kwargs)
            for task, metrics in summarize_results(res).items():
                for metric, value in metrics.items():
                    evaluation[f"{task}/{metric}"] = {
                        "after": value,
                        "task": task,
                        "metric": metric,
                        "source": "lm-evaluation-harness",
                    }
                    lines.append(f"{task} {metric}: {value:.4f}")
            raw = {"after": res.get("results")}

    print("\n".join(lines))
    if args.output:
        Path(args.output).write_text(
            json.dumps({"evaluation": evaluation, "lm_eval": raw}, indent=2, default=str)
        )
    if args.record:
        record_results(folder, evaluation)
        print(f"recorded in {folder / CONFIG_NAME} and {folder / 'README.md'}")
    return 0
