"""What a user meets in the first hour, run as the user runs it: the Python API's options,
warnings, exit codes, mistyped commands, wrong files, messages that are cut, the stages and
summary of ``convert``, ``inspect`` with another network's caffemodel.

In-process through click's runner; the nets are LeNet (whose golden fixture real Caffe made) and
the small nets of ``test_errors``.
"""

import dataclasses
import gzip
import json
import pickle
import tarfile
import warnings
import zipfile

import h5py
import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GOLDEN
from helpers import assert_close

import caffe2keras
from caffe2keras import api, cli, spec, types
from caffe2keras.cli import EXIT_BAD_INPUT, EXIT_BATCH_FAILED, EXIT_INTERNAL, EXIT_MISMATCH, main
from caffe2keras.errors import ConversionError, ConversionWarning, clip
from caffe2keras.schema import caffe_pb2

LENET = GOLDEN / "zoo" / "lenet"
PROTOTXT, CAFFEMODEL = str(LENET / "deploy.prototxt"), str(LENET / "weights.caffemodel")
OTHER_CAFFEMODEL = str(GOLDEN / "zoo" / "cifar10_quick" / "weights.caffemodel")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def stderr_lines(result):
    return result.stderr.strip().splitlines()


def lenet_input():
    return np.load(LENET / "expected.npz")["input/data"]


def lenet_prob():
    return np.load(LENET / "expected.npz")["layer/prob/prob"]


@pytest.fixture(scope="module")
def with_extra_layer(tmp_path_factory):
    """LeNet's caffemodel with the weights of a layer its prototxt lacks ('aux_fc'), as a
    training net's caffemodel carries auxiliary heads."""
    net = caffe_pb2.NetParameter()
    net.ParseFromString((LENET / "weights.caffemodel").read_bytes())
    extra = net.layer.add()
    extra.CopyFrom(next(layer for layer in net.layer if layer.name == "ip2"))
    extra.name = "aux_fc"
    path = tmp_path_factory.mktemp("weights") / "with_aux.caffemodel"
    path.write_bytes(net.SerializeToString())
    return str(path)


# --- the Python API ------------------------------------------------------------------------


def test_api_outputs_as_one_blob_name_and_as_comma_separated_text():
    assert caffe2keras.convert(PROTOTXT, CAFFEMODEL, outputs="ip1").output_names == ["ip1"]
    assert caffe2keras.convert(PROTOTXT, CAFFEMODEL, outputs="ip1, prob").output_names == ["ip1", "prob"]
    with pytest.raises(ConversionError, match="does not have: ip3"):
        caffe2keras.convert(PROTOTXT, CAFFEMODEL, outputs="ip3")


@pytest.mark.parametrize("shapes", [(2, 1, 28, 28), [2, 1, 28, 28], "2,1,28,28", "data=2,1,28,28",
                                    {"data": (2, 1, 28, 28)}, {"data": "2,1,28,28"}, ["data=2,1,28,28"]])
def test_api_input_shapes_as_a_plain_tuple_text_or_dict_match_caffe(shapes):
    model = caffe2keras.convert(PROTOTXT, CAFFEMODEL, input_shapes=shapes)
    assert_close(model(lenet_input().transpose(0, 2, 3, 1)), lenet_prob(), f"prob with input_shapes={shapes!r}")


@pytest.mark.parametrize("shapes, says", [((2, 1, 28), "only 2-D convolution"), ("2,1,x28", "expected [NAME=]N,C,H,W"),
                                          ((2, 0, 28, 28), "dimensions must be positive"), (7, "not 7"),
                                          ({"blob": (1, 1, 28, 28)}, "'blob', which is not an input")])
def test_api_bad_input_shapes_are_conversion_errors(shapes, says):
    with pytest.raises(ConversionError) as info:
        caffe2keras.convert(PROTOTXT, CAFFEMODEL, input_shapes=shapes)
    assert says in str(info.value) and str(info.value).startswith(PROTOTXT)


