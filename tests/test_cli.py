"""The commands around conversion: ``--help``, ``inspect``, ``verify``, ``convert --json/--quiet``.

In-process through click's runner (TensorFlow imported once); the GoogLeNet replica is converted
once per module.
"""

import json
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GOLDEN, shared_path

from caffe2keras.cli import EXIT_MISMATCH, main

NET = GOLDEN / "zoo" / "bvlc_googlenet"
PROTOTXT, CAFFEMODEL = str(NET / "deploy.prototxt"), str(NET / "weights.caffemodel")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """GoogLeNet converted by the CLI with --json: (model path, the JSON summary)."""
    path = tmp_path_factory.mktemp("cli") / "googlenet.keras"
    result = run(PROTOTXT, CAFFEMODEL, "-o", path, "--json")
    assert result.exit_code == 0, result.output
    return path, json.loads(result.stdout)


def test_help_lists_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("convert", "batch", "inspect", "verify", "predict"):
        assert f"\n  {command} " in result.output, command


def test_convert_json_summary_describes_the_model(converted):
    path, summary = converted
    model = keras.models.load_model(path, safe_mode=True, compile=False)
    assert summary["parameters"] == model.count_params() == 111287
    assert summary["format"] == "keras" and summary["output"] == str(path)
    assert summary["inputs"] == [{"name": "data", "caffe_shape": [2, 3, 224, 224], "keras_shape": [224, 224, 3]}]
    assert summary["outputs"] == [{"name": "prob", "caffe_shape": [2, 125], "keras_shape": [125]}]
    assert summary["preprocess"] is None


def test_convert_quiet_prints_nothing(tmp_path):
    net = GOLDEN / "zoo" / "lenet"
    result = run(net / "deploy.prototxt", net / "weights.caffemodel", "-o", tmp_path / "l.h5", "--quiet")
    assert result.exit_code == 0 and result.stdout == ""
    assert (tmp_path / "l.h5").is_file()


