"""Writing a ``.keras`` archive with the weights written once, where they lie in the archive.

A ``.keras`` file is a zip of ``metadata.json``, ``config.json`` and ``model.weights.h5``, stored
uncompressed. Keras' own saver builds the HDF5 weights in memory and copies them into the zip
(memory for twice the weights, then a second write of every byte) or, past half of the 1 GiB it
assumes free when psutil is absent, writes a temporary ``.h5`` beside the output and copies that
into the zip (every byte written twice).

Here h5py writes the weights member in place: the archive starts with that member, its zip
header sits in the HDF5 file's userblock (space HDF5 leaves to the application at the start of
the file; HDF5 addresses count from the superblock after it, so the member's bytes read alone
are a plain HDF5 file). The JSON members and the central directory follow. The content is
Keras' own, written by Keras' saving functions; where those private functions are not found,
``model.save`` writes the file instead.
"""

import contextlib
import functools
import struct
import time
import zipfile

from . import h5file

# The userblock: the smallest HDF5 allows, room for the member's zip header (30 bytes, the name,
# a ZIP64 field past 4 GiB), the rest padding.
HEADER_SIZE = 512
# Header id of the padding's extra field (the one zipalign uses to align stored members).
PADDING_ID = 0xD935


def save(model, path):
    """Write ``model`` to ``path`` (a new file) as a ``.keras`` archive."""
    try:
        from keras.src.saving import saving_lib

        serialize, save_state = saving_lib._serialize_model_as_json, saving_lib._save_state
        store_class, names = saving_lib.H5IOStore, (
            saving_lib._METADATA_FILENAME, saving_lib._CONFIG_FILENAME, saving_lib._VARS_FNAME_H5)
    except (ImportError, AttributeError):
        model.save(path)
        return
    import h5py

    metadata_name, config_name, weights_name = names
    config_json, metadata_json = serialize(model)
    with h5file.create(path, checksums=True) as raw:

        class InPlaceStore(store_class):
            """Keras' HDF5 weights store on a file whose userblock will hold the zip header."""

            def _get_h5_file(self, path_or_io, mode=None):
                return h5py.File(raw, mode="w", userblock_size=HEADER_SIZE)

        store = InPlaceStore(str(path), mode="w")
        try:
            with _skipsets_kept(saving_lib):
                # Converted models hold no assets (no layer of theirs has any to save).
                save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
        finally:
            store.close()
    with open(path, "r+b") as f:
        weights = _member_in_place(f, weights_name, raw)
        f.seek(0, 2)
        with zipfile.ZipFile(f, "w") as archive:
            archive.writestr(metadata_name, metadata_json)
            archive.writestr(config_name, config_json)
            archive.filelist.append(weights)
            archive.NameToInfo[weights.filename] = weights


@contextlib.contextmanager
def _skipsets_kept(saving_lib):
    """Keras' saver skips the attributes every object of a kind has, listing them from a fresh
    object of that kind; it stores the list under one key and looks it up under another, so it
    builds a fresh ``Layer`` for every layer saved (0.9 ms each: 0.2 s for ResNet-50). Kept here
    for the one save (the lists depend on the kind alone)."""
    original = getattr(saving_lib, "get_attr_skipset", None)
    if original is None:
        yield
        return
    saving_lib.get_attr_skipset = functools.cache(original)
    try:
        yield
    finally:
        saving_lib.get_attr_skipset = original


def _member_in_place(f, name, written):
    """Write the zip header of the member whose data runs from HEADER_SIZE to the end of ``f``
    (``written`` by an :class:`h5file.PieceFile` with checksums); returns its ZipInfo for the
    central directory."""
    end = f.seek(0, 2)
    size = end - HEADER_SIZE
    crc = h5file.crc32(f, HEADER_SIZE, end, written)
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = info.compress_size = size
    info.CRC = crc
    info.header_offset = 0
    header = info.FileHeader()
    if len(header) + 4 > HEADER_SIZE:
        raise RuntimeError(f"the zip header of {name} takes {len(header)} bytes, past the {HEADER_SIZE}-byte userblock")
    padding = HEADER_SIZE - len(header) - 4
    info.extra = struct.pack("<HH", PADDING_ID, padding) + bytes(padding)
    header = info.FileHeader()
    info.extra = b""  # the padding is the local header's alone
    f.seek(0)
    f.write(header)
    return info
