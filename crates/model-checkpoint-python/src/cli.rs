//! The `ckpt` command, as the Python package's console script runs it: the `ckpt` crate's
//! command line (built without training), in this process.

use std::ffi::OsString;

use pyo3::prelude::*;

/// Runs `ckpt` with `argv` (the first is the program's name), with the GIL released, and
/// returns its exit status. Output goes to the process's standard output and error, and the
/// engine's warnings are printed there, as the `ckpt` binary prints them.
#[pyfunction]
pub(crate) fn ckpt_main(py: Python<'_>, argv: Vec<OsString>) -> u8 {
    crate::warnings::print_on_stderr();
    py.detach(|| ckpt::main(argv))
}
