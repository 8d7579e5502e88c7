"""caffe2keras: exact Keras 3 replicas of Caffe models, without Caffe.

    import caffe2keras
    model = caffe2keras.convert("deploy.prototxt", "weights.caffemodel")
    probe = caffe2keras.blobs(model, ["conv1", "prob"])   # any Caffe blob, in Caffe's layout
    caffe2keras.save(model, "model.keras")

Importing the package loads neither Keras nor TensorFlow (``convert`` does, on first use), and
changes nothing in the process but this: its custom Keras layers register as soon as Keras is
loaded, so saved models load with ``keras.models.load_model(path, safe_mode=True)``.
"""

import importlib

from ._quiet import interrupted_while_starting

try:
    from ._lazy import register_when_keras_loads
    from .errors import ConversionError, ConversionWarning, InternalError
except KeyboardInterrupt:
    interrupted_while_starting(__name__)
    raise

__version__ = "0.1.0"
__all__ = ["convert", "build", "save", "blobs", "ConversionError", "ConversionWarning", "InternalError", "__version__"]
# The API's functions, from the modules that import Keras, loaded on first use.
LAZY = {"convert": "api", "build": "api", "save": "api", "blobs": "blobtable"}


def __getattr__(name):
    if name in LAZY:
        return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_when_keras_loads()
