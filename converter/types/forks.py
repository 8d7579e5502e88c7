"""Layers of the Caffe forks: SENet's Axpy, ShuffleNet's ShuffleChannel, SSD's Normalize, the BN
layers of PSPNet and SegNet/ENet, the upsampling family (Upsample, Interp, BilinearInterpolate,
PixelShuffle), Pad and darknet's Reorg.

Detection heads (PriorBox, DetectionOutput, the YOLO outputs) live in :mod:`.detection`, the
two-stage detectors' layers in :mod:`.rcnn`.
"""

import numpy as np

from .._lazy import keras, layers
from ..errors import ConversionError
from ..layout import CAFFE, NHWC, Tensor
from ..shapes import channelwise_legacy, fixed_size, free, legacy_shape, needs_4d, pool_geometry, same_4d
from ..spec import Learned, register


def shape_axpy(node, bottoms):
    """SENet's ``a * x + y``: bottoms (N, C, 1, 1) scale, x and y; the top has x's shape."""
    if len(bottoms) != 3:
        raise ConversionError("Axpy needs three bottoms (scale, x, y)")
    a, x, y = (needs_4d(b, "Axpy") for b in bottoms)
    if x != y or a[:2] != x[:2] or any(d != 1 for d in a[2:]):
        raise ConversionError(f"Axpy bottoms {list(a)}, {list(x)}, {list(y)} do not fit a * x + y")
    return [x]


@register("Axpy", shape=shape_axpy, any_size=True)
def axpy(ctx, node, inputs):
    a, x, y = (ctx.canonical(t, node) for t in inputs)
    return [layers.Axpy(name=ctx.name(node))([a, x, y])]


def shape_shuffle_channel(node, bottoms):
    if node.param.shuffle_channel_param.group < 1:
        raise ConversionError("ShuffleChannel group must be positive")
    return same_4d(node, bottoms)


@register("ShuffleChannel", shape=shape_shuffle_channel, any_size=True)
def shuffle_channel(ctx, node, inputs):
    x = inputs[0]
    group = node.param.shuffle_channel_param.group
    if x.shape[1] % group:
        raise ctx.fail(node, f"group {group} does not divide the {x.shape[1]} channels of {list(x.shape)}")
    return [layers.ShuffleChannel(group, name=ctx.name(node))(ctx.canonical(x, node))]


def learned_normalize(node, bottoms, held=None):
    channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
    return [Learned("scale", (1,) if node.param.norm_param.channel_shared else (channels,))]


@register("Normalize", shape=channelwise_legacy, learned=learned_normalize, any_size=True)
def normalize(ctx, node, inputs):
    p = node.param.norm_param
    x = inputs[0]
    # Caffe normalises a 2-D or 3-D bottom as its (num, channels, height, width) view.
    x4 = ctx.legacy(x, node)
    # The layer of the node's name gives its top: for a 2-D or 3-D bottom, the reshape back.
    name = ctx.name(node) if x.rank == 4 else ctx.name(node, "normalize")
    layer = layers.Normalize(p.across_spatial, p.channel_shared, p.eps, name=name)
    y = ctx.bind(node, layer, ctx.canonical(x4, node), lambda blobs: {"scale": blobs["scale"].reshape(-1)})
    if x.rank == 4:
        return [y]
    y = ctx.caffe(Tensor(y, x4.shape, NHWC), node)
    return [keras.layers.Reshape(x.shape[1:], name=ctx.name(node))(y)]


def _is_pspnet_bn(node):
    """Whether the prototxt declares PSPNet's BN, of four blobs (slope, bias, mean, variance),
    rather than SegNet's and ENet's of two."""
    p = node.param.bn_param
    return p.HasField("slope_filler") or p.HasField("bias_filler") or p.HasField("frozen") or len(node.param.param) > 2


def learned_bn(node, bottoms, held=None):
    """PSPNet's BN learns slope, bias, mean and variance; SegNet's and ENet's slope and bias. A
    caffemodel holding two blobs says which, else the prototxt does."""
    blob = (1, bottoms[0][1] if len(bottoms[0]) > 1 else 1, 1, 1)
    four = held != 2 if held is not None else _is_pspnet_bn(node)
    return [Learned(name, blob) for name in (("slope", "bias", "mean", "variance") if four else ("slope", "bias"))]


