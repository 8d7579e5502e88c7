"""What users address a converted model by (README, "The layout contract"): outputs and inputs
named after Caffe's blobs, every top of every Caffe layer reachable by the layer's name (NHWC when
4-D), ``caffe2keras.blobs`` reading any Caffe blob in Caffe's layout from a model just built or
reloaded, and Caffe names that no Keras name can hold mapped to valid, unique ones.

Expected values are real Caffe's (fixtures/golden/naming, made by tools/make_reference.py).
"""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GOLDEN
from google.protobuf import text_format
from helpers import assert_close, assert_samples, build, check_golden, final_blobs

import caffe2keras
from caffe2keras import ConversionError, blobtable
from caffe2keras.cli import main
from caffe2keras.naming import keras_name
from caffe2keras.schema import caffe_pb2

NAMING = GOLDEN / "naming"
CONTRACT_NETS = [
    "pooling_edges", "conv_variants", "dense_flatten", "norm_scale", "eltwise_act", "shape_ops",
    "extensions", "v1_legacy", "caffe_order", "argmax_ties", "batchnorm_batch_stats", "legacy_shapes",
    "pooling_sum_order", "naming/unread_inputs", "naming/caffe_order_tops", "naming/odd_names",
    "naming/many_bottoms", "zoo/mobilenet_ssd", "zoo/fcn8s_voc", "zoo/bvlc_googlenet",
]


def _inputs(model, net_dir):
    """The fixture's input values, NHWC for images, in the order of the model's inputs."""
    expected = np.load(net_dir / "expected.npz")
    table = blobtable.find(model).table
    feed = [expected[f"input/{blob}"] for blob, _ in table["inputs"]]
    return [x.transpose(0, 2, 3, 1) if x.ndim == 4 else x for x in feed]


def _nchw(value):
    value = np.asarray(value)
    return value.transpose(0, 3, 1, 2) if value.ndim == 4 else value


def _converted(net_dir, how, tmp_path):
    """The fixture's model: just built, or saved to ``how`` (a suffix) and loaded in safe mode."""
    model = build(net_dir / "deploy.prototxt", net_dir / "weights.caffemodel").model
    if how == "built":
        return model
    path = tmp_path / f"model{how}"
    model.save(path)
    return keras.models.load_model(path, safe_mode=True, compile=False)


@pytest.mark.parametrize("net", CONTRACT_NETS)
def test_every_top_of_every_layer_is_reachable_by_name_in_nhwc(net):
    """model.get_layer(<Caffe layer>).output is that layer's tops, 4-D ones NHWC: what real Caffe
    recorded right after the layer ran (every value, or for zoo replicas its samples)."""
    net_dir = GOLDEN / net
    model = build(net_dir / "deploy.prototxt", net_dir / "weights.caffemodel").model
    expected = np.load(net_dir / "expected.npz")
    samples = {(layer["name"], top): stats for layer in json.loads((net_dir / "meta.json").read_text())["layers"]
               for top, stats in layer["tops"].items() if isinstance(stats, dict) and "sample" in stats}
    entries, tensors = [], []
    for caffe_layer, keras_layer, tops in blobtable.find(model).table["layers"]:
        out = model.get_layer(keras_layer).output
        outs = out if isinstance(out, (list, tuple)) else [out] * len(tops)
        assert len(outs) == len(tops), f"{caffe_layer}: {len(outs)} outputs for tops {tops}"
        for top, tensor in zip(tops, outs):
            entries.append((caffe_layer, top))
            tensors.append(tensor)
    values = keras.Model(model.inputs, tensors)(_inputs(model, net_dir), training=False)
    for (layer, top), value in zip(entries, values):
        key = f"layer/{layer}/{top}"
        if key in expected.files:
            assert_close(_nchw(value), expected[key], key)
        else:
            assert_samples(_nchw(value), samples[(layer, top)], key)
    assert len(entries) >= len(model.output_names)


