"""The hf_prune version, stamped into every saved ``pruning_config.json``."""

__version__ = "0.1.0"
