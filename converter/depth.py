"""Room for Keras' recursive graph walks, so networks of any depth build and load.

Keras walks a functional model's graph (when building it, and again when loading it) with a
recursion one Python frame deep per layer of the longest path: past ~950 layers Python's default
recursion limit (1000) stops it with a RecursionError, while Caffe runs such networks
(ResNet-1001 has ~3,000 layers). :func:`call` runs that work on a thread with a stack of
``STACK_BYTES`` and the recursion limit raised to ``RECURSION_LIMIT`` while it runs; the limit
goes back when the last such call ends. A Ctrl-C meanwhile is passed on to the thread, whose
work unwinds as it would have on the calling thread.
"""

import ctypes
import sys
import threading

# Room for chains of ~190,000 layers: Python 3.11+ keeps pure-Python recursion off the C stack,
# and the stack leaves ~2.6 KiB a frame where it does not (3.10, calls through C code).
RECURSION_LIMIT = 200_000
STACK_BYTES = 512 << 20

_lock = threading.Lock()
_running = 0
_limit_before = None
_inside = threading.local()


def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, given room to recurse once per layer; its exception if it raises."""
    if getattr(_inside, "deep", False):
        return fn(*args, **kwargs)
    outcome, done = {}, threading.Event()

    def run():
        _inside.deep = True
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as err:  # handed to the calling thread, KeyboardInterrupt included
            outcome["error"] = err
        finally:
            done.set()

    _raise_limit()
    try:
        worker = _start(run)
        interrupted = False
        # Not Thread.join: interrupted, Python 3.11's join marks a running thread as stopped.
        while worker is not None and not done.is_set():
            try:
                done.wait(0.5)
            except KeyboardInterrupt:
                interrupted = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident),
                                                           ctypes.py_object(KeyboardInterrupt))
    finally:
        _restore_limit()
    if worker is None:  # the system gives no thread such a stack: as deep as the caller can go
        return fn(*args, **kwargs)
    if "error" in outcome:
        raise outcome.pop("error")
    if interrupted:
        raise KeyboardInterrupt()
    return outcome["value"]


def _start(run):
    try:
        previous = threading.stack_size(STACK_BYTES)
    except (ValueError, RuntimeError):
        return None
    try:
        worker = threading.Thread(target=run, name="caffe2keras-graph", daemon=True)
        worker.start()
    except RuntimeError:  # the system refused the stack
        return None
    finally:
        threading.stack_size(previous)
    return worker


def _raise_limit():
    global _running, _limit_before
    with _lock:
        if _running == 0:
            _limit_before = sys.getrecursionlimit()
            sys.setrecursionlimit(max(_limit_before, RECURSION_LIMIT))
        _running += 1


def _restore_limit():
    global _running
    with _lock:
        _running -= 1
        if _running == 0:
            sys.setrecursionlimit(_limit_before)
