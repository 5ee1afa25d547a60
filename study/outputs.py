"""Folders a command writes: it writes into a new folder, or replaces one it made itself, never any
other (users point `--out` at folders that hold their own files).

A folder made here holds a marker file (`MARKER`) naming the command that made it; a later run of a
command may replace a folder only when that marker is there (or the folder is empty). The new
content is written in a temporary sibling folder and swapped in at the end: never a half-written
folder, and the old one is removed only after the new one is in place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from study.errors import ConfigError

MARKER = ".study-report"  # in every folder the harness made; its text names the command


class OutputError(ConfigError):
    """An output path the harness may not or cannot write; nothing was written there."""


def check_target(path: Path, flag: str = "--out") -> None:
    """Fail, naming the path, unless `path` is new, an empty folder, or a folder this harness made."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{flag} {path} is a broken symbolic link; choose another folder")
    if not path.exists():
        parent = _existing_parent(path)
        if not parent.is_dir():
            raise OutputError(f"{flag} {path}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"{flag} {path}: folder {parent} is not writable")
        return
    if not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder: nothing was written; choose a folder")
    if (path / MARKER).is_file() or not any(path.iterdir()):
        return
    raise OutputError(
        f"{flag} {path} is a folder this harness did not make (it holds other files and no {MARKER} "
        "marker): nothing was written there; choose a new folder (it is created) or an empty one"
    )


def _existing_parent(path: Path) -> Path:
    p = path.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


@contextmanager
def replace_folder(path: Path, made_by: str, flag: str = "--out"):
    """Yield a temporary folder beside `path` to write into; on success it becomes `path` (with the
    marker), replacing a folder the harness made before. On any error the temporary folder is
    removed and `path` is left as it was. OSErrors (full disk, permissions) become one line."""
    path = Path(path)
    check_target(path, flag)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as err:
        raise OutputError(f"{flag} {path}: cannot create a folder there ({_why(err)})") from None
    try:
        yield tmp
        (tmp / MARKER).write_text(f"made by {made_by}; rebuilding replaces this folder whole\n")
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        check_target(path, flag)  # again: something may have appeared there meanwhile
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            path.rename(old / "folder")
            try:
                tmp.rename(path)
            except OSError:
                (old / "folder").rename(path)  # the old folder back in place
                raise
        else:
            tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise OutputError(f"{flag} {path}: writing failed ({_why(err)}); nothing was changed there") from None
        raise


def _why(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return f"no space left on the device of {err.filename or 'that folder'}"
    return f"{err.strerror or type(err).__name__}{f': {err.filename}' if err.filename else ''}"


def check_file_target(path: Path, flag: str = "--out") -> None:
    """Fail, naming the path, unless `path` can become a JSON result file: new, or a JSON file (a
    result written before). Called before a benchmark runs, so that minutes of measuring are not
    lost to an unusable path at the end."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; a file name is meant (e.g. {path / 'result.json'})")
    parent = _existing_parent(path)
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent if not path.exists() else path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: folder {path.parent} is not writable")
    if path.exists():
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise OutputError(
                f"{flag} {path} exists and is not a JSON result file: not replaced; choose another file name"
            ) from None


def result_file(path, flag: str = "--out") -> Path:
    """A script's result file, checked before it measures anything: bad, one `error:` line, exit 2."""
    try:
        check_file_target(Path(path), flag)
    except OutputError as err:
        _exit(f"error: {err}")
    return Path(path)


def write_json(path, obj, flag: str = "--out") -> None:
    """Write `obj` as JSON to `path` whole (a temporary file renamed into place) or not at all; when
    it cannot be written (disk full, folder gone), one `error:` line and the JSON on stdout, so that
    the measurement is not lost, then exit 2."""
    path, text = Path(path), json.dumps(obj, indent=2)
    tmp = None
    try:
        check_file_target(path, flag)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except (OSError, OutputError) as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        why = err if isinstance(err, OutputError) else f"{flag} {path}: writing failed ({_why(err)})"
        print(text, flush=True)
        _exit(f"error: {why}; the result is printed above, the file was not changed")


def _exit(line: str):
    import sys

    print(line, file=sys.stderr, flush=True)
    raise SystemExit(2)
