"""hf_prune.utils: when progress bars are drawn, and quiet tokenization of long texts."""

from __future__ import annotations

import copy
import io
import sys

import pytest

from hf_prune import utils
from hf_prune.utils import PROGRESS_ENV, quiet_tokenize, show_progress


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


# (progress argument, stderr is a TTY, HF_PRUNE_PROGRESS or None for unset) -> bar shown
DECISIONS = [
    (True, True, None, True),
    (True, False, None, False),
    (False, True, None, False),
    (False, False, None, False),
    (True, False, "1", True),
    (True, False, "true", True),
    (True, True, "1", True),
    (False, True, "1", False),  # an explicit progress=False is never overridden
    (False, False, "1", False),
    (True, True, "0", False),
    (True, True, "off", False),
    (True, False, "0", False),
    (True, True, "", True),  # empty: decided by the terminal
    (True, False, "", False),
    (True, True, "maybe", True),  # unknown values: decided by the terminal
    (True, False, "maybe", False),
]


@pytest.mark.parametrize(("progress", "tty", "env", "shown"), DECISIONS)
def test_show_progress_decision_table(monkeypatch, progress, tty, env, shown):
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    monkeypatch.setattr(utils, "_in_notebook", lambda: False)
    if env is None:
        monkeypatch.delenv(PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_ENV, env)
    assert show_progress(progress) is shown


def test_show_progress_in_a_notebook_and_without_a_usable_stderr(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.setattr(sys, "stderr", _Stream(False))
    monkeypatch.setattr(utils, "_in_notebook", lambda: True)
    assert show_progress(True) is True  # Jupyter: stderr is no TTY, but tqdm.auto draws a widget
    assert show_progress(False) is False
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert show_progress(True) is False
    monkeypatch.delenv(PROGRESS_ENV)
    monkeypatch.setattr(utils, "_in_notebook", lambda: False)
    monkeypatch.setattr(sys, "stderr", None)  # pythonw / detached
    assert show_progress(True) is False
    closed = io.StringIO()
    closed.close()  # isatty() on a closed stream raises ValueError
    monkeypatch.setattr(sys, "stderr", closed)
    assert show_progress(True) is False


def test_a_hidden_bar_writes_nothing(monkeypatch):
    from tqdm.auto import tqdm

    stream = _Stream(False)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(utils, "_in_notebook", lambda: False)
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    for _ in tqdm(range(3), disable=not show_progress(True), file=stream):
        pass
    assert stream.getvalue() == ""
    monkeypatch.setenv(PROGRESS_ENV, "1")
    for _ in tqdm(range(3), disable=not show_progress(True), file=stream):
        pass
    assert "3/3" in stream.getvalue()


def test_quiet_tokenize_without_a_verbose_argument(transformers_warnings):
    from hf_prune.zoo.tokenizer import train_bpe_tokenizer

    texts = ["alpha beta gamma delta " * 10, "epsilon zeta eta theta " * 10] * 3
    tok = train_bpe_tokenizer(texts, vocab_size=300, model_max_length=4)

    def wrapper(text):  # no `verbose` and no **kwargs: the logger-level fallback is used
        return tok(text)

    control = copy.deepcopy(tok)  # transformers gives this warning once per tokenizer instance
    text = "\n\n".join(texts)
    ids = quiet_tokenize(wrapper, text)["input_ids"]
    assert transformers_warnings == []
    assert ids == control(text)["input_ids"] and len(ids) > 4
    assert transformers_warnings, "a plain call warns, so the capture works"
    # The fallback leaves the logger's level as it found it.
    import logging

    assert logging.getLogger("transformers.tokenization_utils_base").level == logging.NOTSET


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator helpers: Linux only")
def test_allocator_helpers_apply_once_and_are_no_ops_off_glibc(monkeypatch):
    """The memory effect is measured by benchmarks/offload_memory.py; here the mechanics."""
    import subprocess

    # A subprocess: the mmap threshold is process-wide and must not leak into this test session.
    script = (
        "from hf_prune import utils\n"
        "assert utils._glibc() is not None\n"
        "assert utils.bound_heap_for_offload() is True\n"
        "assert utils._MMAP_THRESHOLD_SET and utils.bound_heap_for_offload() is True\n"
        "assert utils.release_freed_memory() is None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    monkeypatch.setattr(utils, "_LIBC", None)  # as on musl or macOS
    assert utils.bound_heap_for_offload() is False
    assert utils.release_freed_memory() is None


def _write_while_reading(write, path, writes: int) -> set[int]:
    """Write ``path`` up to ``writes`` times from a thread while reading it; return the lengths read.

    The writer stops early once the reader has seen a partial file (the plain control needs one).
    """
    import threading

    full = 4 << 20
    write(path, "x" * full)
    seen: set[int] = set()
    done = threading.Event()

    def writer() -> None:
        for _ in range(writes):
            if seen - {full}:
                break
            write(path, "x" * full)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        seen.add(len(path.read_text()))
    thread.join()
    return seen


def test_atomic_write_text_is_never_seen_partial(tmp_path):
    from hf_prune.utils import atomic_write_text

    def plain(path, text):  # what write_split_text did: readers see it empty or half-written
        with path.open("w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    # The control shows the reader does catch writes in progress (within 500 writes; ~1 on this machine).
    assert _write_while_reading(plain, tmp_path / "plain.txt", 500) - {4 << 20}
    assert _write_while_reading(atomic_write_text, tmp_path / "atomic.txt", 30) == {4 << 20}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.txt", "plain.txt"]  # no temporaries


def test_atomic_write_text_failure_keeps_the_old_file(tmp_path):
    from hf_prune.utils import atomic_write_text

    path = atomic_write_text(tmp_path / "f.json", "old")
    with pytest.raises(TypeError):
        atomic_write_text(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
