"""numpy arrays through the engine: real files, a real S3 server, the real `ckpt`."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import warnings
import zlib

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

import model_checkpoint as mc


def arrays():
    rng = np.random.default_rng(7)
    return {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f64": rng.standard_normal(4),
        "f16": rng.standard_normal((2, 2)).astype(np.float16),
        "bf16": rng.standard_normal(6).astype(ml_dtypes.bfloat16),
        "i64": np.arange(-3, 3, dtype=np.int64),
        "u8": np.arange(10, dtype=np.uint8),
        "flag": np.array([True, False, True]),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "strided": np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2],
        "big_endian": np.arange(4, dtype=">f4"),
    }


def same(a, b):
    a = np.asarray(a)
    return a.shape == b.shape and a.astype(b.dtype).tobytes() == b.tobytes()


def test_round_trip_every_dtype_and_safetensors_reads_it(tmp_path):
    path = tmp_path / "w.safetensors"
    written = mc.save_file(arrays(), path, metadata={"note": "hello"})
    assert written == path.stat().st_size
    back = mc.load_file(path)
    assert set(back) == set(arrays())
    for name, array in arrays().items():
        assert same(array, back[name]), name
    # Writable arrays that own their memory from now on.
    back["f32"][0, 0] = 1.0
    # Python's safetensors opens the file as any other safetensors file.
    theirs = safetensors.numpy.load_file(path)
    assert same(arrays()["f32"], theirs["f32"])
    assert mc.load_metadata(path)["note"] == "hello"
    mc.verify(path)
    assert [row["path"] for row in mc.ls(tmp_path)] == [str(path)]


def test_damage_is_found_and_foreign_files_need_verify_false(tmp_path):
    path = tmp_path / "w.safetensors"
    mc.save_file({"w": np.ones(1000, np.float32)}, path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(mc.CheckpointError, match="checksum"):
        mc.verify(path)
    with pytest.raises(mc.CheckpointError, match="checksum"):
        mc.load_file(path)
    foreign = tmp_path / "theirs.safetensors"
    safetensors.numpy.save_file({"w": np.ones(3, np.float32)}, foreign)
    with pytest.raises(mc.CheckpointError, match="verify=False"):
        mc.load_file(foreign)
    assert same(np.ones(3, np.float32), mc.load_file(foreign, verify=False)["w"])


def test_bad_input_is_a_typed_error(tmp_path):
    with pytest.raises(TypeError):
        mc.save_file([np.ones(2)], tmp_path / "x.safetensors")
    with pytest.raises(TypeError):
        mc.save_file({1: np.ones(2)}, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="cannot be stored"):
        mc.save_file({"c": np.ones(2, np.complex64)}, tmp_path / "x.safetensors")
    with pytest.raises(mc.CheckpointError, match="NUL"):
        mc.save_file({"w": np.ones(2)}, "x\0.safetensors")
    with pytest.raises(mc.CheckpointError, match="leaves the bucket"):
        mc.load_file("s3://bucket/../other/x")
    assert not (tmp_path / "x.safetensors").exists()


def test_a_shape_numpy_cannot_make_is_an_error_naming_the_file_and_tensor(tmp_path):
    # Zero-size, so the file is consistent; numpy cannot index 2**40 by 2**40 elements.
    header = json.dumps({"t": {"dtype": "F32", "shape": [0, 2**40, 2**40],
                               "data_offsets": [0, 0]}}).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(mc.CheckpointError, match=r"odd\.safetensors: tensor 't' of shape"):
        mc.load_file(path, verify=False)


def test_a_failed_save_leaves_what_was_there(tmp_path):
    path = tmp_path / "w.safetensors"
    mc.save_file({"w": np.ones(4, np.float32)}, path)
    # A tensor whose bytes do not fit its shape fails before anything is written.
    with pytest.raises(ValueError):
        mc._native.save_file([("w", "float32", [8], b"\0" * 4)], str(path), None)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep").write_text("mine")
    with pytest.raises(OSError):
        mc.save_file({"w": np.zeros(4, np.float32)}, tmp_path / "folder")
    assert (tmp_path / "folder" / "keep").read_text() == "mine"
    assert same(np.ones(4, np.float32), mc.load_file(path)["w"])
    with pytest.raises(IsADirectoryError, match="folder"):
        mc.load_file(tmp_path / "folder")
    with pytest.raises(IsADirectoryError):
        mc.save_file({"w": np.zeros(4, np.float32)}, f"{tmp_path}/new/")
    with pytest.raises(ValueError, match="metadata key \"format\" is reserved"):
        mc.save_file({"w": np.zeros(4, np.float32)}, tmp_path / "m.safetensors",
                     metadata={"format": "pt"})
    with pytest.raises(ValueError, match='epoch "abc" is not a whole number'):
        mc.save_file({"w": np.zeros(4, np.float32)}, tmp_path / "m.safetensors",
                     metadata={"epoch": "abc"})
    with pytest.raises(ValueError, match="__metadata__"):
        mc.save_file({"__metadata__": np.zeros(4, np.float32)}, tmp_path / "m.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["folder", "w.safetensors"]
    # A listing shows checkpoints, not a user's other files.
    (tmp_path / "notes.txt").write_text("mine")
    assert [r["path"] for r in mc.ls(tmp_path)] == [str(path)]
    # A damaged checkpoint is listed whatever its name: one cut short after its header.
    whole = path.read_bytes()
    (tmp_path / "cut.weights.h5").write_bytes(whole[: len(whole) - 4])
    rows = {r["path"]: r for r in mc.ls(tmp_path)}
    assert sorted(rows) == sorted([str(path), str(tmp_path / "cut.weights.h5")])
    assert rows[str(tmp_path / "cut.weights.h5")]["error"]


def test_the_gil_is_released_while_a_large_file_is_written(tmp_path):
    big = {"w": np.ones(64 << 20, np.float32)}  # 256 MiB
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        before = len(ticks)
        mc.save_file(big, tmp_path / "big.safetensors")
        during_save = len(ticks) - before
        before = len(ticks)
        back = mc.load_file(tmp_path / "big.safetensors")
        during_load = len(ticks) - before
    finally:
        stop.set()
        counter.join()
    assert back["w"].shape == big["w"].shape
    # With the GIL held the whole time, the counter could not have run at all between the
    # calls' first and last Python bytecodes; it ran many times.
    assert during_save > 1000, during_save
    assert during_load > 1000, during_load


def test_files_from_python_verify_with_ckpt_and_ckpt_files_load_in_python(tmp_path, ckpt_bin):
    mc.save_file(arrays(), tmp_path / "py.safetensors")
    verified = subprocess.run(
        [ckpt_bin, "verify", tmp_path / "py.safetensors"], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("ok"), verified.stdout
    trained = subprocess.run(
        [ckpt_bin, "train", "--epochs", "2", "--filepath",
         str(tmp_path / "ck/digits.{epoch:02d}.safetensors")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    latest = mc.latest(tmp_path / "ck")
    assert latest.endswith("digits.02.safetensors")
    tensors = mc.load_file(latest)
    assert any(name.startswith("__training__/") for name in tensors)
    rows = mc.ls(tmp_path / "ck")
    assert [r["epoch"] for r in rows if r["kind"] == "full"] == [1, 2]


def test_latest_warns_during_the_call_of_what_it_passed_over(tmp_path, ckpt_bin):
    """A damaged newest checkpoint is passed over with a warning given by `latest` itself
    (not kept for a later call), naming the line that called it."""
    trained = subprocess.run(
        [ckpt_bin, "train", "--epochs", "2", "--filepath",
         str(tmp_path / "ck/e{epoch:02d}.safetensors")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    newest = tmp_path / "ck" / "e02.safetensors"
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF
    newest.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = mc.latest(tmp_path / "ck")
    assert found == str(tmp_path / "ck" / "e01.safetensors")
    messages = [str(w.message) for w in caught]
    assert any("skipping" in m and "e02.safetensors" in m for m in messages), messages
    assert {w.filename for w in caught} == {__file__}
    # Nothing is left for a later call to give.
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        mc.ls(tmp_path / "ck")
    assert [str(w.message) for w in later] == []


def test_a_missing_file_is_python_s_file_not_found_error(tmp_path):
    """As `open` and `safetensors` raise it: `except FileNotFoundError` works, errno set."""
    missing = tmp_path / "none.safetensors"
    for call in (mc.load_file, mc.load_metadata, mc.verify):
        with pytest.raises(FileNotFoundError, match="none.safetensors") as raised:
            call(missing)
        assert raised.value.errno == 2, call
    with pytest.raises(FileNotFoundError):
        mc.save_file({"w": np.ones(2, np.float32)}, tmp_path / "no" / "such" / "w.safetensors")


def test_a_deduplicated_checkpoint_reads_through_its_index(tmp_path, ckpt_bin):
    """`ckpt train --dedup` checkpoints: a folder whose index names shared blobs. Python's
    safetensors reads every tensor file by file through the index, and load_file reads
    the folder whole, each tensor checked."""
    trained = subprocess.run(
        [ckpt_bin, "train", "--epochs", "3", "--dedup", "--keep-last", "2", "--filepath",
         str(tmp_path / "ck/e{epoch:02d}.safetensors")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    folder = tmp_path / "ck" / "e03.safetensors"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    by_index = {}
    for name, file in index["weight_map"].items():
        by_index[name] = safetensors.numpy.load_file(os.path.join(folder, file))[name]
    assert any(n.startswith("__training__/") for n in by_index)
    ours = mc.load_file(folder)
    assert sorted(ours) == sorted(by_index)
    for name, array in by_index.items():
        assert same(array, ours[name]), name
    mc.verify(folder)
    # What a requeued job resumes from: the newest folder, as `ckpt train --resume latest`
    # and Rust's `resume_latest` take it.
    assert mc.latest(tmp_path / "ck") == str(folder)
    # And ls lists the folders, one row each, as `ckpt ls` does (it listed none).
    rows = mc.ls(tmp_path / "ck")
    assert [(r["path"], r["kind"], r["epoch"]) for r in rows] == [
        (str(tmp_path / "ck" / "e02.safetensors"), "full", 2), (str(folder), "full", 3)]
    # A damaged blob is found by both.
    blob = folder / index["weight_map"]["dense_0.weight"]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(mc.CheckpointError, match="checksum"):
        mc.load_file(folder)
    with pytest.raises(mc.CheckpointError, match="checksum"):
        mc.verify(folder)


def test_a_compressed_checkpoint_decodes_to_the_same_tensors(tmp_path, ckpt_bin):
    """`ckpt train --dedup --compress`: load_file decodes every blob to the tensors of the
    same run saved plain; each compressed blob is a safetensors file of one uint8 tensor
    whose `encoding` metadata decodes it (byte planes, zstd) to the checksum it states."""
    try:
        import zstandard
    except ImportError:
        pytest.skip("zstandard is not installed (.ci/run installs it)")

    def train(name, *extra):
        done = subprocess.run(
            [ckpt_bin, "train", "--epochs", "2", "--hidden", "256,256", "--dedup", *extra,
             "--filepath", str(tmp_path / name / "e{epoch:02d}.safetensors")],
            capture_output=True, text=True, cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        return tmp_path / name / "e02.safetensors"

    plain, packed = train("plain"), train("packed", "--compress")
    expected = mc.load_file(plain)
    got = mc.load_file(packed)
    assert sorted(got) == sorted(expected)
    for name, array in expected.items():
        assert same(array, got[name]), name
    mc.verify(packed)
    index = json.loads((packed / "model.safetensors.index.json").read_text())
    decoded = 0
    for name, file in index["weight_map"].items():
        path = os.path.join(packed, file)
        with safetensors.safe_open(path, "numpy") as f:
            encoding = (f.metadata() or {}).get("encoding")
            stored = f.get_tensor(name)
        if encoding is None:
            continue
        encoding = json.loads(encoding)
        assert encoding["codec"] == "zstd-byte-planes" and stored.dtype == np.uint8
        dtype = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16}[encoding["dtype"]]
        elem = np.dtype(dtype).itemsize
        count = int(np.prod(encoding["shape"], dtype=np.int64))
        planes = zstandard.ZstdDecompressor().decompress(stored.tobytes(), max_output_size=count * elem)
        raw = np.frombuffer(planes, np.uint8).reshape(elem, count).T.tobytes()
        assert f"{zlib.crc32(raw):08x}" == encoding["crc32"], name
        array = np.frombuffer(raw, dtype).reshape(encoding["shape"])
        assert same(array, expected[name]), name
        decoded += 1
    # The weights and Adam's moments of a trained MLP shrink (their exponent bytes do).
    assert decoded >= 6, index["weight_map"]
    # A flipped byte in a compressed blob is found before decoding.
    blob = packed / index["weight_map"]["dense_0.weight"]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(mc.CheckpointError, match="checksum"):
        mc.load_file(packed)


def test_the_ckpt_console_script_is_the_engine_command_line(tmp_path):
    """The package installs `ckpt` (without training) next to the interpreter."""
    script = shutil.which("ckpt", path=sysconfig.get_path("scripts"))
    assert script, f"no ckpt script in {sysconfig.get_path('scripts')}"

    def ckpt(*args):
        return subprocess.run([script, *map(str, args)], capture_output=True, text=True)

    version = ckpt("--version")
    assert version.returncode == 0 and version.stdout.split() == ["ckpt", mc.__version__]
    path = tmp_path / "run" / "w.01.safetensors"
    path.parent.mkdir()
    mc.save_file(arrays(), path)
    ok = ckpt("verify", path)
    assert ok.returncode == 0 and ok.stdout.startswith("ok"), ok.stdout + ok.stderr
    listed = ckpt("ls", tmp_path / "run", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["path"].endswith("w.01.safetensors")
    shown = ckpt("show", path)
    assert shown.returncode == 0 and "f32" in shown.stdout.lower(), shown.stdout
    # Damage one byte of the first tensor: verify's finding is exit 1, one line on stderr.
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = ckpt("verify", path)
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert "w.01.safetensors" in bad.stdout + bad.stderr
    # Training needs the frameworks, which the package's ckpt lacks: said, exit 2.
    train = ckpt("train", "--epochs", "1")
    assert train.returncode == 2, train.stderr
    assert "model_checkpoint.keras" in train.stderr and train.stdout == ""
    usage = ckpt("verfiy")
    assert usage.returncode == 2 and usage.stderr.startswith("ckpt: "), usage.stderr
    # The same command as `python -m model_checkpoint`.
    module = subprocess.run([sys.executable, "-m", "model_checkpoint", "verify", path],
                            capture_output=True, text=True)
    assert module.returncode == 1 and "w.01.safetensors" in module.stdout + module.stderr
    usage = subprocess.run([sys.executable, "-m", "model_checkpoint", "verfiy"],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("ckpt: "), usage.stderr
    # Standard output closed before the command starts: one line, exit 2, as the binary
    # (Python's missing sys.stdout was an AttributeError, exit 1).
    good = tmp_path / "good.safetensors"
    mc.save_file(arrays(), good)
    closed = subprocess.run([sys.executable, "-m", "model_checkpoint", "verify", good],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 2, closed.stderr
    assert "standard output" in closed.stderr and "Traceback" not in closed.stderr, closed.stderr


def test_s3_save_load_latest_and_ls(seaweed):
    url = "s3://ckpt/py/w.safetensors"
    written = mc.save_file(arrays(), url, metadata={"where": "s3"})
    assert written > 0
    back = mc.load_file(url)
    for name, array in arrays().items():
        assert same(array, back[name]), name
    mc.verify(url)
    assert [row["path"] for row in mc.ls("s3://ckpt/py")] == [url]
    assert mc.latest("s3://ckpt/py") is None
