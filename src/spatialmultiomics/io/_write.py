"""Writing data safely: every file into a temporary folder, moved into place at the end.

The result folder of a pipeline run (tables, figures, report) is written by :mod:`spatialmultiomics._results`, the
pipeline layer: ``io`` reads and writes data and never reaches up to the report or the plots.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics._mudata import write_h5mu

__all__ = ["atomic_output_dir", "check_output_dir", "write_h5mu"]


def check_output_dir(output_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Fail early, before any computation, when ``output_dir`` cannot receive results.

    An existing non-empty folder is refused unless ``overwrite``; a path that is a file is always refused; the
    parent folder must be writable.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        msg = f"output_dir={str(out)!r} is a file; give a folder path for the results."
        raise InputError(msg)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        msg = f"output_dir={str(out)!r} exists and is not empty; choose another folder or pass overwrite=True (--overwrite)."
        raise InputError(msg)
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        msg = f"output_dir={str(out)!r}: folder {str(parent)!r} is not writable."
        raise InputError(msg)
    return out


def _clean_stale(out: Path, before: float) -> None:
    """Remove hidden ``.{name}.tmp-*`` folders of runs killed before ``before`` (a time.time() value).

    ``.{name}.old-*`` folders (an earlier result renamed aside) are removed only once ``out`` exists again, so a
    run killed between the two renames never loses the earlier result.
    """
    patterns = [f".{out.name}.tmp-*"] + ([f".{out.name}.old-*"] if out.exists() else [])
    for pattern in patterns:
        for stale in out.parent.glob(pattern):
            try:
                if stale.is_dir() and stale.stat().st_mtime < before:
                    shutil.rmtree(stale, ignore_errors=True)
                    logger.info("removed %s, left by an interrupted run", stale)
            except OSError:  # raced with another process: leave it
                continue


@contextlib.contextmanager
def atomic_output_dir(
    output_dir: str | Path, *, overwrite: bool = False, started: float | None = None
) -> Iterator[Path]:
    """Yield a temporary folder beside ``output_dir`` and move it into place only if the block succeeds.

    A failure (or a kill) leaves no partial ``output_dir`` and never touches an earlier result: the old folder is
    renamed aside, the new one renamed in, and only then is the old one deleted. Hidden temporary folders of
    the same name left by runs killed before ``started`` (a ``time.time()`` value; default now) are removed.
    """
    out = check_output_dir(output_dir, overwrite=overwrite).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out, time.time() if started is None else started)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); results are for sharing, like any new folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            old.rmdir()
            out.rename(old)
        else:
            out.rmdir()
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
