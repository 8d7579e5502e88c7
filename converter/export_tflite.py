"""Adding a metadata entry to a TFLite flatbuffer without rebuilding it.

TFLite's converter returns the model as bytes; a metadata entry (a name and a buffer) belongs in
its root ``Model`` table. Rebuilding the flatbuffer through its Python object API costs about
three copies of the weights and seconds per hundred MiB (VGG16: 5 s). Instead a new root is
written *before* the converter's bytes, which stay as they are: a flatbuffer's root is found
through the file's first word, every reference points forward and is relative to where it is
stored, so the old bytes, moved by a multiple of their alignment, still hold valid tables. The
new root copies the old one's fields, pointing into the old bytes, except ``buffers`` and
``metadata``: new vectors holding the old entries and the new one.

The TFLite schema (``schema.fbs``): ``Model`` fields 0 ``version`` (uint32), then references
only: 1 operator_codes, 2 subgraphs, 3 description, 4 buffers, 5 metadata_buffer, 6 metadata,
7 signature_defs, 8 external_buffer_groups, 9 external_buffers. ``Buffer`` field 0 ``data``
([ubyte], aligned to 16); ``Metadata`` fields 0 ``name`` (string), 1 ``buffer`` (uint32).
"""

import struct

IDENTIFIER = b"TFL3"
MODEL_FIELDS = 10
BUFFERS, METADATA = 4, 6
# The converter's bytes are moved by a multiple of this: the largest alignment in the file.
ALIGN = 16


class Unsupported(ValueError):
    """A flatbuffer this module does not rewrite (another schema, buffers stored by offset)."""


def _u32(data, pos):
    return struct.unpack_from("<I", data, pos)[0]


def _table_fields(data, table):
    """{field index: position of its value} of the table at ``table``."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    vtable_size = struct.unpack_from("<H", data, vtable)[0]
    count = (vtable_size - 4) // 2
    offsets = struct.unpack_from(f"<{count}H", data, vtable + 4)
    return {i: table + off for i, off in enumerate(offsets) if off}


def _follow(data, pos):
    return pos + _u32(data, pos)


def _vector(data, pos):
    """Positions of the elements (references) of the vector referenced at ``pos``."""
    start = _follow(data, pos)
    return [start + 4 + 4 * i for i in range(_u32(data, start))]


def _string(data, pos):
    start = _follow(data, pos)
    return bytes(data[start + 4 : start + 4 + _u32(data, start)])


class _Writer:
    """The new prefix, laid out front to back; references are filled in once targets are placed."""

    def __init__(self):
        self.out = bytearray()

    def align(self, n, remainder=0):
        while len(self.out) % n != remainder:
            self.out += b"\0"

    def u32(self, value=0):
        pos = len(self.out)
        self.out += struct.pack("<I", value)
        return pos

    def refer(self, pos, target):
        """Store at ``pos`` the reference to ``target`` (both positions in the final file)."""
        if target <= pos:
            raise AssertionError("flatbuffer references point forward")
        struct.pack_into("<I", self.out, pos, target - pos)

    def table(self, fields):
        """A table of 4-byte ``fields`` (index -> value or None for a reference set later) with its
        vtable just before it; returns (its position, {index: position of the field})."""
        present = sorted(fields)
        slots = (max(present) + 1) if present else 0
        self.align(2)
        vtable = len(self.out)
        self.out += struct.pack("<HH", 4 + 2 * slots, 4 + 4 * len(present))
        offsets = {index: 4 + 4 * k for k, index in enumerate(present)}
        self.out += struct.pack(f"<{slots}H", *(offsets.get(i, 0) for i in range(slots)))
        self.align(4)
        table = self.u32()
        struct.pack_into("<i", self.out, table, table - vtable)
        positions = {}
        for index in present:
            positions[index] = self.u32(fields[index] or 0)
        return table, positions


def with_metadata(data, name, value):
    """``(prefix, data)``: the file is ``prefix + data`` (``data`` unchanged), a TFLite model
    whose metadata ``name`` is the buffer ``value`` (bytes). Raises :class:`Unsupported` for a
    model this cannot rewrite."""
    if bytes(data[4:8]) != IDENTIFIER:
        raise Unsupported("not a TFLite flatbuffer")
    root = _follow(data, 0)
    fields = _table_fields(data, root)
    if max(fields, default=0) >= MODEL_FIELDS:
        raise Unsupported("a Model table of a newer schema")
    buffers = _vector(data, fields[BUFFERS]) if BUFFERS in fields else []
    metadata = _vector(data, fields[METADATA]) if METADATA in fields else []
    for entry in metadata:
        entry_fields = _table_fields(data, _follow(data, entry))
        if 0 in entry_fields and _string(data, entry_fields[0]) == b"buffer_location":
            raise Unsupported("buffers stored by offset into the file")

    w = _Writer()
    root_ref = w.u32()
    w.out += IDENTIFIER
    kept = {i: (_u32(data, pos) if i == 0 else None) for i, pos in fields.items() if i not in (BUFFERS, METADATA)}
    model, model_fields = w.table({**kept, BUFFERS: None, METADATA: None})
    w.align(4)
    buffer_vector = w.u32(len(buffers) + 1)
    buffer_refs = [w.u32() for _ in range(len(buffers) + 1)]
    metadata_vector = w.u32(len(metadata) + 1)
    metadata_refs = [w.u32() for _ in range(len(metadata) + 1)]
    new_buffer, buffer_fields = w.table({0: None})
    new_entry, entry_fields = w.table({0: None, 1: len(buffers)})
    w.align(4)
    name_pos = w.u32(len(name.encode()))
    w.out += name.encode() + b"\0"
    w.align(ALIGN, ALIGN - 4)
    value_pos = w.u32(len(value))
    w.out += value
    w.align(ALIGN)
    shift = len(w.out)

    # References into the old bytes: their place in the file is ``shift`` further on.
    w.refer(root_ref, model)
    for index, pos in model_fields.items():
        if index in (BUFFERS, METADATA):
            continue
        if index != 0:
            w.refer(pos, shift + _follow(data, fields[index]))
    w.refer(model_fields[BUFFERS], buffer_vector)
    w.refer(model_fields[METADATA], metadata_vector)
    for ref, old in zip(buffer_refs, buffers):
        w.refer(ref, shift + _follow(data, old))
    w.refer(buffer_refs[-1], new_buffer)
    for ref, old in zip(metadata_refs, metadata):
        w.refer(ref, shift + _follow(data, old))
    w.refer(metadata_refs[-1], new_entry)
    w.refer(buffer_fields[0], value_pos)
    w.refer(entry_fields[0], name_pos)
    return bytes(w.out), data
