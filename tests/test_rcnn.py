"""Two-stage detectors convert whole: py-faster-rcnn's proposal layer, ROIPooling, PSROIPooling,
and Faster R-CNN / R-FCN nets as one Keras model.

The references, since the Caffe oracle cannot run these layers (no Python layers, no ROIPooling,
no CPU PSROIPooling, a Proposal that is not py-faster-rcnn's):
- the proposal layer: what py-faster-rcnn's own code computed, stored in
  ``fixtures/rcnn/proposal_reference.npz`` by ``tools/make_rcnn_reference.py``;
- ROIPooling, PSROIPooling and whole nets: OpenCV's DNN, which runs the forks' layers (the Python
  proposal layer rewritten to OpenCV's ``Proposal`` in a copy of the prototxt);
- the pooling layers also: numpy transcriptions of the forks' forward passes (marked as such) on
  edge cases.
"""

import json
import math
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import FIXTURES, shared_path
from helpers import assert_close, build, model_inputs, run_outputs, write_net
from oracle import opencv_outputs, random_caffemodel

from caffe2keras import caffe_pb2, prototxt
from caffe2keras.layers import rcnn
from caffe2keras.errors import ConversionError
# Equal RPN scores: OpenCV orders them its own way (py-faster-rcnn by numpy's unstable sort), the
# converter by anchor; verify lines the rows up the same way.
from caffe2keras.verify import tie_order

RCNN = FIXTURES / "rcnn"
REFERENCE = RCNN / "proposal_reference.npz"
TIE_FREE = ["border", "few", "min_size", "post_nms", "pre_nms", "empty", "scales", "stride8"]


def _reference():
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def proposal_net(tmp_path, case, ref):
    """A net of just the Python proposal layer, fed the case's RPN outputs; with a scores top."""
    scores, deltas = ref[f"{case}/scores"], ref[f"{case}/deltas"]
    param_str = str(ref[f"{case}/param_str"]).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    path = tmp_path / f"{case}.prototxt"
    path.write_text(
        f"""
        input: "scores" input_shape {{ dim: {", dim: ".join(map(str, scores.shape))} }}
        input: "deltas" input_shape {{ dim: {", dim: ".join(map(str, deltas.shape))} }}
        input: "im_info" input_shape {{ dim: 1 dim: 3 }}
        layer {{ name: "proposal" type: "Python" bottom: "scores" bottom: "deltas" bottom: "im_info"
                top: "rois" top: "roi_scores"
                python_param {{ module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "{param_str}" }} }}
        """.replace(", dim:", " dim:")
    )
    return path


def run_proposal(tmp_path, case, ref):
    """rois, their scores and the count of the converted layer (the count is no Caffe top: the
    model built here exposes it)."""
    conversion = build(proposal_net(tmp_path, case, ref))
    model = conversion.model
    assert model.output_names == ["roi_scores", "rois"]
    probe = keras.Model(model.inputs, model.outputs + [model.get_layer("proposal").output[2]])
    roi_scores, rois, count = probe(model_inputs(conversion, {k: ref[f"{case}/{k}"] for k in ("scores", "deltas", "im_info")}))
    return np.asarray(rois), np.asarray(roi_scores), int(np.asarray(count)[0])


def check_padding(rois, roi_scores, n):
    assert (rois[:n, 0] == 0).all(), "proposals carry batch index 0"
    assert (rois[n:] == -1).all() and (roi_scores[n:] == -1).all(), "rows past the count are -1 rows"


# --- the proposal layer against py-faster-rcnn's own code ---


@pytest.mark.parametrize("index", range(4))
def test_anchors_match_generate_anchors(index):
    ref = _reference()
    got = rcnn.generate_anchors(
        int(ref[f"anchors/{index}/base_size"]), ref[f"anchors/{index}/ratios"], ref[f"anchors/{index}/scales"]
    )
    np.testing.assert_array_equal(got, ref[f"anchors/{index}/anchors"])


