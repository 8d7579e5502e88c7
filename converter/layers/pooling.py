"""Pooling: Caffe's MAX/AVE pooling (ceil-mode sizes, Caffe's divisor), MAX pooling with its argmax
mask, and SegNet's unpooling by that mask.
"""

import keras
import numpy as np
from keras import ops

from .base import register


def _pool_pads(size, kernel, stride, pad, out):
    """Top/bottom padding (bottom may be negative: a crop) making a VALID pool yield ``out``."""
    return pad, (out - 1) * stride + kernel - size - pad


@register
class CaffePooling2D(keras.layers.Layer):
    """Caffe MAX/AVE pooling with explicit pads, ceil-mode output sizes and Caffe's divisor.

    MAX: padding never wins (pads hold -inf). AVE: sum / divisor where the divisor counts the
    zero padding but not the part of the last window hanging past ``size + pad`` (Caffe's
    ``pool_size = (min(hstart + k, H + pad) - hstart) * (…)``). Sizes given as None in
    ``input_hw``/``output_hw`` are free: the pads, the output size (Caffe's ``ceil`` and its
    rule dropping a window that starts in the padding) and the divisors follow the input's size
    when the model runs.

    Args:
        pool: ``"max"`` or ``"ave"``.
        kernel, stride, pad: (h, w) pairs, Caffe's.
        input_hw, output_hw: the input's and Caffe's output (h, w), None along a free axis.
        ceil: Caffe's ceil rounding of the output size (``round_mode: FLOOR`` is False).
    """

    def __init__(self, pool, kernel, stride, pad, input_hw, output_hw, ceil=True, **kwargs):
        super().__init__(**kwargs)
        self.pool = pool
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.pad = tuple(pad)
        self.input_hw = tuple(input_hw)
        self.output_hw = tuple(output_hw)
        self.ceil = bool(ceil)
        self._free = any(d is None for d in self.input_hw)
        if self._free:
            return
        pads = [_pool_pads(s, k, st, p, o) for s, k, st, p, o in zip(input_hw, kernel, stride, pad, output_hw)]
        self._pads = pads
        if pool == "ave":
            factors = []
            for size, k, st, p, o in zip(input_hw, kernel, stride, pad, output_hw):
                starts = np.arange(o) * st
                divisor = np.minimum(starts + k, size + 2 * p) - starts
                # A window starting past the end (kernel < stride, ceil mode) holds nothing:
                # Caffe outputs 0 for it, as the zero padding gives here.
                factors.append(k / np.where(divisor > 0, divisor, 1))
            self._factor = np.outer(factors[0], factors[1]).astype("float32")[None, :, :, None]

    def call(self, x):
        if self._free:
            return self._call_any_size(x)
        (top, bottom), (left, right) = self._pads
        # A negative pad means the last rows/columns are never inside a window.
        if bottom < 0:
            x = x[:, : self.input_hw[0] + bottom, :, :]
        if right < 0:
            x = x[:, :, : self.input_hw[1] + right, :]
        paddings = [[0, 0], [top, max(bottom, 0)], [left, max(right, 0)], [0, 0]]
        if self.pool == "max":
            if any(map(any, paddings)):
                # Caffe starts every max at -FLT_MAX, which an empty window keeps.
                x = ops.pad(x, paddings, constant_values=float(np.finfo(np.float32).min))
            return ops.max_pool(x, self.kernel, self.stride, padding="valid")
        if any(map(any, paddings)):
            x = ops.pad(x, paddings)
        y = ops.average_pool(x, self.kernel, self.stride, padding="valid")
        if not np.all(self._factor == 1.0):
            y = y * ops.convert_to_tensor(self._factor, dtype=y.dtype)
        return y

    def _call_any_size(self, x):
        """Pad ``stride - 1`` past Caffe's pad at the end (ceil mode), so the VALID windows
        include every window Caffe's ceil counts; then drop the last when it starts inside the
        padding, and rescale each average by ``k / divisor`` as above, all from the run's size."""
        size = ops.shape(x)[1:3]
        extra = [st - 1 if self.ceil else 0 for st in self.stride]
        paddings = [[0, 0], [self.pad[0], self.pad[0] + extra[0]], [self.pad[1], self.pad[1] + extra[1]], [0, 0]]
        if self.pool == "max":
            x = ops.pad(x, paddings, constant_values=float(np.finfo(np.float32).min))
            y = ops.max_pool(x, self.kernel, self.stride, padding="valid")
        else:
            y = ops.average_pool(ops.pad(x, paddings), self.kernel, self.stride, padding="valid")
        counts = ops.shape(y)[1:3]
        kept, factors = [], []
        for axis in range(2):
            pooled, k, st, p = counts[axis], self.kernel[axis], self.stride[axis], self.pad[axis]
            if any(self.pad):
                pooled = pooled - ops.cast((pooled - 1) * st >= size[axis] + p, "int32")
            kept.append(pooled)
            if self.pool == "ave":
                starts = ops.arange(pooled, dtype="int32") * st
                divisor = ops.minimum(starts + k, size[axis] + 2 * p) - starts
                factors.append(k / ops.cast(ops.where(divisor > 0, divisor, 1), y.dtype))
        y = y[:, : kept[0], : kept[1], :]
        if self.pool == "ave":
            # Reshapes, not new-axis indexing: TFLite has no strided slice that adds axes.
            y = y * ops.reshape(factors[0], (1, -1, 1, 1)) * ops.reshape(factors[1], (1, 1, -1, 1))
        return y

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.output_hw + (input_shape[3],)

    def get_config(self):
        return {
            **super().get_config(),
            "pool": self.pool,
            "kernel": self.kernel,
            "stride": self.stride,
            "pad": self.pad,
            "input_hw": self.input_hw,
            "output_hw": self.output_hw,
            "ceil": self.ceil,
        }


