"""Element-wise layers: activations, Power/Exp/Log, Threshold, Dropout.

They work in whatever layout their bottom has, so they never cause a transpose.
"""

from .._lazy import keras, layers
from ..shapes import channelwise_legacy, same_shape
from ..spec import Learned, register


def _same_layout(layer, x):
    return [(layer(x.value), x.layout)]


# Types Keras' own activation computes as Caffe does: BNLL's log(1 + exp(x)), computed stably, is
# softplus; the forks' Mish, x * tanh(log(1 + exp(x))), is mish.
KERAS_ACTIVATIONS = {"Sigmoid": "sigmoid", "TanH": "tanh", "BNLL": "softplus", "Mish": "mish"}
# Types without parameters computed by the custom layer of their name (GELU: the forks' tanh
# approximation, which Keras' Activation("gelu") is not).
PARAMETERLESS = ("AbsVal", "HardSwish", "GELU")


def _keras_activation(activation):
    def translate(ctx, node, inputs):
        return _same_layout(keras.layers.Activation(activation, name=ctx.name(node)), inputs[0])

    return translate


def _parameterless(layer_class):
    def translate(ctx, node, inputs):
        return _same_layout(getattr(layers, layer_class)(name=ctx.name(node)), inputs[0])

    return translate


for caffe_type, activation in KERAS_ACTIVATIONS.items():
    register(caffe_type, shape=same_shape, any_size=True)(_keras_activation(activation))
for caffe_type in PARAMETERLESS:
    register(caffe_type, shape=same_shape, any_size=True)(_parameterless(caffe_type))


@register("ReLU", shape=same_shape, any_size=True)
def relu(ctx, node, inputs):
    slope = node.param.relu_param.negative_slope
    if slope < 0:
        # Valid in Caffe, refused by Keras' LeakyReLU.
        layer = layers.NegativeSlopeReLU(slope, name=ctx.name(node))
    elif slope:
        layer = keras.layers.LeakyReLU(negative_slope=slope, name=ctx.name(node))
    else:
        layer = keras.layers.ReLU(name=ctx.name(node))
    return _same_layout(layer, inputs[0])


@register("ReLU6", shape=same_shape, any_size=True)
def relu6(ctx, node, inputs):
    # min(max(x, 0) + negative_slope * min(x, 0), 6); the slope is in relu6_param (MobileNet-YOLO
    # and the oracle's fork) or relu_param (NVIDIA's fork).
    p = node.param
    slope = (p.relu6_param if p.HasField("relu6_param") else p.relu_param).negative_slope
    if slope < 0:
        layer = layers.NegativeSlopeReLU(slope, max_value=6.0, name=ctx.name(node))
    else:
        layer = keras.layers.ReLU(max_value=6.0, negative_slope=slope, name=ctx.name(node))
    return _same_layout(layer, inputs[0])


def learned_prelu(node, bottoms, held=None):
    channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
    return [Learned("slope", (1,) if node.param.prelu_param.channel_shared else (channels,))]


@register("PReLU", shape=channelwise_legacy, learned=learned_prelu, any_size=True)
def prelu(ctx, node, inputs):
    x = inputs[0]
    p = node.param.prelu_param
    channel_axis = x.axis(1) if x.rank > 1 else None
    shared = [a for a in range(1, x.rank) if p.channel_shared or a != channel_axis]
    layer = keras.layers.PReLU(shared_axes=shared or None, name=ctx.name(node))
    alpha = tuple(1 if a in shared else x.keras_shape[a] for a in range(1, x.rank))
    y = ctx.bind(node, layer, x.value, lambda blobs: {"alpha": blobs["slope"].reshape(alpha)})
    return [(y, x.layout)]


@register("ELU", shape=same_shape, any_size=True)
def elu(ctx, node, inputs):
    return _same_layout(keras.layers.ELU(alpha=node.param.elu_param.alpha, name=ctx.name(node)), inputs[0])


@register("Power", shape=same_shape, any_size=True)
def power(ctx, node, inputs):
    p = node.param.power_param
    return _same_layout(layers.Power(p.power, p.scale, p.shift, name=ctx.name(node)), inputs[0])


@register("Exp", shape=same_shape, any_size=True)
def exp(ctx, node, inputs):
    p = node.param.exp_param
    return _same_layout(layers.Exp(p.base, p.scale, p.shift, name=ctx.name(node)), inputs[0])


@register("Log", shape=same_shape, any_size=True)
def log(ctx, node, inputs):
    p = node.param.log_param
    return _same_layout(layers.Log(p.base, p.scale, p.shift, name=ctx.name(node)), inputs[0])


@register("Threshold", shape=same_shape, any_size=True)
def threshold(ctx, node, inputs):
    return _same_layout(layers.Threshold(node.param.threshold_param.threshold, name=ctx.name(node)), inputs[0])


@register("Clip", shape=same_shape, any_size=True)
def clip(ctx, node, inputs):
    p = node.param.clip_param
    return _same_layout(layers.Clip(p.min, p.max, name=ctx.name(node)), inputs[0])


@register("Swish", shape=same_shape, any_size=True)
def swish(ctx, node, inputs):
    return _same_layout(layers.Swish(node.param.swish_param.beta, name=ctx.name(node)), inputs[0])


@register("HardSigmoid", shape=same_shape, any_size=True)
def hard_sigmoid(ctx, node, inputs):
    p = node.param.hardsigmoid_param
    return _same_layout(layers.HardSigmoid(p.alpha, p.beta, name=ctx.name(node)), inputs[0])


@register("Dropout", shape=same_shape, any_size=True)
def dropout(ctx, node, inputs):
    p = node.param.dropout_param
    if not p.scale_train:
        # Without scale_train Caffe scales by (1 - ratio) at test time instead of at training.
        layer = layers.UnscaledDropout(p.dropout_ratio, name=ctx.name(node))
    elif 0 <= p.dropout_ratio < 1:
        layer = keras.layers.Dropout(p.dropout_ratio, name=ctx.name(node))
    else:
        # A ratio Keras cannot train with; at inference Caffe passes the input through.
        layer = keras.layers.Identity(name=ctx.name(node))
    return _same_layout(layer, inputs[0])