def test_api_bakes_preprocessing_in_like_the_command_line(tmp_path):
    """(x[BGR] - mean) * scale of the pixels fed is what Caffe was fed."""
    mean, scale = 33.0, 0.5
    model = caffe2keras.convert(PROTOTXT, CAFFEMODEL, mean=mean, scale=scale)
    pixels = lenet_input().transpose(0, 2, 3, 1) / scale + mean
    assert_close(model(pixels), lenet_prob(), "prob of the preprocessed API model")
    result = run(PROTOTXT, CAFFEMODEL, "-o", tmp_path / "cli.keras", "--mean", mean, "--scale", scale, "-q")
    assert result.exit_code == 0, result.output
    cli_model = keras.models.load_model(tmp_path / "cli.keras", safe_mode=True)
    np.testing.assert_array_equal(cli_model(pixels), model(pixels))
    negative = caffe2keras.convert(PROTOTXT, CAFFEMODEL, mean=mean)  # scale forgotten: another model
    assert np.abs(np.asarray(negative(pixels)) - lenet_prob()).max() > 1e-2


def test_api_rgb_input_swaps_channels_like_the_command_line(tmp_path):
    """rgb_input=True: the model takes RGB pixels and feeds Caffe's net BGR, minus the mean."""
    net = GOLDEN / "zoo" / "cifar10_quick"
    expected = np.load(net / "expected.npz")
    mean = (104.0, 117.0, 123.0)
    bgr = expected["input/data"].transpose(0, 2, 3, 1) + np.array(mean, np.float32)
    model = caffe2keras.convert(net / "deploy.prototxt", net / "weights.caffemodel", mean=mean, rgb_input=True)
    assert_close(model(bgr[..., ::-1].copy()), expected["layer/prob/prob"], "prob of RGB pixels")
    result = run(net / "deploy.prototxt", net / "weights.caffemodel", "-o", tmp_path / "cli.keras", "--mean",
                 "104,117,123", "--rgb-input", "-q")
    assert result.exit_code == 0, result.output
    cli_model = keras.models.load_model(tmp_path / "cli.keras", safe_mode=True)
    np.testing.assert_array_equal(cli_model(bgr[..., ::-1].copy()), model(bgr[..., ::-1].copy()))
    assert np.abs(np.asarray(model(bgr)) - expected["layer/prob/prob"]).max() > 1e-3  # BGR given: another answer


def test_api_save_picks_the_format_by_the_path_and_keeps_existing_files(tmp_path):
    model = caffe2keras.convert(PROTOTXT, CAFFEMODEL)
    assert api.save(model, tmp_path / "m.h5") == "h5"
    assert api.save(model, tmp_path / "m.keras") == "keras"
    with pytest.raises(ConversionError, match="exists; pass --force"):
        api.save(model, tmp_path / "m.keras")
    assert api.save(model, tmp_path / "m.keras", force=True) == "keras"
    with pytest.raises(ConversionError, match="unsupported output extension '.pb'"):
        api.save(model, tmp_path / "m.pb")
    reloaded = keras.models.load_model(tmp_path / "m.h5", safe_mode=True)
    assert_close(reloaded(lenet_input().transpose(0, 2, 3, 1)), lenet_prob(), "prob of the saved .h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5", "m.keras"]


def test_api_warns_through_warnings_naming_only_layers_the_prototxt_lacks(with_extra_layer, capfd):
    keras.ops.zeros(1)  # TensorFlow's first op logs its devices to fd 2: not ours to count
    capfd.readouterr()
    with pytest.warns(ConversionWarning) as caught:
        caffe2keras.convert(PROTOTXT, with_extra_layer, outputs="ip1")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "aux_fc" in message and "ip2" not in message  # ip2 is in the prototxt, only cut by outputs
    assert capfd.readouterr().err == ""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        caffe2keras.convert(PROTOTXT, CAFFEMODEL, outputs="ip1")  # a cut alone is no news


