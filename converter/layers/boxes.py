"""What the detection layers share: greedy non-maximum suppression and the intersection over union of
boxes.
"""

import numpy as np
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


def greedy_nms_matrix(candidates, conflict):
    """The boxes :func:`greedy_nms` keeps, from the whole (..., K, K) bool ``conflict`` of boxes
    sorted best first (``conflict[..., j, i]``: box j, once kept, removes box i), in a few loop
    steps where :func:`greedy_nms` takes one per kept box.

    The sequential pass keeps box i when it is a candidate and no earlier kept box removes it:
    a system that fixes each box from the earlier ones alone, so it has one solution, and the
    step ``keep ← candidates ∧ ¬(earlier kept boxes remove it)``, from any start, is right on
    one more leading box each time. So the first step that changes nothing has reached the
    sequential pass's answer: after at most K + 1 steps, in practice after as many as the
    longest chain of boxes that each remove the next one, plus one.
    """
    size = candidates.shape[-1]
    earlier = np.triu(np.ones((size, size), dtype=bool), 1)  # [j, i]: j comes before i
    removes = ops.cast(ops.logical_and(conflict, earlier), "float32")

    def step(keep):
        # A sum of 0s and 1s is > 0 exactly when one term is 1, however it is rounded.
        hits = ops.matmul(ops.expand_dims(ops.cast(keep, "float32"), -2), removes)[..., 0, :]
        return ops.logical_and(candidates, hits <= 0)

    def changed(keep, previous):
        return ops.any(ops.not_equal(keep, previous))

    def body(keep, previous):
        return step(keep), keep

    keep, _ = ops.while_loop(changed, body, (step(candidates), candidates))
    return keep


def box_area(x1, y1, x2, y2, pixel=0.0):
    """``w * h`` with ``w = x2 - x1 + pixel`` and ``h = y2 - y1 + pixel``, 0 when a side is negative
    (SSD's BBoxSize). ``pixel`` 1 is py-faster-rcnn's convention, a side counting both end pixels."""
    w, h = x2 - x1, y2 - y1
    if pixel:
        w, h = w + pixel, h + pixel
    return ops.where(ops.logical_or(w < 0, h < 0), 0.0, w * h)


def iou(a, b, areas=None, pixel=0.0):
    """Intersection over union of boxes ``a`` and ``b``, each a tuple (x1, y1, x2, y2) of tensors
    that broadcast together: ``inter / (area_a + area_b - inter)``, ``inter`` the overlap's area (0
    when the boxes are apart along an axis). The formula of SSD's JaccardOverlap, YOLO's box_iou
    and py-faster-rcnn's nms (``pixel`` 1, as :func:`box_area`); ``areas`` (area_a, area_b) are
    given when the layer computes them its own way (YOLO: its boxes' w * h)."""
    iw = ops.minimum(a[2], b[2]) - ops.maximum(a[0], b[0])
    ih = ops.minimum(a[3], b[3]) - ops.maximum(a[1], b[1])
    if pixel:
        iw, ih = iw + pixel, ih + pixel
    inter = ops.where(ops.logical_or(iw < 0, ih < 0), 0.0, iw * ih)
    area_a, area_b = areas if areas is not None else (box_area(*a, pixel=pixel), box_area(*b, pixel=pixel))
    return inter / (area_a + area_b - inter)
