"""The Keras callback, for either Keras: a thin layer that converts the logs and the
model's variables and hands every hook to the engine (``_native.KerasCheckpoint``), whose
decisions, messages, names and files are the core's."""

import _thread
import atexit
import logging
import os
import re
import signal
import sys
import threading
import warnings
import weakref

import numpy as np

from . import _native
from ._native import CheckpointError
from .numpy import _array, _outgoing

# Keras 3's ModelCheckpoint(filepath, monitor, verbose, save_best_only, save_weights_only,
# mode, save_freq, initial_value_threshold); tf.keras 2's has `options` before the
# threshold.
_POSITIONAL = {
    "3": ("initial_value_threshold",),
    "2": ("options", "initial_value_threshold"),
}


# Where a full checkpoint keeps its training tensors (the optimizer's), beside the weights.
_TRAINING_PREFIX = "__training__/"

# The endings of Keras's own formats (HDF5 and the `.keras` archive), which these files are
# not.
_KERAS_FORMATS = (".h5", ".hdf5", ".keras")


def _variable_name(variable, version, owner=None):
    """A variable's name in a checkpoint, relative to its ``owner`` (the model, or the
    optimizer) so that it does not depend on how Keras numbered that object in this
    process (``sequential_3``, ``adam_2``): Keras 3's path (``dense/kernel``), tf.keras's
    name without its ``:0``."""
    name = variable.path if version == "3" else variable.name
    if name.endswith(":0"):
        name = name[: -len(":0")]
    prefix = f"{getattr(owner, 'name', '')}/"
    return name[len(prefix):] if prefix != "/" and name.startswith(prefix) else name


def _variable_names(variables, version, owner=None):
    """The names of ``variables`` in a checkpoint (``_variable_name``), each one unique:
    Keras 3 lets a layer make two weights of one name (``add_weight(name="w")`` twice), and
    its own files hold variables by their place; here the second is ``w#1``, the third
    ``w#2``, in the model's order, which the same model built again repeats."""
    names, taken = [], set()
    for variable in variables:
        name = base = _variable_name(variable, version, owner)
        k = 0
        while name in taken:
            k += 1
            name = f"{base}#{k}"
        taken.add(name)
        names.append(name)
    return names


