//! The sharded example under a real launcher: OpenMPI's `mpirun -np 4` for two epochs, then
//! resumed under `mpirun -np 2` to four. Every checkpoint equals, tensor for tensor, the one
//! of the same schedule launched by the example itself with torchrun's variables: the ranks
//! come from `OMPI_COMM_WORLD_*`, and nothing else differs.
//!
//! Needs `mpirun` (Debian's `openmpi-bin`; `.ci/run` installs it) and the example built
//! (`cargo test` builds it); without `mpirun` it says it skipped, except in CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use model_checkpoint::sharded::ShardedCheckpoint;
use model_checkpoint::store::{LocalFolder, Name};

fn mpirun() -> Option<PathBuf> {
    if let Some(given) = std::env::var_os("CKPT_MPIRUN") {
        return Some(PathBuf::from(given));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mpirun"))
            .find(|p| p.is_file())
    })
}

/// The example next to this test binary (`target/<profile>/examples/`).
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let example = profile.join("examples/sharded_training");
    assert!(
        example.is_file(),
        "{} is missing: cargo build -p model-checkpoint --example sharded_training",
        example.display()
    );
    example
}

fn run(mut command: Command) {
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn under_mpirun(mpirun: &Path, ranks: usize, args: &[&str]) -> Command {
    let mut command = Command::new(mpirun);
    // Root in CI containers, and four ranks on two cores.
    command
        .args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        .arg(example())
        .args(args);
    command
}

fn self_launched(ranks: usize, args: &[&str]) -> Command {
    let mut command = Command::new(example());
    command.args(args).args(["--world", &ranks.to_string()]);
    command
}

/// Every tensor of the checkpoint in `dir`, read through its index, and its world size.
fn tensors(dir: &Path) -> (usize, Vec<(String, Vec<u8>)>) {
    let checkpoint = ShardedCheckpoint::open(&LocalFolder::default(), &Name::from(dir))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let tensors = checkpoint
        .tensors()
        .keys()
        .map(|name| {
            let t = checkpoint.read(name).expect("reads and verifies");
            (name.clone(), t.data().to_vec())
        })
        .collect();
    (checkpoint.world_size(), tensors)
}

#[test]
fn mpirun_four_then_two_ranks_equals_the_self_launched_run() {
    let Some(mpirun) = mpirun() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "mpirun is missing in CI (.ci/run installs openmpi-bin)"
        );
        println!("SKIPPED mpirun test: no mpirun on PATH (Debian: apt-get install openmpi-bin)");
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let (mpi, own) = (root.path().join("mpi"), root.path().join("own"));
    let (mpi_dir, own_dir) = (mpi.to_str().expect("utf-8"), own.to_str().expect("utf-8"));
    run(under_mpirun(
        &mpirun,
        4,
        &["--dir", mpi_dir, "--epochs", "2"],
    ));
    run(under_mpirun(
        &mpirun,
        2,
        &["--dir", mpi_dir, "--epochs", "4", "--resume"],
    ));
    run(self_launched(4, &["--dir", own_dir, "--epochs", "2"]));
    run(self_launched(
        2,
        &["--dir", own_dir, "--epochs", "4", "--resume"],
    ));
    for (step, world) in [(1, 4), (2, 4), (3, 2), (4, 2)] {
        let name = format!("step-{step:03}");
        let (a, b) = (tensors(&mpi.join(&name)), tensors(&own.join(&name)));
        assert_eq!(a.0, world, "{name}: saved by {} ranks under mpirun", a.0);
        assert_eq!(b.0, world, "{name}");
        assert!(!a.1.is_empty());
        assert!(
            a.1 == b.1,
            "{name}: the tensors differ from the self-launched run's"
        );
    }
}
