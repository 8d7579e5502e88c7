"""Element-wise layers: Power, Exp, Log, AbsVal, ReLU with a slope, Threshold, Clip, Swish, GELU,
the hard sigmoid and swish, and Caffe's unscaled Dropout.
"""

import math

import keras
from keras import ops

from .base import ShapePreserving, register


@register
class Power(ShapePreserving):
    """Caffe Power: ``y = (shift + scale * x) ^ power``.

    Args:
        power, scale, shift: Caffe's ``power_param``.
    """

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
    """Base for Caffe's Exp and Log, which share (base, scale, shift); base -1 means e.

    Args:
        base: the base; -1 (Caffe's default) for e.
        scale, shift: as in the formula.
    """

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
    capped at ``max_value`` when given (ReLU6).

    Args:
        negative_slope: Caffe's ``relu_param.negative_slope``.
        max_value: the cap (6 for ReLU6), or None.
    """

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
    """Caffe Threshold: ``y = 1 if x > threshold else 0``.

    Args:
        threshold: Caffe's ``threshold_param.threshold``.
    """

    def __init__(self, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def call(self, x):
        return ops.cast(ops.greater(x, self.threshold), x.dtype)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@register
class Clip(ShapePreserving):
    """Caffe Clip: ``y = min(max(x, min), max)``.

    Args:
        min_value, max_value: Caffe's ``clip_param`` min and max.
    """

    def __init__(self, min_value, max_value, **kwargs):
        super().__init__(**kwargs)
        self.min_value, self.max_value = float(min_value), float(max_value)

    def call(self, x):
        return ops.clip(x, self.min_value, self.max_value)

    def get_config(self):
        return {**super().get_config(), "min_value": self.min_value, "max_value": self.max_value}


@register
class Swish(ShapePreserving):
    """Caffe Swish: ``y = x * sigmoid(beta * x)``.

    Args:
        beta: Caffe's ``swish_param.beta``.
    """

    def __init__(self, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = float(beta)

    def call(self, x):
        return x * ops.sigmoid(self.beta * x)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@register
class GELU(ShapePreserving):
    """The Caffe forks' GELU, the tanh approximation:
    ``y = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))``. No arguments (Keras'
    ``Activation("gelu")`` is the erf form, 4.7e-4 away)."""

    def call(self, x):
        return 0.5 * x * (1.0 + ops.tanh(0.7978845608 * (x + 0.044715 * x * x * x)))


@register
class HardSigmoid(ShapePreserving):
    """``y = clip(alpha * x + beta, 0, 1)``.

    Args:
        alpha, beta: the fork's ``hardsigmoid_param`` (0.2 and 0.5 unset).
    """

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
class UnscaledDropout(ShapePreserving):
    """Caffe's Dropout with ``scale_train: false``: training keeps each value with probability
    ``1 - rate`` unscaled; inference multiplies by ``1 - rate`` instead.

    Args:
        rate: Caffe's ``dropout_ratio``.
        seed: the training mask's seed, or None.
    """

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
