"""Atomic output directories that the toolkit owns, checked output paths, and file hashing.

Every directory the toolkit writes carries a marker file (``OWNER_MARKER``). ``--force`` and artifact
reuse only ever replace a directory holding that marker: the toolkit never deletes or overwrites
anything it did not create.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from trtllm_kit.errors import ToolkitError

OWNER_MARKER = ".trtllm-kit"
FILE_MODE = 0o644  # artifacts are read by servers running as other users
DIR_MODE = 0o755


def owner_record(path: str | os.PathLike) -> dict | None:
    """The owner marker of a directory the toolkit created (its kind and the files it wrote), else None."""
    try:
        rec = json.loads((Path(path) / OWNER_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("created_by") == "trtllm-kit" else None


def owned_by_toolkit(path: str | os.PathLike, kind: str | None = None) -> bool:
    """Whether ``path`` is a directory the toolkit created (of ``kind``, when given)."""
    rec = owner_record(path)
    return rec is not None and (kind is None or rec.get("kind") == kind)


def _written_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != OWNER_MARKER)


def check_output_dir(out: str | os.PathLike, force: bool = False, flag: str = "--out", kind: str | None = None) -> Path:
    """Check, before any work, that ``out`` can be created (or replaced) as an artifact directory.

    Replacing is allowed only with ``force``, only for a directory the toolkit created as the same
    ``kind`` of artifact, and only while it holds nothing but what the toolkit wrote there.

    Args:
        out: the directory to write.
        force: the caller may replace an existing directory, if the toolkit created it.
        flag: the option that named ``out``, for messages.
        kind: what will be written ("export", "engine", "report", "checkpoint").

    Returns:
        The absolute path.

    Raises:
        ToolkitError: ``out`` is a file, sits under a file, lies in a read-only or unwritable place, or
            exists and is not empty (without ``force``, not created by the toolkit, another kind of
            artifact, or holding files the toolkit did not write).
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"{flag} {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        rec = owner_record(out)  # what --force could never replace is said first, without suggesting it
        if rec is None:
            raise ToolkitError(f"{flag} {out} already exists, is not empty and was not created by trtllm-kit; "
                               "refusing to replace it", "choose another directory")
        if kind and rec.get("kind") != kind:
            article = "an" if kind[0] in "aeiou" else "a"
            raise ToolkitError(f"{flag} {out} holds a trtllm-kit {rec.get('kind')}, not {article} {kind}; refusing to "
                               "replace it", "choose another directory")
        if "files" in rec:
            extra = sorted(set(_written_files(out)) - set(rec["files"]))
            if extra:
                raise ToolkitError(f"{flag} {out} holds {extra[0]}, which trtllm-kit did not write; refusing to "
                                   "replace it", "move your files out or choose another directory")
        if not force:
            raise ToolkitError(f"{flag} {out} already exists and is not empty", "pass --force to replace it")
    _check_creatable(out, flag)
    return out


