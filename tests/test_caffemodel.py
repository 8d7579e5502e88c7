"""The caffemodel reader: every way Caffe and its writers store blobs, read without loading the file.

Files are written here with the converter's caffe.proto, or byte by byte where protobuf would not
produce the encoding (unpacked floats, truncation, a record without a name, > 2 GiB fields).
"""

import re
import resource
import sys
import time
import tracemalloc

import h5py
import numpy as np
import pytest

from caffe2keras import caffe_pb2, caffemodel
from caffe2keras.errors import ConversionError

LENGTH, FIXED32 = 2, 5


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, wire, payload):
    return _varint(number << 3 | wire) + payload


def _bytes(number, data):
    return _field(number, LENGTH, _varint(len(data)) + data)


def _layer(name, *blobs):
    """A NetParameter.layer record (field 100) from encoded BlobProtos."""
    return _bytes(100, _bytes(1, name.encode()) + b"".join(_bytes(7, b) for b in blobs))


def _shape(*dims):
    return _bytes(7, _bytes(1, b"".join(_varint(d) for d in dims)))


def _write(path, data):
    path.write_bytes(data)
    return path


def test_v2_layer_blobs_keep_their_shape(tmp_path):
    net = caffe_pb2.NetParameter(name="n")
    layer = net.layer.add(name="conv1", type="Convolution")
    w = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    for value in (w, np.array([0.5, -1.5], np.float32)):
        blob = layer.blobs.add()
        blob.shape.dim.extend(value.shape)
        blob.data.extend(value.ravel().tolist())
    net.layer.add(name="relu1", type="ReLU")
    weights = caffemodel.load(_write(tmp_path / "v2.caffemodel", net.SerializeToString()))
    blobs = weights.layers["conv1"]
    np.testing.assert_array_equal(blobs[0], w)
    np.testing.assert_array_equal(blobs[1], [0.5, -1.5])
    assert blobs[0].dtype == np.float32 and weights.layers["relu1"] == []


