"""Models saved by an earlier caffe2keras load and compute as they did then (``safe_mode=True``).

Saved files name each custom layer by its registered name, ``caffe2keras>ClassName``; moving or
renaming a class must keep it. ``fixtures/saved/`` holds files written before the layers moved
into ``converter/layers/`` (see fixtures/README.md), covering 33 of the custom Keras classes.
"""

import json
import zipfile

import keras
import numpy as np
import pytest
from conftest import FIXTURES
from helpers import assert_close

import caffe2keras  # noqa: F401  (registers the custom layers)

SAVED = FIXTURES / "saved"
FILES = sorted(p for p in SAVED.iterdir() if p.suffix in (".keras", ".h5"))


def run_saved(path):
    """The saved model's outputs on its stored inputs, and the outputs stored with it."""
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    stored = np.load(path.with_suffix(".npz"))
    outputs = model([stored[f"input/{t.name}"] for t in model.inputs], training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {name: keras.ops.convert_to_numpy(v) for name, v in zip(model.output_names, outputs)}, stored


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_saved_model_loads_and_computes_as_when_saved(path):
    got, stored = run_saved(path)
    assert sorted(f"output/{name}" for name in got) == sorted(k for k in stored.files if k.startswith("output/"))
    for name, value in got.items():
        assert_close(value, stored[f"output/{name}"], f"{path.name}: {name}")


def test_two_stage_file_holds_proposals():
    """The file pins Proposal, ROIPooling and PSROIPooling on real rows, not on padding alone."""
    got, _ = run_saved(SAVED / "two_stage.keras")
    assert all(np.abs(v).sum() > 0 for v in got.values())


def test_files_name_the_modules_of_before_the_move():
    """What the fixture pins: the classes are found by registered name, not by the module the
    file names (the proposal layer was in ``caffe2keras.rcnn_layers``)."""
    from caffe2keras.layers import Proposal

    config = json.loads(zipfile.ZipFile(SAVED / "two_stage.keras").read("config.json"))
    modules = {layer["class_name"]: layer.get("module") for layer in config["config"]["layers"]}
    assert modules["Proposal"] == "caffe2keras.rcnn_layers" != Proposal.__module__


def test_a_renamed_class_would_not_load(monkeypatch):
    """Negative control: the files name the classes by their registered names."""
    objects = keras.saving.get_custom_objects()
    monkeypatch.delitem(objects, "caffe2keras>Proposal")
    with pytest.raises(Exception, match="Proposal"):
        keras.saving.load_model(SAVED / "two_stage.keras", safe_mode=True, compile=False)


def test_a_saved_model_says_which_outputs_are_softmax_probabilities():
    """Read off the loaded model's connectivity, so files saved before carry nothing new: ``sm3``
    is a softmax over an axis held in Caffe's order, reached through its NHWC view; the others
    are no softmax's (``ip1``, ``sig``)."""
    from caffe2keras import runtime

    assert runtime.load(SAVED / "caffe_order.h5").softmax_outputs == ["sm1", "sm3"]
    assert runtime.load(SAVED / "forks.keras").softmax_outputs == []
