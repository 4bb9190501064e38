"""Keras's ModelCheckpoint, done properly.

Checkpoints are safetensors files written atomically (nothing appears at a name before the
file is whole), durably (synced, with their folder) and with a CRC-32 per tensor, to a local
folder or an ``s3://`` URL; full checkpoints resume training exactly.

- ``model_checkpoint.save_file`` / ``load_file`` / ``verify`` / ``latest`` / ``ls``: numpy
  arrays, as ``safetensors.numpy`` takes them;
- ``model_checkpoint.keras.ModelCheckpoint``: a Keras callback with Keras's arguments whose
  decisions, messages and files are this engine's (``model_checkpoint.tf_keras`` for
  tf.keras 2).
"""

from ._native import CheckpointError, __version__
from .files import latest, ls, verify
from .numpy import load_file, load_metadata, save_file

__all__ = [
    "CheckpointError",
    "__version__",
    "latest",
    "load_file",
    "load_metadata",
    "ls",
    "save_file",
    "verify",
]
