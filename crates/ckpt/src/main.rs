//! The `ckpt` binary: the command line is the library's (`ckpt::main`), shared with the
//! Python package's console script.

fn main() -> std::process::ExitCode {
    #[cfg(feature = "train")]
    pin_candle_threads();
    std::process::ExitCode::from(ckpt::main(std::env::args_os()))
}

/// candle 0.11 decides how many threads a matrix product uses at every product, and unless
/// `RAYON_NUM_THREADS` is set that means counting the physical cores by parsing
/// `/proc/cpuinfo` (`num_cpus::get_physical`, not cached): about half the time of a fit on
/// the digits MLP on a 2-core machine (README, "Speed"). Here the count candle would find is
/// taken once and set, before any thread starts, so that candle reads it from the
/// environment instead. A value the user set is left as it is.
#[cfg(feature = "train")]
fn pin_candle_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let threads = candle_core::utils::get_num_threads();
    // Single-threaded still: nothing else reads or writes the environment yet.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
}
