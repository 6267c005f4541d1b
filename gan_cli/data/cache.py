"""Files that several processes may build at the same place, built once and never seen half-written.

A sweep's jobs (``hydra/launcher=joblib``, several ``gan`` commands at once, a cluster sharing one
``GAN_CLI_DATA``) may all ask for the same cache file at the same moment. ``build_once`` makes one
of them build it and the others wait for it and reuse it:

* an inter-process lock (``filelock``) on ``<file>.lock`` next to the file serialises the builders;
* the builder writes to a unique temporary name beside the file (``.<name>.<pid>-<random>.tmp<suffix>``),
  fsyncs it, renames it over the final name and fsyncs the folder (``commit``), so the final name
  only ever holds a complete file, even after a SIGKILL or a power cut;
* temporaries left by a killed builder are deleted by the next one, under the lock;
* every reader checks the file (``load`` raises ``DataError`` when it fails); a file that fails is
  moved aside (``<name>.bad-<time>``) and rebuilt, with one line on stderr saying so.

``exclusive`` and ``temp_path``/``commit`` are the pieces, for writers of user files
(``gan data csm -o FILE``) that must never leave a half-written file but have nothing to reuse.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from gan_cli.core.errors import DataError

T = TypeVar("T")
WAIT_REPORT_S = 30.0   # seconds between "still waiting" lines while another process builds


def _say(message: str) -> None:
    print(f"gan-cli: {message}", file=sys.stderr, flush=True)


def temp_path(path: str | os.PathLike) -> Path:
    """A unique temporary name beside ``path`` that keeps its suffix (Keras and h5py look at it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries of ``path`` (``temp_path`` names) in its folder."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.*.tmp{path.suffix}"))


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's) data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the rename is still atomic there
        pass
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make the complete file ``tmp`` appear as ``path`` in one step: fsync, rename, fsync the folder."""
    tmp, path = Path(tmp), Path(path)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)
    return path


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, lock_file: str | os.PathLike | None = None,
              what: str | None = None) -> Iterator[None]:
    """Hold the inter-process lock of ``path`` (default lock file ``<path>.lock``).

    Waits for another holder with a line on stderr (repeated every ``WAIT_REPORT_S`` seconds). Deletes
    temporaries of ``path`` on entry (a killed writer's) and when the block ends with an exception (its
    own): only the holder writes them.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    lock_file = Path(lock_file) if lock_file is not None else path.with_name(path.name + ".lock")
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_file))
        lock.acquire(timeout=0)
    except Timeout:
        t0 = time.monotonic()
        _say(f"waiting for another process to finish writing {what or path} ...")
        while True:
            try:
                lock.acquire(timeout=WAIT_REPORT_S)
                break
            except Timeout:
                _say(f"still waiting for {path.name} ({time.monotonic() - t0:.0f} s)")
    except OSError as exc:
        raise DataError(f"cannot create the lock file {lock_file} ({exc.strerror or exc}); "
                        "make its folder writable (or set GAN_CLI_DATA to a writable folder)") from None
    def remove_temporaries() -> None:
        for tmp in stale_temporaries(path):
            with contextlib.suppress(OSError):
                tmp.unlink()

    try:
        remove_temporaries()
        yield
    except BaseException:  # the holder's own temporaries, whatever step the failure (or signal) cut short
        remove_temporaries()
        raise
    finally:
        lock.release()


def move_aside(path: Path) -> Path:
    """Rename a failing file to ``<name>.bad-<time>``, kept for inspection and never read again (only
    the newest one: older ones of the same name are deleted)."""
    for old in path.parent.glob(f"{path.name}.bad-*"):
        with contextlib.suppress(OSError):
            old.unlink()
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")
    os.replace(path, aside)
    return aside


def build_once(path: str | os.PathLike, build: Callable[[Path], None], load: Callable[[Path], T],
               what: str = "cache") -> T:
    """The checked contents of the cache file ``path``, building it first when it is missing or fails.

    ``build(tmp)`` writes the complete file at ``tmp`` (a ``temp_path`` of ``path``); ``load(path)``
    checks the file and returns what the caller uses, raising ``DataError`` when the file fails its
    check. Concurrent callers (threads or processes) build it once: the others wait, then load it.
    A file built just now that still fails its check is an error (raised, not rebuilt again).
    """
    path = Path(path)
    if path.exists():
        try:
            return load(path)
        except DataError:
            pass  # checked again, and moved aside, under the lock (another process may be rebuilding it)
    with exclusive(path, what=f"the {what} {path.name}"):
        if path.exists():
            try:
                return load(path)
            except DataError as exc:
                aside = move_aside(path)
                reason = str(exc).split("; ")[0].replace(f"{path}: ", "").replace(str(path), "the file")
                _say(f"{what} {path} failed its check ({reason}); moved it to {aside.name} and rebuilding it")
        tmp = temp_path(path)
        try:
            build(tmp)
            commit(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return load(path)