@pytest.mark.parametrize("case", TIE_FREE)
def test_proposals_match_py_faster_rcnn(tmp_path, case):
    """border: boxes crossing every image border; few: fewer proposals than post_nms_top_n;
    min_size: the size filter scaled by im_info[2]; post_nms / pre_nms: both cuts taken; empty:
    no proposal; scales, stride8: param_str variants (YAML tuple, feat_stride 8)."""
    ref = _reference()
    rois, roi_scores, n = run_proposal(tmp_path, case, ref)
    want, want_scores = ref[f"{case}/rois"], ref[f"{case}/roi_scores"]
    assert n == len(want), f"{case}: {n} proposals, py-faster-rcnn made {len(want)}"
    assert_close(rois[:n], want, f"{case} rois")
    assert_close(roi_scores[:n], want_scores, f"{case} scores")
    check_padding(rois, roi_scores, n)


@pytest.mark.parametrize("case", ["ties_saturated", "ties_apart"])
def test_tied_scores_give_py_faster_rcnn_proposals_up_to_their_order(tmp_path, case):
    # py-faster-rcnn orders equal scores by numpy's unstable argsort (the order differs between
    # numpy versions); on these inputs the proposals do not depend on it, only their order among
    # equal scores does.
    ref = _reference()
    rois, roi_scores, n = run_proposal(tmp_path, case, ref)
    want, want_scores = ref[f"{case}/rois"], ref[f"{case}/roi_scores"]
    assert n == len(want)
    np.testing.assert_array_equal(roi_scores[:n], want_scores)
    fg = ref[f"{case}/scores"][0, 9:]
    assert np.unique(fg).size < fg.size, "the case has ties"
    for score in np.unique(want_scores):
        group = want_scores[:, 0] == score
        mine, theirs = rois[:n][group], want[group]
        assert_close(mine[np.lexsort(mine.T[::-1])], theirs[np.lexsort(theirs.T[::-1])], f"{case} rois at {score}")


def test_equal_scores_go_in_anchor_order(tmp_path):
    # The converter's documented tie rule (not an oracle comparison): equal scores are taken in
    # anchor order (cell row, cell column, anchor). 16-pixel anchors 2 pixels apart overlap by
    # IoU 0.78 with the next one and 0.6 with the one after: NMS keeps every second anchor.
    path = tmp_path / "ties.prototxt"
    path.write_text("""
        input: "scores" input_shape { dim: 1 dim: 2 dim: 1 dim: 6 }
        input: "deltas" input_shape { dim: 1 dim: 4 dim: 1 dim: 6 }
        input: "im_info" input_shape { dim: 1 dim: 3 }
        layer { name: "proposal" type: "Proposal" bottom: "scores" bottom: "deltas" bottom: "im_info" top: "rois"
                proposal_param { feat_stride: 2 ratio: 1 scale: 1 min_size: 1 } }
    """)
    conversion = build(path)
    inputs = {"scores": np.full((1, 2, 1, 6), 0.5, np.float32), "deltas": np.zeros((1, 4, 1, 6), np.float32),
              "im_info": np.array([[64, 64, 1]], np.float32)}
    rois = run_outputs(conversion, inputs)["rois"]
    assert rois.shape == (6, 5)
    np.testing.assert_array_equal(rois[:3, 1], [0, 4, 8])
    assert (rois[3:] == -1).all()


@pytest.mark.parametrize("case, change", [("pre_nms", {"pre_nms_top_n": 0}), ("min_size", {"min_size": 0})])
def test_the_reference_cases_catch_a_missing_cut(case, change):
    # Negative control: without the pre-NMS cut or the size filter the proposals differ.
    ref = _reference()
    settings = {"feat_stride": 16, "base_size": 16, "ratios": (0.5, 1, 2), "scales": (8, 16, 32),
                "pre_nms_top_n": 6000, "nms_thresh": 0.7, "min_size": 16, "rows": 300}
    inputs = [ref[f"{case}/scores"].transpose(0, 2, 3, 1), ref[f"{case}/deltas"].transpose(0, 2, 3, 1),
              ref[f"{case}/im_info"]]
    counts = []
    for params in (settings, {**settings, **change}):
        counts.append(int(np.asarray(rcnn.Proposal(**params)(inputs)[2])[0]))
    assert counts[0] == len(ref[f"{case}/rois"]) != counts[1]


