"""Our ModelCheckpoint beside Keras 3's own, in one real `model.fit` (JAX on the CPU), and
an exact resume."""

import json
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import model_checkpoint as mc  # noqa: E402
from side_by_side import saved, split_printed  # noqa: E402
from model_checkpoint.keras import ModelCheckpoint, restore, restore_latest  # noqa: E402


def data(n=96, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype("float32")
    y = (x[:, :3].sum(1) > 0).astype("float32")
    return x, y


def model(tag):
    """A small classifier whose variables are named the same in every build."""
    m = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(1, activation="sigmoid", name="out"),
        ],
        name=f"net_{tag}",
    )
    m.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy",
              metrics=["accuracy"])
    return m


def run_side_by_side(tmp_path, capsys, epochs=4, before=(), **args):
    """Keras's callback and ours with the same arguments in one fit (after the callbacks
    `before`); what each printed and saved, with the paths made comparable."""
    keras.utils.set_random_seed(11)
    x, y = data()
    weights_only = args.get("save_weights_only", False)
    theirs = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "k" / ("w.{epoch:02d}.weights.h5" if weights_only else "m.{epoch:02d}.keras")),
        **args)
    ours = ModelCheckpoint(str(tmp_path / "o" / "w.{epoch:02d}.safetensors"), **args)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model("side").fit(x, y, validation_split=0.25, epochs=epochs, batch_size=16,
                          verbose=0, shuffle=False, callbacks=[*before, theirs, ours])
    printed = capsys.readouterr().out
    k_ext = ".weights.h5" if weights_only else ".keras"
    k_lines, o_lines = split_printed(printed, tmp_path / "k", tmp_path / "o", r"weights\.h5|keras")
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return (k_lines, o_lines, saved(tmp_path / "k", k_ext), saved(tmp_path / "o", ".safetensors"),
            messages, theirs, ours)


def test_best_only_on_val_loss_prints_and_saves_as_keras(tmp_path, capsys):
    k, o, k_saved, o_saved, _, theirs, ours = run_side_by_side(
        tmp_path, capsys, monitor="val_loss", verbose=1, save_best_only=True,
        save_weights_only=True)
    assert k and k == o
    assert k_saved == o_saved and k_saved
    assert theirs.best == ours.best
    assert ours.last_saved.endswith(f"{o_saved[-1]}.safetensors")


class PinAccuracy(keras.callbacks.Callback):
    """Every epoch's accuracy is float32(0.6), widened: what 36 right of 60 is."""
    def on_epoch_end(self, epoch, logs=None):
        logs["accuracy"] = float(np.float32(0.6))


def test_a_value_equal_in_float32_to_the_best_does_not_improve_as_in_keras(tmp_path, capsys):
    # Keras 3 compares through ops.greater, in float32: 0.6000000238... ties with 0.6.
    k, o, k_saved, o_saved, _, theirs, ours = run_side_by_side(
        tmp_path, capsys, epochs=2, before=[PinAccuracy()], monitor="accuracy", mode="max",
        verbose=1, save_best_only=True, save_weights_only=True, initial_value_threshold=0.6)
    assert k and k == o, (k, o)
    assert all("did not improve" in line for line in k), k
    assert k_saved == o_saved == []
    assert theirs.best == ours.best == 0.6


