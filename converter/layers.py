"""Keras layers for Caffe semantics that no built-in Keras layer has.

Each layer is plain Keras 3: ``keras.ops`` only, config values in ``__init__``, weights in
``build``, the math in ``call`` and ``get_config`` returning what ``__init__`` takes, registered
for serialisation so converted models load with ``safe_mode=True`` after ``import caffe2keras``.
Tensors are in the converter's layout (4-D NHWC unless a layer says otherwise).
"""

import math

import keras
import numpy as np
from keras import ops

register = keras.saving.register_keras_serializable(package="caffe2keras")


def _pool_pads(size, kernel, stride, pad, out):
    """Top/bottom padding (bottom may be negative: a crop) making a VALID pool yield ``out``."""
    return pad, (out - 1) * stride + kernel - size - pad


@register
class CaffePooling2D(keras.layers.Layer):
    """Caffe MAX/AVE pooling with explicit pads, ceil-mode output sizes and Caffe's divisor.

    MAX: padding never wins (pads hold -inf). AVE: sum / divisor where the divisor counts the
    zero padding but not the part of the last window hanging past ``size + pad`` (Caffe's
    ``pool_size = (min(hstart + k, H + pad) - hstart) * (…)``).
    """

    def __init__(self, pool, kernel, stride, pad, input_hw, output_hw, **kwargs):
        super().__init__(**kwargs)
        self.pool = pool
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.pad = tuple(pad)
        self.input_hw = tuple(input_hw)
        self.output_hw = tuple(output_hw)
        pads = [_pool_pads(s, k, st, p, o) for s, k, st, p, o in zip(input_hw, kernel, stride, pad, output_hw)]
        self._pads = pads
        if pool == "ave":
            factors = []
            for size, k, st, p, o in zip(input_hw, kernel, stride, pad, output_hw):
                starts = np.arange(o) * st
                divisor = np.minimum(starts + k, size + 2 * p) - starts
                factors.append(k / divisor)
            self._factor = np.outer(factors[0], factors[1]).astype("float32")[None, :, :, None]

    def call(self, x):
        (top, bottom), (left, right) = self._pads
        # A negative pad means the last rows/columns are never inside a window.
        if bottom < 0:
            x = x[:, : self.input_hw[0] + bottom, :, :]
        if right < 0:
            x = x[:, :, : self.input_hw[1] + right, :]
        paddings = [[0, 0], [top, max(bottom, 0)], [left, max(right, 0)], [0, 0]]
        if self.pool == "max":
            if any(map(any, paddings)):
                x = ops.pad(x, paddings, constant_values=float("-inf"))
            return ops.max_pool(x, self.kernel, self.stride, padding="valid")
        if any(map(any, paddings)):
            x = ops.pad(x, paddings)
        y = ops.average_pool(x, self.kernel, self.stride, padding="valid")
        if not np.all(self._factor == 1.0):
            y = y * ops.convert_to_tensor(self._factor, dtype=y.dtype)
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
        }


@register
class LRN(keras.layers.Layer):
    """Caffe local response normalisation (NHWC).

    ACROSS_CHANNELS: ``y = x / (k + alpha/n * sum_{window of n channels} x^2) ^ beta``.
    WITHIN_CHANNEL: ``y = x / (1 + alpha * mean_{n x n zero-padded window} x^2) ^ beta`` — Caffe
    builds it from an AVE pool and a Power layer with shift 1, so ``k`` plays no part.
    """

    def __init__(self, local_size=5, alpha=1.0, beta=0.75, k=1.0, region="across", **kwargs):
        super().__init__(**kwargs)
        self.local_size = int(local_size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)
        self.region = region

    def call(self, x):
        n = self.local_size
        half = (n - 1) // 2
        sq = ops.square(x)
        if self.region == "across":
            channels = x.shape[-1]
            padded = ops.pad(sq, [[0, 0], [0, 0], [0, 0], [half, n - 1 - half]])
            total = padded[..., 0:channels]
            for i in range(1, n):
                total = total + padded[..., i : i + channels]
            scale = self.k + (self.alpha / n) * total
        else:
            padded = ops.pad(sq, [[0, 0], [half, half], [half, half], [0, 0]])
            mean = ops.average_pool(padded, (n, n), (1, 1), padding="valid")
            scale = 1.0 + self.alpha * mean
        return x * ops.power(scale, -self.beta)

    def get_config(self):
        return {
            **super().get_config(),
            "local_size": self.local_size,
            "alpha": self.alpha,
            "beta": self.beta,
            "k": self.k,
            "region": self.region,
        }


