"""Writing files and directories so that nothing a user has is lost or left half-written.

- :func:`atomic_write_text` / :func:`atomic_write_bytes` / :func:`atomic_file`: a file is written
  under a temporary name beside its target and renamed over it only when complete; on any error
  (a full disk included) the temporary file is removed and the target is untouched.
- :class:`StagedDirectory`: a directory is built under a hidden sibling name and swapped into
  place whole, so an interrupted build leaves the old directory as it was.
- :func:`sha256_file`, :func:`sha256_bytes`: content hashes that later stages check.
- :class:`Interrupted`: Ctrl-C with the message that fits the command that was interrupted.
- :func:`latched_interrupts` / :func:`raise_if_interrupted`: a Ctrl-C is remembered, so that one
  whose ``KeyboardInterrupt`` a C extension swallowed (C code that clears any pending error, as
  ``PyObject_HasAttr`` does) still stops the command at its next check, before it replaces anything.

This module imports nothing heavy: the CLI uses it before torch is loaded.
"""

import contextlib
import hashlib
import os
import shutil
import signal
import threading
from pathlib import Path

__all__ = ["atomic_write_text", "atomic_write_bytes", "atomic_file", "StagedDirectory", "sha256_file",
           "sha256_bytes", "Interrupted", "TMP_SUFFIX", "latched_interrupts", "raise_if_interrupted"]

#: Suffix of a file being written (removed on failure, renamed on success).
TMP_SUFFIX = ".dlgn-tmp"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, after the command has cleaned up; ``message`` says what was kept."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


_interrupt_seen = threading.Event()


@contextlib.contextmanager
def latched_interrupts():
    """While the block runs, SIGINT raises ``KeyboardInterrupt`` as usual and is also remembered,
    so that :func:`raise_if_interrupted` raises it again if something swallowed the first one.
    Installed only from the main thread and when SIGINT is handled by Python (not ignored, as under
    ``nohup``); the previous handler is restored afterwards."""
    _interrupt_seen.clear()
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is not signal.default_int_handler:
        yield
        return

    def handler(signum, frame):
        _interrupt_seen.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupt_seen.clear()


def raise_if_interrupted():
    """Raise ``KeyboardInterrupt`` when a SIGINT arrived inside :func:`latched_interrupts`."""
    if _interrupt_seen.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block ends without
    an error, remove it otherwise."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path, data):
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode())


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class StagedDirectory:
    """Build ``final`` in a hidden sibling (``.NAME.dlgn-new-PID``) and swap it in with
    :meth:`commit`; :meth:`discard` (or leaving a ``with`` block on an error) removes the
    sibling and leaves ``final`` as it was.

    ``final`` may not exist, be empty, or be replaced when ``replaceable(final)`` says so (the
    caller's check that it is the kind of directory it may replace). The swap renames the old
    directory aside, renames the new one into place and only then deletes the old one, so at
    every moment one complete directory is there."""

    def __init__(self, final):
        self.final = Path(final)
        self.path = self.final.with_name(f".{self.final.name}.dlgn-new-{os.getpid()}")
        self.committed = False

    def create(self):
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._remove_abandoned()
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir()
        return self.path

    @classmethod
    def created(cls, final, error, what):
        """A created staging directory for ``final``, or ``error`` (an exception class) with one
        line naming ``what`` (the option to change) when it cannot be created."""
        stage = cls(Path(final).resolve())
        try:
            stage.create()
        except OSError as e:
            raise error(f"cannot create {final}: {e.strerror or e}; choose a writable {what}") from None
        return stage

    def _remove_abandoned(self):
        """Remove staging directories of ``final`` left by processes that were killed."""
        for kind in ("new", "old"):
            for path in self.final.parent.glob(f".{self.final.name}.dlgn-{kind}-*"):
                pid = path.name.rsplit("-", 1)[-1]
                if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                    if kind == "old" and not self.final.exists():
                        os.replace(path, self.final)  # killed between the two renames of a swap
                    else:
                        shutil.rmtree(path, ignore_errors=True)

    def commit(self):
        old = None
        if self.final.exists() or self.final.is_symlink():
            old = self.final.with_name(f".{self.final.name}.dlgn-old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.final, old)
        try:
            os.replace(self.path, self.final)
        except BaseException:
            if old is not None:
                os.replace(old, self.final)
            raise
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self):
        if not self.committed and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self):
        self.create()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self.committed:
            self.commit()
        self.discard()
        return False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
