"""Model-card templates (Jinja, rendered with huggingface_hub.ModelCard); packaged as hf_prune.hub_cards."""
