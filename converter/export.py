"""Writing converted models, the format chosen by the output path.

    model.keras   Keras 3 native file
    model.h5      legacy Keras HDF5
    model/        a TensorFlow SavedModel directory (a path ending in ``/``), endpoint ``serve``
    model.tflite  LiteRT / TensorFlow Lite flatbuffer (``quantize``: float16 or dynamic-range int8)
    model.onnx    ONNX (needs ``tf2onnx``: ``pip install caffe2keras[onnx]``; ``opset``, ``nchw_inputs``)

SavedModel, TFLite and ONNX name their inputs and outputs after the Caffe blobs and record what
:func:`caffe2keras.runtime.describe` says of the model, so ``predict`` and ``verify`` run them as
they run the Keras file. They are TensorFlow's formats: on another Keras backend the model goes
through a ``.keras`` file to a TensorFlow process that writes them.

Everything is written inside a temporary directory next to the target and moved into place only
when complete, so an interrupted or failed conversion never leaves a partial file or directory.
An existing output is only replaced when asked to, and that rule is kept by the final move itself
(``renameat2`` with ``RENAME_NOREPLACE``, or an exclusive claim of the name where the system lacks
it), not by an earlier look: of two runs writing one path at once, exactly one wins. Asked to
replace, the move is one atomic step (a directory is swapped with ``RENAME_EXCHANGE``).

Where the output cannot go (missing or read-only directory, a name the file system refuses, the
current directory as a SavedModel, an input file in the way) is found before converting;
running out of space is found before writing when the file system can tell, else while writing.
Each is one line naming the path.
"""

import contextlib
import ctypes
import errno
import functools
import json
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import h5file, keras_archive
from .errors import ConversionError, clip

FORMATS = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".tflite": "tflite", ".onnx": "onnx"}
SAVEDMODEL = "savedmodel"
# Temporary directories next to the output; short, so any output name that fits fits them too.
TEMP_PREFIX = ".caffe2keras-"
# renameat2(2) (linux/fs.h, fcntl.h).
RENAME_NOREPLACE, RENAME_EXCHANGE, AT_FDCWD = 1, 2, -100
# Why writing an output can fail that is no bug of ours, by errno and by the text TensorFlow and
# HDF5 quote from the C library.
WRITE_PROBLEMS = {
    errno.ENOSPC: "No space left on device",
    errno.EDQUOT: "Disk quota exceeded",
    errno.EROFS: "Read-only file system",
    errno.EACCES: "Permission denied",
    errno.EPERM: "Operation not permitted",
    errno.EFBIG: "File too large",
    errno.ENAMETOOLONG: "File name too long",
    errno.EIO: "Input/output error",
}
QUANTIZE = ("float16", "dynamic")
# The memory a format's writer takes beyond the built model, in weights' sizes, rounded up
# (measured peaks beyond the model: TFLite's converter 6.6x the weights on VGG16's 528 MiB,
# 7.5x on ResNet-50's 98 MiB; the ONNX export 0.05x on VGG16).
WRITER_MEMORY = {"tflite": 9, "onnx": 1}
# Which options each format takes (see :func:`check_options`).
FORMAT_OPTIONS = {"opset": "onnx", "nchw_inputs": "onnx", "quantize": "tflite"}
OPTION_FLAGS = {"opset": "--opset", "nchw_inputs": "--nchw", "quantize": "--quantize"}


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


def check_output(path, force=False, inputs=()):
    """Refuse before any work is done: bad extension, missing or unwritable directory, a name the
    file system refuses, an existing output (without ``force``), an output that would replace
    one of the ``inputs`` files. Returns the format."""
    fmt = output_format(path)
    check_target(path, force=force, directory=fmt == SAVEDMODEL, inputs=inputs)
    if fmt == "onnx":
        _require_tf2onnx(path)
    return fmt


def check_target(path, force=False, directory=False, inputs=()):
    """The checks of :func:`check_output` that do not depend on the format (a SavedModel is a
    ``directory``), for any file the commands write."""
    try:
        _check_target(path, force, directory, inputs)
    except OSError as err:  # a path the system refuses to look at (longer than PATH_MAX, a loop, ...)
        raise ConversionError(f"cannot use the output path: {err.strerror or err}", file=path) from None


