"""``caffe2keras batch --jobs N``: worker processes give the report a one-process run gives; a
worker that dies fails only its model; an interrupt stops the workers and leaves no partial
output. The last two run the real command in a subprocess, where signals are real."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from test_batch import ZOO, check_against_caffe, copy_nets

from caffe2keras.cli import EXIT_BATCH_FAILED, EXIT_INTERRUPTED, main

CLI = [sys.executable, "-c", "from caffe2keras.cli import main; main()"]


def without_timings(text, out):
    """A report or summary with the output folder and the seconds left out."""
    data = json.loads(text.replace(str(out), "OUT"))
    for record in data["models"]:
        del record["seconds"]
    return data


def test_two_jobs_report_what_one_job_reports(tmp_path):
    models = copy_nets(tmp_path / "models", "lenet", "cifar10_quick", "squeezenet_v1.1")
    broken = models / "broken"  # lenet's prototxt with cifar10's weights
    broken.mkdir()
    for source in (ZOO / "lenet" / "deploy.prototxt", ZOO / "cifar10_quick" / "weights.caffemodel"):
        (broken / source.name).write_bytes(source.read_bytes())
    runs = {}
    for jobs in (1, 2):
        out, report = tmp_path / f"out{jobs}", tmp_path / f"report{jobs}.json"
        result = CliRunner().invoke(main, ["batch", str(models), "-o", str(out), "--report", str(report),
                                           "--jobs", str(jobs)])
        assert result.exit_code == EXIT_BATCH_FAILED, result.output
        table = [" ".join(re.sub(r" \d+\.\d ", " ", line).split())
                 for line in result.stdout.replace(str(out), "OUT").splitlines()]
        runs[jobs] = without_timings(report.read_text(), out), table
    assert runs[1] == runs[2]
    records = {r["name"]: r for r in runs[2][0]["models"]}
    assert [r["name"] for r in runs[2][0]["models"]] == ["broken", "cifar10_quick", "lenet", "squeezenet_v1.1"]
    assert records["broken"]["status"] == "failed" and "layer 'conv1'" in records["broken"]["error"]
    assert [r["status"] for r in runs[2][0]["models"][1:]] == ["ok"] * 3
    assert runs[2][1][-1] == "3 of 4 converted, 1 failed"
    for net in ("lenet", "cifar10_quick"):
        check_against_caffe(tmp_path / "out2" / f"{net}.keras", net)


def test_jobs_must_be_a_count_or_auto(tmp_path):
    result = CliRunner().invoke(main, ["batch", str(ZOO / "lenet"), "-o", str(tmp_path / "out"), "--jobs", "many"])
    assert result.exit_code == 2
    assert "'many' is not a number of processes" in result.output
    assert not (tmp_path / "out").exists()


def big_manifest(tmp_path):
    """A manifest whose first model (67 million weights, no caffemodel) takes seconds to write,
    beside two small ones."""
    copy_nets(tmp_path, "lenet", "cifar10_quick")
    layers = "".join(
        f'layer {{ name: "fc{i}" type: "InnerProduct" bottom: "{"data" if i == 1 else f"fc{i - 1}"}" top: "fc{i}" '
        "inner_product_param { num_output: 4096 } }\n" for i in range(1, 5))
    (tmp_path / "big.prototxt").write_text(f'name: "big"\ninput: "data"\ninput_shape {{ dim: 1 dim: 4096 }}\n{layers}')
    manifest = tmp_path / "models.toml"
    manifest.write_text('[[models]]\nname = "big"\nprototxt = "big.prototxt"\n\n' + "".join(
        f'[[models]]\nname = "{net}"\nprototxt = "{net}/deploy.prototxt"\ncaffemodel = "{net}/weights.caffemodel"\n\n'
        for net in ("lenet", "cifar10_quick")))
    return manifest


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                spawned = b"spawn_main" in f.read()
        except (OSError, ValueError):
            continue
        if ppid == pid and spawned:
            found.append(int(entry))
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def start_until_big_is_written(tmp_path, out, report):
    """The batch in 2 jobs, once the big model is being written (in its worker's temporary
    directory, named with that worker's process id; a small model's file is smaller than
    4 MiB); returns the process, that id and the worker processes (listed before: the 256 MiB
    are written in a fraction of a second)."""
    proc = subprocess.Popen([*CLI, "batch", str(big_manifest(tmp_path)), "-o", str(out), "--report", str(report),
                             "--jobs", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.monotonic() + 240
    workers = []
    while proc.poll() is None and time.monotonic() < deadline:
        if len(workers) < 2:
            workers = children(proc.pid)
        staged = [p for p in out.glob(".caffe2keras-*/model.keras") if _size(p) > 2**22]  # not a small one's
        if staged:
            return proc, int(staged[0].parent.name.split("-")[1]), workers
        time.sleep(0.002)
    proc.kill()
    pytest.fail(f"the big model was never seen being written: {proc.communicate()}")


def _size(path):
    try:
        return path.stat().st_size
    except OSError:  # gone meanwhile
        return 0


def leftovers(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def test_a_killed_worker_fails_its_model_and_the_batch_goes_on(tmp_path):
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc, worker, _ = start_until_big_is_written(tmp_path, out, report)
    try:
        os.kill(worker, signal.SIGKILL)  # as the out-of-memory killer does
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_BATCH_FAILED, stderr
    records = {r["name"]: r for r in json.loads(report.read_text())["models"]}
    assert records["big"]["status"] == "failed", records
    assert records["big"]["error"].startswith("the worker process converting it was killed by SIGKILL")
    assert records["lenet"]["status"] == records["cifar10_quick"]["status"] == "ok"
    assert stderr.strip().splitlines()[-1].startswith("failed: big: the worker process converting it was killed")
    assert sorted(p.name for p in out.iterdir()) == ["cifar10_quick.keras", "lenet.keras"]
    check_against_caffe(out / "lenet.keras", "lenet")


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["Ctrl-C", "SIGTERM"])
def test_an_interrupt_stops_the_workers_and_leaves_no_partial_output(tmp_path, sig):
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc, _, workers = start_until_big_is_written(tmp_path, out, report)
    try:
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole process group
        else:
            proc.send_signal(sig)  # a service manager's SIGTERM, to the command alone
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_INTERRUPTED, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted;"), stderr
    assert "Traceback" not in stderr
    assert len(workers) == 2
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)
    assert leftovers(out) == [] and not report.exists()
    assert "big.keras" not in {p.name for p in out.iterdir()}
    for path in out.iterdir():  # a model finished before the interrupt is whole
        check_against_caffe(path, path.stem)
