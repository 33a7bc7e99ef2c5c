"""``hf_prune.integration`` imports in one direction: the model wrapper on top, formats below it.

Layers, top to bottom: ``auto`` / ``callback`` (users of the wrapper) > ``pruned_model`` > ``hub`` >
``card`` > ``export.*`` > ``checkpoint``.
A module may import modules below it, never its own level's siblings above it or anything above. The
imports are read with ``ast`` (module level, inside functions and under ``TYPE_CHECKING`` alike), so a
lazy import inside a function cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hf_prune.integration as integration

ROOT = Path(integration.__file__).parent
PACKAGE = "hf_prune.integration"
# Higher number = higher layer. Exporters and the card only read plain data; the checkpoint format is
# the bottom. A new exporter is one file in export/ at the exporters' level.
LEVELS = {"checkpoint": 0, "export": 1, "card": 2, "hub": 3, "pruned_model": 4, "auto": 5, "callback": 5}


def _level(module: str) -> int | None:
    """Level of ``hf_prune.integration.<x>[.<y>]`` or ``None`` for modules outside the package."""
    if module == PACKAGE:
        return None  # the package __init__ (a docstring only)
    if not module.startswith(PACKAGE + "."):
        return None
    first = module[len(PACKAGE) + 1 :].split(".")[0]
    return LEVELS.get(first)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([PACKAGE, *parts])


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every imported module (absolute or relative) with its line number."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # `from hf_prune.integration import pruned_model` names a module in the alias.
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return out


def _files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_integration_module_has_a_level():
    names = {_module_name(p) for p in _files()}
    unknown = sorted(n for n in names if n != PACKAGE and _level(n) is None)
    assert not unknown, f"give these modules a level in LEVELS: {unknown}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_lower_modules_never_import_upwards(path):
    module = _module_name(path)
    own = _level(module)
    if own is None:
        return
    bad = []
    for line, target in _imports(path):
        level = _level(target)
        if level is not None and level > own:
            bad.append(f"line {line}: imports {target} (level {level} > {own})")
    assert not bad, f"{module} imports above itself: {bad}"


def test_checker_catches_an_upward_import(tmp_path):
    """The test above can fail: a checkpoint module that imports the wrapper is reported."""
    fake_root = tmp_path / "integration"
    fake_root.mkdir()
    (fake_root / "checkpoint.py").write_text(
        "def load():\n    from hf_prune.integration.pruned_model import PrunedModel\n    return PrunedModel\n"
    )
    (fake_root / "card.py").write_text("from . import hub\n")
    global ROOT
    saved, ROOT = ROOT, fake_root
    try:
        for name, expected in (("checkpoint.py", "pruned_model"), ("card.py", "hub")):
            with pytest.raises(AssertionError, match=expected):
                test_lower_modules_never_import_upwards(fake_root / name)
    finally:
        ROOT = saved


def test_wrapper_is_importable_without_the_lower_modules_importing_it():
    import sys

    import hf_prune.integration.checkpoint as ckpt
    import hf_prune.integration.export.nemotron_nas as nas

    for mod in (ckpt, nas):
        assert "PrunedModel" not in vars(mod), f"{mod.__name__} holds PrunedModel"
    assert "hf_prune.integration.pruned_model" in sys.modules  # imported by hf_prune itself, on top
