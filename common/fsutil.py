"""Atomic file writes (write to a temporary name in the same folder, then rename over the target), the
temporaries a killed writer leaves, and a file's identity stamp for resume keys."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on error delete it.

    `suffix` defaults to the target's suffix, so that writers that choose a format by extension
    (PyAV, OpenCV, soundfile) still see it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp.", suffix=ext, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: Path, name: str = "*") -> None:
    """Delete what killed `atomic_path` writers of `<folder>/<name>` left behind (kill -9 cannot clean up)."""
    for stale in Path(folder).glob(f".{name}.tmp.*"):
        stale.unlink(missing_ok=True)


def file_stamp(path: str | Path) -> list:
    """[resolved path, size, mtime in ns]: what identifies a file's content for a resume key (a replaced or
    edited file gets another stamp)."""
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]
