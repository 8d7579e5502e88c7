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
    ``pool_size = (min(hstart + k, H + pad) - hstart) * (…)``). Sizes given as None in
    ``input_hw``/``output_hw`` are free: the pads, the output size (Caffe's ``ceil`` and its
    rule dropping a window that starts in the padding) and the divisors follow the input's size
    when the model runs.
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
            # A window reaching past every channel sums them all: no need to pad further.
            reach = min(half, channels - 1)
            padded = ops.pad(sq, [[0, 0], [0, 0], [0, 0], [reach, reach]])
            total = padded[..., 0:channels]
            for i in range(1, 2 * reach + 1):
                total = total + padded[..., i : i + channels]
            scale = self.k + (self.alpha / n) * total
        else:
            # Caffe averages over the full n x n window (zeros outside the image count); a free
            # size pads the whole half window, whose extra zeros add nothing to the sum.
            rh, rw = (half if d is None else min(half, d - 1) for d in x.shape[1:3])
            padded = ops.pad(sq, [[0, 0], [rh, rh], [rw, rw], [0, 0]])
            window = (2 * rh + 1, 2 * rw + 1)
            total = ops.average_pool(padded, window, (1, 1), padding="valid") * float(window[0] * window[1])
            scale = 1.0 + (self.alpha / (n * n)) * total
        if self.beta == 0.75:
            # Caffe's usual beta: scale^-0.75 = r * sqrt(r) with r = rsqrt(scale), much cheaper
            # than a general power (LRN was a third of GoogLeNet's CPU time).
            r = ops.rsqrt(scale)
            return x * r * ops.sqrt(r)
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


class ShapePreserving(keras.layers.Layer):
    """Base for layers whose output has the input's shape."""

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class Power(ShapePreserving):
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


class _BaseScaleShift(ShapePreserving):
    """Base for Caffe's Exp and Log, which share (base, scale, shift); base -1 means e."""

    def __init__(self, base=-1.0, scale=1.0, shift=0.0, **kwargs):
        super().__init__(**kwargs)
        self.base, self.scale, self.shift = float(base), float(scale), float(shift)

    @property
    def log_base(self):
        return 1.0 if self.base == -1.0 else math.log(self.base)

    def get_config(self):
        return {**super().get_config(), "base": self.base, "scale": self.scale, "shift": self.shift}


@register
class Exp(_BaseScaleShift):
    """Caffe Exp: ``y = base ^ (shift + scale * x)``."""

    def call(self, x):
        return ops.exp((self.shift + self.scale * x) * self.log_base)


@register
class Log(_BaseScaleShift):
    """Caffe Log: ``y = log_base(shift + scale * x)``."""

    def call(self, x):
        y = ops.log(self.shift + self.scale * x)
        return y if self.base == -1.0 else y / self.log_base


@register
class AbsVal(ShapePreserving):
    """Caffe AbsVal: ``y = |x|``."""

    def call(self, x):
        return ops.abs(x)


@register
class NegativeSlopeReLU(ShapePreserving):
    """Caffe ReLU with any ``negative_slope``: ``y = max(x, 0) + negative_slope * min(x, 0)``,
    capped at ``max_value`` when given (ReLU6)."""

    def __init__(self, negative_slope, max_value=None, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = float(negative_slope)
        self.max_value = None if max_value is None else float(max_value)

    def call(self, x):
        y = ops.maximum(x, 0.0) + self.negative_slope * ops.minimum(x, 0.0)
        return y if self.max_value is None else ops.minimum(y, self.max_value)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope, "max_value": self.max_value}


