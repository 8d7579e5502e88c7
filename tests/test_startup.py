"""What ``import caffe2keras`` and the command line's start cost and change, each in a fresh
Python as a user's program or shell would run them: no Keras or TensorFlow until a model is
built or run, the environment and stderr left alone, and the custom layers registered all the
same for ``keras.models.load_model(path, safe_mode=True)``. (Timings: benchmarks/startup.py.)
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import GOLDEN
from helpers import build


NET = GOLDEN / "pooling_edges"  # CaffePooling2D and friends: custom layers in the saved file
HEAVY = ("keras", "tensorflow", "torch", "jax")


def fresh_python(code, *args):
    """Run ``code`` in a new interpreter with the user's environment (none of the test suite's
    TensorFlow settings); returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)


IMPORT_ONLY = """
import json, os, sys
environment, stderr = dict(os.environ), os.fstat(2)
import caffe2keras
print(json.dumps({
    "heavy": sorted(m for m in sys.argv[1:] if m in sys.modules),
    "environment_changed": sorted(set(os.environ.items()) ^ set(environment.items())),
    "stderr_replaced": (os.fstat(2).st_dev, os.fstat(2).st_ino) != (stderr.st_dev, stderr.st_ino),
    "api": [caffe2keras.__version__, caffe2keras.ConversionError.__name__],
}))
"""


def test_import_loads_no_keras_and_changes_nothing():
    result = fresh_python(IMPORT_ONLY, *HEAVY)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"heavy": [], "environment_changed": [], "stderr_replaced": False,
                      "api": ["0.1.0", "ConversionError"]}
    assert result.stderr == ""


CLI_THEN_MODULES = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)), file=sys.stderr))
sys.argv = ["caffe2keras", *sys.argv[1:]]
from caffe2keras.cli import main
main()
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["inspect", "PROTOTXT"],
                                  ["inspect", "PROTOTXT", "CAFFEMODEL", "--json"]])
def test_help_version_and_inspect_never_import_tensorflow(args):
    files = {"PROTOTXT": NET / "deploy.prototxt", "CAFFEMODEL": NET / "weights.caffemodel"}
    result = fresh_python(CLI_THEN_MODULES.format(heavy=HEAVY), *(files.get(a, a) for a in args))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []


LOAD = """
import sys
import numpy as np
{imports}
x, want = np.load(sys.argv[1]), np.load(sys.argv[2])
for path in sys.argv[3:]:
    model = keras.models.load_model(path, safe_mode=True, compile=False)
    got = model(x, training=False)
    got = got if isinstance(got, (list, tuple)) else [got]
    print(max(float(np.max(np.abs(np.asarray(g) - want[f"y{i}"]))) for i, g in enumerate(got)))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The net with baked preprocessing, saved as .keras and .h5, with an input and its output."""
    tmp = tmp_path_factory.mktemp("startup")
    model = build(NET / "deploy.prototxt", NET / "weights.caffemodel", preprocessing={"mean": [10.0], "scale": 0.1}).model
    x = np.random.default_rng(0).uniform(0, 255, (2, *model.inputs[0].shape[1:])).astype(np.float32)
    np.save(tmp / "x.npy", x)
    outputs = model(x, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    np.savez(tmp / "y.npz", **{f"y{i}": np.asarray(y) for i, y in enumerate(outputs)})
    paths = {}
    for suffix in (".keras", ".h5"):
        paths[suffix] = tmp / f"m{suffix}"
        model.save(paths[suffix])
    return paths, tmp / "x.npy", tmp / "y.npz"


@pytest.mark.parametrize("imports", [
    "import caffe2keras\nimport keras",
    "import keras\nimport caffe2keras",
    # Keras loaded by the custom layers' own package: the registration waits for the package
    "import caffe2keras.layers.rcnn\nimport keras",
])
def test_safe_mode_load_after_import_in_either_order(saved, imports):
    paths, x, y = saved
    result = fresh_python(LOAD.replace("{imports}", imports), x, y, paths[".keras"], paths[".h5"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert [float(v) for v in result.stdout.split()] == [0.0, 0.0]


def test_safe_mode_load_without_caffe2keras_fails(saved):
    """Negative control: the custom layers are what the import registers."""
    paths, x, y = saved
    result = fresh_python(LOAD.replace("{imports}", "import keras"), x, y, paths[".keras"])
    assert result.returncode != 0 and "caffe2keras" in result.stderr
