"""Caffe's loss layers as Keras losses, one class per Caffe type, and the factory reading them.

Each loss takes ``y_pred``, the blob that fed Caffe's loss layer as the model outputs it (4-D
NHWC, other ranks in Caffe's shape), and ``y_true``, what fed the loss layer's second bottom
(labels or targets, in the same layout; class labels in Caffe's order of the positions they
label, which for the usual class axis 1 of an image blob is NHWC's). A loss returns Caffe's
scalar, normalised as Caffe normalises it; the gradient Keras takes of it is Caffe's backward.
``loss_weight`` is the model's ``loss_weights`` entry, as Caffe multiplies the top's diff by it.
"""

import math

import keras
import numpy as np
from keras import ops

from .errors import ConversionError
from .layout import NHWC_AXIS, canonical
from .schema import caffe_pb2, float32_value

register = keras.saving.register_keras_serializable(package="caffe2keras")

# Caffe clips the probability of the true class at FLT_MIN (SoftmaxWithLoss) or at 1e-20
# (MultinomialLogisticLoss) in the loss value; its backward does not see the clip.
FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_THRESHOLD = 1e-20
NORMALIZATIONS = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def _normalize(total, mode, outer, count, valid):
    """Caffe's LossLayer::GetNormalizer applied to ``total``: at least 1, so a batch whose labels
    are all ignored gives 0, not NaN."""
    if mode == "FULL":
        normalizer = count
    elif mode == "VALID":
        normalizer = valid
    elif mode == "BATCH_SIZE":
        normalizer = outer
    else:
        normalizer = 1.0
    return total / ops.maximum(ops.cast(normalizer, total.dtype), 1.0)


def _value_clipped(loss, ceiling):
    """``loss`` capped at ``ceiling`` in value only: the gradient stays the uncapped one."""
    return loss + ops.stop_gradient(ops.minimum(loss, ceiling) - loss)