def check_work_dir(path: str | os.PathLike, flag: str = "--work") -> Path:
    """A directory the toolkit adds its own subdirectories to: it must be (or become) a writable directory.

    Raises:
        ToolkitError: a file, or an unwritable place.
    """
    path = Path(path).absolute()
    if path.exists():
        if not path.is_dir():
            raise ToolkitError(f"{flag} {path} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ToolkitError(f"{flag} {path} is not writable")
    else:
        _check_creatable(path, flag)
    return path


def _check_creatable(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ToolkitError(f"{flag} {path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ToolkitError(f"{flag} {path} cannot be created: {parent} is not writable")


def toolkit_json(path: Path) -> bool:
    """Whether ``path`` is a JSON file the toolkit wrote (its ``format`` starts with ``trtllm-kit-``)."""
    try:
        return str(json.loads(path.read_text()).get("format", "")).startswith("trtllm-kit-")
    except (OSError, ValueError, AttributeError):
        return False


def check_output_file(path: str | os.PathLike, flag: str = "--out", twins: tuple[str, ...] = ()) -> Path:
    """Check, before any work, that the toolkit JSON file ``path`` (and its ``twins``, other suffixes
    beside it) can be written without overwriting anything the toolkit did not write.

    Returns:
        The absolute path.

    Raises:
        ToolkitError: the path is a directory, an existing file that is not a toolkit file, or its
            directory cannot be created or written.
    """
    path = Path(path).absolute()
    if path.is_dir():
        raise ToolkitError(f"{flag} {path} is a directory; give a file path")
    ours = path.is_file() and toolkit_json(path)
    if path.exists() and not ours:
        raise ToolkitError(f"{flag} {path} exists and was not written by trtllm-kit; refusing to overwrite it")
    for suffix in twins:
        twin = path.with_suffix(suffix)
        if twin.exists() and not ours:
            raise ToolkitError(f"{twin} exists and was not written by trtllm-kit; refusing to overwrite it")
    _check_creatable(path, flag)
    return path


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False, kind: str = "artifact",
               flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only if the block completes.

    A failed or interrupted block removes the temporary directory, so no directory that looks
    complete is ever left behind. The result carries the owner marker.

    Args:
        out: the final directory.
        force: replace an existing ``out`` (only one the toolkit created).
        kind: what is written, recorded in the marker ("export", "engine", ...).
        flag: the option that named ``out``, for messages.

    Raises:
        ToolkitError: see ``check_output_dir``; also when the directory cannot be written.
    """
    out = check_output_dir(out, force, flag, kind)
    existed = out.exists()
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # deepest first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # A short temporary name: a long --out must not fail on the toolkit's own suffix.
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:60]}.partial-", dir=out.parent))
    except OSError as e:
        _remove_made(made)
        raise ToolkitError(f"{flag} {out} cannot be created: {e.strerror or e}") from None
    _made_parents[tmp] = made
    try:
        yield tmp
        marker = {"created_by": "trtllm-kit", "kind": kind, "files": _written_files(tmp)}
        (tmp / OWNER_MARKER).write_text(json.dumps(marker) + "\n")
        os.chmod(tmp, DIR_MODE)  # mkdtemp makes it private; the artifact is not
        for p in tmp.rglob("*"):
            os.chmod(p, DIR_MODE if p.is_dir() else FILE_MODE)
        if existed and out.exists():
            check_output_dir(out, force, flag, kind)  # still ours, and still only what we wrote
            old = out.with_name(f".{out.name[:60]}.old-{os.getpid()}")
            try:
                os.replace(out, old)
            except OSError as e:
                raise ToolkitError(f"{flag} {out} cannot be replaced: {e.strerror or e}; nothing was replaced",
                                   "check the directory's permissions and attributes") from None
            try:
                os.replace(tmp, out)
            except OSError as e:
                os.replace(old, out)  # put the old one back
                raise ToolkitError(f"{flag} {out} cannot be replaced: {e.strerror or e}; nothing was replaced",
                                   "check the directory's permissions and attributes") from None
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:  # rename(2) fails if another process created a non-empty ``out`` meanwhile
                os.rename(tmp, out)
            except OSError:
                raise ToolkitError(f"{flag} {out} was written by another process meanwhile; nothing replaced",
                                   "run one export/build per output directory at a time") from None
    except BaseException:
        remove_partial(tmp)
        raise
    _made_parents.pop(tmp, None)


_made_parents: dict[Path, list[Path]] = {}  # atomic_dir's temporary directory -> the parents it made, deepest first


def remove_partial(tmp: Path) -> None:
    """Remove an unfinished temporary directory of ``atomic_dir`` and the parent directories that ``atomic_dir``
    made for it, as far as they are empty (never a directory the toolkit did not create)."""
    shutil.rmtree(tmp, ignore_errors=True)
    _remove_made(_made_parents.pop(Path(tmp), []))


def _remove_made(made: list[Path]) -> None:
    for p in made:  # deepest first; stop at the first that is not empty (or not ours to remove)
        try:
            p.rmdir()
        except OSError:
            return


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0644) through a temporary file and a rename.

    Raises:
        ToolkitError: the file cannot be written (read-only place, a path under a file, ...).
    """
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data) -> None:
    """Write ``data`` (bytes or a buffer) to ``path`` (mode 0644) through a temporary file and a rename, so a
    reader never sees half of it (builds side by side share one timing cache file).

    Raises:
        ToolkitError: the file cannot be written (read-only place, a path under a file, ...).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise ToolkitError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_component(label: str) -> str:
    """``label`` as one safe path component: letters (any script), digits and ``._+-``; no separators,
    no dot-only names, no leading dot; a long one is cut and keeps a hash of the whole, so it stays unique."""
    s = re.sub(r"[^\w.+-]+", "_", label).strip("._") or "model"
    if len(s) > 100:
        s = f"{s[:88]}-{hashlib.sha256(label.encode()).hexdigest()[:10]}"
    return s


def inside(root: str | os.PathLike, *parts: str) -> Path:
    """``root/parts...`` with each part made a safe component, guaranteed to stay under ``root``."""
    root = Path(root).absolute()
    path = root.joinpath(*(safe_component(p) for p in parts))
    if root not in path.parents and path != root:
        raise ToolkitError(f"{path} would escape {root}")
    return path
