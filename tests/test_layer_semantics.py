"""Layer semantics no golden net covers, against numpy transcriptions of Caffe's C++ layers.

Each case is a one- or two-layer prototxt with weights written here; the expected value follows
the Caffe source (``src/caffe/layers/<type>_layer.cpp``) step by step.
"""

import numpy as np
import pytest
from helpers import assert_close, run_net


def run(tmp_path, prototxt, inputs, weights=None, input_shapes=None):
    """The value of every top, by Caffe blob name (last writer wins), in Caffe order."""
    _, values = run_net(tmp_path, prototxt, inputs, weights, input_shapes=input_shapes)
    return {top: value for (_, top), value in values.items()}


rng = np.random.default_rng(5)


def test_embed_looks_up_rows_and_adds_bias(tmp_path):
    w = rng.standard_normal((7, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    idx = np.array([[0, 3, 6, 2, 2], [1, 1, 5, 4, 0]], np.float32)
    out = run(
        tmp_path,
        'input: "idx" input_shape { dim: 2 dim: 5 }\n'
        'layer { name: "embed" type: "Embed" bottom: "idx" top: "embed" embed_param { num_output: 4 input_dim: 7 } }',
        {"idx": idx},
        {"embed": [w, b]},
    )
    assert_close(out["embed"], w[idx.astype(int)] + b, "embed")


def test_clip_and_swish(tmp_path):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32) * 2
    out = run(
        tmp_path,
        'input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }\n'
        'layer { name: "clip" type: "Clip" bottom: "data" top: "clip" clip_param { min: -0.5 max: 0.7 } }\n'
        'layer { name: "swish" type: "Swish" bottom: "data" top: "swish" swish_param { beta: 1.5 } }',
        {"data": x},
    )
    assert_close(out["clip"], np.clip(x, -0.5, 0.7), "clip")
    assert_close(out["swish"], x / (1 + np.exp(-1.5 * x)), "swish")


@pytest.mark.parametrize("op,fn", [("SUM", np.sum), ("ASUM", lambda a, axis: np.abs(a).sum(axis)), ("MEAN", np.mean)])
def test_reduction_over_trailing_axes(tmp_path, op, fn):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    out = run(
        tmp_path,
        'input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }\n'
        f'layer {{ name: "r" type: "Reduction" bottom: "data" top: "r" reduction_param {{ operation: {op} axis: 3 coeff: -2 }} }}',
        {"data": x},
    )
    assert_close(out["r"], -2 * fn(x, axis=3), f"reduction {op}")


def test_pooling_floor_rounding_both_spellings(tmp_path):
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    out = run(
        tmp_path,
        'input: "data" input_shape { dim: 1 dim: 2 dim: 8 dim: 8 }\n'
        'layer { name: "floor" type: "Pooling" bottom: "data" top: "floor" '
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR } }\n"
        'layer { name: "noceil" type: "Pooling" bottom: "data" top: "noceil" '
        "pooling_param { pool: AVE kernel_size: 3 stride: 2 ceil_mode: false } }\n"
        'layer { name: "ceil" type: "Pooling" bottom: "data" top: "ceil" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }',
        {"data": x},
    )
    windows = np.stack([x[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] for i in range(3) for j in range(3)], axis=2)
    assert_close(out["floor"], windows.max(axis=(3, 4)).reshape(1, 2, 3, 3), "round_mode FLOOR")
    assert_close(out["noceil"], windows.mean(axis=(3, 4)).reshape(1, 2, 3, 3), "ceil_mode false")
    assert out["ceil"].shape == (1, 2, 4, 4)  # ceil: (8 - 3) / 2 = 2.5 → 3, + 1


