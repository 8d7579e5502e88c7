"""Bad input gets one clear line and leaves the disk as it was.

Each case is checked three ways: the library (``caffe2keras.convert`` raises ConversionError,
and nothing else, carrying file / layer / line / column), the ``convert`` command in-process
(exit 2, one ``error:`` line on stderr, no traceback, nothing written), and for a few cases the
real command in a subprocess, where Ctrl-C and SIGTERM are tested too.
"""

import dataclasses
import random
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GOLDEN

import caffe2keras
from caffe2keras import api, spec, types
from caffe2keras.cli import main
from caffe2keras.errors import ConversionError, InternalError

NET = GOLDEN / "dense_flatten"
PROTOTXT = NET / "deploy.prototxt"
WEIGHTS = NET / "weights.caffemodel"
CLI = [sys.executable, "-c", "from caffe2keras.cli import main; main()"]


def write(path, text):
    path.write_text(text)
    return path


def small_net(tmp_path, body, header='input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'):
    return write(tmp_path / "net.prototxt", f'name: "net"\n{header}{body}')


# --- the cases: each returns the convert() arguments and what the one-line message must say ---


def case_missing_file(tmp_path):
    return dict(args=(tmp_path / "absent.prototxt",), says=["absent.prototxt", "no such file"])


def case_directory(tmp_path):
    return dict(args=(tmp_path,), says=["is a directory"])


def case_binary_garbage_prototxt(tmp_path):
    path = tmp_path / "garbage.prototxt"
    path.write_bytes(random.Random(0).randbytes(3000) + b"\x00")
    return dict(args=(path,), says=["garbage.prototxt", "is a binary file, not a text prototxt"])


def case_text_garbage_prototxt(tmp_path):
    path = tmp_path / "garbage.prototxt"
    path.write_bytes(bytes(range(1, 256)) * 4)
    return dict(args=(path,),
                says=["garbage.prototxt:1:1: not a valid Caffe prototxt: Expected identifier or number, got \\x01."])


def case_empty_prototxt(tmp_path):
    return dict(args=(write(tmp_path / "empty.prototxt", "\n"),), says=["empty.prototxt", "is empty"])


def case_no_input(tmp_path):
    path = write(tmp_path / "net.prototxt", 'name: "net"\nlayer { name: "relu" type: "ReLU" bottom: "x" top: "x" }\n')
    return dict(args=(path,), says=["the network declares no input"])


def case_syntax_error(tmp_path):
    path = small_net(tmp_path, 'layer { name: "conv" type "Convolution" bottom: "data" top: "conv" }\n')
    column = 'layer { name: "conv" type "Convolution"'.index('"Convolution"') + 1
    return dict(args=(path,), says=[f"net.prototxt:4:{column}: not a valid Caffe prototxt: Expected \":\""],
                line=4, column=column)


def case_arguments_swapped(tmp_path):
    return dict(args=(WEIGHTS, PROTOTXT), says=["weights.caffemodel", "a .caffemodel given in place of the prototxt"])


def case_prototxt_as_caffemodel(tmp_path):
    return dict(args=(PROTOTXT, PROTOTXT), says=["deploy.prototxt", "a prototxt given in place of the caffemodel"])


def case_unknown_layer_types(tmp_path):
    # Shape inference would stop at the first; every one is listed, sorted, in one line.
    path = small_net(tmp_path, (
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        'convolution_param { num_output: 4 kernel_size: 3 } }\n'
        'layer { name: "foo" type: "FooLayer" bottom: "conv" top: "foo" }\n'
        'layer { name: "bar" type: "BarLayer" bottom: "foo" top: "bar" }\n'
        'layer { name: "foo2" type: "FooLayer" bottom: "bar" top: "foo2" }\n'
    ))
    listed = ", ".join(sorted(["BarLayer", "FooLayer"]))
    return dict(args=(path,), says=[f"unsupported layer type(s): {listed}"])


def case_bottom_not_produced(tmp_path):
    path = small_net(tmp_path, 'layer { name: "relu" type: "ReLU" bottom: "nope" top: "relu" }\n')
    return dict(args=(path,), says=["layer 'relu'", "bottom 'nope' is not produced by any earlier layer"], layer="relu")