def test_with_jax_x64_values_equal_in_float32_are_compared_as_doubles_as_in_keras(tmp_path):
    # JAX's x64 mode gives Python floats as float64: Keras 3 then tells 0.6000000238... from
    # 0.6, and saves. Its own process, since JAX reads the setting when it starts.
    import subprocess
    import sys
    script = f"""
import os, sys, warnings
sys.path.insert(0, {os.path.dirname(__file__)!r})
os.environ["KERAS_BACKEND"] = "jax"
os.environ["JAX_ENABLE_X64"] = "1"
import keras, numpy as np
from model_checkpoint.keras import ModelCheckpoint
from test_keras import PinAccuracy, data, model
x, y = data()
for cls, name in ((keras.callbacks.ModelCheckpoint, "w{{epoch}}.weights.h5"),
                  (ModelCheckpoint, "w{{epoch}}.safetensors")):
    cb = cls(os.path.join({str(tmp_path)!r}, name), monitor="accuracy", mode="max",
             save_best_only=True, save_weights_only=True, initial_value_threshold=0.6)
    model("x64").fit(x, y, epochs=1, verbose=0, callbacks=[PinAccuracy(), cb])
    print(cls.__module__, cb.best)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert saved(tmp_path, ".safetensors") == saved(tmp_path, ".weights.h5") == ["w1"], (
        os.listdir(tmp_path), done.stdout)


def test_save_freq_in_batches_prints_and_saves_as_keras(tmp_path, capsys):
    k, o, k_saved, o_saved, _, _, _ = run_side_by_side(
        tmp_path, capsys, epochs=2, verbose=1, save_freq=3, save_weights_only=True)
    assert k and k == o
    assert k_saved == o_saved and len(k_saved) == 2


def test_a_missing_monitor_warns_and_saves_as_keras(tmp_path, capsys):
    k, o, k_saved, o_saved, messages, _, _ = run_side_by_side(
        tmp_path, capsys, epochs=2, monitor="val_nope", mode="min", verbose=1,
        save_best_only=True, save_weights_only=True)
    assert k == o
    assert k_saved == o_saved and k_saved
    about = [m for m in messages if "val_nope" in m]
    # Keras's warning and ours, word for word, once per epoch each.
    assert len(about) == 4 and about[0] == about[1], about


def test_keras_argument_errors_are_keras_errors(tmp_path):
    with pytest.raises(ValueError, match="Unrecognized save_freq"):
        ModelCheckpoint(str(tmp_path / "w.safetensors"), save_freq="3")
    with pytest.raises(TypeError, match="period"):
        ModelCheckpoint(str(tmp_path / "w.safetensors"), period=2)
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        ModelCheckpoint(str(tmp_path / "w.txt"), save_weights_only=True)


def variables(m):
    return [np.asarray(v).copy() for v in m.weights] + [
        np.asarray(v).copy() for v in m.optimizer.variables
    ]


def test_a_resumed_fit_ends_bit_for_bit_where_a_straight_one_does(tmp_path):
    x, y = data(128)
    keras.utils.set_random_seed(5)
    straight = model("a")
    straight.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0,
                 validation_split=0.25,
                 callbacks=[ModelCheckpoint(str(tmp_path / "s/w.{epoch}.safetensors"))])
    keras.utils.set_random_seed(5)
    first = model("a")
    ck = str(tmp_path / "r/w.{epoch}.safetensors")
    first.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0,
              validation_split=0.25, callbacks=[ModelCheckpoint(ck, monitor="val_loss")])
    # A new model (initialised differently) and a new callback, as a new process has.
    keras.utils.set_random_seed(99)
    resumed = model("a")
    callback = ModelCheckpoint(ck, monitor="val_loss")
    epoch = restore_latest(resumed, tmp_path / "r", [callback])
    assert epoch == 2
    resumed.fit(x, y, epochs=4, initial_epoch=epoch, batch_size=16, shuffle=False,
                verbose=0, validation_split=0.25, callbacks=[callback])
    for a, b in zip(variables(straight), variables(resumed), strict=True):
        assert a.tobytes() == b.tobytes()
    files = lambda d: sorted(f for f in os.listdir(tmp_path / d) if f.endswith(".safetensors"))  # noqa: E731
    assert files("r") == files("s") == [f"w.{e}.safetensors" for e in (1, 2, 3, 4)]
    # The files are the same too, byte for byte, but for the run's identity.
    s = mc.load_file(tmp_path / "s/w.4.safetensors")
    r = mc.load_file(tmp_path / "r/w.4.safetensors")
    assert s.keys() == r.keys()
    assert all(s[n].tobytes() == r[n].tobytes() for n in s)


def test_background_saves_copy_first_and_retention_keeps_the_newest(tmp_path):
    keras.utils.set_random_seed(2)
    x, y = data()
    m = model("bg")
    cb = ModelCheckpoint(str(tmp_path / "w.{epoch:02d}.safetensors"), background=True,
                         keep_last=2, save_last=True)
    m.fit(x, y, epochs=5, batch_size=16, verbose=0, validation_split=0.25,
          callbacks=[cb])
    names = sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))
    assert names == ["last.safetensors", "w.04.safetensors", "w.05.safetensors"]
    newest = mc.load_file(tmp_path / "w.05.safetensors")
    for v in m.weights:
        assert newest[v.path.removeprefix(m.name + "/")].tobytes() == np.asarray(v).tobytes()
    assert cb.latest().endswith("w.05.safetensors")


def test_an_exception_reading_the_model_is_raised_unchanged(tmp_path):
    class Broken(ModelCheckpoint):
        def _weights(self):
            raise RuntimeError("the model is gone")

    x, y = data()
    with pytest.raises(RuntimeError, match="the model is gone"):
        model("broken").fit(x, y, epochs=1, verbose=0, callbacks=[
            Broken(str(tmp_path / "w.safetensors"), save_weights_only=True)])
    assert not any(f.endswith(".safetensors") for f in os.listdir(tmp_path))


def test_a_resumed_run_prints_and_saves_what_a_straight_run_does(tmp_path, capsys):
    """With compiled metrics (Keras 3 reads their direction lazily) and save_best_only:
    the restored `best` survives the first epoch end of the resumed run."""
    x, y = data(128)
    args = dict(monitor="val_accuracy", save_best_only=True, verbose=1)

    def fit(m, folder, first, last, callback=None):
        callback = callback or ModelCheckpoint(str(tmp_path / folder / "w.{epoch}.safetensors"), **args)
        m.fit(x, y, epochs=last, initial_epoch=first, batch_size=16, shuffle=False, verbose=0,
              validation_split=0.25, callbacks=[callback])
        return callback

    keras.utils.set_random_seed(8)
    capsys.readouterr()
    fit(model("p"), "s", 0, 5)
    straight = [l.replace("/s/", "/") for l in capsys.readouterr().out.splitlines() if l.strip()]
    keras.utils.set_random_seed(8)
    fit(model("p"), "r", 0, 2)
    first = [l.replace("/r/", "/") for l in capsys.readouterr().out.splitlines() if l.strip()]
    resumed_model = model("p")
    callback = ModelCheckpoint(str(tmp_path / "r" / "w.{epoch}.safetensors"), **args)
    epoch = restore_latest(resumed_model, tmp_path / "r", [callback])
    capsys.readouterr()
    fit(resumed_model, "r", epoch, 5, callback)
    rest = [l.replace("/r/", "/") for l in capsys.readouterr().out.splitlines() if l.strip()]
    assert first + rest == straight
    assert any("did not improve" in l for l in straight) or len(straight) == 10


def test_callbacks_in_one_fit_each_resume_with_their_state(tmp_path, capsys):
    """Two of our callbacks in one `fit` (the best weights, and full checkpoints every
    epoch): each full checkpoint holds both states, so that the best-only one resumes with
    its true best and prints and saves what it does in a straight run. (Each saves in its
    own hook, as Keras's do: the best-only one is listed first, so that it has had the
    epoch's end when the full checkpoint records it.)"""
    x, y = data(128)

    def callbacks(folder):
        return [
            ModelCheckpoint(str(tmp_path / folder / "best.safetensors"), monitor="val_accuracy",
                            save_best_only=True, save_weights_only=True, verbose=1),
            ModelCheckpoint(str(tmp_path / folder / "e{epoch:02d}.safetensors"), keep_last=2),
        ]

    def fit(m, cbs, first, last):
        m.fit(x, y, epochs=last, initial_epoch=first, batch_size=16, shuffle=False, verbose=0,
              validation_split=0.25, callbacks=cbs)

    def lines(folder):
        return [l.replace(f"/{folder}/", "/") for l in capsys.readouterr().out.splitlines()
                if l.strip()]

    keras.utils.set_random_seed(8)
    capsys.readouterr()
    straight = callbacks("s")
    fit(model("two"), straight, 0, 6)
    straight_lines = lines("s")
    keras.utils.set_random_seed(8)
    fit(model("two"), callbacks("r"), 0, 3)
    first = lines("r")
    resumed_model, cbs = model("two"), callbacks("r")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        epoch = restore_latest(resumed_model, tmp_path / "r", cbs)
        fit(resumed_model, cbs, epoch, 6)
    assert [str(w.message) for w in caught] == []
    assert first + lines("r") == straight_lines
    assert cbs[0].best == straight[0].best
    state = mc.load_metadata(tmp_path / "r/e06.safetensors")["training_state"]
    assert sorted(json.loads(state)["callbacks"]) == sorted(
        f"ModelCheckpoint({tmp_path / 'r' / name})" for name in
        ("best.safetensors", "e{epoch:02d}.safetensors"))
    # Listed the other way round, the best-only callback is told to come first.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model("two"), callbacks("o")[::-1], 0, 1)
    assert any("list the best-only callback first" in str(w.message) for w in caught)
    # A peer whose hook fails (its template lacks a key): the one before it has saved in
    # its own hook, as Keras's callbacks do.
    first = ModelCheckpoint(str(tmp_path / "f" / "e{epoch:02d}.safetensors"))
    failing = ModelCheckpoint(str(tmp_path / "f" / "{nokey}.safetensors"))
    with pytest.raises(KeyError, match="nokey"):
        fit(model("two"), [first, failing], 0, 1)
    assert (tmp_path / "f" / "e01.safetensors").is_file()
    # A callback left over from a fit that ended by an exception is no peer of the next.
    class Fails(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("stop")

    m = model("two")
    left = ModelCheckpoint(str(tmp_path / "x" / "left.safetensors"))
    with pytest.raises(RuntimeError, match="stop"):
        fit(m, [left, Fails()], 0, 1)
    fit(m, [ModelCheckpoint(str(tmp_path / "x" / "next.safetensors"))], 0, 1)
    state = mc.load_metadata(tmp_path / "x/next.safetensors")["training_state"]
    assert list(json.loads(state)["callbacks"]) == [
        f"ModelCheckpoint({tmp_path / 'x' / 'next.safetensors'})"]


def test_a_resume_under_another_filepath_says_which_state_the_checkpoint_holds(tmp_path):
    """A callback's state is kept under its filepath: resumed with another, it starts
    afresh, and the warning names the state the checkpoint holds (not advice about lists
    of callbacks, which a Keras user cannot follow)."""
    x, y = data()
    saved_as = str(tmp_path / "e{epoch:02d}.safetensors")
    model("tpl").fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(saved_as)])
    renamed = ModelCheckpoint(str(tmp_path / "epoch-{epoch:03d}.safetensors"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert restore_latest(model("tpl"), tmp_path, [renamed]) == 1
    messages = [str(w.message) for w in caught]
    assert any("holds no state for callback" in m and f"ModelCheckpoint({saved_as})" in m
               and "give the filepath it was saved with" in m for m in messages), messages


def test_hooks_called_by_hand_without_a_model_fail_at_the_save_as_in_keras(tmp_path):
    ours = ModelCheckpoint(str(tmp_path / "w.safetensors"))
    theirs = keras.callbacks.ModelCheckpoint(str(tmp_path / "w.keras"))
    for cb in (ours, theirs):
        cb.on_train_begin()
        cb.on_epoch_begin(0)
        with pytest.raises(AttributeError):
            cb.on_epoch_end(0, {"val_loss": 1.0})


def test_reading_the_callback_from_another_thread_during_fit_never_hangs(tmp_path):
    import threading

    x, y = data()
    cb = ModelCheckpoint(str(tmp_path / "w.{epoch:02d}.safetensors"), save_freq=1)
    stop = threading.Event()
    reads = []

    def watch():
        while not stop.is_set():
            reads.append((cb.best, cb.last_saved))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        model("watched").fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    finally:
        stop.set()
        watcher.join(timeout=60)
    assert not watcher.is_alive()
    assert reads and cb.last_saved.endswith("w.02.safetensors")


def test_a_copy_is_a_new_callback_and_bad_extras_are_refused(tmp_path):
    import copy

    cb = ModelCheckpoint(str(tmp_path / "w.safetensors"), monitor="loss", keep_last=2)
    twin = copy.deepcopy(cb)
    assert twin is not cb and twin._native is not cb._native
    assert twin.monitor == "loss" and twin.filepath == cb.filepath
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="keep_last"):
            ModelCheckpoint(str(tmp_path / "w.safetensors"), keep_last=bad)


def test_a_storage_that_names_no_place_is_refused_before_anything_is_written(
        tmp_path, monkeypatch):
    # Joined as text, "" made the filepath absolute (a file at the root replaced), and
    # "s3://" a local folder named "s3:".
    monkeypatch.chdir(tmp_path)
    for storage, said in (("", "is empty"), ("s3://", "names no bucket"),
                          ("s3:///", "names no bucket")):
        with pytest.raises(ValueError, match=f"storage '{storage}' {said}"):
            ModelCheckpoint("w.safetensors", storage=storage)
    assert list(tmp_path.iterdir()) == []
    cb = ModelCheckpoint("w.safetensors", storage=tmp_path / "run")
    assert cb.filepath == f"{tmp_path}/run/w.safetensors"


def test_a_template_whose_fields_name_folders_resumes_through_its_callback(tmp_path):
    # ck/e{epoch:02d}/w.safetensors saves nothing in ck itself: restore_latest asks the
    # callback (it returned 0, and a requeued job started again from epoch 0).
    x, y = data()
    template = str(tmp_path / "ck" / "e{epoch:02d}" / "w.safetensors")
    model("nested").fit(x, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(template)])
    assert mc.latest(tmp_path / "ck") is None
    fresh = model("nested")
    assert restore_latest(fresh, tmp_path / "ck", [ModelCheckpoint(template)]) == 2
    # A callback saving elsewhere is not asked.
    elsewhere = ModelCheckpoint(str(tmp_path / "other" / "e{epoch:02d}" / "w.safetensors"))
    assert restore_latest(model("nested"), tmp_path / "other", [elsewhere]) == 0


