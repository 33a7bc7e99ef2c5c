"""Small trained reference models ("zoo") built reproducibly from the Python standard library's sources.

Pruning methods can only be compared on trained weights; these models are trained on CPU from a
corpus every Python install has (see :mod:`hf_prune.zoo.corpus`), so tests and benchmarks need no
download. The language models are shipped as package data (trained once with the recipes in
:mod:`hf_prune.zoo.recipes`); ``hf-prune zoo build`` rebuilds any of them from its recipe.
"""

from hf_prune.zoo.build import (
    SHIPPED_ROOT,
    ZooIntegrityError,
    build_zoo_model,
    cache_root,
    load_zoo_model,
    shipped_model_dir,
    verify_model_dir,
)
from hf_prune.zoo.corpus import get_eval_texts, write_split_text
from hf_prune.zoo.recipes import ZOO_MODELS, ZooRecipe, get_recipe, list_models

__all__ = [
    "SHIPPED_ROOT",
    "ZOO_MODELS",
    "ZooIntegrityError",
    "ZooRecipe",
    "build_zoo_model",
    "cache_root",
    "get_eval_texts",
    "get_recipe",
    "list_models",
    "load_zoo_model",
    "shipped_model_dir",
    "verify_model_dir",
    "write_split_text",
]