def test_api_warning_made_an_error_by_the_callers_filter_is_raised_as_itself(with_extra_layer):
    """``warnings.simplefilter("error")`` (``python -W error``): the ConversionWarning itself
    (was: wrapped as an InternalError, "internal error while converting: ConversionWarning")."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConversionWarning, match="lacks: aux_fc"):
            caffe2keras.convert(PROTOTXT, with_extra_layer)


def test_cli_shows_each_warning_as_one_line(with_extra_layer, tmp_path):
    result = run(PROTOTXT, with_extra_layer, "-o", tmp_path / "m.keras", "--outputs", "ip1")
    assert result.exit_code == 0, result.output
    (line,) = stderr_lines(result)
    assert line.startswith("warning: ") and "aux_fc" in line and "ip2" not in line


# --- exit codes, mistyped commands ---------------------------------------------------------


def test_exit_codes_are_distinct_and_listed_in_help():
    codes = {cli.EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_MISMATCH, EXIT_BATCH_FAILED, cli.EXIT_INTERRUPTED}
    assert len(codes) == 6
    text = run("--help").output
    for code, meaning in ((EXIT_MISMATCH, "verify"), (EXIT_BATCH_FAILED, "batch"), (EXIT_BAD_INPUT, "bad input"),
                          (EXIT_INTERNAL, "internal error")):
        assert any(line.split()[:1] == [str(code)] and meaning in line for line in text.splitlines()), (code, text)


@pytest.mark.parametrize("word, meant", [("inspct", "inspect"), ("verfy", "verify"), ("conver", "convert"),
                                         ("bacth", "batch")])
def test_a_mistyped_command_is_named_not_taken_for_a_file(word, meant):
    result = run(word, PROTOTXT)
    assert result.exit_code == EXIT_BAD_INPUT
    assert stderr_lines(result) == [f"error: no such command '{word}' (did you mean '{meant}'?); see caffe2keras "
                                    f"--help"]


def test_a_file_named_like_a_command_is_converted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inspct").write_text((LENET / "deploy.prototxt").read_text())
    result = run("inspct", CAFFEMODEL, "-o", "m.keras", "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.keras").is_file()


def test_a_word_far_from_every_command_is_a_missing_file():
    result = run("deploy.prototxt", "-o", "m.keras")
    assert result.exit_code == EXIT_BAD_INPUT
    assert stderr_lines(result) == ["error: deploy.prototxt: no such file"]


# --- messages are cut between words --------------------------------------------------------


def test_clip_cuts_between_words_and_before_an_open_quotation():
    text = ("Could not locate class 'CaffePooling'. Make sure custom classes are decorated with "
            "`@keras.saving.register_keras_serializable()`, or pass them by `load_model(path, custom_objects="
            "{'CaffePooling': CaffePooling})` when loading")
    for limit in range(20, len(text)):
        cut = clip(text, limit)
        kept = cut.removesuffix(" …")
        assert cut.endswith(" …") and text.startswith(kept) and len(kept) <= limit
        assert text[len(kept):].lstrip(",;:").startswith(" ")  # whole words, not a piece of one
        assert kept.count("`") % 2 == 0 and kept.count("(") == kept.count(")") and kept.count("{") == kept.count("}")
    assert clip(text, len(text)) == text


def test_an_internal_error_is_one_line_cut_between_words(tmp_path, monkeypatch):
    message = "the op failed; " * 30 + "call it by `load_model(path, custom_objects={...})` instead"

    def broken(ctx, node, inputs):
        raise RuntimeError(message)

    monkeypatch.setitem(spec.SPECS, "ReLU", dataclasses.replace(types.of("ReLU"), translate=broken))
    result = run(PROTOTXT, CAFFEMODEL, "-o", tmp_path / "m.keras")
    assert result.exit_code == EXIT_INTERNAL
    (line,) = stderr_lines(result)
    assert "layer 'relu1'" in line and "RuntimeError: the op failed;" in line and "`load_mo" not in line
    assert " … (a caffe2keras bug" in line
    assert list(tmp_path.iterdir()) == []


def whole_words_of(full, shown):
    """``shown`` is ``full`` whole or cut after a whole word and marked with ``…``."""
    full = " ".join(full.split())
    if shown == full:
        return True
    kept = shown.removesuffix(" …")
    return shown.endswith(" …") and full.startswith(kept) and full[len(kept):][:1] in (" ", ",", ";", ":")


def test_a_model_that_cannot_be_loaded_is_named_in_whole_words(tmp_path):
    """predict/verify quote the runtime's own error: cut between words (was: at 200 characters)."""
    import tensorflow as tf

    folder = tmp_path / ("savedmodel_" + "x" * 150)
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x07" * 64)
    with pytest.raises(Exception) as raised:
        tf.saved_model.load(str(folder))
    image = tmp_path / "x.png"
    tf.io.write_file(str(image), tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)))
    result = run("predict", folder, image)
    assert result.exit_code == EXIT_BAD_INPUT
    (line,) = stderr_lines(result)
    quoted = line.split("with a serving_default signature (", 1)[1].removesuffix(")")
    assert len(" ".join(str(raised.value).split())) > 200 and whole_words_of(str(raised.value), quoted), line


