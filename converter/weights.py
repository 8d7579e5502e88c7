"""Caffe blob → Keras weight transforms, one function per kind of parameter.

Caffe and TensorFlow both compute cross-correlation, so convolution kernels are only re-laid
out, never rotated (the Theano-era GoogLeNet port rotated them because Theano convolved).
"""

import numpy as np


def conv_kernel(w):
    """Caffe (out, in/group, kh, kw) → Keras Conv2D (kh, kw, in/group, out)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def depthwise_kernel(w, in_channels):
    """Caffe (in*mult, 1, kh, kw) with output c*mult+m → Keras DepthwiseConv2D (kh, kw, in, mult)."""
    out, _, kh, kw = w.shape
    mult = out // in_channels
    return np.ascontiguousarray(w.reshape(in_channels, mult, kh, kw).transpose(2, 3, 0, 1))


def deconv_kernel(w):
    """Caffe Deconvolution (in, out/group, kh, kw) → our Deconvolution (kh, kw, out/group, in)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def dense_kernel(w, transpose=False, chw=None):
    """Caffe InnerProduct weight → Keras Dense kernel (inputs, outputs).

    Caffe stores (outputs, inputs), or (inputs, outputs) with ``transpose: true``. ``chw`` is the
    (C, H, W) of a 4-D bottom that Keras flattens in H, W, C order: the input axis is reordered
    to match, so no transpose of the activations is needed.
    """
    kernel = w if transpose else w.T
    if chw is not None:
        c, h, wd = chw
        kernel = kernel.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)
    return np.ascontiguousarray(kernel)


def batchnorm_stats(mean, variance, factor):
    """Caffe BatchNorm keeps running sums: the statistics are the blobs divided by the scale factor
    (third blob), or zero when it is zero."""
    f = float(factor.reshape(-1)[0]) if factor is not None and factor.size else 1.0
    scale = 0.0 if f == 0 else 1.0 / f
    return (mean * scale).astype(np.float32), (variance * scale).astype(np.float32)


def broadcast_param(param, axes, keras_axes, keras_rank):
    """A parameter spanning Caffe ``axes`` (in that order) laid out for broadcasting against a
    tensor of ``keras_rank`` axes, where ``keras_axes[i]`` is the Keras position of ``axes[i]``;
    the batch axis is left out."""
    order = np.argsort(keras_axes)
    p = param.reshape([param.shape[i] if i < param.ndim else 1 for i in range(len(axes))])
    p = p.transpose(order)
    shape = [1] * (keras_rank - 1)
    for k, size in zip(sorted(keras_axes), p.shape):
        shape[k - 1] = size
    return np.ascontiguousarray(p.reshape(shape))