def test_a_first_run_starts_from_nothing(tmp_path):
    assert mc.latest(tmp_path / "none") is None
    assert restore_latest(model("fresh"), tmp_path / "none") == 0


_SIGNALLED_FIT = r"""
import os, signal, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
import keras, numpy as np
sys.path.insert(0, {tests!r})
from test_keras import data, model
from model_checkpoint.keras import ModelCheckpoint

class Signal(keras.callbacks.Callback):
    # The signal arrives in the middle of the second epoch.
    def on_train_batch_end(self, batch, logs=None):
        if self.params and getattr(self, "epoch", 0) == 1 and batch == 2:
            os.kill(os.getpid(), signal.{signal})
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

x, y = data()
checkpoint = ModelCheckpoint({template!r}, save_on_interrupt=True, background=True)
try:
    model("sig").fit(x, y, epochs=6, batch_size=8, verbose=0, shuffle=False,
                     callbacks=[Signal(), checkpoint])
except BaseException as e:
    print("ended by", type(e).__name__, getattr(e, "code", ""), checkpoint.interrupt_saved,
          flush=True)
    raise
print("fit returned", flush=True)
"""


@pytest.mark.parametrize("name,ended_by,status", [
    ("SIGTERM", "SystemExit 143", 143),
    # Python ends a program that does not catch KeyboardInterrupt by SIGINT itself.
    ("SIGINT", "KeyboardInterrupt", -2),
])
def test_a_signal_saves_a_full_checkpoint_and_then_ends_fit_as_the_signal_would(
        tmp_path, name, ended_by, status):
    import subprocess
    import sys
    template = str(tmp_path / "ck" / "w.{epoch:02d}.safetensors")
    script = _SIGNALLED_FIT.format(tests=os.path.dirname(__file__), signal=name,
                                   template=template)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == status, done.stdout + done.stderr
    assert f"ended by {ended_by}" in done.stdout, done.stdout + done.stderr
    assert "fit returned" not in done.stdout
    saved = tmp_path / "ck" / "interrupted.safetensors"
    assert str(saved) in done.stdout
    mc.verify(saved)
    # Epoch 1 (the first) was saved; training stopped in the second: nothing later.
    assert sorted(os.listdir(tmp_path / "ck")) == sorted(
        [".ckpt.lock", "interrupted.safetensors", "w.01.safetensors"]
        + [f for f in os.listdir(tmp_path / "ck") if f.startswith(".ckpt-run.")])
    # Saved in the middle of the second epoch: its batch is recorded, and a resume trains
    # that epoch again from its start (Keras starts epochs only at their beginning).
    meta = mc.load_metadata(saved)
    assert meta["epoch"] == "2" and "batch" in meta and meta["signal"] == name, meta
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert restore_latest(model("sig"), tmp_path / "ck") == 1
    assert any("in the middle of epoch 2" in str(w.message) for w in caught)
    # The file says it was saved on a signal, whatever it is called now.
    import shutil
    renamed = tmp_path / "moved.safetensors"
    shutil.copy(saved, renamed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert restore(model("sig"), renamed) == 1
    assert any("in the middle of epoch 2" in str(w.message) for w in caught)


_TWO_SAVING_ON_A_SIGNAL = r"""
import os, signal, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
import keras
sys.path.insert(0, {tests!r})
from test_keras import data, model
from model_checkpoint.keras import ModelCheckpoint

class Signal(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if getattr(self, "epoch", 0) == 1 and batch == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

x, y = data()
first = ModelCheckpoint({first!r}, save_on_interrupt=True)
second = ModelCheckpoint({second!r}, save_on_interrupt=True, save_weights_only=True)
model("two").fit(x, y, epochs=4, batch_size=8, verbose=0, shuffle=False,
                 callbacks=[first, Signal(), second])
"""


def test_two_callbacks_saving_on_a_signal_each_save_it(tmp_path):
    # The first to see the signal saves, then ends fit by an exception, before the other's
    # hook: the other saves on it too (it saved nothing, and its folder resumed from the
    # epoch before).
    import subprocess
    import sys
    script = _TWO_SAVING_ON_A_SIGNAL.format(
        tests=os.path.dirname(__file__), first=str(tmp_path / "a" / "w.{epoch:02d}.safetensors"),
        second=str(tmp_path / "b" / "w.{epoch:02d}.safetensors"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 143, done.stdout + done.stderr
    for folder in ("a", "b"):
        saved = tmp_path / folder / "interrupted.safetensors"
        mc.verify(saved)
        meta = mc.load_metadata(saved)
        assert meta["epoch"] == "2" and meta["signal"] == "SIGTERM", (folder, meta)
        assert mc.latest(tmp_path / folder) == str(saved)


def test_load_weights_puts_a_weights_file_or_a_full_checkpoint_back_into_a_model(tmp_path):
    from model_checkpoint.keras import load_weights
    x, y = data()
    keras.utils.set_random_seed(4)
    trained = model("lw")
    trained.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[
        ModelCheckpoint(str(tmp_path / "w.safetensors"), save_weights_only=True),
        ModelCheckpoint(str(tmp_path / "full" / "f.safetensors"))])
    for path in [tmp_path / "w.safetensors", tmp_path / "full" / "f.safetensors"]:
        keras.utils.set_random_seed(77)
        fresh = model("lw")
        load_weights(fresh, path)
        for a, b in zip(trained.weights, fresh.weights, strict=True):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # Another architecture: every mismatch listed at once.
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="hidden")],
                             name="net_other")
    with pytest.raises(ValueError, match=r"hidden/kernel: shape \(6, 8\).*unexpected out/kernel|unexpected out/kernel.*hidden/kernel: shape"):
        load_weights(other, tmp_path / "w.safetensors")


