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
