"""caffe2keras: exact Keras 3 replicas of Caffe models, without Caffe.

    import caffe2keras
    model = caffe2keras.convert("deploy.prototxt", "weights.caffemodel")
    probe = caffe2keras.blobs(model, ["conv1", "prob"])   # any Caffe blob, in Caffe's layout
    caffe2keras.save(model, "model.keras")

Importing the package also registers its custom Keras layers, so saved models load with
``keras.models.load_model(path, safe_mode=True)``.
"""

from ._quiet import import_tensorflow, interrupted_while_starting

try:
    import_tensorflow()
    from . import blobtable, layers, losses, preprocess, rcnn_layers, solver  # noqa: F401  (registers the custom Keras objects)
    from .api import build, convert, save
    from .blobtable import blobs
    from .errors import ConversionError, ConversionWarning, InternalError
except KeyboardInterrupt:
    interrupted_while_starting(__name__)
    raise

__version__ = "0.1.0"
__all__ = ["convert", "build", "save", "blobs", "ConversionError", "ConversionWarning", "InternalError", "__version__"]
