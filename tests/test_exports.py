"""Every export format of the GoogLeNet golden replica reproduces real Caffe in its own runtime:
SavedModel through ``tf.saved_model.load``, TFLite through the TFLite interpreter, ONNX through
onnxruntime, .keras/.h5 through a safe-mode reload; inputs and outputs carry the Caffe blob names.
The options of the exported formats (ONNX opset and NCHW inputs, TFLite quantization) through the
command line. And writing is atomic.
"""

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GOLDEN
from helpers import assert_close, build

from caffe2keras import export, keras_archive
from caffe2keras.cli import main
from caffe2keras.errors import ConversionError

NET = GOLDEN / "zoo" / "bvlc_googlenet"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def googlenet():
    """(Keras model, NHWC input, Caffe's prob) — built once for the module."""
    conversion = build(NET / "deploy.prototxt", NET / "weights.caffemodel")
    expected = np.load(NET / "expected.npz")
    x = expected["input/data"].transpose(0, 2, 3, 1).copy()
    return conversion.model, x, expected["layer/prob/prob"]


@pytest.fixture(scope="module")
def tiny():
    """A two-layer model for the file-handling tests, where the network does not matter."""
    import keras

    inp = keras.Input((4, 4, 3), name="data")
    return keras.Model(inp, keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(inp)))


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


def check(actual, model, x, caffe_prob, what):
    actual = np.asarray(actual)
    assert_close(actual, caffe_prob, f"{what} vs Caffe")
    keras_prob = np.asarray(model(x, training=False))
    assert_close(actual, keras_prob, f"{what} vs Keras")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_files_reload_in_safe_mode(googlenet, outdir, suffix):
    import keras

    model, x, prob = googlenet
    path = export.save(model, outdir / f"g{suffix}")
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    check(loaded(x, training=False), model, x, prob, suffix)


def h5_contents(data):
    """{dataset path: values} and {object path: attributes} of an HDF5 file's bytes."""
    import io

    import h5py

    values, attrs = {}, {}
    with h5py.File(io.BytesIO(data), "r") as f:
        def visit(name, obj):
            attrs[name] = dict(obj.attrs)
            if isinstance(obj, h5py.Dataset):
                values[name] = obj[()]
        f.visititems(visit)
    return values, attrs


def test_keras_archive_holds_what_keras_writes_weights_written_in_place(googlenet, outdir, tmp_path):
    """The archive written once (the weights member's zip header in the HDF5 userblock) against
    Keras' own ``model.save``: same members, same JSON, the same weights bit for bit, CRCs that
    check; a damaged weight byte fails the CRC (the check can fail)."""
    import zipfile

    model = googlenet[0]
    ours = export.save(model, outdir / "in_place.keras")
    model.save(tmp_path / "keras_own.keras")
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(tmp_path / "keras_own.keras") as b:
        assert a.namelist() == b.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        assert a.testzip() is None
        weights = a.getinfo("model.weights.h5")
        assert (weights.header_offset, weights.compress_type) == (0, zipfile.ZIP_STORED)
        assert a.read("config.json") == b.read("config.json")
        assert json.loads(a.read("metadata.json")).keys() == json.loads(b.read("metadata.json")).keys()
        (values, attrs), (want_values, want_attrs) = h5_contents(a.read("model.weights.h5")), h5_contents(b.read("model.weights.h5"))
    assert values.keys() == want_values.keys() and len(values) == len(model.weights)
    for name, value in values.items():
        assert value.dtype == want_values[name].dtype and np.array_equal(value, want_values[name]), name
    assert {k: {a: str(v) for a, v in d.items()} for k, d in attrs.items()} == {
        k: {a: str(v) for a, v in d.items()} for k, d in want_attrs.items()}
    data = bytearray(ours.read_bytes())
    data[keras_archive.HEADER_SIZE + weights.file_size // 2] ^= 1
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(bytes(data))
    with zipfile.ZipFile(damaged) as z:
        assert z.testzip() == "model.weights.h5"


def test_piece_file_crc_from_the_writes_equals_the_files(tmp_path):
    """The CRC-32 of a file region put together from the CRCs kept while writing (big writes,
    one overwritten in part later, one overwriting another) and bytes read back equals zlib's
    over the file's bytes; zlib's combination rule on random splits; a wrong length fails."""
    import os
    import random
    import zlib

    from caffe2keras import h5file

    rng = random.Random(0)
    for _ in range(100):
        a, b = os.urandom(rng.randrange(3000)), os.urandom(rng.randrange(3000))
        assert h5file.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    assert h5file.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b) + 1) != zlib.crc32(a + b)
    piece = h5file.PIECE
    with h5file.create(tmp_path / "f", checksums=True) as f:
        for offset, length in ((None, 100), (None, 3 * piece + 7), (50, piece + 1), (None, 10), (None, piece),
                               (3 * piece + 50, 3), (None, piece + 5), (None, 2 * piece)):
            if offset is not None:
                f.seek(offset)
            else:
                f.seek(0, 2)
            f.write(os.urandom(length))
        f.seek(4 * piece)  # a big write overwriting part of earlier big ones
        f.write(os.urandom(piece))
        f.seek(6 * piece)  # a small one, into the last big one written whole
        f.write(b"xyz")
    assert len(f.checksums) == 6
    data = (tmp_path / "f").read_bytes()
    with open(tmp_path / "f", "rb") as g:
        for start, end in ((0, len(data)), (20, len(data) - 5), (100, len(data)), (7, 7)):
            assert h5file.crc32(g, start, end, f) == zlib.crc32(data[start:end]), (start, end)


