"""What the detection layers share: greedy non-maximum suppression and the intersection over union of
boxes.
"""

from keras import ops


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
