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
from helpers import write_caffemodel

from caffe2keras.cli import EXIT_MISMATCH, main
from caffe2keras.errors import ConversionError

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


PROBLEMS = {  # layer -> a problem conversion stops at
    "sl": 'layer { name: "sl" type: "Slice" bottom: "data" top: "a" top: "b" slice_param { axis: 1 slice_point: 7 } }',
    "lost": 'layer { name: "lost" type: "ReLU" bottom: "nowhere" top: "lost" }',
    "py": 'layer { name: "py" type: "Python" bottom: "data" top: "py" python_param { module: "m" layer: "L" } }',
    "rw": 'layer { name: "rw" type: "ReLU" bottom: "data" top: "data" }',
    "big": 'layer { name: "big" type: "Convolution" bottom: "read" top: "big" convolution_param { num_output: 4 kernel_size: 11 } }',
}


def test_the_tolerant_graph_marks_each_problem_in_conversions_words(tmp_path):
    from caffe2keras import graph, prototxt, types

    header = 'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
    after = 'layer { name: "after" type: "ReLU" bottom: "py" top: "after" }\n'
    raised = {}
    for name, text in PROBLEMS.items():
        path = tmp_path / f"{name}.prototxt"
        path.write_text(header + 'layer { name: "read" type: "ReLU" bottom: "data" top: "read" }\n' + text)
        with pytest.raises(ConversionError) as err:
            graph.build(prototxt.load(str(path)), supported=types.supported_types())
        raised[name] = err.value.message
    path = tmp_path / "all.prototxt"
    path.write_text(header + 'layer { name: "read" type: "ReLU" bottom: "data" top: "read" }\n'
                    + "\n".join(PROBLEMS.values()) + "\n" + after)
    g = graph.build(prototxt.load(str(path)), supported=types.supported_types(), tolerant=True)
    marked = {node.name: node.problem for node in g.nodes if node.problem}
    assert marked == raised
    for node in g.nodes:
        known = node.name == "read"
        assert all((g.shape(t) is not None) == known for t in node.tops), node.name
    assert g.node("after").problem is None  # fed an unknown shape, not itself wrong


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


def test_verify_compares_detections_as_a_set_without_padding():
    from caffe2keras.verify import detection_rows

    rows = np.array([[0, 3, 0.5, 0.1, 0.1, 0.2, 0.2], [0, 3, 0.9, 0.3, 0.3, 0.4, 0.4],
                     [0, 1, 0.5, 0.5, 0.5, 0.6, 0.6]], np.float32)
    caffe_padding = np.array([[0, -1, -1, -1, -1, -1, -1]] * 2, np.float32)  # the model's, as Caffe pads
    opencv_padding = np.zeros((4, 7), np.float32)
    mine = np.concatenate([rows, caffe_padding]).reshape(1, 1, -1, 7)
    theirs = np.concatenate([rows[[2, 0, 1]], opencv_padding]).reshape(1, 1, -1, 7)
    np.testing.assert_array_equal(detection_rows(mine), detection_rows(theirs))
    assert detection_rows(mine).shape == (3, 7) and detection_rows(mine)[0, 1] == 1


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


@pytest.mark.parametrize("name", ["g.onnx", "g.tflite", "sm/"])
def test_verify_an_exported_format_compares_its_outputs(converted, tmp_path, name):
    pytest.importorskip("cv2")
    if name.endswith(".onnx"):
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")
    from caffe2keras import export

    model = keras.models.load_model(converted[0], safe_mode=True, compile=False)
    path = export.save(model, f"{tmp_path}/{name}")
    result = run("verify", PROTOTXT, CAFFEMODEL, path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["comparisons"]] == ["prob"]
    assert report["comparisons"][0]["max_rel"] <= 1e-4
    assert any("keeps no per-layer values" in s for s in report["skipped"])
    table = run("verify", PROTOTXT, CAFFEMODEL, path).stdout
    assert f"1 output(s) compared (worst max rel {report['comparisons'][0]['max_rel']:.3g}), 1 skipped" in table


