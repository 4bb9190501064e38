"""Writes plain safetensors seeds for the `checkpoint` target with Python's safetensors:
fuzz/.venv/bin/python fuzz/seeds/make_python_seeds.py fuzz/seeds/checkpoint"""
import sys
import numpy as np
from safetensors.numpy import save_file

out = sys.argv[1]
save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3),
           "b": np.array([1.5, -2.0], dtype=np.float64)},
          f"{out}/py-plain.safetensors")
save_file({"ids": np.array([1, 2, 3], dtype=np.int64),
           "mask": np.array([True, False]),
           "half": np.ones((2, 2), dtype=np.float16),
           "empty": np.zeros((0,), dtype=np.float32),
           "scalar": np.array(3, dtype=np.int32)},
          f"{out}/py-mixed-meta.safetensors",
          metadata={"format": "pt", "epoch": "3"})
save_file({}, f"{out}/py-empty.safetensors")
# Foreign file claiming this project's format key but without checksums.
save_file({"x": np.ones(2, dtype=np.float32)}, f"{out}/py-fake-format.safetensors",
          metadata={"format": "model-checkpoint", "format_version": "1"})
