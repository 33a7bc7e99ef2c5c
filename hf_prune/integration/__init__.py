"""Integration with the ecosystem: PrunedModel, auto classes, checkpoint format, model cards."""
