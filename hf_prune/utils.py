"""Small shared helpers: progress bars, quiet tokenizing, returning freed memory, atomic text writes."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["PROGRESS_ENV", "atomic_write_text", "quiet_tokenize", "show_progress"]

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


_LIBC: Any = False  # False: not looked up yet; None: not glibc
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
_MMAP_THRESHOLD_SET = False


def _glibc() -> Any:
    global _LIBC
    if _LIBC is False:
        _LIBC = None
        if sys.platform.startswith("linux"):
            import ctypes
            import ctypes.util

            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt"):  # musl has neither
                    _LIBC = libc
            except OSError:
                _LIBC = None
    return _LIBC


def bound_heap_for_offload(threshold_bytes: int = 1 << 20) -> bool:
    """Serve allocations above ``threshold_bytes`` from ``mmap`` for the rest of the process (glibc only).

    When a model is larger than memory, accelerate loads each offloaded weight for every forward and
    drops it after; with glibc's *dynamic* mmap threshold those weight-sized buffers come from the
    heap, whose freed pages stay in RSS in between: issue 16 measured 100-200 MB of such growth,
    varying run to run, while pruning a 300 MB model under a 64 MB cap. A fixed threshold returns
    every large buffer to the system on free, at the cost of a page-fault pass per large allocation
    (a few percent of an offloaded run, whose disk reads dominate). hf_prune calls this only for
    models with accelerate-offloaded modules, where bounded memory is the point; it is a process-wide
    allocator setting and is logged once.

    Args:
        threshold_bytes: Allocations at least this large use ``mmap``.

    Returns:
        Whether the setting was applied (``False`` off glibc).
    """
    global _MMAP_THRESHOLD_SET
    libc = _glibc()
    if libc is None:
        return False
    if not _MMAP_THRESHOLD_SET:
        if libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)) != 1:
            return False
        _MMAP_THRESHOLD_SET = True
        logger.info(
            "Offloaded model: allocations >= %d bytes now use mmap (glibc mallopt M_MMAP_THRESHOLD) so "
            "weights loaded and dropped per forward do not stay in RSS.",
            threshold_bytes,
        )
    return True


def release_freed_memory() -> None:
    """Hand memory that the process has freed back to the operating system (glibc only; else a no-op).

    glibc serves large allocations from ``mmap`` only above a threshold that it *raises* to the size
    of every mmapped block freed (up to 32 MB). After the first layer-sized temporary is freed, every
    later score, mask and activation buffer therefore comes from the heap, and freed heap pages stay
    in the process's RSS: pruning a 144M-parameter Llama block by block grew RSS by 0.4 GB without a
    single live tensor more. ``malloc_trim(0)`` returns those pages; the sequential runner calls it at
    block boundaries, where the previous block's temporaries are all dead. It changes no allocator
    setting of the user's process.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) so readers see the old file or the whole new one.

    The text goes to a temporary file with a name unique to this call, in the same folder, which then
    replaces ``path`` (``os.replace`` is atomic within a file system). A fixed temporary name is not
    enough: every rank of a distributed launch writing the same file would truncate the others' copy,
    and a rank reading it meanwhile would see it empty. The parent folder must exist.

    Args:
        path: Destination file.
        text: Its full contents.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        # "x": a fresh file with the default (umask) permissions, never someone else's.
        with tmp.open("x", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