def test_restore_latest_says_so_when_a_folder_holds_only_weights(tmp_path):
    x, y = data()
    model("wo").fit(x, y, epochs=2, verbose=0, callbacks=[
        ModelCheckpoint(str(tmp_path / "w.{epoch}.safetensors"), save_weights_only=True)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert restore_latest(model("wo"), tmp_path) == 0
    said = [str(w.message) for w in caught]
    assert any("2 weights-only checkpoint(s) and no full one" in m and "w.2.safetensors" in m
               for m in said), said
    # A first run (no folder yet) says nothing.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert restore_latest(model("wo"), tmp_path / "new") == 0
    assert not caught


def test_keras_file_names_are_written_as_safetensors_with_a_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ModelCheckpoint(str(tmp_path / "w.{epoch}.weights.h5"), save_weights_only=True)
        ModelCheckpoint(str(tmp_path / "m.{epoch}.keras"))
        ModelCheckpoint(str(tmp_path / "m.{epoch}.safetensors"))
    said = [str(w.message) for w in caught]
    assert len(said) == 2 and all("load_weights" in m and ".safetensors" in m for m in said), said


def test_arguments_keras_refuses_or_reads_loosely_are_taken_as_keras_does(tmp_path, capsys):
    path = str(tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="Unrecognized save_freq"):
        keras.callbacks.ModelCheckpoint(str(tmp_path / "w.keras"), save_freq=None)
    with pytest.raises(ValueError, match="Unrecognized save_freq"):
        ModelCheckpoint(path, save_freq=None)
    with pytest.raises(TypeError):
        keras.callbacks.ModelCheckpoint(str(tmp_path / "w.keras"), options=None)
    with pytest.raises(TypeError, match="options"):
        ModelCheckpoint(path, options=None)
    for mode in [None, 5]:
        with warnings.catch_warnings(record=True) as theirs:
            warnings.simplefilter("always")
            keras.callbacks.ModelCheckpoint(str(tmp_path / "w.keras"), mode=mode)
        with warnings.catch_warnings(record=True) as ours:
            warnings.simplefilter("always")
            ModelCheckpoint(path, mode=mode)
        assert [str(w.message) for w in ours] == [str(w.message) for w in theirs], mode
    # Keras prints when `verbose > 0`.
    x, y = data()
    capsys.readouterr()
    model("v").fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(path, verbose=0.5)])
    assert "saving model to" in capsys.readouterr().out
    # A warning given before the error is given then, as Keras gives it, and not left to
    # the next callback made.
    for make, name in ((keras.callbacks.ModelCheckpoint, str(tmp_path / "w.keras")),
                       (ModelCheckpoint, path)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ValueError, match="Unrecognized save_freq"):
                make(name, mode="MIN", save_freq="often")
            said = [str(w.message) for w in caught]
            make(name)
        assert said == [str(w.message) for w in caught] and len(said) == 1, (make, said)
        assert "mode 'MIN' is unknown" in said[0], said
    # Arguments bound as Python binds Keras's signature.
    for make, name in ((keras.callbacks.ModelCheckpoint, str(tmp_path / "w.keras")),
                       (ModelCheckpoint, path)):
        with pytest.raises(TypeError) as twice:
            make(name, "val_loss", 0, False, False, "auto", "epoch", 0.5,
                 initial_value_threshold=0.4)
        with pytest.raises(TypeError) as too_many:
            make(name, "val_loss", 0, False, False, "auto", "epoch", 0.5, 1)
        if make is keras.callbacks.ModelCheckpoint:
            expected = (str(twice.value), str(too_many.value))
        else:
            assert (str(twice.value), str(too_many.value)) == expected


