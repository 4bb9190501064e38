"""``ModelCheckpoint`` for Keras 3 (``keras``), with Keras 3's behaviour; set
``TF_USE_LEGACY_KERAS=1`` (as TensorFlow reads it) to get tf.keras 2's, or import
``model_checkpoint.tf_keras``.

    from model_checkpoint.keras import ModelCheckpoint, restore_latest

    checkpoint = ModelCheckpoint("ck/w.{epoch:02d}.safetensors", save_best_only=True,
                                 monitor="val_loss", verbose=1, keep_last=3)
    model.fit(x, y, validation_split=0.2, epochs=10, callbacks=[checkpoint])
"""

import os

from ._callback import load_weights, make_callback, restore, restore_latest

if os.environ.get("TF_USE_LEGACY_KERAS") in ("1", "true", "True"):
    import tf_keras as _keras

    ModelCheckpoint = make_callback(_keras, "2")
else:
    import keras as _keras

    ModelCheckpoint = make_callback(_keras, "3")

__all__ = ["ModelCheckpoint", "load_weights", "restore", "restore_latest"]
