"""How the benchmark measures: one child process at a time, timed from outside, guarded.

Every figure comes from a fresh process (so importing TensorFlow is paid where a user pays it),
started by :func:`run`, which returns its wall time (start to exit), CPU time and peak RSS
(``wait4``), and stops it when it holds more than ``mem_gib`` resident (itself and its
children, polled) or runs past ``timeout``: the result then says "killed at X GiB" or "timed out"
instead of the machine going down. The parts pair what they compare (a conversion with a floor
run just before it; OpenCV and each way of calling the model in the same round), take each ratio
pair by pair while the machine's speed drifts (other jobs share these cores), and keep the
:func:`median`.

Children are this directory's scripts run as ``python <part>.py _<mode> ARGS``: a part module
ends with ``child_main(globals())``, which calls its ``child_<mode>`` function; a child prints
a JSON report as its last line.
"""

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("CAFFE2KERAS_SHARED") or REPO.parent / "shared")
MiB = 2**20
GiB = 2**30
PAGE = os.sysconf("SC_PAGE_SIZE")
# Guards of one measurement: the machine (24 GiB) is shared, and a known export grows past 20 GiB.
MEM_GIB = 8.0
TIMEOUT_S = 1800.0
POLL_S = 0.05


@dataclass
class Run:
    """One finished (or stopped) child process."""

    wall: float  # seconds, start to reaped
    cpu: float  # user + system seconds
    # Peak RSS from wait4; when killed, the resident size seen last. Never below the parent's RSS
    # when it forked: Linux keeps the high-water mark across exec.
    peak_mib: float
    status: str  # "ok", "failed", "killed" (memory guard) or "timeout"
    note: str = ""  # why it is not ok, in a few words
    stdout: str = ""
    tree_peak_mib: float = 0.0  # the most the child and its descendants held at once, polled

    @property
    def ok(self):
        return self.status == "ok"

    def report(self):
        """The JSON object the child printed as its last line."""
        return json.loads(self.stdout.strip().splitlines()[-1])

    def describe(self):
        return "ok" if self.ok else self.note


def python(script, *args):
    """A command running ``script`` with this interpreter (and the caller's PYTHONPATH)."""
    return [sys.executable, str(script), *map(str, args)]


def cli(*args):
    """A command running the caffe2keras CLI importable here (the worktree's with PYTHONPATH set)."""
    return [sys.executable, "-c", "from caffe2keras.cli import main; main()", *map(str, args)]


def resident_bytes(pid):
    """RSS of ``pid`` and its descendants, read from /proc (0 once it has gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return total


def run(args, timeout=TIMEOUT_S, mem_gib=MEM_GIB, env=None):
    """Run ``args`` as a child in its own process group under the memory and time guards."""
    limit = mem_gib * GiB
    stop = threading.Event()
    lock = threading.Lock()
    stopped, state = {}, {"exited": False, "tree_peak": 0}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, start_new_session=True)

        def kill():
            # Only while the child is not reaped: its pid (the group's id) cannot be reused yet.
            with lock:
                if not state["exited"]:
                    os.killpg(proc.pid, signal.SIGKILL)

        def guard():
            while not stop.wait(POLL_S):
                rss = resident_bytes(proc.pid)
                state["tree_peak"] = max(state["tree_peak"], rss)
                elapsed = time.perf_counter() - start
                if rss > limit:
                    stopped.update(status="killed", note=f"killed at {rss / GiB:.1f} GiB after {elapsed:.0f} s", rss=rss)
                elif elapsed > timeout:
                    stopped.update(status="timeout", note=f"timed out after {timeout:.0f} s", rss=rss)
                else:
                    continue
                kill()
                return

        watcher = threading.Thread(target=guard, daemon=True)
        watcher.start()
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - start
        except BaseException:
            kill()
            raise
        finally:
            stop.set()
            watcher.join()
            with lock:
                # What the child left running in its group goes with it, then it is reaped.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                state["exited"] = True
                _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    cpu, tree = usage.ru_utime + usage.ru_stime, state["tree_peak"] / MiB
    if stopped:
        return Run(wall, cpu, stopped["rss"] / MiB, stopped["status"], stopped["note"], stdout, tree)
    code = os.waitstatus_to_exitcode(status)
    if code:
        return Run(wall, cpu, usage.ru_maxrss / 1024, "failed", f"exit {code}: {_last_line(stderr)}", stdout, tree)
    return Run(wall, cpu, usage.ru_maxrss / 1024, "ok", "", stdout, tree)


def _last_line(text):
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no message)"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def load():
    """The load average (1, 5, 15 min) and the CPU count: how busy the machine was."""
    one, five, fifteen = os.getloadavg()
    return {"load_1m": one, "load_5m": five, "load_15m": fifteen, "cpus": os.cpu_count()}


def load_text(snapshot):
    return f"load {snapshot['load_1m']:.1f} / {snapshot['load_5m']:.1f} / {snapshot['load_15m']:.1f} on {snapshot['cpus']} cores"


def child_main(namespace):
    """Dispatch ``python <part>.py _<mode> ARGS`` to the part's ``child_<mode>(*ARGS)``."""
    mode, args = sys.argv[1], sys.argv[2:]
    namespace[f"child_{mode.lstrip('_')}"](*args)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(report):
    """A child's report: one JSON line, last on stdout."""
    print(json.dumps(report), flush=True)
