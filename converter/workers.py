"""The worker processes of ``caffe2keras batch --jobs N``: each imports Keras once, then converts
the jobs the parent sends it, one at a time, with :func:`caffe2keras.batch.run_job`.

Workers are started by "spawn", never by forking: a fork of a process that has imported
TensorFlow copies its threads' locks in whatever state they are and can hang. Each worker has
its own pipe, so one killed mid-message breaks only that pipe; the parent waits on the pipes and
the processes at once. A worker that dies (the out-of-memory killer) fails the model it held
with a record saying so, its leftovers are removed, and a new worker takes the remaining models.

Interrupts belong to the parent. Ctrl-C reaches the whole process group, so workers ignore
SIGINT; the parent (on Ctrl-C or SIGTERM) sends each worker SIGTERM, which a worker turns into
KeyboardInterrupt, so that the model in progress is cleaned up as in a one-process run. A worker
whose parent dies gets SIGTERM too (Linux).
"""

import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from . import export
from .errors import ConversionWarning

# How long a worker may take to clean up after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 60
PR_SET_PDEATHSIG = 1
BLOCKED = {signal.SIGINT, signal.SIGTERM}


def cpu_count():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Worker:
    process: multiprocessing.Process
    conn: object
    index: int = None  # the job it converts
    began: float = field(default_factory=time.perf_counter)


def run(jobs, outdir, count, options, on_start, on_done):
    """:func:`caffe2keras.batch.run_all` in ``count`` worker processes."""
    from .batch import new_record

    context = multiprocessing.get_context("spawn")
    records = [None] * len(jobs)
    waiting = list(reversed(range(len(jobs))))
    busy = []

    def give(worker):
        if not waiting:
            _send(worker, None)
            return
        worker.index, worker.began = waiting.pop(), time.perf_counter()
        on_start(jobs[worker.index])
        _send(worker, jobs[worker.index])
        busy.append(worker)

    def finish(worker, record):
        busy.remove(worker)
        records[worker.index] = record
        on_done(jobs[worker.index], record)

    started = []
    with _sigterm_interrupts():
        try:
            for _ in range(count):
                started.append(_start(context, outdir, options))
                give(started[-1])
            while busy:
                ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
                for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                    message = _receive(worker)
                    if message is not None:
                        record, texts = message
                        for text in texts:
                            warnings.warn(text, ConversionWarning, stacklevel=1)
                        finish(worker, record)
                        give(worker)
                        continue
                    worker.process.join()
                    export.remove_leftovers(worker.process.pid, outdir)
                    record = new_record(jobs[worker.index])
                    record.update(status="failed", error=_death(worker.process.exitcode),
                                  internal=worker.process.exitcode != -signal.SIGKILL,
                                  seconds=round(time.perf_counter() - worker.began, 3))
                    finish(worker, record)
                    if waiting:
                        started.append(_start(context, outdir, options))
                        give(started[-1])
        finally:
            _stop(started, busy, outdir)
    return records


def _start(context, outdir, options):
    parent_end, child_end = context.Pipe()
    process = context.Process(target=serve, args=(child_end, outdir, options, os.getpid()), daemon=True,
                              name="caffe2keras-worker")
    # The child inherits blocked signals: a Ctrl-C before it ignores SIGINT waits, then vanishes.
    # The parent gets its own once unblocked.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    child_end.close()
    return Worker(process, parent_end)


def _send(worker, job):
    with contextlib.suppress(OSError):  # it died: its sentinel says so
        worker.conn.send(job)


def _receive(worker):
    """The worker's result, or None when it died without one."""
    try:
        return worker.conn.recv() if worker.conn.poll() else None
    except (EOFError, OSError):
        return None


def _death(exitcode):
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        why = " (the out-of-memory killer sends it: too little memory for this model beside the others?)" \
            if -exitcode == signal.SIGKILL else ""
        return f"the worker process converting it was killed by {name}{why}; the other models went on"
    return f"the worker process converting it ended with exit code {exitcode}; the other models went on"


def _stop(started, busy, outdir):
    """End every worker: those still working (interrupted) get SIGTERM, then SIGKILL after the
    grace time; the others were told to stop."""
    for worker in busy:
        with contextlib.suppress(OSError):
            worker.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for worker in started:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
            export.remove_leftovers(worker.process.pid, outdir)
        worker.conn.close()


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, while the workers run."""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: signals are the main thread's
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(conn, outdir, options, parent):
    """A worker's life: import Keras, then convert each job received until told to stop (None),
    sending back the record and the :class:`ConversionWarning` texts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.unraisablehook = _raise_lost_interrupts_again
    _die_with(parent)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED)
        from ._quiet import import_keras

        import_keras()
        from .batch import run_job

        # TensorFlow's import swallows some exceptions: an interrupt lost there is found here.
        while not _interrupted and (job := conn.recv()) is not None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConversionWarning)
                record = run_job(job, outdir, **options)
            conn.send((record, [str(w.message) for w in caught if issubclass(w.category, ConversionWarning)]))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a late or repeated one: the work is over


_interrupted = []


def _interrupt(signum, frame):
    _interrupted.append(signum)
    if _in_finaliser(frame):  # raised there, it would be printed and lost
        _raise_later(signum)
        return
    raise KeyboardInterrupt()


def _in_finaliser(frame):
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_code in callbacks:
            return True
        frame = frame.f_back
    return False


def _raise_later(signum):
    timer = threading.Timer(0.01, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


def _raise_lost_interrupts_again(unraisable):
    """An interrupt raised inside a finaliser or a garbage-collector callback is lost (Python
    would print "Exception ignored" and go on converting): raise it again, elsewhere. Only
    SIGTERM interrupts a worker."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _raise_later(signal.SIGTERM)
    else:
        sys.__unraisablehook__(unraisable)


def _die_with(parent):
    """Ask Linux for SIGTERM when the parent dies; end now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(0)
