//! The `ckpt` binary: the command line is the library's (`ckpt::main`), shared with the
//! Python package's console script.

fn main() -> std::process::ExitCode {
    #[cfg(feature = "train")]
    pin_candle_threads();
    std::process::ExitCode::from(ckpt::main(std::env::args_os()))
}

/// candle 0.11 decides how many threads a matrix product uses at every product, and unless
/// `RAYON_NUM_THREADS` holds a count that means counting the physical cores by parsing
/// `/proc/cpuinfo` (`num_cpus::get_physical`, not cached): about half the time of a fit on
/// the digits MLP on a 2-core machine (README, "Speed"). So, before any thread starts, the
/// count candle would find (at most the CPUs this process may use: candle's count ignores
/// affinity and CPU quotas) is taken once and set there, for candle to read instead. rayon
/// reads the same variable for the size of its global pool (burn's threads, candle's
/// products run in it): where the two counts differ, the pool is built now with rayon's own
/// default, so that it is what it was without the variable. A count the user set is left
/// as it is.
#[cfg(feature = "train")]
fn pin_candle_threads() {
    let count = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
    };
    let cpus = || {
        std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(1)
    };
    // rayon's default for its global pool, as rayon computes it (an unreadable or zero
    // RAYON_NUM_THREADS counts as unset; 0 means the CPUs).
    let pool = match count("RAYON_NUM_THREADS") {
        Some(1..) => return,
        Some(0) => cpus(),
        None => count("RAYON_RS_NUM_CPUS")
            .filter(|&n| n > 0)
            .unwrap_or_else(cpus),
    };
    let threads = candle_core::utils::get_num_threads().clamp(1, pool);
    // Single-threaded still: nothing else reads or writes the environment yet.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    if threads != pool {
        // Fails only if the pool exists already, which nothing here has made.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(pool)
            .build_global();
    }
}
