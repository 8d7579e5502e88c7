"""Layers that move, combine or reduce blobs: Concat, Slice, Split, Eltwise, Flatten, Reshape,
Crop, Permute, Softmax, Reduction, ArgMax, Tile.

Axes are Caffe's; each translator maps them to the Keras tensor's layout, and asks for Caffe's
own order only where the operation depends on memory order (Flatten, Reshape, Permute).
"""

import numpy as np

from .._lazy import keras, layers
from ..layout import CAFFE, NHWC, NHWC_ORDER, canonical, keras_axis
from ..shapes import VIEW, canonical_axis, free, permute_order, slice_points
from . import translator


def _common_layout(ctx, node, inputs):
    """Values of all inputs in one layout: theirs if they agree, else the canonical one."""
    layouts = {t.layout for t in inputs}
    layout = layouts.pop() if len(layouts) == 1 else canonical(inputs[0].shape)
    return [ctx.as_layout(t, layout, node) for t in inputs], layout


# Keras' Concatenate checks its inputs' shapes pairwise (when built, and again when loaded): more
# bottoms than this are concatenated in groups first, so thousands of bottoms cost linear time.
CONCAT_GROUP = 64


@translator("Concat")
def concat(ctx, node, inputs):
    p = node.param.concat_param
    axis = canonical_axis(p.concat_dim if p.HasField("concat_dim") else p.axis, inputs[0].rank)
    if len(inputs) == 1:
        return [(keras.layers.Identity(name=ctx.name(node))(inputs[0].value), inputs[0].layout)]
    values, layout = _common_layout(ctx, node, inputs)
    along = keras_axis(axis, inputs[0].rank, layout)
    while len(values) > CONCAT_GROUP:
        values = [
            group[0] if len(group) == 1 else keras.layers.Concatenate(axis=along, name=ctx.name(node, "part"))(group)
            for group in (values[i : i + CONCAT_GROUP] for i in range(0, len(values), CONCAT_GROUP))
        ]
    y = keras.layers.Concatenate(axis=along, name=ctx.name(node))(values)
    return [(y, layout)]


@translator("Slice")
def slice_(ctx, node, inputs):
    x = inputs[0]
    axis, bounds = slice_points(node, x.shape)
    outs = layers.SliceAxis(x.axis(axis), bounds, name=ctx.name(node))(x.value)
    return [(o, x.layout) for o in outs]


@translator("Split")
def split(ctx, node, inputs):
    x = inputs[0]
    y = keras.layers.Identity(name=ctx.name(node))(x.value)
    return [(y, x.layout)] * len(node.tops)


@translator("Eltwise")
def eltwise(ctx, node, inputs):
    p = node.param.eltwise_param
    op = p.EltwiseOp.Name(p.operation)
    values, layout = _common_layout(ctx, node, inputs)
    if p.coeff and op != "SUM":
        raise ctx.fail(node, "Eltwise coeff is only defined for SUM")
    if p.coeff and len(p.coeff) != len(inputs):
        raise ctx.fail(node, f"Eltwise has {len(p.coeff)} coeff for {len(inputs)} bottoms")
    name = ctx.name(node)
    if len(values) == 1:
        layer = keras.layers.Identity(name=name)
        return [(layer(values[0]), layout)]
    if op == "SUM" and p.coeff and any(c != 1 for c in p.coeff):
        y = layers.Eltwise(list(p.coeff), name=name)(values)
    elif op == "SUM":
        y = keras.layers.Add(name=name)(values)
    elif op == "PROD":
        y = keras.layers.Multiply(name=name)(values)
    else:
        y = keras.layers.Maximum(name=name)(values)
    return [(y, layout)]


def _reshape(ctx, node, x, target):
    """``x`` reshaped to the Caffe shape ``target`` in Caffe's memory order."""
    value = ctx.caffe(x, node)
    name = ctx.name(node, layout=CAFFE)
    if target[0] == x.shape[0]:
        # A free size (one at most: shapes.one_free_axis) is what the rest leaves.
        y = keras.layers.Reshape(tuple(-1 if d is None else d for d in target[1:]), name=name)(value)
    else:
        y = layers.Reshape(tuple(target), name=name)(value)
    return [(y, CAFFE)]


@translator(VIEW)
def view(ctx, node, inputs):
    """A blob whose memory another one's in-place layer wrote: that value, in this blob's shape."""
    x = inputs[0]
    target = ctx.shape(node)
    if tuple(target) == tuple(x.shape):
        return [(keras.layers.Identity(name=ctx.name(node))(x.value), x.layout)]
    return _reshape(ctx, node, x, target)


@translator("Flatten")
def flatten(ctx, node, inputs):
    x = inputs[0]
    target = ctx.shape(node)
    if x.layout == NHWC and len(target) == 2 and target[0] == x.shape[0] and x.shape[2:] == (1, 1):
        # (N, C, 1, 1) flattens to the same order from NHWC: no transpose needed.
        return [keras.layers.Flatten(name=ctx.name(node))(x.value)]
    return _reshape(ctx, node, x, target)


@translator("Reshape")
def reshape(ctx, node, inputs):
    return _reshape(ctx, node, inputs[0], ctx.shape(node))