@register("BN", shape=same_4d, learned=learned_bn, any_size=True)
def bn(ctx, node, inputs):
    x = inputs[0]
    if x.rank != 4:
        raise ctx.fail(node, "BN needs a 4-D bottom")
    p = node.param.bn_param
    c = x.shape[1]
    held = ctx.learned(node)
    value = ctx.canonical(x, node)
    pspnet = len(held) == 4 if held is not None else _is_pspnet_bn(node)
    if pspnet:
        # y = slope * (x - mean) / sqrt(var + eps) + bias, with the stored statistics.
        layer = keras.layers.BatchNormalization(axis=-1, epsilon=p.eps, name=ctx.name(node))
        return [ctx.bind(node, layer, value, lambda blobs: {
            "gamma": blobs["slope"].reshape(-1), "beta": blobs["bias"].reshape(-1),
            "moving_mean": blobs["mean"].reshape(-1), "moving_variance": blobs["variance"].reshape(-1)})]
    if p.bn_mode == p.INFERENCE:
        # SegNet's compute_bn_statistics folds the statistics into scale and shift.
        layer = layers.ChannelAffine((1, 1, c), name=ctx.name(node))
        names = {"scale": "slope", "bias": "bias"}
        return [ctx.bind(node, layer, value, lambda blobs: {k: blobs[b].reshape(1, 1, c) for k, b in names.items()})]
    layer = layers.BatchStatsNorm(name=ctx.name(node))
    names = {"scale": "slope", "shift": "bias"}
    return [ctx.bind(node, layer, value, lambda blobs: {k: blobs[b].reshape(-1) for k, b in names.items()})]


def upsample_size(p, bottom):
    """SegNet's max-unpooling output: ``upsample_h/_w``, else ``H * scale`` less one with ``pad_out_h``."""
    _, _, h, w = bottom
    scale_h = p.scale_h if p.HasField("scale_h") else p.scale
    scale_w = p.scale_w if p.HasField("scale_w") else p.scale
    out_h = p.upsample_h if p.HasField("upsample_h") else h * scale_h - int(p.pad_out_h)
    out_w = p.upsample_w if p.HasField("upsample_w") else w * scale_w - int(p.pad_out_w)
    return out_h, out_w


def nearest_scale(p):
    """The YOLO forks' one-bottom Upsample: their ``scale`` defaults to 1, not SegNet's 2."""
    return p.scale if p.HasField("scale") else 1


def shape_upsample(node, bottoms):
    p = node.param.upsample_param
    n, c, h, w = needs_4d(bottoms[0], "Upsample")
    if len(bottoms) == 2:
        if free(h, w):
            raise fixed_size("Upsample by a mask", "it unpools into a map of one size")
        if bottoms[1] != bottoms[0]:
            raise ConversionError(f"Upsample mask {list(bottoms[1])} differs from its input {list(bottoms[0])}")
        return [(n, c) + upsample_size(p, bottoms[0])]
    s = nearest_scale(p)
    return [(n, c, None if h is None else h * s, None if w is None else w * s)]


@register("Upsample", shape=shape_upsample, any_size=True)
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


