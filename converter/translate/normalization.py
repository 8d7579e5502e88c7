"""Normalisation and affine layers: BatchNorm, Scale, Bias, MVN."""

import numpy as np

from .. import weights
from .._lazy import layers
from ..layout import Tensor
from ..shapes import canonical_axis
from . import translator


@translator("BatchNorm")
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
    y = layer(x.value)
    params = ctx.params(node)
    if params is not None:
        # Caffemodels from before the scale factor existed hold the statistics themselves.
        factor = params[2].reshape(-1)[:1] if len(params) > 2 else np.ones(1, np.float32)
        layer.set_weights([params[0], params[1], factor])
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
    y = layer(x.value)
    params = ctx.params(node)
    if params is not None:
        layer.set_weights([weights.broadcast_param(b, axes, keras_axes, x.rank) for b in params])
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


@translator("Scale")
def scale(ctx, node, inputs):
    p = node.param.scale_param
    try:
        return _affine(ctx, node, inputs, p.axis, p.num_axes, True, p.bias_term)
    except ValueError as err:
        raise ctx.fail(node, str(err)) from None


@translator("Bias")
def bias(ctx, node, inputs):
    p = node.param.bias_param
    try:
        return _affine(ctx, node, inputs, p.axis, p.num_axes, False, True)
    except ValueError as err:
        raise ctx.fail(node, str(err)) from None


@translator("MVN")
def mvn(ctx, node, inputs):
    p = node.param.mvn_param
    # Caffe's top is the bottom read as (num, channels, height, width), whatever its rank.
    x = ctx.legacy(inputs[0], node)
    first = 1 if p.across_channels else 2
    axes = sorted(x.axis(a) for a in range(first, x.rank))
    layer = layers.MVN(axes, normalize_variance=p.normalize_variance, eps=p.eps, name=ctx.name(node, layout=x.layout))
    return [(layer(x.value), x.layout)]
