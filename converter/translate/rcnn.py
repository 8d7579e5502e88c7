"""Two-stage detectors: the region proposal layer (py-faster-rcnn's Python ``ProposalLayer`` and
the fork type ``Proposal``), ROIPooling (Fast/Faster R-CNN) and PSROIPooling (R-FCN).

Other Python layers run arbitrary code and are refused with a remedy (see
:func:`~caffe2keras.shapes.refusal`).
"""

from .._lazy import layers as rcnn_layers
from ..layout import CAFFE
from ..shapes import is_proposal_layer, proposal_rows, proposal_settings, refusal
from . import translator


@translator("Python")
def python(ctx, node, inputs):
    if not is_proposal_layer(node.param):
        raise ctx.fail(node, refusal(node))
    return proposal(ctx, node, inputs)


@translator("Proposal")
def proposal(ctx, node, inputs):
    settings = proposal_settings(node.param)
    scores, deltas, im_info = inputs
    layer = rcnn_layers.Proposal(
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


@translator("ROIPooling", "PSROIPooling")
def region_pooling(ctx, node, inputs):
    if node.type == "ROIPooling":
        p = node.param.roi_pooling_param
        layer = rcnn_layers.ROIPooling(p.pooled_h, p.pooled_w, p.spatial_scale, name=ctx.name(node))
    else:
        p = node.param.psroi_pooling_param
        layer = rcnn_layers.PSROIPooling(p.output_dim, p.group_size, p.spatial_scale, name=ctx.name(node))
    features, rois = inputs
    return [layer([ctx.canonical(features, node), ctx.caffe(rois, node)])]
