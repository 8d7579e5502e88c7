"""Layers with learned weights: Convolution, Deconvolution, InnerProduct, Embed."""

import numpy as np

from .. import weights
from .._lazy import keras, layers
from ..layout import CAFFE, NHWC
from ..shapes import conv_geometry
from . import translator


def _conv_bias(ctx, node, params, out_channels):
    if not node.param.convolution_param.bias_term:
        return []
    return [params[1].reshape(out_channels)]


def same_is_caffe(in_hw, kernel, stride, pad, out_hw, dilation=(1, 1)):
    """Whether TensorFlow's SAME padding places the windows exactly where Caffe's ``pad`` does,
    so the op pads internally instead of after a separate ZeroPadding2D copy.

    SAME gives ``ceil(size / stride)`` outputs and pads ``total // 2`` before, the rest after;
    when the output sizes agree and the leading pads are equal, the trailing pad is exactly the
    part of Caffe's that its windows read (e.g. 3x3 stride 1 pad 1; not 7x7 stride 2 pad 3,
    where SAME pads 2 before).
    """
    for size, k, s, p, o, d in zip(in_hw, kernel, stride, pad, out_hw, dilation):
        if size is None:  # free: at stride 1 SAME pads d * (k - 1) in all, half before, at every size
            if s != 1 or 2 * p != d * (k - 1):
                return False
            continue
        same_out = -(-size // s)
        total = max((same_out - 1) * s + d * (k - 1) + 1 - size, 0)
        if o != same_out or total // 2 != p:
            return False
    return True


def _call_holding(layer, value, kernel, initializer_attr="kernel_initializer"):
    """Call (and so build) ``layer`` on ``value`` with its kernel variable created holding
    ``kernel`` (None: Keras' initialiser).

    Filling a kernel with Keras' random initialiser only to overwrite it costs seconds and a
    second buffer for a big layer (VGG16's fc6: 400 MB); the initialiser is swapped only while
    building, so the layer's config keeps its default.
    """
    if kernel is None:
        return layer(value)

    def preset(shape, dtype=None):
        if tuple(shape) != kernel.shape:
            raise ValueError(f"internal: kernel {kernel.shape} for a variable of shape {tuple(shape)}")
        return weights.variable_value(kernel)

    default = getattr(layer, initializer_attr)
    setattr(layer, initializer_attr, preset)
    try:
        return layer(value)
    finally:
        setattr(layer, initializer_attr, default)


@translator("Convolution", "ConvolutionDepthwise", "DepthwiseConvolution")
def convolution(ctx, node, inputs):
    p = node.param.convolution_param
    x = inputs[0]
    kernel, stride, pad, dilation = conv_geometry(p, x.shape)
    channels, out = x.shape[1], p.num_output
    # graph.build has checked that group divides both channel counts.
    group = p.group if node.type == "Convolution" else channels
    if p.axis != 1:
        raise ctx.fail(node, f"convolution over axis {p.axis} is not supported (only 1)")
    value = ctx.canonical(x, node)
    out_hw = ctx.shape(node)[2:]
    # Along an axis with one output the stride is moot: drop it and crop the input to the one window.
    # (TensorFlow 2.21's oneDNN Conv2D computes garbage for one input channel, batch > 1, strides
    # (1, s > 1) and one output column; no stride, no bug.)
    moot = [o == 1 and st > 1 for o, st in zip(out_hw, stride)]
    stride = tuple(1 if m else st for m, st in zip(moot, stride))
    # TensorFlow rejects stride > 1 together with dilation > 1: convolve densely, then subsample.
    strided_dilation = max(stride) > 1 and max(dilation) > 1
    conv_stride = (1, 1) if strided_dilation else stride
    same = (any(pad) and not strided_dilation and not any(moot)
            and same_is_caffe(x.shape[2:], kernel, stride, pad, out_hw, dilation))
    if any(pad) and not same:
        value = keras.layers.ZeroPadding2D(padding=tuple((q, q) for q in pad), name=ctx.name(node, "pad"))(value)
    if any(moot):
        extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        spare = [size + 2 * q - e if m else 0 for size, q, e, m in zip(x.shape[2:], pad, extent, moot)]
        value = keras.layers.Cropping2D(((0, spare[0]), (0, spare[1])), name=ctx.name(node, "window"))(value)
    common = dict(
        kernel_size=kernel,
        strides=conv_stride,
        padding="same" if same else "valid",
        dilation_rate=dilation,
        use_bias=p.bias_term,
        name=ctx.name(node, "conv") if strided_dilation else ctx.name(node),
    )
    depthwise = group == channels and group > 1
    if depthwise:
        layer = keras.layers.DepthwiseConv2D(depth_multiplier=out // channels, **common)
    else:
        layer = keras.layers.Conv2D(filters=out, groups=group, **common)
    params = ctx.params(node)
    k = None
    if params is not None:
        k = weights.depthwise_kernel(params[0], channels) if depthwise else weights.conv_kernel(params[0])
    y = _call_holding(layer, value, k, "depthwise_initializer" if depthwise else "kernel_initializer")
    if params is not None and p.bias_term:
        layer.bias.assign(_conv_bias(ctx, node, params, out)[0])
    if strided_dilation:
        y = layers.Subsample(stride, name=ctx.name(node))(y)
    return [y]


@translator("Deconvolution")
def deconvolution(ctx, node, inputs):
    p = node.param.convolution_param
    x = inputs[0]
    kernel, stride, pad, dilation = conv_geometry(p, x.shape)
    out, group = p.num_output, p.group
    layer = layers.Deconvolution(
        filters=out,
        kernel=kernel,
        stride=stride,
        pad=pad,
        dilation=dilation,
        group=group,
        use_bias=p.bias_term,
        output_hw=ctx.shape(node)[2:],
        name=ctx.name(node),
    )
    y = layer(ctx.canonical(x, node))
    params = ctx.params(node)
    if params is not None:
        layer.set_weights([weights.deconv_kernel(params[0])] + _conv_bias(ctx, node, params, out))
    return [y]


@translator("InnerProduct")
def inner_product(ctx, node, inputs):
    p = node.param.inner_product_param
    x = inputs[0]
    axis = p.axis % x.rank
    n_in = int(np.prod(x.shape[axis:]))
    chw = None
    if axis == 1 and x.rank == 4 and x.layout == NHWC and not ctx.is_view(x):
        # Flatten the NHWC tensor as it is and reorder the weight rows (C,H,W -> H,W,C) instead of
        # the activations. A top computed in Caffe's order flattens in Caffe's order (below).
        chw = x.shape[1:]
        value = keras.layers.Flatten(name=ctx.name(node, "flatten"))(x.value)
    elif axis == 0:
        # The whole blob, batch included, is one row: Caffe's top is (num_output,).
        value = layers.Reshape((1, n_in), name=ctx.name(node, "flatten"))(ctx.caffe(x, node))
    elif x.rank > axis + 1:
        value = ctx.caffe(x, node)
        value = keras.layers.Reshape(tuple(x.shape[1:axis]) + (n_in,), name=ctx.name(node, "flatten"))(value)
    else:
        value = ctx.caffe(x, node)
    out_layout = CAFFE if axis + 1 == 4 else None
    name = ctx.name(node, "dense") if axis == 0 else ctx.name(node, layout=out_layout)
    layer = keras.layers.Dense(p.num_output, use_bias=p.bias_term, name=name)
    params = ctx.params(node)
    k = weights.dense_kernel(params[0], transpose=p.transpose, chw=chw) if params is not None else None
    y = _call_holding(layer, value, k)
    if params is not None and p.bias_term:
        layer.bias.assign(params[1].reshape(-1))
    if axis == 0:
        y = layers.Reshape((p.num_output,), name=ctx.name(node))(y)
    return [(y, CAFFE) if out_layout else y]


@translator("Embed")
def embed(ctx, node, inputs):
    p = node.param.embed_param
    x = inputs[0]
    out_layout = CAFFE if len(ctx.shape(node)) == 4 else None
    layer = layers.Embed(p.input_dim, p.num_output, use_bias=p.bias_term, name=ctx.name(node, layout=out_layout))
    y = layer(ctx.caffe(x, node))
    params = ctx.params(node)
    if params is not None:
        layer.set_weights(params[:1] + ([params[1].reshape(-1)] if p.bias_term else []))
    return [(y, CAFFE) if out_layout else y]
