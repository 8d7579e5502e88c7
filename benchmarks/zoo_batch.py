"""Many models: ``caffe2keras batch`` over the golden zoo replicas (real Caffe's weights, every
architecture of ``../shared/golden/zoo``), nets converted per minute, 1 job against N.

``batch`` gets ``--jobs N`` only when its ``--help`` lists the option; until then the other
job counts are reported as not available. Each count is one run, timed start to exit; nets per
minute count the conversions its ``--report`` says succeeded. Beside them: the CPU time of the
whole process tree and the cores it kept busy (CPU / wall), and how many cores this session
gets at all (as many busy loops as cores, for a few seconds): Linux's scheduler shares the CPU
between sessions (``sched_autogroup``), so on a machine busy with other sessions' work more
worker processes get no more CPU between them.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import measure
import models

JOBS = (1, 2)


def supports_jobs():
    help_text = subprocess.run(measure.cli("batch", "--help"), capture_output=True, text=True).stdout
    return "--jobs" in help_text


def cores_available(seconds=3.0):
    """CPU seconds per second that one busy loop per core gets, together, in this session."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    before, start = os.times(), time.monotonic()
    loops = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count())]
    for loop in loops:
        loop.wait()
    after = os.times()
    return (after.children_user + after.children_system - before.children_user - before.children_system) / (
        time.monotonic() - start)


def run(work, jobs=JOBS, fmt="keras", guards=None):
    guards = guards or {}
    folder, names = models.golden_zoo_folder(work)
    has_jobs = supports_jobs()
    results = {"nets": len(names), "format": fmt, "runs": [], "cores_available": cores_available()}
    print(f"  this session gets {results['cores_available']:.2f} of {os.cpu_count()} cores", flush=True)
    for n in jobs:
        row = {"jobs": n, "load": measure.load()}
        results["runs"].append(row)
        if n != 1 and not has_jobs:
            row.update(status="n/a", note="batch has no --jobs yet")
            print(f"  batch, {n} jobs: {row['note']}", flush=True)
            continue
        out, report = work / f"zoo_out_{n}", work / f"zoo_report_{n}.json"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        report.unlink(missing_ok=True)
        job_args = ["--jobs", n] if has_jobs else []
        r = measure.run(measure.cli("batch", folder, "-o", out, "--format", fmt, "--report", report, "-q", *job_args), **guards)
        row.update(wall=r.wall, cpu=r.cpu, peak_mib=r.peak_mib, status=r.status, note=r.note)
        if report.exists():  # batch exits 1 when any model failed; its report still counts
            records = json.loads(report.read_text())["models"]
            done = [rec for rec in records if rec["status"] == "ok"]
            row.update(ok=len(done), failed=[f"{rec['name']}: {rec.get('error', '')[:120]}" for rec in records if rec["status"] != "ok"],
                       per_minute=len(done) * 60 / r.wall, status="ok")
        shutil.rmtree(out, ignore_errors=True)
        print(f"  batch, {n} job(s): " + (
            f"{row['ok']} of {len(names)} nets in {r.wall:.0f} s = {row['per_minute']:.1f} nets/min, CPU {r.cpu:.0f} s, "
            f"peak {r.peak_mib:.0f} MiB"
            if "ok" in row else r.note), flush=True)
    return results
