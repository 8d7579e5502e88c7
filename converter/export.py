"""Writing converted models: ``.keras`` and legacy HDF5 ``.h5``.

Files are written to a temporary name in the target directory and renamed into place only when
complete, so an interrupted or failed conversion never leaves a partial file, and an existing
output is only replaced when asked to.
"""

import contextlib
import logging
import os
import signal
import tempfile
from pathlib import Path

from .errors import ConversionError

FORMATS = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}


def output_format(path):
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConversionError(
            f"unsupported output extension '{suffix or '(none)'}'; use one of {', '.join(sorted(FORMATS))}",
            file=path,
        )
    return FORMATS[suffix]


def check_output(path, force=False):
    """Refuse before any work is done: bad extension, missing directory, existing file."""
    path = Path(path)
    output_format(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConversionError("the output directory does not exist", file=path)
    if path.is_dir():
        raise ConversionError("the output path is a directory", file=path)
    if path.exists() and not force:
        raise ConversionError("the output file exists; pass --force to overwrite it", file=path)


@contextlib.contextmanager
def _quiet_absl():
    # Keras warns that HDF5 is a legacy format; choosing .h5 is the user's informed choice.
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt while writing, so cleanup runs."""

    def handler(signum, frame):
        raise KeyboardInterrupt()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def save(model, path, force=False):
    """Save ``model`` to ``path`` atomically; the extension picks the format."""
    path = Path(path)
    check_output(path, force=force)
    fmt = output_format(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent or ".")
    os.close(fd)
    os.unlink(tmp)  # Keras refuses to overwrite silently in some versions; let it create the file
    try:
        with _terminate_as_interrupt():
            if fmt == "h5":
                with _quiet_absl():
                    model.save(tmp)
            else:
                model.save(tmp)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
