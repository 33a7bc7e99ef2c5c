"""Small trained reference models ("zoo") built reproducibly from the Python standard library's sources.

Pruning methods can only be compared on trained weights; these models are trained locally, on CPU,
from a corpus every Python install has (see :mod:`hf_prune.zoo.corpus`), so tests and benchmarks need
no download.
"""

from hf_prune.zoo.build import build_zoo_model, cache_root, load_zoo_model, verify_model_dir
from hf_prune.zoo.corpus import get_eval_texts, write_split_text
from hf_prune.zoo.recipes import ZOO_MODELS, ZooRecipe, get_recipe, list_models

__all__ = [
    "ZOO_MODELS",
    "ZooRecipe",
    "build_zoo_model",
    "cache_root",
    "get_eval_texts",
    "get_recipe",
    "list_models",
    "load_zoo_model",
    "verify_model_dir",
    "write_split_text",
]
