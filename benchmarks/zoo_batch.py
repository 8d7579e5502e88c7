"""Many models: ``caffe2keras batch`` over the golden zoo replicas (real Caffe's weights, every
architecture of ``../shared/golden/zoo``), nets converted per minute, 1 job against N.

``batch`` gets ``--jobs N`` only when its ``--help`` lists the option; until then the other
job counts are reported as not available. Each count is one run, timed start to exit; nets per
minute count the conversions its ``--report`` says succeeded.
"""

import json
import shutil
import subprocess

import measure
import models

JOBS = (1, 2)


def supports_jobs():
    help_text = subprocess.run(measure.cli("batch", "--help"), capture_output=True, text=True).stdout
    return "--jobs" in help_text


def run(work, jobs=JOBS, fmt="keras", guards=None):
    guards = guards or {}
    folder, names = models.golden_zoo_folder(work)
    has_jobs = supports_jobs()
    results = {"nets": len(names), "format": fmt, "runs": []}
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
            f"{row['ok']} of {len(names)} nets in {r.wall:.0f} s = {row['per_minute']:.1f} nets/min, peak {r.peak_mib:.0f} MiB"
            if "ok" in row else r.note), flush=True)
    return results