@register
class MaxPoolingWithMask(keras.layers.Layer):
    """Caffe MAX pooling (NHWC) that also returns its argmax mask: for each window the flat index
    ``h * W + w`` in the input plane of the first maximum in row-major scan order, as a float.

    Args:
        kernel, stride, pad: (h, w) pairs, Caffe's.
        input_hw, output_hw: the input's and the output's (h, w).
    """

    def __init__(self, kernel, stride, pad, input_hw, output_hw, **kwargs):
        super().__init__(**kwargs)
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.pad = tuple(pad)
        self.input_hw = tuple(input_hw)
        self.output_hw = tuple(output_hw)

    def call(self, x):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        (h, w), (oh, ow) = self.input_hw, self.output_hw
        bottom = max(0, (oh - 1) * sh + kh - h - ph)
        right = max(0, (ow - 1) * sw + kw - w - pw)
        padded = ops.pad(x, [[0, 0], [ph, bottom], [pw, right], [0, 0]], constant_values=float("-inf"))
        windows = [
            padded[:, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ]
        stacked = ops.stack(windows, axis=-1)
        best = ops.argmax(stacked, axis=-1)
        pooled = ops.max(stacked, axis=-1)
        di, dj = best // kw, best % kw
        rows = (np.arange(oh) * sh - ph).reshape(1, oh, 1, 1)
        cols = (np.arange(ow) * sw - pw).reshape(1, 1, ow, 1)
        index = (rows + di) * w + cols + dj
        return [pooled, ops.cast(index, x.dtype)]

    def compute_output_shape(self, s):
        out = (s[0],) + self.output_hw + (s[3],)
        return [out, out]

    def get_config(self):
        return {
            **super().get_config(),
            "kernel": self.kernel,
            "stride": self.stride,
            "pad": self.pad,
            "input_hw": self.input_hw,
            "output_hw": self.output_hw,
        }


@register
class MaxUnpool(keras.layers.Layer):
    """SegNet's Upsample (NHWC): a zero map of ``output_hw`` where each input value is written at
    the flat position ``h * W_out + w`` its mask holds. Windows must not overlap (each position
    written at most once), which the translator checks.

    Args:
        output_hw: the output's (h, w): the fork's ``upsample_h``/``upsample_w`` or ``scale`` times the
            input's.
    """

    def __init__(self, output_hw, **kwargs):
        super().__init__(**kwargs)
        self.output_hw = tuple(output_hw)

    def call(self, inputs):
        x, mask = inputs
        oh, ow = self.output_hw
        _, h, w, c = x.shape
        batch = ops.shape(x)[0]
        plane = ops.cast(mask, "int32")
        images = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1, 1))
        channels = ops.reshape(ops.arange(c, dtype="int32"), (1, 1, 1, -1))
        flat = ((images * (oh * ow) + plane) * c + channels)
        out = ops.scatter(ops.reshape(flat, (-1, 1)), ops.reshape(x, (-1,)), (batch * oh * ow * c,))
        return ops.reshape(out, (-1, oh, ow, c))

    def compute_output_shape(self, input_shapes):
        s = input_shapes[0]
        return (s[0],) + self.output_hw + (s[3],)

    def get_config(self):
        return {**super().get_config(), "output_hw": self.output_hw}