def _check_target(path, force, directory, inputs):
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ConversionError("the output directory does not exist", file=path)
    _check_name(parent, target, path)
    if directory:
        if target.name in ("", ".", "..") or _holds(target, Path.cwd()):
            raise ConversionError("a SavedModel needs a directory of its own, not the current directory "
                                  "or one above it", file=path)
        if target.exists() and not target.is_dir():
            raise ConversionError("the output path is a file, a SavedModel needs a directory", file=path)
        if target.exists() and not force:
            raise ConversionError("the output directory exists; pass --force to replace it", file=path)
    else:
        if target.is_dir():
            raise ConversionError("the output path is a directory", file=path)
        if target.exists() and not force:
            raise ConversionError("the output file exists; pass --force to overwrite it", file=path)
    for source in inputs:
        if source is not None and _holds(target, Path(source)):
            raise ConversionError(f"writing the output would replace the input {source}", file=path)
    _check_writable(parent, path)


def _holds(target, other):
    """Whether ``other`` is ``target`` or lies inside it, symbolic links resolved."""
    target, other = os.path.realpath(target), os.path.realpath(other)
    return other == target or other.startswith(target.rstrip(os.sep) + os.sep)


def _check_name(parent, target, path):
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(target.name)) > name_max:
        raise ConversionError(f"the file name is {len(os.fsencode(target.name))} bytes long; this file system "
                              f"allows {name_max}", file=path)


def _check_writable(parent, path):
    """A cheap probe: a temporary directory can be made next to the output."""
    probe = _temp_name(parent)
    try:
        os.mkdir(probe, 0o700)
    except OSError as err:
        problem = _write_problem(err) or err.strerror or str(err)
        raise ConversionError(f"cannot write in the output directory: {problem}", file=path) from None
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)


def _temp_name(parent):
    """A fresh name for a temporary directory in ``parent``. Named before it is made (unlike
    ``tempfile.mkdtemp``), so whatever interrupts the making, the cleanup knows what to remove;
    the process id in it lets :func:`remove_leftovers` find what a killed process left."""
    return Path(parent) / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"


def _scratch(kind):
    """A scratch directory in the system's temporary directory, named like :func:`_temp_name`'s."""
    return tempfile.TemporaryDirectory(prefix=f"caffe2keras-{kind}-{os.getpid()}-")


def remove_leftovers(pid, folder):
    """Remove what process ``pid``, killed outright (SIGKILL: the out-of-memory killer), left
    unfinished: its temporary directories in ``folder`` and its scratch directories. A process
    interrupted any other way removes its own."""
    for parent, pattern in ((Path(folder), f"{TEMP_PREFIX}{pid}-*"),
                            (Path(tempfile.gettempdir()), f"caffe2keras-*-{pid}-*")):
        for path in parent.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def _write_problem(err):
    """What an error met while writing says about where the output goes (no space left, ...), or
    None when it is about something else (then it is a bug of ours). TensorFlow and HDF5 quote
    the C library's error in their messages only."""
    code = getattr(err, "errno", None)
    if code in WRITE_PROBLEMS:
        return WRITE_PROBLEMS[code]
    return next((problem for problem in WRITE_PROBLEMS.values() if problem in str(err)), None)


def check_options(fmt, path, **options):
    """Refuse options the output format does not take, before any work."""
    for key, value in options.items():
        if value in (None, False):
            continue
        if FORMAT_OPTIONS[key] != fmt:
            raise ConversionError(f"{OPTION_FLAGS[key]} applies to .{FORMAT_OPTIONS[key]} outputs", file=path)
    if options.get("quantize") not in (None, *QUANTIZE):
        raise ConversionError(f"--quantize takes {' or '.join(QUANTIZE)}", file=path)
    if options.get("opset") is not None:
        from .export_onnx import OPSETS

        if options["opset"] not in OPSETS:
            raise ConversionError(f"--opset {options['opset']}: the ONNX export writes opsets "
                                  f"{OPSETS.start} to {OPSETS.stop - 1}", file=path)


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
def _interrupts():
    """While writing, SIGTERM (and Ctrl-C, while Python's own handler has it) raise
    KeyboardInterrupt, so cleanup runs, and are remembered in the list yielded: Python swallows
    an exception raised inside a finaliser or a gc callback (h5py's objects, JAX's collector
    hook when TensorFlow has imported JAX), so the writer asks the list before publishing. Such
    a swallowed interrupt is not reported ("Exception ignored in …"): the run ends in one line."""
    seen = []

    def handler(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt()

    def unraisable(report):
        if not (seen and isinstance(report.exc_value, KeyboardInterrupt)):
            hook_before(report)

    hook_before, sys.unraisablehook = sys.unraisablehook, unraisable

    previous = {}
    try:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, handler)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not in the main thread: signals are the main thread's
        pass
    try:
        yield seen
    finally:
        sys.unraisablehook = hook_before
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