def test_verify_a_model_of_another_network_or_shape_is_the_users_mistake(tmp_path):
    """Exit 2 and one line (was: internal error, exit 1): another network's model, or the model
    converted with another --input-shape than verify is given (the shapes disagree)."""
    pytest.importorskip("cv2")
    lenet, net = GOLDEN / "zoo" / "lenet", GOLDEN / "pooling_edges"
    args = [net / "deploy.prototxt", net / "weights.caffemodel"]
    other, resized = tmp_path / "lenet.keras", tmp_path / "pooling16x20.keras"
    assert run(lenet / "deploy.prototxt", lenet / "weights.caffemodel", "-o", other, "-q").exit_code == 0
    assert run(*args, "-o", resized, "--input-shape", "2,3,16,20", "-q").exit_code == 0
    results = [run("verify", *args, other), run("verify", *args, resized)]
    assert [r.exit_code for r in results] == [2, 2]
    assert "was not converted from this prototxt" in results[0].output
    assert "the shapes disagree: the model's input 'data' is (N, 16, 20, 3), the prototxt's 'data' gives (N, 17, " \
           "17, 3)" in results[1].output
    assert all("internal error" not in r.output and len(r.output.strip().splitlines()) == 1 for r in results)
    assert run("verify", *args, resized, "--input-shape", "2,3,16,20").exit_code == 0


def test_verify_detections_fewer_than_keep_top_k(tmp_path):
    """A confidence threshold keeping fewer than keep_top_k detections: OpenCV pads with zero
    rows, the model with Caffe's label -1 rows; the detections themselves agree."""
    pytest.importorskip("cv2")
    net = GOLDEN / "zoo" / "mobilenet_ssd"
    prototxt = tmp_path / "deploy.prototxt"
    text = (net / "deploy.prototxt").read_text()
    assert "confidence_threshold: 0.25" in text
    prototxt.write_text(text.replace("confidence_threshold: 0.25", "confidence_threshold: 0.6"))
    model = tmp_path / "ssd.keras"
    assert run(prototxt, net / "weights.caffemodel", "-o", model, "-q").exit_code == 0
    result = run("verify", prototxt, net / "weights.caffemodel", model, "--json")
    assert result.exit_code == 0, result.output
    (output,) = [c for c in json.loads(result.stdout)["comparisons"] if c["kind"] == "output"]
    count = int(output["note"].split()[0])
    assert 10 < count < 200 and output["shape"] == [count, 7]  # keep_top_k 100 per image, 2 images


def conv_caffemodel(path, layers, seed=0):
    """A caffemodel for ``{layer: kernel shape}`` convolutions with random weights and biases."""
    rng = np.random.default_rng(seed)
    write_caffemodel(path, {name: [rng.normal(0, 0.3, shape), rng.normal(0, 0.1, shape[0])]
                            for name, shape in layers.items()})


FORK_NET = """
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN } data_param { batch_size: 4 }
        transform_param { crop_size: 12 } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST } data_param { batch_size: 2 }
        transform_param { crop_size: 12 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 6 kernel_size: 3 } }
layer { name: "dw" type: "DepthwiseConvolution" bottom: "conv" top: "dw" convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "dw2" type: "ConvolutionDepthwise" bottom: "dw" top: "dw2" convolution_param { num_output: 6 kernel_size: 3 } }
layer { name: "clip" type: "Clip" bottom: "dw2" top: "clip" clip_param { min: -0.5 max: 0.5 } }
layer { name: "after" type: "Convolution" bottom: "clip" top: "after" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "after" bottom: "label" top: "loss" }
"""


