import logging
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tests never touch the user's cache, even when HF_PRUNE_CACHE is set in the environment: zoo builds
# and ESD caches go to a git-ignored folder in the repo, shared by all test modules of a run (and reused
# by the next local run). Trained zoo models come from the shipped weights, so nothing big is built.
os.environ["HF_PRUNE_CACHE"] = str(Path(__file__).resolve().parent.parent / ".hf_prune_cache")


@pytest.fixture
def transformers_warnings():
    """Log records of level WARNING and above from the ``transformers`` loggers, during one test.

    The suite runs transformers at ``error`` verbosity (above) and its library logger does not
    propagate to the root logger that ``caplog`` watches, so this lowers the verbosity to ``warning``
    for the test and collects the records with a handler of its own.
    """
    from transformers.utils import logging as hf_logging

    records: list[logging.LogRecord] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Collect(level=logging.WARNING)
    library = logging.getLogger("transformers")
    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    library.addHandler(handler)
    try:
        yield records
    finally:
        library.removeHandler(handler)
        hf_logging.set_verbosity(old)
