"""Layers that move, combine or reduce blobs: Concat, Slice, Split, Eltwise, Flatten, Reshape,
Crop, Permute, Softmax, Reduction, ArgMax, Tile.

Axes are Caffe's; each translator maps them to the Keras tensor's layout, and asks for Caffe's
own order only where the operation depends on memory order (Flatten, Reshape, Permute).
"""

import math

import numpy as np

from .._lazy import keras, layers
from ..errors import ConversionError
from ..layout import CAFFE, NHWC, NHWC_ORDER, canonical, keras_axis
from ..shapes import canonical_axis, fixed_size, free, same_shape, shape_text
from ..spec import VIEW, register


def one_free_axis(shape, what):
    """``shape``, refused when it has several free axes: a view can leave one size to be
    computed when the model runs, not more."""
    if sum(d is None for d in shape) > 1:
        raise fixed_size(f"{what} into {shape_text(shape)}", "a view can leave one size free, not more")
    return shape


def _common_layout(ctx, node, inputs):
    """Values of all inputs in one layout: theirs if they agree, else the canonical one."""
    layouts = {t.layout for t in inputs}
    layout = layouts.pop() if len(layouts) == 1 else canonical(inputs[0].shape)
    return [ctx.as_layout(t, layout, node) for t in inputs], layout


# Keras' Concatenate checks its inputs' shapes pairwise (when built, and again when loaded): more
# bottoms than this are concatenated in groups first, so thousands of bottoms cost linear time.
CONCAT_GROUP = 64


def shape_concat(node, bottoms):
    p = node.param.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else p.axis
    axis = canonical_axis(axis, len(bottoms[0]))
    out = list(bottoms[0])
    for b in bottoms[1:]:
        if len(b) != len(out) or any(b[i] != out[i] for i in range(len(out)) if i != axis):
            raise ConversionError(f"Concat inputs {list(bottoms[0])} and {list(b)} differ off axis {axis}")
        out[axis] = None if free(out[axis], b[axis]) else out[axis] + b[axis]
    return [tuple(out)]


@register("Concat", shape=shape_concat, any_size=True)
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


