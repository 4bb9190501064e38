//! The `ckpt` binary: the command line is the library's (`ckpt::main`), shared with the
//! Python package's console script.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(ckpt::main(std::env::args_os()))
}
