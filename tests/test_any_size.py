"""Fully-convolutional nets converted for any input size (``--input-shape data=1,3,?,?``).

One conversion per net, compared with what real Caffe computed at two different sizes
(fixtures/golden/any_size/<net>/<H>x<W>, made by tools/make_reference.py from reshaped inputs):
every layer top through the API, the network outputs through the command line's saved ``.keras``
run compiled. Layers that need a fixed size are named in one line.
"""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GOLDEN
from helpers import assert_close, build, check_golden, run_outputs

from caffe2keras.cli import EXIT_BAD_INPUT, main
from caffe2keras.types import core, vision

ANY_SIZE = GOLDEN / "any_size"
# net -> the two sizes real Caffe ran it at: odd and even sizes, so SAME-or-not padding, ceil
# pooling's dropped last window (pool2 of any_size_fcn at 64x46 only) and Crop offsets all vary.
NETS = {
    "any_size_fcn": ("37x53", "64x46"),  # generated: strided, dilated, grouped conv, pools, Deconvolution, Crop, ...
    "mtcnn_pnet": ("23x31", "48x64"),  # MTCNN's P-net, trained weights (kpzhang93, MIT)
    "fcn8s_voc": ("45x62", "70x51"),  # FCN-8s replica: pad 100, Deconvolution + Crop with offsets to the data
}
FREE = "data=1,3,?,?"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def files(net, size=None):
    folder = ANY_SIZE / net / (size or NETS[net][0])
    return folder / "deploy.prototxt", folder / "weights.caffemodel"


def expected_outputs(folder):
    """Caffe's network outputs: ``{blob: NCHW array}`` from the last layer writing each."""
    expected, meta = np.load(folder / "expected.npz"), json.loads((folder / "meta.json").read_text())
    last = {top: f"layer/{layer['name']}/{top}" for layer in meta["layers"] for top in layer["tops"]}
    return expected["input/data"], {blob: expected[last[blob]] for blob in meta["outputs"]}


@pytest.fixture(scope="module", params=sorted(NETS))
def free_conversion(request):
    net = request.param
    return net, build(*files(net), input_shapes=FREE)


def test_every_layer_matches_caffe_at_two_sizes(free_conversion):
    net, conversion = free_conversion
    assert conversion.model.inputs[0].shape == (None, None, None, 3)
    for size in NETS[net]:
        errors = check_golden(ANY_SIZE / net / size, conversion=conversion, relative=True)
        assert len(errors) >= 3, (net, size, errors)


@pytest.mark.parametrize("net", sorted(NETS))
def test_the_saved_model_runs_compiled_at_two_sizes(net, tmp_path):
    out = tmp_path / f"{net}.keras"
    result = run(*files(net), "-o", out, "--input-shape", FREE)
    assert result.exit_code == 0, result.output
    assert "input  data: Caffe [1, 3, None, None] (NCHW) → Keras [None, None, None, 3] (NHWC)" in result.stdout
    model = keras.models.load_model(out, safe_mode=True)
    for size in NETS[net]:
        x, outputs = expected_outputs(ANY_SIZE / net / size)
        got = model.predict(x.transpose(0, 2, 3, 1), verbose=0)
        got = got if isinstance(got, list) else [got]
        for name, value in zip(model.output_names, got):
            caffe = outputs[name]
            assert_close(value.transpose(0, 3, 1, 2) if value.ndim == 4 else value, caffe, f"{net} {size} {name}")


@pytest.mark.parametrize("net", [
    "conv_variants", "eltwise_act", "lrn_modes", "pooling_edges", "pooling_sum_order", "zoo/nin_imagenet",
    "zoo/squeezenet_v1.1", "zoo/mobilenet_v1", pytest.param("zoo/mobilenet_v2", marks=pytest.mark.slow),
    pytest.param("zoo/inception_v3", marks=pytest.mark.slow), pytest.param("zoo/xception", marks=pytest.mark.slow),
])
def test_a_free_size_conversion_is_caffe_at_the_declared_size(net):
    """The golden nets that take any size, converted so and run at the size Caffe ran them at:
    the free-size paths (pooling's run-time pads and divisors above all) are Caffe's there too."""
    folder = GOLDEN / net
    meta = json.loads((folder / "meta.json").read_text())
    free = {name: (*shape[:2], None, None) for name, shape in meta["inputs"].items()}
    conversion = build(folder / "deploy.prototxt", folder / "weights.caffemodel", input_shapes=free)
    assert conversion.model.inputs[0].shape[1:3] == (None, None)
    check_golden(folder, conversion=conversion)