def test_verify_hands_opencv_the_network_as_converted(tmp_path):
    """A train/val net (TRAIN and TEST data layers, a loss) with the fork's DepthwiseConvolution:
    OpenCV gets the TEST net with inputs and grouped convolutions; a type OpenCV lacks (Clip)
    is left out with what follows it, the rest compared (was: OpenCV cannot load it)."""
    pytest.importorskip("cv2")
    prototxt = tmp_path / "train_val.prototxt"
    prototxt.write_text(FORK_NET)
    weights = tmp_path / "w.caffemodel"
    conv_caffemodel(weights, {"conv": (6, 3, 3, 3), "dw": (6, 1, 3, 3), "dw2": (6, 1, 3, 3), "after": (2, 6, 1, 1)})
    model = tmp_path / "m.keras"
    assert run(prototxt, weights, "-o", model, "--input-shape", "data=2,3,12,12", "-q").exit_code == 0
    result = run("verify", prototxt, weights, model, "--input-shape", "data=2,3,12,12", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["comparisons"] if c["kind"] == "layer"] == ["conv", "dw", "dw2"]
    assert all(c["max_rel"] <= 1e-4 for c in report["comparisons"])
    assert "layer clip: OpenCV has no 'Clip' layer (nor the 1 layer(s) after it)" in report["skipped"]


def test_verify_runs_py_faster_rcnn_with_opencvs_proposal_layer(tmp_path):
    """py-faster-rcnn's Python proposal layer becomes OpenCV's Proposal; the rows after it are
    compared in the order of the proposals, the padding left out."""
    pytest.importorskip("cv2")
    from oracle import random_caffemodel

    prototxt = GOLDEN.parent / "rcnn" / "faster_rcnn_zf_reduced.prototxt"
    weights = tmp_path / "w.caffemodel"
    random_caffemodel(prototxt, weights, seed=1)
    model = tmp_path / "frcnn.keras"
    assert run(prototxt, weights, "-o", model, "-q").exit_code == 0
    result = run("verify", prototxt, weights, model, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    outputs = {c["name"]: c for c in report["comparisons"] if c["kind"] == "output"}
    assert set(outputs) == {"bbox_pred", "cls_prob"}
    rows = outputs["cls_prob"]["shape"][0]
    assert 50 < rows < 300 and outputs["bbox_pred"]["shape"] == [rows, 84]


WINOGRAD_NET = """
input: "data" input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 32 kernel_size: 3 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 32 kernel_size: 3 } }
"""


def test_verify_turns_off_opencvs_winograd_convolution(tmp_path, monkeypatch):
    """A 3x3 convolution of large, nearly constant activations into small ones (as after an SSD
    Normalize on a photo): OpenCV's Winograd algorithm adds an error of its own beyond the
    tolerance; verify runs OpenCV without it and passes."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    conv2 = rng.normal(0, 0.1, (32, 32, 3, 3))
    weights, prototxt, model = tmp_path / "w.caffemodel", tmp_path / "net.prototxt", tmp_path / "m.keras"
    write_caffemodel(weights, {"conv1": [rng.normal(0, 0.01, (32, 3, 3, 3)), np.full(32, 100.0)],
                               "conv2": [conv2 - conv2.mean(axis=(1, 2, 3), keepdims=True), np.zeros(32)]})
    prototxt.write_text(WINOGRAD_NET)
    assert run(prototxt, weights, "-o", model, "-q").exit_code == 0
    result = run("verify", prototxt, weights, model)
    assert result.exit_code == 0, result.output

    class WinogradOn:  # negative control: OpenCV as verify used to run it
        def __init__(self, net):
            self.net = net

        def enableWinograd(self, on):
            self.net.enableWinograd(True)

        def __getattr__(self, name):
            return getattr(self.net, name)

    read = cv2.dnn.readNetFromCaffe
    monkeypatch.setattr(cv2.dnn, "readNetFromCaffe", lambda *a: WinogradOn(read(*a)))
    result = run("verify", prototxt, weights, model)
    assert result.exit_code == 3 and "first: conv2" in result.stdout


def test_verify_without_opencv_says_which_extra_to_install(converted, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    result = run("verify", PROTOTXT, CAFFEMODEL, converted[0])
    assert result.exit_code == 2
    assert "caffe2keras[verify]" in result.output
