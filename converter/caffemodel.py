"""Reading learned blobs from a caffemodel, by layer name.

Binary caffemodels are read straight from a memory map, one layer record at a time, with a
small protobuf wire-format walker: only layer names and blobs are decoded, float data goes to
numpy without per-element Python work, and there is no 2 GiB message limit. Both the current
format (``layer``, field 100) and V1 (``layers``, field 2, 4-D legacy blob dims) are read, as is
Caffe's HDF5 snapshot format (``.caffemodel.h5``: datasets ``data/<layer>/<i>``).
"""

import mmap
import sys
from pathlib import Path

import numpy as np

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


class _Truncated(Exception):
    pass


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


def _fields(buf, pos, end):
    """Yield (field number, wire type, value or (start, stop) span) for a message in buf[pos:end]."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == LENGTH:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise _Truncated()
            yield number, wire, (pos, pos + size)
            pos += size
        elif wire == FIXED32:
            if pos + 4 > end:
                raise _Truncated()
            yield number, wire, (pos, pos + 4)
            pos += 4
        elif wire == FIXED64:
            if pos + 8 > end:
                raise _Truncated()
            yield number, wire, (pos, pos + 8)
            pos += 8
        else:
            raise ValueError(f"wire type {wire}")


def _packed_varints(buf, span):
    pos, end = span
    out = []
    while pos < end:
        v, pos = _varint(buf, pos, end)
        out.append(v)
    return out


def _blob(buf, span):
    """A BlobProto as an array (a view into ``buf`` for float data) in its stored shape."""
    legacy = [1, 1, 1, 1]
    has_legacy = False
    shape = None
    chunks, doubles = [], []
    for number, wire, value in _fields(buf, *span):
        if number == BLOB_SHAPE and wire == LENGTH:
            shape = []
            for n2, w2, v2 in _fields(buf, *value):
                if n2 == SHAPE_DIM:
                    shape.extend(_packed_varints(buf, v2) if w2 == LENGTH else [v2])
        elif number == BLOB_DATA:
            if wire == LENGTH:
                chunks.append(np.frombuffer(buf, dtype="<f4", count=(value[1] - value[0]) // 4, offset=value[0]))
            else:
                chunks.append(np.frombuffer(buf, dtype="<f4", count=1, offset=value[0]))
        elif number == BLOB_DOUBLE_DATA:
            if wire == LENGTH:
                doubles.append(np.frombuffer(buf, dtype="<f8", count=(value[1] - value[0]) // 8, offset=value[0]))
            else:
                doubles.append(np.frombuffer(buf, dtype="<f8", count=1, offset=value[0]))
        elif number in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and wire == VARINT:
            legacy[number - 1] = value
            has_legacy = True
    if chunks:
        data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    elif doubles:
        data = np.concatenate(doubles).astype(np.float32)
    else:
        data = np.zeros(0, np.float32)
    if shape is None:
        shape = legacy if has_legacy else [data.size]
    count = int(np.prod(shape, dtype=np.int64))
    if count != data.size:
        raise ValueError(f"blob shape {shape} holds {count} values but {data.size} are stored")
    return data.reshape(shape)


class Weights:
    """Blobs by layer name, with bookkeeping of which layers the conversion used."""

    def __init__(self, layers, path=None):
        self.layers = layers  # name -> list of float32 arrays
        self.path = path
        self.used = set()

    def take(self, name):
        blobs = self.layers.get(name)
        if blobs is not None:
            self.used.add(name)
        return blobs

    def unused(self):
        return [n for n, blobs in self.layers.items() if blobs and n not in self.used]

    def warn_unused(self):
        extra = self.unused()
        if extra:
            shown = ", ".join(extra[:12]) + (f", … ({len(extra)} in all)" if len(extra) > 12 else "")
            print(f"warning: ignoring weights of layers the prototxt lacks: {shown}", file=sys.stderr)


def load(path):
    """Read a .caffemodel (binary, V1 or V2) or .caffemodel.h5 into :class:`Weights`."""
    path = Path(path)
    if not path.exists():
        raise ConversionError("no such file", file=path)
    if path.is_dir():
        raise ConversionError("is a directory, expected a .caffemodel file", file=path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return _load_hdf5(path)
    if path.stat().st_size == 0:
        raise ConversionError("is empty, expected a .caffemodel", file=path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        try:
            layers = _read_layers(mm)
        except _Truncated:
            raise ConversionError("is truncated or not a caffemodel (a record runs past the end)", file=path) from None
        except (ValueError, UnicodeDecodeError) as err:
            raise ConversionError(f"is not a caffemodel ({err})", file=path) from None
    if not layers:
        raise ConversionError("is not a caffemodel: it holds no layers", file=path)
    return Weights(layers, path=str(path))


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
                array = _blob(buf, v2)
                # Copy out of the memory map so the file can close; one copy per blob.
                blobs.append(np.array(array, dtype=np.float32, copy=True))
        if name is None:
            raise ValueError("a layer record without a name")
        if name in layers and not blobs:
            continue
        layers[name] = blobs
    return layers


def _load_hdf5(path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise ConversionError("is an HDF5 file without Caffe's 'data' group", file=path)
            layers = {}
            for name, group in f["data"].items():
                # Layer names with '/' are nested groups in Caffe's HDF5 snapshots.
                _collect(name, group, layers)
    except OSError as err:
        raise ConversionError(f"cannot be read as HDF5 ({err})", file=path) from None
    return Weights(layers, path=str(path))


def _collect(name, group, layers):
    import h5py

    keys = list(group.keys())
    if all(k.isdigit() for k in keys) and all(isinstance(group[k], h5py.Dataset) for k in keys):
        layers[name] = [np.asarray(group[k], dtype=np.float32) for k in sorted(keys, key=int)]
        return
    for k, sub in group.items():
        if isinstance(sub, h5py.Group):
            _collect(f"{name}/{k}", sub, layers)