def _optimizer_variables(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return []
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


def _build_optimizer(model):
    """Makes the optimizer's variables exist (Keras builds them at the first step)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    # Keras 3's say whether they are `built`; tf.keras 2's build only what is missing.
    if not getattr(optimizer, "built", False):
        optimizer.build(model.trainable_variables)


def _weakly(method):
    """``method`` (bound to a callback) as a callable that holds its callback weakly. The
    engine keeps what it is given, out of the sight of Python's garbage collector: a bound
    method would make the callback, and the model it is set to, live as long as the
    process."""
    ref = weakref.WeakMethod(method)

    def call(*args):
        bound = ref()
        if bound is None:
            raise ReferenceError("the callback this engine belonged to is gone")
        return bound(*args)

    return call


class _Variables:
    """A Keras model's variables as the engine takes them: ``(name, dtype, shape, bytes)``
    out, and assigned back by name from a checkpoint (every mismatch listed at once)."""

    def _weights(self):
        variables = list(self.model.weights)
        return [
            _outgoing(name, np.asarray(v))
            for name, v in zip(_variable_names(variables, self._version, self.model),
                               variables)
        ]

    def _optimizer(self):
        optimizer = getattr(self.model, "optimizer", None)
        variables = _optimizer_variables(self.model)
        return [
            _outgoing(name, np.asarray(v))
            for name, v in zip(_variable_names(variables, self._version, optimizer),
                               variables)
        ]

    # While a restore runs (`_all_or_nothing`), what `_assign` checked waits here.
    _staged = None
    # How the last weights assigned were renamed to this model's (saved name to name).
    _renamed = None

    def _assign(self, which, items):
        """Checks ``items`` against the model's variables (or its optimizer's), every
        mismatch listed at once, then assigns them; during a restore, the assignment waits
        until every part of the restore has been checked."""
        if which == "optimizer":
            if items and getattr(self.model, "optimizer", None) is None:
                raise ValueError(
                    "the checkpoint holds optimizer variables and the model has no optimizer:"
                    " compile it as it was for training before restoring")
            _build_optimizer(self.model)
            variables = _optimizer_variables(self.model)
            owner = getattr(self.model, "optimizer", None)
        else:
            variables = list(self.model.weights)
            owner = self.model
        target = dict(zip(_variable_names(variables, self._version, owner), variables))
        stored = {name: (dtype, shape, data) for name, dtype, shape, data in items}
        # A model built again in the same process (a notebook's cell run twice): Keras
        # numbered its layers, and its optimizer's variables after them, otherwise.
        renamed = None
        if set(stored) != set(target):
            renamed = (_renumbered(set(stored), set(target)) if which == "weights"
                       else self._renumbered_slots(set(stored), set(target)))
            if renamed is not None:
                stored = {renamed[name]: value for name, value in stored.items()}
        if which == "weights":
            self._renamed = renamed
        problems = [f"missing {n}" for n in target if n not in stored]
        problems += [f"unexpected {n}" for n in stored if n not in target]
        # Names that differ may be Keras's numbering of layers per process, or, for the
        # optimizer's, another optimizer (its slots, the names' last part, differ: Adam's
        # `momentum` and `velocity`, Adamax's `norm`); shapes that differ are another model.
        def slots(names):
            return sorted(name.rsplit("_", 1)[-1] for name in names)

        if not problems:
            hint = ""
        elif which == "optimizer" and slots(stored) != slots(target):
            hint = ("; the model's optimizer is not the kind the checkpoint was saved with:"
                    " compile it with the same optimizer")
        else:
            hint = "; Keras numbers layers per process: build the model with the same names"
        for name, (dtype, shape, _) in stored.items():
            v = target.get(name)
            if v is not None and tuple(v.shape) != tuple(shape):
                problems.append(f"{name}: shape {tuple(shape)}, the model has {tuple(v.shape)}")
        if problems:
            raise ValueError(
                f"the checkpoint's {which} do not fit this model ({'; '.join(problems)}){hint}"
            )
        plan = [(target[name], _array(dtype, shape, data, "the checkpoint", name))
                for name, (dtype, shape, data) in stored.items()]
        if self._staged is not None:
            self._staged.append(plan)
        else:
            _apply(plan)


    def _renumbered_slots(self, saved, wanted):
        """The saved optimizer names as this model's, where the weights were renumbered
        (``_renamed``, by ``_assign`` of the weights) or the model itself was: Keras 3 names
        a slot after its variable's path, the model's name included
        (``sequential_dense_kernel_momentum``, then ``sequential_1_dense_2_kernel_momentum``
        in a model built again). ``None`` unless every name pairs with exactly one."""
        model = getattr(self.model, "name", None)
        if not model:
            return None
        current = _variable_names(list(self.model.weights), self._version, self.model)
        to_saved = {new: old for old, new in (self._renamed or {}).items()}
        flat = sorted(((c.replace("/", "_"), to_saved.get(c, c).replace("/", "_"))
                       for c in current), key=lambda pair: -len(pair[0]))
        mapping, prefixes = {}, set()
        for name in wanted:
            if name in saved:
                mapping[name] = name
                continue
            rest = name[len(model) + 1:] if name.startswith(f"{model}_") else None
            found = next(((c, w) for c, w in flat
                          if rest is not None and rest.startswith(f"{c}_")), None)
            if found is None:
                return None
            c, w = found
            tail = f"_{w}_{rest[len(c) + 1:]}"
            matches = [s for s in saved if s.endswith(tail) and s not in wanted]
            if len(matches) != 1:
                return None
            prefixes.add(matches[0][: -len(tail)])
            mapping[matches[0]] = name
        if len(prefixes) > 1 or len(mapping) != len(saved) or set(mapping.values()) != wanted:
            return None
        return mapping


def _apply(plan):
    for variable, array in plan:
        variable.assign(array)


class _all_or_nothing:
    """Holds back the assignments ``views`` check during the block, and makes them once
    it ends without an error: a restore that fails part way (the optimizer's variables do
    not fit, a callback refuses its state) leaves the model as it was. Within another such
    block over the same views, it adds nothing."""

    def __init__(self, views):
        self.views = [v for v in views if v._staged is None]

    def __enter__(self):
        for view in self.views:
            view._staged = []

    def __exit__(self, kind, value, traceback):
        plans = [plan for view in self.views for plan in view._staged]
        for view in self.views:
            view._staged = None
        if kind is None:
            for plan in plans:
                _apply(plan)
        return False


def _below(storage, filepath):
    """``filepath`` below ``storage`` (a folder, or a URL such as ``s3://bucket/prefix``).
    An empty ``storage``, or a URL without a bucket, is refused: joined as text, the first
    would make the path absolute (the file system's root) and the second a local folder
    named ``s3:``."""
    storage = os.fspath(storage)
    if not isinstance(storage, str):
        raise TypeError(f"storage must be a str or a path, not {type(storage).__name__}")
    scheme, sep, rest = storage.partition("://")
    if not storage or (sep and not rest.strip("/")):
        what = "is empty" if not storage else "names no bucket"
        raise ValueError(
            f"storage {storage!r} {what}: give a folder, or a URL such as "
            "'s3://bucket/prefix', or leave storage out"
        )
    return f"{storage.rstrip('/')}/{filepath.lstrip('/')}"


def _end_as(name, saved):
    """Ends ``fit`` as the signal ``name`` would have ended the program: ``KeyboardInterrupt``
    for SIGINT, ``SystemExit(143)`` for SIGTERM. In a thread other than the main one,
    which an exception would end alone, the main thread gets the ``KeyboardInterrupt``
    too, and a SIGTERM ends the process (the signals are the program's again by now)."""
    elsewhere = threading.current_thread() is not threading.main_thread()
    if name == "SIGINT":
        if elsewhere:
            _thread.interrupt_main()
        where = f": a full checkpoint was saved to {saved}" if saved else ""
        raise KeyboardInterrupt(f"SIGINT{where}")
    if elsewhere:
        os.kill(os.getpid(), signal.SIGTERM)
    raise SystemExit(128 + signal.SIGTERM)


class _Signals:
    """SIGINT and SIGTERM while a ``fit`` with a ``save_on_interrupt`` callback runs in the
    main thread. Python's own handlers would end it at once (``KeyboardInterrupt``, or the
    process), before the next hook could save; these ask the engine for the save instead,
    which the next hook makes before ``fit`` ends as the signal would have. One set for the
    process, held while any such callback is in ``fit`` and put back when the last one
    leaves it. Keras tells no callback when ``fit`` ends by an exception: a signal that
    comes when none of the training loops that held the handlers is running any more does
    what it did before, and the handlers go back then. Outside the main thread, where
    Python sets no handlers, the engine's hold the signals instead; a thread of our own
    looks every ``WATCH_SECONDS`` for the loops that hold them, and lets the signals go for
    one that no longer runs (its ``fit`` ended by an exception): the engine then delivers
    a signal that came meanwhile, which no hook will act on. The same thread lets go of a
    main-thread loop that no longer runs, so that a ``fit`` that ended by an exception
    does not keep its frame, and with it its model and data, until the next ``fit``."""

    WATCH_SECONDS = 0.2

    def __init__(self):
        # id(callback) -> [the frame running its training loop], kept (so that no other
        # frame can take its place in memory) until the callback leaves `fit`, or, once it
        # no longer runs, [None] (the watching thread empties the box: it never changes
        # the dict, which the main thread changes, also in its signal handler).
        self.holders = {}
        # id(callback) -> (its thread's ident, its loop's frame): callbacks whose signals
        # the engine's handlers hold.
        self.threaded = {}
        self.threaded_lock = threading.Lock()
        self.watcher = None
        # Set at exit: the watching thread ends before the interpreter does (a daemon thread
        # still running then is stopped in the middle of a call, which aborted the process
        # at times, after a SIGTERM had ended `fit`).
        self.stopping = threading.Event()
        self.previous = {}
        self.pending = []

    @staticmethod
    def _loop(caller):
        """The training loop: the first frame above Keras's list of callbacks (or the
        user's own loop, calling the hook itself)."""
        loop = caller
        while loop is not None and loop.f_code.co_name in ("on_train_begin", "_on_train_begin"):
            loop = loop.f_back
        return caller if loop is None else loop

    def hold(self, callback, caller):
        if threading.current_thread() is not threading.main_thread():
            _native.hold_signals()
            with self.threaded_lock:
                self.threaded[id(callback)] = (threading.get_ident(), self._loop(caller))
                self._start_watching()
            return
        loop = self._loop(caller)
        if loop is None:
            loop = caller
        # Holders whose loop is no longer running ended by an exception: forgotten.
        running = self._frames(caller)
        self.holders = {k: box for k, box in self.holders.items() if self._runs(box, running)}
        if not self.holders:
            # A fresh start, with no signal of an earlier `fit` left over; the handlers in
            # place now are what goes back (a program may have set its own since).
            self.pending.clear()
            _native.take_interrupt_request()
            for sig in (signal.SIGINT, signal.SIGTERM):
                current = signal.getsignal(sig)
                if current != self._handler:
                    self.previous[sig] = current
                    signal.signal(sig, self._handler)
        self.holders[id(callback)] = [loop]
        with self.threaded_lock:
            self._start_watching()

    def _start_watching(self):
        """Starts the watching thread unless it runs (``threaded_lock`` held)."""
        if self.watcher is None:
            self.watcher = threading.Thread(
                target=self._watch, name="model-checkpoint-signals", daemon=True)
            self.watcher.start()

    @staticmethod
    def _runs(box, running):
        """Whether the loop in ``box`` is among the frames ``running`` (ids)."""
        loop = box[0]
        return loop is not None and id(loop) in running

    def served(self):
        """A hook saved on the signals asked for."""
        self.pending.clear()

    def release(self, callback):
        """The callback left ``fit``; with the last one, the handlers go back. Returns a
        signal that came and that no hook served, which the caller delivers."""
        with self.threaded_lock:
            held = self.threaded.pop(id(callback), None)
        if held is not None:
            _native.release_signals()
            return None
        if self.holders.pop(id(callback), None) is None or self.holders:
            return None
        self._put_back()
        late = self.pending[0] if self.pending else None
        self.pending.clear()
        _native.take_interrupt_request()
        return late

    def _put_back(self):
        previous, self.previous = self.previous, {}
        for sig, handler in previous.items():
            if signal.getsignal(sig) == self._handler:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return previous

    def _watch(self):
        """Lets the signals go for each threaded loop that no longer runs, and lets go of
        each main-thread loop that no longer runs; ends when none is left, or at exit."""
        while not self.stopping.wait(self.WATCH_SECONDS):
            with self.threaded_lock:
                # The loops first, then what runs: a loop that started after the look at
                # what runs would be taken for one that ended. (list() copies the dict at
                # once, which the main thread may change meanwhile.)
                boxes = [box for box in list(self.holders.values()) if box[0] is not None]
                running = sys._current_frames()
                ended = [key for key, (thread, loop) in self.threaded.items()
                         if id(loop) not in self._frames(running.get(thread))]
                for key in ended:
                    del self.threaded[key]
                main = self._frames(running.get(threading.main_thread().ident))
                for box in boxes:
                    if not self._runs(box, main):
                        box[0] = None
                if not self.threaded and all(box[0] is None
                                             for box in list(self.holders.values())):
                    self.watcher = None
                del running, main, boxes
            for _ in ended:
                _native.release_signals()
            if self.watcher is not threading.current_thread():
                return

    @staticmethod
    def _frames(frame):
        """The ids of the frames running now, from ``frame`` out."""
        frames = set()
        while frame is not None:
            frames.add(id(frame))
            frame = frame.f_back
        return frames

    def _handler(self, signum, frame):
        name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
        running = self._frames(frame)
        if not any(self._runs(box, running) for box in self.holders.values()):
            # The fits that held the handlers are over: the handlers go back, and the
            # signal does what it did before.
            self.holders.clear()
            self.pending.clear()
            _native.take_interrupt_request()
            previous = self._put_back().get(signum, signal.SIG_DFL)
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        if name == "SIGINT" and "SIGINT" in self.pending:
            # A second Ctrl-C before the save: stop at once.
            raise KeyboardInterrupt
        self.pending.append(name)
        _native.request_interrupt(name)


_SIGNALS = _Signals()


@atexit.register
def _stop_watching():
    _SIGNALS.stopping.set()
    watcher = _SIGNALS.watcher
    if watcher is not None and watcher is not threading.current_thread():
        watcher.join(timeout=1.0)

# Our callbacks in a `fit` that has not ended by `on_train_end`: one that Keras ended by an
# exception (Ctrl-C's KeyboardInterrupt among them) tells no callback. At exit, each still
# here is closed (`ModelCheckpoint::close`): its background saves are waited for and what
# follows each on storage is done (the run's marker, the journal's row, retention), and its
# folder's lock is released (an S3 lock would otherwise outlive the process).
_UNFINISHED = weakref.WeakSet()


@atexit.register
def _close_unfinished():
    for callback in list(_UNFINISHED):
        _UNFINISHED.discard(callback)
        try:
            callback._native.close()
        except Exception as e:  # noqa: BLE001 (at exit, what failed can only be said)
            print(f"model_checkpoint: {callback.filepath}: {e}", file=sys.stderr)
        finally:
            _FITS.leave(callback)
            _SIGNALS.release(callback)
            callback._emit()


class _Fits:
    """Which of our callbacks are in one ``fit`` together, so that each full checkpoint
    holds the others' states too (the engine's ``CallbackList`` does this for Rust loops;
    Keras calls each callback alone): by model, a callback joins at ``on_train_begin`` and
    leaves at ``on_train_end``. Keras calls every ``on_train_begin`` of a ``fit`` before
    any other hook, so a member already past its first epoch's beginning when another
    joins is left over from a ``fit`` that ended by an exception, and is let go. Each
    saves in its own hook, as Keras's do: a checkpoint holds a peer's state as of its
    save, so a peer listed after the one saving has not yet had that hook (list a
    best-only callback before the one saving every epoch's full checkpoint)."""

    def __init__(self):
        # id(model) -> (weakref to the model, [weakref to a callback, ...]). Weak: a `fit`
        # that ended by an exception never leaves, and would keep its callbacks, and
        # through them its model, for as long as the process runs.
        self._members = {}

    @staticmethod
    def _alive(refs):
        return [c for c in (r() for r in refs) if c is not None]

    def join(self, callback):
        for key, (model, refs) in list(self._members.items()):
            if model() is None or not self._alive(refs):
                del self._members[key]
        if callback.model is None:
            # Hooks called by hand without a model: no fit to share (a save then fails as
            # Keras's does).
            return
        key = id(callback.model)
        entry = self._members.get(key)
        if entry is None or entry[0]() is not callback.model:
            entry = (weakref.ref(callback.model), [])
            self._members[key] = entry
        refs = entry[1]
        for stale in [c for c in self._alive(refs) if c._running]:
            self._forget(refs, stale)
        refs[:] = [r for r in refs if r() is not None and r() is not callback]
        full = [c for c in self._alive(refs) if not c.save_weights_only]
        if callback.save_best_only and full:
            callback._warn(
                f"{callback.filepath!r} (save_best_only) is listed after "
                f"{full[0].filepath!r}, whose full checkpoints then record its state as of "
                "the epoch before (each callback saves in its own hook, in the list's "
                "order): list the best-only callback first, so that a resume restores its "
                "best value"
            )
        refs.append(weakref.ref(callback))
        self._tell(refs)

    def others(self, callback):
        """The other members of ``callback``'s ``fit``, in the list's order."""
        for _, refs in self._members.values():
            members = self._alive(refs)
            if any(m is callback for m in members):
                return [m for m in members if m is not callback]
        return []

    def leave(self, callback):
        for key, (model, refs) in list(self._members.items()):
            if any(m is callback for m in self._alive(refs)):
                self._forget(refs, callback)
            if model() is None or not self._alive(refs):
                del self._members[key]
        callback._native.set_peers([])

    def _forget(self, refs, callback):
        refs[:] = [r for r in refs if r() is not None and r() is not callback]
        callback._native.set_peers([])
        self._tell(refs)

    def _tell(self, refs):
        members = self._alive(refs)
        for member in members:
            member._native.set_peers([m._native for m in members if m is not member])


_FITS = _Fits()


def make_callback(keras, version):
    """The ``ModelCheckpoint`` class for ``keras`` (the ``keras`` or ``tf_keras`` module),
    imitating Keras ``version`` (``"3"`` or ``"2"``)."""

    class ModelCheckpoint(_Variables, keras.callbacks.Callback):
        """Keras's ``ModelCheckpoint`` with Keras's arguments and defaults, whose
        decisions, messages and file names are Keras's, and whose files are this engine's:
        safetensors (name the file ``.safetensors``; Keras 3's ``.weights.h5`` and
        ``.keras`` rules apply to other names), written atomically and durably, checksummed,
        locally or to ``s3://``. Full checkpoints (``save_weights_only=False``) hold the
        optimizer's variables and this callback's state, so that ``restore_latest``
        resumes ``fit`` exactly.

        Beyond Keras (keywords only): ``keep_best=k`` and ``keep_last=n`` (retention, which
        deletes only files this run wrote), ``save_last`` (a ``last.safetensors`` copy of
        the newest), ``background`` (the write happens on a thread of its own; the arrays
        are copied first), ``save_on_interrupt`` (on SIGTERM or SIGINT: a full checkpoint at the next batch end,
        then ``fit`` ends as the signal would have ended it, ``KeyboardInterrupt`` for SIGINT
        and ``SystemExit(143)`` for SIGTERM),
        ``storage="s3://bucket/prefix"`` (a relative ``filepath`` goes below it),
        ``journal`` (a CSV row per save and per retention delete beside the checkpoints,
        which ``ckpt report`` draws).
        """

        def __init__(
            self,
            filepath,
            monitor="val_loss",
            verbose=0,
            save_best_only=False,
            save_weights_only=False,
            mode="auto",
            save_freq="epoch",
            *args,
            keep_best=None,
            keep_last=None,
            save_last=False,
            background=False,
            save_on_interrupt=False,
            storage=None,
            journal=False,
            **kwargs,
        ):
            super().__init__()
            self._arguments = (
                (filepath, monitor, verbose, save_best_only, save_weights_only, mode,
                 save_freq, *args),
                dict(keep_best=keep_best, keep_last=keep_last, save_last=save_last,
                     background=background, save_on_interrupt=save_on_interrupt,
                     storage=storage, journal=journal, **kwargs),
            )
            for name, value in (("keep_best", keep_best), ("keep_last", keep_last)):
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                          or value < 1):
                    raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
            names = _POSITIONAL[version]
            if len(args) > len(names):
                # Python's words for Keras's signature (`self` counted).
                raise TypeError(
                    f"ModelCheckpoint.__init__() takes from 2 to {8 + len(names)} positional "
                    f"arguments but {8 + len(args)} were given"
                )
            given = dict(zip(names, args))
            for name in names:
                if name in kwargs:
                    if name in given:
                        raise TypeError(
                            f"ModelCheckpoint.__init__() got multiple values for argument "
                            f"'{name}'"
                        )
                    given[name] = kwargs.pop(name)
            filepath = os.fspath(filepath)
            if storage is not None:
                filepath = _below(storage, filepath)
            period = kwargs.pop("period", None)
            self.filepath = filepath
            self.monitor = monitor
            self.save_best_only = save_best_only
            self.save_weights_only = save_weights_only
            self.save_freq = save_freq
            self._version = version
            self._known_metrics = set()
            self._signal_at = (None, None)
            self._save_on_interrupt = bool(save_on_interrupt)
            # Past its first epoch's beginning in the current `fit` (see `_Fits`).
            self._running = False
            threshold = given.get("initial_value_threshold")
            if version == "2" and given.get("options") is not None:
                _check_tf_options(given["options"], save_weights_only, filepath)
            try:
                self._native = _native.KerasCheckpoint(
                    filepath,
                    version,
                    monitor=monitor,
                    # Keras prints when `verbose > 0` (0.5 too).
                    verbose=1 if verbose > 0 else 0,
                    save_best_only=bool(save_best_only),
                    save_weights_only=bool(save_weights_only),
                    mode=mode,
                    save_freq=save_freq,
                    initial_value_threshold=None if threshold is None else float(threshold),
                    period=None if period is None else int(period),
                    options=given.get("options") is not None,
                    other_keywords=list(kwargs),
                    keep_best=keep_best,
                    keep_last=keep_last,
                    save_last=bool(save_last),
                    background=bool(background),
                    save_on_interrupt=bool(save_on_interrupt),
                    journal=bool(journal),
                    float64_scalars=version == "3" and _float64_scalars(),
                )
            except BaseException:
                # Keras warns (an unknown mode, `period`) before it raises: so do we, rather
                # than leave the warnings to the next callback made.
                for message in _native.take_warnings():
                    self._warn(message)
                raise
            self._emit()
            if filepath.lower().endswith(_KERAS_FORMATS):
                self._warn(
                    f"{filepath!r} will hold safetensors files, which Keras's load_weights "
                    "and load_model cannot open: name them .safetensors, and load one with "
                    f"{self.__module__}.load_weights(model, path)"
                )

        def _warn(self, message):
            _warn_as(self._version, message, 3)

        # What the engine printed and warned, where Keras's own would go.
        def _emit(self):
            printed = self._native.take_printed()
            if printed:
                sys.stdout.write(printed)
                sys.stdout.flush()
            for message in _native.take_warnings():
                self._warn(message)

        def _call(self, hook, *args):
            try:
                stop = hook(*args, step=self._step())
            finally:
                self._emit()
            if stop == "stop_training":
                self.model.stop_training = True
            elif stop is not None:
                self._interrupted(stop)

        def _interrupted(self, name):
            """After the save on a signal (``save_on_interrupt``), durable by now: every
            other callback of ours in this ``fit`` with ``save_on_interrupt`` saves on it too
            (the exception below ends the ``fit`` before their hooks), the run ends as the
            engine's own loop ends it (``on_train_end``: background saves, retention), then
            ``fit`` ends as the signal would have ended it: ``KeyboardInterrupt`` for SIGINT,
            ``SystemExit(143)`` for SIGTERM."""
            _SIGNALS.served()
            late = None
            try:
                for peer in _FITS.others(self):
                    if peer._save_on_interrupt:
                        late = peer._save_on_signal(*self._signal_at) or late
            finally:
                late = self._end_after_signal() or late
            # A SIGTERM that came meanwhile ends the program, whatever the first was.
            _end_as("SIGTERM" if late == "SIGTERM" else name, self._native.interrupt_saved)

        def _save_on_signal(self, batch, logs):
            """Saves on the signal another callback of this ``fit`` saved on first, as
            this one's hook after ``batch`` (``None``: the epoch's end) would have, then
            ends the run as ``_interrupted`` does; returns a signal that came meanwhile."""
            try:
                self._native.on_signal(batch, logs, step=self._step())
            finally:
                self._emit()
            return self._end_after_signal()

        def _end_after_signal(self):
            """The run's end after a save on a signal (``on_train_end``); returns a signal
            that came meanwhile and that no hook served."""
            _UNFINISHED.discard(self)
            try:
                self._native.on_train_end(None, step=self._step())
            finally:
                _FITS.leave(self)
                late = _SIGNALS.release(self)
                self._emit()
            return late

        def _step(self):
            """The optimizer's step count, which checkpoints record (and `latest` orders by
            after the epoch)."""
            optimizer = getattr(self.model, "optimizer", None) if self.model is not None else None
            iterations = getattr(optimizer, "iterations", None)
            if iterations is None:
                return None
            try:
                return max(0, int(np.asarray(iterations)))
            except (TypeError, ValueError):
                return None

        def __deepcopy__(self, memo):
            # A new callback with the same arguments (what KerasTuner and friends expect of
            # a copy), not a second handle on this one's engine and folder lock.
            args, kwargs = self._arguments
            return type(self)(*args, **kwargs)

        def set_model(self, model):
            super().set_model(model)
            self._native.set_model(*(_weakly(m) for m in (self._weights, self._optimizer,
                                                          self._assign)))

        # Keras 3 chooses `auto`'s direction from the compiled metrics' `_direction`.
        def _sync_metrics(self):
            if self._version != "3" or self.model is None:
                return
            for container in getattr(self.model, "metrics", []):
                if type(container).__name__ not in ("CompileMetrics", "MetricsList"):
                    continue
                for m in getattr(container, "metrics", []):
                    direction = getattr(m, "_direction", None)
                    if direction is not None and m.name not in self._known_metrics:
                        self._known_metrics.add(m.name)
                        self._native.compiled_metric(m.name, direction == "up")

        def on_train_begin(self, logs=None):
            if self._save_on_interrupt:
                _SIGNALS.hold(self, sys._getframe(1))
            _UNFINISHED.add(self)
            self._running = False
            _FITS.join(self)
            self._call(self._native.on_train_begin, logs)

        def on_epoch_begin(self, epoch, logs=None):
            self._running = True
            self._call(self._native.on_epoch_begin, epoch, logs)

        def on_train_batch_end(self, batch, logs=None):
            if self._native.needs_batch_hooks():
                self._sync_metrics()
                # Where a signal saved on here is, for the peers that save on it too.
                self._signal_at = (batch, logs)
                self._call(self._native.on_train_batch_end, batch, logs)

        def on_epoch_end(self, epoch, logs=None):
            self._sync_metrics()
            self._signal_at = (None, logs)
            self._call(self._native.on_epoch_end, epoch, logs)

        def on_train_end(self, logs=None):
            _UNFINISHED.discard(self)
            try:
                self._native.on_train_end(logs, step=self._step())
            finally:
                _FITS.leave(self)
                late = _SIGNALS.release(self)
                self._emit()
            if late is not None:
                # A signal came after the last hook that could save on it: training is
                # complete and saved; the signal still ends the program.
                _end_as(late, None)

        @property
        def best(self):
            """Keras's ``best`` (``None`` before Keras 3 has seen a value)."""
            return self._native.best

        @property
        def interrupt_saved(self):
            """Where the save on the last signal went (``save_on_interrupt``), once
            durable."""
            return self._native.interrupt_saved

        @property
        def last_saved(self):
            """The file of the last completed save."""
            return self._native.last_saved

        def flush(self):
            """Waits for background saves; raises what failed."""
            try:
                self._native.flush()
            finally:
                self._emit()

        def latest(self):
            """The newest full checkpoint of this callback's run that verifies."""
            try:
                return self._native.latest()
            finally:
                self._emit()

        def restore(self, model, path):
            """Restores ``model`` (its variables and its optimizer's) and this callback from
            the full checkpoint at ``path``; returns the epoch to pass as
            ``fit(initial_epoch=...)``: the epoch it was saved at (1-based), or, for a save
            in the middle of an epoch, the one before (see ``restore``)."""
            self.set_model(model)
            path = os.fspath(path)
            try:
                with _all_or_nothing([self]):
                    epoch, _ = self._native.restore(path)
            finally:
                self._emit()
            return _initial_epoch(path, epoch or 0, model)

    ModelCheckpoint.__module__ = f"model_checkpoint.{'keras' if version == '3' else 'tf_keras'}"
    return ModelCheckpoint


class _Model(_Variables):
    """A model's variables through the callables the engine takes, for a restore without
    a callback."""

    def __init__(self, model, version):
        self.model = model
        self._version = version


def restore(model, path, callbacks=()):
    """Restores ``model`` (its variables and its optimizer's) from the full checkpoint at
    ``path`` (a path or an ``s3://`` URL; every tensor verified), and the state of each of
    our ``ModelCheckpoint``s in ``callbacks`` (the one that will go on saving keeps its
    best value, counters and retention); returns the epoch to pass as
    ``fit(initial_epoch=...)``: the epoch it was saved at (1-based), so that ``fit`` goes
    on with the next. A checkpoint saved on a signal in the middle of an epoch returns the
    epoch before, with a warning: Keras starts an epoch only at its beginning, so that one
    is trained again from its start (as Keras's ``BackupAndRestore`` does), rather than the
    rest of it skipped. (A save by an integer ``save_freq`` counts its epoch as done: it
    may close it, which the file does not say.)"""
    path = os.fspath(path)
    ours = [c for c in callbacks if hasattr(c, "_native")]
    if ours:
        # Each callback restores on its own: all are asked first, so that one that refuses
        # its state leaves the others (and the model) as they were.
        try:
            for cb in ours:
                cb._native.check_restore(path)
        finally:
            _emit_warnings(model)
        with _all_or_nothing(ours):
            epoch = ours[0].restore(model, path)
            for other in ours[1:]:
                other.restore(model, path)
        return epoch
    view = _Model(model, _version_of(model))
    try:
        with _all_or_nothing([view]):
            epoch, _ = _native.restore_model(path, view._weights, view._optimizer,
                                             view._assign)
    finally:
        _emit_warnings(model)
    return _initial_epoch(path, epoch or 0, model)


def _emit_warnings(model):
    """The engine's warnings given since the last hook (a damaged file passed over, a
    callback's state missing), where the Keras of ``model`` puts its own, naming the line
    that called the public function calling this one."""
    for message in _native.take_warnings():
        _warn(model, message)


def _check_tf_options(options, weights_only, filepath):
    """tf.keras 2's check of ``options``: TensorFlow's options for the format saved (its
    ``TypeError``), and none for a ``.keras`` file (its ``ValueError``). Only their type
    matters here: the engine has no TensorFlow saving to pass them to."""
    import tensorflow as tf
    if weights_only:
        if not isinstance(options, tf.train.CheckpointOptions):
            raise TypeError(
                "If save_weights_only is True, then `options` must be either None or a "
                f"tf.train.CheckpointOptions. Got {options}."
            )
        return
    if filepath.endswith(".keras"):
        raise ValueError(
            "The native TF-Keras format does not support the `options` argument. Please "
            "remove the `options` argument, or use the SavedModel format by removing the "
            "`.keras` extension from the model filepath."
        )
    if not isinstance(options, tf.saved_model.SaveOptions):
        raise TypeError(
            "If save_weights_only is False, then `options` must be either None or a "
            f"tf.saved_model.SaveOptions. Got {options}."
        )


def _float64_scalars():
    """Whether Keras 3's backend compares Python floats as float64 (JAX with x64 on): its
    ``ops.greater`` then tells apart two values equal in float32."""
    import keras
    return bool(keras.ops.greater(float(np.float32(0.6)), 0.6))


def _initial_epoch(path, epoch, model):
    """``fit``'s ``initial_epoch`` after the checkpoint at ``path``, saved at ``epoch``: the
    epoch before for a save on a signal in the middle of an epoch. (A save by an integer
    ``save_freq`` may close its epoch, which the file does not say: its epoch counts as
    done, as a resume from Keras's own file of it would count it.)"""
    metadata = _native.load_metadata(path)
    batch = metadata.get("batch")
    # A save on a signal names it (earlier versions' only by the file's name).
    on_signal = "signal" in metadata or _native.is_interrupt_name(path)
    if batch is None or epoch < 1 or not on_signal:
        return epoch
    _warn(model, (
        f"{path} was saved in the middle of epoch {epoch} (after its batch {batch}): Keras "
        f"starts an epoch only at its beginning, so fit(initial_epoch={epoch - 1}) trains "
        f"epoch {epoch} again from its start"
    ))
    return epoch - 1


def _warn(model, message):
    """A warning where the Keras of ``model`` puts its own."""
    _warn_as(_version_of(model), message, 4)


def _warn_as(version, message, stacklevel):
    """A warning where Keras ``version`` puts its own: ``warnings`` for Keras 3 (naming
    the code ``stacklevel`` frames above the caller), the ``tensorflow`` logger for
    tf.keras 2."""
    if version == "3":
        warnings.warn(message, stacklevel=stacklevel + 1)
    else:
        logging.getLogger("tensorflow").warning(message)


def restore_latest(model, directory, callbacks=()):
    """``restore`` from the newest full checkpoint in ``directory`` (a path or an
    ``s3://`` URL) that verifies (damaged files are skipped with a warning); with none
    there (a first run), nothing is restored and 0 is returned, so that one script both
    starts and resumes a job. Where ``directory`` holds none itself, a callback of
    ``callbacks`` that saves full checkpoints below it is asked for its newest: a template
    whose fields name folders (``ck/e{epoch:02d}/w.safetensors``) saves none in ``ck``
    itself."""
    try:
        path = _native.latest(os.fspath(directory))
        if path is None:
            path = _latest_by_template(directory, callbacks)
    finally:
        _emit_warnings(model)
    if path is None:
        _warn_if_weights_only(model, directory)
        return 0
    return restore(model, path, callbacks)


def _latest_by_template(directory, callbacks):
    """The newest full checkpoint that one of our callbacks among ``callbacks`` saved below
    ``directory``, found by its template; ``None`` where none has any."""
    base = os.fspath(directory)
    for callback in callbacks:
        native = getattr(callback, "_native", None)
        filepath = getattr(callback, "filepath", None)
        if native is None or callback.save_weights_only or not isinstance(filepath, str):
            continue
        if not _is_below(filepath, base):
            continue
        try:
            found = native.latest_resumable()
        finally:
            callback._emit()
        if found is not None:
            return found
    return None


def _is_below(path, directory):
    """Whether ``path`` lies below ``directory`` (both local paths, or both URLs)."""
    if "://" in path or "://" in directory:
        return path.startswith(directory.rstrip("/") + "/")
    return os.path.abspath(path).startswith(os.path.join(os.path.abspath(directory), ""))


def _warn_if_weights_only(model, directory):
    """Says so when ``directory`` holds weights-only checkpoints but no full one: a job
    meant to resume would otherwise start afresh without a word."""
    try:
        rows = _native.ls(os.fspath(directory))
    except (CheckpointError, OSError):
        return
    weights = [r["path"] for r in rows if r["kind"] == "weights"]
    if not weights:
        return
    message = (
        f"{os.fspath(directory)} holds {len(weights)} weights-only checkpoint(s) and no full "
        "one: there is nothing to resume training from, so it starts afresh "
        "(save_weights_only=False saves what a resume needs; load_weights(model, path) "
        f"loads the weights of one, such as {weights[-1]})"
    )
    _warn(model, message)


def load_weights(model, path, verify=True):
    """Loads ``model``'s weights (not its optimizer's) from the checkpoint at ``path`` (a
    path or an ``s3://`` URL; weights-only or full), as Keras's ``model.load_weights``
    does for its own files: matched by name (as this callback names them; layers that
    Keras numbered otherwise in this process, ``dense_4`` for the saved ``dense_2``, by
    that numbering's order), every tensor
    checked against its CRC-32 as it is read, every missing, unexpected or misshapen
    variable listed at once in a ``ValueError``. ``verify=False`` also reads a safetensors
    file without this format's checksums."""
    try:
        tensors, _ = _native.load_file(os.fspath(path), verify)
    finally:
        _emit_warnings(model)
    weights = [t for t in tensors if not t[0].startswith(_TRAINING_PREFIX)]
    view = _Model(model, _version_of(model))
    wanted = {n for n, *_ in view._weights()}
    renamed = _renumbered({t[0] for t in weights}, wanted)
    if renamed is not None:
        weights = [(renamed[name], *rest) for name, *rest in weights]
    view._assign("weights", weights)


def _renumbered(saved, wanted):
    """The saved names as the model's, where the two differ only in Keras's numbering of
    layers within a process (``dense_2`` saved, ``dense_4`` in a model built again in the
    same process), or of a model's own unnamed variables (``variable_3``), as Keras's own
    ``.weights.h5`` files do not depend on it: within each layer name stripped of its
    ``_<n>``, the numbered names pair up in order. ``None`` when
    nothing needs renaming, or when no such pairing makes every name match.

    A name found on both sides is paired by its place too, not kept: ``dense_1, dense_2``
    saved (a process that had made one ``Dense`` before) are the new model's ``dense,
    dense_1``, and ``dense_1`` is the first of them there, the second here."""
    if saved == wanted:
        return None

    # The numbered parts of a name: its folders (layers), or, for a variable of the model
    # itself (a subclassed model's unnamed `keras.Variable`, which Keras 3 names
    # `variable_<n>` by a count of the process), its one name.
    def numbered(name):
        pieces = name.split("/")
        return pieces[:-1] if len(pieces) > 1 else pieces

    def parts(names):
        return {part for name in names for part in numbered(name)}

    def layers(names):
        groups = {}
        for part in parts(names):
            match = re.fullmatch(r"(.*?)(?:_(\d+))?", part)
            base, number = match.group(1), int(match.group(2) or -1)
            groups.setdefault(base, set()).add((number, part))
        return {base: [part for _, part in sorted(found)] for base, found in groups.items()}

    ours, theirs = layers(saved), layers(wanted)
    if ours.keys() != theirs.keys() or any(len(ours[b]) != len(theirs[b]) for b in ours):
        return None
    to = {old: new for b in ours for old, new in zip(ours[b], theirs[b])}
    def rename(name):
        pieces = name.split("/")
        if len(pieces) == 1:
            return to[name]
        return "/".join([to[p] for p in pieces[:-1]] + pieces[-1:])

    renamed = {name: rename(name) for name in saved}
    return renamed if set(renamed.values()) == wanted else None


def _version_of(model):
    """Which Keras made ``model``: ``"2"`` for tf_keras, ``"3"`` otherwise."""
    return "2" if type(model).__module__.startswith("tf_keras") else "3"