class _Elementwise(keras.layers.Layer):
    """Base for parameter-free element-wise layers: the output has the input's shape."""

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class Power(_Elementwise):
    """Caffe Power: ``y = (shift + scale * x) ^ power``."""

    def __init__(self, power=1.0, scale=1.0, shift=0.0, **kwargs):
        super().__init__(**kwargs)
        self.power, self.scale, self.shift = float(power), float(scale), float(shift)

    def call(self, x):
        y = x
        if self.scale != 1.0:
            y = y * self.scale
        if self.shift != 0.0:
            y = y + self.shift
        if self.power == 1.0:
            return y
        if self.power == 2.0:
            return ops.square(y)
        if self.power == 0.5:
            return ops.sqrt(y)
        return ops.power(y, self.power)

    def get_config(self):
        return {**super().get_config(), "power": self.power, "scale": self.scale, "shift": self.shift}


@register
class Exp(_Elementwise):
    """Caffe Exp: ``y = base ^ (shift + scale * x)``, base e when ``base`` is -1."""

    def __init__(self, base=-1.0, scale=1.0, shift=0.0, **kwargs):
        super().__init__(**kwargs)
        self.base, self.scale, self.shift = float(base), float(scale), float(shift)

    def call(self, x):
        log_base = 1.0 if self.base == -1.0 else math.log(self.base)
        return ops.exp((self.shift + self.scale * x) * log_base)

    def get_config(self):
        return {**super().get_config(), "base": self.base, "scale": self.scale, "shift": self.shift}


@register
class Log(_Elementwise):
    """Caffe Log: ``y = log_base(shift + scale * x)``, natural log when ``base`` is -1."""

    def __init__(self, base=-1.0, scale=1.0, shift=0.0, **kwargs):
        super().__init__(**kwargs)
        self.base, self.scale, self.shift = float(base), float(scale), float(shift)

    def call(self, x):
        y = ops.log(self.shift + self.scale * x)
        if self.base != -1.0:
            y = y / math.log(self.base)
        return y

    def get_config(self):
        return {**super().get_config(), "base": self.base, "scale": self.scale, "shift": self.shift}


@register
class AbsVal(_Elementwise):
    """Caffe AbsVal: ``y = |x|``."""

    def call(self, x):
        return ops.abs(x)


@register
class Threshold(_Elementwise):
    """Caffe Threshold: ``y = 1 if x > threshold else 0``."""

    def __init__(self, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def call(self, x):
        return ops.cast(ops.greater(x, self.threshold), x.dtype)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@register
class Clip(_Elementwise):
    """Caffe Clip: ``y = min(max(x, min), max)``."""

    def __init__(self, min_value, max_value, **kwargs):
        super().__init__(**kwargs)
        self.min_value, self.max_value = float(min_value), float(max_value)

    def call(self, x):
        return ops.clip(x, self.min_value, self.max_value)

    def get_config(self):
        return {**super().get_config(), "min_value": self.min_value, "max_value": self.max_value}


@register
class Swish(_Elementwise):
    """Caffe Swish: ``y = x * sigmoid(beta * x)``."""

    def __init__(self, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = float(beta)

    def call(self, x):
        return x * ops.sigmoid(self.beta * x)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@register
class HardSigmoid(_Elementwise):
    """``y = clip(alpha * x + beta, 0, 1)``."""

    def __init__(self, alpha=0.2, beta=0.5, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = float(alpha), float(beta)

    def call(self, x):
        return ops.clip(self.alpha * x + self.beta, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


@register
class HardSwish(_Elementwise):
    """``y = x * relu6(x + 3) / 6``."""

    def call(self, x):
        return x * ops.clip(x + 3.0, 0.0, 6.0) / 6.0


@register
class ChannelAffine(keras.layers.Layer):
    """Caffe Scale and Bias with learned parameters: ``y = x * scale + bias`` broadcast over the
    axes the parameter does not span. ``param_shape`` is the parameter's broadcast shape in this
    tensor's layout, without the batch axis."""

    def __init__(self, param_shape, use_scale=True, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.param_shape = tuple(param_shape)
        self.use_scale = use_scale
        self.use_bias = use_bias

    def build(self, input_shape):
        if self.use_scale:
            self.scale = self.add_weight(name="scale", shape=self.param_shape, initializer="ones")
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=self.param_shape, initializer="zeros")

    def call(self, x):
        if self.use_scale:
            x = x * self.scale
        if self.use_bias:
            x = x + self.bias
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "param_shape": self.param_shape,
            "use_scale": self.use_scale,
            "use_bias": self.use_bias,
        }


@register
class BroadcastOp(keras.layers.Layer):
    """Caffe Scale/Bias by a second bottom: ``y = x * b`` (or ``x + b``) where ``b`` spans some
    axes of ``x``. ``perm`` reorders ``b`` into ``x``'s axis order and ``shape`` (with batch,
    -1 for a batch axis) inserts the broadcast axes."""

    def __init__(self, op, perm, shape, **kwargs):
        super().__init__(**kwargs)
        self.op = op
        self.perm = tuple(perm)
        self.shape = tuple(shape)

    def call(self, inputs):
        x, b = inputs
        if self.perm != tuple(range(len(self.perm))):
            b = ops.transpose(b, self.perm)
        b = ops.reshape(b, self.shape)
        return x * b if self.op == "mul" else x + b

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "op": self.op, "perm": self.perm, "shape": self.shape}


@register
class MVN(keras.layers.Layer):
    """Caffe mean-variance normalisation over ``axes``: ``y = (x - mean) / (std + eps)``
    (Caffe adds eps after the square root), or only ``x - mean``."""

    def __init__(self, axes, normalize_variance=True, eps=1e-9, **kwargs):
        super().__init__(**kwargs)
        self.axes = tuple(axes)
        self.normalize_variance = normalize_variance
        self.eps = float(eps)

    def call(self, x):
        centred = x - ops.mean(x, axis=self.axes, keepdims=True)
        if not self.normalize_variance:
            return centred
        variance = ops.mean(ops.square(centred), axis=self.axes, keepdims=True)
        return centred / (ops.sqrt(variance) + self.eps)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "axes": self.axes,
            "normalize_variance": self.normalize_variance,
            "eps": self.eps,
        }


@register
class Deconvolution(keras.layers.Layer):
    """Caffe Deconvolution (transposed convolution) with groups, pads and dilation (NHWC).

    The full transposed convolution is computed with VALID padding, then ``pad`` is cropped from
    each side, which is Caffe's output size ``stride * (in - 1) + dilation * (k - 1) + 1 - 2 pad``.
    The kernel is (kh, kw, out / group, in), group-major along both channel axes.
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
        y = y[:, ph : ph + oh, pw : pw + ow, :]
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
    cannot run in one op, is the stride-1 convolution subsampled."""

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
class SliceAxis(keras.layers.Layer):
    """Caffe Slice: cuts ``axis`` at ``bounds`` into several outputs."""

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
    """Caffe Crop: ``x[begin : begin + size]`` on the axes it names (None: the whole axis)."""

    def __init__(self, begin, size, **kwargs):
        super().__init__(**kwargs)
        self.begin = tuple(begin)
        self.size = tuple(size)

    def call(self, inputs):
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        index = tuple(
            slice(None) if s is None else slice(b, b + s) for b, s in zip(self.begin, self.size)
        )
        return x[index]

    def compute_output_shape(self, input_shape):
        s = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)) else input_shape
        return tuple(d if size is None else size for d, size in zip(s, self.size))

    def get_config(self):
        return {**super().get_config(), "begin": self.begin, "size": self.size}


