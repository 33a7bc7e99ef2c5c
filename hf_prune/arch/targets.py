"""Resolve ``target_modules`` / ``exclude_modules`` patterns to concrete projections.

A pattern that matches nothing is an error: a popular peer silently prunes ``lm_head`` when
``ignore=["lm_head"]`` matches no module, and we refuse to repeat that.
"""

from __future__ import annotations

import re

from transformers import PreTrainedModel

from hf_prune.arch import LinearRef, is_linear, iter_block_linears


def matches(name: str, pattern: str) -> bool:
    r"""Whether module ``name`` matches ``pattern``.

    A pattern matches when it equals the name, is a dotted suffix of it (``"mlp.down_proj"``), or
    fully matches it as a regular expression (``r".*\.layers\.[0-3]\..*"``).

    Args:
        name: Full dotted module name.
        pattern: The pattern.
    """
    if name == pattern or name.endswith("." + pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def resolve_targets(
    model: PreTrainedModel,
    target_modules: list[str] | None,
    exclude_modules: list[str] | None,
) -> list[LinearRef]:
    """Return the projections to prune, in module order.

    Args:
        model: A supported model.
        target_modules: Patterns, or ``None`` for every projection inside the blocks (so embeddings,
            ``lm_head`` and classifier heads are excluded by default). Explicit patterns may reach any
            Linear/Conv1D of the model, ``lm_head`` included.
        exclude_modules: Patterns removed from the targets.

    Raises:
        ValueError: If a pattern matches no module, or nothing is left to prune.
    """
    block_refs = list(iter_block_linears(model))
    all_linear = [(n, m) for n, m in model.named_modules() if is_linear(m)]
    all_names = [n for n, _ in all_linear]

    def _unmatched(patterns: list[str]) -> list[str]:
        return [p for p in patterns if not any(matches(n, p) for n in all_names)]

    for arg, patterns in (("target_modules", target_modules), ("exclude_modules", exclude_modules)):
        bad = _unmatched(patterns or [])
        if bad:
            sample = ", ".join(all_names[:8]) + (", …" if len(all_names) > 8 else "")
            raise ValueError(
                f"{arg} pattern(s) {bad} match no Linear/Conv1D module of this "
                f"{type(model).__name__}. Module names look like: {sample}. Fix the pattern "
                "(exact name, dotted suffix such as 'mlp.down_proj', or a full regular expression)."
            )
    if target_modules is None:
        refs = block_refs
    else:
        by_id = {id(r.module): r for r in block_refs}
        refs = []
        for n, m in all_linear:
            if any(matches(n, p) for p in target_modules):
                refs.append(by_id.get(id(m)) or LinearRef(name=n, module=m, stack="", block_idx=-1, path=n))
    if exclude_modules:
        refs = [r for r in refs if not any(matches(r.name, p) for p in exclude_modules)]
    if not refs:
        raise ValueError(
            "After applying target_modules / exclude_modules no module is left to prune; "
            f"target_modules={target_modules}, exclude_modules={exclude_modules}."
        )
    return refs
