"""Write-to-temporary-then-rename, so that a failed or interrupted command never leaves a
half-written output and never damages the file that was there before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from cathodeml.errors import CathodemlError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, copy_existing: bool = False):
    """Yield a temporary path next to `path`; on success it replaces `path` atomically.

    With `copy_existing`, the temporary file starts as a copy of the current `path` (for
    appending).  On any exception -- including KeyboardInterrupt -- the temporary file is
    removed and `path` is left exactly as it was.  A full disk becomes a CathodemlError.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.exists():
        raise CathodemlError(f"output directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        if copy_existing and path.exists():
            shutil.copyfile(path, tmp_path)
        else:
            tmp_path.unlink()
        yield tmp_path
        # mkstemp files are owner-only; give the result the mode the old file (or a plain write) has.
        if path.exists():
            shutil.copymode(path, tmp_path)
        else:
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CathodemlError(f"no space left on device while writing {path}; {path} is unchanged") from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False):
    """Yield a temporary folder next to `path`; on success it becomes `path` (an existing `path` is
    replaced only with `overwrite`, and only once the new folder is complete).  On any exception
    the temporary folder is removed and `path` is left as it was."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise CathodemlError(f"output directory {parent} does not exist")
    if path.exists() and not overwrite:
        raise CathodemlError(f"{path} exists; pass --overwrite to replace it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CathodemlError(f"no space left on device while writing {path}; {path} is unchanged") from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
