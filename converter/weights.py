"""Caffe blob → Keras weight transforms, one function per kind of parameter.

Caffe and TensorFlow both compute cross-correlation, so convolution kernels are only re-laid
out, never rotated (the Theano-era GoogLeNet port rotated them because Theano convolved).

Big kernels are re-laid out with exactly one copy: blobs arrive as read-only views of the
memory-mapped caffemodel, are read once in blocks (each block's file pages released once
copied), and land in a new 64-byte aligned array that :func:`variable_value` hands to
TensorFlow without a further copy.
"""

import math
import mmap
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import caffemodel

# Output channels per block of the kernel re-layout: a block's source rows are contiguous in the
# file and few enough that the strided reads of a tile stay within the CPU's caches and TLB.
BLOCK = 16
# Source elements per tile row: (input channels per tile) x (kernel positions).
TILE = 4096
# TensorFlow's CPU kernels require tensors aligned to 64 bytes (Eigen's AVX-512 alignment).
ALIGN = 64
# Kernels from this size on are re-laid out by several threads (VGG16's fc6: 0.53 s → 0.37 s on 2 cores).
THREADED_FROM = 16 << 20
THREADS = min(os.cpu_count() or 1, 4)
# From this size on numpy asks for transparent huge pages, whose compaction stalls first-touch
# for seconds on a busy machine; plain anonymous pages fault in at a steady rate.
MAPPED_FROM = 4 << 20


def aligned_empty(shape, dtype=np.float32):
    """An uninitialised, writable C-contiguous array whose data starts on an ``ALIGN``-byte
    boundary (big ones in their own anonymous memory map, page-aligned)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes >= MAPPED_FROM and hasattr(mmap, "MAP_ANONYMOUS"):
        memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        return np.frombuffer(memory, dtype=dtype).reshape(shape)
    raw = np.empty(nbytes + ALIGN, np.uint8)
    offset = -raw.ctypes.data % ALIGN
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def variable_value(array):
    """``array`` as a value for a Keras variable: on TensorFlow an aligned, writable,
    C-contiguous array is shared with the tensor (DLPack), so the variable adopts the converted
    kernel instead of copying it; anything else is returned as is, for Keras to convert."""
    import keras

    if (
        keras.backend.backend() != "tensorflow"
        or not array.flags.c_contiguous
        or not array.flags.writeable
        or array.ctypes.data % ALIGN
    ):
        return array
    import tensorflow as tf

    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _hwio(w):
    """Caffe-ordered (O, I, H, W) → a new aligned (H, W, I, O) array, read block by block of O."""
    o, i, h, wd = w.shape
    positions = h * wd
    out = aligned_empty((h, wd, i, o), np.float32)
    src = w.reshape(o, i, positions)
    dst = out.reshape(positions, i, o)
    per_tile = max(1, TILE // positions)

    def copy_block(o0):
        block = src[o0 : o0 + BLOCK]
        for i0 in range(0, i, per_tile):
            dst[:, i0 : i0 + per_tile, o0 : o0 + BLOCK] = block[:, i0 : i0 + per_tile].transpose(2, 1, 0)
        caffemodel.release(block)

    starts = range(0, o, BLOCK)
    if out.nbytes < THREADED_FROM or THREADS < 2:
        for o0 in starts:
            copy_block(o0)
    else:
        # numpy copies without holding the GIL and the blocks are disjoint: cores share them.
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(copy_block, starts))
    return out


def fit_blobs(layer_type, blobs, expected):
    """A layer's caffemodel ``blobs`` in the ``expected`` shapes (see
    :func:`caffe2keras.types.learned_shapes`; None accepts any shape, and the blob may be
    absent). A blob holding the same data in a legacy 4-D shape, as V1 caffemodels store an
    InnerProduct weight (1x1xNxK), is reshaped. Raises ValueError saying what disagrees."""
    problem = blob_problem(layer_type, [b.shape for b in blobs], expected)
    if problem:
        raise ValueError(problem)
    return [b if shape is None or b.shape == tuple(shape) else b.reshape(shape) for b, shape in zip(blobs, expected)]


def blob_problem(layer_type, held, expected):
    """What keeps blobs of the shapes ``held`` from being the layer's ``expected`` ones, or None
    (see :func:`fit_blobs`)."""
    required = sum(1 for s in expected if s is not None)
    if len(held) < required or len(held) > len(expected):
        return f"caffemodel holds {len(held)} blob(s) for this {layer_type} layer, the prototxt implies {required}"
    for i, (shape, want) in enumerate(zip(held, expected)):
        if want is None or tuple(shape) == tuple(want):
            continue
        squeezed = [d for d in shape if d != 1]
        if math.prod(shape) != math.prod(want) or squeezed != [d for d in want if d != 1]:
            return f"blob {i} has shape {list(shape)} in the caffemodel, the prototxt implies {list(want)}"
    return None


def conv_kernel(w):
    """Caffe (out, in/group, kh, kw) → Keras Conv2D (kh, kw, in/group, out)."""
    return _hwio(w)


def depthwise_kernel(w, in_channels):
    """Caffe (in*mult, 1, kh, kw) with output c*mult+m → Keras DepthwiseConv2D (kh, kw, in, mult)."""
    out, _, kh, kw = w.shape
    mult = out // in_channels
    return np.ascontiguousarray(w.reshape(in_channels, mult, kh, kw).transpose(2, 3, 0, 1))


def deconv_kernel(w):
    """Caffe Deconvolution (in, out/group, kh, kw) → our Deconvolution (kh, kw, out/group, in)."""
    return _hwio(w)


def dense_kernel(w, transpose=False, chw=None):
    """Caffe InnerProduct weight → Keras Dense kernel (inputs, outputs).

    Caffe stores (outputs, inputs), or (inputs, outputs) with ``transpose: true``. ``chw`` is the
    (C, H, W) of a 4-D bottom that Keras flattens in H, W, C order: the input axis is reordered
    to match, so no transpose of the activations is needed.
    """
    c, h, wd = chw if chw is not None else (w.shape[0 if transpose else 1], 1, 1)
    if not transpose:
        # (out, C, H, W) → (H, W, C, out) is the convolution kernel re-layout.
        return _hwio(w.reshape(w.shape[0], c, h, wd)).reshape(c * h * wd, -1)
    kernel = aligned_empty(w.shape, np.float32)
    kernel.reshape(h, wd, c, -1)[...] = w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3)
    caffemodel.release(w)
    return kernel


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
