"""Preprocessing baked in at conversion, and ``predict`` on images.

Caffe's Transformer computes ``(x[BGR] - mean) * scale`` with a mean image cropped like the
image (centre crop at test time); the converted model with ``--mean/--scale/--rgb-input`` must
compute exactly what the plain model computes on input preprocessed that way, and ``predict``
must not preprocess again. The open_nsfw-style flow: convert with ``--mean 104,117,123
--rgb-input``, predict a PNG, same probabilities as Caffe's computation on the same pixels.
"""

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from conftest import GOLDEN
from helpers import assert_close, build

from caffe2keras import preprocess
from caffe2keras.cli import main
from caffe2keras.errors import ConversionError
from caffe2keras.predict import load_image, top_k

NET = GOLDEN / "zoo" / "bvlc_googlenet"
MEAN = GOLDEN / "mean"
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)


@pytest.fixture(scope="module")
def plain():
    """GoogLeNet replica without preprocessing (takes what Caffe's Transformer produces)."""
    return build(NET / "deploy.prototxt", NET / "weights.caffemodel").model


def pixels(height, width, seed=7):
    """A deterministic RGB image with structure (gradients and noise), uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx + yy) % 256], -1)
    return np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)


def write_png(path, rgb):
    tf.io.write_file(str(path), tf.io.encode_png(rgb))
    return path


def caffe_input(rgb, mean, scale):
    """What Caffe's Transformer feeds the net for these RGB pixels: BGR, minus mean, times scale."""
    return (rgb.astype(np.float32)[..., ::-1] - mean) * scale


def test_mean_binaryproto_legacy_and_shape_layouts_read_the_same_array():
    expected = np.load(MEAN / "mean.npy")
    for name in ("mean.binaryproto", "mean_shape.binaryproto"):
        np.testing.assert_array_equal(preprocess.load_mean_image(MEAN / name), expected)


def test_mean_image_is_centre_cropped_like_caffe_test_phase():
    mean = np.load(MEAN / "mean.npy")
    crop = preprocess.centre_crop_mean(mean, 224, 224)
    np.testing.assert_array_equal(crop, mean[:, 16:240, 16:240].transpose(1, 2, 0))
    crop = preprocess.centre_crop_mean(mean, 227, 227)  # CaffeNet: offset (256 - 227) // 2 = 14
    np.testing.assert_array_equal(crop, mean[:, 14:241, 14:241].transpose(1, 2, 0))
    with pytest.raises(ConversionError, match="smaller than"):
        preprocess.centre_crop_mean(mean, 300, 300)


def test_preprocess_swaps_then_subtracts_then_scales():
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 6, 3)).astype(np.float32)
    layer = preprocess.make_layer((None, 5, 6, 3), mean=[104, 117, 123], scale=0.017, rgb_input=True)
    np.testing.assert_allclose(np.asarray(layer(x)), caffe_input(x, BGR_MEAN, 0.017), rtol=1e-6, atol=1e-5)
    mean_image = np.random.default_rng(1).uniform(90, 130, (3, 9, 8)).astype(np.float32)
    layer = preprocess.make_layer((None, 5, 6, 3), mean=mean_image, scale=2.0)
    crop = mean_image[:, 2:7, 1:7].transpose(1, 2, 0)
    np.testing.assert_allclose(np.asarray(layer(x)), (x - crop) * 2.0, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_preprocessing_is_recorded_in_the_saved_model(plain, tmp_path, suffix):
    mean = preprocess.load_mean_image(MEAN / "mean.binaryproto")
    options = {"mean": mean, "scale": 0.017, "rgb_input": True, "mean_source": "mean.binaryproto"}
    model = build(NET / "deploy.prototxt", NET / "weights.caffemodel", preprocessing=options).model
    assert [i.name for i in model.inputs] == ["data"]
    assert "conv1_7x7_s2" in [layer.name for layer in model.layers]
    path = tmp_path / f"m{suffix}"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    config = preprocess.find(loaded)
    assert config["rgb_input"] and config["scale"] == 0.017 and tuple(config["mean_shape"]) == (224, 224, 3)
    x = np.random.default_rng(2).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    crop = mean[:, 16:240, 16:240].transpose(1, 2, 0)
    want = np.asarray(plain((x[..., ::-1] - crop) * 0.017, training=False))
    assert want.max() < 0.99, "saturated softmax: the comparison would not see a wrong preprocessing"
    assert_close(np.asarray(loaded(x, training=False)), want, f"{suffix} reload")


def test_image_is_scaled_to_cover_and_centre_cropped(tmp_path):
    # 40 x 80 image, model 20 x 20: scaled by 1/2 to 20 x 40, then columns 10..30 kept.
    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, 20:60] = 200  # the middle half is bright, exactly what the crop keeps
    path = write_png(tmp_path / "wide.png", rgb)
    image = load_image(path, 20, 20, 3)
    assert image.shape == (20, 20, 3)
    np.testing.assert_allclose(image[:, 1:-1], 200.0, atol=1e-3)
    same = load_image(write_png(tmp_path / "exact.png", pixels(20, 20)), 20, 20, 3)
    np.testing.assert_array_equal(same, pixels(20, 20).astype(np.float32))


