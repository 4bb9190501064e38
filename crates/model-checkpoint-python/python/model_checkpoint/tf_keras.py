"""``ModelCheckpoint`` for tf.keras 2 (the ``tf_keras`` package), with tf.keras 2's
behaviour: its arguments (``options``, the deprecated ``period``), messages and warnings."""

import tf_keras as _keras

from ._callback import load_weights, make_callback, restore, restore_latest

ModelCheckpoint = make_callback(_keras, "2")

__all__ = ["ModelCheckpoint", "load_weights", "restore", "restore_latest"]
