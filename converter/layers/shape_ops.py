"""Layers that move, combine or reduce blobs: Slice, Crop, Reshape, Tile, Eltwise, Axpy, Reduction,
ArgMax, constant padding, pixel and channel shuffles, darknet's reorg.
"""

import keras
import numpy as np
from keras import ops

from .base import ShapePreserving, register


@register
class SliceAxis(keras.layers.Layer):
    """Caffe Slice: cuts ``axis`` at ``bounds`` into several outputs.

    Args:
        axis: the axis cut, in this tensor's layout.
        bounds: 0, Caffe's slice points, then the axis' size.
    """

    def __init__(self, axis, bounds, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.bounds = tuple(bounds)

    def call(self, x):
        outs = []
        for b0, b1 in zip(self.bounds, self.bounds[1:]):
            index = [slice(None)] * len(x.shape)
            index[self.axis] = slice(b0, b1)
            outs.append(x[tuple(index)])
        return outs

    def compute_output_shape(self, s):
        shapes = []
        for b0, b1 in zip(self.bounds, self.bounds[1:]):
            t = list(s)
            t[self.axis] = b1 - b0
            shapes.append(tuple(t))
        return shapes

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "bounds": self.bounds}


@register
class Crop(keras.layers.Layer):
    """Caffe Crop: ``x[begin : begin + size]`` on the axes it names (None: the whole axis; -1:
    the size the reference, the second input, held in ``x``'s layout, has there when the model
    runs, for a free size).

    Args:
        begin: the first index per axis (batch included).
        size: the length per axis: None, -1 or a size.
    """

    def __init__(self, begin, size, **kwargs):
        super().__init__(**kwargs)
        self.begin = tuple(begin)
        self.size = tuple(size)

    def call(self, inputs):
        x, ref = inputs if isinstance(inputs, (list, tuple)) else (inputs, None)
        ref_size = ops.shape(ref) if -1 in self.size else None
        index = tuple(
            slice(None) if s is None else slice(b, b + (ref_size[i] if s == -1 else s))
            for i, (b, s) in enumerate(zip(self.begin, self.size))
        )
        return x[index]

    def compute_output_shape(self, input_shape):
        two = isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple))
        s, ref = (input_shape[0], input_shape[1]) if two else (input_shape, None)
        return tuple(d if size is None else ref[i] if size == -1 else size for i, (d, size) in enumerate(zip(s, self.size)))

    def get_config(self):
        return {**super().get_config(), "begin": self.begin, "size": self.size}


@register
class Reshape(keras.layers.Layer):
    """A reshape that may change the batch axis (Caffe Reshape and Flatten can): ``shape``
    includes the batch axis, -1 where it is inferred.

    Args:
        shape: the output's shape, batch axis included.
    """

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(shape)

    def call(self, x):
        return ops.reshape(x, self.shape)

    def compute_output_shape(self, s):
        return tuple(None if d == -1 else d for d in self.shape)

    def get_config(self):
        return {**super().get_config(), "shape": self.shape}


@register
class Tile(keras.layers.Layer):
    """Caffe Tile: repeats the whole blob ``repeats[i]`` times along each axis.

    Args:
        repeats: per axis (batch included): Caffe's ``tiles`` on its axis, 1 elsewhere.
    """

    def __init__(self, repeats, **kwargs):
        super().__init__(**kwargs)
        self.repeats = tuple(repeats)

    def call(self, x):
        return ops.tile(x, self.repeats)

    def compute_output_shape(self, s):
        return tuple(None if d is None else d * r for d, r in zip(s, self.repeats))

    def get_config(self):
        return {**super().get_config(), "repeats": self.repeats}


@register
class Eltwise(keras.layers.Layer):
    """Caffe Eltwise SUM with coefficients: ``y = sum_i coeff_i * x_i``.

    Args:
        coeff: Caffe's ``eltwise_param.coeff``, one per input.
    """

    def __init__(self, coeff, **kwargs):
        super().__init__(**kwargs)
        self.coeff = tuple(float(c) for c in coeff)

    def call(self, inputs):
        y = None
        for c, x in zip(self.coeff, inputs):
            term = x if c == 1.0 else x * c
            y = term if y is None else y + term
        return y

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "coeff": self.coeff}


