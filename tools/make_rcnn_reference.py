#!/usr/bin/env python
"""Write ``fixtures/rcnn/proposal_reference.npz``: what py-faster-rcnn's own proposal code computes.

    python tools/make_rcnn_reference.py PY_FASTER_RCNN [--out fixtures/rcnn/proposal_reference.npz]

PY_FASTER_RCNN is a checkout of rbgirshick/py-faster-rcnn (the fixture was made from commit
781a917). Nothing of it is copied here: this script imports its ``lib/rpn/proposal_layer.py``,
``generate_anchors.py``, ``lib/fast_rcnn/bbox_transform.py``, ``config.py`` and
``lib/nms/py_cpu_nms.py`` and runs ``ProposalLayer.setup`` and ``forward`` in the TEST phase, as
Caffe would. Stand-ins replace what is not pure numpy: the ``caffe`` module (only the ``Layer``
base class is used), ``easydict`` (a dict with attribute access) and the Cython/CUDA NMS, for
which ``py_cpu_nms`` stands in (all three suppress at IoU > threshold, in float32). The Python 2
sources are run under Python 3 with their print statements made calls and ``xrange`` as
``range``; PyYAML reads ``param_str`` as the layer does (``!!python/tuple`` needs its full
loader).

The npz holds, per case, the inputs (``<case>/scores``, ``/deltas``, ``/im_info``,
``/param_str``) and the outputs (``<case>/rois``, ``/roi_scores``), and
``anchors/<i>/{base_size,ratios,scales,anchors}`` from ``generate_anchors``. ``detect/<case>/``
holds what py-faster-rcnn's test code makes of a net's outputs (``test.py``'s ``im_detect`` after
the forward pass: rois scaled back, ``bbox_transform_inv``, ``clip_boxes``; then ``demo.py``'s
per-class NMS and threshold): inputs ``rois``, ``cls_prob``, ``bbox_pred``, ``image_hw``,
``scale``, ``threshold``, output ``rows`` [class, score, x1, y1, x2, y2].
"""

import argparse
import builtins
import importlib.util
import re
import sys
import types
from pathlib import Path

import numpy as np
import yaml

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "rcnn" / "proposal_reference.npz"


def _load(name, path):
    """Import a Python 2 module of the checkout under ``name``, print statements made calls."""
    source = re.sub(r"^(\s*)print (.*)$", r"\1print(\2)", Path(path).read_text(), flags=re.MULTILINE)
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def load_reference(root):
    """py-faster-rcnn's ``proposal_layer`` and ``generate_anchors`` modules, ready to run, and
    its ``bbox_transform`` and ``nms_wrapper``."""
    lib = Path(root) / "lib"
    builtins.xrange = range
    caffe = types.ModuleType("caffe")
    caffe.Layer = type("Layer", (), {})
    sys.modules["caffe"] = caffe

    class EasyDict(dict):
        def __getattr__(self, key):
            try:
                return self[key]
            except KeyError:
                raise AttributeError(key) from None

        def __setattr__(self, key, value):
            self[key] = value

    sys.modules["easydict"] = types.SimpleNamespace(EasyDict=EasyDict)
    for package in ("fast_rcnn", "nms", "rpn"):
        sys.modules[package] = types.ModuleType(package)
    cpu = _load("nms.py_cpu_nms", lib / "nms" / "py_cpu_nms.py")
    sys.modules["nms.cpu_nms"] = types.SimpleNamespace(cpu_nms=cpu.py_cpu_nms)
    sys.modules["nms.gpu_nms"] = types.SimpleNamespace(gpu_nms=lambda dets, thresh, device_id=0: cpu.py_cpu_nms(dets, thresh))
    config = _load("fast_rcnn.config", lib / "fast_rcnn" / "config.py")
    config.cfg.USE_GPU_NMS = False
    _load("fast_rcnn.bbox_transform", lib / "fast_rcnn" / "bbox_transform.py")
    _load("fast_rcnn.nms_wrapper", lib / "fast_rcnn" / "nms_wrapper.py")
    anchors = _load("generate_anchors", lib / "rpn" / "generate_anchors.py")
    full_load = yaml.load
    yaml.load = lambda stream, Loader=yaml.UnsafeLoader: full_load(stream, Loader=Loader)
    post = (sys.modules["fast_rcnn.bbox_transform"], sys.modules["fast_rcnn.nms_wrapper"])
    return _load("rpn.proposal_layer", lib / "rpn" / "proposal_layer.py"), anchors, post


