"""What protects the files of a run: target checks, path locks, temporary files,
signal cleanup and the rescue file (docs/operations.md, "Output integrity").

- :func:`check_target`: an output, checkpoint or image path may name nothing or a
  regular file. Symbolic links, directories, FIFOs, sockets and device nodes are never
  replaced, with or without --overwrite, and neither are read-only or immutable files
  (--overwrite replaces what its owner could have written anyway, nothing more).
- :class:`PathLock`: an exclusive ``flock`` on a hidden sidecar file ``.NAME.lock``
  next to each path, held for the whole run, so a second job on the same files stops
  at once instead of silently replacing the first one's results.
- :func:`new_temp` / :func:`commit_temp` / :func:`discard_temp`: temporary files are
  registered while they exist; SIGTERM and SIGINT (see :func:`cleanup_on_signals`)
  remove them, release the locks, and end the process.
- :func:`rescue_samples`: when the output cannot be written after sampling, the
  samples go to a ``.npy`` file so that the computation is not lost.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import stat
import sys
import tempfile
import time

import numpy as np

from .config import ConfigError

#: signals a batch system or a user sends to stop a job; both clean up the same way
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_temps: set = set()
_locks: list = []


# -- what may be at a target path ---------------------------------------------------------
def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def check_target(path: str, what: str, may_replace: bool, exists_hint: str) -> bool:
    """ConfigError unless ``path`` names nothing, or a regular file that may be replaced.

    what: "output file", "checkpoint", "--save-images file" (starts each message);
    may_replace: --overwrite (or --resume for a checkpoint) was given;
    exists_hint: the advice when a regular file exists and may not be replaced.
    Returns whether a regular file exists there.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be inspected ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path} is a {_kind(st.st_mode)}, not a regular file; "
                          f"hpc_picard only ever replaces regular files: choose a file path")
    if not may_replace:
        raise ConfigError(f"{what} {path} exists; {exists_hint}")
    if not st.st_mode & 0o222:
        raise ConfigError(f"{what} {path} is read-only; --overwrite does not replace read-only "
                          f"files: make it writable (chmod u+w) or remove it")
    try:
        # a write open fails on immutable files and on files of other users, even for
        # root; nothing is written
        with open(path, "r+b"):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be replaced ({exc.strerror}; immutable, or "
                          f"another user's?): remove it or choose another path") from None
    return True


def refuse_non_regular(path: str):
    """OSError if something other than a regular file appeared at ``path``: the last
    check before a rename replaces it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a {_kind(st.st_mode)}, not a regular file")


# -- locks -----------------------------------------------------------------------------
def lock_path(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.lock")


class PathLock:
    """An exclusive lock on ``path`` for as long as this process holds it.

    The lock is an ``flock`` on the sidecar :func:`lock_path`, which records the
    holder's pid and host. The kernel drops it when the holder dies, so a killed job
    leaves no stale lock; a sidecar file left behind is harmless. Release unlinks the
    sidecar while still holding it, and :meth:`acquire` checks that the file it locked
    is still the one at the path, so two jobs can never both hold a lock.
    """

    def __init__(self, path: str, what: str):
        self.path = path
        self.what = what
        self.sidecar = lock_path(path)
        self.fd = None

    def acquire(self) -> "PathLock":
        while True:
            try:
                fd = os.open(self.sidecar, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(f"cannot lock {self.what} {self.path}: {self.sidecar}: "
                                  f"{exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise ConfigError(f"cannot lock {self.what} {self.path} ({exc.strerror}); "
                                      f"does the file system support flock?") from None
                raise ConfigError(f"{self.what} {self.path} is in use by another run ({holder}); "
                                  f"wait for it to end or choose another path") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.sidecar).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)        # the holder released and unlinked it meanwhile: retry
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        _locks.append(self)
        return self

    def release(self):
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.sidecar)
        os.close(self.fd)
        self.fd = None
        if self in _locks:
            _locks.remove(self)


@contextlib.contextmanager
def locked(paths: list):
    """Hold a :class:`PathLock` on every (path, what) pair for the body."""
    held = []
    try:
        for path, what in paths:
            held.append(PathLock(path, what).acquire())
        yield held
    finally:
        for lock in reversed(held):
            lock.release()


# -- temporary files and signals ---------------------------------------------------------
@contextlib.contextmanager
def _signals_held():
    """Hold SIGTERM/SIGINT back while a temporary file changes hands, so a signal can
    not fall between creating (or renaming) a file and recording that."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    except (ValueError, OSError):       # pragma: no cover - not the main thread
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def new_temp(path: str) -> str:
    """A new, registered temporary file next to ``path`` (same file system: the
    rename that replaces ``path`` is atomic)."""
    directory = os.path.dirname(os.path.abspath(path))
    with _signals_held():
        fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + ".", dir=directory)
        _temps.add(tmp)
    os.close(fd)
    return tmp


def commit_temp(tmp: str, path: str):
    """Rename ``tmp`` over ``path`` (a regular file or nothing) and forget it."""
    with _signals_held():
        refuse_non_regular(path)
        os.replace(tmp, path)
        _temps.discard(tmp)


def discard_temp(tmp: str):
    with _signals_held():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _temps.discard(tmp)


def remove_temps() -> list:
    """Delete every registered temporary file; returns their names."""
    removed = []
    for tmp in list(_temps):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
            removed.append(tmp)
        _temps.discard(tmp)
    return removed


def _on_stop_signal(signum, frame):
    removed = remove_temps()
    # only the rank that owns files (rank 0) speaks: one line per job, not per rank
    speaks = bool(removed or _locks)
    for lock in list(_locks):
        lock.release()
    name = signal.Signals(signum).name
    note = f"; removed {len(removed)} temporary file(s)" if removed else ""
    if speaks:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"picard-sample: stopped by {name}{note}\n")
            sys.stderr.flush()
    # No unwinding through h5py or MPI calls in progress: the files are clean now.
    os._exit(128 + signum)


@contextlib.contextmanager
def cleanup_on_signals():
    """For the body: SIGTERM and SIGINT remove temporary files, release locks, print one
    line and exit with 128 + the signal number. The previous handlers come back after."""
    try:
        previous = {sig: signal.signal(sig, _on_stop_signal) for sig in STOP_SIGNALS}
    except ValueError:                  # pragma: no cover - not the main thread
        previous = {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- the rescue file --------------------------------------------------------------------
def rescue_samples(samples: np.ndarray, output: str) -> str | None:
    """Save ``samples`` as ``NAME.rescue-TIME-PID.npy`` next to ``output``, else in the
    working directory, else in the temporary directory. Returns the path, or None when
    no place took it."""
    name = f"{os.path.basename(output)}.rescue-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.npy"
    places = [os.path.dirname(os.path.abspath(output)), os.getcwd(), tempfile.gettempdir()]
    for directory in dict.fromkeys(places):
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, samples)
                fh.flush()
                os.fsync(fh.fileno())
            return path
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return None


def short_reason(exc: BaseException) -> str:
    """One line for an I/O error, the OS's words where there are any (h5py wraps them
    in its own, e.g. "Can't decrement id ref count")."""
    text = str(exc).strip()
    marker = "error message = '"
    if marker in text:
        return text.split(marker, 1)[1].split("'", 1)[0]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:200]
