"""The file object h5py writes the ``.h5`` and ``.keras`` weights through: every write cut into
pieces of a bounded size, and, for the ``.keras`` archive's zip entry, the CRC-32 of the big
writes computed as they are written.

HDF5 hands each dataset to the file in one write call (VGG16's fc6: 392 MiB). On the busy
2-core machine (Linux 6.18, ext4) 528 MiB written in calls of 4 MiB or more took from 0.2 s to
3.4 s, in calls of 64 or 256 KiB 0.22-0.38 s every time (measured in turns; the page cache then
takes small folios, which is likely why), as the floor of `benchmarks/conversion.py`, copying
the caffemodel with ``sendfile``, takes 0.3 s.

The zip entry's CRC covers the whole HDF5 file, whose metadata HDF5 writes last. Reading the
file back for it took 0.2-0.45 s for VGG16; instead each dataset's CRC is computed by a second
thread while the first writes it, and the file's CRC is put together from those and the few
bytes between them (zlib's ``crc32_combine``, here in Python: zlib's module lacks it).
"""

import bisect
import contextlib
import io
import zlib
from concurrent.futures import ThreadPoolExecutor

# Small enough for the page cache to fill with small folios, large enough that the system
# calls cost nothing (2,112 for VGG16).
PIECE = 256 << 10
# CRC-32's polynomial, bit-reversed (zlib's).
POLYNOMIAL = 0xEDB88320
# Read back in blocks this size where no write's CRC is known (small: it adds to the peak memory).
READ_BLOCK = 1 << 20


class PieceFile(io.FileIO):
    """A binary file (h5py's ``fileobj`` driver takes it) whose writes go down in ``PIECE``s.
    With ``checksums`` it keeps the CRC-32 of every write of a ``PIECE`` or more (see
    :func:`crc32`)."""

    def __init__(self, path, mode, checksums=False):
        super().__init__(path, mode)
        self.writes = [] if checksums else None  # (offset, length) of every write, in order
        self.checksums = {}  # index in writes: CRC-32 of that write's bytes
        self.failure = None  # what the first failed write raised
        self._crc_thread = ThreadPoolExecutor(1) if checksums else None

    def write(self, data):
        try:
            return self._write(data)
        except BaseException as err:  # KeyboardInterrupt too: h5py makes its own error of either
            self.failure = self.failure or err
            raise

    def _write(self, data):
        view = memoryview(data).cast("B")
        pending = None
        if self._crc_thread is not None and len(view) >= PIECE:
            # zlib releases the GIL: the CRC runs beside the writes, on the bytes HDF5 hands us
            # (valid until we return).
            pending = self._crc_thread.submit(zlib.crc32, view)
        offset, done = self.tell(), 0
        try:
            while done < len(view):
                done += super().write(view[done : done + PIECE])
        finally:
            crc = None if pending is None else pending.result()  # even when failing: the bytes go with us
        if self.writes is not None:
            if crc is not None:
                self.checksums[len(self.writes)] = crc
            self.writes.append((offset, done))
        return done

    def close(self):
        if self._crc_thread is not None:
            self._crc_thread.shutdown()
        super().close()


@contextlib.contextmanager
def create(path, checksums=False):
    """A new, empty :class:`PieceFile` at ``path``, open for reading and writing, closed on
    leaving. When a write fails (no space left, an interrupt, ...), HDF5 reports that as it can,
    or not at all (h5py then fails on the file's next call): the error leaving is the write's own."""
    f = PieceFile(path, "w+", checksums=checksums)
    try:
        yield f
        if f.failure is not None:  # HDF5 went on as if written
            raise f.failure
    except BaseException as err:
        if f.failure is not None and err is not f.failure:
            raise f.failure from None
        raise
    finally:
        f.close()


def crc32(f, start, end, written):
    """The CRC-32 of bytes ``start`` to ``end`` of the open file ``f``, which ``written`` (a
    closed :class:`PieceFile` with checksums) wrote: a write's CRC stands for its bytes unless a
    later write overlapped them; the rest is read from ``f``."""
    writes, checksums = written.writes, written.checksums
    # The other writes are shorter than a PIECE: those that can overlap one start less than a
    # PIECE before it.
    small = sorted((offset, index) for index, (offset, _) in enumerate(writes) if index not in checksums)
    starts = [offset for offset, _ in small]

    def overwritten(index):
        offset, length = writes[index]

        def overlaps(later):
            return later > index and writes[later][0] < offset + length and offset < sum(writes[later])

        near = small[bisect.bisect_left(starts, offset - PIECE) : bisect.bisect_left(starts, offset + length)]
        return any(overlaps(later) for _, later in near) or any(overlaps(later) for later in checksums)

    known = sorted((*writes[index], crc) for index, crc in checksums.items()
                   if start <= writes[index][0] and sum(writes[index]) <= end and not overwritten(index))
    total, position = 0, start
    for offset, length, crc in known:
        total = _read_crc(f, position, offset, total)
        total = crc32_combine(total, crc, length)
        position = offset + length
    return _read_crc(f, position, end, total)


def _read_crc(f, start, end, crc):
    f.seek(start)
    block = bytearray(min(READ_BLOCK, max(0, end - start)))
    view = memoryview(block)
    left = end - start
    while left > 0:
        n = f.readinto(view[: min(left, len(block))])
        if not n:
            raise OSError(f"{f.name}: ended at {end - left}, {left} bytes short of {end}")
        crc = zlib.crc32(view[:n], crc)
        left -= n
    return crc


def _multiply(a, b):
    """a * b modulo CRC-32's polynomial (both bit-reversed, as zlib's ``multmodp``)."""
    m, product = 1 << 31, 0
    while True:
        if a & m:
            product ^= b
            if not a & (m - 1):
                return product
        m >>= 1
        b = (b >> 1) ^ POLYNOMIAL if b & 1 else b >> 1


def _powers():
    """x^(2^k) modulo the polynomial, k = 0..31 (zlib's ``x2n_table``)."""
    p, table = 1 << 30, []
    for _ in range(32):
        table.append(p)
        p = _multiply(p, p)
    return table


X2N = _powers()


def crc32_combine(crc1, crc2, length2):
    """The CRC-32 of A + B from A's (``crc1``), B's (``crc2``) and B's length (zlib's
    ``crc32_combine``)."""
    p, k, n = 1 << 31, 3, length2  # x^(8 n): n bytes of zeros shifted through
    while n:
        if n & 1:
            p = _multiply(X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multiply(p, crc1) ^ crc2