def input_signature(model):
    """One ``tf.TensorSpec`` per model input, batch dimension free, named like the input."""
    import tensorflow as tf

    return [tf.TensorSpec((None, *inp.shape[1:]), inp.dtype or tf.float32, name=inp.name) for inp in model.inputs]


def named_outputs(model, inputs):
    """``model`` called on ``inputs`` (one tensor per input), as ``{output name: tensor}``."""
    outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    return dict(zip(model.output_names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))


def write_savedmodel(model, directory):
    """A SavedModel whose ``serve`` endpoint (also ``serving_default``) takes one tensor per input
    and gives ``{Caffe blob: tensor}``; ``assets.extra`` holds what :func:`runtime.describe` says."""
    import keras

    from . import runtime

    # The endpoint alone: its traced function holds (and the SavedModel saves) every variable it
    # reads. ``track(model)`` would save each again under the Keras wrapper (GoogLeNet 27 MiB of
    # weights: 55 MiB of variables), restored twice by every loader, and walk every layer.
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serve", lambda *xs: named_outputs(model, xs), input_signature=input_signature(model))
    archive.write_out(str(directory), verbose=False)
    extra = Path(directory) / runtime.SAVEDMODEL_METADATA
    extra.parent.mkdir(exist_ok=True)
    extra.write_text(json.dumps(runtime.describe(model)))


def write_tflite(model, path, quantize=None):
    """The TFLite flatbuffer of ``model`` at ``path``: signature ``serving_default`` with the Caffe
    blob names, weights quantized to float16 or dynamic-range int8 when asked, and
    :func:`runtime.describe`'s record in the model's metadata."""
    import tensorflow as tf

    from . import export_tflite, runtime

    with _scratch("tflite") as tmp:
        write_savedmodel(model, tmp)
        converter = _tflite_converter(tmp)
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantize == "float16":
                converter.target_spec.supported_types = [tf.float16]
        # The converter's own metadata costs a rebuild of the flatbuffer (three copies of the
        # weights); ours is added without one.
        converter.exclude_conversion_metadata = True
        data = converter.convert()
    record = json.dumps(runtime.describe(model)).encode()
    try:
        chunks = export_tflite.with_metadata(data, runtime.METADATA_NAME, record)
    except export_tflite.Unsupported:
        chunks = [_with_tflite_metadata(data, record)]
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def _tflite_converter(directory):
    """TFLite's converter of the SavedModel ``directory`` written by :func:`write_savedmodel`.

    ``TFLiteConverter.from_saved_model`` loads the whole SavedModel in Python first (every weight
    restored, every function rebuilt: a copy of the model, GoogLeNet +70 MiB) only to list its
    signatures, and that copy is still held when the conversion starts; ours are known
    (``serving_default``, which that method would pick too), so its converter class is made
    directly. Where that private class is not as expected, the public method is used."""
    import tensorflow as tf

    try:
        from tensorflow.lite.python.lite import TFLiteSavedModelConverterV2

        converter = TFLiteSavedModelConverterV2(directory, {tf.saved_model.SERVING}, ["serving_default"])
    except (ImportError, TypeError):
        converter = None
    if converter is None or not converter.saved_model_dir:  # it would convert another way
        return tf.lite.TFLiteConverter.from_saved_model(directory)
    return converter


