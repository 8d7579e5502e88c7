"""Networks of any depth convert, save and load: Keras walks a functional graph with a recursion one
frame per layer, which used to stop at ~950 layers (RecursionError, exit 1) while Caffe runs them.
"""

import signal
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from caffe2keras import depth
from caffe2keras.cli import main
from caffe2keras.predict import load_model


def chain(tmp_path, layers):
    """A prototxt of ``layers`` layers in one chain: ReLUs between a first and a last InnerProduct
    (ReLUs are the cheapest layers for Keras to make: a weighted one costs some milliseconds)."""
    lines = ['name: "chain"', 'input: "data"', "input_shape { dim: 1 dim: 4 }"]
    bottom = "data"
    for i in range(layers):
        if i in (0, layers - 1):
            lines.append(f'layer {{ name: "ip{i}" type: "InnerProduct" bottom: "{bottom}" top: "ip{i}" '
                         "inner_product_param { num_output: 4 } }")
            bottom = f"ip{i}"
        else:
            lines.append(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "{bottom}" top: "relu{i}" }}')
            bottom = f"relu{i}"
    path = tmp_path / f"chain{layers}.prototxt"
    path.write_text("\n".join(lines) + "\n")
    return path


def weights(tmp_path, layers):
    """A caffemodel for the two InnerProducts of :func:`chain`."""
    from caffe2keras import caffe_pb2

    rng = np.random.default_rng(0)
    net = caffe_pb2.NetParameter()
    for i in (0, layers - 1):
        layer = net.layer.add(name=f"ip{i}", type="InnerProduct")
        for shape in ((4, 4), (4,)):
            layer.blobs.add(data=rng.uniform(-1, 1, shape).ravel()).shape.dim.extend(shape)
    path = tmp_path / "chain.caffemodel"
    path.write_bytes(net.SerializeToString())
    return path


def convert_and_load(tmp_path, layers):
    prototxt, caffemodel = chain(tmp_path, layers), weights(tmp_path, layers)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 4)).astype(np.float32)
    outputs = []
    for suffix in (".h5", ".keras"):
        path = tmp_path / f"chain{suffix}"
        result = CliRunner().invoke(main, [str(prototxt), str(caffemodel), "-o", str(path), "-q"])
        assert result.exit_code == 0, result.output
        model = load_model(path).model  # the Keras model of the runner
        assert len(model.layers) == layers + 2  # and the input, and the blob table
        outputs.append(np.asarray(model(x)))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert np.abs(outputs[0]).max() > 0.01  # the weights made it through the chain
    assert sys.getrecursionlimit() < depth.RECURSION_LIMIT


def test_a_chain_deeper_than_the_recursion_limit_converts_saves_and_loads(tmp_path):
    convert_and_load(tmp_path, sys.getrecursionlimit() + 500)


@pytest.mark.slow
def test_a_chain_of_10000_layers_converts_saves_and_loads(tmp_path):
    convert_and_load(tmp_path, 10_000)


def test_ctrl_c_reaches_the_work_and_is_raised_to_the_caller():
    unwound = threading.Event()

    def work():
        # Bounded: an interrupt that never arrives fails the test instead of hanging the suite.
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            unwound.set()

    # Python's own Ctrl-C handler, whatever an earlier test of this process left behind.
    handler_before = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            depth.call(work)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, handler_before)
    assert unwound.is_set()
    assert sys.getrecursionlimit() < depth.RECURSION_LIMIT


def test_errors_keep_their_type_and_the_frames_of_the_work():
    def work():
        raise LookupError("deep")

    with pytest.raises(LookupError, match="deep") as info:
        depth.call(work)
    assert any(entry.name == "work" for entry in info.traceback)
