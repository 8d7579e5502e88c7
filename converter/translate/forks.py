"""Layers of the Caffe forks: SENet's Axpy, ShuffleNet's ShuffleChannel, SSD's Normalize, the BN
layers of PSPNet and SegNet/ENet, the upsampling family (Upsample, Interp, BilinearInterpolate,
PixelShuffle), Pad and darknet's Reorg.

Detection heads (PriorBox, DetectionOutput, the YOLO outputs) live in :mod:`.detection`, the
two-stage detectors' layers in :mod:`.rcnn`; ROIAlign is refused here with a remedy (see
:func:`~caffe2keras.shapes.refusal`).
"""

import numpy as np

from .._lazy import keras, layers
from ..layout import CAFFE, NHWC, Tensor
from ..shapes import NOT_CONVERTIBLE, interp_size, nearest_scale, pool_geometry, refusal, upsample_size
from . import translator


@translator("Axpy")
def axpy(ctx, node, inputs):
    a, x, y = (ctx.canonical(t, node) for t in inputs)
    return [layers.Axpy(name=ctx.name(node))([a, x, y])]


@translator("ShuffleChannel")
def shuffle_channel(ctx, node, inputs):
    x = inputs[0]
    group = node.param.shuffle_channel_param.group
    if x.shape[1] % group:
        raise ctx.fail(node, f"group {group} does not divide the {x.shape[1]} channels of {list(x.shape)}")
    return [layers.ShuffleChannel(group, name=ctx.name(node))(ctx.canonical(x, node))]


@translator("Normalize")
def normalize(ctx, node, inputs):
    p = node.param.norm_param
    x = inputs[0]
    # Caffe normalises a 2-D or 3-D bottom as its (num, channels, height, width) view.
    x4 = ctx.legacy(x, node)
    # The layer of the node's name gives its top: for a 2-D or 3-D bottom, the reshape back.
    name = ctx.name(node) if x.rank == 4 else ctx.name(node, "normalize")
    layer = layers.Normalize(p.across_spatial, p.channel_shared, p.eps, name=name)
    y = layer(ctx.canonical(x4, node))
    params = ctx.params(node)
    if params is not None:
        layer.set_weights([params[0].reshape(-1)])
    if x.rank == 4:
        return [y]
    y = ctx.caffe(Tensor(y, x4.shape, NHWC), node)
    return [keras.layers.Reshape(x.shape[1:], name=ctx.name(node))(y)]


def _is_pspnet_bn(node, blobs):
    """PSPNet's BN has four blobs (slope, bias, mean, variance); SegNet's and ENet's two."""
    if blobs is not None:
        return len(blobs) == 4
    p = node.param.bn_param
    return p.HasField("slope_filler") or p.HasField("bias_filler") or p.HasField("frozen") or len(node.param.param) > 2


@translator("BN")
def bn(ctx, node, inputs):
    x = inputs[0]
    if x.rank != 4:
        raise ctx.fail(node, "BN needs a 4-D bottom")
    p = node.param.bn_param
    c = x.shape[1]
    blob = (1, c, 1, 1)
    blobs = ctx.weights.take(node.name) if ctx.weights is not None else None
    if ctx.weights is not None and blobs is None:
        raise ctx.fail(node, "BN layer has no weights in the caffemodel")
    value = ctx.canonical(x, node)
    if _is_pspnet_bn(node, blobs):
        # y = slope * (x - mean) / sqrt(var + eps) + bias, with the stored statistics.
        layer = keras.layers.BatchNormalization(axis=-1, epsilon=p.eps, name=ctx.name(node))
        y = layer(value)
        params = _bn_params(ctx, node, blobs, [blob] * 4)
        if params is not None:
            layer.set_weights([b.reshape(-1) for b in params])
        return [y]
    if p.bn_mode == p.INFERENCE:
        # SegNet's compute_bn_statistics folds the statistics into scale and shift.
        layer = layers.ChannelAffine((1, 1, c), name=ctx.name(node))
        y = layer(value)
        params = _bn_params(ctx, node, blobs, [blob] * 2)
        if params is not None:
            layer.set_weights([b.reshape(1, 1, c) for b in params])
        return [y]
    layer = layers.BatchStatsNorm(name=ctx.name(node))
    y = layer(value)
    params = _bn_params(ctx, node, blobs, [blob] * 2)
    if params is not None:
        layer.set_weights([b.reshape(-1) for b in params])
    return [y]