def _with_tflite_metadata(data, record):
    """``data`` rebuilt through the flatbuffer object API with the metadata ``record``: for the
    models :func:`export_tflite.with_metadata` does not rewrite."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from . import runtime

    tree = flatbuffer_utils.convert_bytearray_to_object(data)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(record, np.uint8)
    tree.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = runtime.METADATA_NAME, len(tree.buffers) - 1
    tree.metadata = [*(tree.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def write_onnx(model, path, opset=None, nchw_inputs=False):
    from . import export_onnx, runtime

    export_onnx.write(model, path, opset=opset, nchw_inputs=nchw_inputs,
                      metadata={**runtime.describe(model), "nchw_inputs": bool(nchw_inputs)})


def quantization_error(model, path, seed=0):
    """How far the TFLite file at ``path`` is from ``model``, on one seeded input (pixels 0-255
    when preprocessing is baked in, else standard normal): ``{output: {max_abs, max_rel}}``,
    max_rel being max_abs / max(1, max|float output|)."""
    from . import preprocess, runtime

    rng = np.random.default_rng(seed)
    pixels = preprocess.find(model) is not None
    arrays = [(rng.uniform(0, 255, (1, *t.shape[1:])) if pixels else rng.standard_normal((1, *t.shape[1:])))
              .astype(np.float32) for t in model.inputs]
    expected = runtime.KerasRunner.of(model)(arrays)
    got = runtime.load(path)(arrays)
    errors = {}
    for name, want, have in zip(model.output_names, expected, got):
        err = float(np.max(np.abs(np.asarray(have, np.float64) - want))) if want.size else 0.0
        errors[name] = {"max_abs": err, "max_rel": err / max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)}
    return errors


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


def _write(model, tmp, fmt, **options):
    if fmt in ("keras", "h5"):
        with _zero_copy_variables():
            if fmt == "h5":
                _save_h5(model, tmp)
            else:
                keras_archive.save(model, tmp)
    elif keras_backend() != "tensorflow":
        _write_through_tensorflow(model, tmp, fmt, options)
    elif fmt == SAVEDMODEL:
        write_savedmodel(model, tmp)
    elif fmt == "onnx":
        write_onnx(model, tmp, **options)
    else:
        write_tflite(model, tmp, **options)


def _save_h5(model, path):
    """Keras' HDF5 writer on a file in HDF5 1.8's format, which stores attributes past 64 KiB:
    the model config and layer list of a network of thousands of layers. (``model.save`` opens
    the file in the oldest format; its writer takes an open file too, from a private module.)"""
    import h5py

    try:
        from keras.src.legacy.saving.legacy_h5_format import save_model_to_hdf5
    except ImportError:
        model.save(path)
        return
    with h5file.create(path) as raw, h5py.File(raw, "w", libver=("v108", "latest")) as f:
        save_model_to_hdf5(model, f)


def check_writer(model, fmt, path):
    """Refuse, before starting, what the format's writer cannot do: weights an ONNX file cannot
    hold, a writer needing more memory than the system has free (TFLite's converter holds many
    copies of the weights: killed halfway is worse)."""
    if fmt == "onnx":
        from . import export_onnx

        export_onnx.check_size(weights_bytes(model), path)
    if fmt not in WRITER_MEMORY:
        return
    need = WRITER_MEMORY[fmt] * weights_bytes(model)
    free = available_memory()
    if free is not None and need > free:
        raise ConversionError(f"writing .{fmt} takes about {_mib(need)} of memory ({WRITER_MEMORY[fmt]}x the "
                              f"weights) and {_mib(free)} are free: free memory, or write .keras, .h5 or "
                              f"{'.onnx' if fmt == 'tflite' else 'a SavedModel'}", file=path)


def available_memory():
    """The kernel's estimate of memory available without swapping (Linux), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def keras_backend():
    import keras

    return keras.backend.backend()


