"""Small shared helpers: when to draw progress bars, and tokenizing a deliberately long text quietly."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["PROGRESS_ENV", "quiet_tokenize", "show_progress"]

#: Environment variable that overrides the terminal check of :func:`show_progress`.
PROGRESS_ENV = "HF_PRUNE_PROGRESS"

_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off"})


def _in_notebook() -> bool:
    """Whether we run inside a Jupyter kernel (tqdm.auto draws widgets there; stderr is no TTY)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", None)
    try:
        ip = shell() if shell is not None else None
    except Exception:  # pragma: no cover - a broken IPython install
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _stderr_is_tty() -> bool:
    stream = sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        return False
    try:
        return bool(isatty())
    except (OSError, ValueError):  # a closed or detached stream
        return False


def show_progress(progress: bool = True) -> bool:
    """Decide whether hf_prune draws a progress bar (every hf_prune tqdm bar asks this).

    A bar is shown when the caller asked for one (``progress=True``, the default of every
    ``progress`` argument; ``--no-progress`` on the CLI) **and** the output is interactive: stderr is
    a terminal, or the code runs in a Jupyter notebook. Redirected output (CI logs, ``nohup``,
    ``2> file``) gets no bars, so logs are not flooded with carriage-return updates.

    The environment variable ``HF_PRUNE_PROGRESS`` overrides the terminal check:

    * ``HF_PRUNE_PROGRESS=1`` (or ``true`` / ``yes`` / ``on``): show bars even when stderr is not a
      terminal, as long as ``progress=True``.
    * ``HF_PRUNE_PROGRESS=0`` (or ``false`` / ``no`` / ``off``): never show bars.
    * unset, empty or any other value: decide by the terminal check.

    An explicit ``progress=False`` is never overridden.

    Args:
        progress: What the caller asked for.

    Returns:
        ``True`` when the bar should be drawn (pass ``disable=not show_progress(progress)`` to tqdm).
    """
    if not progress:
        return False
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in _OFF:
        return False
    if forced in _ON:
        return True
    return _stderr_is_tty() or _in_notebook()


# The logger that warns "Token indices sequence length is longer than the specified maximum ...".
_LENGTH_WARNING_LOGGER = "transformers.tokenization_utils_base"


@contextlib.contextmanager
def _quiet_length_warning() -> Iterator[None]:
    logger = logging.getLogger(_LENGTH_WARNING_LOGGER)
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _accepts_verbose(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins / C callables without a signature
        return False
    return any(p.name == "verbose" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def quiet_tokenize(tokenizer: Callable[..., Any], text: str, **kwargs: Any) -> Any:
    """Tokenize ``text`` that is longer than the model's context on purpose, without the length warning.

    Perplexity and calibration tokenize one long joined text and cut windows from it themselves, so
    transformers' "Token indices sequence length is longer than the specified maximum sequence
    length" warning is noise there. ``verbose=False`` is passed when the tokenizer accepts it;
    otherwise that warning's logger is raised to ``ERROR`` for the duration of this one call. The
    ids are exactly those of ``tokenizer(text, **kwargs)``.

    Args:
        tokenizer: A ``transformers`` tokenizer or any callable tokenizer.
        text: The text.
        **kwargs: Further arguments of the tokenizer call (``return_tensors``, ``add_special_tokens``).

    Returns:
        Whatever the tokenizer returns.
    """
    if _accepts_verbose(tokenizer):
        return tokenizer(text, verbose=False, **kwargs)
    with _quiet_length_warning():
        return tokenizer(text, **kwargs)


@contextlib.contextmanager
def transformers_progress(progress: bool = True) -> Iterator[None]:
    """Show ``transformers``' own bars ("Loading weights", "Writing model shards") only where ours show.

    Inside the block the bars follow :func:`show_progress`; the previous setting is restored after.

    Args:
        progress: The caller's ``progress`` flag.

    Yields:
        Nothing.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    wanted = show_progress(progress)
    if was_enabled and not wanted:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled and not wanted:
            hf_logging.enable_progress_bar()