def case_huge_input(tmp_path):
    path = small_net(tmp_path, 'layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }\n',
                     header='input: "data"\ninput_shape { dim: 1 dim: 3 dim: 190000 dim: 160000 }\n')
    return dict(args=(path,), says=["input 'data' [1, 3, 190000, 160000] has 91,200,000,000 elements", "more than"])


def case_zero_input_dimension(tmp_path):
    path = small_net(tmp_path, 'layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }\n',
                     header='input: "data"\ninput_shape { dim: 1 dim: 3 dim: 0 dim: 8 }\n')
    return dict(args=(path,), says=["input 'data' has a non-positive dimension: [1, 3, 0, 8]"])


def case_non_positive_input_shape_argument(tmp_path):
    path = small_net(tmp_path, 'layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }\n')
    return dict(args=(path,), kwargs=dict(input_shapes={"data": (1, 3, -4, 8)}),
                says=["input shape 'data=1,3,-4,8': dimensions must be positive"])


def case_zero_num_output(tmp_path):
    path = small_net(tmp_path, 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
                               'convolution_param { num_output: 0 kernel_size: 3 } }\n')
    return dict(args=(path,), says=["top 'conv' has a non-positive dimension: [1, 0, 6, 6]"], layer="conv")


def case_huge_weights(tmp_path):
    # 1x3x4000x4000 is a fine input; a 100,000-way InnerProduct on it needs 4.8e12 weights.
    path = small_net(tmp_path, 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                               'inner_product_param { num_output: 100000 } }\n',
                     header='input: "data"\ninput_shape { dim: 1 dim: 3 dim: 4000 dim: 4000 }\n')
    return dict(args=(path,), says=["InnerProduct learns 4,800,000,100,000 values", "--max-params"], layer="fc")


def case_weights_adding_up(tmp_path):
    # The kernels (2^29 + 2^28 + 2^28 values) add up to exactly the limit, 2^30: the biases pass it.
    sizes = [8192, 32768, 8192]
    path = small_net(tmp_path, "".join(
        f'layer {{ name: "ip{i}" type: "InnerProduct" bottom: "{"data" if i == 0 else f"ip{i - 1}"}" top: "ip{i}" '
        f"inner_product_param {{ num_output: {n} }} }}\n"
        for i, n in enumerate(sizes)
    ), header='input: "data"\ninput_shape { dim: 1 dim: 65536 }\n')
    return dict(args=(path,), layer="ip2",
                says=["InnerProduct learns 268,443,648 values (1,073,790,976 in the network so far), more than "
                      "the 1,073,741,824 allowed"])


def case_huge_bias(tmp_path):
    # 180 bytes of prototxt that wrote an 8 GB .keras: a billion 1x1 kernels of one weight each,
    # and a billion biases nobody counted.
    path = small_net(tmp_path, 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
                               'convolution_param { num_output: 1000000000 kernel_size: 1 } }\n',
                     header='input: "data"\ninput_shape { dim: 1 dim: 1 dim: 1 dim: 1 }\n')
    return dict(args=(path,), layer="conv", says=["Convolution learns 2,000,000,000 values", "--max-params"])


def case_huge_scale(tmp_path):
    # A Scale over C, H and W of a 2^30-element blob learns 2^31 values (scale and bias).
    path = small_net(tmp_path, 'layer { name: "scale" type: "Scale" bottom: "data" top: "scale" '
                               'scale_param { num_axes: -1 bias_term: true } }\n',
                     header='input: "data"\ninput_shape { dim: 1 dim: 4 dim: 16384 dim: 16384 }\n')
    return dict(args=(path,), layer="scale", says=["Scale learns 2,147,483,648 values"])


