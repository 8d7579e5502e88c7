"""Caffe and TensorFlow both cross-correlate: kernels are re-laid out, never rotated.

The Theano-era GoogLeNet port rotated filters by 180° because Theano convolved. This pins the
opposite for Keras 3 against real Caffe's outputs: the converted kernels match, and the same
model with every kernel rotated does not.
"""

import numpy as np
from conftest import GOLDEN
from helpers import blob_values, build, max_error, tolerance


def test_conv_kernels_are_not_rotated():
    net = GOLDEN / "conv_variants"
    expected = np.load(net / "expected.npz")
    conversion = build(net / "deploy.prototxt", net / "weights.caffemodel")
    inputs = {"data": expected["input/data"]}
    node = conversion.graph.node("c_s2p3")
    want = expected["layer/c_s2p3/c_s2p3"]

    as_converted = blob_values(conversion, inputs)[node.tops[0]]
    assert max_error(as_converted, want) <= tolerance(np.abs(want).max())

    layer = conversion.model.get_layer("c_s2p3")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel[::-1, ::-1], bias])
    rotated = blob_values(conversion, inputs)[node.tops[0]]
    assert max_error(rotated, want) > 100 * tolerance(np.abs(want).max())
