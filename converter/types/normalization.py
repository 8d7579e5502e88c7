"""Normalisation and affine layers: BatchNorm, Scale, Bias, MVN."""

import numpy as np

from .. import weights
from .._lazy import layers
from ..errors import ConversionError
from ..layout import Tensor
from ..shapes import canonical_axis, legacy_shape, same_shape
from ..spec import Learned, register


def shape_batch_norm(node, bottoms):
    if len(bottoms[0]) < 2:
        raise ConversionError(f"BatchNorm needs a bottom with a channel axis, got {list(bottoms[0])}")
    return [bottoms[0]]


def learned_batch_norm(node, bottoms, held=None):
    channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
    # The statistics are stored scaled by a factor (the third blob), which old caffemodels lack.
    return [Learned("mean", (channels,)), Learned("variance", (channels,)), Learned("scale_factor", None)]


@register("BatchNorm", shape=shape_batch_norm, learned=learned_batch_norm, any_size=True)
def batch_norm(ctx, node, inputs):
    p = node.param.batch_norm_param
    x = inputs[0]
    if x.rank < 2:
        raise ctx.fail(node, "BatchNorm of a 1-axis blob is not supported")
    layer = layers.BatchNorm(
        axis=x.axis(1),
        eps=p.eps,
        moving_average_fraction=p.moving_average_fraction,
        use_global_stats=p.use_global_stats if p.HasField("use_global_stats") else None,
        name=ctx.name(node),
    )
    y = ctx.bind(node, layer, x.value, lambda blobs: {
        "mean_sum": blobs["mean"], "variance_sum": blobs["variance"],
        # Caffemodels from before the scale factor existed hold the statistics themselves.
        "factor": blobs["scale_factor"].reshape(-1)[:1] if "scale_factor" in blobs else np.ones(1, np.float32)})
    return [(y, x.layout)]


def _param_axes(x, axis, num_axes, what):
    axis = canonical_axis(axis, x.rank)
    end = x.rank if num_axes == -1 else axis + num_axes
    if end > x.rank:
        raise ValueError(f"{what} spans axes {axis}..{end - 1} of a {x.rank}-axis blob")
    return list(range(axis, end))


def _affine(ctx, node, inputs, axis, num_axes, use_scale, use_bias):
    x = inputs[0]
    if len(inputs) == 2:
        op = "mul" if use_scale else "add"
        if not (use_scale and use_bias):
            return [_by_blob(ctx, node, x, inputs[1], axis, op, ctx.name(node))]
        # Scale by a second bottom with bias_term: Caffe learns a bias of that bottom's shape.
        value, layout = _by_blob(ctx, node, x, inputs[1], axis, op, ctx.name(node, "scale"))
        x = Tensor(value, x.shape, layout)
        use_scale, num_axes = False, inputs[1].rank
    axes = _param_axes(x, axis, num_axes, node.type)
    if 0 in axes:
        raise ctx.fail(node, f"{node.type} with a learned parameter over the batch axis is not supported")
    keras_axes = [x.axis(a) for a in axes]
    pshape = weights.broadcast_param(np.zeros([x.shape[a] for a in axes], np.float32), axes, keras_axes, x.rank).shape
    layer = layers.ChannelAffine(pshape, use_scale=use_scale, use_bias=use_bias, name=ctx.name(node))
    y = ctx.bind(node, layer, x.value, lambda blobs: {
        name: weights.broadcast_param(b, axes, keras_axes, x.rank) for name, b in blobs.items()})
    return [(y, x.layout)]


def _by_blob(ctx, node, x, b, axis, op, name):
    """Scale or Bias by a second bottom spanning axes [axis, axis + b.rank) of the first."""
    axis = canonical_axis(axis, x.rank)
    axes = list(range(axis, axis + b.rank))
    if axes[-1] >= x.rank or any(x.shape[a] != s for a, s in zip(axes, b.shape)):
        raise ctx.fail(node, f"second bottom {list(b.shape)} does not match {list(x.shape)} from axis {axis}")
    keras_axes = [x.axis(a) for a in axes]
    perm = list(np.argsort(keras_axes))
    shape = [1] * x.rank
    for k in keras_axes:
        shape[k] = x.keras_shape[k]
    shape[0] = -1  # the batch axis, or a 1 where b has none
    value_b = ctx.caffe(b, node)
    layer = layers.BroadcastOp(op, perm, shape, name=name)
    return (layer([x.value, value_b]), x.layout)


def _learned_shape(bottoms, p):
    """The shape of a Scale or Bias parameter: the first bottom's axes [axis, axis + num_axes),
    or the second bottom's shape when it holds the parameter."""
    if len(bottoms) > 1:
        return bottoms[1]
    axis = p.axis % len(bottoms[0])
    return tuple(bottoms[0][axis:] if p.num_axes == -1 else bottoms[0][axis : axis + p.num_axes])


def learned_scale(node, bottoms, held=None):
    """The factors (unless a second bottom holds them) and, with bias_term, the bias."""
    p = node.param.scale_param
    shape = _learned_shape(bottoms, p)
    return ([Learned("scale", shape)] if len(bottoms) == 1 else []) + ([Learned("bias", shape)] if p.bias_term else [])


def learned_bias(node, bottoms, held=None):
    return [Learned("bias", _learned_shape(bottoms, node.param.bias_param))] if len(bottoms) == 1 else []


@register("Scale", shape=same_shape, learned=learned_scale, any_size=True)
def scale(ctx, node, inputs):
    p = node.param.scale_param
    try:
        return _affine(ctx, node, inputs, p.axis, p.num_axes, True, p.bias_term)
    except ValueError as err:
        raise ctx.fail(node, str(err)) from None


@register("Bias", shape=same_shape, learned=learned_bias, any_size=True)
def bias(ctx, node, inputs):
    p = node.param.bias_param
    try:
        return _affine(ctx, node, inputs, p.axis, p.num_axes, False, True)
    except ValueError as err:
        raise ctx.fail(node, str(err)) from None


def shape_mvn(node, bottoms):
    """MVN reshapes its top to (num, channels, height, width): 4-D whatever the bottom's rank."""
    return [legacy_shape(bottoms[0], "MVN")]


@register("MVN", shape=shape_mvn, any_size=True)
def mvn(ctx, node, inputs):
    p = node.param.mvn_param
    # Caffe's top is the bottom read as (num, channels, height, width), whatever its rank.
    x = ctx.legacy(inputs[0], node)
    first = 1 if p.across_channels else 2
    axes = sorted(x.axis(a) for a in range(first, x.rank))
    layer = layers.MVN(axes, normalize_variance=p.normalize_variance, eps=p.eps, name=ctx.name(node, layout=x.layout))
    return [(layer(x.value), x.layout)]
