"""Spatial layers without weights: Pooling and LRN."""

from .._lazy import keras, layers
from ..shapes import fixed_size, free, pool_ceil, pool_geometry, same_4d, same_is_caffe
from ..spec import register


def shape_pooling(node, bottoms):
    _, _, _, out = pool_geometry(node.param.pooling_param, bottoms[0])
    n, c = bottoms[0][:2]
    tops = [(n, c) + out]
    if len(node.param.top) > 1 and free(*out):
        raise fixed_size("Pooling with a mask top", "its unpooling layer writes into a map of one size")
    return tops * len(node.param.top)  # a second top is the MAX argmax mask


@register("Pooling", shape=shape_pooling, any_size=True)
def pooling(ctx, node, inputs):
    p = node.param.pooling_param
    x = inputs[0]
    kind = p.PoolMethod.Name(p.pool)
    if kind not in ("MAX", "AVE"):
        raise ctx.fail(node, f"{kind} pooling is not supported (only MAX and AVE)")
    kernel, stride, pad, out_hw = pool_geometry(p, x.shape)
    value = ctx.canonical(x, node)
    in_hw = tuple(x.shape[2:])
    if len(node.tops) > 1:
        # SegNet/ENet: the second top is the argmax mask their Upsample layers unpool with.
        if kind != "MAX":
            raise ctx.fail(node, "only MAX pooling has a mask top")
        layer = layers.MaxPoolingWithMask(kernel, stride, pad, in_hw, out_hw, name=ctx.name(node))
        return layer(value)
    if p.global_pooling or (kernel == in_hw and out_hw == (1, 1) and not any(pad)):
        if kind == "MAX":
            return [keras.layers.GlobalMaxPooling2D(keepdims=True, name=ctx.name(node))(value)]
        if free(*in_hw):  # no fixed window to sum in Caffe's order (below): a mean, as close as floats go
            return [keras.layers.GlobalAveragePooling2D(keepdims=True, name=ctx.name(node))(value)]
        # Caffe sums a window in row-major order, one value after another, then divides; so does
        # TensorFlow's average pool (bit for bit), where a global mean reduces in another order.
        # Squeeze-and-excitation gates amplify that rounding difference ~50x (SE-ResNet-50).
        return [keras.layers.AveragePooling2D(pool_size=in_hw, name=ctx.name(node))(value)]
    if free(*in_hw):
        # Floor rounding, or stride 1, makes Caffe's count VALID's at every size.
        valid = not any(pad) and (not pool_ceil(p) or stride == (1, 1))
    else:
        valid = not any(pad) and out_hw == tuple((s - k) // st + 1 for s, k, st in zip(in_hw, kernel, stride))
    if valid:
        # No padding and no ceil overhang: Caffe's windows are exactly Keras' VALID windows.
        cls = keras.layers.MaxPooling2D if kind == "MAX" else keras.layers.AveragePooling2D
        return [cls(pool_size=kernel, strides=stride, padding="valid", name=ctx.name(node))(value)]
    if same_is_caffe(in_hw, kernel, stride, pad, out_hw) and (kind == "MAX" or not any(pad)):
        # SAME windows are Caffe's here: padding never wins a max, and without Caffe pads an
        # average's divisor counts the same in-image values as TensorFlow's.
        cls = keras.layers.MaxPooling2D if kind == "MAX" else keras.layers.AveragePooling2D
        return [cls(pool_size=kernel, strides=stride, padding="same", name=ctx.name(node))(value)]
    layer = layers.CaffePooling2D(
        pool=kind.lower(), kernel=kernel, stride=stride, pad=pad, input_hw=in_hw, output_hw=out_hw, ceil=pool_ceil(p),
        name=ctx.name(node),
    )
    return [layer(value)]


@register("LRN", shape=same_4d, any_size=True)
def lrn(ctx, node, inputs):
    p = node.param.lrn_param
    if p.local_size % 2 == 0:
        raise ctx.fail(node, f"LRN local_size must be odd, got {p.local_size}")
    region = "across" if p.norm_region == p.ACROSS_CHANNELS else "within"
    layer = layers.LRN(local_size=p.local_size, alpha=p.alpha, beta=p.beta, k=p.k, region=region, name=ctx.name(node))
    return [layer(ctx.canonical(inputs[0], node))]