@register
class Eltwise(keras.layers.Layer):
    """Caffe Eltwise SUM with coefficients: ``y = sum_i coeff_i * x_i``."""

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
class Reduction(keras.layers.Layer):
    """Caffe Reduction over ``axes``: SUM, ASUM, SUMSQ or MEAN, times ``coeff``."""

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
    ``axis`` None, over each sample flattened, giving (N, 1 or 2, top_k)."""

    def __init__(self, axis=None, top_k=1, out_max_val=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.top_k = int(top_k)
        self.out_max_val = out_max_val

    def call(self, x):
        if self.axis is None:
            flat = ops.reshape(x, (-1, int(np.prod(x.shape[1:]))))
            values, indices = ops.top_k(flat, self.top_k)
            indices = ops.cast(indices, x.dtype)
            if self.out_max_val:
                return ops.stack([indices, values], axis=1)
            return ops.expand_dims(indices, 1)
        rank = len(x.shape)
        perm = [a for a in range(rank) if a != self.axis] + [self.axis]
        inverse = list(np.argsort(perm))
        values, indices = ops.top_k(ops.transpose(x, perm), self.top_k)
        out = values if self.out_max_val else ops.cast(indices, x.dtype)
        return ops.transpose(out, inverse)

    def compute_output_shape(self, s):
        if self.axis is None:
            return (s[0], 2 if self.out_max_val else 1, self.top_k)
        s = list(s)
        s[self.axis] = self.top_k
        return tuple(s)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "top_k": self.top_k, "out_max_val": self.out_max_val}


@register
class Tile(keras.layers.Layer):
    """Caffe Tile: repeats the whole blob ``repeats[i]`` times along each axis."""

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
class Embed(keras.layers.Layer):
    """Caffe Embed: ``y = W[int(x)] (+ b)``; indices arrive as floats."""

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


@register
class Reshape(keras.layers.Layer):
    """A reshape that may change the batch axis (Caffe Reshape and Flatten can): ``shape``
    includes the batch axis, -1 where it is inferred."""

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(shape)

    def call(self, x):
        return ops.reshape(x, self.shape)

    def compute_output_shape(self, s):
        return tuple(None if d == -1 else d for d in self.shape)

    def get_config(self):
        return {**super().get_config(), "shape": self.shape}
