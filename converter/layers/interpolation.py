"""Bilinear resizing as PSPNet's Interp and the BilinearInterpolate fork compute it.
"""

import keras
import numpy as np
from keras import ops

from .base import register


def _interp_axis(size_in, size_out, begin, align_corners=True):
    """Source indices and weights along one axis of Caffe's bilinear resize, in float32 as Caffe
    computes them. ``align_corners``: output ``i`` reads input position ``i * (in - 1) / (out - 1)``
    (PSPNet's caffe_cpu_interp2, BilinearInterpolate's default); otherwise the half-pixel centre
    ``(i + 0.5) * in / out - 0.5``, clamped into the input (BilinearInterpolate)."""
    if align_corners:
        ratio = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0)
        pos = (ratio * np.arange(size_out, dtype=np.float32)).astype(np.float32)
    else:
        ratio = np.float32(size_in) / np.float32(size_out)
        pos = (np.float64(ratio) * (np.arange(size_out) + 0.5) - 0.5).astype(np.float32)
        pos = np.clip(pos, np.float32(0), np.float32(size_in - 1))
    low = pos.astype(np.int64)
    step = (low < size_in - 1).astype(np.int64)
    frac = (pos - low.astype(np.float32)).astype(np.float32)
    return low + begin, low + step + begin, (np.float32(1) - frac).astype(np.float32), frac


@register
class BilinearResize(keras.layers.Layer):
    """Bilinear resize (NHWC) as Caffe's Interp and BilinearInterpolate compute it (see
    :func:`_interp_axis`), of the window of ``in_hw`` starting at ``begin`` (Interp's negative
    pads crop the input). Inputs after the first (Interp's size reference) are not read.

    Args:
        in_hw: the (h, w) window of the input read.
        out_hw: the output's (h, w).
        begin: the window's first row and column.
        align_corners: corner-aligned positions (Interp) or half-pixel centres.
    """

    def __init__(self, in_hw, out_hw, begin=(0, 0), align_corners=True, **kwargs):
        super().__init__(**kwargs)
        self.in_hw = tuple(in_hw)
        self.out_hw = tuple(out_hw)
        self.begin = tuple(begin)
        self.align_corners = bool(align_corners)
        self._rows = _interp_axis(self.in_hw[0], self.out_hw[0], self.begin[0], self.align_corners)
        self._cols = _interp_axis(self.in_hw[1], self.out_hw[1], self.begin[1], self.align_corners)

    def call(self, inputs):
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        c0, c1, cw0, cw1 = self._cols
        r0, r1, rw0, rw1 = self._rows
        cw0, cw1 = cw0[None, None, :, None], cw1[None, None, :, None]
        rw0, rw1 = rw0[None, :, None, None], rw1[None, :, None, None]
        xw = cw0 * ops.take(x, c0, axis=2) + cw1 * ops.take(x, c1, axis=2)
        return rw0 * ops.take(xw, r0, axis=1) + rw1 * ops.take(xw, r1, axis=1)

    def compute_output_shape(self, s):
        s = s[0] if isinstance(s[0], (list, tuple)) else s
        return (s[0],) + self.out_hw + (s[3],)

    def get_config(self):
        return {**super().get_config(), "in_hw": self.in_hw, "out_hw": self.out_hw, "begin": self.begin,
                "align_corners": self.align_corners}
