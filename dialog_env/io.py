"""Atomic file and folder writes: a reader never sees a half-written file or a folder mixed from two runs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and an atomic rename.

    Args:
        path: Destination file; parent folders are created.
        data: Content.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write one JSON object a line, atomically."""
    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))


@contextmanager
def publish_folder(out: str | Path, outputs: Iterable[str], what: str = "out") -> Iterator[Path]:
    """Write a command's output folder whole: files go to a staging folder, published by renaming it.

    A reader of ``out`` sees every file of one run or none of them, never ``results.json`` from one
    run and ``transcripts.jsonl`` from another. An existing ``out`` is replaced only if it holds
    nothing but files of the same command (names in ``outputs``; ``*.png`` included); anything else
    there is an error, not a loss. Two runs that finish together leave one of them, whole. A run
    that fails leaves ``out`` as it was.

    Args:
        out: The output folder.
        outputs: File names the command writes (for the check of an existing folder).
        what: The argument ``out`` came from, for error messages.

    Yields:
        The staging folder to write into.

    Raises:
        ValueError: ``out`` exists and holds files the command does not write, or is not a folder.
    """
    out = Path(out)
    allowed = set(outputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_output_folder(out, allowed, what)
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the folder the usual permissions
        while True:
            try:
                os.rename(staging, out)  # atomic; succeeds when out is absent or an empty folder
                break
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            check_output_folder(out, allowed, what)
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            try:
                os.rename(out, trash / out.name)
            except FileNotFoundError:  # another run moved it first; try again
                pass
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_output_folder(out: Path, allowed: Iterable[str], what: str = "out") -> None:
    """Raise ``ValueError`` unless ``out`` is absent or holds only files named in ``allowed`` (or ``*.png``).

    Commands call it before their work, so a bad ``--out`` fails at once rather than after it.
    """
    out, allowed = Path(out), set(allowed)
    try:
        mode = out.stat().st_mode  # one look: exists() then is_dir() could see another run move it in between
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise ValueError(f"{what}: {out} exists and is not a folder")
    try:
        names = [p.name for p in out.iterdir()]
    except FileNotFoundError:  # another run of the command moved it away just now
        return
    foreign = sorted(n for n in names if n not in allowed and not n.endswith(".png"))
    if foreign:
        raise ValueError(
            f"{what}: {out} holds files this command does not write ({', '.join(foreign[:5])}); "
            "choose a new or empty folder, or one written by the same command"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