def test_a_file_that_cannot_be_written_is_an_oserror_as_in_keras(tmp_path):
    # Keras's own save raises an OSError (here NotADirectoryError); ours a CheckpointError,
    # which is one: `except OSError` catches both.
    (tmp_path / "f").write_text("a file, not a folder")
    x, y = data()
    for callback in (
            keras.callbacks.ModelCheckpoint(str(tmp_path / "f" / "w.weights.h5"),
                                            save_weights_only=True),
            ModelCheckpoint(str(tmp_path / "f" / "w.safetensors"), save_weights_only=True)):
        with pytest.raises(OSError):
            model("io").fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert issubclass(mc.CheckpointError, OSError)


def test_journal_keeps_a_row_per_save_for_ckpt_report(tmp_path):
    x, y = data()
    model("j").fit(x, y, epochs=3, verbose=0, callbacks=[
        ModelCheckpoint(str(tmp_path / "w.{epoch}.safetensors"), journal=True, keep_last=1)])
    journal = (tmp_path / ".ckpt-run.journal.csv").read_text().splitlines()
    # A header, three saves and two deletes.
    assert len(journal) == 6, journal


def test_a_template_s_positional_field_fails_with_keras_s_exception(tmp_path):
    x, y = data()
    with pytest.raises(IndexError) as theirs:
        model("ix").fit(x, y, epochs=1, verbose=0, callbacks=[
            keras.callbacks.ModelCheckpoint(str(tmp_path / "w.{}.keras"))])
    with pytest.raises(IndexError) as ours:
        model("ix").fit(x, y, epochs=1, verbose=0, callbacks=[
            ModelCheckpoint(str(tmp_path / "w.{}.safetensors"))])
    assert "Replacement index 0 out of range" in str(theirs.value)
    assert "Replacement index 0 out of range" in str(ours.value)


_FIT_THAT_RAISES = r"""
import os, signal, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
import keras
sys.path.insert(0, {tests!r})
from test_keras import data, model
from model_checkpoint.keras import ModelCheckpoint

class Boom(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("boom")

x, y = data()
try:
    model("a").fit(x, y, epochs=3, verbose=0, callbacks=[
        ModelCheckpoint({first!r}, save_on_interrupt=True), Boom()])
except RuntimeError:
    print("fit raised", flush=True)
# Keras told no callback that fit ended: a signal now does what it did before, also in
# a fit without our callback (whose frame may sit where the first fit's did).
class Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            os.kill(os.getpid(), signal.SIGINT)

try:
    model("p").fit(x, y, epochs=2, verbose=0, callbacks=[Interrupt()])
    print("SIGINT swallowed", flush=True)
except KeyboardInterrupt:
    print("SIGINT raised KeyboardInterrupt", flush=True)
# Two callbacks that save on a signal, in a fit that ends normally.
model("b").fit(x, y, epochs=2, verbose=0, callbacks=[
    ModelCheckpoint({second!r}, save_on_interrupt=True),
    ModelCheckpoint({third!r}, save_on_interrupt=True)])
print("second fit completed", flush=True)
print("handlers back:", signal.getsignal(signal.SIGINT) is signal.default_int_handler
      and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)
os.kill(os.getpid(), signal.SIGTERM)
print("SIGTERM swallowed", flush=True)
"""


