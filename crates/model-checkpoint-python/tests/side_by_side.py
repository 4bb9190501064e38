"""What Keras's callback and ours printed and saved in one fit, made comparable: paths
reduced to the file's stem (the extension is each one's format)."""

import os
import re


def split_printed(printed, theirs_dir, ours_dir, theirs_ext):
    """Keras's lines and ours, each path replaced by its stem. Lines without a path (no
    improvement) come in pairs, Keras's then ours (Keras's callback is first in the list)."""
    theirs, ours = [], []
    for line in printed.splitlines():
        if str(theirs_dir) in line:
            theirs.append(re.sub(rf"\S*/{theirs_dir.name}/(\S*?)\.({theirs_ext})", r"\1", line))
        elif str(ours_dir) in line:
            ours.append(re.sub(rf"\S*/{ours_dir.name}/(\S*?)\.safetensors", r"\1", line))
        elif line.strip():
            (ours if len(theirs) > len(ours) else theirs).append(line)
    return theirs, ours


def saved(folder, ext):
    """The stems of the files in `folder` ending in `ext`, sorted."""
    if not folder.exists():
        return []
    return sorted(f[: -len(ext)] for f in os.listdir(folder) if f.endswith(ext))
