"""The command line end to end: convert every golden net to .h5 and .keras, reload the file in
safe mode (no Lambda, every custom layer registered) and compare its outputs with real Caffe's.

Runs the click command in-process so TensorFlow is imported once.
"""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CORE_NETS, GOLDEN, shared_path
from helpers import assert_close, assert_samples, final_blobs

from caffe2keras.cli import main

NETS = [
    *CORE_NETS,
    "zoo/bvlc_googlenet",
    "zoo/squeezenet_v1.1",
    "zoo/mobilenet_v2",
    "zoo/mtcnn_onet",
] + [
    pytest.param(f"zoo/{name}", marks=pytest.mark.slow)
    for name in (
        "bvlc_alexnet", "cifar10_quick", "lenet", "nin_imagenet", "resnet50", "squeezenet_v1.0",
        "mobilenet_v1", "se_bn_inception", "inception_v3", "inception_resnet_v2", "xception",
        "fcn8s_voc", "mtcnn_lnet",
    )
]


def final_values(net_dir):
    """Caffe's final value of each network output blob, by blob name."""
    last = final_blobs(net_dir)
    return {name: last[name] for name in json.loads((net_dir / "meta.json").read_text())["outputs"]}


def convert_and_reload(tmp_path, prototxt, caffemodel, suffix, *extra):
    out = tmp_path / f"model{suffix}"
    result = CliRunner().invoke(main, [str(prototxt), str(caffemodel), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    return keras.models.load_model(out, safe_mode=True, compile=False)


def check_outputs(model, expected_inputs, wanted):
    x = [v.transpose(0, 2, 3, 1) if v.ndim == 4 else v for v in expected_inputs]
    outs = model(x if len(x) > 1 else x[0], training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    names = [n for n in model.output_names]
    assert sorted(names) == sorted(n.replace("/", "_") for n in wanted), names
    by_keras = {n.replace("/", "_"): v for n, v in wanted.items()}
    for name, value in zip(names, outs):
        value = np.asarray(value)
        if value.ndim == 4:
            value = value.transpose(0, 3, 1, 2)
        assert_close(value, by_keras[name], f"output {name}")


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
@pytest.mark.parametrize("net", NETS)
def test_cli_converts_and_safe_mode_reload_matches_caffe(tmp_path, net, suffix):
    net_dir = GOLDEN / net
    expected = np.load(net_dir / "expected.npz")
    model = convert_and_reload(tmp_path, net_dir / "deploy.prototxt", net_dir / "weights.caffemodel", suffix)
    inputs = [expected[k] for k in expected.files if k.startswith("input/")]
    check_outputs(model, inputs, final_values(net_dir))


def test_cli_v1_caffemodel_converts(tmp_path):
    net_dir = GOLDEN / "v1_legacy"
    expected = np.load(net_dir / "expected.npz")
    model = convert_and_reload(tmp_path, net_dir / "deploy.prototxt", net_dir / "weights_v1.caffemodel", ".h5")
    check_outputs(model, [expected["input/data"]], final_values(net_dir))


def test_cli_train_val_net_gives_fc(tmp_path):
    net_dir = GOLDEN / "train_val_phase"
    expected = np.load(net_dir / "expected.npz")
    model = convert_and_reload(tmp_path, net_dir / "train_val_phase.prototxt", net_dir / "weights.caffemodel", ".keras")
    assert model.output_names == ["fc"]
    check_outputs(model, [expected["input/data"]], {"fc": expected["layer/fc/fc"]})


def test_cli_without_caffemodel_builds_trainable_model(tmp_path):
    out = tmp_path / "scratch.keras"
    result = CliRunner().invoke(main, [str(GOLDEN / "zoo/lenet/deploy.prototxt"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(out, safe_mode=True, compile=False)
    assert model.count_params() > 0
    y = np.asarray(model(np.zeros((1, 28, 28, 1), np.float32)))
    assert y.shape == (1, 10) and np.allclose(y.sum(), 1.0, atol=1e-5)


def test_cli_refuses_to_overwrite_without_force(tmp_path):
    net = GOLDEN / "lrn_modes"
    out = tmp_path / "m.h5"
    out.write_bytes(b"precious")
    args = [str(net / "deploy.prototxt"), str(net / "weights.caffemodel"), "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--force" in result.output
    assert out.read_bytes() == b"precious"
    result = CliRunner().invoke(main, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() != b"precious"


def test_cli_summary_names_inputs_outputs_and_params(tmp_path):
    net = GOLDEN / "zoo/bvlc_googlenet"
    result = CliRunner().invoke(main, [str(net / "deploy.prototxt"), str(net / "weights.caffemodel"), "-o", str(tmp_path / "g.h5")])
    assert result.exit_code == 0
    assert "input  data: Caffe [2, 3, 224, 224]" in result.output
    assert "output prob: Caffe [2, 125]" in result.output
    assert "parameters" in result.output


@pytest.mark.slow
def test_cli_silence_bottom_becomes_output(tmp_path):
    # colorization ends in a Silence layer: Caffe's net.outputs is empty, the blob it silences
    # is what users read from the blob table, so it is the model's output.
    net_dir = shared_path("golden", "zoo", "colorization_v2")
    expected = np.load(net_dir / "expected.npz")
    meta = json.loads((net_dir / "meta.json").read_text())
    stats = next(layer["tops"]["class8_ab"] for layer in meta["layers"] if layer["name"] == "class8_ab")
    model = convert_and_reload(tmp_path, net_dir / "deploy.prototxt", net_dir / "weights.caffemodel", ".keras")
    assert model.output_names == ["class8_ab"]
    value = np.asarray(model(expected["input/data_l"].transpose(0, 2, 3, 1), training=False)).transpose(0, 3, 1, 2)
    assert_samples(value, stats, "class8_ab")


@pytest.mark.slow
@pytest.mark.parametrize("net", ["age_net", "densenet121", "vgg16", "yolo_tiny_v1"])
def test_cli_converts_shared_zoo_replicas(tmp_path, net):
    net_dir = shared_path("golden", "zoo", net)
    expected = np.load(net_dir / "expected.npz")
    for suffix in (".h5", ".keras"):
        model = convert_and_reload(tmp_path, net_dir / "deploy.prototxt", net_dir / "weights.caffemodel", suffix)
        inputs = [expected[k] for k in expected.files if k.startswith("input/")]
        check_outputs(model, inputs, final_values(net_dir))