def case_truncated_caffemodel(tmp_path):
    path = tmp_path / "half.caffemodel"
    path.write_bytes(WEIGHTS.read_bytes()[: WEIGHTS.stat().st_size // 2])
    return dict(args=(PROTOTXT, path), says=["half.caffemodel", "is truncated"])


def case_empty_caffemodel(tmp_path):
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"")
    return dict(args=(PROTOTXT, path), says=["empty.caffemodel", "is empty"])


def case_random_caffemodel(tmp_path):
    path = tmp_path / "random.caffemodel"
    path.write_bytes(random.Random(1).randbytes(5000))
    return dict(args=(PROTOTXT, path), says=["random.caffemodel", "not a caffemodel"])


def case_caffemodel_of_another_network(tmp_path):
    other = GOLDEN / "pooling_edges" / "weights.caffemodel"
    return dict(args=(PROTOTXT, other), says=[
        "pooling_edges/weights.caffemodel",
        "has no weights for 5 layer(s) of the prototxt: ip_on_4d, ip2, ip_t, ip_after_flatten, ip_axis2",
    ])


def case_blob_shape_mismatch(tmp_path):
    text = PROTOTXT.read_text().replace("num_output: 5 kernel_size: 3", "num_output: 6 kernel_size: 3")
    path = write(tmp_path / "net.prototxt", text)
    return dict(args=(path, WEIGHTS), layer="conv",
                says=["layer 'conv'",
                      "blob 0 has shape [5, 3, 3, 3] in the caffemodel, the prototxt implies [6, 3, 3, 3]"])


CASES = [name for name in dict(globals()) if name.startswith("case_")]


def refused(case):
    """The ConversionError of ``convert()`` on the case, checked to be a one-line bad-input error."""
    args, kwargs = case["args"], case.get("kwargs", {})
    with pytest.raises(ConversionError) as info:
        caffe2keras.convert(*[str(a) for a in args], **kwargs)
    err = info.value
    assert not isinstance(err, InternalError), str(err)
    assert "\n" not in str(err)
    for text in case["says"]:
        assert text in str(err)
    return err


@pytest.mark.parametrize("name", CASES)
def test_library_raises_one_line_conversion_error(tmp_path, name):
    case = globals()[name](tmp_path)
    err = refused(case)
    assert err.file
    for attribute in ("layer", "line", "column"):
        if attribute in case:
            assert getattr(err, attribute) == case[attribute]


def test_prototxt_saved_with_a_byte_order_mark_converts(tmp_path):
    text = 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
    (tmp_path / "bom.prototxt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "utf16.prototxt").write_bytes(text.encode("utf-16"))
    for name in ("bom.prototxt", "utf16.prototxt"):
        graph, _ = api.check(tmp_path / name)
        assert graph.inputs == ["data"]


def test_input_rewritten_in_place_by_the_last_layer_is_an_output(tmp_path):
    # Found by the fuzz test: the network had no output, and Keras refused to build it.
    path = small_net(tmp_path, 'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }\n')
    conversion = api.build(path)
    assert conversion.graph.outputs == ["data@relu"] and len(conversion.model.outputs) == 1


@pytest.mark.parametrize("name", ["case_huge_input", "case_huge_weights", "case_weights_adding_up", "case_huge_bias",
                                  "case_huge_scale"])
def test_absurd_sizes_refused_before_allocating(tmp_path, name):
    case = globals()[name](tmp_path)
    tracemalloc.start()
    try:
        refused(case)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_max_params_sets_the_limit(tmp_path):
    """lenet learns 431,080 values: refused below that, converted at it (library and command)."""
    net = GOLDEN / "zoo" / "lenet"
    args = (str(net / "deploy.prototxt"), str(net / "weights.caffemodel"))
    with pytest.raises(ConversionError, match="431,080 in the network so far.* the 431,079 allowed"):
        caffe2keras.convert(*args, max_params=431_079)
    assert caffe2keras.convert(*args, max_params=431_080).count_params() == 431_080
    out = tmp_path / "m.h5"
    line = assert_one_error_line(CliRunner().invoke(main, [*args, "-o", str(out), "--max-params", "431079"]))
    assert "raise the limit with --max-params" in line and not out.exists()
    result = CliRunner().invoke(main, [*args, "-o", str(out), "--max-params", "431080"])
    assert result.exit_code == 0, result.output


def command(tmp_path, *args):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result, out


def assert_one_error_line(result, code=2):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# --input-shape is checked by click as a usage error; the library case covers the argument.
@pytest.mark.parametrize("name", [c for c in CASES if c != "case_non_positive_input_shape_argument"])
def test_command_exits_2_with_one_line_and_writes_nothing(tmp_path, name):
    case = globals()[name](tmp_path)
    result, out = command(tmp_path, *case["args"], "-o", tmp_path / "out" / "model.h5")
    line = assert_one_error_line(result)
    for text in case["says"]:
        assert text in line
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("output, says", [
    ("missing/dir/model.h5", "the output directory does not exist"),
    ("model.pb", "unsupported output extension '.pb'"),
    ("model", "unsupported output extension '(none)'"),
])
def test_command_refuses_bad_output_before_converting(tmp_path, output, says):
    result, out = command(tmp_path, PROTOTXT, WEIGHTS, "-o", tmp_path / "out" / output)
    assert says in assert_one_error_line(result)
    assert list(out.iterdir()) == []


def test_command_keeps_an_existing_output_without_force(tmp_path):
    target = tmp_path / "out" / "model.h5"
    target.parent.mkdir()
    target.write_bytes(b"precious")
    before = target.stat().st_mtime_ns
    result, out = command(tmp_path, PROTOTXT, WEIGHTS, "-o", target)
    assert "the output file exists; pass --force to overwrite it" in assert_one_error_line(result)
    assert target.read_bytes() == b"precious" and target.stat().st_mtime_ns == before
    assert sorted(out.iterdir()) == [target]


def test_failed_conversion_with_force_keeps_the_existing_output(tmp_path):
    target = tmp_path / "out" / "model.h5"
    target.parent.mkdir()
    target.write_bytes(b"precious")
    case = case_truncated_caffemodel(tmp_path)
    result, out = command(tmp_path, *case["args"], "-o", target, "--force")
    assert "is truncated" in assert_one_error_line(result)
    assert target.read_bytes() == b"precious" and sorted(out.iterdir()) == [target]


def test_converter_bug_exits_1_naming_the_layer(tmp_path, monkeypatch):
    def broken(ctx, node, inputs):
        raise RuntimeError("boom")

    monkeypatch.setitem(spec.SPECS, "ReLU", dataclasses.replace(types.of("ReLU"), translate=broken))
    with pytest.raises(InternalError) as info:
        caffe2keras.convert(str(PROTOTXT), str(WEIGHTS))
    assert info.value.layer == "relu" and isinstance(info.value.__cause__, RuntimeError)
    result, out = command(tmp_path, PROTOTXT, WEIGHTS, "-o", tmp_path / "out" / "model.h5")
    line = assert_one_error_line(result, code=1)
    assert "layer 'relu': internal error while converting this layer: RuntimeError: boom" in line
    assert "--debug" in line and list(out.iterdir()) == []


# --- the real command, in subprocesses (each imports TensorFlow: a few seconds) ---


def run_cli(*args, **kwargs):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)


def test_real_command_one_line_and_exit_2(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(WEIGHTS, PROTOTXT, "-o", out / "model.h5")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {WEIGHTS}: is a binary file, not a text prototxt (a .caffemodel given in place of the prototxt?)"
    ]
    assert list(out.iterdir()) == []


def test_real_command_debug_shows_the_traceback(tmp_path):
    result = run_cli(tmp_path / "absent.prototxt", "-o", tmp_path / "model.h5", "--debug")
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'absent.prototxt'}: no such file"


