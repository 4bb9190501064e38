"""Our ModelCheckpoint beside tf.keras 2's own (the tf_keras package), in one real fit."""

import logging
import os

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras") if not os.environ.get("CI") else __import__("tf_keras")

from model_checkpoint.tf_keras import ModelCheckpoint, restore_latest  # noqa: E402
from side_by_side import saved, split_printed  # noqa: E402


def data(n=96, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype("float32")
    y = (x[:, :3].sum(1) > 0).astype("float32")
    return x, y


def model():
    m = tf_keras.Sequential([
        tf_keras.layers.Dense(8, activation="relu", input_shape=(6,), name="hidden"),
        tf_keras.layers.Dense(1, activation="sigmoid", name="out"),
    ])
    m.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss="binary_crossentropy",
              metrics=["accuracy"])
    return m


class Caught(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def side_by_side(tmp_path, capsys, epochs=3, **args):
    tf_keras.utils.set_random_seed(11)
    x, y = data()
    theirs = tf_keras.callbacks.ModelCheckpoint(str(tmp_path / "k" / "w.{epoch:02d}.h5"), **args)
    ours = ModelCheckpoint(str(tmp_path / "o" / "w.{epoch:02d}.safetensors"), **args)
    caught = Caught()
    logger = logging.getLogger("tensorflow")
    logger.addHandler(caught)
    capsys.readouterr()
    try:
        model().fit(x, y, validation_split=0.25, epochs=epochs, batch_size=16, verbose=0,
                    shuffle=False, callbacks=[theirs, ours])
    finally:
        logger.removeHandler(caught)
    printed = capsys.readouterr().out
    k, o = split_printed(printed, tmp_path / "k", tmp_path / "o", r"h5")
    return (k, o, saved(tmp_path / "k", ".h5"), saved(tmp_path / "o", ".safetensors"),
            caught.messages, theirs, ours)


def test_best_only_prints_and_saves_as_tf_keras(tmp_path, capsys):
    k, o, k_saved, o_saved, _, theirs, ours = side_by_side(
        tmp_path, capsys, monitor="val_loss", verbose=1, save_best_only=True,
        save_weights_only=True)
    assert k and k == o
    assert k_saved == o_saved and k_saved
    assert theirs.best == ours.best


def test_save_freq_in_batches_as_tf_keras(tmp_path, capsys):
    k, o, k_saved, o_saved, _, _, _ = side_by_side(
        tmp_path, capsys, epochs=2, verbose=1, save_freq=3, save_weights_only=True)
    assert k and k == o
    assert k_saved == o_saved and len(k_saved) == 2


def test_a_missing_monitor_warns_and_skips_as_tf_keras(tmp_path, capsys):
    k, o, k_saved, o_saved, messages, _, _ = side_by_side(
        tmp_path, capsys, epochs=2, monitor="val_nope", verbose=1, save_best_only=True,
        save_weights_only=True)
    assert k == o
    assert k_saved == o_saved == []
    about = [m for m in messages if "val_nope" in m]
    assert len(about) == 4 and about[0] == about[1], about


def test_a_full_checkpoint_resumes_a_tf_keras_fit(tmp_path):
    x, y = data(128)
    tf_keras.utils.set_random_seed(5)
    first = model()
    ck = str(tmp_path / "w.{epoch}.safetensors")
    first.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0,
              callbacks=[ModelCheckpoint(ck, monitor="loss", save_best_only=True)])
    resumed = model()
    callback = ModelCheckpoint(ck, monitor="loss", save_best_only=True)
    assert restore_latest(resumed, tmp_path, [callback]) == 2
    for a, b in zip(first.weights, resumed.weights, strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # The callback goes on from the best value the first run saw.
    assert callback.best == pytest.approx(min(first.history.history["loss"]), rel=1e-6)
    for a, b in zip(first.optimizer.variables, resumed.optimizer.variables, strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_options_are_checked_as_tf_keras_checks_them(tmp_path):
    import tensorflow as tf
    cases = [
        (dict(save_weights_only=True, options="bad"), "w.h5", TypeError),
        (dict(save_weights_only=False, options=0.5), "m.h5", TypeError),
        (dict(save_weights_only=False, options=tf.saved_model.SaveOptions()), "m.keras",
         ValueError),
        (dict(save_weights_only=True, options=tf.train.CheckpointOptions()), "w.h5", None),
        (dict(save_weights_only=False, options=tf.saved_model.SaveOptions()), "m.h5", None),
    ]
    for args, name, raised in cases:
        outcomes = []
        for make in (tf_keras.callbacks.ModelCheckpoint, ModelCheckpoint):
            try:
                make(str(tmp_path / name), **args)
                outcomes.append(None)
            except Exception as e:  # noqa: BLE001 - compared with Keras's below
                outcomes.append((type(e), str(e)))
        assert outcomes[0] == outcomes[1], (args, outcomes)
        assert (outcomes[0] and outcomes[0][0]) == raised, (args, outcomes)
