"""Running a converted model from any file caffe2keras writes, through one interface.

``.keras``/``.h5`` load through Keras (``safe_mode``; the call is compiled once, then fast), a
SavedModel directory through TensorFlow (its ``serving_default`` signature), ``.tflite`` through
the LiteRT interpreter and ``.onnx`` through onnxruntime. Every :class:`Runner` takes and gives
arrays by the model's input and output names, images NHWC, whatever the file's own layout
(an ONNX file written with NCHW inputs is fed transposed).

What the exported formats cannot say by themselves (the baked preprocessing, which outputs are
softmax probabilities, whether ONNX inputs are NCHW) :func:`describe` records at export and the
runner reads back (ONNX metadata, the TFLite model's metadata, ``assets.extra`` of a SavedModel).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConversionError, clip
from .layout import to_caffe_order

METADATA_NAME = "caffe2keras"
SAVEDMODEL_METADATA = Path("assets.extra") / "caffe2keras.json"
SHAPE_ONLY_LAYERS = ("Identity", "Permute", "Reshape", "Flatten")


@dataclass
class Port:
    name: str
    shape: tuple  # Keras' view: batch first (None when free), images NHWC


class Runner:
    """A loaded model: ``runner([arrays in input order])`` → list of arrays in output order."""

    kind = None

    def __init__(self, path, inputs, output_names, info, model=None):
        self.path = Path(path)
        self.inputs = inputs
        self.output_names = list(output_names)
        self.info = info or {}
        self.model = model  # the Keras model, for .keras/.h5

    @property
    def preprocess(self):
        """The baked CaffePreprocess config, or None."""
        return self.info.get("preprocess")

    @property
    def softmax_outputs(self):
        return list(self.info.get("softmax_outputs", []))

    @property
    def blob_table(self):
        """The model's Caffe blob table (:mod:`caffe2keras.blobtable`), or None."""
        return self.info.get("blob_table")

    def __call__(self, arrays):
        raise NotImplementedError


def describe(model):
    """What an exported file should remember of the Keras ``model``."""
    from . import blobtable, preprocess

    config = preprocess.find(model)
    if config is not None:
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()
                  if k in ("mean", "mean_shape", "scale", "rgb_input", "mean_source")}
    from .layers.rcnn import find_proposal

    table = blobtable.find(model)
    return {"preprocess": config, "softmax_outputs": softmax_outputs(model), "outputs": list(model.output_names),
            "two_stage_detector": find_proposal(model) is not None, "blob_table": table.table if table else None}


def softmax_outputs(model):
    """The outputs computed by a Softmax layer (through layers that only move values), read off
    the model's connectivity (each layer's ``input`` and ``output``), as a loaded model has it."""
    import keras

    producer = {}
    for layer in model.layers:
        for tensor in _as_list(layer.output):
            producer[id(tensor)] = layer
    found = []
    for name, tensor in zip(model.output_names, model.outputs):
        layer = producer.get(id(tensor))
        while type(layer).__name__ in SHAPE_ONLY_LAYERS:
            parents = _as_list(layer.input)
            if len(parents) != 1:
                break
            layer = producer.get(id(parents[0]))
        if isinstance(layer, keras.layers.Softmax):
            found.append(name)
    return found


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load(path):
    """The :class:`Runner` for a converted model file or SavedModel directory."""
    path = Path(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConversionError("is a directory but not a SavedModel (no saved_model.pb)", file=path)
        return SavedModelRunner.open(path)
    if not path.is_file():
        raise ConversionError("no such model file (.keras, .h5, .tflite, .onnx or a SavedModel directory)", file=path)
    suffix = path.suffix.lower()
    kinds = {".keras": KerasRunner, ".h5": KerasRunner, ".hdf5": KerasRunner, ".tflite": TFLiteRunner,
             ".onnx": OnnxRunner}
    if suffix not in kinds:
        raise ConversionError(f"unknown model file type '{suffix or '(none)'}' "
                              "(.keras, .h5, .tflite, .onnx or a SavedModel directory)", file=path)
    return kinds[suffix].open(path)


def _problem(err):
    return clip(err, 200)


class KerasRunner(Runner):
    kind = "keras"

    @classmethod
    def open(cls, path):
        import keras

        from . import _lazy, depth

        _lazy.register_keras_objects()
        try:
            model = depth.call(keras.models.load_model, path, safe_mode=True, compile=False)
        except (OSError, ValueError, TypeError) as err:
            raise ConversionError(f"cannot be loaded as a Keras model ({_problem(err)})", file=path) from None
        return cls.of(model, path)

    @classmethod
    def of(cls, model, path=None):
        inputs = [Port(t.name, tuple(t.shape)) for t in model.inputs]
        return cls(path or model.name, inputs, model.output_names, describe(model), model)

    def __call__(self, arrays):
        outputs = self.model.predict_on_batch(arrays if len(arrays) > 1 else arrays[0])
        return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


class SavedModelRunner(Runner):
    kind = "savedmodel"

    @classmethod
    def open(cls, path):
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError, tf.errors.OpError) as err:
            raise ConversionError(f"cannot be loaded as a SavedModel with a serving_default signature ({_problem(err)})",
                                  file=path) from None
        specs = signature.structured_input_signature[1]
        order = [spec.name for spec in signature.structured_input_signature[1].values()]
        inputs = [Port(name, tuple(specs[name].shape)) for name in order]
        info = _read_json(path / SAVEDMODEL_METADATA)
        names = info.get("outputs") or sorted(signature.structured_outputs)
        runner = cls(path, inputs, names, info)
        runner.signature, runner.loaded = signature, loaded
        return runner

    def __call__(self, arrays):
        import tensorflow as tf

        outputs = self.signature(**{p.name: tf.constant(a) for p, a in zip(self.inputs, arrays)})
        return [np.asarray(outputs[name]) for name in self.output_names]


