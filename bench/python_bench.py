"""The Python package measured side by side, in one process (these machines are noisy:
compare the ratios, each from the same run).

1. `model_checkpoint.save_file` of 1 GiB of numpy arrays against
   `safetensors.numpy.save_file` followed by an fsync of the file and its folder (what a
   durable save takes), alternating, median of N runs each.
2. What one epoch-end save adds to a Keras 3 `fit` (JAX, CPU): no callback, Keras's own
   `ModelCheckpoint` writing `.weights.h5` every epoch, and ours writing safetensors every
   epoch in the background; alternating, median of N runs each.

Build the package optimised first (`maturin develop --release -m
crates/model-checkpoint-python/Cargo.toml`, or `pip install ./crates/model-checkpoint-python`),
then: `python bench/python_bench.py [--runs 5] [--dir DIR] [--gib 1]`.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import numpy as np


def fsync_path(path, folder=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_vs_safetensors(root, gib, runs):
    import safetensors.numpy

    import model_checkpoint as mc

    rng = np.random.default_rng(0)
    per = 64 << 20  # 64 MiB arrays
    count = max(1, int(gib * (1 << 30)) // per)
    tensors = {f"layer{i:03d}": rng.standard_normal(per // 4, dtype=np.float32) for i in range(count)}
    total = sum(a.nbytes for a in tensors.values())
    ours, theirs = [], []
    for run in range(runs):
        # Each side goes first every other run (a side that follows pays for the other's
        # writeback).
        for which in ("ours", "theirs") if run % 2 == 0 else ("theirs", "ours"):
            path = os.path.join(root, f"{which}.safetensors")
            if os.path.exists(path):
                os.remove(path)
            fsync_path(root, folder=True)
            t = time.perf_counter()
            if which == "ours":
                mc.save_file(tensors, path)
                ours.append(time.perf_counter() - t)
            else:
                safetensors.numpy.save_file(tensors, path)
                fsync_path(path)
                fsync_path(root, folder=True)
                theirs.append(time.perf_counter() - t)
    for name in ("ours", "theirs"):
        os.remove(os.path.join(root, f"{name}.safetensors"))
    o, s = statistics.median(ours), statistics.median(theirs)
    return {
        "bench": "python-save-vs-safetensors",
        "bytes": total,
        "ours_s": round(o, 3),
        "safetensors_plus_fsync_s": round(s, 3),
        "ratio": round(o / s, 3),
        "ours_gib_per_s": round(total / (1 << 30) / o, 3),
    }


def fit_overhead(root, runs, epochs=6):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from model_checkpoint.keras import ModelCheckpoint

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4096, 512)).astype("float32")
    y = rng.integers(0, 10, 4096)

    def build():
        keras.utils.set_random_seed(3)
        m = keras.Sequential([
            keras.Input((512,)),
            keras.layers.Dense(2048, activation="relu"),
            keras.layers.Dense(2048, activation="relu"),
            keras.layers.Dense(10),
        ])
        m.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    def callbacks(which, folder):
        if which == "none":
            return []
        if which == "keras":
            return [keras.callbacks.ModelCheckpoint(
                os.path.join(folder, "w.{epoch:02d}.weights.h5"), save_weights_only=True)]
        return [ModelCheckpoint(os.path.join(folder, "w.{epoch:02d}.safetensors"),
                                save_weights_only=True, background=True)]

    # One fit first, so that compilation is not measured.
    build().fit(x, y, epochs=1, batch_size=256, verbose=0)
    times = {"none": [], "keras": [], "ours": []}
    size = None
    for _ in range(runs):
        for which in times:
            folder = tempfile.mkdtemp(dir=root)
            m = build()
            cbs = callbacks(which, folder)
            t = time.perf_counter()
            m.fit(x, y, epochs=epochs, batch_size=256, verbose=0, callbacks=cbs)
            times[which].append(time.perf_counter() - t)
            size = size or sum(np.asarray(v).nbytes for v in m.weights)
            shutil.rmtree(folder)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_epoch = med["none"] / epochs
    return {
        "bench": "python-keras-fit-save-overhead",
        "weights_bytes": size,
        "epochs": epochs,
        "epoch_s_without_callback": round(per_epoch, 4),
        "keras_h5_added_per_save_s": round((med["keras"] - med["none"]) / epochs, 4),
        "ours_background_added_per_save_s": round((med["ours"] - med["none"]) / epochs, 4),
        "keras_h5_overhead": round(med["keras"] / med["none"] - 1, 4),
        "ours_background_overhead": round(med["ours"] / med["none"] - 1, 4),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--dir", default=None, help="where files go (default: a temporary folder)")
    parser.add_argument("--only", choices=["save", "fit"], default=None)
    args = parser.parse_args()
    root = tempfile.mkdtemp(dir=args.dir)
    try:
        if args.only in (None, "save"):
            print(json.dumps(save_vs_safetensors(root, args.gib, args.runs)), flush=True)
        if args.only in (None, "fit"):
            print(json.dumps(fit_overhead(root, args.runs)), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