def slice_points(node, bottom):
    p = node.param.slice_param
    axis = p.slice_dim if p.HasField("slice_dim") else p.axis
    axis = canonical_axis(axis, len(bottom))
    n_tops = len(node.param.top)
    size = bottom[axis]
    if size is None:
        raise fixed_size("Slice along a spatial axis", "its slice points cut one size")
    if p.slice_point:
        points = list(p.slice_point)
        if len(points) != n_tops - 1:
            raise ConversionError(f"{len(points)} slice points for {n_tops} tops")
    else:
        if size % n_tops:
            raise ConversionError(f"axis {axis} of size {size} does not divide into {n_tops} tops")
        points = [size // n_tops * i for i in range(1, n_tops)]
    bounds = [0] + points + [size]
    if any(b1 <= b0 for b0, b1 in zip(bounds, bounds[1:])):
        raise ConversionError(f"slice points {points} do not cut axis {axis} of size {size} into non-empty parts")
    return axis, bounds


def shape_slice(node, bottoms):
    axis, bounds = slice_points(node, bottoms[0])
    out = []
    for b0, b1 in zip(bounds, bounds[1:]):
        s = list(bottoms[0])
        s[axis] = b1 - b0
        out.append(tuple(s))
    return out


@register("Slice", shape=shape_slice, any_size=True)
def slice_(ctx, node, inputs):
    x = inputs[0]
    axis, bounds = slice_points(node, x.shape)
    outs = layers.SliceAxis(x.axis(axis), bounds, name=ctx.name(node))(x.value)
    return [(o, x.layout) for o in outs]


def shape_split(node, bottoms):
    return [bottoms[0]] * len(node.param.top)


@register("Split", shape=shape_split, any_size=True)
def split(ctx, node, inputs):
    x = inputs[0]
    y = keras.layers.Identity(name=ctx.name(node))(x.value)
    return [(y, x.layout)] * len(node.tops)


def shape_eltwise(node, bottoms):
    for b in bottoms[1:]:
        if b != bottoms[0]:
            raise ConversionError(f"Eltwise bottoms differ in shape: {list(bottoms[0])} and {list(b)}")
    return [bottoms[0]]


@register("Eltwise", shape=shape_eltwise, any_size=True)
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


def shape_view(node, bottoms):
    return [bottoms[1]]


@register(VIEW, shape=shape_view, any_size=True)
def view(ctx, node, inputs):
    """A blob whose memory another one's in-place layer wrote: that value, in this blob's shape."""
    x = inputs[0]
    target = ctx.shape(node)
    if tuple(target) == tuple(x.shape):
        return [(keras.layers.Identity(name=ctx.name(node))(x.value), x.layout)]
    return _reshape(ctx, node, x, target)


def shape_flatten(node, bottoms):
    p = node.param.flatten_param
    b = bottoms[0]
    start = canonical_axis(p.axis, len(b))
    end = canonical_axis(p.end_axis, len(b))
    if end < start:
        raise ConversionError(f"Flatten end_axis {p.end_axis} comes before axis {p.axis} in a blob of {len(b)} axes")
    merged = None if free(*b[start : end + 1]) else math.prod(b[start : end + 1])
    return [one_free_axis(b[:start] + (merged,) + b[end + 1 :], "Flatten")]


@register("Flatten", shape=shape_flatten, any_size=True)
def flatten(ctx, node, inputs):
    x = inputs[0]
    target = ctx.shape(node)
    if x.layout == NHWC and len(target) == 2 and target[0] == x.shape[0] and x.shape[2:] == (1, 1):
        # (N, C, 1, 1) flattens to the same order from NHWC: no transpose needed.
        return [keras.layers.Flatten(name=ctx.name(node))(x.value)]
    return _reshape(ctx, node, x, target)


def reshape_target(p, bottom):
    """Caffe's Reshape: dims of ``shape`` replace axes [axis, axis+num_axes); 0 copies, -1 infers."""
    rank = len(bottom)
    axis = p.axis if p.axis >= 0 else rank + p.axis + 1
    if not 0 <= axis <= rank:
        raise ConversionError(f"Reshape axis {p.axis} out of range for {list(bottom)}")
    end = rank if p.num_axes == -1 else axis + p.num_axes
    if end > rank:
        raise ConversionError(f"Reshape num_axes {p.num_axes} too large for {list(bottom)}")
    dims = list(p.shape.dim)
    new = []
    infer_at = None
    for i, d in enumerate(dims):
        if d == 0:
            if axis + i >= rank:
                raise ConversionError("Reshape dim 0 copies an axis the bottom does not have")
            new.append(bottom[axis + i])
        elif d == -1:
            if infer_at is not None:
                raise ConversionError("Reshape has more than one -1")
            infer_at = i
            new.append(1)
        elif d < 0:
            raise ConversionError(f"Reshape dim {d} is invalid")
        else:
            new.append(d)
    out = list(bottom[:axis]) + new + list(bottom[end:])
    if free(*bottom):
        if infer_at is not None:
            out[axis + infer_at] = None
        if not free(*out):
            raise fixed_size(f"Reshape into {shape_text(out)}", "its explicit dimensions fix the element count")
        return one_free_axis(tuple(out), "Reshape")
    total = math.prod(bottom)
    if infer_at is not None:
        rest = math.prod(out)
        if rest == 0 or total % rest:
            raise ConversionError(f"Reshape cannot infer -1: {total} elements into {out}")
        out[axis + infer_at] = total // rest
    if math.prod(out) != total:
        raise ConversionError(f"Reshape of {list(bottom)} into {out} changes the element count")
    return tuple(out)


def shape_reshape(node, bottoms):
    return [reshape_target(node.param.reshape_param, bottoms[0])]


@register("Reshape", shape=shape_reshape, any_size=True)
def reshape(ctx, node, inputs):
    return _reshape(ctx, node, inputs[0], ctx.shape(node))


def shape_crop(node, bottoms):
    if len(bottoms) != 2:
        raise ConversionError("Crop needs two bottoms (the blob and the reference)")
    a, ref = bottoms
    axis = canonical_axis(node.param.crop_param.axis, len(a))
    return [a[:axis] + ref[axis:]]


@register("Crop", shape=shape_crop, any_size=True)
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


def permute_order(p, rank):
    order = list(p.order)
    for a in order:
        if not 0 <= a < rank:
            raise ConversionError(f"Permute order {order} out of range for {rank} axes")
    if len(set(order)) != len(order):
        raise ConversionError(f"Permute order {order} repeats an axis")
    return order + [a for a in range(rank) if a not in order]


def shape_permute(node, bottoms):
    order = permute_order(node.param.permute_param, len(bottoms[0]))
    return [tuple(bottoms[0][a] for a in order)]


@register("Permute", shape=shape_permute, any_size=True)
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


@register("Softmax", shape=same_shape, any_size=True)
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


def shape_reduction(node, bottoms):
    axis = canonical_axis(node.param.reduction_param.axis, len(bottoms[0]))
    return [bottoms[0][:axis]]


@register("Reduction", shape=shape_reduction, any_size=True)
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


def shape_argmax(node, bottoms):
    p = node.param.argmax_param
    b = bottoms[0]
    if p.top_k < 1:
        raise ConversionError("ArgMax top_k must be at least 1")
    if p.HasField("axis"):
        axis = canonical_axis(p.axis, len(b))
        if b[axis] is None:
            raise fixed_size("ArgMax along a spatial axis", "its top_k must fit the axis")
        if p.top_k > b[axis]:
            raise ConversionError(f"top_k {p.top_k} exceeds axis size {b[axis]}")
        return [b[:axis] + (p.top_k,) + b[axis + 1 :]]
    if free(*b):
        raise fixed_size("ArgMax over whole items", "its top_k must fit the item")
    if p.top_k > math.prod(b[1:]):
        raise ConversionError(f"top_k {p.top_k} exceeds the {math.prod(b[1:])} values of each item")
    # Caffe keeps the bottom's rank (at least 3): (N, 1 or 2, top_k, 1, ...).
    return [(b[0], 2 if p.out_max_val else 1, p.top_k) + (1,) * (len(b) - 3)]


@register("ArgMax", shape=shape_argmax, any_size=True)
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


def shape_tile(node, bottoms):
    p = node.param.tile_param
    b = list(bottoms[0])
    axis = canonical_axis(p.axis, len(b))
    b[axis] = None if b[axis] is None else b[axis] * p.tiles
    return [tuple(b)]


@register("Tile", shape=shape_tile, any_size=True)
def tile(ctx, node, inputs):
    x = inputs[0]
    p = node.param.tile_param
    axis = canonical_axis(p.axis, x.rank)
    # Caffe repeats the whole axis (a b c a b c), which does not depend on the layout.
    repeats = [1] * x.rank
    repeats[x.axis(axis)] = p.tiles
    return [(layers.Tile(repeats, name=ctx.name(node))(x.value), x.layout)]
