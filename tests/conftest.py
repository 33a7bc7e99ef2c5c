import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tests never touch the user's cache: zoo builds and ESD caches go to a git-ignored folder in the repo,
# shared by all test modules of a run (and reused by the next local run).
os.environ.setdefault("HF_PRUNE_CACHE", str(Path(__file__).resolve().parent.parent / ".hf_prune_cache"))
