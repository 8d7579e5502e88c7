"""The benchmark harness (``benchmarks/``) itself: its guards stop a runaway measurement and say
why, its inputs are what they claim, and its report renders failures as well as numbers. The
speeds are the benchmark's business, not these tests'."""

import sys

import pytest
from conftest import REPO, shared_path

sys.path.insert(0, str(REPO / "benchmarks"))

import measure  # noqa: E402
import memtrace  # noqa: E402
import models  # noqa: E402
import report  # noqa: E402

HOG = "import numpy as np, time; a = np.ones(2**27); time.sleep(60)"  # 1 GiB, then waits


def test_memory_guard_kills_a_child_past_the_limit_and_says_at_how_much():
    run = measure.run([sys.executable, "-c", HOG], mem_gib=0.25, timeout=60)
    assert run.status == "killed"
    assert run.note.startswith("killed at 0.")
    assert run.wall < 50


def test_time_guard_stops_a_child_that_runs_too_long():
    run = measure.run([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    assert (run.status, run.note) == ("timeout", "timed out after 1 s")


def test_a_failed_child_reports_its_last_error_line():
    run = measure.run([sys.executable, "-c", "raise SystemExit('model.prototxt: layer conv1: bad kernel')"])
    assert run.status == "failed"
    assert run.note == "exit 1: model.prototxt: layer conv1: bad kernel"


def test_a_child_report_is_its_last_json_line():
    run = measure.run([sys.executable, "-c", "print('chatter'); print('{\"seconds\": 1.5}')"])
    assert run.ok and run.report() == {"seconds": 1.5}


def test_memtrace_gives_each_stage_the_peak_inside_it_even_unsampled():
    """A stage's peak includes the kernel's high-water mark read at its marks (a converter holding
    Python's lock starves the sampler); the peak before a stage, read as it starts, is not its."""
    import numpy as np

    trace = memtrace.Trace()
    trace.mark("enter", "outer")
    hog = np.ones(2**25)  # 256 MiB touched, freed before the next mark: no sample sees it
    del hog
    trace.mark("enter", "inner")
    trace.mark("exit", "inner")
    trace.mark("exit", "outer")
    rows = {row[0]: row for row in memtrace.table(trace, base=0)}
    assert set(rows) == {"outer", "inner"} and rows["inner"][1] == 1
    outer_peak, inner_peak = rows["outer"][5], rows["inner"][5]
    assert outer_peak - rows["outer"][4] > 200  # the hog, seen by the high-water mark only
    assert inner_peak - rows["inner"][4] < 50  # the hog's peak was read as "inner" began


def test_chain_has_the_layers_asked_for_and_their_weights(tmp_path):
    from caffe2keras import api

    shared_path("fullsize", "synth.py")  # the chain's weights are written by its encoder
    prototxt, caffemodel = models.chain(tmp_path, 9)
    assert models.count_layers(prototxt) == 9
    graph, weights = api.check(str(prototxt), str(caffemodel))
    assert len(graph.nodes) == 9
    assert sorted(weights.layers) == ["convolution0", "convolution4", "convolution8", "scale2", "scale6"]


def _results():
    load = {"load_1m": 5.0, "load_5m": 6.0, "load_15m": 7.0, "cpus": 2}
    ok = {"runs": [], "ratio": 1.5, "seconds": 6.0, "floor_s": 4.0, "peak_mib": 1228.0, "status": "ok", "note": "",
          "failed_peak_mib": None, "output_mib": 528.0}
    killed = {"runs": [], "ratio": None, "seconds": None, "floor_s": 4.0, "peak_mib": None, "status": "killed",
              "note": "killed at 8.0 GiB after 40 s", "failed_peak_mib": 8200.0, "output_mib": None,
              "converter": {"runs": [], "seconds": None, "rss_growth_mib": None, "note": "killed at 8.0 GiB after 30 s"}}
    tflite = dict(ok, seconds=12.0, converter={"runs": [], "seconds": 7.0, "rss_growth_mib": 400.0, "note": ""})
    build = {"runs": [], "ratio": 1.2, "seconds": 4.0, "floor_s": 3.3, "rss_mib": 1228.0,
             "errors": {"output/prob": [1e-6, 1e-4]}, "note": ""}
    opencv = {"check": [0.0, 1e-4, ""], "rounds": [0.02], "seconds": 0.02}
    return {
        "meta": {"date": "2026-12-01 00:00", "commit": "abc1234", "caffe2keras": "/repo/converter", "machine": "2 cores, 24 GiB", "load_start": "load 5",
                 "load_end": "load 6", "versions": "tensorflow 2.21.0", "durations_s": {"conversion": 600.0}},
        "conversion": {"tf_rss_mib": 700.0, "nets": [
            {"net": "vgg16", "size_mib": 528.0, "load": load, "build": build,
             "formats": {"h5": ok, "tflite": tflite, "onnx": killed}}]},
        "inference": {"threads": 2, "rounds": 5, "window_s": 1.0, "nets": [
            {"net": "bvlc_googlenet", "load": load, "threads": 2, "versions": {},
             "exports": {"tflite": {"status": "ok", "note": ""}, "onnx": {"status": "failed", "note": "exit 1: no onnx"}},
             "failed": {"xla@1": "InvalidArgumentError: no XLA kernel"}, "logits": {"1": [2e-6, 1e-4, "fc8"]},
             "batches": {"1": {"opencv": opencv,
                               "predict": {"check": [1e-6, 1e-4, ""], "rounds": [0.05], "seconds": 0.05, "ratio": 0.4},
                               "compiled": {"check": [None, None, "3 detections, OpenCV 4"], "rounds": [0.01],
                                            "seconds": 0.01, "ratio": 2.0}}}},
            {"net": "mobilenet_ssd", "load": load, "exports": {}, "error": "timed out after 1800 s"}]},
        "scaling": {"format": "h5", "chains": [
            {"layers": 1000, "floor_s": 4.0, "wall": 10.0, "peak_mib": 800.0, "status": "ok", "note": "",
             "ms_per_layer": 6.0, "per_layer_vs_first": 1.0},
            {"layers": 10000, "floor_s": 4.0, "wall": 5.0, "peak_mib": 800.0, "status": "failed",
             "note": "exit 1: RecursionError: maximum recursion depth exceeded"}]},
        "batch": {"nets": 23, "format": "keras", "runs": [
            {"jobs": 1, "wall": 200.0, "ok": 23, "failed": [], "per_minute": 6.9, "peak_mib": 1500.0, "status": "ok"},
            {"jobs": 2, "status": "n/a", "note": "batch has no --jobs yet"}]},
        "hotspots": {"nets": [{"net": "bvlc_googlenet", "batch": 1, "error": "timed out after 1800 s"}]},
        "startup": {"caffe2keras --help": {"seconds": 0.4, "note": ""},
                    "caffe2keras inspect deploy.prototxt": {"seconds": 9.0, "note": "exit 2: bad prototxt"}},
    }


def test_report_gives_each_target_its_ratio_and_each_failure_its_reason():
    text = report.markdown(_results())
    rows = {(r[0], r[1]): r for r in report.target_rows(_results())}
    assert rows[("conversion time", "VGG16 → .h5")][2:] == ("1.50× floor (6.0 s vs 4.0 s)", "≤ 1.3× floor", "**no**")
    # 12 s against 2 × 4 s + 7 s of converter: within the budget.
    assert rows[("conversion time", "VGG16 → .tflite")][4] == "yes"
    assert rows[("conversion memory", "VGG16 → .h5")][2] == "1.00× model (+528 MiB)"
    assert rows[("conversion time", "VGG16 → .onnx")][2] == "killed at 8.0 GiB after 40 s"
    assert rows[("inference", "GoogLeNet b1 `predict`")][2:] == ("0.40× OpenCV (50.0 img/s)", "≥ 1.0× OpenCV", "**no**")
    assert rows[("inference", "GoogLeNet b1 .onnx")][2] == "exit 1: no onnx"
    assert rows[("scale: layers", "chain of 10,000 layers")][2].endswith("RecursionError: maximum recursion depth exceeded")
    for reason in ("timed out after 1800 s", "batch has no --jobs yet", "3 detections, OpenCV 4", "InvalidArgumentError",
                   "0.02 (fc8)", "| `caffe2keras --help` | 0.40 s |", "exit 2: bad prototxt"):
        assert reason in text


@pytest.mark.parametrize("part", ["conversion", "inference", "scaling", "batch", "hotspots", "startup"])
def test_report_renders_any_part_alone(part):
    results = _results()
    alone = {"meta": results["meta"], part: results[part]}
    assert report.markdown(alone).count("\n") > 3


def test_detections_are_compared_as_sets_not_in_score_order():
    import numpy as np

    import inference

    rows = np.array([[0, 3, 0.0728778, 0.1, 0.2, 0.3, 0.4],
                     [0, 3, 0.0728779, 0.5, 0.6, 0.7, 0.8],
                     [0, 5, 0.2, 0.1, 0.1, 0.2, 0.2]], np.float32)
    swapped = rows[[1, 0, 2]].copy()
    swapped[0, 2], swapped[1, 2] = rows[0, 2], rows[1, 2]  # scores one ulp apart, order swapped
    err, tol, note = inference._compare_detections(swapped[None, None], rows[None, None])
    assert err < 1e-6 < tol and note == "3 detections"
    moved = rows.copy()
    moved[1, 3] += 0.01
    err, tol, _ = inference._compare_detections(moved[None, None], rows[None, None])
    assert err > tol


def test_quick_shrinks_what_is_not_given_and_keeps_what_is():
    import run

    quick = run.parse_args(["--all", "--quick", "--layers", "50000", "--rounds=7"])
    assert (quick.repeats, quick.window, quick.layers, quick.rounds) == (1, 0.5, [50000], 7)
    assert quick.parts == list(run.PARTS)
    assert run.parse_args(["--inference"]).repeats == 3 and run.parse_args(["--inference"]).parts == ["inference"]