class TFLiteRunner(Runner):
    kind = "tflite"

    @classmethod
    def open(cls, path):
        data = path.read_bytes()
        try:
            interpreter = tflite_interpreter(data)
            runner = interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as err:
            raise ConversionError(f"cannot be loaded as a TFLite model ({_problem(err)})", file=path) from None
        details = runner.get_input_details()
        inputs = [Port(name, (None, *(int(d) for d in detail["shape"][1:]))) for name, detail in details.items()]
        info = tflite_metadata(data) or {}
        names = info.get("outputs") or sorted(runner.get_output_details())
        result = cls(path, inputs, names, info)
        result.runner = runner
        return result

    def __call__(self, arrays):
        outputs = self.runner(**{p.name: np.ascontiguousarray(a, np.float32) for p, a in zip(self.inputs, arrays)})
        return [np.asarray(outputs[name]) for name in self.output_names]


class OnnxRunner(Runner):
    kind = "onnx"

    @classmethod
    def open(cls, path):
        try:
            import onnxruntime
        except ImportError:
            raise ConversionError("running .onnx files needs onnxruntime: pip install onnxruntime", file=path) from None
        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise ConversionError(f"cannot be loaded by onnxruntime ({_problem(err)})", file=path) from None
        text = session.get_modelmeta().custom_metadata_map.get(METADATA_NAME)
        info = json.loads(text) if text else {}
        nchw = bool(info.get("nchw_inputs"))
        inputs = []
        for i in session.get_inputs():
            shape = tuple(d if isinstance(d, int) else None for d in i.shape)
            if nchw and len(shape) == 4:
                shape = (shape[0], shape[2], shape[3], shape[1])
            inputs.append(Port(i.name, shape))
        names = [o.name for o in session.get_outputs()]
        result = cls(path, inputs, names, info)
        result.session, result.nchw = session, nchw
        return result

    def __call__(self, arrays):
        feeds = {}
        for port, array in zip(self.inputs, arrays):
            array = np.asarray(array, np.float32)
            feeds[port.name] = to_caffe_order(array) if self.nchw else array
        return list(self.session.run(self.output_names, feeds))


def tflite_interpreter(data):
    """LiteRT's interpreter where installed, else TensorFlow's own (the same runtime)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():  # TensorFlow's points to LiteRT, which is not installed
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_content=data)
    return Interpreter(model_content=data)


def tflite_metadata(data):
    """The JSON a TFLite model holds under the metadata name ``caffe2keras``, or None."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


def _read_json(path):
    return json.loads(path.read_text()) if path.is_file() else {}
