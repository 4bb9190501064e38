"""The ``ckpt`` console script: this engine's command line (show, verify, ls, best, diff,
unlock, consolidate, export, report, bench), as the ``ckpt`` binary runs it. ``ckpt train``
needs the tensor frameworks and is in the full binary only (``cargo install --path
crates/ckpt``); from Python, train with ``model_checkpoint.keras``."""

import signal
import sys


def main() -> int:
    # As a native command: Ctrl-C ends it at once (Python's handler would wait for the
    # command to return to Python), and a closed pipe is the command's to report.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from ._native import ckpt_main

    # Python has no `sys.stdout` when standard output was closed before it started: the
    # command reports that itself, as the binary does.
    if sys.stdout is not None:
        sys.stdout.flush()
    return ckpt_main(sys.argv)


if __name__ == "__main__":
    sys.exit(main())