def test_strided_dilated_convolution(tmp_path):
    x = rng.standard_normal((1, 3, 11, 10)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    out = run(
        tmp_path,
        'input: "data" input_shape { dim: 1 dim: 3 dim: 11 dim: 10 }\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        "convolution_param { num_output: 4 kernel_size: 3 stride: 2 dilation: 2 pad: 1 } }",
        {"data": x},
        {"conv": [w, b]},
    )
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (11 + 2 - 5) // 2 + 1, (10 + 2 - 5) // 2 + 1
    want = np.zeros((1, 4, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[0, :, 2 * i : 2 * i + 5 : 2, 2 * j : 2 * j + 5 : 2]  # Caffe cross-correlates
            want[0, :, i, j] = np.tensordot(w, patch, axes=3) + b
    assert_close(out["conv"], want, "stride 2, dilation 2")


def test_batchnorm_zero_scale_factor_means_zero_statistics(tmp_path):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    out = run(
        tmp_path,
        'input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }\n'
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { eps: 0.01 } }',
        {"data": x},
        {"bn": [np.ones(3), np.ones(3) * 5, np.zeros(1)]},
    )
    assert_close(out["bn"], x / np.sqrt(0.01), "BatchNorm with factor 0")


def test_scale_with_scalar_parameter_and_inner_product_on_3d(tmp_path):
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    w = rng.standard_normal((5, 18)).astype(np.float32)
    out = run(
        tmp_path,
        'input: "data" input_shape { dim: 2 dim: 3 dim: 6 }\n'
        'layer { name: "s" type: "Scale" bottom: "data" top: "s" scale_param { num_axes: 0 } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "s" top: "ip" inner_product_param { num_output: 5 bias_term: false } }',
        {"data": x},
        {"s": [np.array(1.5, np.float32)], "ip": [w]},
    )
    assert_close(out["s"], 1.5 * x, "Scale num_axes 0")
    assert_close(out["ip"], (1.5 * x).reshape(2, -1) @ w.T, "InnerProduct on a 3-D blob")


def test_dropout_without_scale_train_scales_at_test_time(tmp_path):
    x = rng.standard_normal((2, 4)).astype(np.float32)
    out = run(
        tmp_path,
        'input: "data" input_shape { dim: 2 dim: 4 }\n'
        'layer { name: "drop" type: "Dropout" bottom: "data" top: "drop" dropout_param { dropout_ratio: 0.25 scale_train: false } }',
        {"data": x},
    )
    assert_close(out["drop"], 0.75 * x, "Dropout scale_train false")


def test_input_layer_with_two_tops_and_concat_on_negative_axis(tmp_path):
    a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((2, 3, 4, 2)).astype(np.float32)
    out = run(
        tmp_path,
        'layer { name: "in" type: "Input" top: "a" top: "b" '
        "input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } shape { dim: 2 dim: 3 dim: 4 dim: 2 } } }\n"
        'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" concat_param { axis: -1 } }',
        {"a": a, "b": b},
    )
    assert_close(out["cat"], np.concatenate([a, b], axis=-1), "Concat axis -1")


def test_relu_with_negative_slope_below_zero(tmp_path):
    x = rng.standard_normal((2, 5)).astype(np.float32)
    out = run(
        tmp_path,
        'input: "data" input_shape { dim: 2 dim: 5 }\n'
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" relu_param { negative_slope: -0.3 } }',
        {"data": x},
    )
    assert_close(out["relu"], np.maximum(x, 0) - 0.3 * np.minimum(x, 0), "ReLU slope -0.3")


def test_lrn_windows_wider_than_the_blob(tmp_path):
    x = rng.standard_normal((1, 3, 3, 4)).astype(np.float32)
    out = run(
        tmp_path,
        'input: "data" input_shape { dim: 1 dim: 3 dim: 3 dim: 4 }\n'
        'layer { name: "across" type: "LRN" bottom: "data" top: "across" lrn_param { local_size: 9 alpha: 0.5 beta: 0.75 k: 2 } }\n'
        'layer { name: "within" type: "LRN" bottom: "data" top: "within" '
        "lrn_param { local_size: 7 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }",
        {"data": x},
    )
    sq = x.astype(np.float64) ** 2
    across = 2 + 0.5 / 9 * sq.sum(axis=1, keepdims=True)  # the window spans every channel
    assert_close(out["across"], x * across**-0.75, "LRN across, local_size > channels")
    within = 1 + 0.5 / 49 * sq.sum(axis=(2, 3), keepdims=True)  # and here every pixel
    assert_close(out["within"], x * within**-0.75, "LRN within, local_size > image")
