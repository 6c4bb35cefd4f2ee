"""Writing outputs so that a crash, a kill or a full disk never leaves half a file or half a folder.

Every file is written under a temporary name beside its target and renamed into
place (``os.replace`` is atomic on one file system, so a killed process leaves the old
file or the new one; no fsync: a power cut is not guarded against); a folder of files (a models
folder) is built under a temporary name and swapped in whole. Output paths are
checked before the work that fills them, and write failures become
:class:`OutputError` naming the path and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from .errors import OutputError, UsageError

_WHY = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a parent of it is a file, not a folder",
    errno.EISDIR: "it is a folder",
}


def describe_os_error(exc: OSError) -> str:
    """A short human reason for an :class:`OSError` (no traceback, no file contents)."""
    return _WHY.get(exc.errno, exc.strerror or type(exc).__name__)


def output_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {describe_os_error(exc)}; choose another output path or free space")


def check_output_file(path: Path) -> Path:
    """Check, before any work, that ``path`` can be written as a file; create its parent folder.

    Raises :class:`OutputError` when ``path`` is a folder, a parent is a file or
    the folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder; give a file name")
    _check_folder(path.parent, path)
    return path


def check_output_dir(path: Path) -> Path:
    """Check, before any work, that a folder can be created (or written into) at ``path``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"cannot write into {path}: it is a file, not a folder")
    # The folder itself may be created later (and swapped in): its parent must be writable.
    _check_folder(path if path.is_dir() else path.parent, path)
    return path


def _check_folder(folder: Path, target: Path) -> None:
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise UsageError(f"cannot write {target}: {p} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".spinefeat-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {describe_os_error(exc)}; choose another output path") from None


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on failure remove it.

    >>> with atomic_path(Path("out.csv")) as tmp:   # doctest: +SKIP
    ...     frame.to_csv(tmp, index=False)
    """
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise output_error(path, exc) from exc
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: Path) -> None:
    with contextlib.suppress(OSError):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_png(path: Path, image) -> Path:
    """An 8-bit grey or BGR image as PNG, atomically."""
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OutputError(f"cannot write {path}: the image could not be encoded as PNG")
    return write_bytes(path, buf.tobytes())


def write_figure(path: Path, fig, **savefig_kw) -> Path:
    """A matplotlib figure as PNG, atomically."""
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", **savefig_kw)
    return write_bytes(path, buf.getvalue())


def json_safe(obj):
    """``obj`` with every NaN or infinite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):   # numpy scalars
        return json_safe(obj.item())
    return obj


def write_json(path: Path, obj) -> Path:
    """Strict JSON (NaN and infinities written as ``null``), atomically."""
    return write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False))


def write_csv(path: Path, frame, **kw) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, **kw)
    return Path(path)


def write_parquet(path: Path, frame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def staging_dir(final: Path) -> Path:
    """A fresh temporary folder beside ``final`` to build a folder of outputs in."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise output_error(final, exc) from exc
    return tmp


def replace_dir(staged: Path, final: Path) -> Path:
    """Put the complete folder ``staged`` at ``final``, replacing any folder there.

    The old folder is renamed aside first, the new one renamed into place, then
    the old one removed: a kill at any point leaves either the old folder or the
    new one complete at ``final`` (or, between the two renames, the old one
    under ``.<name>.old-*``, which :func:`recover_dir` puts back).
    """
    staged, final = Path(staged), Path(final)
    old = None
    try:
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        os.replace(staged, final)
    except OSError as exc:
        if old is not None and not final.exists():
            os.replace(old, final)
        raise output_error(final, exc) from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def recover_dir(final: Path) -> None:
    """Put back a folder left aside by a :func:`replace_dir` killed between its two renames."""
    final = Path(final)
    if final.exists() or not final.parent.is_dir():
        return
    olds = sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], final)


def inside(root: Path, *parts: str) -> Path:
    """``root / parts`` refusing anything (``..``, an absolute part) that would land outside ``root``."""
    root = Path(root).resolve()
    path = root.joinpath(*[str(p) for p in parts]).resolve()
    if path != root and root not in path.parents:
        raise OutputError(f"refusing to write outside {root}: {'/'.join(map(str, parts))!r}")
    return path
