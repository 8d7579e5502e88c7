"""The file object h5py writes the ``.h5`` and ``.keras`` weights through: every write cut into
pieces of a bounded size.

HDF5 hands each dataset to the file in one write call (VGG16's fc6: 392 MiB). On the busy
2-core machine (Linux 6.18, ext4) 528 MiB written in calls of 4 MiB or more took from 0.2 s to
3.4 s, in calls of 64 or 256 KiB 0.22-0.38 s every time (measured in turns; the page cache then
takes small folios, which is likely why), as the floor of `benchmarks/conversion.py`, copying
the caffemodel with ``sendfile``, takes 0.3 s.
"""

import io

# Small enough for the page cache to fill with small folios, large enough that the system
# calls cost nothing (2,112 for VGG16).
PIECE = 256 << 10


class PieceFile(io.FileIO):
    """A binary file (h5py's ``fileobj`` driver takes it) whose writes go down in ``PIECE``s."""

    def write(self, data):
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += super().write(view[done : done + PIECE])
        return done


def create(path):
    """A new, empty :class:`PieceFile` at ``path``, open for reading and writing."""
    return PieceFile(path, "w+")
