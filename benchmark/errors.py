"""Errors that the command line reports as one line (no stack trace)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class BenchmarkError(Exception):
    """Bad input: the message names the file, row, column or config key."""


PREEMPTED_EXIT = 75  # EX_TEMPFAIL: try again (a requeued or retried job resumes)


class Preempted(Exception):
    """Training stopped on a scheduler's signal after saving its state (benchmark/resume.py)."""

    def __init__(self, signal_name: str, step: int, resume_dir: Path):
        super().__init__(f"preempted: {signal_name} at step {step}; the state is saved in {resume_dir}, "
                         "a rerun resumes from it")


# What a full, read-only or forbidden results folder looks like, from Python's OSError and
# from libraries that write through Rust or C and report only a message (safetensors:
# "I/O error: No space left on device (os error 28)").
DISK_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
DISK_MESSAGES = {"no space left on device": errno.ENOSPC, "os error 28": errno.ENOSPC,
                 "disk quota exceeded": errno.EDQUOT, "os error 122": errno.EDQUOT,
                 "read-only file system": errno.EROFS, "os error 30": errno.EROFS}


def disk_errno(exc: BaseException) -> int | None:
    """The errno of a failed write to disk (full, over quota, read-only, forbidden), else None.
    Follows ``__cause__`` / ``__context__``, as libraries re-raise such errors as their own."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc.errno
        text = str(exc).lower()
        for needle, code in DISK_MESSAGES.items():
            if needle in text:
                return code
        exc = exc.__cause__ or exc.__context__
    return None


def disk_error_line(exc: BaseException, code: int, outputs: list[str]) -> str:
    """One line for a failed write: the file (the error's, else the command's outputs), what
    went wrong and the free space left where it was writing."""
    filename = getattr(exc, "filename", None)
    target = str(filename) if filename else ", ".join(outputs) or "the command's output"
    where = Path(filename or (outputs[0] if outputs else ".")).resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free / 2**30
    return (f"{target}: {DISK_ERRNOS[code]} while writing it ({free:.2f} GiB free on the file system of {where}); "
            f"free space or point `results` elsewhere, then rerun: finished jobs are kept")
