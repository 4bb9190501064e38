"""The engine's warnings (a damaged checkpoint passed over, a sub-folder it may not list)
given as ``UserWarning``s during the call that caused them, naming the line that made it:
the engine only keeps them (see ``src/warnings.rs``)."""

import warnings

from . import _native


def warned(function, *args):
    """``function(*args)``; then every warning the engine gave meanwhile, naming the caller
    of the public function that called this one."""
    try:
        return function(*args)
    finally:
        for message in _native.take_warnings():
            warnings.warn(message, stacklevel=3)
