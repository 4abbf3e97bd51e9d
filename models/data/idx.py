"""Reading the IDX format of MNIST (LeCun's `*-idx3-ubyte[.gz]` files).

Header, big-endian: two zero bytes, a type code (0x08 = uint8), the number
of dimensions, then one uint32 per dimension; the data follows, row-major.
The first four bytes read as a big-endian int are the file's magic number:
2051 for images (3 dims), 2049 for labels (1 dim).
"""
import gzip
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "IMAGES_MAGIC", "LABELS_MAGIC"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path, magic=None):
    """The array stored in the IDX file `path` (gzipped when it starts with 1f 8b).

    `magic`, when given, is the magic number the file must have. Raises
    FileNotFoundError for a missing file and ValueError, naming the file,
    for a header that is not IDX or does not match the data length.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupt gzip stream ({err})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    found = int(np.frombuffer(raw[:4], dtype=">u4")[0])
    if magic is not None and found != magic:
        raise ValueError(f"{path}: bad IDX magic number {found}, expected {magic}")
    if raw[:2] != b"\x00\x00" or raw[2] not in _DTYPES or raw[3] == 0:
        raise ValueError(f"{path}: not an IDX file (header bytes {raw[:4].hex()}; expected "
                         f"00 00, a type code and the number of dimensions)")
    ndim, dtype = raw[3], np.dtype(_DTYPES[raw[2]])
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise ValueError(f"{path}: IDX header truncated ({ndim} dimensions announced)")
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header_end], dtype=">u4"))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise ValueError(f"{path}: IDX header announces shape {shape} ({expected} bytes of data) "
                         f"but the file holds {len(raw) - header_end}")
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape).astype(
        dtype.newbyteorder("="))