def test_top_k_orders_by_probability_with_labels():
    got = top_k(np.array([0.1, 0.6, 0.05, 0.25]), 3, ["a", "b", "c", "d"])
    assert [(p.rank, p.index, p.label) for p in got] == [(1, 1, "b"), (2, 3, "d"), (3, 0, "a")]


def parse_table(output):
    rows = []
    for line in output.splitlines():
        m = re.match(r"\s*(\d+)\s+([0-9.eE+-]+)\s+(\d+)\s*(.*)$", line)
        if m:
            rows.append((int(m.group(3)), float(m.group(2)), m.group(4)))
    return rows


def test_open_nsfw_flow_predict_matches_caffe_computation(plain, tmp_path):
    """convert --mean 104,117,123 --rgb-input (and a scale, so the probabilities are spread
    rather than saturated), predict a PNG: the table is Caffe's softmax for those pixels."""
    runner = CliRunner()
    model_path = tmp_path / "nsfw_style.keras"
    args = [str(NET / "deploy.prototxt"), str(NET / "weights.caffemodel"), "-o", str(model_path),
            "--mean", "104,117,123", "--rgb-input", "--scale", "0.017", "-q"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # --quiet
    rgb = pixels(224, 224)
    image = write_png(tmp_path / "input.png", rgb)
    labels = tmp_path / "synset_words.txt"
    labels.write_text("".join(f"n{i:08d} class {i}\n" for i in range(125)))

    result = runner.invoke(main, ["predict", str(model_path), str(image), "--labels", str(labels), "--top", "5"])
    assert result.exit_code == 0, result.output
    rows = parse_table(result.stdout)
    assert len(rows) == 5

    caffe_prob = np.asarray(plain(caffe_input(rgb, BGR_MEAN, 0.017)[None], training=False))[0]
    order = np.argsort(-caffe_prob)[:5]
    assert [r[0] for r in rows] == list(order)
    for (index, prob, label), want in zip(rows, caffe_prob[order]):
        assert label == f"n{index:08d} class {index}"
        assert abs(prob - want) <= 1e-4 * max(1.0, want), (index, prob, want)
        assert prob == pytest.approx(float(f"{want:.7g}"), rel=1e-6)  # printed to 7 significant digits
    assert caffe_prob[order[0]] < 0.99, "saturated softmax: the comparison would not see a wrong input"
    # Without the channel swap the answer differs: the test sees a missing --rgb-input.
    unswapped = np.asarray(plain(((rgb.astype(np.float32) - BGR_MEAN) * 0.017)[None], training=False))[0]
    assert np.max(np.abs(unswapped - caffe_prob)) > 1e-3


def test_open_nsfw_flow_exact_options_on_the_logits(tmp_path):
    """The exact open_nsfw options, --mean 104,117,123 --rgb-input, give pixel-range inputs that
    saturate this replica's softmax; so the model is cut at the classifier (--outputs) and
    predict's scores — the logits — are compared with Caffe's computation on the same pixels."""
    from caffe2keras.predict import predict

    cut = build(NET / "deploy.prototxt", NET / "weights.caffemodel", outputs=["loss3/classifier"]).model
    path = tmp_path / "m.keras"
    options = {"mean": [104, 117, 123], "rgb_input": True}
    build(NET / "deploy.prototxt", NET / "weights.caffemodel", outputs=["loss3/classifier"], preprocessing=options).model.save(path)
    rgb = pixels(224, 224, seed=3)
    (ranking,), notes = predict(path, write_png(tmp_path / "x.png", rgb), k=125)
    assert notes == [] and not ranking.probabilities  # logits are scores
    want = np.asarray(cut(caffe_input(rgb, BGR_MEAN, 1.0)[None], training=False))[0]
    got = np.zeros(125)
    for p in ranking.predictions:
        got[p.index] = p.score
    assert_close(got, want, "predict scores")
    unswapped = np.asarray(cut(((rgb.astype(np.float32) - BGR_MEAN))[None], training=False))[0]
    assert np.max(np.abs(unswapped - want)) > 1e-2 * np.max(np.abs(want))


def test_predict_without_baked_preprocessing_says_so(plain, tmp_path):
    path = tmp_path / "plain.keras"
    plain.save(path)
    image = write_png(tmp_path / "x.png", pixels(224, 224))
    result = CliRunner().invoke(main, ["predict", str(path), str(image), "--top", "2"])
    assert result.exit_code == 0, result.output
    assert "no baked preprocessing" in result.output
    assert len(parse_table(result.stdout)) == 2


def test_rgb_input_on_grey_model_is_refused():
    with pytest.raises(ConversionError, match="3-channel"):
        preprocess.make_layer((None, 28, 28, 1), rgb_input=True)


def predict_cli(*args):
    return CliRunner().invoke(main, ["predict", *(str(a) for a in args)])


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory):
    """GoogLeNet converted by the CLI with two outputs, the logits and the softmax, preprocessing
    baked in: (model path, an image, Caffe's logits and probabilities for it)."""
    tmp = tmp_path_factory.mktemp("two_outputs")
    model = tmp / "two.keras"
    result = CliRunner().invoke(main, [str(NET / "deploy.prototxt"), str(NET / "weights.caffemodel"), "-o", str(model),
                                       "--outputs", "loss3/classifier,prob", "--mean", "104,117,123", "--rgb-input",
                                       "--scale", "0.017", "-q"])
    assert result.exit_code == 0, result.output
    rgb = pixels(224, 224, seed=11)
    image = write_png(tmp / "x.png", rgb)
    cut = build(NET / "deploy.prototxt", NET / "weights.caffemodel", outputs=["loss3/classifier", "prob"]).model
    logits, prob = (np.asarray(v)[0] for v in cut(caffe_input(rgb, BGR_MEAN, 0.017)[None], training=False))
    return model, image, logits, prob


