"""Reading learned blobs from a caffemodel, by layer name.

Binary caffemodels are read straight from a memory map, one layer record at a time, with a
small protobuf wire-format walker: only layer names and blobs are decoded. Float data is handed
on as read-only numpy views into the map — no copy, no per-element Python work, no 2 GiB message
limit, and only the pages a conversion touches are ever read. Both the current format (``layer``,
field 100) and V1 (``layers``, field 2, 4-D legacy blob dims) are read, as is Caffe's HDF5
snapshot format (``.caffemodel.h5``: datasets ``data/<layer>/<i>``).

HDF5 caffemodels are read lazily too: loading walks the groups (iteratively, following hard links
only, each group once, so link cycles and soft or external links are refused) and notes each
dataset's declared shape; a layer's datasets are read when the conversion takes them. Given the
sizes the network implies for its layers, a layer declaring more values is refused before any is
read, so a small file declaring gigabytes (an unallocated or compressed dataset) costs nothing.

The map stays open while any blob view is alive. Consumers that copy a big blob elsewhere call
:func:`release` on what they have copied, so the file's pages leave the process's memory as the
conversion goes instead of all staying resident until the end.
"""

import math
import mmap
from pathlib import Path

import numpy as np

from . import filetype
from .errors import ConversionError

# Field numbers of the messages we walk (caffe.proto; they never moved across forks).
NET_LAYERS_V1 = 2
NET_LAYER = 100
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = 1, 2, 7
V1_NAME, V1_TYPE, V1_BLOBS = 4, 5, 6
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
# What caffemodels are called.
WEIGHT_SUFFIXES = (".caffemodel", ".caffemodel.h5")
# A file failing as a caffemodel is tried as a mean image (a BlobProto) up to this size.
MEAN_BLOB_BYTES = 64 << 20


class _Truncated(Exception):
    pass


class _Unnamed(Exception):
    """A layer record with blobs but no name (args: the blob count)."""


def _varint(buf, pos, end):
    result, shift = 0, 0
    while True:
        if pos >= end:
            raise _Truncated()
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _field(buf, pos, end):
    """The field starting at ``pos``: (number, wire type, value or (start, stop) span, position after it)."""
    key, pos = _varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise ValueError("field number 0")
    if wire == VARINT:
        value, pos = _varint(buf, pos, end)
        return number, wire, value, pos
    if wire == LENGTH:
        size, pos = _varint(buf, pos, end)
    elif wire == FIXED32:
        size = 4
    elif wire == FIXED64:
        size = 8
    else:
        raise ValueError(f"wire type {wire}")
    if pos + size > end:
        raise _Truncated()
    return number, wire, (pos, pos + size), pos + size


def _fields(buf, pos, end):
    """Yield (field number, wire type, value or (start, stop) span) for a message in buf[pos:end]."""
    while pos < end:
        number, wire, value, pos = _field(buf, pos, end)
        yield number, wire, value


def _packed_varints(buf, span):
    pos, end = span
    out = []
    while pos < end:
        v, pos = _varint(buf, pos, end)
        out.append(v)
    return out


