"""Two-stage detectors: the region proposal layer (py-faster-rcnn's Python ``ProposalLayer`` and
the fork type ``Proposal``), ROIPooling (Fast/Faster R-CNN) and PSROIPooling (R-FCN).

Other Python layers run arbitrary code, and Mask R-CNN's ROIAlign is not supported: both are
refused with a remedy (:func:`refusal`).
"""

import math
from dataclasses import dataclass

from .._lazy import layers
from ..errors import ConversionError
from ..layout import CAFFE
from ..prototxt import python_layer_params
from ..shapes import fixed_size, free
from ..spec import register


# py-faster-rcnn's TEST configuration (lib/fast_rcnn/config.py, __C.TEST.RPN_*): its Python
# proposal layer reads these from the config, not from the prototxt.
RPN_TEST = {"pre_nms_top_n": 6000, "post_nms_top_n": 300, "nms_thresh": 0.7, "min_size": 16}


# What py-faster-rcnn's ProposalLayer reads from param_str (feat_stride, scales), and what forks
# of it add (ratios, base_size: the other arguments of generate_anchors).
PROPOSAL_PARAM_STR_KEYS = ("feat_stride", "scales", "ratios", "base_size")
PROPOSAL_FIXED = "its anchors are laid out for one score-map size"


def is_proposal_layer(param):
    """Whether a Python layer is py-faster-rcnn's ``rpn.proposal_layer.ProposalLayer``."""
    p = param.python_param
    return param.type == "Python" and p.layer == "ProposalLayer" and p.module.split(".")[-1] == "proposal_layer"


@dataclass(frozen=True)
class ProposalSettings:
    """A region proposal layer's parameters, from ``proposal_param`` or the Python layer's
    ``param_str`` with py-faster-rcnn's TEST values."""

    feat_stride: int
    base_size: int
    ratios: tuple
    scales: tuple
    pre_nms_top_n: int
    post_nms_top_n: int
    nms_thresh: float
    min_size: float


def proposal_settings(param):
    if param.type == "Proposal":
        p = param.proposal_param
        return ProposalSettings(
            p.feat_stride, p.base_size, tuple(p.ratio) or (0.5, 1.0, 2.0), tuple(p.scale) or (8.0, 16.0, 32.0),
            p.pre_nms_topn, p.post_nms_topn, p.nms_thresh, p.min_size,
        )
    given = python_layer_params(param)
    unknown = sorted(str(k) for k in given if k not in PROPOSAL_PARAM_STR_KEYS)
    if unknown:
        raise ConversionError(
            f"param_str key(s) {', '.join(unknown)} not understood (the proposal layer reads "
            f"{', '.join(PROPOSAL_PARAM_STR_KEYS)})"
        )
    if "feat_stride" not in given:
        raise ConversionError("the proposal layer's param_str lacks 'feat_stride'")
    try:
        stride, base = int(given["feat_stride"]), int(given.get("base_size", 16))
        ratios = tuple(float(r) for r in given.get("ratios", (0.5, 1, 2)))
        scales = tuple(float(s) for s in given.get("scales", (8, 16, 32)))
    except (TypeError, ValueError):
        raise ConversionError(f"param_str {param.python_param.param_str!r} holds a value that is not a number") from None
    return ProposalSettings(stride, base, ratios, scales, **RPN_TEST)


def proposal_rows(settings, bottoms):
    """Rows of the converter's fixed-size rois: at most post_nms_top_n of the pre_nms_top_n best
    anchors (a limit of 0 keeps all)."""
    if len(bottoms) != 3:
        raise ConversionError("the proposal layer needs three bottoms (RPN scores, box deltas, im_info)")
    scores, deltas, info = bottoms
    if len(scores) != 4 or len(deltas) != 4:
        raise ConversionError(f"RPN scores {list(scores)} and box deltas {list(deltas)} must be 4-D")
    if settings.feat_stride <= 0 or not settings.ratios or not settings.scales:
        raise ConversionError("the proposal layer needs a positive feat_stride, ratios and scales")
    anchors = len(settings.ratios) * len(settings.scales)
    n, c, h, w = scores
    if n != 1:
        raise ConversionError(f"the proposal layer takes one image (py-faster-rcnn asserts it), got a batch of {n}")
    if c != 2 * anchors or deltas != (1, 4 * anchors, h, w):
        raise ConversionError(
            f"RPN scores {list(scores)} and deltas {list(deltas)} do not hold 2 scores and 4 deltas for each of "
            f"{anchors} anchors on one {h}x{w} map"
        )
    if info[0] != 1 or math.prod(info[1:]) < 3:
        raise ConversionError(f"im_info {list(info)} is not one row (height, width, scale)")
    total = h * w * anchors
    candidates = min(settings.pre_nms_top_n, total) if settings.pre_nms_top_n > 0 else total
    return min(settings.post_nms_top_n, candidates) if settings.post_nms_top_n > 0 else candidates