def test_opencvs_message_is_quoted_in_whole_words_without_its_source_line(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    model = tmp_path / "m.keras"
    assert run(PROTOTXT, CAFFEMODEL, "-o", model, "-q").exit_code == 0
    problem = "(-5:Bad argument) Duplicate blobs produced by multiple sources " * 5 + "in function 'addOutput'"
    message = f"OpenCV(4.14.0) /io/opencv/modules/dnn/src/caffe/caffe_importer.cpp:568: error: {problem}\n"

    def refuse(*args):
        raise cv2.error(message)

    monkeypatch.setattr(cv2.dnn, "readNetFromCaffe", refuse)
    result = run("verify", PROTOTXT, CAFFEMODEL, model)
    assert result.exit_code == EXIT_BAD_INPUT
    (line,) = stderr_lines(result)
    quoted = line.split("OpenCV cannot load this network (", 1)[1].removesuffix(")")
    assert quoted.startswith("(-5:Bad argument) Duplicate") and whole_words_of(problem, quoted), line


def test_the_tensorflow_exporters_error_is_reported_in_whole_words(tmp_path, monkeypatch, capsys):
    """The process that writes TensorFlow's formats for another backend reports its failure as
    JSON; the error in it is cut between words too (was: at 300 characters)."""
    from caffe2keras import export

    source = tmp_path / ("model_" + "y" * 300 + ".keras")  # no such file: Keras' message quotes the path
    with pytest.raises(Exception) as raised:
        keras.models.load_model(source, safe_mode=True, compile=False)
    monkeypatch.setattr("sys.argv", ["child", str(source), str(tmp_path / "m.tflite"), "tflite", "{}"])
    with pytest.raises(SystemExit) as exited:
        export.tensorflow_child()
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exited.value.code == 1 and report["internal"]
    name, _, shown = report["error"].partition(": ")
    assert name == type(raised.value).__name__ and len(str(raised.value)) > 300
    assert whole_words_of(str(raised.value), shown), report

# --- convert's stages and summary ----------------------------------------------------------

STAGES = ("parse", "shapes", "read weights", "build", "save")


def test_convert_shows_its_stages_with_sizes_and_times_on_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "stderr_is_terminal", lambda: True)
    result = run(PROTOTXT, CAFFEMODEL, "-o", tmp_path / "m.keras")
    assert result.exit_code == 0, result.output
    lines = stderr_lines(result)
    assert [line[:13].strip() for line in lines] == list(STAGES)
    assert "deploy.prototxt (" in lines[0] and " kB) … " in lines[0] and "9 layers" in lines[0]
    assert "431,080 learned values" in lines[1]
    assert "weights.caffemodel (1.7 MB) … " in lines[2] and "4 layers with weights" in lines[2]
    assert "431,080 parameters" in lines[3] and "m.keras (keras) … " in lines[4] and " MB" in lines[4]
    assert all(" … " in line and "s" in line.split(" … ")[1] for line in lines)
    quiet = run(PROTOTXT, CAFFEMODEL, "-o", tmp_path / "q.keras", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == quiet.stdout == ""


def test_convert_stages_off_a_terminal_only_when_long(tmp_path, monkeypatch):
    result = run(PROTOTXT, CAFFEMODEL, "-o", tmp_path / "m.keras")
    assert result.exit_code == 0 and result.stderr == ""
    monkeypatch.setattr(cli, "LONG_STAGE_SECONDS", 0.0)
    result = run(PROTOTXT, CAFFEMODEL, "-o", tmp_path / "n.keras")
    assert [line[:13].strip() for line in stderr_lines(result)] == list(STAGES)


def test_convert_summary_gives_the_keras_input_shape_and_says_when_weights_are_untrained(tmp_path):
    result = run(PROTOTXT, "-o", tmp_path / "m.keras")
    assert result.exit_code == 0, result.output
    assert "  input  data: Caffe [2, 1, 28, 28] (NCHW) → Keras [None, 28, 28, 1] (NHWC)" in result.stdout
    assert "no caffemodel given: the weights are untrained (Keras' initialisers)" in result.stdout
    trained = run(PROTOTXT, CAFFEMODEL, "-o", tmp_path / "t.keras")
    assert f"  weights from {CAFFEMODEL}" in trained.stdout and "untrained" not in trained.stdout


# --- inspect checks the caffemodel ---------------------------------------------------------


def test_inspect_with_another_networks_caffemodel_lists_the_misfits_and_fails():
    result = run("inspect", PROTOTXT, OTHER_CAFFEMODEL)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "every layer is supported" not in result.stdout
    assert ("  conv1 (Convolution): blob 0 has shape [32, 3, 5, 5] in the caffemodel, the prototxt implies "
            "[20, 1, 5, 5]") in result.stdout
    assert "  ip2 (InnerProduct): blob 0 has shape [10, 64]" in result.stdout
    assert "the caffemodel holds weights for 1 layer(s) the prototxt lacks: conv3" in result.stdout
    (line,) = stderr_lines(result)
    assert line.startswith(f"error: {OTHER_CAFFEMODEL}: does not fit {PROTOTXT}: 4 with other shapes")
    as_json = json.loads(run("inspect", PROTOTXT, OTHER_CAFFEMODEL, "--json").stdout)
    assert as_json["weights_not_fitting"] == ["conv1", "conv2", "ip1", "ip2"]


def test_inspect_with_the_networks_own_caffemodel_passes():
    result = run("inspect", PROTOTXT, CAFFEMODEL)
    assert result.exit_code == 0 and result.stderr == ""
    assert "every layer is supported" in result.stdout and "do not fit" not in result.stdout


def test_inspect_names_layers_without_weights_and_stays_tolerant(tmp_path):
    net = caffe_pb2.NetParameter()
    net.ParseFromString((LENET / "weights.caffemodel").read_bytes())
    del net.layer[next(i for i, layer in enumerate(net.layer) if layer.name == "conv2")]
    partial = tmp_path / "partial.caffemodel"
    partial.write_bytes(net.SerializeToString())
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text((LENET / "deploy.prototxt").read_text().replace('type: "ReLU"', 'type: "Mystery"'))
    result = run("inspect", prototxt, partial)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "  conv2 (Convolution): no weights in the caffemodel" in result.stdout
    assert "NO: no translator for this type" in result.stdout  # listed, not raised
    assert "1 layer(s) without weights" in result.stderr


# --- wrong files, named for what they are --------------------------------------------------


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _tar(path, mode):
    with tarfile.open(path, mode) as archive:
        archive.add(PROTOTXT, arcname="lenet/deploy.prototxt")
        archive.add(CAFFEMODEL, arcname="lenet/weights.caffemodel")


def make_wrong_file(tmp_path, kind):
    path = tmp_path / {"directory": "models", "savedmodel": "saved"}.get(kind, f"wrong.{kind}")
    if kind == "html":
        path.write_text('<!DOCTYPE html>\n<html lang="en"><head><title>weights.caffemodel · GitHub</title>')
    elif kind == "lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 53533754\n")
    elif kind == "zip":
        _zip(path, {"lenet/deploy.prototxt": "", "lenet/weights.caffemodel": b"\0"})
    elif kind == "tar.gz":
        _tar(path, "w:gz")
    elif kind == "tar":
        _tar(path, "w")
    elif kind == "keras":
        _zip(path, {"metadata.json": "{}", "config.json": "{}", "model.weights.h5": b""})
    elif kind == "pth":
        _zip(path, {"archive/data.pkl": pickle.dumps({}), "archive/version": "3"})
    elif kind == "pt":
        path.write_bytes(pickle.dumps({"state_dict": {}}, protocol=2))
    elif kind == "h5":
        with h5py.File(path, "w") as f:
            f.attrs["keras_version"] = "3.6.0"
            f.create_group("model_weights")
    elif kind == "onnx":
        path.write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x052.4.0:\x02\x08\x11")
    elif kind == "npy":
        np.save(path, np.zeros((3, 8, 8), np.float32))
    elif kind == "binaryproto":
        path.write_bytes((GOLDEN / "mean" / "mean.binaryproto").read_bytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "gz":
        path.write_bytes(gzip.compress((LENET / "weights.caffemodel").read_bytes()[:1000]))
    elif kind == "jpg":
        path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100))
    elif kind == "directory":
        path.mkdir()
        (path / "lenet.caffemodel").write_bytes(b"")
    elif kind == "savedmodel":
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"")
    return path