@pytest.mark.parametrize("writer", ["h5", "keras"])
def test_ctrl_c_inside_hdf5s_write_leaves_as_keyboardinterrupt(tiny, tmp_path, monkeypatch, writer):
    """A Ctrl-C landing in our write, called back from inside HDF5, reaches the caller as the
    KeyboardInterrupt (h5py made an internal-looking error of it: exit 1 instead of 130)."""
    import signal

    from caffe2keras import h5file

    class Interrupted(h5file.PieceFile):
        def _write(self, data):
            if len(data) > 64:  # a dataset's values, not HDF5's first metadata
                signal.raise_signal(signal.SIGINT)
            return super()._write(data)

    monkeypatch.setattr(h5file, "PieceFile", Interrupted)
    save = export._save_h5 if writer == "h5" else keras_archive.save
    with pytest.raises(KeyboardInterrupt):
        save(tiny, tmp_path / f"m.{writer}")


def test_savedmodel_serves_caffe_outputs_by_blob_name(googlenet, outdir):
    import tensorflow as tf

    model, x, prob = googlenet
    path = export.save(model, f"{outdir}/savedmodel/")
    assert (path / "saved_model.pb").is_file()
    loaded = tf.saved_model.load(str(path))
    check(loaded.serve(tf.constant(x))["prob"], model, x, prob, "SavedModel serve")
    # The serving signature, as TF Serving calls it, takes the input and gives the output by
    # their Caffe names.
    signature = loaded.signatures["serving_default"]
    outputs = signature(data=tf.constant(x))
    assert list(outputs) == ["prob"]
    check(outputs["prob"], model, x, prob, "SavedModel serving_default")


def test_tflite_interpreter_reproduces_caffe(googlenet, outdir):
    from caffe2keras.runtime import tflite_interpreter

    model, x, prob = googlenet
    path = export.save(model, outdir / "g.tflite")
    interpreter = tflite_interpreter(path.read_bytes())
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    (out,) = interpreter.get_output_details()
    check(interpreter.get_tensor(out["index"]), model, x, prob, "TFLite")
    # The signature names the input and the output after the Caffe blobs.
    runner = interpreter.get_signature_runner("serving_default")
    assert list(runner.get_input_details()) == ["data"] and list(runner.get_output_details()) == ["prob"]
    check(runner(data=x)["prob"], model, x, prob, "TFLite signature")


def flatbuffer_objects_equal(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(flatbuffer_objects_equal, a, b))
    if hasattr(a, "__dict__"):
        return type(a) is type(b) and all(flatbuffer_objects_equal(v, getattr(b, k)) for k, v in vars(a).items())
    return a == b


