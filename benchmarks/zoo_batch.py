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


def run(work, jobs=JOBS, fmt="keras", guards=None, rounds=1):
    """Each job count ``rounds`` times, the order rotated each round so that a slow spell of the
    machine hits every count; a count's figures are its medians, its ratio to 1 job the median of
    the rounds' ratios."""
    guards = guards or {}
    folder, names = models.golden_zoo_folder(work)
    has_jobs = supports_jobs()
    results = {"nets": len(names), "format": fmt, "rounds": rounds, "cores_available": cores_available()}
    print(f"  this session gets {results['cores_available']:.2f} of {os.cpu_count()} cores", flush=True)
    measured = {n: [] for n in jobs}
    for i in range(rounds):
        for n in jobs[i % len(jobs):] + jobs[:i % len(jobs)]:
            measured[n].append(_one(work, folder, names, n, fmt, guards, has_jobs))
    results["runs"] = [_summary(n, measured[n], measured.get(1)) for n in jobs]
    return results


def _one(work, folder, names, n, fmt, guards, has_jobs):
    row = {"jobs": n, "load": measure.load()}
    if n != 1 and not has_jobs:
        row.update(status="n/a", note="batch has no --jobs yet")
        print(f"  batch, {n} jobs: {row['note']}", flush=True)
        return row
    out, report = work / f"zoo_out_{n}", work / f"zoo_report_{n}.json"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    report.unlink(missing_ok=True)
    job_args = ["--jobs", n] if has_jobs else []
    r = measure.run(measure.cli("batch", folder, "-o", out, "--format", fmt, "--report", report, "-q", *job_args), **guards)
    row.update(wall=r.wall, cpu=r.cpu, peak_mib=r.peak_mib, tree_peak_mib=r.tree_peak_mib, status=r.status,
               note=r.note)
    if report.exists():  # batch exits 4 when any model failed; its report still counts
        records = json.loads(report.read_text())["models"]
        done = [rec for rec in records if rec["status"] == "ok"]
        row.update(ok=len(done), failed=[f"{rec['name']}: {rec.get('error', '')[:120]}" for rec in records if rec["status"] != "ok"],
                   per_minute=len(done) * 60 / r.wall, status="ok")
    shutil.rmtree(out, ignore_errors=True)
    print(f"  batch, {n} job(s): " + (
        f"{row['ok']} of {len(names)} nets in {r.wall:.0f} s = {row['per_minute']:.1f} nets/min, CPU {r.cpu:.0f} s, "
        f"cores busy {r.cpu / r.wall:.2f}, peak {r.peak_mib:.0f} MiB (all processes {r.tree_peak_mib:.0f} MiB)"
        if "ok" in row else r.note), flush=True)
    return row


def _summary(n, rows, one_job):
    """One job count's rounds as one row: medians, the largest peaks, the per-round rates."""
    done = [r for r in rows if "per_minute" in r]
    if not done:
        return rows[-1]
    row = {"jobs": n, "load": rows[0]["load"], "status": "ok", "note": "", "ok": min(r["ok"] for r in done),
           "failed": sorted({f for r in done for f in r["failed"]}), "per_minute_rounds": [r["per_minute"] for r in done]}
    for key in ("wall", "cpu", "per_minute"):
        row[key] = measure.median([r[key] for r in done])
    for key in ("peak_mib", "tree_peak_mib"):
        row[key] = max(r[key] for r in done)
    pairs = [r["per_minute"] / o["per_minute"] for r, o in zip(rows, one_job or []) if "per_minute" in r and "per_minute" in o]
    if n != 1 and pairs:
        row["ratio"] = measure.median(pairs)
    return row