@pytest.mark.parametrize("kind, says", [
    ("html", "is an HTML page, not a caffemodel (a saved download page?): download the file itself"),
    ("lfs", "is a Git LFS pointer, not a caffemodel (the real file was never downloaded): fetch the real file with "
            "git lfs pull"),
    ("zip", "is a zip archive, not a caffemodel (holding lenet/deploy.prototxt, lenet/weights.caffemodel): unpack"),
    ("tar.gz", "is a gzip-compressed tar archive, not a caffemodel: unpack it and give the caffemodel it holds"),
    ("tar", "is a tar archive, not a caffemodel: unpack it"),
    ("gz", "is a gzip-compressed file, not a caffemodel: unpack it"),
    ("keras", "is a Keras .keras model, not a caffemodel (a converted model given as input?)"),
    ("h5", "is a Keras .h5 model, not a caffemodel (a converted model given as input?)"),
    ("pth", "is a PyTorch checkpoint, not a caffemodel"),
    ("pt", "is a Python pickle, not a caffemodel (a PyTorch .pth/.pt checkpoint?)"),
    ("onnx", "is an ONNX model, not a caffemodel"),
    ("npy", "is a NumPy .npy array, not a caffemodel: a mean image goes to --mean"),
    ("binaryproto", "is a Caffe mean image (.binaryproto), not a caffemodel: a mean image goes to --mean"),
    ("jpg", "is a JPEG image, not a caffemodel"),
    ("empty", "is empty, expected a .caffemodel (an interrupted download?)"),
    ("directory", "is a directory, not a caffemodel: give the file in it, "),
    ("savedmodel", "is a TensorFlow SavedModel directory, not a caffemodel"),
])
def test_a_wrong_file_given_as_the_caffemodel_is_named(tmp_path, kind, says):
    path = make_wrong_file(tmp_path, kind)
    result = run(PROTOTXT, path, "-o", tmp_path / "m.keras")
    assert result.exit_code == EXIT_BAD_INPUT
    (line,) = stderr_lines(result)
    assert line.startswith(f"error: {path}: {says}")
    assert not (tmp_path / "m.keras").exists()