def test_param_str_is_read_as_literals_only():
    def params(text):
        layer = caffe_pb2.LayerParameter(name="proposal")
        layer.python_param.param_str = text
        return prototxt.python_layer_params(layer)

    assert params("'feat_stride': 16") == {"feat_stride": 16}
    assert params("'feat_stride': 16 \n'scales': !!python/tuple [4, 8, 16, 32]") == {
        "feat_stride": 16, "scales": [4, 8, 16, 32]}
    assert params("{ 'feat_stride': 8, 'ratios': [0.5, 1] }") == {"feat_stride": 8, "ratios": [0.5, 1]}
    assert params("feat_stride: 16") == {"feat_stride": 16}
    for bad in ("__import__('os').system('true')", "16", "'feat_stride': open('x')"):
        with pytest.raises(ConversionError, match="not a dict of literal values"):
            params(bad)


def _python_layer_net(tmp_path, python_param):
    path = tmp_path / "net.prototxt"
    path.write_text(f"""
        input: "data" input_shape {{ dim: 1 dim: 18 dim: 4 dim: 4 }}
        input: "deltas" input_shape {{ dim: 1 dim: 36 dim: 4 dim: 4 }}
        input: "im_info" input_shape {{ dim: 1 dim: 3 }}
        layer {{ name: "py" type: "Python" bottom: "data" bottom: "deltas" bottom: "im_info" top: "rois"
                python_param {{ {python_param} }} }}
    """)
    return path


@pytest.mark.parametrize("python_param, message", [
    ('module: "roi_data_layer.layer" layer: "RoIDataLayer"',
     "Python layer roi_data_layer.layer.RoIDataLayer cannot be converted"),
    ('module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "\'feat_stride\': 16, \'output_score\': 1"',
     "param_str key(s) output_score not understood"),
    ('module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "\'scales\': [8]"', "lacks 'feat_stride'"),
])
def test_other_python_layers_are_refused_in_one_line(tmp_path, python_param, message):
    with pytest.raises(ConversionError) as info:
        build(_python_layer_net(tmp_path, python_param))
    text = str(info.value)
    assert message in text and "layer 'py'" in text and "\n" not in text


# --- ROIPooling and PSROIPooling ---

# Rois in image pixels on a 11x13 map at scale 1/16 (176x208 pixels): whole map, crossing the
# top-left and bottom-right borders, wholly outside (every bin empty), x1 > x2, corners at .5
# after scaling (C rounds halves away from zero), a one-pixel roi, a roi of the second image.
EDGE_ROIS = np.array([
    [0, 0, 0, 207, 175], [0, -40, -30, 50, 60], [1, 180, 150, 400, 300], [0, 300, 300, 500, 500],
    [1, 40, 24, 8, 104], [0, 8, 24, 232, 56], [1, 100, 20, 100, 20], [0, 30, 40, 90, 170],
], np.float32)


def roi_pooling_transcript(x, rois, pooled_h, pooled_w, scale):
    """A numpy transcription of caffe-fast-rcnn's ROIPoolingLayer::Forward_cpu (the Caffe oracle
    has no ROIPooling): max over each bin, -FLT_MAX start, 0 for empty bins."""
    _, c, height, width = x.shape
    out = np.zeros((len(rois), c, pooled_h, pooled_w), np.float32)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        sw, sh, ew, eh = (_c_round(float(np.float32(v) * np.float32(scale))) for v in roi[1:])
        roi_h, roi_w = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bin_h, bin_w = np.float32(roi_h) / np.float32(pooled_h), np.float32(roi_w) / np.float32(pooled_w)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                hs = min(max(math.floor(np.float32(ph) * bin_h) + sh, 0), height)
                he = min(max(math.ceil(np.float32(ph + 1) * bin_h) + sh, 0), height)
                ws = min(max(math.floor(np.float32(pw) * bin_w) + sw, 0), width)
                we = min(max(math.ceil(np.float32(pw + 1) * bin_w) + sw, 0), width)
                if he <= hs or we <= ws:
                    continue
                out[r, :, ph, pw] = x[b, :, hs:he, ws:we].max(axis=(1, 2))
    return out