class _Blob:
    def __init__(self, data=None):
        self.data = data

    def reshape(self, *shape):
        self.data = np.zeros(shape, np.float32)


def run_detection(lib, rois, cls_prob, bbox_pred, image_hw, scale, threshold, nms=0.3):
    """im_detect's post-processing and demo.py's per-class loop, with py-faster-rcnn's functions.
    An 8-column bbox_pred is R-FCN's class-agnostic pair: its object deltas serve every class."""
    transform, nms_wrapper = lib
    if bbox_pred.shape[1] == 8:
        bbox_pred = np.tile(bbox_pred[:, 4:8], (1, cls_prob.shape[1]))
    boxes = rois[:, 1:5] / scale
    pred_boxes = transform.clip_boxes(transform.bbox_transform_inv(boxes, bbox_pred), image_hw)
    rows = []
    for c in range(1, cls_prob.shape[1]):
        dets = np.hstack((pred_boxes[:, 4 * c : 4 * (c + 1)], cls_prob[:, c, None])).astype(np.float32)
        dets = dets[nms_wrapper.nms(dets, nms), :]
        for x1, y1, x2, y2, score in dets[dets[:, -1] >= threshold]:
            rows.append([c, score, x1, y1, x2, y2])
    return np.asarray(rows, np.float32).reshape(-1, 6)


def detection_cases(rng):
    """(name, rois, cls_prob, bbox_pred, image_hw, scale, threshold): a net's outputs for 40
    proposals in an image scaled by 1.6 (21 classes, boxes leaving the image), and R-FCN's
    class-agnostic deltas."""
    for name, columns in (("per_class", 84), ("agnostic", 8)):
        x1y1 = rng.uniform(0, 300, size=(40, 2))
        rois = np.hstack([np.zeros((40, 1)), x1y1, x1y1 + rng.uniform(10, 200, size=(40, 2))]).astype(np.float32)
        logits = rng.normal(0, 2, size=(40, 21))
        cls_prob = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
        bbox_pred = rng.normal(0, 0.3, size=(40, columns)).astype(np.float32)
        yield name, rois, cls_prob, bbox_pred, (230, 250), 1.6, 0.05


def run_proposal(module, scores, deltas, im_info, param_str):
    layer = module.ProposalLayer()
    layer.param_str_ = param_str
    layer.phase = "TEST"
    bottom = [_Blob(np.asarray(a, np.float32)) for a in (scores, deltas, im_info)]
    top = [_Blob(), _Blob()]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top[0].data, top[1].data


def _distinct_scores(rng, anchors, h, w):
    """Softmax-like RPN scores (background, then foreground) with no two foreground scores equal."""
    while True:
        fg = rng.uniform(0.0, 1.0, size=(1, anchors, h, w)).astype(np.float32)
        if np.unique(fg).size == fg.size:
            return np.concatenate([1.0 - fg, fg], axis=1)