def test_signal_handlers_go_back_after_fit_however_it_ends(tmp_path):
    import subprocess
    import sys
    script = _FIT_THAT_RAISES.format(
        tests=os.path.dirname(__file__), first=str(tmp_path / "a" / "w.{epoch}.safetensors"),
        second=str(tmp_path / "b" / "w.{epoch}.safetensors"),
        third=str(tmp_path / "c" / "w.{epoch}.safetensors"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    said = done.stdout
    assert "fit raised" in said and "SIGINT raised KeyboardInterrupt" in said, said + done.stderr
    assert "second fit completed" in said and "handlers back: True" in said, said + done.stderr
    assert "swallowed" not in said
    assert done.returncode == -15, said + done.stderr
    assert not (tmp_path / "b" / "interrupted.safetensors").exists()


def test_load_weights_into_a_model_built_again_in_the_same_process(tmp_path):
    # Keras numbers unnamed layers per process (dense_2, then dense_4 for the same model
    # built again): what a notebook does, and what Keras's own .weights.h5 files survive.
    from model_checkpoint.keras import load_weights

    def unnamed():
        m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
        m.compile(optimizer="adam", loss="binary_crossentropy")
        return m

    x, y = data()
    trained = unnamed()
    trained.fit(x, y, epochs=1, verbose=0, callbacks=[
        ModelCheckpoint(str(tmp_path / "w.safetensors"), save_weights_only=True)])
    fresh = unnamed()
    assert [v.path for v in fresh.weights] != [v.path for v in trained.weights]
    load_weights(fresh, tmp_path / "w.safetensors")
    for a, b in zip(trained.weights, fresh.weights, strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # A model of another shape is still refused, naming what differs.
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3),
                              keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="missing|shape"):
        load_weights(other, tmp_path / "w.safetensors")
    # The same names in other shapes: no advice about Keras's numbering of names.
    named = model("shapes")
    named.fit(x, y, epochs=1, verbose=0, callbacks=[
        ModelCheckpoint(str(tmp_path / "named.safetensors"), save_weights_only=True)])
    wider = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="hidden"),
                              keras.layers.Dense(1, name="out")], name="net_shapes")
    with pytest.raises(ValueError, match="shape") as refused:
        load_weights(wider, tmp_path / "named.safetensors")
    assert "numbers layers" not in str(refused.value), refused.value


def test_load_weights_pairs_layers_by_their_place_when_numbers_overlap(tmp_path):
    # Saved as dense_1, dense_2 (one Dense made before in that process), loaded into a
    # fresh process's dense, dense_1: dense_1 is the first layer there, the second here.
    from model_checkpoint.keras import load_weights

    def build():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(4),
                                 keras.layers.Dense(4)], name="net")

    keras.backend.clear_session()
    keras.layers.Dense(1)
    saved = build()
    assert [layer.name for layer in saved.layers] == ["dense_1", "dense_2"]
    for i, layer in enumerate(saved.layers):
        layer.kernel.assign(np.full((4, 4), i + 1.0, np.float32))
    cb = ModelCheckpoint(str(tmp_path / "w.safetensors"), save_weights_only=True)
    cb.set_model(saved)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"val_loss": 1.0})
    cb.on_train_end()
    keras.backend.clear_session()
    fresh = build()
    assert [layer.name for layer in fresh.layers] == ["dense", "dense_1"]
    load_weights(fresh, tmp_path / "w.safetensors")
    assert [float(np.asarray(layer.kernel)[0, 0]) for layer in fresh.layers] == [1.0, 2.0]


_CTRL_C_SESSION = r"""
import os, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, {tests!r})
import keras
from test_keras import data, model
from model_checkpoint.keras import ModelCheckpoint, restore_latest

class CtrlC(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.at:
            raise KeyboardInterrupt("Ctrl-C")

x, y = data()
m = model("c")
cb = ModelCheckpoint({template!r}, keep_last=2, background=True, journal=True)
start = restore_latest(m, {folder!r}, [cb])
try:
    m.fit(x, y, epochs=start + 2, initial_epoch=start, verbose=0,
          callbacks=[cb, CtrlC(start + 2)])
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_a_fit_ended_by_ctrl_c_has_its_background_saves_followed_up_at_exit(tmp_path):
    # Keras tells no callback of a fit that ended by an exception: the last background
    # save's marker and journal row were never written, so the next session could not
    # confirm the run and retention kept every file from before it.
    _two_ctrl_c_sessions(str(tmp_path))
    kept = sorted(p.name for p in tmp_path.glob("w*.safetensors"))
    assert kept == ["w03.safetensors", "w04.safetensors"], kept
    rows = (tmp_path / ".ckpt-run.journal.csv").read_text().splitlines()
    assert sum(",saved," in row for row in rows) == 4, rows


def test_a_fit_ended_by_ctrl_c_on_s3_leaves_its_folder_unlocked(seaweed):
    # The S3 lock is an object: it outlived the process, and the next session was refused
    # ("is locked") until `ckpt unlock`.
    _two_ctrl_c_sessions("s3://ckpt/ctrl-c")
    kept = sorted(row["path"] for row in mc.ls("s3://ckpt/ctrl-c"))
    assert kept == ["s3://ckpt/ctrl-c/w03.safetensors", "s3://ckpt/ctrl-c/w04.safetensors"]


def _two_ctrl_c_sessions(folder):
    import subprocess
    import sys
    script = _CTRL_C_SESSION.format(tests=os.path.dirname(__file__), folder=folder,
                                    template=f"{folder}/w{{epoch:02d}}.safetensors")
    for _ in (1, 2):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0 and "interrupted" in done.stdout, done.stderr
        assert "cannot confirm" not in done.stderr, done.stderr


_FIT_IN_A_THREAD = r"""
import os, signal, sys, threading
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, {tests!r})
from test_keras import data, model
from model_checkpoint.keras import ModelCheckpoint

import keras

during = {during!r}

