"""Writing converted models, the format chosen by the output path.

    model.keras   Keras 3 native file
    model.h5      legacy Keras HDF5
    model/        a TensorFlow SavedModel directory (a path ending in ``/``), endpoint ``serve``
    model.tflite  LiteRT / TensorFlow Lite flatbuffer
    model.onnx    ONNX (needs ``tf2onnx``: ``pip install caffe2keras[onnx]``)

Everything is written to a temporary name in the target directory and renamed into place only
when complete, so an interrupted or failed conversion never leaves a partial file or directory,
and an existing output is only replaced when asked to.
"""

import contextlib
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np

from .errors import ConversionError

FORMATS = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".tflite": "tflite", ".onnx": "onnx"}
SAVEDMODEL = "savedmodel"
# Opset 17 is what onnxruntime releases of the last years all run.
ONNX_OPSET = 17


def is_directory_path(path):
    return str(path).endswith(("/", os.sep))


def output_format(path):
    if is_directory_path(path):
        return SAVEDMODEL
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS)) + ", or a directory path ending in '/' (SavedModel)"
        raise ConversionError(f"unsupported output extension '{suffix or '(none)'}'; use one of {known}", file=path)
    return FORMATS[suffix]


def check_output(path, force=False):
    """Refuse before any work is done: bad extension, missing directory, existing output."""
    fmt = output_format(path)
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ConversionError("the output directory does not exist", file=path)
    if fmt == SAVEDMODEL:
        if target.exists() and not target.is_dir():
            raise ConversionError("the output path is a file, a SavedModel needs a directory", file=path)
        if target.exists() and not force:
            raise ConversionError("the output directory exists; pass --force to replace it", file=path)
        return fmt
    if target.is_dir():
        raise ConversionError("the output path is a directory", file=path)
    if target.exists() and not force:
        raise ConversionError("the output file exists; pass --force to overwrite it", file=path)
    if fmt == "onnx":
        _require_tf2onnx(path)
    return fmt


def _require_tf2onnx(path):
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        raise ConversionError(
            "ONNX export needs tf2onnx: pip install 'caffe2keras[onnx]'", file=path
        ) from None


@contextlib.contextmanager
def _quiet_absl():
    # Keras warns that HDF5 is a legacy format and TF logs each SavedModel it writes; choosing the
    # format is the user's informed choice.
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt while writing, so cleanup runs."""

    def handler(signum, frame):
        raise KeyboardInterrupt()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def input_signature(model):
    """One ``tf.TensorSpec`` per model input, batch dimension free, named like the input."""
    import tensorflow as tf

    return [tf.TensorSpec((None, *inp.shape[1:]), inp.dtype or tf.float32, name=inp.name) for inp in model.inputs]


def write_savedmodel(model, directory):
    """A SavedModel whose ``serve`` endpoint (also ``serving_default``) takes one tensor per input."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda *xs: model(list(xs), training=False), input_signature=input_signature(model))
    archive.write_out(str(directory), verbose=False)


def tflite_bytes(model):
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="caffe2keras-tflite-") as tmp:
        write_savedmodel(model, tmp)
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()


def onnx_bytes(model):
    import tf2onnx

    proto, _ = tf2onnx.convert.from_keras(model, input_signature=input_signature(model), opset=ONNX_OPSET)
    return proto.SerializeToString()


@contextlib.contextmanager
def _zero_copy_variables():
    """Let Keras' savers read variables as views instead of copies while writing.

    Both the .h5 and the .keras savers turn every weight into numpy through
    ``keras.src.backend.convert_to_numpy``, copying it (VGG16: +780 MiB, a second each). On the
    TensorFlow backend a variable's value can be viewed through DLPack instead. This reaches into
    a private Keras module, so if it is not where expected the savers run unchanged.
    """
    import keras

    try:
        from keras.src import backend as private_backend
    except ImportError:
        yield
        return
    original = getattr(private_backend, "convert_to_numpy", None)
    if original is None or keras.backend.backend() != "tensorflow":
        yield
        return

    def as_view(x):
        if isinstance(x, keras.Variable):
            try:
                return np.from_dlpack(x.value.read_value())
            except (TypeError, ValueError, RuntimeError, BufferError):
                pass
        return original(x)

    private_backend.convert_to_numpy = as_view
    try:
        yield
    finally:
        private_backend.convert_to_numpy = original


def _write(model, tmp, fmt):
    if fmt in ("keras", "h5"):
        with _zero_copy_variables():
            model.save(tmp)
    elif fmt == SAVEDMODEL:
        write_savedmodel(model, tmp)
    else:
        data = tflite_bytes(model) if fmt == "tflite" else onnx_bytes(model)
        with open(tmp, "wb") as f:
            f.write(data)


def save(model, path, force=False):
    """Save ``model`` to ``path`` atomically; the path picks the format (see the module doc)."""
    fmt = check_output(path, force=force)
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    tmp = tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent)
    if fmt != SAVEDMODEL:
        # A fresh name inside the temporary directory: Keras picks the format by the suffix.
        work = Path(tmp) / f"model{target.suffix}"
    else:
        work = Path(tmp) / "savedmodel"
    try:
        with _terminate_as_interrupt(), _quiet_absl():
            _write(model, str(work), fmt)
            _replace(work, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _replace(new, target):
    """Rename ``new`` onto ``target``; an existing directory is moved aside first, then removed."""
    if target.is_dir():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, aside / "old")
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(aside / "old", target)
            raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(new, target)