def test_v1_layers_use_legacy_num_channels_height_width(tmp_path):
    net = caffe_pb2.NetParameter(name="n")
    layer = net.layers.add(name="fc", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    w = np.linspace(-1, 1, 12, dtype=np.float32)
    layer.blobs.add(num=1, channels=1, height=3, width=4).data.extend(w.tolist())
    layer.blobs.add(width=3).data.extend([1.0, 2.0, 3.0])
    blobs = caffemodel.load(_write(tmp_path / "v1.caffemodel", net.SerializeToString())).layers["fc"]
    assert blobs[0].shape == (1, 1, 3, 4) and blobs[1].shape == (1, 1, 1, 3)
    np.testing.assert_array_equal(blobs[0].ravel(), w)


def test_hdf5_snapshot_nests_layer_names_with_slashes(tmp_path):
    path = tmp_path / "net.caffemodel.h5"
    with h5py.File(path, "w") as f:
        f["data/conv1/0"] = np.ones((2, 1, 3, 3), np.float64)
        f["data/conv1/1"] = np.array([1.0, 2.0], np.float32)
        f["data/inception_3a/1x1/0"] = np.full((4, 2, 1, 1), 0.25, np.float32)
    weights = caffemodel.load(path)
    conv1 = weights.take("conv1")
    assert conv1[0].dtype == np.float32 and conv1[0].shape == (2, 1, 3, 3)
    np.testing.assert_array_equal(conv1[1], [1.0, 2.0])
    assert weights.take("inception_3a/1x1")[0].shape == (4, 2, 1, 1)


def hdf5_caffemodel(path, unused_shape=(4,), compression=None):
    """A snapshot with a used layer 'ip' (a 1x4 InnerProduct) and an unused one of unused_shape,
    declared without writing its values (HDF5 allocates nothing: they read as zeros)."""
    with h5py.File(path, "w") as f:
        f["data/ip/0"] = np.arange(4, dtype=np.float32).reshape(1, 4)
        f["data/ip/1"] = np.ones(1, np.float32)
        f.create_dataset("data/unused/0", shape=unused_shape, dtype="f4", compression=compression)
    return path


def test_hdf5_layers_are_read_when_taken_not_when_loaded(tmp_path):
    path = hdf5_caffemodel(tmp_path / "n.caffemodel.h5", unused_shape=(2**29,))  # 2 GiB declared, 3 KB on disk
    tracemalloc.start()
    try:
        weights = caffemodel.load(path)
        assert [b.shape for b in weights.layers["unused"]] == [(2**29,)]
        np.testing.assert_array_equal(weights.take("ip")[0], [[0, 1, 2, 3]])
        assert weights.unused() == ["unused"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_hdf5_layer_declaring_more_than_the_net_implies_is_refused_before_reading(tmp_path, compression):
    """A 3 KB file declaring a 2 GiB dataset (or gzip declaring it) took 2.7 GB to refuse."""
    path = tmp_path / "n.caffemodel.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/ip/0", shape=(2**29,), dtype="f4", compression=compression)
        f["data/ip/1"] = np.ones(1, np.float32)
    tracemalloc.start()
    try:
        with pytest.raises(ConversionError) as info:
            caffemodel.load(path, expected={"ip": 5})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20
    assert info.value.layer == "ip"
    assert str(info.value) == (f"{path}, layer 'ip': declares 536,870,913 values for this layer ([536870912], [1]), "
                               f"more than the 5 the prototxt implies")


def cycle(f):
    f["data/conv/0"] = np.ones(3, np.float32)
    f["data/loop"] = f["data"]


def soft_loop(f):
    f.create_group("data")
    f["data/a"] = h5py.SoftLink("/data/b")
    f["data/b"] = h5py.SoftLink("/data/a")


def external_link(f):
    f["data/conv"] = h5py.ExternalLink("/etc/other.h5", "/weights")


def external_storage(f):
    f.create_dataset("data/conv/0", shape=(4,), dtype="f4", external=[("/etc/hostname", 0, 16)])


def strings(f):
    f["data/conv/0"] = np.array([b"abc"])


@pytest.mark.parametrize("build, says", [
    (cycle, "/data/loop links back to a group already read (an HDF5 link cycle)"),
    (soft_loop, "holds a SoftLink at /data/a"),
    (external_link, "holds a ExternalLink at /data/conv"),
    (external_storage, "dataset /data/conv/0 takes its values from other files"),
    (strings, "dataset /data/conv/0 holds |S3, not numbers"),
], ids=["cycle", "soft-loop", "external-link", "external-storage", "strings"])
def test_hdf5_links_and_storage_caffe_never_writes_are_refused(tmp_path, build, says):
    """A hard-link cycle used to recurse until RecursionError and 16 lines of sys.excepthook noise."""
    path = tmp_path / "n.caffemodel.h5"
    with h5py.File(path, "w") as f:
        build(f)
    with pytest.raises(ConversionError, match=re.escape(says)) as info:
        caffemodel.load(path)
    assert info.value.file == str(path) and "\n" not in str(info.value)


def test_double_data_is_read_as_float32(tmp_path):
    net = caffe_pb2.NetParameter(name="n")
    blob = net.layer.add(name="scale", type="Scale").blobs.add()
    blob.shape.dim.append(3)
    blob.double_data.extend([0.1, 1e-50, -2.0])
    (values,) = caffemodel.load(_write(tmp_path / "d.caffemodel", net.SerializeToString())).layers["scale"]
    np.testing.assert_array_equal(values, np.array([0.1, 1e-50, -2.0]).astype(np.float32))


def test_unpacked_floats_equal_packed_ones(tmp_path):
    # One field per value (old writers), in two runs split by the shape field.
    values = np.linspace(-3, 3, 10, dtype=np.float32)
    unpacked = [_field(5, FIXED32, v.tobytes()) for v in values]
    blob = b"".join(unpacked[:4]) + _shape(2, 5) + b"".join(unpacked[4:])
    packed = _shape(2, 5) + _bytes(5, values.tobytes())
    path = _write(tmp_path / "u.caffemodel", _layer("a", blob) + _layer("b", packed))
    layers = caffemodel.load(path).layers
    np.testing.assert_array_equal(layers["a"][0], values.reshape(2, 5))
    np.testing.assert_array_equal(layers["a"][0], layers["b"][0])


def test_float_data_is_a_view_of_the_file_not_a_copy(tmp_path):
    values = np.arange(1000, dtype=np.float32)
    path = _write(tmp_path / "v.caffemodel", _layer("fc", _shape(10, 100) + _bytes(5, values.tobytes())))
    (blob,) = caffemodel.load(path).layers["fc"]
    assert not blob.flags.owndata and not blob.flags.writeable
    np.testing.assert_array_equal(blob.ravel(), values)


def test_a_nameless_record_without_blobs_is_passed_over(tmp_path):
    # Real Caffe writes a nameless layer (a training net's data layer) without a name field;
    # fixtures/golden/nameless_layers holds such a caffemodel written by Caffe itself.
    v2 = _bytes(100, _bytes(2, b"ReLU"))
    v1 = _bytes(2, _varint(5 << 3) + _varint(18))  # V1LayerParameter{type: RELU}, no name
    path = _write(tmp_path / "noname.caffemodel", v2 + v1 + _layer("fc", _shape(2) + _bytes(5, np.ones(2, np.float32).tobytes())))
    assert list(caffemodel.load(path).layers) == ["fc"]


def test_a_nameless_record_with_blobs_is_refused(tmp_path):
    # Its weights could bind to no layer: refused rather than dropped.
    blob = _shape(2) + _bytes(5, np.ones(2, np.float32).tobytes())
    path = _write(tmp_path / "noname.caffemodel", _bytes(100, _bytes(2, b"Convolution") + _bytes(7, blob)))
    with pytest.raises(ConversionError, match="a layer record with 1 blob\\(s\\) but no name"):
        caffemodel.load(path)


@pytest.mark.parametrize("cut", [1, 7, 30])
def test_a_truncated_file_is_refused(tmp_path, cut):
    data = _layer("fc", _shape(4) + _bytes(5, np.ones(4, np.float32).tobytes()))
    with pytest.raises(ConversionError, match="truncated"):
        caffemodel.load(_write(tmp_path / "t.caffemodel", data[:-cut]))


def test_blob_data_not_matching_its_shape_is_refused(tmp_path):
    path = _write(tmp_path / "s.caffemodel", _layer("fc", _shape(2, 3) + _bytes(5, np.ones(5, np.float32).tobytes())))
    with pytest.raises(ConversionError, match="holds 6 values but 5"):
        caffemodel.load(path)


def _big_layer_head(name, n):
    """The bytes of a layer record holding one blob of ``n`` floats, up to its float data: the
    record's lengths count the 4 n data bytes that follow."""
    blob_head = _shape(n) + _field(5, LENGTH, _varint(4 * n))
    blob_field = _field(7, LENGTH, _varint(len(blob_head) + 4 * n))
    body_head = _bytes(1, name.encode()) + blob_field + blob_head
    return _field(100, LENGTH, _varint(len(body_head) + 4 * n)) + body_head


def _sparse_caffemodel(path, name, n, last=b"", after=b""):
    """A caffemodel with a layer of ``n`` floats never written (a sparse file: no disk, no
    time) but for the ``last`` bytes, then the records ``after``."""
    with open(path, "wb") as f:
        f.write(_big_layer_head(name, n))
        f.seek(4 * n - len(last), 1)
        f.write(last + after)
        f.truncate()  # the file's end is past the hole even when nothing follows it
    return path


def test_reading_the_layer_index_does_not_read_the_blobs(tmp_path):
    # A 1 GiB blob: reading it would take seconds and a GiB of memory.
    n = 2**28
    path = _sparse_caffemodel(tmp_path / "big.caffemodel", "fc", n, after=_layer("prob"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    weights = caffemodel.load(path)
    elapsed = time.perf_counter() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert weights.layers["fc"][0].shape == (n,) and weights.layers["prob"] == []
    assert elapsed < 1.0, f"reading the layer index took {elapsed:.2f}s"
    assert grown_mib < 64, f"reading the layer index grew peak memory by {grown_mib:.0f} MiB"


def test_blobs_past_2_gib_have_no_message_size_limit(tmp_path):
    # protobuf refuses messages over 2 GiB; field lengths past 2**31 are read like any other.
    n = 2**29 + 4  # 2 GiB + 16 bytes of floats
    last = np.array([1.5, -2.5, 3.5, 4.5], np.float32)
    path = _sparse_caffemodel(tmp_path / "huge.caffemodel", "fc", n, last.tobytes(), _layer("prob"))
    weights = caffemodel.load(path)
    (blob,) = weights.layers["fc"]
    assert blob.shape == (n,) and weights.layers["prob"] == []
    np.testing.assert_array_equal(blob[-4:], last)
    assert blob[n // 2] == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resident memory read from /proc")
def test_release_drops_the_pages_a_conversion_has_copied(tmp_path):
    n = 2**24  # 64 MiB of floats
    path = _sparse_caffemodel(tmp_path / "r.caffemodel", "fc", n)
    (blob,) = caffemodel.load(path).layers["fc"]

    def resident_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    before = resident_mib()
    assert float(blob.sum()) == 0.0  # touches every page
    touched = resident_mib()
    caffemodel.release(blob)
    released = resident_mib()
    assert touched - before > 48 and touched - released > 48, (before, touched, released)
    assert float(blob[-1]) == 0.0  # still readable: the pages come back from the page cache
