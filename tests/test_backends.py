"""The command line on Keras' other backends, JAX and torch, as a user runs it with
``KERAS_BACKEND`` set: ``.keras``/``.h5`` conversions that TensorFlow then loads and finds exact;
the TensorFlow-only formats (.tflite, .onnx, SavedModel) written through a TensorFlow process;
predict and verify. Each backend runs in its own process (Keras reads the variable once, and
torch must load before TensorFlow). Skipped where a backend is not installed; CI (.ci/run)
installs both (``pip install jax``, ``pip install torch``).
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GOLDEN
from helpers import assert_close

import caffe2keras  # noqa: F401  (registers the custom layers for load_model)
from caffe2keras.cli import main

NET = GOLDEN / "zoo" / "bvlc_googlenet"
ARGS = [NET / "deploy.prototxt", NET / "weights.caffemodel"]


@pytest.fixture(params=["jax", "torch"])
def backend(request):
    # find_spec, not import: torch loaded after TensorFlow in this process could crash it.
    if importlib.util.find_spec(request.param) is None:
        pytest.skip(f"the {request.param} backend is not installed")
    return request.param


def cli(backend, *args):
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run([sys.executable, "-c", "from caffe2keras.cli import main; main()", *map(str, args)],
                          env=env, capture_output=True, text=True)


def caffe_prob():
    expected = np.load(NET / "expected.npz")
    return expected["input/data"].transpose(0, 2, 3, 1).copy(), expected["layer/prob/prob"]


def test_convert_on_another_backend_writes_an_exact_keras_file(backend, tmp_path):
    """Was: torch crashed at `import caffe2keras` (exit 139), TensorFlow loaded before torch."""
    out = tmp_path / "g.keras"
    result = cli(backend, *ARGS, "-o", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote {out}" in result.stdout and result.stderr == ""
    x, prob = caffe_prob()
    model = keras.models.load_model(out, safe_mode=True, compile=False)
    assert_close(np.asarray(model(x, training=False)), prob, f".keras written on {backend}")


LENET = GOLDEN / "zoo" / "lenet"

SESSION = """
import contextlib, json, sys
from caffe2keras.cli import main
codes = []
for i, args in enumerate(json.loads(sys.argv[1])):
    with open(f"{sys.argv[2]}/out{i}.txt", "w") as out, contextlib.redirect_stdout(out):
        try:
            main(args, prog_name="caffe2keras")
        except SystemExit as exit:
            codes.append(exit.code or 0)
print(json.dumps(codes))
"""


def test_the_commands_on_another_backend(backend, tmp_path):
    """The README's promise for KERAS_BACKEND=jax/torch, on LeNet in one process (the backend
    loads once): convert to .h5 by Keras on the backend and to .tflite through a TensorFlow
    process, both exact; predict and verify the .h5. GoogLeNet in every format: the slow tests."""
    pytest.importorskip("cv2")
    from caffe2keras import runtime

    prototxt, caffemodel = LENET / "deploy.prototxt", LENET / "weights.caffemodel"
    h5, tflite, image = tmp_path / "l.h5", tmp_path / "l.tflite", tmp_path / "x.png"
    import tensorflow as tf

    tf.io.write_file(str(image), tf.io.encode_png(np.random.default_rng(1).integers(0, 255, (28, 28, 1), np.uint8)))
    commands = [[prototxt, caffemodel, "-o", h5, "-q"], [prototxt, caffemodel, "-o", tflite, "-q"],
                ["predict", h5, image, "--json"], ["verify", prototxt, caffemodel, h5]]
    session = subprocess.run([sys.executable, "-c", SESSION, json.dumps([[str(a) for a in c] for c in commands]),
                              str(tmp_path)], env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True,
                             text=True)
    assert session.returncode == 0, session.stderr[-3000:]
    assert json.loads(session.stdout.splitlines()[-1]) == [0, 0, 0, 0], session.stderr[-3000:]
    expected = np.load(LENET / "expected.npz")
    x = expected["input/data"].transpose(0, 2, 3, 1).copy()
    for path in (h5, tflite):
        (got,) = runtime.load(path)([x])
        assert_close(got, expected["layer/prob/prob"], f"{path.name} written on {backend}")
    here = CliRunner().invoke(main, ["predict", str(h5), str(image), "--json"])
    there = json.loads((tmp_path / "out2.txt").read_text())
    assert [p["index"] for p in there] == [p["index"] for p in json.loads(here.stdout)]
    assert "all within tolerance" in (tmp_path / "out3.txt").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["g.h5", "g.tflite", "g.onnx", "sm/"])
def test_every_format_on_another_backend(backend, tmp_path, name):
    """.h5 by Keras on the backend; TensorFlow's formats through a TensorFlow process (was:
    "`track` is not supported ... in the torch backend", an internal error for .onnx on JAX)."""
    from caffe2keras import runtime

    if name.endswith(".onnx"):
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")
    out = f"{tmp_path}/{name}"
    result = cli(backend, *ARGS, "-o", out, "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    x, prob = caffe_prob()
    (got,) = runtime.load(out)([x])
    assert_close(got, prob, f"{name} written on {backend}")


@pytest.mark.slow
def test_predict_and_verify_on_another_backend(backend, tmp_path):
    pytest.importorskip("cv2")
    model = tmp_path / "g.keras"
    # Preprocessing baked in, so that the probabilities are spread, not saturated into ties.
    assert cli("tensorflow", *ARGS, "-o", model, "-q", "--mean", "104,117,123", "--scale", "0.017").returncode == 0
    import tensorflow as tf

    rgb = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    image = tmp_path / "x.png"
    tf.io.write_file(str(image), tf.io.encode_png(rgb))
    here = json.loads(cli("tensorflow", "predict", model, image, "--json").stdout)
    there = cli(backend, "predict", model, image, "--json")
    assert there.returncode == 0, there.stderr[-3000:]
    assert [p["index"] for p in json.loads(there.stdout)] == [p["index"] for p in here]
    verified = cli(backend, "verify", *ARGS, model)
    assert verified.returncode == 0, verified.stdout + verified.stderr[-3000:]
    assert "all within tolerance" in verified.stdout