class CaffeLoss(keras.losses.Loss):
    """Base: a Caffe loss is a scalar already, so Keras' reduction has nothing left to do."""

    def __init__(self, name=None, **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", **kwargs)

    def _batch(self, y_pred):
        return ops.cast(ops.shape(y_pred)[0], y_pred.dtype)


@register
class SoftmaxWithLoss(CaffeLoss):
    """``-sum(log softmax(y_pred)[label]) / normalizer`` over the class axis.

    ``perm`` moves the class axis last with the other axes in Caffe's order; ``positions`` is
    how many label positions one batch item has before the class axis (Caffe's outer count per
    item), used by BATCH_SIZE normalisation. Labels equal to ``ignore_label`` count for nothing.
    """

    def __init__(self, perm, positions=1, ignore_label=None, normalization="VALID", **kwargs):
        super().__init__(**kwargs)
        self.perm = [int(a) for a in perm]
        self.positions = int(positions)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.normalization = normalization

    def call(self, y_true, y_pred):
        logits = ops.transpose(y_pred, self.perm)
        classes = ops.shape(logits)[-1]
        logits = ops.reshape(logits, (-1, classes))
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        valid = labels != self.ignore_label if self.ignore_label is not None else ops.ones_like(labels, "bool")
        log_prob = ops.log_softmax(logits, axis=-1)
        picked = ops.take_along_axis(log_prob, ops.expand_dims(ops.where(valid, labels, 0), -1), axis=-1)[:, 0]
        nll = _value_clipped(-picked, -math.log(FLT_MIN))
        total = ops.sum(ops.where(valid, nll, 0.0))
        return _normalize(
            total,
            self.normalization,
            outer=self._batch(y_pred) * self.positions,
            count=ops.shape(labels)[0],
            valid=ops.sum(ops.cast(valid, y_pred.dtype)),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "perm": self.perm,
            "positions": self.positions,
            "ignore_label": self.ignore_label,
            "normalization": self.normalization,
        }


@register
class EuclideanLoss(CaffeLoss):
    """``sum((y_pred - y_true)^2) / N / 2``."""

    def call(self, y_true, y_pred):
        return ops.sum(ops.square(y_pred - y_true)) / self._batch(y_pred) / 2.0


@register
class SigmoidCrossEntropyLoss(CaffeLoss):
    """Cross-entropy of ``sigmoid(y_pred)`` against targets in [0, 1], computed stably from the
    logits: ``-sum(x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0]))) / normalizer``.

    ``ignore_label`` and ``normalization`` are BVLC master's (default BATCH_SIZE: divide by N).
    """

    def __init__(self, ignore_label=None, normalization="BATCH_SIZE", **kwargs):
        super().__init__(**kwargs)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.normalization = normalization

    def call(self, y_true, y_pred):
        x = ops.reshape(y_pred, (-1,))
        t = ops.reshape(y_true, (-1,))
        positive = ops.cast(x >= 0, x.dtype)
        per_value = -(x * (t - positive) - ops.log1p(ops.exp(x - 2.0 * x * positive)))
        if self.ignore_label is not None:
            valid = ops.cast(ops.cast(t, "int32") != self.ignore_label, x.dtype)
        else:
            valid = ops.ones_like(x)
        total = ops.sum(per_value * valid)
        return _normalize(total, self.normalization, outer=self._batch(y_pred), count=ops.shape(x)[0],
                          valid=ops.sum(valid))

    def get_config(self):
        return {**super().get_config(), "ignore_label": self.ignore_label, "normalization": self.normalization}


@register
class HingeLoss(CaffeLoss):
    """One-vs-all hinge over the values of each item: ``sum(max(0, 1 - s x)^p) / N`` with
    ``s = +1`` at the label and ``-1`` elsewhere, ``p`` 1 (L1) or 2 (L2)."""

    def __init__(self, norm="L1", **kwargs):
        super().__init__(**kwargs)
        self.norm = norm

    def call(self, y_true, y_pred):
        x = ops.reshape(y_pred, (ops.shape(y_pred)[0], -1))
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        sign = 1.0 - 2.0 * ops.one_hot(labels, ops.shape(x)[1], dtype=x.dtype)
        margin = ops.relu(1.0 + sign * x)
        total = ops.sum(margin) if self.norm == "L1" else ops.sum(ops.square(margin))
        return total / self._batch(y_pred)

    def get_config(self):
        return {**super().get_config(), "norm": self.norm}


@register
class MultinomialLogisticLoss(CaffeLoss):
    """``-sum(log(max(y_pred[label], 1e-20))) / N`` for probabilities ``y_pred``."""

    def call(self, y_true, y_pred):
        p = ops.reshape(y_pred, (ops.shape(y_pred)[0], -1))
        labels = ops.cast(ops.reshape(y_true, (-1, 1)), "int32")
        picked = ops.take_along_axis(p, labels, axis=-1)[:, 0]
        # Caffe's backward divides by the clipped probability: clip the value, keep d/dp = -1/p'.
        safe = picked + ops.stop_gradient(ops.maximum(picked, LOG_THRESHOLD) - picked)
        return -ops.sum(ops.log(safe)) / self._batch(y_pred)


# The loss types with a Keras loss here; each reads two bottoms, the prediction and the label.
LOSS_TYPES = ("EuclideanLoss", "HingeLoss", "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "SoftmaxWithLoss")


def _normalization(layer, default):
    """Caffe's choice: ``normalization`` if set, else the legacy ``normalize`` flag (true:
    VALID, false: BATCH_SIZE), else the layer's default."""
    lp = layer.loss_param
    if lp.HasField("normalization"):
        return caffe_pb2.LossParameter.NormalizationMode.Name(lp.normalization)
    if lp.HasField("normalize"):
        return "VALID" if lp.normalize else "BATCH_SIZE"
    return default


def loss_weight(layer):
    """The weight of a loss layer's first top (Caffe: 1 unless ``loss_weight`` says otherwise)."""
    return float32_value(layer.loss_weight[0]) if layer.loss_weight else 1.0


def check_supported(layer, path=None):
    """Refuse a loss layer this module has no Keras loss for, naming it."""
    if layer.type not in LOSS_TYPES:
        known = ", ".join(LOSS_TYPES)
        raise ConversionError(f"{layer.type} cannot be trained in Keras by this converter (supported losses: "
                              f"{known})", file=path, layer=layer.name)
    if layer.loss_param.weight_by_label_freqs or layer.loss_param.class_weighting:
        raise ConversionError("SegNet's class weighting of the loss is not supported for training", file=path,
                              layer=layer.name)


def from_layer(layer, pred_shape, path=None):
    """The Keras loss for Caffe loss ``layer`` whose prediction blob has Caffe shape ``pred_shape``."""
    check_supported(layer, path)
    lp = layer.loss_param
    ignore = int(lp.ignore_label) if lp.HasField("ignore_label") else None
    name = layer.name.replace("/", "_")
    if layer.type == "SoftmaxWithLoss":
        rank = len(pred_shape)
        axis = layer.softmax_param.axis % rank
        keras_axis = NHWC_AXIS if canonical(pred_shape) == "nhwc" else tuple(range(rank))
        perm = [keras_axis[a] for a in range(rank) if a != axis] + [keras_axis[axis]]
        return SoftmaxWithLoss(perm, positions=math.prod(pred_shape[1:axis]), ignore_label=ignore,
                               normalization=_normalization(layer, "VALID"), name=name)
    if layer.type == "EuclideanLoss":
        return EuclideanLoss(name=name)
    if layer.type == "SigmoidCrossEntropyLoss":
        return SigmoidCrossEntropyLoss(ignore_label=ignore, normalization=_normalization(layer, "BATCH_SIZE"), name=name)
    if layer.type == "HingeLoss":
        norm = caffe_pb2.HingeLossParameter.Norm.Name(layer.hinge_loss_param.norm)
        return HingeLoss(norm=norm, name=name)
    return MultinomialLogisticLoss(name=name)