@register
class Axpy(keras.layers.Layer):
    """SENet's Axpy: ``y = a * x + y`` with ``a`` of shape (N, 1, 1, C)."""

    def call(self, inputs):
        a, x, y = inputs
        return a * x + y

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]


@register
class Reduction(keras.layers.Layer):
    """Caffe Reduction over ``axes``: SUM, ASUM, SUMSQ or MEAN, times ``coeff``.

    Args:
        operation: ``"SUM"``, ``"ASUM"``, ``"SUMSQ"`` or ``"MEAN"``.
        axes: the axes reduced (Caffe's ``axis`` and every one after it).
        coeff: Caffe's ``coeff``.
    """

    def __init__(self, operation, axes, coeff=1.0, **kwargs):
        super().__init__(**kwargs)
        self.operation = operation
        self.axes = tuple(axes)
        self.coeff = float(coeff)

    def call(self, x):
        if self.operation == "ASUM":
            x = ops.abs(x)
        elif self.operation == "SUMSQ":
            x = ops.square(x)
        reduce = ops.mean if self.operation == "MEAN" else ops.sum
        y = reduce(x, axis=self.axes)
        return y * self.coeff if self.coeff != 1.0 else y

    def compute_output_shape(self, s):
        return tuple(d for i, d in enumerate(s) if i not in self.axes)

    def get_config(self):
        return {**super().get_config(), "operation": self.operation, "axes": self.axes, "coeff": self.coeff}


@register
class ArgMax(keras.layers.Layer):
    """Caffe ArgMax along ``axis`` (indices as floats, or the values with ``out_max_val``); with
    ``axis`` None, over each sample flattened, giving (N, 1 or 2, top_k) padded with 1s to
    ``rank`` axes, as Caffe's top keeps the bottom's rank.

    Caffe sorts (value, index) pairs in descending order, so among equal values the larger
    index comes first; ``top_k`` prefers the smaller, so it runs on the reversed axis.

    Args:
        axis, top_k, out_max_val: Caffe's ``argmax_param`` (axis in this tensor's layout, or None).
        rank: the bottom's rank.
    """

    def __init__(self, axis=None, top_k=1, out_max_val=False, rank=3, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.top_k = int(top_k)
        self.out_max_val = out_max_val
        self.rank = int(rank)

    def _top_k(self, x):
        """``top_k`` along the last axis with Caffe's tie order; indices as floats."""
        size = x.shape[-1]
        values, reversed_indices = ops.top_k(ops.flip(x, axis=-1), self.top_k)
        return values, ops.cast(size - 1 - reversed_indices, x.dtype)

    def call(self, x):
        if self.axis is None:
            flat = ops.reshape(x, (-1, int(np.prod(x.shape[1:]))))
            values, indices = self._top_k(flat)
            out = ops.stack([indices, values], axis=1) if self.out_max_val else ops.expand_dims(indices, 1)
            return ops.reshape(out, (-1,) + self.compute_output_shape(x.shape)[1:])
        rank = len(x.shape)
        perm = [a for a in range(rank) if a != self.axis] + [self.axis]
        inverse = list(np.argsort(perm))
        values, indices = self._top_k(ops.transpose(x, perm))
        return ops.transpose(values if self.out_max_val else indices, inverse)

    def compute_output_shape(self, s):
        if self.axis is None:
            return (s[0], 2 if self.out_max_val else 1, self.top_k) + (1,) * (self.rank - 3)
        s = list(s)
        s[self.axis] = self.top_k
        return tuple(s)

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "top_k": self.top_k,
            "out_max_val": self.out_max_val,
            "rank": self.rank,
        }


