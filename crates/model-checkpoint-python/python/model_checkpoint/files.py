"""What is in a folder of checkpoints, locally or on ``s3://``: paths may be ``str`` or
``os.PathLike``."""

import os

from . import _native
from ._warned import warned


def verify(path):
    """Checks the file at ``path`` completely (its header, then every tensor against its
    CRC-32), or every file of the deduplicated or sharded checkpoint in the folder
    ``path`` (a compressed blob's decoded bytes too); raises ``CheckpointError`` naming
    what is wrong."""
    warned(_native.verify, os.fspath(path))


def latest(directory):
    """The newest full checkpoint in ``directory`` that verifies: a file, or the folder of
    a deduplicated or sharded checkpoint (which ``load_file`` reads whole), by the epoch
    and step each records (never by modification time; damaged ones are skipped with a
    warning), or ``None`` when there is none (no folder yet, or nothing in it verifies)."""
    return warned(_native.latest, os.fspath(directory))


def ls(directory):
    """The checkpoints in ``directory`` in training order, one dict each: ``path``,
    ``bytes``, ``kind`` (``"weights"``, ``"full"``, or ``None`` when the header does not
    read: a damaged file, whose ``error`` says why), ``epoch``, ``global_step``, ``run_id``
    and ``error``. A file whose header does not read is left out when it is neither named
    ``.safetensors`` nor begins as a safetensors file does (a user's notes, a CSV)."""
    return warned(_native.ls, os.fspath(directory))
