"""The command line's Keras import, with TensorFlow's C++ start-up chatter kept off stderr, and
the end of a ``caffe2keras`` command interrupted while it starts: one line, like one
interrupted later.

Only the command line calls :func:`import_keras`: it owns its process. The library never
touches the user's environment or file descriptors (see :mod:`caffe2keras._lazy`).
"""

import os
import signal
import sys


def import_keras():
    """Import Keras, its backend, then TensorFlow, with file descriptor 2 muted meanwhile;
    TensorFlow's C++ logging stays at errors for the rest of the process.

    Keras comes first: on the torch backend TensorFlow loaded before torch crashes the process.
    TensorFlow follows on every backend, as Keras' savers and the image decoding load it anyway,
    and it would print its start-up lines then."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "keras" in sys.modules:
        return
    sys.stderr.flush()
    try:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no usable stderr descriptor (embedded interpreters): import as is
        saved = None
    if saved is not None:
        os.dup2(null, 2)
    interrupts = []
    previous = _remember_interrupts(interrupts)
    try:
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe logs here, so do it while muted
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
    if interrupts:
        # Some module of TensorFlow's import swallows exceptions with a bare ``except``: a Ctrl-C
        # landing there was lost and the command went on to write its output.
        raise KeyboardInterrupt()


def _remember_interrupts(interrupts):
    """Record every Ctrl-C during the import (and raise it as usual); returns the handler to
    restore, or None when SIGINT is not ours to handle (a thread, a program's own handler)."""
    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None

        def handler(signum, frame):
            interrupts.append(signum)
            raise KeyboardInterrupt()

        return signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        return None


def interrupted_while_starting(package):
    """Called on Ctrl-C while ``package`` is imported. When the import is the command starting
    (importlib is loading ``<package>.cli`` on its behalf: the console script and ``python -c
    "from caffe2keras.cli import main; main()"`` both do), print one line and exit 130 as the
    command does once running, instead of a traceback through TensorFlow's import; a program
    importing the package gets its KeyboardInterrupt back."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_find_and_load" and frame.f_locals.get("name") == f"{package}.cli":
            sys.stderr.write("error: interrupted; no output written\n")
            raise SystemExit(130)
        frame = frame.f_back