@register
class Threshold(ShapePreserving):
    """Caffe Threshold: ``y = 1 if x > threshold else 0``."""

    def __init__(self, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def call(self, x):
        return ops.cast(ops.greater(x, self.threshold), x.dtype)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@register
class Clip(ShapePreserving):
    """Caffe Clip: ``y = min(max(x, min), max)``."""

    def __init__(self, min_value, max_value, **kwargs):
        super().__init__(**kwargs)
        self.min_value, self.max_value = float(min_value), float(max_value)

    def call(self, x):
        return ops.clip(x, self.min_value, self.max_value)

    def get_config(self):
        return {**super().get_config(), "min_value": self.min_value, "max_value": self.max_value}


@register
class Swish(ShapePreserving):
    """Caffe Swish: ``y = x * sigmoid(beta * x)``."""

    def __init__(self, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = float(beta)

    def call(self, x):
        return x * ops.sigmoid(self.beta * x)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@register
class HardSigmoid(ShapePreserving):
    """``y = clip(alpha * x + beta, 0, 1)``."""

    def __init__(self, alpha=0.2, beta=0.5, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = float(alpha), float(beta)

    def call(self, x):
        return ops.clip(self.alpha * x + self.beta, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


@register
class HardSwish(ShapePreserving):
    """``y = x * relu6(x + 3) / 6``."""

    def call(self, x):
        return x * ops.clip(x + 3.0, 0.0, 6.0) / 6.0


@register
class ChannelAffine(ShapePreserving):
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
class MVN(ShapePreserving):
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
    each side, which is Caffe's output size ``stride * (in - 1) + dilation * (k - 1) + 1 - 2 pad``
    (None in ``output_hw``: free, as the input's size is). The kernel is (kh, kw, out / group,
    in), group-major along both channel axes.
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
    """Caffe Crop: ``x[begin : begin + size]`` on the axes it names (None: the whole axis; -1:
    the size the reference, the second input, held in ``x``'s layout, has there when the model
    runs, for a free size)."""

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
    ``axis`` None, over each sample flattened, giving (N, 1 or 2, top_k) padded with 1s to
    ``rank`` axes, as Caffe's top keeps the bottom's rank.

    Caffe sorts (value, index) pairs in descending order, so among equal values the larger
    index comes first; ``top_k`` prefers the smaller, so it runs on the reversed axis.
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


# --- fork layers ---


@register
class Normalize(ShapePreserving):
    """SSD's Normalize (NHWC): ``y = x / sqrt(sum x^2 + eps) * scale``, the sum over the channels
    of each pixel, or over the whole sample with ``across_spatial``; one scale for all channels
    with ``channel_shared``."""

    def __init__(self, across_spatial=True, channel_shared=True, eps=1e-10, **kwargs):
        super().__init__(**kwargs)
        self.across_spatial = across_spatial
        self.channel_shared = channel_shared
        self.eps = float(eps)

    def build(self, input_shape):
        shape = (1,) if self.channel_shared else (input_shape[-1],)
        self.scale = self.add_weight(name="scale", shape=shape, initializer="ones")

    def call(self, x):
        axes = (1, 2, 3) if self.across_spatial else (3,)
        norm = ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=True) + self.eps)
        return x / norm * self.scale

    def get_config(self):
        return {
            **super().get_config(),
            "across_spatial": self.across_spatial,
            "channel_shared": self.channel_shared,
            "eps": self.eps,
        }


def prior_boxes(feature_hw, image_hw, step_hw, offset, min_sizes, max_sizes, aspect_ratios, clip, variances):
    """SSD's PriorBox (prior_box_layer.cpp) as a (1, 2, H*W*priors*4) array: corner boxes
    normalised by the image size, then their variances. Box sizes are whole pixels: SSD reads
    each min_size and max_size into an ``int`` (SSD512's 35.84 is a 35-pixel box)."""
    (fh, fw), (ih, iw), (sh, sw) = feature_hw, image_hw, step_hw
    boxes = []
    for h in range(fh):
        for w in range(fw):
            cx, cy = (w + offset) * sw, (h + offset) * sh
            for s, min_size in enumerate(min_sizes):
                min_size = int(min_size)
                sizes = [(min_size, min_size)]
                if max_sizes:
                    side = math.sqrt(min_size * int(max_sizes[s]))
                    sizes.append((side, side))
                for ar in aspect_ratios:
                    if abs(ar - 1.0) < 1e-6:
                        continue
                    sizes.append((min_size * math.sqrt(ar), min_size / math.sqrt(ar)))
                for bw, bh in sizes:
                    half_w, half_h = bw / 2.0, bh / 2.0
                    boxes.append(((cx - half_w) / iw, (cy - half_h) / ih, (cx + half_w) / iw, (cy + half_h) / ih))
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1)
    if clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    var = np.asarray(variances if variances else [0.1], dtype=np.float32)
    var = np.tile(var if var.size == 4 else np.repeat(var[:1], 4), boxes.size // 4)
    return np.stack([boxes, var])[None]


@register
class PriorBox(keras.layers.Layer):
    """SSD's PriorBox: a constant (1, 2, H*W*priors*4) blob of prior boxes and variances that
    depends only on the feature map and image sizes (see :func:`prior_boxes`); its inputs (the
    feature map, and the image when Caffe's layer has it) are not read."""

    def __init__(self, feature_hw, image_hw, step_hw, offset, min_sizes, max_sizes, aspect_ratios, clip, variances,
                 **kwargs):
        super().__init__(**kwargs)
        self.feature_hw = tuple(feature_hw)
        self.image_hw = tuple(image_hw)
        self.step_hw = tuple(float(s) for s in step_hw)
        self.offset = float(offset)
        self.min_sizes = tuple(float(s) for s in min_sizes)
        self.max_sizes = tuple(float(s) for s in max_sizes)
        self.aspect_ratios = tuple(float(a) for a in aspect_ratios)
        self.clip = bool(clip)
        self.variances = tuple(float(v) for v in variances)
        self._priors = prior_boxes(
            self.feature_hw, self.image_hw, self.step_hw, self.offset, self.min_sizes, self.max_sizes,
            self.aspect_ratios, self.clip, self.variances,
        )

    def call(self, x):
        return ops.convert_to_tensor(self._priors)

    def compute_output_shape(self, input_shape):
        return self._priors.shape

    def get_config(self):
        return {
            **super().get_config(),
            "feature_hw": self.feature_hw,
            "image_hw": self.image_hw,
            "step_hw": self.step_hw,
            "offset": self.offset,
            "min_sizes": self.min_sizes,
            "max_sizes": self.max_sizes,
            "aspect_ratios": self.aspect_ratios,
            "clip": self.clip,
            "variances": self.variances,
        }


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
    pads crop the input). Inputs after the first (Interp's size reference) are not read."""

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


@register
class PixelShuffle(keras.layers.Layer):
    """Depth to space (NHWC) in Caffe/PyTorch channel order: output channel ``c`` at offset
    ``(i, j)`` of each ``r x r`` block is input channel ``c * r * r + i * r + j``."""

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
class ConstantPad(keras.layers.Layer):
    """Spatial padding (NHWC) with a constant: ``pads`` is ((top, bottom), (left, right))."""

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
class ShuffleChannel(ShapePreserving):
    """ShuffleNet's channel shuffle (NHWC): channels seen as (group, C/group) are transposed, so
    output channel ``j * group + g`` is input channel ``g * C/group + j``."""

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
class Axpy(keras.layers.Layer):
    """SENet's Axpy: ``y = a * x + y`` with ``a`` of shape (N, 1, 1, C)."""

    def call(self, inputs):
        a, x, y = inputs
        return a * x + y

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]


@register
class BatchNorm(ShapePreserving):
    """Caffe's BatchNorm: ``y = (x - mean) / sqrt(variance + eps)`` per channel (``axis``), the
    statistics taken over every other axis.

    The state is Caffe's three blobs: running sums of batch means and of unbiased batch variances,
    and their scale factor; the stored statistics are ``sum / factor`` (zero when the factor is).
    ``use_global_stats`` is Caffe's field: None (unset) normalises by the batch's statistics in
    training and by the stored ones in inference, as Caffe's TRAIN and TEST phases do; True or
    False makes one choice for both. Each training call on batch statistics updates the sums by
    Caffe's rule, ``m`` being the values per channel in the batch::

        factor ← f·factor + 1,  mean_sum ← f·mean_sum + mean,  var_sum ← f·var_sum + m/(m-1)·var

    with ``f = moving_average_fraction``.
    """

    def __init__(self, axis=-1, eps=1e-5, moving_average_fraction=0.999, use_global_stats=None, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.eps = float(eps)
        self.moving_average_fraction = float(moving_average_fraction)
        self.use_global_stats = None if use_global_stats is None else bool(use_global_stats)

    def build(self, input_shape):
        self.rank = len(input_shape)
        channels = (input_shape[self.axis],)
        self.mean_sum = self.add_weight(name="mean_sum", shape=channels, initializer="zeros", trainable=False)
        self.variance_sum = self.add_weight(name="variance_sum", shape=channels, initializer="zeros", trainable=False)
        self.factor = self.add_weight(name="factor", shape=(1,), initializer="zeros", trainable=False)

    def call(self, x, training=None):
        axis = self.axis % self.rank
        reduce_axes = tuple(a for a in range(self.rank) if a != axis)

        def per_channel(v):  # a (C,) vector broadcast along the channel axis
            return v if axis == self.rank - 1 else ops.reshape(v, [-1 if a == axis else 1 for a in range(self.rank)])

        if self.use_global_stats is None:
            batch_stats = bool(training)
        else:
            batch_stats = not self.use_global_stats
        if batch_stats:
            mean = ops.mean(x, axis=reduce_axes)
            centred = x - per_channel(mean)
            variance = ops.mean(ops.square(centred), axis=reduce_axes)
            if training:
                self._update_sums(x, mean, variance, axis)
        else:
            scale = ops.divide_no_nan(1.0, self.factor)  # Caffe: 0 when the factor is 0
            centred = x - per_channel(self.mean_sum * scale)
            variance = self.variance_sum * scale
        # Caffe divides by the deviation; multiplying by its inverse is as exact (to an ulp) and a
        # division over the whole tensor costs as much as the rest of the layer.
        return centred * per_channel(ops.rsqrt(variance + self.eps))

    def _update_sums(self, x, mean, variance, axis):
        m = ops.cast(ops.size(x) // ops.shape(x)[axis], x.dtype)
        correction = ops.where(m > 1, m / ops.maximum(m - 1, 1), 1.0)
        f = self.moving_average_fraction
        self.factor.assign(self.factor * f + 1)
        self.mean_sum.assign(self.mean_sum * f + ops.stop_gradient(mean))
        self.variance_sum.assign(self.variance_sum * f + correction * ops.stop_gradient(variance))

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "eps": self.eps,
            "moving_average_fraction": self.moving_average_fraction,
            "use_global_stats": self.use_global_stats,
        }


@register
class UnscaledDropout(ShapePreserving):
    """Caffe's Dropout with ``scale_train: false``: training keeps each value with probability
    ``1 - rate`` unscaled; inference multiplies by ``1 - rate`` instead."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training:
            return x * (1.0 - self.rate)
        keep = keras.random.uniform(ops.shape(x), seed=self.seed_generator) >= self.rate
        return ops.where(keep, x, ops.zeros_like(x))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@register
class BatchStatsNorm(ShapePreserving):
    """SegNet/ENet BN in LEARN mode, which normalises by the statistics of the batch it is given,
    even at test time: ``y = scale * (x - E[x]) / sqrt(E[x^2] - E[x]^2 + eps) + shift`` over N, H, W."""

    def __init__(self, eps=1e-9, **kwargs):
        super().__init__(**kwargs)
        self.eps = float(eps)

    def build(self, input_shape):
        shape = (input_shape[-1],)
        self.scale = self.add_weight(name="scale", shape=shape, initializer="ones")
        self.shift = self.add_weight(name="shift", shape=shape, initializer="zeros")

    def call(self, x):
        mean = ops.mean(x, axis=(0, 1, 2), keepdims=True)
        variance = ops.mean(ops.square(x), axis=(0, 1, 2), keepdims=True) - ops.square(mean)
        return (x - mean) / ops.sqrt(variance + self.eps) * self.scale + self.shift

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


@register
class MaxPoolingWithMask(keras.layers.Layer):
    """Caffe MAX pooling (NHWC) that also returns its argmax mask: for each window the flat index
    ``h * W + w`` in the input plane of the first maximum in row-major scan order, as a float."""

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
    written at most once), which the translator checks."""

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


@register
class Reorg(keras.layers.Layer):
    """Darknet's reorg (YOLO v2 passthrough), in Caffe's (C, H, W) order: the output buffer is
    the input buffer read as (C / s^2, H * s, W * s) and gathered with darknet's index formula,
    which is not a plain space-to-depth."""

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


def greedy_nms(candidates, suppresses, max_keep=None):
    """Greedy non-maximum suppression over candidates sorted best first (Caffe's, SSD's, YOLO's
    and py-faster-rcnn's pass over a sorted list).

    ``candidates`` (..., K) bool marks the boxes taking part; ``suppresses(k)`` gives, for the
    (...,) index ``k`` of a box just kept, the (..., K) bool of boxes it removes. Repeatedly the
    best remaining box is kept and what it suppresses dropped: the boxes the sequential pass
    keeps, in as many loop steps as boxes are kept (at most ``max_keep`` per row). Returns the
    (..., K) bool of kept boxes.
    """
    size = candidates.shape[-1]
    position = ops.arange(size)

    def cond(remaining, keep):
        return ops.any(remaining)

    def body(remaining, keep):
        # The first remaining index, exactly (argmax leaves ties unspecified).
        k = ops.min(ops.where(remaining, position, size), axis=-1)
        this = ops.equal(position, ops.expand_dims(k, -1))
        keep = ops.logical_or(keep, this)
        remaining = ops.logical_and(remaining, ops.logical_not(ops.logical_or(suppresses(ops.minimum(k, size - 1)), this)))
        if max_keep is not None:
            full = ops.sum(ops.cast(keep, "int32"), axis=-1, keepdims=True) >= max_keep
            remaining = ops.logical_and(remaining, ops.logical_not(full))
        return remaining, keep

    _, keep = ops.while_loop(cond, body, (candidates, ops.zeros_like(candidates)))
    return keep


@register
class DetectionOutput(keras.layers.Layer):
    """SSD's DetectionOutput with a fixed number of rows per image (Caffe's varies).

    Inputs in Caffe order: loc (N, P*L*4), conf (N, P*classes), priors (1, 2, P*4). Boxes are
    decoded against the priors (CORNER, CENTER_SIZE or CORNER_SIZE), then per class other than
    the background: scores above ``confidence_threshold``, the ``top_k`` best, greedy NMS keeping
    a box when its Jaccard overlap with every kept box is <= ``nms_threshold``; of all kept, the
    ``keep_top_k`` best. Rows are [image, label, score, xmin, ymin, xmax, ymax] ordered by label,
    then score (Caffe's order), ``rows`` per image, padded with [image, -1, ..., -1] (Caffe's own
    row for an image without detections); the output is (1, 1, N * rows, 7).
    """

    def __init__(self, num_classes, share_location, background_label_id, code_type, variance_encoded_in_target,
                 confidence_threshold, nms_threshold, top_k, keep_top_k, rows, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.share_location = bool(share_location)
        self.background_label_id = int(background_label_id)
        self.code_type = code_type
        self.variance_encoded_in_target = bool(variance_encoded_in_target)
        self.confidence_threshold = float(confidence_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.keep_top_k = int(keep_top_k)
        self.rows = int(rows)

    def _decode(self, loc, prior, var):
        px0, py0, px1, py1 = (prior[..., i] for i in range(4))
        if self.variance_encoded_in_target:
            v = [1.0, 1.0, 1.0, 1.0]
        else:
            v = [var[..., i] for i in range(4)]
        l0, l1, l2, l3 = (loc[..., i] for i in range(4))
        pw, ph = px1 - px0, py1 - py0
        if self.code_type == "CORNER":
            return ops.stack([px0 + v[0] * l0, py0 + v[1] * l1, px1 + v[2] * l2, py1 + v[3] * l3], axis=-1)
        if self.code_type == "CORNER_SIZE":
            return ops.stack(
                [px0 + v[0] * l0 * pw, py0 + v[1] * l1 * ph, px1 + v[2] * l2 * pw, py1 + v[3] * l3 * ph], axis=-1
            )
        cx, cy = (px0 + px1) / 2.0, (py0 + py1) / 2.0
        dcx, dcy = v[0] * l0 * pw + cx, v[1] * l1 * ph + cy
        dw, dh = ops.exp(v[2] * l2) * pw, ops.exp(v[3] * l3) * ph
        return ops.stack([dcx - dw / 2.0, dcy - dh / 2.0, dcx + dw / 2.0, dcy + dh / 2.0], axis=-1)

    @staticmethod
    def _overlaps(boxes):
        """Caffe's JaccardOverlap of every pair of boxes (..., k, 4) -> (..., k, k)."""
        a = ops.expand_dims(boxes, -2)
        b = ops.expand_dims(boxes, -3)
        iw = ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0])
        ih = ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1])
        inter = ops.where(ops.logical_and(iw >= 0, ih >= 0), iw * ih, 0.0)

        def size(t):
            w, h = t[..., 2] - t[..., 0], t[..., 3] - t[..., 1]
            return ops.where(ops.logical_or(w < 0, h < 0), 0.0, w * h)

        return inter / (size(a) + size(b) - inter)

    def call(self, inputs):
        loc, conf, priors = inputs
        n_priors = priors.shape[-1] // 4
        n_loc = 1 if self.share_location else self.num_classes
        classes = [c for c in range(self.num_classes) if c != self.background_label_id]
        k = self.top_k
        prior = ops.reshape(priors[0, 0], (1, n_priors, 1, 4))
        var = ops.reshape(priors[0, 1], (1, n_priors, 1, 4))
        boxes = self._decode(ops.reshape(loc, (-1, n_priors, n_loc, 4)), prior, var)  # (N, P, L, 4)
        boxes = ops.transpose(boxes, (0, 2, 1, 3))  # (N, L, P, 4)
        if self.share_location:
            class_boxes = ops.repeat(boxes, len(classes), axis=1)
        else:
            class_boxes = ops.take(boxes, classes, axis=1)
        scores = ops.transpose(ops.reshape(conf, (-1, n_priors, self.num_classes)), (0, 2, 1))
        scores = ops.take(scores, classes, axis=1)  # (N, K, P)
        masked = ops.where(scores > self.confidence_threshold, scores, float("-inf"))
        cand_scores, cand_index = ops.top_k(masked, k)  # stable: ties keep the lower prior first
        cand_boxes = ops.take_along_axis(class_boxes, ops.expand_dims(cand_index, -1), axis=2)
        valid = cand_scores > self.confidence_threshold
        # A box is dropped when some kept box overlaps it by more than the threshold (or by NaN:
        # Caffe keeps only when overlap <= threshold).
        conflict = ops.logical_not(self._overlaps(cand_boxes) <= self.nms_threshold)
        keep = greedy_nms(
            valid, lambda i: ops.take_along_axis(conflict, i[..., None, None], axis=-2)[..., 0, :]
        )
        kept_scores = ops.where(keep, cand_scores, float("-inf"))
        flat_scores = ops.reshape(kept_scores, (-1, len(classes) * k))
        best, best_index = ops.top_k(flat_scores, self.rows)
        big = len(classes) * k
        order = ops.sort(ops.where(best > float("-inf"), best_index, big), axis=-1)
        present = order < big
        order = ops.minimum(order, big - 1)
        label = ops.take(np.asarray(classes, dtype="float32"), order // k)
        score = ops.take_along_axis(flat_scores, order, axis=1)
        flat_boxes = ops.reshape(cand_boxes, (-1, len(classes) * k, 4))
        box = ops.take_along_axis(flat_boxes, ops.expand_dims(order, -1), axis=1)
        image = ops.cast(ops.arange(ops.shape(loc)[0]), "float32")[:, None, None] + ops.zeros_like(box[..., :1])
        rows = ops.concatenate([ops.expand_dims(label, -1), ops.expand_dims(score, -1), box], axis=-1)
        rows = ops.where(ops.expand_dims(present, -1), rows, -1.0)
        return ops.reshape(ops.concatenate([image, rows], axis=-1), (1, 1, -1, 7))

    def compute_output_shape(self, input_shapes):
        n = input_shapes[0][0]
        return (1, 1, None if n is None else n * self.rows, 7)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "share_location": self.share_location,
            "background_label_id": self.background_label_id,
            "code_type": self.code_type,
            "variance_encoded_in_target": self.variance_encoded_in_target,
            "confidence_threshold": self.confidence_threshold,
            "nms_threshold": self.nms_threshold,
            "top_k": self.top_k,
            "keep_top_k": self.keep_top_k,
            "rows": self.rows,
        }