def test_predict_ranks_the_softmax_output_and_says_which(two_outputs):
    model, image, _, prob = two_outputs
    result = predict_cli(model, image, "--top", "3")
    assert result.exit_code == 0, result.output
    assert "note: ranking output 'prob' (the softmax output) of loss3_classifier, prob" in result.stderr
    assert result.stdout.splitlines()[0].split()[:2] == ["rank", "probability"]
    rows = parse_table(result.stdout)
    assert [r[0] for r in rows] == list(np.argsort(-prob)[:3])
    for index, value, _ in rows:
        assert value == pytest.approx(prob[index], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("spelling", ["loss3/classifier", "loss3_classifier"])
def test_predict_output_by_caffe_blob_name_gives_scores(two_outputs, spelling):
    """--output names a Caffe blob (its Caffe or Keras spelling); logits are called scores."""
    model, image, logits, _ = two_outputs
    result = predict_cli(model, image, "--top", "3", "--output", spelling, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert [p["index"] for p in found] == list(np.argsort(-logits)[:3])
    assert all("score" in p and "probability" not in p for p in found)
    assert_close(np.array([p["score"] for p in found]), logits[[p["index"] for p in found]], "logits")
    assert "note: ranking" not in result.stderr


def test_predict_unknown_output_lists_the_outputs(two_outputs):
    model, image, _, _ = two_outputs
    result = predict_cli(model, image, "--output", "keras_tensor_159")
    assert result.exit_code == 2
    assert "has no output 'keras_tensor_159' (outputs: loss3_classifier, prob)" in result.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The GoogLeNet replica with RGB input, mean and scale baked in, in every format."""
    tmp = tmp_path_factory.mktemp("exported")
    from caffe2keras import export

    model = build(NET / "deploy.prototxt", NET / "weights.caffemodel",
                  preprocessing={"mean": [104, 117, 123], "scale": 0.017, "rgb_input": True}).model
    paths = {}
    for name in ("m.keras", "m.tflite", "m.onnx", "sm/"):
        if name.endswith(".onnx"):
            pytest.importorskip("tf2onnx")
            pytest.importorskip("onnxruntime")
        paths[name] = export.save(model, f"{tmp}/{name}")
    return paths


@pytest.mark.parametrize("name", ["m.tflite", "m.onnx", "sm/"])
def test_predict_any_exported_format_gives_the_keras_table(exported, tmp_path, name):
    """The exported files remember the baked preprocessing (RGB input): same classes, same
    probabilities as the .keras file."""
    image = write_png(tmp_path / "x.png", pixels(240, 300, seed=4))
    want = predict_cli(exported["m.keras"], image, "--top", "5", "--json")
    got = predict_cli(exported[name], image, "--top", "5", "--json")
    assert want.exit_code == 0 and got.exit_code == 0, got.output
    assert "no baked preprocessing" not in got.stderr
    want, got = json.loads(want.stdout), json.loads(got.stdout)
    assert [p["index"] for p in got] == [p["index"] for p in want]
    assert_close(np.array([p["probability"] for p in got]), np.array([p["probability"] for p in want]), name)


def test_predict_a_folder_in_batches(exported, tmp_path, monkeypatch):
    """A folder: every image (others skipped), in one compiled call per batch, one entry each;
    the same numbers as one image at a time; an image that cannot be decoded is named."""
    import keras

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        write_png(folder / f"im{i}.png", pixels(200 + 20 * i, 260, seed=20 + i))
    (folder / "readme.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    calls = []
    batch_call = keras.Model.predict_on_batch
    monkeypatch.setattr(keras.Model, "predict_on_batch", lambda self, x: calls.append(len(x)) or batch_call(self, x))
    result = predict_cli(exported["m.keras"], folder, "--top", "2", "--json")
    assert result.exit_code == 0, result.output
    assert calls == [3]
    entries = json.loads(result.stdout)
    assert [Path(e["image"]).name for e in entries] == ["broken.png", "im0.png", "im1.png", "im2.png"]
    assert "cannot be decoded as an image" in entries[0]["error"]
    for entry in entries[1:]:
        alone = json.loads(predict_cli(exported["m.keras"], entry["image"], "--top", "2", "--json").stdout)
        assert [p["index"] for p in entry["predictions"]] == [p["index"] for p in alone]
        assert_close(np.array([p["probability"] for p in entry["predictions"]]),
                     np.array([p["probability"] for p in alone]), "batched")
    table = predict_cli(exported["m.keras"], folder, "--top", "2")
    assert table.exit_code == 0 and f"{folder / 'im1.png'}:" in table.stdout
    assert len(parse_table(table.stdout)) == 6


def test_predict_without_a_softmax_output_says_which_it_ranks_and_calls_them_scores(tmp_path):
    """Several outputs, none a softmax's (was: the first sorted output ranked silently and its
    logits headed "probability")."""
    lenet = GOLDEN / "zoo" / "lenet"
    model = tmp_path / "logits.keras"
    result = CliRunner().invoke(main, [str(lenet / "deploy.prototxt"), str(lenet / "weights.caffemodel"), "-o",
                                       str(model), "--outputs", "ip2,ip1", "-q"])
    assert result.exit_code == 0, result.output
    image = write_png(tmp_path / "x.png", pixels(28, 28, seed=5))
    result = predict_cli(model, image, "--top", "3")
    assert result.exit_code == 0, result.output
    assert "note: ranking output 'ip2' (no output is a softmax's, so the first) of ip2, ip1" in result.stderr
    assert result.stdout.splitlines()[0].split()[:2] == ["rank", "score"]
    cut = build(lenet / "deploy.prototxt", lenet / "weights.caffemodel", outputs=["ip2"]).model
    ip2 = np.asarray(cut(load_image(image, 28, 28, 1)[None], training=False))[0]
    rows = parse_table(result.stdout)
    assert [r[0] for r in rows] == list(np.argsort(-ip2)[:3]) and ip2.max() > 1  # logits, not probabilities
    assert_close(np.array([r[1] for r in rows]), ip2[[r[0] for r in rows]], "ip2 scores")
