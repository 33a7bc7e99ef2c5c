"""Evaluation: perplexity with a documented protocol."""

from hf_prune.evaluation.perplexity import perplexity

__all__ = ["perplexity"]