def test_inspect_lists_layers_shapes_and_params_without_building(converted, monkeypatch):
    from caffe2keras import translate

    def no_keras(*args, **kwargs):
        raise AssertionError("inspect built a Keras model")

    monkeypatch.setattr(translate, "build_model", no_keras)
    result = run("inspect", PROTOTXT, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {r["name"]: r for r in report["layers"]}
    assert rows["conv1/7x7_s2"]["type"] == "Convolution"
    assert rows["conv1/7x7_s2"]["shapes"] == [[2, 8, 112, 112]]
    assert rows["conv1/7x7_s2"]["params"] == 8 * 3 * 7 * 7 + 8
    assert rows["prob"]["shapes"] == [[2, 125]]
    assert all(r["supported"] for r in report["layers"])
    # Counted from the prototxt, the parameters are what the converted Keras model holds.
    assert report["parameters"] == converted[1]["parameters"]


def test_inspect_counts_params_from_caffemodel_and_prints_a_table():
    result = run("inspect", PROTOTXT, CAFFEMODEL)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["layer", "type", "tops"]
    conv = next(line for line in lines if line.startswith("conv1/7x7_s2 "))
    assert "2x8x112x112" in conv and "1,184" in conv and conv.rstrip().endswith("yes")
    assert "111,287 parameters (from the caffemodel)" in result.stdout
    assert "every layer is supported" in result.stdout


def test_inspect_lists_unsupported_layers_instead_of_failing(tmp_path):
    prototxt = tmp_path / "python_layer.prototxt"
    prototxt.write_text("""
        input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
        layer { name: "py" type: "Python" bottom: "conv" top: "py" python_param { module: "my.layer" layer: "Mine" } }
        layer { name: "relu" type: "ReLU" bottom: "py" top: "relu" }
    """)
    result = run("inspect", prototxt, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["unsupported_types"] == ["Python"]
    python_rows = [r for r in report["layers"] if r["type"] == "Python"]
    assert python_rows and not python_rows[0]["supported"]
    # Layers before the Python layer still get shapes; those after it are unknown, not errors.
    assert report["layers"][0]["shapes"][0] is not None
    assert report["layers"][-1]["shapes"] == [None]


def test_verify_agrees_with_opencv_per_layer(converted):
    pytest.importorskip("cv2")
    result = run("verify", PROTOTXT, CAFFEMODEL, converted[0], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    kinds = [c["kind"] for c in report["comparisons"]]
    assert kinds.count("output") == 1 and kinds.count("layer") >= 140
    assert all(c["max_rel"] <= 1e-4 for c in report["comparisons"])


def test_verify_refuses_a_prototxt_the_model_was_not_converted_from(converted):
    pytest.importorskip("cv2")
    other = GOLDEN / "zoo" / "squeezenet_v1.1"
    result = run("verify", other / "deploy.prototxt", other / "weights.caffemodel", converted[0])
    assert result.exit_code == 2, result.output
    assert "was not converted from this prototxt" in result.output


def test_verify_fails_and_names_the_first_wrong_layer(converted, tmp_path):
    pytest.importorskip("cv2")
    model = keras.models.load_model(converted[0], safe_mode=True, compile=False)
    layer = model.get_layer("inception_4a_3x3")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + 0.01])  # a wrong bias, as a bad weight transform would give
    broken = tmp_path / "broken.keras"
    model.save(broken)
    result = run("verify", PROTOTXT, CAFFEMODEL, broken)
    assert result.exit_code == EXIT_MISMATCH, result.output
    assert "first: inception_4a/3x3" in result.stdout
    failing = [line for line in result.stdout.splitlines() if "FAIL" in line]
    assert any(line.split()[1] == "inception_4a/3x3" for line in failing)
    assert not any(line.split()[1].startswith("inception_3") for line in failing)


def test_verify_with_an_image_and_baked_preprocessing(tmp_path):
    pytest.importorskip("cv2")
    import tensorflow as tf

    model = tmp_path / "pre.keras"
    result = run(PROTOTXT, CAFFEMODEL, "-o", model, "--mean", GOLDEN / "mean" / "mean.binaryproto",
                 "--rgb-input", "--scale", "0.017", "-q")
    assert result.exit_code == 0, result.output
    rgb = np.random.default_rng(5).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    image = tmp_path / "x.png"
    tf.io.write_file(str(image), tf.io.encode_png(rgb))
    result = run("verify", PROTOTXT, CAFFEMODEL, model, "--image", image)
    assert result.exit_code == 0, result.output
    assert "input: image x.png" in result.stdout and "all within tolerance" in result.stdout


def test_verify_a_model_cut_with_outputs(tmp_path):
    pytest.importorskip("cv2")
    net = GOLDEN / "zoo" / "lenet"
    model = tmp_path / "cut.keras"
    args = [net / "deploy.prototxt", net / "weights.caffemodel"]
    assert run(*args, "-o", model, "--outputs", "ip1", "-q").exit_code == 0
    result = run("verify", *args, model, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["comparisons"] if c["kind"] == "output"] == ["ip1"]
    assert "prob" not in [c["name"] for c in report["comparisons"]]


def test_verify_compares_detections_as_a_set():
    from caffe2keras.verify import detection_rows

    rows = np.array([[0, 3, 0.5, 0.1, 0.1, 0.2, 0.2], [0, 3, 0.9, 0.3, 0.3, 0.4, 0.4], [-1, 0, 0, 0, 0, 0, 0],
                     [0, 1, 0.5, 0.5, 0.5, 0.6, 0.6]], np.float32)
    shuffled = rows[[2, 3, 0, 1]].reshape(1, 1, 4, 7)
    np.testing.assert_array_equal(detection_rows(shuffled), detection_rows(rows.reshape(1, 1, 4, 7)))
    assert detection_rows(rows)[-1, 0] == -1 and detection_rows(rows)[0, 1] == 1


@pytest.mark.slow
@pytest.mark.parametrize("net", ["squeezenet_v1.1", "mobilenet_v2", "mtcnn_onet", "fcn8s_voc", "mobilenet_ssd",
                                 "resnet50", "inception_v3"])
def test_verify_golden_zoo_nets(net, tmp_path):
    pytest.importorskip("cv2")
    net_dir = GOLDEN / "zoo" / net
    model = tmp_path / f"{net}.keras"
    prototxt, caffemodel = net_dir / "deploy.prototxt", net_dir / "weights.caffemodel"
    assert run(prototxt, caffemodel, "-o", model, "-q").exit_code == 0
    result = run("verify", prototxt, caffemodel, model)
    assert result.exit_code == 0, result.output
    assert "all within tolerance" in result.stdout


def test_verify_without_opencv_says_which_extra_to_install(converted, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    result = run("verify", PROTOTXT, CAFFEMODEL, converted[0])
    assert result.exit_code == 2
    assert "caffe2keras[verify]" in result.output