def big_net(tmp_path):
    """67 million weights (a 270 MB .h5): saving takes long enough to interrupt."""
    layers = "".join(
        f'layer {{ name: "fc{i}" type: "InnerProduct" bottom: "{"data" if i == 1 else f"fc{i - 1}"}" top: "fc{i}" '
        "inner_product_param { num_output: 4096 } }\n"
        for i in range(1, 5)
    )
    return small_net(tmp_path, layers, header='input: "data"\ninput_shape { dim: 1 dim: 4096 }\n')


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_interrupted_save_leaves_no_file(tmp_path, sig):
    prototxt = big_net(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([*CLI, str(prototxt), "-o", str(out / "model.h5")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait until the model is being written in its temporary directory: the interrupt lands
        # mid-write.
        deadline = time.monotonic() + 240
        while not list(out.glob("*/model.h5")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        saw_partial = bool(list(out.glob("*/model.h5")))
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert saw_partial, "the conversion finished before it could be interrupted"
    assert proc.returncode == 130
    assert stderr.strip().splitlines() == ["error: interrupted; no output written"]
    assert list(out.iterdir()) == []


def test_outputs_may_name_an_input():
    # Found by the fuzz test: cutting at an input blob keeps that input (found2798 etc.).
    from caffe2keras import build

    conversion = build(str(GOLDEN / "v1_legacy" / "deploy.prototxt"), outputs=["data", "fc"])
    assert conversion.model.output_names == ["data", "fc"]


def npy_declaring(path, shape, dtype="<f4", data=b""):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        f.write(data)
    return path


def binaryproto(path, dims, values):
    from caffe2keras import caffe_pb2

    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(dims)
    blob.data.extend(values)
    path.write_bytes(blob.SerializeToString())
    return path


@pytest.mark.parametrize("make, says", [
    (lambda p: npy_declaring(p / "m.npy", (3, 100000, 100000)),
     "declares a float32 array of shape [3, 100000, 100000] (120,000,000,000 bytes) but holds 0 bytes"),
    (lambda p: npy_declaring(p / "m.npy", (3, 4, 4), "|O"), "holds an array of object, not numbers"),
    (lambda p: npy_declaring(p / "m.npy", (3, 0, 4)), "holds an empty array of shape [3, 0, 4]"),
    (lambda p: binaryproto(p / "m.binaryproto", [1, 3, 100000, 100000], [1, 2, 3]),
     "mean blob of shape [1, 3, 100000, 100000] holds 3 values"),
    (lambda p: binaryproto(p / "m.binaryproto", [-1, -3], [1, 2, 3]), "mean blob of shape [-1, -3] holds 3 values"),
    # 7 * 0x6DB6DB6DB6DB6DB7 is 1 modulo 2^64: an int64 product took this for one value.
    (lambda p: binaryproto(p / "m.binaryproto", [7, 0x6DB6DB6DB6DB6DB7], [1]),
     "mean blob of shape [7, 7905747460161236407] holds 1 values"),
], ids=["npy-120GB", "npy-objects", "npy-empty", "binaryproto-huge", "binaryproto-negative", "binaryproto-wrapping"])
def test_absurd_mean_files_are_refused_naming_the_file(tmp_path, make, says):
    """A .npy whose header declares (3, 1e5, 1e5) ended as 'out of memory converting this model',
    exit 1, the file not named."""
    mean = make(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    tracemalloc.start()
    try:
        result = CliRunner().invoke(main, [str(PROTOTXT), str(WEIGHTS), "-o", str(out / "m.h5"), "--mean", str(mean)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert assert_one_error_line(result) == f"error: {mean}: {says}"
    assert peak < 50 * 2**20 and list(out.iterdir()) == []


def test_a_big_npy_mean_is_mapped_and_only_the_crop_read(tmp_path):
    """A genuine mean image larger than the input: only the centre crop becomes float32."""
    from caffe2keras import preprocess

    values = np.arange(3 * 64 * 48, dtype=np.float64).reshape(3, 64, 48)
    np.save(tmp_path / "m.npy", values)
    mean = preprocess.load_mean_image(tmp_path / "m.npy")
    assert isinstance(mean, np.memmap) and mean.shape == (3, 64, 48)
    crop = preprocess.centre_crop_mean(mean, 8, 6)
    assert crop.dtype == np.float32 and crop.shape == (8, 6, 3)
    np.testing.assert_array_equal(crop, values[:, 28:36, 21:27].transpose(1, 2, 0))



def wait_until_python_catches_sigint(proc, timeout=60):
    """Until the interpreter has its SIGINT handler: a signal before that is the kernel's default
    (death by the signal), which no program can answer; on a loaded machine a fixed delay after
    the start can land there."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{proc.pid}/status") as status:
                caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            return  # no procfs: fall back to the bare delay
        if caught & (1 << (signal.SIGINT - 1)):
            return
        time.sleep(0.005)


@pytest.mark.parametrize("delay", [0.5, 1.5])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(tmp_path, delay):
    """Interrupted while importing TensorFlow, the command printed a 27-48 line traceback and
    died of the signal (exit -2)."""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([*CLI, str(big_net(tmp_path)), "-o", str(out / "model.h5")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_python_catches_sigint(proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, stderr.strip().splitlines()) == (130, ["error: interrupted; no output written"])
    assert list(out.iterdir()) == []