def psroi_pooling_transcript(x, rois, output_dim, group, scale):
    """A numpy transcription of caffe-rfcn's PSROIPoolingForward CUDA kernel (the Caffe oracle
    has no CPU forward for it): mean of the bin's own channel, 0 for empty bins."""
    height, width = x.shape[2:]
    out = np.zeros((len(rois), output_dim, group, group), np.float32)
    f = np.float32
    for r, roi in enumerate(rois):
        b = int(roi[0])
        sw, sh = f(_c_round(roi[1])) * f(scale), f(_c_round(roi[2])) * f(scale)
        ew, eh = f(_c_round(roi[3]) + 1.0) * f(scale), f(_c_round(roi[4]) + 1.0) * f(scale)
        roi_w, roi_h = max(ew - sw, f(0.1)), max(eh - sh, f(0.1))
        bin_h, bin_w = roi_h / f(group), roi_w / f(group)
        for d in range(output_dim):
            for ph in range(group):
                for pw in range(group):
                    hs = min(max(math.floor(f(ph) * bin_h + sh), 0), height)
                    he = min(max(math.ceil(f(ph + 1) * bin_h + sh), 0), height)
                    ws = min(max(math.floor(f(pw) * bin_w + sw), 0), width)
                    we = min(max(math.ceil(f(pw + 1) * bin_w + sw), 0), width)
                    if he <= hs or we <= ws:
                        continue
                    channel = (d * group + ph) * group + pw
                    out[r, d, ph, pw] = x[b, channel, hs:he, ws:we].sum(dtype=np.float32) / f((he - hs) * (we - ws))
    return out


def _c_round(v):
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def pooling_net(tmp_path, layer, channels):
    prototxt, _ = write_net(tmp_path, f"""
        input: "data" input_shape {{ dim: 2 dim: {channels} dim: 11 dim: 13 }}
        input: "rois" input_shape {{ dim: {len(EDGE_ROIS)} dim: 5 }}
        {layer}
    """, name="pool")
    return prototxt


ROI_LAYER = ('layer { name: "pool" type: "ROIPooling" bottom: "data" bottom: "rois" top: "pool" '
             "roi_pooling_param { pooled_h: 3 pooled_w: 4 spatial_scale: 0.0625 } }")
PSROI_LAYER = ('layer { name: "pool" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "pool" '
               "psroi_pooling_param { spatial_scale: 0.0625 output_dim: 2 group_size: 3 } }")


@pytest.mark.parametrize("kind", ["ROIPooling", "PSROIPooling"])
def test_roi_pooling_matches_opencv_and_the_forks_code_on_edge_rois(tmp_path, kind):
    channels = 8 if kind == "ROIPooling" else 18
    path = pooling_net(tmp_path, ROI_LAYER if kind == "ROIPooling" else PSROI_LAYER, channels)
    x = np.random.default_rng(5).normal(size=(2, channels, 11, 13)).astype(np.float32)
    conversion = build(path)
    got = run_outputs(conversion, {"data": x, "rois": EDGE_ROIS})["pool"]
    if kind == "ROIPooling":
        transcript = roi_pooling_transcript(x, EDGE_ROIS, 3, 4, 0.0625)
    else:
        transcript = psroi_pooling_transcript(x, EDGE_ROIS, 2, 3, 0.0625)
    assert (transcript[3] == 0).all() and (transcript[:, :, 0] == 0).any(), "empty bins are covered"
    assert_close(got, transcript, f"{kind} vs the fork's forward pass")
    # Compiled (TensorFlow's graph optimiser rewrites divisions by constants, see exact_divide).
    compiled = conversion.model.predict_on_batch(model_inputs(conversion, {"data": x, "rois": EDGE_ROIS}))
    assert_close(compiled.transpose(0, 3, 1, 2), transcript, f"compiled {kind} vs the fork's forward pass")
    assert_close(got, opencv_outputs(path, None, {"data": x, "rois": EDGE_ROIS}, ["pool"])["pool"], f"{kind} vs OpenCV")


def test_roi_corners_round_halves_away_from_zero(tmp_path):
    # Negative control for the .5 corners of EDGE_ROIS[5] (x1 8/16, x2 232/16): rounded to even,
    # as keras.ops.round does, they would be 0 and 14 (the corners of x1 = 7, x2 = 231), not 1, 15.
    x = np.random.default_rng(5).normal(size=(2, 8, 11, 13)).astype(np.float32)
    half = EDGE_ROIS[5:6]
    exact = roi_pooling_transcript(x, half, 3, 4, 0.0625)
    to_even = roi_pooling_transcript(x, np.array([[0, 7, 24, 231, 56]], np.float32), 3, 4, 0.0625)
    assert not np.allclose(exact, to_even)
    got = rcnn.ROIPooling(3, 4, 0.0625)([x.transpose(0, 2, 3, 1), half])
    assert_close(np.asarray(got).transpose(0, 3, 1, 2), exact, "ROIPooling at .5 corners")


