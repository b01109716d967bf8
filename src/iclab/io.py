"""Atomic file output, and checks of an output location before any work is done.

Every file iclab writes goes to a temporary name in the same folder, is
flushed to disk, then renamed over the target, so a process killed at any
moment leaves either the old file or the new one, never half of one. Files get
the permissions the user's umask allows (as ``open`` would give them), not the
0600 of a temporary file.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from iclab.errors import IclabError


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permissions a new file gets from the user's umask (as ``open`` would give it)."""
    return 0o666 & ~_umask()


STOP_SIGNALS = ("SIGINT", "SIGTERM")  # what `iclab` turns into a clean stop (cli.main)


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM arriving inside are handled when it ends, by the handlers that were in place: a write is
    never cut between creating its temporary file and renaming or removing it (a stop raised there left a stray
    ``.tmp`` file). Python runs signal handlers in the main thread only, so this holds them there (elsewhere, and for
    SIGKILL, which nothing can hold, :func:`remove_stale_temporaries` cleans up)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {n: signal.getsignal(n) for n in (getattr(signal, name) for name in STOP_SIGNALS)}
    before = {n: h for n, h in before.items() if h is not None}  # None: a handler set outside Python, left alone
    pending: list[tuple[int, Any]] = []
    for n in before:
        signal.signal(n, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        for n, handler in before.items():
            signal.signal(n, handler)
        if pending:
            signum, frame = pending[0]
            handler = before[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)  # the default action, now that the file is whole


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``; a stop signal waits until it is done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _stop_signals_held():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            write(Path(tmp))
            os.chmod(tmp, file_mode())
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files :func:`atomic_write` leaves when its process is killed mid-write (SIGKILL gives no
    chance to clean up), anywhere below ``folder``; call it only when no other process writes there. Returns how
    many were removed. The files they would have replaced are intact: a rename never happened."""
    removed = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


LOCK_FILE = ".iclab.lock"  # in every run and study folder while a process writes there
LOG_FILE = "iclab.log"  # what the writing processes printed, with times (iclab.progress.record)
BOOKKEEPING = (LOCK_FILE, LOG_FILE)  # files a folder holds from being held; not results (an "empty" folder may have them)
_held: dict[Path, int] = {}  # folder -> file descriptor of its lock, for the folders this process holds


def lock_folder(folder: Path | str, what: str) -> None:
    """Hold ``folder`` for this process: a second iclab process that asks for it is refused in one line naming this
    one's process id, instead of both writing (metrics rows twice, parts computed twice). ``what`` says what this
    process does there ("training", "the addk study").

    An exclusive ``flock`` on ``folder/.iclab.lock``: the kernel releases it when the process ends in any way
    (SIGKILL included), so a stale lock never blocks a later run; the file itself stays and means nothing alone.
    Held until the enclosing :func:`holding_locks` block ends (or the process exits); asking again is a no-op."""
    import fcntl

    folder = Path(folder).resolve()
    if folder in _held:
        return
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise IclabError(f"{folder}: in use by {holder}; wait for it to finish or stop it (a folder has one writer at a time)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"iclab process {os.getpid()} ({what})\n".encode())
    _held[folder] = fd
    import sys

    import iclab
    from iclab.progress import open_log, record

    open_log(str(folder), folder / LOG_FILE)
    record(f"iclab {iclab.__version__}, process {os.getpid()}, {what}: {' '.join(sys.argv)}")


def held(folder: Path | str) -> bool:
    """Whether this process holds ``folder`` (:func:`lock_folder`)."""
    return Path(folder).resolve() in _held


@contextmanager
def holding_locks() -> Iterator[None]:
    """Release, when the block ends, every folder lock taken inside it (:func:`lock_folder`)."""
    import fcntl

    from iclab.progress import close_log

    before = set(_held)
    reason = "finished"
    try:
        yield
    except BaseException as err:
        reason = f"stopped: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise
    finally:
        for folder in set(_held) - before:
            close_log(str(folder), reason)
            fd = _held.pop(folder)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def output_dir(path: Path | str, option: str = "--out") -> Path:
    """Create ``path`` as a folder (parents too), or a one-line error saying why it cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise IclabError(f"{option} {path}: is a file, not a folder; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise IclabError(f"{option} {path}: cannot create this folder ({err.strerror or err})") from None
    if not _writable(path):
        raise IclabError(f"{option} {path}: the folder is not writable")
    return path


def _writable(folder: Path) -> bool:
    """Whether a file can really be made in ``folder`` (permissions alone do not tell, e.g. in /proc)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_output_dir(path: Path | str, option: str = "--out") -> Path:
    """Check, without leaving anything behind, that ``path`` is or can become a writable folder."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise IclabError(f"{option} {path}: is a file, not a folder; give a folder path")
        if not _writable(path):
            raise IclabError(f"{option} {path}: the folder is not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not _writable(parent):
        raise IclabError(f"{option} {path}: cannot be created ({parent} is not a writable folder)")
    return path


def check_output_file(path: Path | str, option: str = "--out") -> Path:
    """Check before any work that a file can be written at ``path`` (its folder exists or can be made)."""
    path = Path(path)
    if path.is_dir():
        raise IclabError(f"{option} {path}: is a folder; give a file path")
    try:
        check_output_dir(path.parent, option)
    except IclabError:
        raise IclabError(f"{option} {path}: cannot be written ({path.parent} is not a writable folder)") from None
    return path


def finite_or_none(x: float | None) -> float | None:
    """JSON-safe number: NaN / inf become null (never plotted or reported as numbers)."""
    return None if x is None or x != x or x in (float("inf"), float("-inf")) else float(x)