def _write_through_tensorflow(model, tmp, fmt, options):
    """Write a TensorFlow-only format from another Keras backend: the model goes through a
    .keras file to a child process on the TensorFlow backend, which writes ``tmp``."""
    package = __name__.rpartition(".")[0]
    root = str(Path(sys.modules[package].__file__).resolve().parent.parent)
    with _scratch("backend") as work:
        source = Path(work) / "model.keras"
        model.save(source)
        code = f"from {package}.export import tensorflow_child; tensorflow_child()"
        env = {**os.environ, "KERAS_BACKEND": "tensorflow",
               "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), root) if p)}
        child = subprocess.run([sys.executable, "-c", code, str(source), tmp, fmt, json.dumps(options)],
                               env=env, capture_output=True, text=True)
    if child.returncode:
        lines = child.stdout.strip().splitlines()
        report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
        if report and not report["internal"]:
            raise ConversionError(report["error"])
        # Without a report the child died before catching anything: its last line says why.
        last = child.stderr.strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
        detail = report["error"] if report else clip(last[0], 300)
        raise RuntimeError(f"the TensorFlow process writing the .{fmt} failed: {detail}")


def tensorflow_child():
    """The child of :func:`_write_through_tensorflow`: argv holds the .keras source, the output,
    the format and the options (JSON); failures are reported as JSON on stdout."""
    import keras

    from . import _lazy, depth
    from .errors import InternalError

    source, target, fmt, options = sys.argv[1:5]
    try:
        _lazy.register_keras_objects()
        model = depth.call(keras.models.load_model, source, safe_mode=True, compile=False)
        with _quiet_absl():
            _write(model, target, fmt, **json.loads(options))
    except ConversionError as err:
        print(json.dumps({"error": str(err), "internal": isinstance(err, InternalError)}))
        sys.exit(2)
    except Exception as err:
        print(json.dumps({"error": f"{type(err).__name__}: {clip(err, 300)}", "internal": True}))
        sys.exit(1)


def save(model, path, force=False, inputs=(), **options):
    """Save ``model`` to ``path`` atomically; the path picks the format (see the module doc).
    ``inputs`` are the files it was made from, which the output must not replace; ``options``
    are those of :data:`FORMAT_OPTIONS` (``opset``, ``nchw_inputs``, ``quantize``)."""
    fmt = check_output(path, force=force, inputs=inputs)
    check_options(fmt, path, **options)
    target = Path(path)
    _check_space(model, target, path)
    check_writer(model, fmt, path)
    with _interrupts() as interrupted, _quiet_absl(), _staged(target, path) as tmp:
        # A fresh name inside the temporary directory: Keras picks the format by the suffix.
        work = tmp / ("savedmodel" if fmt == SAVEDMODEL else f"model{target.suffix}")
        _write(model, str(work), fmt, **options)
        if interrupted:  # and the KeyboardInterrupt was lost in a finaliser
            raise KeyboardInterrupt()
        publish(work, target, force=force)
    return target


def write_file(path, data, force=False):
    """Write ``data`` (bytes) to ``path`` with the guarantees of :func:`save`."""
    check_target(path, force=force)
    with _staged(Path(path), path) as tmp:
        work = tmp / "file"
        work.write_bytes(data)
        publish(work, path, force=force)


@contextlib.contextmanager
def _staged(target, path):
    """A temporary directory next to ``target`` to write the output in, removed afterwards. An
    error about the disk (full, read-only, ...) becomes a one-line ConversionError naming
    ``path``; any other passes on."""
    tmp = _temp_name(target.parent if str(target.parent) else Path("."))
    try:
        os.mkdir(tmp, 0o700)
        yield tmp
    except ConversionError:
        raise
    except Exception as err:
        problem = _write_problem(err)
        if problem is None:
            raise
        raise ConversionError(f"cannot write the output: {problem}", file=path) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def weights_bytes(model):
    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights)


def _check_space(model, target, path):
    """Refuse when the file system says the weights alone will not fit."""
    need = weights_bytes(model)
    try:
        stats = os.statvfs(target.parent if str(target.parent) else Path("."))
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return
    free = stats.f_bavail * stats.f_frsize
    if need > free:
        raise ConversionError(f"no space left: the weights alone take {_mib(need)} and the file system has "
                              f"{_mib(free)} free", file=path)


def _mib(size):
    return f"{size / 2**20:,.1f} MiB"


def publish(new, target, force=False):
    """Move the finished ``new`` (a file or directory) to ``target``.

    Without ``force`` the move itself refuses an existing ``target``, so an output another run
    wrote since :func:`check_output` looked is never replaced. With ``force`` ``target`` is
    replaced in one atomic step; a replaced directory is left in ``new``'s parent directory, for
    the caller to remove with it.
    """
    new, target = Path(new), Path(target)
    if not force:
        try:
            if not _renameat2(new, target, RENAME_NOREPLACE):
                _claim_and_replace(new, target)
        except FileExistsError:
            raise ConversionError("the output was created by someone else while converting; pass --force to "
                                  "replace it", file=target) from None
        return
    if new.is_dir() and os.path.lexists(target):
        if _renameat2(new, target, RENAME_EXCHANGE):
            return
        aside = new.with_name(new.name + ".replaced")
        os.replace(target, aside)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(aside, target)
            raise
        return
    os.replace(new, target)


def _claim_and_replace(new, target):
    """``RENAME_NOREPLACE`` where the system lacks it: take the name exclusively with an empty file
    or directory (FileExistsError when taken), then rename ``new`` over that claim."""
    if new.is_dir():
        os.mkdir(target)
    else:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    claim = os.stat(target)
    try:
        os.replace(new, target)
    except BaseException:
        with contextlib.suppress(OSError):
            now = os.lstat(target)
            if (now.st_dev, now.st_ino) == (claim.st_dev, claim.st_ino):  # still ours: take it back
                (os.rmdir if new.is_dir() else os.unlink)(target)
        raise


def _renameat2(src, dst, flags):
    """``renameat2(src, dst, flags)``; False when the system or the file system lacks the call or
    the flag, OSError for any other failure."""
    call = _libc_renameat2()
    if call is None:
        return False
    if call(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


@functools.cache
def _libc_renameat2():
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):  # not glibc >= 2.28 (or not Linux)
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call
