"""Layers with learned weights: Convolution, Deconvolution, InnerProduct, Embed."""

import math

import numpy as np

from .. import weights
from .._lazy import keras, layers
from ..errors import ConversionError
from ..layout import CAFFE, NHWC
from ..shapes import canonical_axis, conv_geometry, fixed_size, free, same_is_caffe, spatial_params
from ..spec import Learned, register


def shape_convolution(node, bottoms):
    p = node.param.convolution_param
    kernel, stride, pad, dilation = conv_geometry(p, bottoms[0])
    n, c, h, w = bottoms[0]
    out = [n, p.num_output]
    for size, k, s, q, d in zip((h, w), kernel, stride, pad, dilation):
        extent = d * (k - 1) + 1
        out.append(None if size is None else (size + 2 * q - extent) // s + 1)
    return [tuple(out)]


def learned_convolution(node, bottoms, held=None):
    """The kernel, (out, in / group, kh, kw) or Deconvolution's (in, out / group, kh, kw), and the bias."""
    p = node.param.convolution_param
    channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
    out = p.num_output
    group = p.group if node.type in ("Convolution", "Deconvolution") else channels
    if group <= 0 or channels % group or out % group:
        raise ConversionError(f"group {group} does not divide {channels} input and {out} output channels")
    kernel = spatial_params(p, "kernel", 0)
    weight = (channels, out // group, *kernel) if node.type == "Deconvolution" else (out, channels // group, *kernel)
    return [Learned("weight", weight)] + ([Learned("bias", (out,))] if p.bias_term else [])


@register("Convolution", "ConvolutionDepthwise", "DepthwiseConvolution",
          shape=shape_convolution, learned=learned_convolution, any_size=True)
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

    def kernel(blob):
        return weights.depthwise_kernel(blob, channels) if depthwise else weights.conv_kernel(blob)

    y = ctx.bind(node, layer, value, lambda blobs: {"kernel": kernel(blobs["weight"]), "bias": blobs.get("bias")})
    if strided_dilation:
        y = layers.Subsample(stride, name=ctx.name(node))(y)
    return [y]


def shape_deconvolution(node, bottoms):
    p = node.param.convolution_param
    kernel, stride, pad, dilation = conv_geometry(p, bottoms[0])
    n, c, h, w = bottoms[0]
    out = [n, p.num_output]
    for size, k, s, q, d in zip((h, w), kernel, stride, pad, dilation):
        out.append(None if size is None else s * (size - 1) + d * (k - 1) + 1 - 2 * q)
    return [tuple(out)]


@register("Deconvolution", shape=shape_deconvolution, learned=learned_convolution, any_size=True)
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
    y = ctx.bind(node, layer, ctx.canonical(x, node),
                 lambda blobs: {"kernel": weights.deconv_kernel(blobs["weight"]), "bias": blobs.get("bias")})
    return [y]


def shape_inner_product(node, bottoms):
    p = node.param.inner_product_param
    axis = canonical_axis(p.axis, len(bottoms[0]))
    if free(*bottoms[0][axis:]):
        raise fixed_size("InnerProduct over the spatial axes", "its weights span the flattened C×H×W")
    return [bottoms[0][:axis] + (p.num_output,)]


def learned_inner_product(node, bottoms, held=None):
    p = node.param.inner_product_param
    spanned = bottoms[0][canonical_axis(p.axis, len(bottoms[0])):]
    inputs = None if free(*spanned) else math.prod(spanned)
    weight = (inputs, p.num_output) if p.transpose else (p.num_output, inputs)
    return [Learned("weight", weight)] + ([Learned("bias", (p.num_output,))] if p.bias_term else [])


@register("InnerProduct", shape=shape_inner_product, learned=learned_inner_product, any_size=True)
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
    y = ctx.bind(node, layer, value, lambda blobs: {
        "kernel": weights.dense_kernel(blobs["weight"], transpose=p.transpose, chw=chw), "bias": blobs.get("bias")})
    if axis == 0:
        y = layers.Reshape((p.num_output,), name=ctx.name(node))(y)
    return [(y, CAFFE) if out_layout else y]


def shape_embed(node, bottoms):
    if node.param.embed_param.input_dim < 1:
        raise ConversionError("Embed input_dim must be positive (the number of rows of its table)")
    return [bottoms[0] + (node.param.embed_param.num_output,)]


def learned_embed(node, bottoms, held=None):
    p = node.param.embed_param
    bias = [Learned("bias", (p.num_output,))] if p.bias_term else []
    return [Learned("weight", (p.input_dim, p.num_output))] + bias


@register("Embed", shape=shape_embed, learned=learned_embed)
def embed(ctx, node, inputs):
    p = node.param.embed_param
    x = inputs[0]
    out_layout = CAFFE if len(ctx.shape(node)) == 4 else None
    layer = layers.Embed(p.input_dim, p.num_output, use_bias=p.bias_term, name=ctx.name(node, layout=out_layout))
    y = ctx.bind(node, layer, ctx.caffe(x, node),
                 lambda blobs: {"embeddings": blobs["weight"], "bias": blobs.get("bias")})
    return [(y, CAFFE) if out_layout else y]
