"""numpy arrays in and out of checkpoint files, as ``safetensors.numpy`` does it, with this
engine's writes (atomic, durable, checksummed; local or ``s3://``) and verified reads."""

import os

import numpy as np

from . import _native
from ._warned import warned


def _numpy_dtype(name):
    """The numpy dtype a checkpoint's dtype name stands for (bfloat16 and float8 through
    ml_dtypes, which JAX and TensorFlow install)."""
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))


def _outgoing(name, array):
    """``(name, dtype, shape, bytes)`` of ``array``, little-endian and in C order."""
    if not isinstance(name, str):
        raise TypeError(f"tensor names must be str, not {type(name).__name__}")
    a = np.asarray(array)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    if not a.flags.c_contiguous:
        # (np.ascontiguousarray would also make a 0-d array 1-d.)
        a = np.ascontiguousarray(a)
    return (name, a.dtype.name, list(a.shape), a.tobytes())


def _array(dtype, shape, data, filename, name):
    """An array over ``data`` (a bytearray the caller owns from now on: writable, no copy);
    a shape numpy cannot make (a zero-size tensor whose other sides overflow its index) is
    a ``CheckpointError`` naming the file and the tensor."""
    try:
        return np.frombuffer(data, dtype=_numpy_dtype(dtype)).reshape(shape)
    except ValueError as e:
        raise _native.CheckpointError(
            f"{filename}: tensor {name!r} of shape {list(shape)}: numpy cannot make it ({e})"
        ) from None


def save_file(tensor_dict, filename, metadata=None):
    """Writes ``tensor_dict`` (``str`` to numpy array) to ``filename`` (a path or an
    ``s3://`` URL) as one safetensors file, atomically and durably, with a CRC-32 per
    tensor; ``metadata`` (``str`` to ``str``) joins its ``__metadata__``. The arrays are
    copied before the write starts, and the GIL is released while it runs. Returns the
    file's size in bytes."""
    if not isinstance(tensor_dict, dict):
        raise TypeError(f"expected a dict of arrays, not {type(tensor_dict).__name__}")
    filename = os.fspath(filename)
    if filename.endswith(("/", os.sep)):
        raise IsADirectoryError(f"{filename} names a folder: give the path of a file")
    items = [_outgoing(name, array) for name, array in tensor_dict.items()]
    return warned(_native.save_file, items, filename, metadata)


def load_file(filename, verify=True):
    """Reads every tensor of ``filename`` (a path or an ``s3://`` URL) as numpy arrays,
    each checked against its CRC-32 as it is read. With ``verify`` (the default) a file
    without this format's checksums is refused; ``verify=False`` reads any safetensors
    file. A folder holding ``model.safetensors.index.json`` (a deduplicated checkpoint, as
    ``ckpt train --dedup`` writes, or a sharded one) is read whole through its index,
    compressed blobs (``--compress``) decoded and checked again."""
    filename = os.fspath(filename)
    tensors, _ = warned(_native.load_file, filename, verify)
    return {name: _array(dtype, shape, data, filename, name) for name, dtype, shape, data in tensors}


def load_metadata(filename):
    """The ``__metadata__`` of ``filename``; its header is checked, its tensors not read."""
    return warned(_native.load_metadata, os.fspath(filename))