@register
class YoloDetectionOutput(keras.layers.Layer):
    """MobileNet-YOLO's YoloDetectionOutput (YOLO v2 region decoding) for one image, NHWC input
    (1, side, side, num_box * (5 + classes)).

    Each cell (j, i) and anchor n gives x = (i + sigmoid(t0)) / side, y = (j + sigmoid(t1)) / side,
    w = exp(t2) * bias_w / side, h = exp(t3) * bias_h / side and confidence = sigmoid(t4) * the
    highest softmax class score. Boxes with confidence >= threshold, best first, go through
    class-agnostic greedy NMS (dropped when IoU >= ``nms_threshold`` with a kept box). Rows are
    [0, class + 1, confidence, left, top, right, bottom] for the kept boxes, then padding rows
    [0, -1, ..., -1] up to one row per anchor box: the output is (1, 1, side * side * num_box, 7).
    """

    def __init__(self, num_classes, num_box, biases, confidence_threshold, nms_threshold, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_box = int(num_box)
        self.biases = tuple(float(b) for b in biases)
        self.confidence_threshold = float(confidence_threshold)
        self.nms_threshold = float(nms_threshold)

    def call(self, x):
        _, rows_, cols, channels = x.shape
        side = cols  # the layer takes its grid size from the width for both axes
        n_box, per_box = self.num_box, channels // self.num_box
        total = rows_ * cols * n_box
        t = ops.reshape(x[0], (rows_, cols, n_box, per_box))
        j = np.arange(rows_, dtype="float32").reshape(-1, 1, 1)
        i = np.arange(cols, dtype="float32").reshape(1, -1, 1)
        bias = np.asarray(self.biases[: 2 * n_box], dtype="float32").reshape(n_box, 2)
        bx = (i + ops.sigmoid(t[..., 0])) / side
        by = (j + ops.sigmoid(t[..., 1])) / side
        bw = ops.exp(t[..., 2]) * bias[:, 0] / side
        bh = ops.exp(t[..., 3]) * bias[:, 1] / side
        probs = ops.softmax(t[..., 5 : 5 + self.num_classes], axis=-1)
        confidence = ops.sigmoid(t[..., 4]) * ops.max(probs, axis=-1)
        label = ops.cast(ops.argmax(probs, axis=-1), "float32") + 1.0
        flat = [ops.reshape(v, (total,)) for v in (bx, by, bw, bh, confidence, label)]
        bx, by, bw, bh, confidence, label = flat
        masked = ops.where(confidence >= self.confidence_threshold, confidence, -1.0)
        score, order = ops.top_k(masked, total)
        valid = score >= self.confidence_threshold
        bx, by, bw, bh, label = (ops.take(v, order) for v in (bx, by, bw, bh, label))
        # IoU in the layer's centre form: union = w1 h1 + w2 h2 - intersection.
        iw = ops.minimum(bx[:, None] + bw[:, None] / 2, bx[None] + bw[None] / 2) - ops.maximum(
            bx[:, None] - bw[:, None] / 2, bx[None] - bw[None] / 2
        )
        ih = ops.minimum(by[:, None] + bh[:, None] / 2, by[None] + bh[None] / 2) - ops.maximum(
            by[:, None] - bh[:, None] / 2, by[None] - bh[None] / 2
        )
        inter = ops.where(ops.logical_or(iw < 0, ih < 0), 0.0, iw * ih)
        area = bw * bh
        conflict = inter / (area[:, None] + area[None] - inter) >= self.nms_threshold
        keep = greedy_nms(valid, lambda k: ops.take(conflict, k, axis=0))
        return _yolo_rows(keep, ops.arange(total), total, (bx, by, bw, bh, label, score))

    def compute_output_shape(self, s):
        return (1, 1, s[1] * s[2] * self.num_box, 7)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_box": self.num_box,
            "biases": self.biases,
            "confidence_threshold": self.confidence_threshold,
            "nms_threshold": self.nms_threshold,
        }