def test_tflite_metadata_is_added_in_front_of_the_converters_bytes(tiny, tmp_path, monkeypatch):
    """The converter's flatbuffer is written unchanged after a new root holding our metadata
    (no rebuild: VGG16's took 5 s and three copies of the weights); read back, the model is the
    one the flatbuffer object API rebuilds, and runs alike."""
    from tensorflow.lite.tools import flatbuffer_utils

    from caffe2keras import runtime

    converted = []
    make = export._tflite_converter

    def spy(directory):
        converter = make(directory)
        convert = converter.convert
        converter.convert = lambda: converted.append(convert()) or converted[-1]
        return converter

    monkeypatch.setattr(export, "_tflite_converter", spy)
    data = export.save(tiny, tmp_path / "t.tflite").read_bytes()
    (raw,) = converted
    prefix = len(data) - len(raw)
    assert data[prefix:] == raw and 0 < prefix and prefix % 16 == 0
    record = json.dumps(runtime.describe(tiny)).encode()
    rebuilt = export._with_tflite_metadata(raw, record)
    assert flatbuffer_objects_equal(flatbuffer_utils.convert_bytearray_to_object(bytearray(data)),
                                    flatbuffer_utils.convert_bytearray_to_object(bytearray(rebuilt)))
    assert runtime.tflite_metadata(data) == json.loads(record) == runtime.tflite_metadata(rebuilt)
    x = np.random.default_rng(0).standard_normal((1, 4, 4, 3)).astype(np.float32)
    outputs = []
    for blob in (data, rebuilt, raw):
        interpreter = runtime.tflite_interpreter(blob)  # verifies the flatbuffer
        outputs.append(interpreter.get_signature_runner("serving_default")(data=x)["fc"])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])
    assert runtime.tflite_metadata(raw) is None  # the negative control: the converter's own has none


def test_tflite_models_the_prefix_cannot_rewrite_are_rebuilt(tiny, tmp_path, monkeypatch):
    """Buffers stored by offset into the file (TFLite's layout past 2 GiB) would move with a new
    front: such a model is refused by the prefix writer and rebuilt instead."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from caffe2keras import export_tflite, runtime

    with pytest.raises(export_tflite.Unsupported):
        export_tflite.with_metadata(b"\x10\0\0\0ABCD" + bytes(16), "x", b"{}")
    make = export._tflite_converter

    def offset_layout(directory):
        converter = make(directory)
        convert = converter.convert

        def marked():
            tree = flatbuffer_utils.convert_bytearray_to_object(convert())
            entry = schema.MetadataT()
            entry.name, entry.buffer = "buffer_location", 0
            tree.metadata = [*(tree.metadata or []), entry]
            return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))

        converter.convert = marked
        return converter

    monkeypatch.setattr(export, "_tflite_converter", offset_layout)
    rebuilds = []
    rebuild = export._with_tflite_metadata
    monkeypatch.setattr(export, "_with_tflite_metadata", lambda *a: rebuilds.append(1) or rebuild(*a))
    data = export.save(tiny, tmp_path / "t.tflite").read_bytes()
    assert rebuilds == [1] and runtime.tflite_metadata(data) == runtime.describe(tiny)


def test_onnxruntime_reproduces_caffe(googlenet, outdir):
    pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (the 'onnx' extra)")
    ort = pytest.importorskip("onnxruntime")
    import onnx

    model, x, prob = googlenet
    path = export.save(model, outdir / "g.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "data" and inp.shape == ["batch", 224, 224, 3]
    assert [o.name for o in session.get_outputs()] == ["prob"] and session.get_outputs()[0].shape == ["batch", 125]
    (out,) = session.run(None, {"data": x})
    check(out, model, x, prob, "ONNX")
    # The weights are initializers named after the Keras variables, laid out as ONNX takes them:
    # no Transpose or Reshape of a weight is left to run.
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    initializers = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    assert initializers["loss3_classifier/kernel"] == (1024 // 8, 125)
    producers = {o: n for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.op_type == "Conv":
            assert node.input[1] in initializers and node.input[1] not in producers
    assert len(proto.graph.initializer) >= len(model.weights) - 1


def test_onnx_writes_no_weight_through_tf2onnx(tiny, tmp_path, monkeypatch):
    """tf2onnx sees the graph with the weights as inputs: what it hands back holds none of them
    (its own optimizer passes copy every constant they meet, VGG16's 528 MB into 23 GB)."""
    pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (the 'onnx' extra)")
    from caffe2keras import export_onnx

    seen = []
    convert = export_onnx._convert

    def spy(*args, **kwargs):
        proto, names = convert(*args, **kwargs)
        seen.append(max((t.ByteSize() for t in proto.graph.initializer), default=0))
        return proto, names

    monkeypatch.setattr(export_onnx, "_convert", spy)
    export.save(tiny, tmp_path / "t.onnx")
    kernel_bytes = 4 * 4 * 3 * 2 * 4
    assert seen and seen[0] < kernel_bytes


def test_onnx_beyond_protobufs_2_gib_is_refused_in_one_line(tmp_path, monkeypatch):
    """A model whose weights an ONNX file cannot hold is refused before tf2onnx starts, naming
    the output and the formats that can (was: the temporary file); the limit lowered to LeNet's
    1.7 MB of weights."""
    pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (the 'onnx' extra)")
    from caffe2keras import export_onnx

    net = GOLDEN / "zoo" / "lenet"
    monkeypatch.setattr(export_onnx, "MAX_BYTES", 1_000_000)
    monkeypatch.setattr(export_onnx, "_convert", lambda *a, **k: pytest.fail("tf2onnx started"))
    out = tmp_path / "l.onnx"
    result = cli(net / "deploy.prototxt", net / "weights.caffemodel", "-o", out)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {out}: the weights take 0.0 GiB; an ONNX file holds at most 2 GiB (a protobuf limit): export "
        ".keras, .h5 or a SavedModel directory instead"]
    assert list(tmp_path.iterdir()) == []


