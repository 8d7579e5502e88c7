"""Layers with learned weights that Keras' own do not compute Caffe's way: Deconvolution with
groups and dilation, the subsampling of a strided dilated convolution, and Embed.
"""

import keras
from keras import ops

from .base import register


@register
class Deconvolution(keras.layers.Layer):
    """Caffe Deconvolution (transposed convolution) with groups, pads and dilation (NHWC).

    The full transposed convolution is computed with VALID padding, then ``pad`` is cropped from
    each side, which is Caffe's output size ``stride * (in - 1) + dilation * (k - 1) + 1 - 2 pad``
    (None in ``output_hw``: free, as the input's size is). The kernel is (kh, kw, out / group,
    in), group-major along both channel axes.

    Args:
        filters: ``num_output``.
        kernel, stride, pad, dilation: (h, w) pairs, Caffe's.
        group: channel groups.
        use_bias: ``bias_term``.
        output_hw: Caffe's output size, None along a free axis.
    """

    def __init__(self, filters, kernel, stride, pad, dilation, group=1, use_bias=True, output_hw=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.pad = tuple(pad)
        self.dilation = tuple(dilation)
        self.group = int(group)
        self.use_bias = use_bias
        self.output_hw = tuple(output_hw)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel_weights = self.add_weight(
            name="kernel", shape=self.kernel + (self.filters // self.group, channels), initializer="glorot_uniform"
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def _full(self, x, kernel):
        if self.dilation == (1, 1):
            return ops.conv_transpose(x, kernel, strides=self.stride, padding="valid")
        # Dilated transposed convolution as a stride-1 convolution of the zero-upsampled input
        # with the spatially flipped kernel, padded to the full output.
        n, h, w, c = ops.shape(x)
        sh, sw = self.stride
        if sh > 1 or sw > 1:
            up = ops.reshape(x, (-1, h, 1, w, 1, c))
            up = ops.pad(up, [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]])
            x = ops.reshape(up, (-1, h * sh, w * sw, c))[:, : (h - 1) * sh + 1, : (w - 1) * sw + 1, :]
        eh = self.dilation[0] * (self.kernel[0] - 1)
        ew = self.dilation[1] * (self.kernel[1] - 1)
        x = ops.pad(x, [[0, 0], [eh, eh], [ew, ew], [0, 0]])
        flipped = ops.transpose(ops.flip(ops.flip(kernel, 0), 1), (0, 1, 3, 2))
        return ops.conv(x, flipped, strides=1, padding="valid", dilation_rate=self.dilation)

    def call(self, x):
        channels = x.shape[-1]
        per_in = channels // self.group
        if self.group == 1:
            y = self._full(x, self.kernel_weights)
        else:
            parts = [
                self._full(x[..., g * per_in : (g + 1) * per_in], self.kernel_weights[..., g * per_in : (g + 1) * per_in])
                for g in range(self.group)
            ]
            y = ops.concatenate(parts, axis=-1)
        (ph, pw), (oh, ow) = self.pad, self.output_hw
        # The full output is stride * (in - 1) + dilation * (k - 1) + 1: Caffe's drops pad at each end.
        y = y[:, ph : ph + oh if oh is not None else (-ph or None), pw : pw + ow if ow is not None else (-pw or None), :]
        if self.use_bias:
            y = y + self.bias
        return y

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.output_hw + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel": self.kernel,
            "stride": self.stride,
            "pad": self.pad,
            "dilation": self.dilation,
            "group": self.group,
            "use_bias": self.use_bias,
            "output_hw": self.output_hw,
        }


@register
class Subsample(keras.layers.Layer):
    """Every ``stride``-th row and column (NHWC): a strided dilated convolution, which TensorFlow
    cannot run in one op, is the stride-1 convolution subsampled.

    Args:
        stride: (h, w): keep rows and columns ``0, stride, 2 stride, ...``.
    """

    def __init__(self, stride, **kwargs):
        super().__init__(**kwargs)
        self.stride = tuple(stride)

    def call(self, x):
        return x[:, :: self.stride[0], :: self.stride[1], :]

    def compute_output_shape(self, s):
        def sub(n, k):
            return None if n is None else (n + k - 1) // k

        return (s[0], sub(s[1], self.stride[0]), sub(s[2], self.stride[1]), s[3])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@register
class Embed(keras.layers.Layer):
    """Caffe Embed: ``y = W[int(x)] (+ b)``; indices arrive as floats.

    Args:
        input_dim: rows of ``W`` (Caffe's ``input_dim``).
        output_dim: ``num_output``.
        use_bias: ``bias_term``.
    """

    def __init__(self, input_dim, output_dim, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.use_bias = use_bias

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.input_dim, self.output_dim), initializer="uniform"
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.output_dim,), initializer="zeros")

    def call(self, x):
        y = ops.take(self.embeddings, ops.cast(x, "int32"), axis=0)
        return y + self.bias if self.use_bias else y

    def compute_output_shape(self, s):
        return tuple(s) + (self.output_dim,)

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "use_bias": self.use_bias,
        }