def interp_size(p, bottoms):
    """PSPNet's Interp output size (interp_layer.cpp Reshape), from the padded input size."""
    _, _, h, w = needs_4d(bottoms[0], "Interp")
    if p.use_blob_size or len(bottoms) == 2:
        if len(bottoms) != 2:
            raise ConversionError("Interp with use_blob_size needs a second bottom")
        return legacy_shape(bottoms[1], "Interp's size bottom")[2:]
    h_eff, w_eff = h + p.pad_beg + p.pad_end, w + p.pad_beg + p.pad_end
    shrink, zoom = p.HasField("shrink_factor"), p.HasField("zoom_factor")
    if (shrink and p.shrink_factor < 1) or (zoom and p.zoom_factor < 1):
        raise ConversionError("Interp shrink_factor and zoom_factor must be positive")
    if shrink and not zoom:
        return ((h_eff - 1) // p.shrink_factor + 1, (w_eff - 1) // p.shrink_factor + 1)
    if zoom and not shrink:
        return (h_eff + (h_eff - 1) * (p.zoom_factor - 1), w_eff + (w_eff - 1) * (p.zoom_factor - 1))
    if p.HasField("height") and p.HasField("width"):
        return (p.height, p.width)
    if shrink and zoom:
        oh, ow = (h_eff - 1) // p.shrink_factor + 1, (w_eff - 1) // p.shrink_factor + 1
        return (oh + (oh - 1) * (p.zoom_factor - 1), ow + (ow - 1) * (p.zoom_factor - 1))
    raise ConversionError("Interp needs height and width, zoom_factor or shrink_factor")


def shape_interp(node, bottoms):
    return [bottoms[0][:2] + interp_size(node.param.interp_param, bottoms)]


@register("Interp", shape=shape_interp,
          fixed_because="its interpolation weights are computed for one input and output size")
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


def shape_bilinear_interpolate(node, bottoms):
    p = node.param.bilinear_interpolate_param
    # Caffe's top is (num, channels, dst_h, dst_w) of the bottom read as 4-D, whatever its rank.
    n, c, h, w = legacy_shape(bottoms[0], "BilinearInterpolate")
    sized = p.HasField("dst_h") or p.HasField("dst_w")
    if sized == p.HasField("scale_factor"):
        raise ConversionError("BilinearInterpolate needs dst_h/dst_w or scale_factor (one of the two)")
    if sized:
        out = (p.dst_h if p.HasField("dst_h") else h, p.dst_w if p.HasField("dst_w") else w)
    else:
        scale = np.float32(p.scale_factor)  # Caffe: int(height * scale_factor) in float32
        out = (int(np.float32(h) * scale), int(np.float32(w) * scale))
    if p.align_corners and min(out) < 2:
        raise ConversionError(f"BilinearInterpolate with align_corners divides by the output size - 1: {list(out)}")
    return [(n, c) + out]


@register("BilinearInterpolate", shape=shape_bilinear_interpolate,
          fixed_because="its interpolation weights are computed for one input size")
def bilinear_interpolate(ctx, node, inputs):
    p = node.param.bilinear_interpolate_param
    x = inputs[0]
    x = ctx.legacy(x, node)
    out_hw = ctx.shape(node)[2:]
    layer = layers.BilinearResize(x.shape[2:], out_hw, align_corners=p.align_corners, name=ctx.name(node))
    return [layer(ctx.canonical(x, node))]


def shape_pixel_shuffle(node, bottoms):
    r = node.param.pixelshuffle_param.upscale_factor
    n, c, h, w = needs_4d(bottoms[0], "PixelShuffle")
    if r < 1 or c % (r * r):
        raise ConversionError(f"PixelShuffle upscale_factor {r} does not divide {c} channels into r*r groups")
    return [(n, c // (r * r), None if h is None else h * r, None if w is None else w * r)]


@register("PixelShuffle", shape=shape_pixel_shuffle, any_size=True)
def pixel_shuffle(ctx, node, inputs):
    r = node.param.pixelshuffle_param.upscale_factor
    return [layers.PixelShuffle(r, name=ctx.name(node))(ctx.canonical(inputs[0], node))]


def shape_pad(node, bottoms):
    p = node.param.pad_param
    n, c, h, w = needs_4d(bottoms[0], "Pad")
    return [(n, c, None if h is None else h + p.pad_u + p.pad_d, None if w is None else w + p.pad_l + p.pad_r)]


@register("Pad", shape=shape_pad, any_size=True)
def pad(ctx, node, inputs):
    p = node.param.pad_param
    layer = layers.ConstantPad(((p.pad_u, p.pad_d), (p.pad_l, p.pad_r)), p.pad_value, name=ctx.name(node))
    return [layer(ctx.canonical(inputs[0], node))]


def shape_reorg(node, bottoms):
    p = node.param.reorg_param
    s = p.stride
    n, c, h, w = needs_4d(bottoms[0], "Reorg")
    if s < 1:
        raise ConversionError("Reorg needs a positive stride")
    # darknet's index formula needs both, whichever the direction (reorg_layer.cpp checks them).
    if c % (s * s):
        raise ConversionError(f"Reorg: {c} channels are not divisible by stride^2 = {s * s}")
    if p.reverse:
        return [(n, c // (s * s), h * s, w * s)]
    if h % s or w % s:
        raise ConversionError(f"Reorg stride {s} does not divide the input {h}x{w}")
    return [(n, c * s * s, h // s, w // s)]


@register("Reorg", shape=shape_reorg)
def reorg(ctx, node, inputs):
    p = node.param.reorg_param
    x = inputs[0]
    flat = layers.Reorg(p.stride, p.reverse, x.shape[1:], name=ctx.name(node, "gather"))(ctx.caffe(x, node))
    y = keras.layers.Reshape(tuple(ctx.shape(node)[1:]), name=ctx.name(node, layout=CAFFE))(flat)
    return [(y, CAFFE)]