def test_layer_names_are_caffe_names_where_keras_can_hold_them():
    net_dir = NAMING / "caffe_order_tops"
    model = build(net_dir / "deploy.prototxt", net_dir / "weights.caffemodel").model
    # A 2-top Slice of a blob the converter holds in Caffe's order: one layer, both tops, NHWC.
    s1, s2 = model.get_layer("slice").output
    assert (tuple(s1.shape), tuple(s2.shape)) == ((None, 5, 6, 1), (None, 5, 6, 3))
    # Permute's top (2, 4, 5, 6) is 4-D: NHWC like every 4-D top, whatever the converter holds.
    assert tuple(model.get_layer("perm").output.shape) == (None, 5, 6, 4)
    assert model.get_layer("perm_caffe_order") is not None  # the free Caffe-order value Flatten reads
    meta = json.loads((net_dir / "meta.json").read_text())
    caffe_layers = {layer["name"] for layer in meta["layers"] if not layer["name"].endswith("_split")}
    assert caffe_layers - {"data"} <= {layer.name for layer in model.layers}


def test_unread_and_rewritten_inputs_are_outputs_named_after_their_blob():
    net_dir = NAMING / "unread_inputs"
    meta = json.loads((net_dir / "meta.json").read_text())
    assert meta["outputs"] == ["aux", "conv", "extra"]  # real Caffe's net.outputs
    conversion = build(net_dir / "deploy.prototxt", net_dir / "weights.caffemodel")
    model = conversion.model
    assert model.output_names == meta["outputs"]
    # 'aux' is rewritten in place and ends as an output of its name: the Input holding its first
    # version is aux_pre, as the Convolution writing conv's first version is conv_pre.
    assert [i.name for i in model.inputs] == ["data", "aux_pre", "extra"]
    assert isinstance(model.get_layer("conv_pre"), keras.layers.Conv2D)
    check_golden(net_dir, conversion=conversion)


@pytest.mark.parametrize("how", ["built", ".keras", ".h5"])
def test_blobs_gives_any_caffe_blob_in_caffe_layout(how, tmp_path):
    for net in ("naming/caffe_order_tops", "naming/unread_inputs", "naming/odd_names"):
        net_dir = GOLDEN / net
        model = _converted(net_dir, how, tmp_path)
        want = {b: v for b, v in final_blobs(net_dir).items() if "_split_" not in b}
        probe = caffe2keras.blobs(model, list(want))
        got = probe(_inputs(model, net_dir), training=False)
        assert sorted(got) == sorted(want)
        for blob, value in want.items():
            assert_close(np.asarray(got[blob]), value, f"{net} {how}: blob {blob!r}")


def test_blobs_reads_a_zoo_net_blob_named_with_a_slash():
    net_dir = GOLDEN / "zoo" / "bvlc_googlenet"
    model = build(net_dir / "deploy.prototxt", net_dir / "weights.caffemodel").model
    meta = json.loads((net_dir / "meta.json").read_text())
    stats = next(layer["tops"]["inception_4a/output"] for layer in meta["layers"]
                 if layer["name"] == "inception_4a/output")
    value = caffe2keras.blobs(model, ["inception_4a/output"])(_inputs(model, net_dir))["inception_4a/output"]
    assert_samples(np.asarray(value), stats, "inception_4a/output")


def test_blobs_names_the_blobs_a_model_lacks():
    net_dir = NAMING / "unread_inputs"
    model = build(net_dir / "deploy.prototxt", net_dir / "weights.caffemodel").model
    with pytest.raises(ConversionError, match="no Caffe blob 'conv1', 'fc'"):
        caffe2keras.blobs(model, ["conv", "conv1", "fc"])
    with pytest.raises(ConversionError, match="no Caffe blob table"):
        caffe2keras.blobs(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), ["x"])


def test_keras_name_rule():
    assert keras_name("inception_4a/output") == "inception_4a_output"
    assert keras_name("conv 1:a@b\\c\nd") == "conv_1_a_b_c_d"
    assert keras_name("卷积") == "__"
    assert keras_name("fc-7.1") == "fc-7.1"
    assert keras_name(".") == "_." and keras_name("") == "_"
    long = keras_name("x" * 70_000)
    assert len(long) == 255 and long != keras_name("x" * 69_999) and long.startswith("x" * 200)