class Signal(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if during is True and batch == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    def on_epoch_end(self, epoch, logs=None):
        # Keras calls no on_train_end when fit ends by an exception.
        if during == "raised":
            raise ValueError("a bug in another callback")

x, y = data()
def train():
    try:
        model("t").fit(x, y, epochs=2, verbose=0, callbacks=[
            ModelCheckpoint({template!r}, save_on_interrupt=True), Signal()])
    except ValueError:
        pass
worker = threading.Thread(target=train)
worker.start()
worker.join()
print("fit done", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
# A loop that ended by an exception lets the signals go within a moment.
import time
time.sleep(5)
print("SIGTERM swallowed", flush=True)
"""


@pytest.mark.parametrize("during", [False, True, "raised"])
def test_a_fit_in_another_thread_saves_on_sigterm_and_the_process_still_ends(tmp_path, during):
    # Outside the main thread the engine's handlers hold the signals: a SIGTERM during fit
    # is saved on, then ends the process; once fit is over, the signals act as before it,
    # also after a fit that ended by an exception (they were held for good: a SIGTERM was
    # swallowed, and the process went on).
    import subprocess
    import sys
    script = _FIT_IN_A_THREAD.format(tests=os.path.dirname(__file__), during=during,
                                     template=str(tmp_path / "w.{epoch}.safetensors"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert "swallowed" not in done.stdout, done.stdout + done.stderr
    assert ("fit done" in done.stdout) != (during is True), done.stdout + done.stderr
    assert done.returncode == -15, done.stdout + done.stderr
    assert (tmp_path / "interrupted.safetensors").exists() == (during is True)


class LogAFlag(keras.callbacks.Callback):
    """Logs a bool, as a user's callback may: True from the second epoch on (a numpy bool,
    what comparing numpy values gives, with `numpy=True`)."""
    def __init__(self, numpy=False):
        super().__init__()
        self.numpy = numpy

    def on_epoch_end(self, epoch, logs=None):
        logs["converged"] = np.bool_(epoch >= 1) if self.numpy else epoch >= 1


@pytest.mark.parametrize("numpy_bool", [False, True])
def test_a_bool_in_the_logs_names_files_and_is_monitored_as_in_keras(tmp_path, capsys,
                                                                     numpy_bool):
    keras.utils.set_random_seed(11)
    x, y = data()
    args = dict(monitor="converged", mode="max", save_best_only=True, save_weights_only=True,
                verbose=1)
    template = "w.{epoch:02d}-{converged}-{converged:.2f}-{converged:03d}"
    theirs = keras.callbacks.ModelCheckpoint(str(tmp_path / "k" / f"{template}.weights.h5"),
                                             **args)
    ours = ModelCheckpoint(str(tmp_path / "o" / f"{template}.safetensors"), **args)
    capsys.readouterr()
    model("flag").fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False,
                      callbacks=[LogAFlag(numpy_bool), theirs, ours])
    k, o = split_printed(capsys.readouterr().out, tmp_path / "k", tmp_path / "o",
                         r"weights\.h5")
    k_saved = saved(tmp_path / "k", ".weights.h5")
    assert k_saved == ["w.01-False-0.00-000", "w.02-True-1.00-001"], k_saved
    assert saved(tmp_path / "o", ".safetensors") == k_saved
    assert k == o, (k, o)


def test_a_fit_that_raised_keeps_no_reference_to_its_model(tmp_path):
    # Keras tells no callback that `fit` ended by an exception: what the signal handling
    # keeps of that `fit` must not keep its frame, and with it the model and the data
    # (a notebook that builds them again would hold both).
    import gc
    import time
    import weakref

    class Fails(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise ValueError("stop here")

    def failed_fit():
        m = model("gone")
        x, y = data()
        cb = ModelCheckpoint(str(tmp_path / "w.{epoch}.safetensors"), save_on_interrupt=True)
        try:
            m.fit(x, y, epochs=2, verbose=0, callbacks=[cb, Fails()])
        except ValueError:
            pass
        return weakref.ref(m)

    gone = failed_fit()
    # The loop's locals go within a look of the signal handling's thread (every 0.2 s).
    for _ in range(50):
        gc.collect()
        if gone() is None:
            break
        time.sleep(0.1)
    assert gone() is None, [type(r).__name__ for r in gc.get_referrers(gone())]


def test_a_restore_that_fails_part_way_leaves_the_model_as_it_was(tmp_path):
    x, y = data()
    cb = ModelCheckpoint(str(tmp_path / "w.{epoch:02d}.safetensors"))
    model("saved").fit(x, y, epochs=1, verbose=0, callbacks=[cb])

    def same_model(optimizer):
        m = keras.Sequential([keras.Input((6,)),
                              keras.layers.Dense(8, activation="relu", name="hidden"),
                              keras.layers.Dense(1, activation="sigmoid", name="out")],
                             name="net_saved")
        if optimizer is not None:
            m.compile(optimizer=optimizer, loss="binary_crossentropy")
        return m

    # The weights fit; the optimizer's variables do not (SGD has no moments).
    other = same_model(keras.optimizers.SGD(0.01))
    before = [np.asarray(v).copy() for v in other.weights]
    with pytest.raises(ValueError, match="optimizer") as refused:
        restore_latest(other, tmp_path)
    assert "numbers layers" not in str(refused.value), refused.value
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, other.weights))
    # The same through a callback that would go on saving.
    again = ModelCheckpoint(str(tmp_path / "w.{epoch:02d}.safetensors"))
    with pytest.raises(ValueError, match="optimizer"):
        restore_latest(other, tmp_path, [again])
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, other.weights))
    # Another optimizer with as many variables (Adamax keeps `norm` where Adam keeps
    # `velocity`): the error says so, not that Keras numbered the layers.
    with pytest.raises(ValueError, match="not the kind the checkpoint was saved with"):
        restore_latest(same_model(keras.optimizers.Adamax(0.01)), tmp_path)
    # A model that was never compiled: the error says what to do.
    bare = same_model(None)
    before = [np.asarray(v).copy() for v in bare.weights]
    with pytest.raises(ValueError, match="has no optimizer: compile it"):
        restore_latest(bare, tmp_path)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, bare.weights))
    # With the optimizer it was saved with, all of it is restored.
    right = same_model(keras.optimizers.Adam(0.01))
    assert restore_latest(right, tmp_path) == 1


def test_one_callback_refusing_its_state_leaves_the_others_unrestored(tmp_path):
    x, y = data()
    best = ModelCheckpoint(str(tmp_path / "best.safetensors"), monitor="loss",
                           save_best_only=True)
    every = ModelCheckpoint(str(tmp_path / "e{epoch}.safetensors"), monitor="loss")
    model("peers").fit(x, y, epochs=2, verbose=0, callbacks=[best, every])
    fresh_best = ModelCheckpoint(str(tmp_path / "best.safetensors"), monitor="loss",
                                 save_best_only=True)
    refusing = ModelCheckpoint(str(tmp_path / "e{epoch}.safetensors"), monitor="loss",
                               mode="max")
    before = fresh_best.best
    with pytest.raises(mc.CheckpointError, match="mode"):
        restore_latest(model("peers"), tmp_path, [fresh_best, refusing])
    assert fresh_best.best == before != best.best


@pytest.mark.parametrize("named_layers", [True, False])
def test_a_model_built_again_in_the_same_process_restores(tmp_path, named_layers):
    # A notebook's cell run twice: Keras names the model `sequential_<n>` (and unnamed
    # layers `dense_<n>`), and its optimizer's variables after both.
    def build():
        layer = (keras.layers.Dense(4, name="hidden") if named_layers
                 else keras.layers.Dense(4))
        m = keras.Sequential([keras.Input((6,)), layer, keras.layers.Dense(1)])
        m.compile(optimizer="adam", loss="mse")
        return m

    x, y = data()
    trained = build()
    trained.fit(x, y, epochs=2, verbose=0, callbacks=[
        ModelCheckpoint(str(tmp_path / "e{epoch}.safetensors"))])
    again = build()
    assert again.name != trained.name
    assert restore_latest(again, tmp_path) == 2
    for a, b in zip(trained.weights + trained.optimizer.variables,
                    again.weights + again.optimizer.variables, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b)), (a.path, b.path)
    # Another optimizer is still refused.
    other = build()
    other.compile(optimizer="adamax", loss="mse")
    with pytest.raises(ValueError, match="not the kind"):
        restore_latest(other, tmp_path)


def test_a_resume_with_another_mode_or_threshold_is_refused(tmp_path):
    # The best value a checkpoint carries was kept by its mode (and from its threshold):
    # resumed under others, it would decide wrongly, as `ckpt train --resume` also refuses.
    x, y = data()
    template = str(tmp_path / "w.{epoch:02d}.safetensors")
    first = ModelCheckpoint(template, monitor="val_loss", mode="min",
                            initial_value_threshold=5.0)
    model("modes").fit(x, y, epochs=1, validation_split=0.25, verbose=0, callbacks=[first])
    for changed, expected in ((dict(mode="max", initial_value_threshold=5.0), "mode"),
                              (dict(mode="min", initial_value_threshold=0.5), "threshold")):
        again = ModelCheckpoint(template, monitor="val_loss", **changed)
        with pytest.raises(mc.CheckpointError, match=expected):
            restore_latest(model("modes"), tmp_path, [again])
    # The same arguments resume; leaving the threshold out keeps the best value.
    for same in (dict(mode="min", initial_value_threshold=5.0), dict(mode="min")):
        again = ModelCheckpoint(template, monitor="val_loss", **same)
        assert restore_latest(model("modes"), tmp_path, [again]) == 1
        assert again.best == first.best


def test_two_weights_of_one_name_in_a_layer_save_and_load_by_their_place(tmp_path):
    # Keras 3 lets a layer make two weights of one name; its own files hold them by place.
    from model_checkpoint.keras import load_weights

    class Two(keras.layers.Layer):
        def build(self, shape):
            self.a = self.add_weight(name="w", shape=(shape[-1], 2), initializer="ones")
            self.b = self.add_weight(name="w", shape=(shape[-1], 2), initializer="zeros")

        def call(self, x):
            return x @ self.a + 2 * (x @ self.b)

    def build():
        m = keras.Sequential([keras.Input((6,)), Two(name="two"),
                              keras.layers.Dense(1, name="out")], name="net_two")
        m.compile(optimizer="adam", loss="mse")
        return m

    x, y = data()
    trained = build()
    assert [v.path for v in trained.weights][:2] == ["net_two/two/w", "net_two/two/w"]
    trained.fit(x, y, epochs=2, verbose=0, callbacks=[
        ModelCheckpoint(str(tmp_path / "w.{epoch}.safetensors"))])
    assert sorted(mc.load_file(tmp_path / "w.2.safetensors"))[-2:] == ["two/w", "two/w#1"]
    fresh = build()
    load_weights(fresh, tmp_path / "w.2.safetensors")
    for a, b in zip(trained.weights, fresh.weights, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    resumed = build()
    assert restore_latest(resumed, tmp_path) == 2
    for a, b in zip(trained.optimizer.variables, resumed.optimizer.variables, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_load_weights_of_a_subclassed_model_with_its_own_unnamed_variable(tmp_path):
    # Keras 3 names a model's unnamed keras.Variable by a count of the process
    # (`variable`, then `variable_1` for the same model built again), as it numbers layers.
    from model_checkpoint.keras import load_weights

    class Scaled(keras.Model):
        def __init__(self):
            super().__init__(name="scaled")
            self.hidden = keras.layers.Dense(3, name="hidden")
            self.scale = keras.Variable(np.full(1, 2.0, np.float32))

        def call(self, x):
            return self.hidden(x) * self.scale

    x, _ = data()
    saved = Scaled()
    saved(x[:1])
    saved.scale.assign(np.full(1, 3.0, np.float32))
    mc.save_file({"hidden/kernel": np.asarray(saved.hidden.kernel),
                  "hidden/bias": np.asarray(saved.hidden.bias),
                  saved.scale.path: np.asarray(saved.scale)}, tmp_path / "w.safetensors")
    again = Scaled()
    again(x[:1])
    assert again.scale.path != saved.scale.path
    load_weights(again, tmp_path / "w.safetensors")
    assert np.asarray(again.scale)[0] == 3.0
    assert np.array_equal(np.asarray(again.hidden.kernel), np.asarray(saved.hidden.kernel))


def test_a_log_value_of_a_type_that_names_no_module_is_left_out(tmp_path):
    # Not a number: left out of the logs (as Keras's own callback does not mind it).
    class Odd:
        __module__ = None

    class LogsOdd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["odd"] = Odd()

    x, y = data()
    cb = ModelCheckpoint(str(tmp_path / "w.{epoch}.safetensors"), monitor="loss")
    model("odd").fit(x, y, epochs=1, verbose=0, callbacks=[LogsOdd(), cb])
    assert "odd" not in mc.load_metadata(tmp_path / "w.1.safetensors")["logs"]