def refusal(node):
    """Why a layer of ``node``'s type cannot be converted, and what to do instead: one line."""
    if node.type == "Python" and not node.param.bottom:
        return "Python data layer cannot be converted: declare the network input instead (Input layer or input_shape)"
    if node.type == "Python":
        p = node.param.python_param
        what = (
            f"Python layer {p.module}.{p.layer} cannot be converted (it runs Python code; of the Python layers "
            "only py-faster-rcnn's rpn.proposal_layer.ProposalLayer is known)"
        )
    else:
        what = f"{node.type} layer cannot be converted (not supported)"
    return f"{what}; cut the network before it with --outputs BLOB (e.g. --outputs {','.join(node.param.bottom)})"


def shape_proposal(node, bottoms):
    """rois (R, 5) and, with a second top, their scores (R, 1); R is fixed (see proposal_rows)."""
    rows = proposal_rows(proposal_settings(node.param), bottoms)
    tops = len(node.param.top)
    if tops > 2:
        raise ConversionError(f"the proposal layer makes rois and their scores, not {tops} tops")
    return [(rows, 5), (rows, 1)][:tops]


def shape_python(node, bottoms):
    if is_proposal_layer(node.param):
        if any(free(*b) for b in bottoms):
            raise fixed_size("the proposal layer", PROPOSAL_FIXED)
        return shape_proposal(node, bottoms)
    raise ConversionError(refusal(node))


@register("Python", shape=shape_python, any_size=True)
def python(ctx, node, inputs):
    if not is_proposal_layer(node.param):
        raise ctx.fail(node, refusal(node))
    return proposal(ctx, node, inputs)


@register("Proposal", shape=shape_proposal, fixed_because=PROPOSAL_FIXED)
def proposal(ctx, node, inputs):
    settings = proposal_settings(node.param)
    scores, deltas, im_info = inputs
    layer = layers.Proposal(
        feat_stride=settings.feat_stride,
        base_size=settings.base_size,
        ratios=settings.ratios,
        scales=settings.scales,
        pre_nms_top_n=settings.pre_nms_top_n,
        nms_thresh=settings.nms_thresh,
        min_size=settings.min_size,
        rows=proposal_rows(settings, [t.shape for t in inputs]),
        name=ctx.name(node),
    )
    rois, roi_scores, _ = layer([ctx.canonical(scores, node), ctx.canonical(deltas, node), ctx.caffe(im_info, node)])
    return [(rois, CAFFE), (roi_scores, CAFFE)][: len(node.tops)]


def roi_count(rois):
    if len(rois) < 2 or math.prod(rois[1:]) != 5:
        raise ConversionError(f"rois {list(rois)} are not rows of 5 (batch index, x1, y1, x2, y2)")
    return rois[0]


def _roi_bottoms(node, bottoms):
    if len(bottoms) != 2 or len(bottoms[0]) != 4:
        raise ConversionError(f"{node.type} needs a 4-D feature map and the rois as bottoms")
    return bottoms[0], roi_count(bottoms[1])


def shape_roi_pooling(node, bottoms):
    p = node.param.roi_pooling_param
    features, rois = _roi_bottoms(node, bottoms)
    if p.pooled_h <= 0 or p.pooled_w <= 0:
        raise ConversionError("ROIPooling needs positive pooled_h and pooled_w")
    return [(rois, features[1], p.pooled_h, p.pooled_w)]


@register("ROIPooling", shape=shape_roi_pooling)
def roi_pooling(ctx, node, inputs):
    p = node.param.roi_pooling_param
    layer = layers.ROIPooling(p.pooled_h, p.pooled_w, p.spatial_scale, name=ctx.name(node))
    return _region_pooling(ctx, node, layer, inputs)


def shape_psroi_pooling(node, bottoms):
    p = node.param.psroi_pooling_param
    features, rois = _roi_bottoms(node, bottoms)
    missing = [f for f in ("spatial_scale", "output_dim", "group_size") if not p.HasField(f)]
    if missing:
        raise ConversionError(f"PSROIPooling lacks the required {', '.join(missing)}")
    g = p.group_size
    if p.output_dim <= 0 or g <= 0 or features[1] != p.output_dim * g * g:
        raise ConversionError(
            f"{features[1]} input channels, PSROIPooling needs output_dim x group_size^2 = {p.output_dim} x {g}^2"
        )
    return [(rois, p.output_dim, g, g)]


@register("PSROIPooling", shape=shape_psroi_pooling)
def psroi_pooling(ctx, node, inputs):
    p = node.param.psroi_pooling_param
    layer = layers.PSROIPooling(p.output_dim, p.group_size, p.spatial_scale, name=ctx.name(node))
    return _region_pooling(ctx, node, layer, inputs)


def _region_pooling(ctx, node, layer, inputs):
    features, rois = inputs
    return [layer([ctx.canonical(features, node), ctx.caffe(rois, node)])]


def shape_refused(node, bottoms):
    raise ConversionError(refusal(node))


@register("ROIAlign", shape=shape_refused, any_size=True)
def refused(ctx, node, inputs):
    # Registered so the up-front check of supported types lets the shape pass give its reason.
    raise ctx.fail(node, refusal(node))