def test_keras_same_padding_would_not_be_caffe_at_every_size(monkeypatch):
    """Negative control: TensorFlow's SAME padding for a free size is Caffe's at odd sizes only
    (3x3 stride 2 pad 1 pads 0 before an even size, Caffe 1); the check tells them apart: conv1
    reads the odd 37x53 right and the even 64x46 wrong (conv3 reads an even map at both)."""
    def always_same(in_hw, kernel, stride, pad, out_hw, dilation=(1, 1)):
        return all(2 * p == d * (k - 1) for k, p, d in zip(kernel, pad, dilation))

    monkeypatch.setattr(core, "same_is_caffe", always_same)
    monkeypatch.setattr(vision, "same_is_caffe", always_same)
    conversion = build(*files("any_size_fcn"), input_shapes=FREE)
    for size, conv1_wrong in (("37x53", False), ("64x46", True)):
        with pytest.raises(AssertionError) as failed:
            check_golden(ANY_SIZE / "any_size_fcn" / size, conversion=conversion)
        assert "layer/conv3/conv3" in str(failed.value)
        assert ("layer/conv1/conv1" in str(failed.value)) == conv1_wrong


def test_a_model_of_fixed_size_is_another_model():
    """The fixed-size conversion (the prototxt's 37x53) cannot take the other size at all."""
    conversion = build(*files("any_size_fcn"))
    x, _ = expected_outputs(ANY_SIZE / "any_size_fcn" / "64x46")
    with pytest.raises(Exception):  # noqa: B017  (Keras' own shape error)
        run_outputs(conversion, {"data": x})


@pytest.mark.parametrize("net, shape, layer, says", [
    ("zoo/lenet", "1,1,?,?", "ip1", "InnerProduct over the spatial axes needs a fixed input size (its weights span "
                                    "the flattened C×H×W)"),
    ("zoo/mobilenet_ssd", "1,3,?,?", "conv11_mbox_priorbox", "PriorBox needs a fixed input size (its boxes are laid "
                                                             "out for one feature-map and image size)"),
    ("shape_ops", "2,6,?,?", "slice_h", "Slice along a spatial axis needs a fixed input size"),
    ("norm_scale", "2,3,?,?", "scale_2axes", "Scale over the spatial axes needs a fixed input size (it learns one "
                                             "value per position of them)"),
    ("caffe_order", "2,4,?,?", "rs", "Reshape into 2x4x?x? needs a fixed input size (a view can leave one size "
                                     "free, not more)"),
])
def test_a_layer_that_needs_a_fixed_size_is_named_in_one_line(tmp_path, net, shape, layer, says):
    prototxt = GOLDEN / net / "deploy.prototxt"
    result = run(prototxt, "-o", tmp_path / "m.keras", "--input-shape", shape)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {prototxt}, layer '") and says in line, line
    assert f"layer '{layer}'" in line
    assert line.endswith("give --input-shape with a fixed height and width, or cut the network before this layer "
                         "with --outputs")
    assert list(tmp_path.iterdir()) == []


def test_cutting_before_the_fixed_layer_gives_a_free_model(tmp_path):
    lenet = GOLDEN / "zoo" / "lenet"
    result = run(lenet / "deploy.prototxt", lenet / "weights.caffemodel", "-o", tmp_path / "m.keras",
                 "--input-shape", "1,1,?,?", "--outputs", "pool2")
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert model.predict(np.zeros((1, 40, 36, 1), np.float32), verbose=0).shape == (1, 7, 6, 50)


@pytest.mark.parametrize("shape, says", [
    ("data=?,3,32,32", "only the spatial axes (after N and C) can be free"),
    ("data=1,3,0,?", "dimensions must be positive (? for a free height or width)"),
    ("data=1,3,x,?", "expected [NAME=]N,C,H,W with integers (? for a free height or width)"),
])
def test_free_sizes_are_the_spatial_ones(tmp_path, shape, says):
    prototxt, weights = files("mtcnn_pnet")
    result = run(prototxt, weights, "-o", tmp_path / "m.keras", "--input-shape", shape)
    assert result.exit_code == EXIT_BAD_INPUT
    assert says in result.stderr


def test_a_mean_image_needs_a_fixed_size_and_per_channel_means_do_not(tmp_path):
    prototxt, weights = files("mtcnn_pnet")
    image = GOLDEN / "mean" / "mean.binaryproto"
    result = run(prototxt, weights, "-o", tmp_path / "m.keras", "--input-shape", FREE, "--mean", image)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "a mean image is cropped to the input's size, which is free here: give per-channel values" in result.stderr
    result = run(prototxt, weights, "-o", tmp_path / "m.keras", "--input-shape", FREE, "--mean", "127.5",
                 "--scale", "0.0078125")
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    x, outputs = expected_outputs(ANY_SIZE / "mtcnn_pnet" / "23x31")
    pixels = x.transpose(0, 2, 3, 1) / 0.0078125 + 127.5
    for name, value in zip(model.output_names, model.predict(pixels, verbose=0)):
        assert_close(value.transpose(0, 3, 1, 2), outputs[name], f"preprocessed {name}")


def test_inspect_shows_free_sizes_and_where_they_stop():
    result = run("inspect", GOLDEN / "zoo" / "lenet" / "deploy.prototxt", "--input-shape", "1,1,?,?")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "1x20x?x?" in rows["conv1"] and "1x50x?x?" in rows["pool2"]
    assert "NO: InnerProduct over the spatial axes needs a fixed input size" in rows["ip1"]