@pytest.mark.parametrize("kind", ["ROIPooling", "PSROIPooling"])
def test_padding_rois_pool_to_zero(kind):
    # Rows with batch index -1 (the proposal layer's padding) name no image: zeros, no error.
    x = np.ones((1, 11, 13, 18), np.float32)
    rois = np.array([[-1, -1, -1, -1, -1], [0, 0, 0, 100, 100]], np.float32)
    layer = rcnn.ROIPooling(3, 4, 0.0625) if kind == "ROIPooling" else rcnn.PSROIPooling(2, 3, 0.0625)
    out = np.asarray(layer([x, rois]))
    assert (out[0] == 0).all() and (out[1] == 1).all()


# --- whole detectors against OpenCV ---


def opencv_prototxt(text):
    """The net with py-faster-rcnn's Python proposal layer rewritten to OpenCV's Proposal type."""
    proposal = ("type: 'Proposal'\\1proposal_param { feat_stride: 16 ratio: 0.5 ratio: 1 ratio: 2 "
                "scale: 8 scale: 16 scale: 32 }")
    out, count = re.subn(r"""type: ["']Python["'](.*?)python_param \{.*?\n\s*\}""", proposal, text, flags=re.DOTALL)
    assert count == 1
    return out


# OpenCV's Proposal skips py-faster-rcnn's min-size filter: a tiny im_info scale (min size 0.16
# pixels) keeps every box on both sides; proposal_reference.npz covers the filter.
def compare_detector(tmp_path, prototxt_path, image_hw, seed=0, input_shapes=None):
    """Convert with random weights, run both; returns ``{output: max abs error}`` on the real rows."""
    weights = tmp_path / "weights.caffemodel"
    random_caffemodel(prototxt_path, weights, input_shapes=input_shapes, seed=seed)
    rng = np.random.default_rng(seed)
    inputs = {"data": rng.uniform(-1, 1, size=(1, 3, *image_hw)).astype(np.float32),
              "im_info": np.array([[*image_hw, 0.01]], np.float32)}
    cv_path = tmp_path / "opencv.prototxt"
    cv_path.write_text(opencv_prototxt(Path(prototxt_path).read_text()))
    conversion = build(prototxt_path, weights, input_shapes=input_shapes)
    model = conversion.model
    proposal = model.get_layer("proposal").output
    probe = keras.Model(model.inputs, model.outputs + proposal[:2])
    *outs, rois, scores = (np.asarray(v) for v in probe(model_inputs(conversion, inputs)))
    outputs = dict(zip(model.output_names, outs))
    graph = conversion.graph
    producers = {graph.blobs[b].name: graph.blobs[b].producer for b in graph.outputs}
    names = ["proposal", producers["cls_prob"], producers["bbox_pred"]]
    ref = dict(zip(["rois", "cls_prob", "bbox_pred"], opencv_outputs(cv_path, weights, inputs, names).values()))

    n = int((rois[:, 0] >= 0).sum())
    assert n > 10 and (np.abs(ref["rois"][n:]).sum() == 0), "OpenCV made as many proposals"
    mine, theirs = tie_order(rois[:n], scores[:n, 0]), tie_order(ref["rois"][:n], scores[:n, 0])
    errors = {"rois": assert_close(rois[mine], ref["rois"][theirs], "rois")}
    for name in ("cls_prob", "bbox_pred"):
        assert outputs[name].shape == ref[name].shape
        errors[name] = assert_close(outputs[name][mine], ref[name][theirs], name)
    return conversion, inputs, {**outputs, "rois": rois}, errors