def cases(rng):
    """(name, scores, deltas, im_info, param_str): the edge cases the tests name."""
    stride = "'feat_stride': 16"

    def deltas(a, h, w, spread):
        return rng.normal(0.0, spread, size=(1, 4 * a, h, w)).astype(np.float32)

    # Anchors and moved boxes crossing every border of an image smaller than the map covers.
    yield "border", _distinct_scores(rng, 9, 12, 12), deltas(9, 12, 12, 0.6), [[150.0, 170.0, 1.0]], stride
    # 3x4 cells, 108 anchors: far fewer proposals than post_nms_top_n (300).
    yield "few", _distinct_scores(rng, 9, 3, 4), deltas(9, 3, 4, 0.3), [[48.0, 64.0, 1.0]], stride
    # min_size 16 at scale 2.5: boxes under 40 pixels a side dropped.
    yield "min_size", _distinct_scores(rng, 9, 10, 10), deltas(9, 10, 10, 0.8), [[160.0, 160.0, 2.5]], stride
    # 20x20 cells, small moves: more boxes survive NMS than post_nms_top_n (300) keeps.
    yield "post_nms", _distinct_scores(rng, 9, 20, 20), deltas(9, 20, 20, 0.2), [[320.0, 320.0, 1.0]], stride
    # 30x25 cells, 6750 anchors: the best 6000 blown up to the whole image (one proposal after
    # NMS), the 750 others small, kept only if the pre_nms_top_n (6000) cut were not taken.
    scores = _distinct_scores(rng, 9, 30, 25)
    d = deltas(9, 30, 25, 0.1)
    best = scores[0, 9:] >= np.sort(scores[0, 9:], axis=None)[750]
    d[0, 2::4][best] = d[0, 3::4][best] = 4.0
    yield "pre_nms", scores, d, [[480.0, 400.0, 1.0]], stride
    # Every box below the minimum: no proposal at all.
    yield "empty", _distinct_scores(rng, 9, 4, 4), deltas(9, 4, 4, 0.3), [[64.0, 64.0, 50.0]], stride
    # The COCO models' param_str: four scales (12 anchors), YAML tuple tag, two lines.
    yield "scales", _distinct_scores(rng, 12, 8, 9), deltas(12, 8, 9, 0.4), [[128.0, 144.0, 0.8]], (
        "'feat_stride': 16 \n'scales': !!python/tuple [4, 8, 16, 32]"
    )
    yield "stride8", _distinct_scores(rng, 9, 9, 7), deltas(9, 9, 7, 0.4), [[72.0, 56.0, 0.5]], "'feat_stride': 8"

    # Ties whose outcome does not depend on their order (py-faster-rcnn's argsort is unstable):
    # saturated scores (1.0) on boxes blown up to the whole image, identical once clipped.
    scores = _distinct_scores(rng, 9, 8, 8) * np.float32(0.5)
    d = deltas(9, 8, 8, 0.3)
    full = rng.random((9, 8, 8)) < 0.3
    scores[0, 9:][full], scores[0, :9][full] = 1.0, 0.0
    d[0, 2::4][full] = d[0, 3::4][full] = 4.0
    yield "ties_saturated", scores, d, [[128.0, 128.0, 1.0]], stride
    # Equal scores on boxes that cannot overlap: anchor 3 (128 pixels square) unmoved at every
    # 9th cell (144 pixels apart).
    scores = _distinct_scores(rng, 9, 19, 19) * np.float32(0.5)
    scores[0, 9 + 3, ::9, ::9] = 0.75
    scores[0, 3, ::9, ::9] = 0.25
    d = deltas(9, 19, 19, 0.3)
    d[0, 12:16, ::9, ::9] = 0.0
    yield "ties_apart", scores, d, [[304.0, 304.0, 1.0]], stride


ANCHOR_CASES = [
    (16, [0.5, 1, 2], [8, 16, 32]),
    (16, [0.5, 1, 2], [4, 8, 16, 32]),
    (8, [0.333, 0.667, 1, 1.5, 3], [0.5, 1, 2, 4]),
    # sqrt(225 / 1.44) = 12.5 exactly: numpy rounds the half to even (12), C would give 13.
    (15, [1.44, 0.25], [1, 3]),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("py_faster_rcnn", help="a checkout of rbgirshick/py-faster-rcnn")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    proposal_layer, anchors, post = load_reference(args.py_faster_rcnn)
    rng = np.random.default_rng(13)
    arrays = {}
    for name, scores, deltas, im_info, param_str in cases(rng):
        im_info = np.asarray(im_info, np.float32)
        rois, roi_scores = run_proposal(proposal_layer, scores, deltas, im_info, param_str)
        arrays.update({
            f"{name}/scores": scores, f"{name}/deltas": deltas, f"{name}/im_info": im_info,
            f"{name}/param_str": np.array(param_str), f"{name}/rois": rois, f"{name}/roi_scores": roi_scores,
        })
        print(f"{name}: {scores.shape[2]}x{scores.shape[3]} cells, {len(rois)} rois")
    for i, (base, ratios, scales) in enumerate(ANCHOR_CASES):
        arrays.update({
            f"anchors/{i}/base_size": np.array(base), f"anchors/{i}/ratios": np.array(ratios, np.float64),
            f"anchors/{i}/scales": np.array(scales, np.float64),
            f"anchors/{i}/anchors": anchors.generate_anchors(base, ratios, np.array(scales)),
        })
    for name, rois, cls_prob, bbox_pred, image_hw, scale, threshold in detection_cases(rng):
        rows = run_detection(post, rois, cls_prob, bbox_pred, image_hw, scale, threshold)
        arrays.update({
            f"detect/{name}/rois": rois, f"detect/{name}/cls_prob": cls_prob, f"detect/{name}/bbox_pred": bbox_pred,
            f"detect/{name}/image_hw": np.array(image_hw), f"detect/{name}/scale": np.array(scale),
            f"detect/{name}/threshold": np.array(threshold), f"detect/{name}/rows": rows,
        })
        print(f"detect/{name}: {len(rows)} detections")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