def _packed(buf, span, dtype):
    start, stop = span
    itemsize = np.dtype(dtype).itemsize
    if (stop - start) % itemsize:
        raise ValueError(f"packed blob data of {stop - start} bytes, not a multiple of {itemsize}")
    return np.frombuffer(buf, dtype=dtype, count=(stop - start) // itemsize, offset=start)


def _unpacked_run(buf, key_pos, end, dtype):
    """Values of consecutive unpacked fields with the same one-byte key starting at ``key_pos``
    (older writers stored repeated floats as one field per value): read as a strided array,
    without a Python step per value. Returns (values, position after the run)."""
    itemsize = np.dtype(dtype).itemsize
    stride = 1 + itemsize
    n = (end - key_pos) // stride
    keys = np.frombuffer(buf, dtype=np.uint8, count=n * stride, offset=key_pos)[::stride]
    mismatch = np.flatnonzero(keys != buf[key_pos])
    n = int(mismatch[0]) if mismatch.size else n
    records = np.frombuffer(buf, dtype=np.dtype([("key", "u1"), ("value", dtype)]), count=n, offset=key_pos)
    return records["value"], key_pos + n * stride


def _blob(buf, start, end):
    """A BlobProto as an array in its stored shape: a view into ``buf`` for packed float data."""
    legacy = [1, 1, 1, 1]
    has_legacy = False
    shape = None
    floats, doubles = [], []
    pos = start
    while pos < end:
        number, wire, value, pos = _field(buf, pos, end)
        if number in (BLOB_DATA, BLOB_DOUBLE_DATA):
            dtype = "<f4" if number == BLOB_DATA else "<f8"
            chunks = floats if number == BLOB_DATA else doubles
            if wire == LENGTH:
                chunks.append(_packed(buf, value, dtype))
            elif wire == (FIXED32 if number == BLOB_DATA else FIXED64):
                run, pos = _unpacked_run(buf, value[0] - 1, end, dtype)
                chunks.append(run)
            else:
                raise ValueError(f"blob data of wire type {wire}")
        elif number == BLOB_SHAPE and wire == LENGTH:
            shape = []
            for n2, w2, v2 in _fields(buf, *value):
                if n2 == SHAPE_DIM:
                    shape.extend(_packed_varints(buf, v2) if w2 == LENGTH else [v2])
        elif number in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and wire == VARINT:
            legacy[number - 1] = value
            has_legacy = True
    if floats:
        data = np.ascontiguousarray(floats[0]) if len(floats) == 1 else np.concatenate(floats)
    elif doubles:
        data = np.concatenate(doubles, dtype=np.float32)
    else:
        data = np.zeros(0, np.float32)
    if shape is None:
        shape = legacy if has_legacy else [data.size]
    count = math.prod(shape)  # exact: corrupt dims can overflow int64
    if count != data.size:
        raise ValueError(f"blob shape {shape} holds {count} values but {data.size} are stored")
    return data.reshape(shape)


class Weights:
    """Blobs by layer name, with bookkeeping of which layers the conversion used."""

    def __init__(self, layers, path=None, source=None):
        # name -> list of float32 arrays (read-only views of a mapped caffemodel), or of
        # Hdf5Blob (read by take)
        self.layers = layers
        self.path = path
        self.used = set()
        self._source = source  # what lazy blobs read from (the open HDF5 file)

    def take(self, name):
        blobs = self.layers.get(name)
        if blobs is not None:
            self.used.add(name)
            if any(isinstance(b, Hdf5Blob) for b in blobs):
                blobs = self.layers[name] = [b.read() if isinstance(b, Hdf5Blob) else b for b in blobs]
        return blobs

    def unused(self):
        return [n for n, blobs in self.layers.items() if blobs and n not in self.used]


def load(path, expected=None):
    """Read a .caffemodel (binary, V1 or V2) or .caffemodel.h5 into :class:`Weights`.

    ``expected`` maps layer names to how many values the network gives them (all blobs
    together): an HDF5 layer declaring more is refused before it is read."""
    path = Path(path)
    if not path.exists():
        raise ConversionError("no such file", file=path)
    if path.is_dir():
        raise ConversionError(filetype.wrong_directory(path, "caffemodel", WEIGHT_SUFFIXES), file=path)
    with open(path, "rb") as f:
        head = f.read(filetype.HEAD_BYTES)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return _load_hdf5(path, expected or {})
    if not head:
        raise ConversionError("is empty, expected a .caffemodel (an interrupted download?)", file=path)
    problem = filetype.wrong_file(path, "caffemodel", head=head)
    if problem:
        raise ConversionError(problem, file=path)
    with open(path, "rb") as f:
        # Not closed here: the blobs are views into the map, which lives as long as they do.
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    problem, layers = None, {}
    try:
        layers = _read_layers(mm)
    except _Truncated:
        problem = "is truncated or not a caffemodel (a record runs past the end)"
    except _Unnamed as err:
        problem = f"holds a layer record with {err.args[0]} blob(s) but no name: its weights cannot be bound to a layer"
    except (ValueError, UnicodeDecodeError) as err:
        problem = f"is not a caffemodel (corrupt protobuf: {err})"
    if (problem or not layers) and all(32 <= b < 127 or b in b"\t\r\n" for b in mm[:256]):
        problem = "is a text file, not a binary caffemodel (a prototxt given in place of the caffemodel?)"
    elif (problem or not layers) and _is_mean_blob(mm):
        problem = "is a Caffe mean image (.binaryproto), not a caffemodel: a mean image goes to --mean"
    if problem:
        raise ConversionError(problem, file=path)
    if not layers:
        raise ConversionError("is not a caffemodel: it holds no layers", file=path)
    return Weights(layers, path=str(path))


def _is_mean_blob(buf):
    """Whether ``buf`` parses as a BlobProto whose shape matches its values."""
    if len(buf) > MEAN_BLOB_BYTES:
        return False
    from .schema import caffe_pb2

    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(bytes(buf))
    except Exception:  # protobuf's DecodeError
        return False
    dims = list(blob.shape.dim) or [blob.num, blob.channels, blob.height, blob.width]
    count = len(blob.data) or len(blob.double_data)
    return count > 0 and all(d > 0 for d in dims) and math.prod(dims) == count


def _read_layers(buf):
    layers = {}
    for number, wire, value in _fields(buf, 0, len(buf)):
        if wire != LENGTH or number not in (NET_LAYER, NET_LAYERS_V1):
            continue
        name_field, blob_field = (LAYER_NAME, LAYER_BLOBS) if number == NET_LAYER else (V1_NAME, V1_BLOBS)
        name, blobs = None, []
        for n2, w2, v2 in _fields(buf, *value):
            if n2 == name_field and w2 == LENGTH:
                name = bytes(buf[v2[0] : v2[1]]).decode("utf-8")
            elif n2 == blob_field and w2 == LENGTH:
                blobs.append(_blob(buf, *v2))
        if name is None:
            if not blobs:
                continue  # a training net's data layer, say: Caffe and OpenCV pass over it too
            raise _Unnamed(len(blobs))
        if name in layers and not blobs:
            continue
        layers[name] = blobs
    return layers


def release(array):
    """Drop the memory-mapped caffemodel pages under ``array`` (a blob from :func:`load`, or a
    slice of one) from this process's resident memory, once their values have been copied
    elsewhere. The pages stay in the OS page cache and are read back if touched again, so this
    never changes a value; arrays that are not views of a mapped caffemodel are left alone."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if not isinstance(base, mmap.mmap) or base.closed or array.size == 0 or not hasattr(base, "madvise"):
        return
    origin = np.frombuffer(base, dtype=np.uint8, count=1).ctypes.data
    extents = [(n - 1) * step for n, step in zip(array.shape, array.strides)]
    low = array.ctypes.data + sum(e for e in extents if e < 0)
    high = array.ctypes.data + sum(e for e in extents if e > 0) + array.itemsize
    # Only whole pages inside the array: its neighbours may still be wanted.
    start = -(-(low - origin) // mmap.PAGESIZE) * mmap.PAGESIZE
    stop = (high - origin) // mmap.PAGESIZE * mmap.PAGESIZE
    if stop > start:
        base.madvise(mmap.MADV_DONTNEED, start, stop - start)


# What h5py raises on a damaged file (a dangling link reads as None).
H5PY_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError)


class Hdf5Blob:
    """A dataset of an HDF5 caffemodel, read (as float32) when its layer is taken."""

    def __init__(self, dataset, path):
        self.dataset = dataset
        self.path = path
        self.shape = tuple(int(d) for d in dataset.shape)
        self.size = math.prod(self.shape)

    def read(self):
        try:
            return np.asarray(self.dataset.astype(np.float32)[()])  # converted while read: no float64 copy
        except H5PY_ERRORS as err:
            raise ConversionError(f"is a damaged HDF5 caffemodel: dataset {self.dataset.name} cannot be read "
                                  f"({type(err).__name__}: {err})", file=self.path) from None


def _load_hdf5(path, expected):
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ConversionError(f"cannot be read as HDF5 ({err})", file=path) from None
    try:
        layers = _hdf5_layers(f, path)
    except H5PY_ERRORS as err:
        f.close()
        raise ConversionError(f"is a damaged HDF5 caffemodel ({type(err).__name__}: {err})", file=path) from None
    except BaseException:
        f.close()
        raise
    for name, blobs in layers.items():
        declared = sum(b.size for b in blobs)
        if name in expected and declared > expected[name]:
            f.close()
            shapes = ", ".join(str(list(b.shape)) for b in blobs)
            raise ConversionError(f"declares {declared:,} values for this layer ({shapes}), more than the "
                                  f"{expected[name]:,} the prototxt implies", file=path, layer=name)
    return Weights(layers, path=str(path), source=f)


def _hdf5_layers(f, path):
    """Layer name -> [Hdf5Blob] from the ``data`` group: a group whose members are all datasets
    named 0, 1, ... is a layer (an empty one, a layer without blobs); other groups nest layer
    names holding '/'. Iterative, following hard links only and each group once."""
    import h5py

    if not isinstance(f.get("data", getlink=True), h5py.HardLink) or not isinstance(f["data"], h5py.Group):
        if "keras_version" in f.attrs or "model_config" in f.attrs or "model_weights" in f or "layer_names" in f.attrs:
            raise ConversionError("is a Keras .h5 model, not a caffemodel (a converted model given as input?)",
                                  file=path)
        raise ConversionError("is an HDF5 file without Caffe's 'data' group", file=path)
    layers, seen, pending = {}, set(), [("", f["data"])]
    while pending:
        name, group = pending.pop()
        if group.id in seen:
            raise ConversionError(f"{group.name} links back to a group already read (an HDF5 link cycle); Caffe's "
                                  f"snapshots are trees", file=path)
        seen.add(group.id)
        members = {}
        for key in group:
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise ConversionError(f"holds a {type(link).__name__} at {group.name}/{key}; Caffe's snapshots hold "
                                      f"only groups and datasets", file=path)
            members[key] = group[key]
        if name and all(k.isdigit() and isinstance(m, h5py.Dataset) for k, m in members.items()):
            layers[name] = [_hdf5_blob(members[k], path) for k in sorted(members, key=int)]
            continue
        subgroups = [(f"{name}/{k}" if name else k, m) for k, m in members.items() if isinstance(m, h5py.Group)]
        pending.extend(reversed(subgroups))  # popped in the file's order
    return layers


def _hdf5_blob(dataset, path):
    if dataset.is_virtual or dataset.external:  # values from other files: not ours to read
        problem = "takes its values from other files"
    elif dataset.dtype.kind not in "fiu":
        problem = f"holds {dataset.dtype}, not numbers"
    else:
        return Hdf5Blob(dataset, path)
    raise ConversionError(f"dataset {dataset.name} {problem}; Caffe's snapshots hold float arrays", file=path)