def test_faster_rcnn_converts_whole_and_matches_opencv(tmp_path):
    conversion, inputs, outputs, _ = compare_detector(tmp_path, RCNN / "faster_rcnn_zf_reduced.prototxt", (224, 224))
    model = conversion.model
    assert [t.name for t in model.inputs] == ["data", "im_info"]
    assert model.output_names == ["bbox_pred", "cls_prob"]
    assert tuple(model.inputs[0].shape) == (None, 224, 224, 3)

    # Saved and loaded back with safe_mode: the same numbers, and the count of real rows.
    path = tmp_path / "frcnn.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    probe = keras.Model(loaded.inputs, [loaded.get_layer("cls_prob").output, loaded.get_layer("proposal").output[2]])
    cls_prob, count = probe(model_inputs(conversion, inputs))
    np.testing.assert_array_equal(np.asarray(cls_prob), outputs["cls_prob"])
    assert int(np.asarray(count)[0]) == int((outputs["rois"][:, 0] >= 0).sum())
    compiled = dict(zip(loaded.output_names, loaded.predict_on_batch(model_inputs(conversion, inputs))))
    for name in ("cls_prob", "bbox_pred"):
        assert_close(compiled[name], outputs[name], f"compiled {name}")


def test_rfcn_converts_whole_and_matches_opencv(tmp_path):
    outputs = compare_detector(tmp_path, RCNN / "rfcn_small.prototxt", (128, 160))[2]
    assert outputs["cls_prob"].shape == (300, 5) and outputs["bbox_pred"].shape == (300, 8)


def test_cli_converts_faster_rcnn_without_outputs(tmp_path):
    from click.testing import CliRunner

    from caffe2keras.cli import main

    prototxt_path = RCNN / "faster_rcnn_zf_reduced.prototxt"
    weights = tmp_path / "w.caffemodel"
    random_caffemodel(prototxt_path, weights, seed=1)
    out = tmp_path / "frcnn.keras"
    result = CliRunner().invoke(main, [str(prototxt_path), str(weights), "-o", str(out)])
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(out, safe_mode=True, compile=False)
    assert model.output_names == ["bbox_pred", "cls_prob"]


@pytest.mark.slow
@pytest.mark.parametrize("image_hw", [(224, 224), (600, 800)])
def test_full_size_zf_faster_rcnn_matches_opencv(tmp_path, image_hw):
    prototxt_path = shared_path("zoo", "faster_rcnn_zf_voc", "deploy.prototxt")
    _, _, _, errors = compare_detector(
        tmp_path, prototxt_path, image_hw, input_shapes={"data": (1, 3, *image_hw)}
    )
    print(json.dumps({"image": image_hw, **errors}))


# --- detections from the converted model (caffe2keras predict) ---


@pytest.mark.parametrize("case", ["per_class", "agnostic"])
def test_detections_match_py_faster_rcnn_test_code(case):
    from caffe2keras.detect import detections

    ref = _reference()
    get = lambda key: ref[f"detect/{case}/{key}"]
    rows = detections(get("cls_prob"), get("bbox_pred"), get("rois"), tuple(get("image_hw")), float(get("scale")),
                      float(get("threshold")))
    assert len(rows) == len(get("rows")) > 50
    assert_close(rows, get("rows"), f"{case} detections")


def test_predict_prints_detections(tmp_path):
    import tensorflow as tf
    from click.testing import CliRunner

    from caffe2keras.cli import main

    prototxt_path = RCNN / "faster_rcnn_zf_reduced.prototxt"
    weights = tmp_path / "w.caffemodel"
    random_caffemodel(prototxt_path, weights, seed=1)
    model = tmp_path / "frcnn.keras"
    runner = CliRunner()
    result = runner.invoke(main, [str(prototxt_path), str(weights), "-o", str(model), "--mean", "102.98,115.95,122.77"])
    assert result.exit_code == 0, result.output
    image = tmp_path / "street.png"
    rgb = np.random.default_rng(3).integers(0, 255, size=(150, 300, 3), dtype=np.uint8)
    tf.io.write_file(str(image), tf.io.encode_png(rgb))
    labels = tmp_path / "voc.txt"
    labels.write_text("\n".join(["__background__"] + [f"class{i}" for i in range(1, 21)]))
    result = runner.invoke(main, ["predict", str(model), str(image), "--labels", str(labels),
                                  "--threshold", "0.05", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found and all(d["score"] >= 0.05 and d["label"] == f"class{d['index']}" for d in found)
    assert [d["score"] for d in found] == sorted((d["score"] for d in found), reverse=True)
    for d in found:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 299 and 0 <= y1 <= y2 <= 149, "boxes are clipped to the image"
    table = runner.invoke(main, ["predict", str(model), str(image), "--threshold", "0.99"])
    assert table.exit_code == 0 and "no detection above the threshold" in table.stdout