@translator("Crop")
def crop(ctx, node, inputs):
    x, ref = inputs
    p = node.param.crop_param
    axis = canonical_axis(p.axis, x.rank)
    offsets = list(p.offset)
    n_axes = x.rank - axis
    if len(offsets) == 0:
        offsets = [0] * n_axes
    elif len(offsets) == 1:
        offsets = offsets * n_axes
    elif len(offsets) != n_axes:
        raise ctx.fail(node, f"Crop has {len(offsets)} offsets for {n_axes} cropped axes")
    out = ctx.shape(node)
    begin, size = [0] * x.rank, [None] * x.rank
    for caffe_axis, off in zip(range(axis, x.rank), offsets):
        if not free(out[caffe_axis], x.shape[caffe_axis]) and off + out[caffe_axis] > x.shape[caffe_axis]:
            raise ctx.fail(
                node, f"offset {off} + size {out[caffe_axis]} exceeds axis {caffe_axis} of size {x.shape[caffe_axis]}"
            )
        if caffe_axis == 0:
            raise ctx.fail(node, "cropping the batch axis is not supported")
        begin[x.axis(caffe_axis)] = off
        size[x.axis(caffe_axis)] = -1 if out[caffe_axis] is None else out[caffe_axis]  # -1: the reference's
    # The reference is an input, its values unread, so the model keeps the layer making it (Caffe
    # computes it, and users may read it by name); TensorFlow's graph prunes it where unused. A
    # free size is read from it, in x's layout.
    reference = ctx.as_layout(ref, x.layout, node) if free(*out) else ref.value
    y = layers.Crop(begin, size, name=ctx.name(node))([x.value, reference])
    return [(y, x.layout)]


@translator("Permute")
def permute(ctx, node, inputs):
    x = inputs[0]
    order = permute_order(node.param.permute_param, x.rank)
    if order[0] != 0:
        raise ctx.fail(node, f"Permute order {order} moves the batch axis, which is not supported")
    held = list(NHWC_ORDER) if x.layout == NHWC else list(range(x.rank))
    position = {caffe_axis: i for i, caffe_axis in enumerate(held)}
    # Keras positions to gather for the output held in Caffe order, and in NHWC order.
    to_caffe = [position[a] for a in order]
    candidates = [(CAFFE, to_caffe)]
    if x.rank == 4:
        candidates.append((NHWC, [to_caffe[a] for a in NHWC_ORDER]))
    for layout, perm in candidates:
        if perm == list(range(x.rank)):
            return [(keras.layers.Identity(name=ctx.name(node, layout=layout))(x.value), layout)]
    layout, perm = candidates[0]
    return [(keras.layers.Permute(tuple(perm[1:]), name=ctx.name(node, layout=layout))(x.value), layout)]


@translator("Softmax")
def softmax(ctx, node, inputs):
    x = inputs[0]
    axis = canonical_axis(node.param.softmax_param.axis, x.rank)
    if x.rank <= 5:
        y = keras.layers.Softmax(axis=x.axis(axis), name=ctx.name(node))(x.value)
        return [(y, x.layout)]
    # TensorFlow's softmax takes at most 5 axes: fold the axes before and after Caffe's into one
    # each (blobs of more than 4 axes are held in Caffe's order), then unfold.
    before = int(np.prod(x.shape[1:axis])) if axis else 1
    folded = (before, x.shape[axis], int(np.prod(x.shape[axis + 1 :]))) if axis else (int(np.prod(x.shape[1:])),)
    value = keras.layers.Reshape(folded, name=ctx.name(node, "fold"))(x.value)
    value = keras.layers.Softmax(axis=2 if axis else 0, name=ctx.name(node, "softmax"))(value)
    return [(keras.layers.Reshape(tuple(x.shape[1:]), name=ctx.name(node))(value), CAFFE)]


@translator("Reduction")
def reduction(ctx, node, inputs):
    x = inputs[0]
    p = node.param.reduction_param
    axis = canonical_axis(p.axis, x.rank)
    op = p.ReductionOp.Name(p.operation)
    # The kept axes must come out in Caffe's order; NHWC keeps them in order only up to axis 2.
    value = x.value if x.layout != NHWC or axis <= 2 else ctx.caffe(x, node)
    layout = x.layout if value is x.value else CAFFE
    axes = sorted(keras_axis(a, x.rank, layout) for a in range(axis, x.rank))
    y = layers.Reduction(op, axes, p.coeff, name=ctx.name(node, layout=CAFFE))(value)
    # A 4-D top (from a 5-D bottom) comes out in Caffe's order.
    return [(y, CAFFE)]


@translator("ArgMax")
def argmax(ctx, node, inputs):
    x = inputs[0]
    p = node.param.argmax_param
    if p.HasField("axis"):
        axis = canonical_axis(p.axis, x.rank)
        y = layers.ArgMax(x.axis(axis), p.top_k, p.out_max_val, name=ctx.name(node, layout=x.layout))(x.value)
        return [(y, x.layout)]
    rank = len(ctx.shape(node))
    y = layers.ArgMax(None, p.top_k, p.out_max_val, rank=rank, name=ctx.name(node, layout=CAFFE))(ctx.caffe(x, node))
    return [(y, CAFFE)]


@translator("Tile")
def tile(ctx, node, inputs):
    x = inputs[0]
    p = node.param.tile_param
    axis = canonical_axis(p.axis, x.rank)
    # Caffe repeats the whole axis (a b c a b c), which does not depend on the layout.
    repeats = [1] * x.rank
    repeats[x.axis(axis)] = p.tiles
    return [(layers.Tile(repeats, name=ctx.name(node))(x.value), x.layout)]