def test_onnx_of_a_two_stage_detector(tmp_path):
    """Faster R-CNN's proposal layer holds an NMS loop: the loop's condition compares with a
    scalar constant, which must stay a scalar in the file (onnxruntime refuses a vector)."""
    pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (the 'onnx' extra)")
    pytest.importorskip("onnxruntime")
    from oracle import random_caffemodel

    from caffe2keras import runtime

    prototxt = GOLDEN.parent / "rcnn" / "faster_rcnn_zf_reduced.prototxt"
    weights = tmp_path / "w.caffemodel"
    random_caffemodel(prototxt, weights, seed=1)
    model = build(prototxt, weights).model
    path = export.save(model, tmp_path / "frcnn.onnx")
    rng = np.random.default_rng(0)
    feeds = {"data": rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32),
             "im_info": np.array([[224, 224, 0.01]], np.float32)}
    onnx_model = runtime.load(path)
    got = dict(zip(onnx_model.output_names, onnx_model([feeds[p.name] for p in onnx_model.inputs])))
    want = dict(zip(model.output_names, model([feeds[t.name] for t in model.inputs], training=False)))
    assert sorted(got) == ["bbox_pred", "cls_prob"]
    for name, value in want.items():
        assert_close(got[name], np.asarray(value), f"ONNX {name}")


@pytest.mark.parametrize("name", ["m.tflite", "m.onnx"])
def test_detection_exports_keep_caffes_detections(tmp_path, name):
    """SSD's DetectionOutput, its NMS a loop whose step count depends on the boxes, in TFLite's
    interpreter and onnxruntime: real Caffe's detections on chains of overlapping boxes."""
    if name.endswith(".onnx"):
        pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (the 'onnx' extra)")
        pytest.importorskip("onnxruntime")
    from oracle import detections

    from caffe2keras import runtime

    net = GOLDEN / "nms_chains"
    expected = np.load(net / "expected.npz")
    model = build(net / "deploy.prototxt", net / "weights.caffemodel").model
    exported = runtime.load(export.save(model, tmp_path / name))
    got = dict(zip(exported.output_names, exported([expected[f"input/{p.name}"] for p in exported.inputs])))
    assert sorted(got) == ["det_per_class", "det_shared"]
    for blob, value in got.items():
        assert_close(detections(value), detections(expected[f"output/{blob}"]), f"{name} {blob}")