@register
class ConstantPad(keras.layers.Layer):
    """Spatial padding (NHWC) with a constant: ``pads`` is ((top, bottom), (left, right)).

    Args:
        pads: ((top, bottom), (left, right)).
        value: the padding value.
    """

    def __init__(self, pads, value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.pads = tuple(tuple(p) for p in pads)
        self.value = float(value)

    def call(self, x):
        (t, b), (l, r) = self.pads
        return ops.pad(x, [[0, 0], [t, b], [l, r], [0, 0]], constant_values=self.value)

    def compute_output_shape(self, s):
        (t, b), (l, r) = self.pads
        return (s[0], None if s[1] is None else s[1] + t + b, None if s[2] is None else s[2] + l + r, s[3])

    def get_config(self):
        return {**super().get_config(), "pads": self.pads, "value": self.value}


@register
class PixelShuffle(keras.layers.Layer):
    """Depth to space (NHWC) in Caffe/PyTorch channel order: output channel ``c`` at offset
    ``(i, j)`` of each ``r x r`` block is input channel ``c * r * r + i * r + j``.

    Args:
        factor: the upscale factor ``r``.
    """

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        r = self.factor
        _, h, w, _ = ops.shape(x)  # free sizes are known when the model runs
        out_c = x.shape[-1] // (r * r)
        y = ops.reshape(x, (-1, h, w, out_c, r, r))
        y = ops.transpose(y, (0, 1, 4, 2, 5, 3))
        return ops.reshape(y, (-1, h * r, w * r, out_c))

    def compute_output_shape(self, s):
        r = self.factor
        return (s[0], None if s[1] is None else s[1] * r, None if s[2] is None else s[2] * r, s[3] // (r * r))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@register
class ShuffleChannel(ShapePreserving):
    """ShuffleNet's channel shuffle (NHWC): channels seen as (group, C/group) are transposed, so
    output channel ``j * group + g`` is input channel ``g * C/group + j``.

    Args:
        group: the fork's ``shuffle_channel_param.group``.
    """

    def __init__(self, group, **kwargs):
        super().__init__(**kwargs)
        self.group = int(group)

    def call(self, x):
        _, h, w, c = x.shape
        y = ops.reshape(x, (-1, h, w, self.group, c // self.group))
        return ops.reshape(ops.transpose(y, (0, 1, 2, 4, 3)), (-1, h, w, c))

    def get_config(self):
        return {**super().get_config(), "group": self.group}


@register
class Reorg(keras.layers.Layer):
    """Darknet's reorg (YOLO v2 passthrough), in Caffe's (C, H, W) order: the output buffer is
    the input buffer read as (C / s^2, H * s, W * s) and gathered with darknet's index formula,
    which is not a plain space-to-depth.

    Args:
        stride: darknet's stride.
        reverse: darknet's forward flag (the fork's ``reverse``).
        input_chw: the input's (C, H, W).
    """

    def __init__(self, stride, reverse=False, input_chw=None, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)
        self.reverse = bool(reverse)
        self.input_chw = tuple(input_chw)
        self._index = self._gather_index()

    def _gather_index(self):
        c, h, w = self.input_chw
        s = self.stride
        out_c = c // (s * s)
        k, j, i = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
        offset = k // out_c
        far = (i * s + offset % s) + w * s * ((j * s + offset // s) + h * s * (k % out_c))
        near = i + w * (j + h * k)
        index = np.empty(c * h * w, dtype=np.int64)
        if self.reverse:  # darknet's forward flag: out[far] = x[near]
            index[far.reshape(-1)] = near.reshape(-1)
        else:  # out[near] = x[far]
            index[near.reshape(-1)] = far.reshape(-1)
        return index

    def call(self, x):
        flat = ops.reshape(x, (-1, int(np.prod(self.input_chw))))
        return ops.take(flat, self._index, axis=1)

    def compute_output_shape(self, s):
        return (s[0], int(np.prod(self.input_chw)))

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "reverse": self.reverse, "input_chw": self.input_chw}