@pytest.mark.parametrize("kind, says", [
    ("html", "is an HTML page, not a prototxt (a saved download page?)"),
    ("lfs", "is a Git LFS pointer, not a prototxt (the real file was never downloaded): fetch the real file with "
            "git lfs pull"),
    ("zip", "is a zip archive, not a prototxt"),
    ("keras", "is a Keras .keras model, not a prototxt"),
    ("directory", "is a directory, expected a prototxt file"),
])
def test_a_wrong_file_given_as_the_prototxt_is_named(tmp_path, kind, says):
    path = make_wrong_file(tmp_path, kind)
    result = run(path, "-o", tmp_path / "m.keras")
    assert result.exit_code == EXIT_BAD_INPUT
    (line,) = stderr_lines(result)
    assert line.startswith(f"error: {path}: {says}")


def test_a_solver_given_as_the_prototxt_points_at_its_net(tmp_path):
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "models/train_val.prototxt"\nbase_lr: 0.01\nlr_policy: "step"\nmax_iter: 1000\n')
    result = run(solver, "-o", tmp_path / "m.keras")
    assert stderr_lines(result) == [f"error: {solver}: is a solver prototxt, not a network: give the network's "
                                    f"prototxt (models/train_val.prototxt)"]


def test_a_git_lfs_mean_file_is_named(tmp_path):
    mean = make_wrong_file(tmp_path, "lfs")
    result = run(PROTOTXT, CAFFEMODEL, "-o", tmp_path / "m.keras", "--mean", mean)
    assert stderr_lines(result) == [f"error: {mean}: is a Git LFS pointer, not a mean file (the real file was never "
                                    f"downloaded): fetch the real file with git lfs pull"]


def test_real_files_are_not_mistaken_for_wrong_ones():
    from caffe2keras import filetype

    for path in [PROTOTXT, CAFFEMODEL, *map(str, sorted(GOLDEN.glob("*/*.caffemodel"))),
                 *map(str, sorted(GOLDEN.glob("*/*.prototxt")))]:
        assert filetype.wrong_file(path, "file") is None, path
    assert filetype.identify(None, b"\x0a\x05LeNet") is None
