"""Shared test setup: the ``--runslow`` option, where fixtures and shared data live.

The tests import the package as ``caffe2keras``. CI pip-installs it (``pip install -e .[test]``);
to run from a checkout without installing, point a directory on ``PYTHONPATH`` at ``converter/``:

    mkdir -p /tmp/c2k_path && ln -sfn "$PWD/converter" /tmp/c2k_path/caffe2keras
    PYTHONPATH=/tmp/c2k_path python -m pytest

Data: ``fixtures/`` (in the repo, redistributable) and the shared data folder, ``$CAFFE2KERAS_SHARED``
or ``<repo>/../shared``, which holds the larger or non-redistributable references (pretrained
models, zoo replicas without an open licence). Tests needing it are skipped when it is absent.
"""

import os

# Before anything imports TensorFlow: keep its C++ start-up chatter out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
GOLDEN = FIXTURES / "golden"
# The golden nets of Caffe's standard layers that several suites run end to end.
CORE_NETS = [
    "pooling_edges",
    "lrn_modes",
    "conv_variants",
    "dense_flatten",
    "norm_scale",
    "eltwise_act",
    "shape_ops",
    "v1_legacy",
]
SHARED = Path(os.environ.get("CAFFE2KERAS_SHARED") or REPO.parent / "shared")


def missing_shared(path):
    return f"shared test data not found: {path} (set CAFFE2KERAS_SHARED to the shared folder)"


def shared_path(*parts):
    """A path under the shared data folder, skipping the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(missing_shared(path))
    return path


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: zoo-wide or full-size checks; run with --runslow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