@register
class Yolov3DetectionOutput(keras.layers.Layer):
    """MobileNet-YOLO's Yolov3DetectionOutput for one image; inputs NHWC (1, S_t, S_t,
    num_box * (5 + classes)), one per scale t.

    Anchor n of scale t uses bias pair ``mask[t * num_box / groups + n]``: x = (col +
    sigmoid(t0)) / S, y = (row + sigmoid(t1)) / S, w = exp(t2) * bias_w / (S * anchors_scale[t]),
    h likewise; every class whose sigmoid(score) * sigmoid(objectness) is above the threshold is a
    candidate. All candidates, best first, go through class-agnostic greedy NMS (dropped when
    IoU >= ``nms_threshold`` with a kept box). Rows [0, class + 1, confidence, left, top, right,
    bottom], padded with [0, -1, ..., -1] to one row per (cell, anchor, class).
    """

    def __init__(self, num_classes, num_box, biases, anchors_scale, mask, confidence_threshold, nms_threshold,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_box = int(num_box)
        self.biases = tuple(float(b) for b in biases)
        self.anchors_scale = tuple(int(a) for a in anchors_scale)
        self.mask = tuple(int(m) for m in mask)
        self.confidence_threshold = float(confidence_threshold)
        self.nms_threshold = float(nms_threshold)

    def _candidates(self, x, t, offset):
        side = x.shape[2]
        n_box, length = self.num_box, 5 + self.num_classes
        v = ops.reshape(x[0], (x.shape[1], side, n_box, length))
        col = np.arange(side, dtype="float32").reshape(1, -1, 1)
        row = np.arange(x.shape[1], dtype="float32").reshape(-1, 1, 1)
        anchors = np.asarray([self.biases[2 * m : 2 * m + 2] for m in self.mask[offset : offset + n_box]], "float32")
        extent = float(side * self.anchors_scale[t])
        boxes = ops.stack(
            [
                (col + ops.sigmoid(v[..., 0])) / side,
                (row + ops.sigmoid(v[..., 1])) / side,
                ops.exp(v[..., 2]) * anchors[:, 0] / extent,
                ops.exp(v[..., 3]) * anchors[:, 1] / extent,
            ],
            axis=-1,
        )
        scores = ops.sigmoid(v[..., 5:]) * ops.sigmoid(v[..., 4:5])
        count = x.shape[1] * side * n_box * self.num_classes
        boxes = ops.reshape(ops.repeat(ops.expand_dims(boxes, -2), self.num_classes, axis=-2), (count, 4))
        labels = np.tile(np.arange(1, self.num_classes + 1, dtype="float32"), count // self.num_classes)
        return boxes, ops.reshape(scores, (count,)), labels

    def call(self, inputs):
        groups = len(self.mask) // len(inputs)
        parts = [self._candidates(x, t, t * groups) for t, x in enumerate(inputs)]
        boxes = ops.concatenate([p[0] for p in parts], axis=0)
        scores = ops.concatenate([p[1] for p in parts], axis=0)
        labels = np.concatenate([p[2] for p in parts])
        total = labels.size
        masked = ops.where(scores > self.confidence_threshold, scores, -1.0)
        score, order = ops.top_k(masked, total)
        valid = score > self.confidence_threshold
        boxes = ops.take(boxes, order, axis=0)
        label = ops.take(ops.convert_to_tensor(labels), order)
        bx, by, bw, bh = (boxes[:, k] for k in range(4))
        position = ops.arange(total)

        def overlaps(k):
            iw = ops.minimum(bx[k] + bw[k] / 2, bx + bw / 2) - ops.maximum(bx[k] - bw[k] / 2, bx - bw / 2)
            ih = ops.minimum(by[k] + bh[k] / 2, by + bh / 2) - ops.maximum(by[k] - bh[k] / 2, by - bh / 2)
            inter = ops.where(ops.logical_or(iw < 0, ih < 0), 0.0, iw * ih)
            return inter / (bw[k] * bh[k] + bw * bh - inter)

        keep = greedy_nms(valid, lambda k: overlaps(k) >= self.nms_threshold)
        return _yolo_rows(keep, position, total, (bx, by, bw, bh, label, score))

    def compute_output_shape(self, input_shapes):
        total = sum(s[1] * s[2] for s in input_shapes) * self.num_box * self.num_classes
        return (1, 1, total, 7)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_box": self.num_box,
            "biases": self.biases,
            "anchors_scale": self.anchors_scale,
            "mask": self.mask,
            "confidence_threshold": self.confidence_threshold,
            "nms_threshold": self.nms_threshold,
        }


def _yolo_rows(keep, position, total, boxes):
    """The kept boxes, in order, as Caffe's (1, 1, total, 7) detection rows
    ``[image, label, score, xmin, ymin, xmax, ymax]``; the rest padded with -1."""
    rank = ops.sort(ops.where(keep, position, total))
    present = rank < total
    rank = ops.minimum(rank, total - 1)
    bx, by, bw, bh, label, score = (ops.take(v, rank) for v in boxes)
    rows = ops.stack([label, score, bx - bw / 2.0, by - bh / 2.0, bx + bw / 2.0, by + bh / 2.0], axis=-1)
    rows = ops.where(present[:, None], rows, -1.0)
    rows = ops.concatenate([ops.zeros_like(rows[:, :1]), rows], axis=-1)
    return ops.reshape(rows, (1, 1, total, 7))
