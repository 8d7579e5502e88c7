"""Normalisation and affine layers: LRN, MVN, BatchNorm, the BN forks' batch-statistics mode, SSD's
Normalize, Scale/Bias with learned parameters or by a second bottom.
"""

import keras
from keras import ops

from .base import ShapePreserving, register


@register
class LRN(keras.layers.Layer):
    """Caffe local response normalisation (NHWC).

    ACROSS_CHANNELS: ``y = x / (k + alpha/n * sum_{window of n channels} x^2) ^ beta``.
    WITHIN_CHANNEL: ``y = x / (1 + alpha * mean_{n x n zero-padded window} x^2) ^ beta`` — Caffe
    builds it from an AVE pool and a Power layer with shift 1, so ``k`` plays no part.

    Args:
        local_size, alpha, beta, k: Caffe's ``lrn_param``.
        region: ``"across"`` (ACROSS_CHANNELS) or ``"within"`` (WITHIN_CHANNEL).
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


@register
class MVN(ShapePreserving):
    """Caffe mean-variance normalisation over ``axes``: ``y = (x - mean) / (std + eps)``
    (Caffe adds eps after the square root), or only ``x - mean``.

    Args:
        axes: the axes the statistics span (Caffe's ``across_channels`` adds the channels).
        normalize_variance, eps: Caffe's ``mvn_param``.
    """

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

    Args:
        axis: the channel axis in this tensor's layout.
        eps, moving_average_fraction, use_global_stats: Caffe's ``batch_norm_param``.
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
class BatchStatsNorm(ShapePreserving):
    """SegNet/ENet BN in LEARN mode, which normalises by the statistics of the batch it is given,
    even at test time: ``y = scale * (x - E[x]) / sqrt(E[x^2] - E[x]^2 + eps) + shift`` over N, H, W.

    Args:
        eps: the fork's ``bn_param.eps``.
    """

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
class Normalize(ShapePreserving):
    """SSD's Normalize (NHWC): ``y = x / sqrt(sum x^2 + eps) * scale``, the sum over the channels
    of each pixel, or over the whole sample with ``across_spatial``; one scale for all channels
    with ``channel_shared``.

    Args:
        across_spatial, channel_shared, eps: SSD's ``norm_param``.
    """

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


@register
class ChannelAffine(ShapePreserving):
    """Caffe Scale and Bias with learned parameters: ``y = x * scale + bias`` broadcast over the
    axes the parameter does not span. ``param_shape`` is the parameter's broadcast shape in this
    tensor's layout, without the batch axis.

    Args:
        param_shape: the parameter's broadcast shape, without the batch axis.
        use_scale, use_bias: which of ``scale`` and ``bias`` the layer holds.
    """

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
    -1 for a batch axis) inserts the broadcast axes.

    Args:
        op: ``"mul"`` (Scale) or ``"add"`` (Bias).
        perm: the axis order taking ``b`` into ``x``'s.
        shape: ``b``'s shape with the broadcast axes inserted.
    """

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