@pytest.mark.parametrize("name, factor", [("m.tflite", 9), ("m.onnx", 1)])
def test_an_export_that_would_run_out_of_memory_is_refused_first(googlenet, tmp_path, monkeypatch, name, factor):
    """TFLite's converter holds about nine copies of the weights: with less memory free than
    that, one line says so before the converter starts (not a kill halfway)."""
    if name.endswith(".onnx"):
        pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (the 'onnx' extra)")
    model, _, _ = googlenet
    need = factor * export.weights_bytes(model)
    monkeypatch.setattr(export, "available_memory", lambda: need - 1)
    with pytest.raises(ConversionError, match=rf"writing \.{name[2:]} takes about .* of memory \({factor}x the weights\)"):
        export.save(model, tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(export, "available_memory", lambda: need + 1)
    if name.endswith(".tflite"):
        assert export.save(model, tmp_path / name).is_file()


def onnx_run(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, session.run(None, {session.get_inputs()[0].name: x})


@pytest.mark.parametrize("opset", [13, 18])
def test_cli_onnx_opset_and_nchw_inputs(googlenet, tmp_path, opset):
    """--opset writes that opset; --nchw takes Caffe's (N, C, H, W) input, the batch named."""
    pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (the 'onnx' extra)")
    pytest.importorskip("onnxruntime")
    import onnx

    model, x, prob = googlenet
    path = tmp_path / "g.onnx"
    result = cli(NET / "deploy.prototxt", NET / "weights.caffemodel", "-o", path, "--opset", opset, "--nchw", "-q")
    assert result.exit_code == 0, result.output
    assert onnx.load(str(path)).opset_import[0].version == opset
    session, (out,) = onnx_run(path, x.transpose(0, 3, 1, 2).copy())
    assert session.get_inputs()[0].shape == ["batch", 3, 224, 224]
    check(out, model, x, prob, f"ONNX opset {opset}, NCHW input")


@pytest.mark.parametrize("mode, stored", [("float16", np.float16), ("dynamic", np.int8)])
def test_cli_tflite_quantization_reports_its_error(googlenet, outdir, tmp_path, mode, stored):
    """--quantize float16 / dynamic: weights stored as float16 / int8, a smaller file; the
    summary gives its error against the float model, which is what running it shows."""
    from caffe2keras.runtime import load, tflite_interpreter

    from caffe2keras.cli import summary

    model, x, _ = googlenet
    plain, quantized = outdir / "plain.tflite", tmp_path / f"{mode}.tflite"
    if not plain.exists():
        export.save(model, plain)
    result = cli(NET / "deploy.prototxt", NET / "weights.caffemodel", "-o", quantized, "--quantize", mode, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["export_options"] == {"quantize": mode}
    reported = record["quantization_error"]["prob"]
    assert quantized.stat().st_size < 0.7 * plain.stat().st_size
    details = tflite_interpreter(quantized.read_bytes()).get_tensor_details()
    assert any(d["dtype"] == stored for d in details)
    assert not any(d["dtype"] == stored for d in tflite_interpreter(plain.read_bytes()).get_tensor_details())
    got = load(quantized)([x])[0]
    want = np.asarray(model(x, training=False))
    error = float(np.max(np.abs(got - want)))
    assert 0 < error < 0.05 and 0 < reported["max_abs"] < 0.05
    assert reported["max_rel"] == pytest.approx(reported["max_abs"] / max(1.0, float(np.abs(want).max())), rel=0.5)
    assert f"quantized ({mode}): max |TFLite - Keras| {reported['max_abs']:.3g}" in summary(record)


@pytest.mark.parametrize("suffix, option, message", [
    (".keras", ["--opset", "13"], "--opset applies to .onnx outputs"),
    (".tflite", ["--nchw"], "--nchw applies to .onnx outputs"),
    (".onnx", ["--quantize", "float16"], "--quantize applies to .tflite outputs"),
    (".onnx", ["--opset", "9"], "writes opsets 13 to 18"),
])
def test_cli_export_options_of_another_format_are_refused_first(tmp_path, suffix, option, message):
    out = tmp_path / f"m{suffix}"
    result = cli(NET / "deploy.prototxt", NET / "weights.caffemodel", "-o", out, *option)
    assert result.exit_code == 2 and message in result.output
    assert not out.exists()


JAX_RUNNER = """
import sys, numpy as np, keras
import caffe2keras, caffe2keras.preprocess
assert keras.backend.backend() == "jax", keras.backend.backend()
data = np.load(sys.argv[1])
out = {}
for name in sys.argv[2:]:
    model = keras.models.load_model(f"{name}.keras", safe_mode=True, compile=False)
    ins = [data[k] for k in sorted(data.files) if k.startswith(name + "/")]
    ys = model(ins if isinstance(model.input, (list, tuple)) else ins[0], training=False)
    for i, y in enumerate(ys if isinstance(ys, (list, tuple)) else [ys]):
        out[f"{name}/{i}"] = np.asarray(y)
np.savez(sys.argv[1].replace(".npz", "_out.npz"), **out)
"""

# Every family of custom layer, and baked preprocessing. Slow: JAX compiles op by op while
# loading (about 30 s for a small net's subprocess, minutes for the lot).
JAX_NETS = ["pooling_edges", "lrn_modes", "conv_variants", "dense_flatten", "norm_scale", "eltwise_act",
            "shape_ops", "extensions", "zoo/cifar10_quick+preprocess", "zoo/bvlc_googlenet+preprocess"]


@pytest.mark.slow
def test_keras_files_run_unchanged_on_the_jax_backend(tmp_path):
    """Issue 6's stretch goal: the custom layers are keras.ops only, so .keras files (baked
    preprocessing included) give on JAX the outputs they give on TensorFlow."""
    import importlib.util
    import os
    import subprocess

    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed")
    feeds, want = {}, {}
    for entry in JAX_NETS:
        net, _, extra = entry.partition("+")
        name = net.replace("/", "_")
        expected = np.load(GOLDEN / net / "expected.npz")
        inputs = [expected[k] for k in sorted(expected.files) if k.startswith("input/")]
        inputs = [v.transpose(0, 2, 3, 1) if v.ndim == 4 else v for v in inputs]
        options = {"mean": [104, 117, 123], "scale": 0.017, "rgb_input": True} if extra == "preprocess" else None
        model = build(GOLDEN / net / "deploy.prototxt", GOLDEN / net / "weights.caffemodel", preprocessing=options).model
        if extra == "preprocess":
            inputs = [np.random.default_rng(4).uniform(0, 255, inputs[0].shape).astype(np.float32)]
        model.save(tmp_path / f"{name}.keras")
        for i, x in enumerate(inputs):
            feeds[f"{name}/{i}"] = x
        ys = model(inputs if isinstance(model.input, (list, tuple)) else inputs[0], training=False)
        for i, y in enumerate(ys if isinstance(ys, (list, tuple)) else [ys]):
            want[f"{name}/{i}"] = np.asarray(y)

    np.savez(tmp_path / "feeds.npz", **feeds)
    names = sorted({key.split("/")[0] for key in feeds})
    result = subprocess.run([sys.executable, "-c", JAX_RUNNER, str(tmp_path / "feeds.npz"), *names],
                            cwd=tmp_path, env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(tmp_path / "feeds_out.npz")
    assert sorted(got.files) == sorted(want)
    for key, value in want.items():
        assert_close(got[key], value, f"JAX backend {key}")


def test_existing_output_is_kept_without_force_and_replaced_with_it(tiny, tmp_path):
    model = tiny
    target = tmp_path / "m.tflite"
    target.write_bytes(b"precious")
    with pytest.raises(ConversionError, match="--force"):
        export.save(model, target)
    assert target.read_bytes() == b"precious"
    directory = tmp_path / "sm"
    directory.mkdir()
    (directory / "old.txt").write_text("old")
    with pytest.raises(ConversionError, match="--force"):
        export.save(model, f"{directory}/")
    export.save(model, f"{directory}/", force=True)
    assert (directory / "saved_model.pb").is_file() and not (directory / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "sm"]


@pytest.mark.parametrize("name", ["m.keras", "m.tflite", "sm/"])
def test_failed_write_leaves_no_partial_output(tiny, tmp_path, monkeypatch, name):
    def broken(model, path, fmt):
        with open(path, "wb") if fmt != export.SAVEDMODEL else open(f"{path}.partial", "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export.save(tiny, f"{tmp_path}/{name}")
    assert list(tmp_path.iterdir()) == []


def test_onnx_without_tf2onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ConversionError, match=r"caffe2keras\[onnx\]"):
        export.check_output(tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, message", [("m.pb", "unsupported output extension"), ("missing/m.keras", "does not exist")])
def test_bad_output_paths_are_refused_before_work(tmp_path, name, message):
    with pytest.raises(ConversionError, match=message):
        export.check_output(f"{tmp_path}/{name}")


def without_renameat2(monkeypatch):
    """Make export use its fallback, as on systems or file systems without renameat2."""
    monkeypatch.setattr(export, "_libc_renameat2", lambda: None)


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "claim"])
@pytest.mark.parametrize("name", ["m.keras", "sm/"])
def test_output_created_meanwhile_is_not_replaced(tiny, tmp_path, monkeypatch, renameat2, name):
    """Another run creates the output after the up-front check: the final move refuses it."""
    if not renameat2:
        without_renameat2(monkeypatch)
    write = export._write
    target = tmp_path / name.rstrip("/")

    def write_while_another_run_finishes(model, path, fmt):
        write(model, path, fmt)
        if fmt == export.SAVEDMODEL:
            target.mkdir()
            (target / "theirs").write_text("theirs")
        else:
            target.write_text("theirs")

    monkeypatch.setattr(export, "_write", write_while_another_run_finishes)
    with pytest.raises(ConversionError, match="created by someone else while converting; pass --force") as info:
        export.save(tiny, f"{tmp_path}/{name}")
    assert info.value.file == str(target) and "\n" not in str(info.value)
    assert (target / "theirs" if name.endswith("/") else target).read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "aside"])
def test_force_replaces_a_savedmodel_directory_whole(tiny, tmp_path, monkeypatch, renameat2):
    if not renameat2:
        without_renameat2(monkeypatch)
    directory = tmp_path / "sm"
    directory.mkdir()
    (directory / "old.txt").write_text("old")
    export.save(tiny, f"{directory}/", force=True)
    assert (directory / "saved_model.pb").is_file() and not (directory / "old.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]


RACER = """
import os, sys, time
from pathlib import Path
from caffe2keras import export, keras_archive
from caffe2keras._quiet import import_keras
import_keras()  # TensorFlow's import is the slow, variable part: wait for the others after it
barrier, count = Path(sys.argv[1]), int(sys.argv[2])
(barrier / str(os.getpid())).touch()
while len(list(barrier.iterdir())) < count:
    time.sleep(0.005)
write = export._write

def write_slowly(*args, **options):  # every run is past the up-front check before any run publishes
    write(*args, **options)
    time.sleep(1)

export._write = write_slowly
from caffe2keras.cli import main
sys.argv = ["caffe2keras", *sys.argv[3:]]
main()
"""


def test_simultaneous_runs_without_force_exactly_one_wins(tmp_path):
    """Real processes started together, two per output, all past the up-front existence check
    before any publishes: of each pair one writes, the other exits 2 naming the output."""
    import subprocess

    net = GOLDEN / "zoo" / "lenet"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    targets = [out / "m.h5", out / "sm"]
    runs = [t for t in targets for _ in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(barrier), str(len(runs)), str(net / "deploy.prototxt"),
                          str(net / "weights.caffemodel"), "-o", f"{t}/" if t.name == "sm" else str(t), "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for t in runs
    ]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for target, pair in zip(targets, (results[i : i + 2] for i in range(0, len(results), 2))):
        codes = sorted(code for code, _ in pair)
        assert codes == [0, 2], (target, pair)
        (loser,) = [err for code, err in pair if code == 2]
        assert loser.strip().splitlines() == [
            f"error: {target}: the output was created by someone else while converting; pass --force to replace it"
        ], loser
    assert sorted(p.name for p in out.iterdir()) == ["m.h5", "sm"]
    import keras

    keras.models.load_model(out / "m.h5", safe_mode=True, compile=False)
    assert (out / "sm" / "saved_model.pb").is_file()


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "claim"])
def test_an_empty_directory_created_meanwhile_is_not_replaced(tiny, tmp_path, monkeypatch, renameat2):
    """rename(2) replaces an empty directory without a word: the no-replace move must not."""
    if not renameat2:
        without_renameat2(monkeypatch)
    write = export._write
    target = tmp_path / "sm"

    def write_while_another_run_claims(model, path, fmt):
        write(model, path, fmt)
        target.mkdir()

    monkeypatch.setattr(export, "_write", write_while_another_run_claims)
    with pytest.raises(ConversionError, match="created by someone else"):
        export.save(tiny, f"{target}/")
    assert list(target.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["sm"]


def test_an_interrupt_lost_in_a_finaliser_still_stops_publishing(tiny, tmp_path, monkeypatch):
    """Python swallows a KeyboardInterrupt raised inside a finaliser ('Exception ignored in'):
    the save must notice the signal anyway and leave nothing, and not report the swallowed one
    (with JAX installed TensorFlow imports it, whose gc callback an interrupt can land in: the
    command printed its traceback before the one line)."""
    import gc
    import signal

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    write = export._write

    class Finalised:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # its KeyboardInterrupt dies with this __del__

    def write_then_collect(model, path, fmt):
        write(model, path, fmt)
        Finalised()
        gc.collect()

    monkeypatch.setattr(export, "_write", write_then_collect)
    with pytest.raises(KeyboardInterrupt):
        export.save(tiny, tmp_path / "m.keras")
    assert list(tmp_path.iterdir()) == []
    assert reported == [] and sys.unraisablehook == reported.append