def _bn_params(ctx, node, blobs, shapes):
    if blobs is None:
        return None
    if len(blobs) != len(shapes):
        raise ctx.fail(node, f"caffemodel holds {len(blobs)} blob(s) for this BN layer, expected {len(shapes)}")
    out = []
    for i, (b, s) in enumerate(zip(blobs, shapes)):
        if b.size != int(np.prod(s)):
            raise ctx.fail(
                node, f"blob {i} has shape {list(b.shape)} in the caffemodel, the prototxt implies {list(s)}"
            )
        out.append(b.reshape(s))
    return out


@translator("Upsample")
def upsample(ctx, node, inputs):
    p = node.param.upsample_param
    x = inputs[0]
    if len(inputs) == 1:
        s = nearest_scale(p)
        layer = keras.layers.UpSampling2D(size=(s, s), interpolation="nearest", name=ctx.name(node))
        return [layer(ctx.canonical(x, node))]
    mask = inputs[1]
    producer = ctx.graph.blobs[node.bottoms[1]].producer
    pooling = ctx.graph.node(producer) if producer else None
    if pooling is not None and pooling.type == "Pooling":
        kernel, stride, _, _ = pool_geometry(pooling.param.pooling_param, ctx.graph.shape(pooling.bottoms[0]))
        if any(k > s for k, s in zip(kernel, stride)):
            raise ctx.fail(
                node, f"unpooling through overlapping pooling windows (kernel {kernel}, stride {stride}) is not supported",
            )
    layer = layers.MaxUnpool(upsample_size(p, x.shape), name=ctx.name(node))
    return [layer([ctx.canonical(x, node), ctx.canonical(mask, node)])]


@translator("Interp")
def interp(ctx, node, inputs):
    p = node.param.interp_param
    x = inputs[0]
    if p.pad_beg > 0 or p.pad_end > 0:
        raise ctx.fail(node, "Interp with positive pad_beg/pad_end reads outside its input in Caffe; not supported")
    _, _, h, w = x.shape
    in_hw = (h + p.pad_beg + p.pad_end, w + p.pad_beg + p.pad_end)
    out_hw = interp_size(p, [t.shape for t in inputs])
    layer = layers.BilinearResize(in_hw, out_hw, begin=(-p.pad_beg, -p.pad_beg), name=ctx.name(node))
    # A second bottom gives the size only; an input all the same (see Crop).
    return [layer([ctx.canonical(x, node)] + [t.value for t in inputs[1:]])]


@translator("BilinearInterpolate")
def bilinear_interpolate(ctx, node, inputs):
    p = node.param.bilinear_interpolate_param
    x = inputs[0]
    x = ctx.legacy(x, node)
    out_hw = ctx.shape(node)[2:]
    layer = layers.BilinearResize(x.shape[2:], out_hw, align_corners=p.align_corners, name=ctx.name(node))
    return [layer(ctx.canonical(x, node))]


@translator("PixelShuffle")
def pixel_shuffle(ctx, node, inputs):
    r = node.param.pixelshuffle_param.upscale_factor
    return [layers.PixelShuffle(r, name=ctx.name(node))(ctx.canonical(inputs[0], node))]


@translator("Pad")
def pad(ctx, node, inputs):
    p = node.param.pad_param
    layer = layers.ConstantPad(((p.pad_u, p.pad_d), (p.pad_l, p.pad_r)), p.pad_value, name=ctx.name(node))
    return [layer(ctx.canonical(inputs[0], node))]


@translator("Reorg")
def reorg(ctx, node, inputs):
    p = node.param.reorg_param
    x = inputs[0]
    flat = layers.Reorg(p.stride, p.reverse, x.shape[1:], name=ctx.name(node, "gather"))(ctx.caffe(x, node))
    y = keras.layers.Reshape(tuple(ctx.shape(node)[1:]), name=ctx.name(node, layout=CAFFE))(flat)
    return [(y, CAFFE)]


@translator(*NOT_CONVERTIBLE)
def refused(ctx, node, inputs):
    # Registered so the up-front check of supported types lets the shape pass give its reason.
    raise ctx.fail(node, refusal(node))