def test_odd_names_convert_predict_save_and_reload(tmp_path):
    """Spaces, ':', '@', '\\', a newline, non-ASCII, '.', a 300-character name, and two names
    ('a/b', 'a_b') that map to one: real Caffe's values, through predict and a safe-mode reload."""
    net_dir = NAMING / "odd_names"
    conversion = build(net_dir / "deploy.prototxt", net_dir / "weights.caffemodel")
    check_golden(net_dir, conversion=conversion)
    model = conversion.model
    x = _inputs(model, net_dir)
    reference = [np.asarray(y) for y in model.predict(x, verbose=0)]
    wanted = final_blobs(net_dir)
    meta = json.loads((net_dir / "meta.json").read_text())
    for blob, value in zip(meta["outputs"], reference):
        assert_close(_nchw(value), wanted[blob], f"output {blob!r}")
    assert model.output_names[:3] == ["_..", "a_b", "a_b_1"]
    for suffix in (".h5", ".keras"):
        path = tmp_path / f"odd{suffix}"
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True, compile=False)
        assert loaded.output_names == model.output_names
        for got, want in zip(loaded.predict(x, verbose=0), reference):
            np.testing.assert_array_equal(got, want)


def _renamed(net_dir, tmp_path):
    """odd_names with names that real Caffe's fixture files cannot record (a NUL, 70,000
    characters) on weightless layers and an output blob: the same computation."""
    net = caffe_pb2.NetParameter()
    text_format.Parse((net_dir / "deploy.prototxt").read_text(), net)
    for layer in net.layer:
        if layer.name == ".":
            layer.name = "y" * 70_000
        if layer.name == "a_b":
            layer.name = "n\0ul"
            layer.top[0] = "a\0b"
    path = tmp_path / "renamed.prototxt"
    path.write_text(text_format.MessageToString(net, as_utf8=True))
    return path


def test_nul_and_huge_names_convert_and_save(tmp_path):
    net_dir = NAMING / "odd_names"
    prototxt = _renamed(net_dir, tmp_path)
    out = tmp_path / "renamed.h5"
    result = CliRunner().invoke(main, [str(prototxt), str(net_dir / "weights.caffemodel"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(out, safe_mode=True, compile=False)
    assert "a_b_1" in model.output_names and any(len(n) == 255 for n in model.output_names)
    outputs = blobtable.find(model).table["outputs"]
    got = dict(zip(outputs, model.predict(_inputs(model, net_dir), verbose=0)))
    wanted = final_blobs(net_dir)
    for blob, caffe_blob in (("..", ".."), ("a\0b", "a_b")):  # Caffe's values do not depend on names
        assert_close(_nchw(got[blob]), wanted[caffe_blob], f"output {blob!r}")
    probe = caffe2keras.blobs(model, ["a\0b", "特征"])(_inputs(model, net_dir))
    assert_close(np.asarray(probe["a\0b"]), wanted["a_b"], "blob a\\0b")
    assert_close(np.asarray(probe["特征"]), wanted["特征"], "blob 特征")


def test_concat_of_many_bottoms_in_groups_keeps_caffe_order():
    """A Concat of 150 (and 70) Slice tops in a shuffled order: Keras' Concatenate checks shapes
    pairwise, so the converter concatenates in groups; the result is still Caffe's."""
    net_dir = NAMING / "many_bottoms"
    conversion = build(net_dir / "deploy.prototxt", net_dir / "weights.caffemodel")
    check_golden(net_dir, conversion=conversion)
    model = conversion.model
    assert isinstance(model.get_layer("shuffled"), keras.layers.Concatenate)
    parts = [layer for layer in model.layers if layer.name.startswith("shuffled_part")]
    assert len(parts) == 3 and all(len(layer.input) <= 64 for layer in parts)


def test_blobs_reads_an_input_blob_as_caffe_holds_it_after_baked_preprocessing():
    net_dir = NAMING / "caffe_order_tops"
    options = {"mean": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "scale": 0.5}
    model = build(net_dir / "deploy.prototxt", net_dir / "weights.caffemodel", preprocessing=options).model
    x = np.random.default_rng(3).uniform(0, 255, (2, 4, 5, 6)).astype(np.float32)
    got = caffe2keras.blobs(model, ["data", "perm"])(x)
    data = ((x - np.arange(1, 7, dtype=np.float32)) * 0.5).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(np.asarray(got["data"]), data, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got["perm"]), data.transpose(0, 2, 3, 1), rtol=1e-6)
