//! A model trained by several processes, saving and resuming sharded checkpoints through
//! `ModelCheckpoint`. Run it as it is to launch itself as 2 local processes (`--world 4` for
//! four), or under a launcher (torchrun, srun, mpirun: it reads their variables):
//!
//! ```sh
//! cargo run --example sharded_training -- --dir /tmp/sharded --epochs 4
//! cargo run --example sharded_training -- --dir /tmp/sharded --epochs 6 --resume
//! ```
//!
//! The model and its training are in `tests/sharded_model/mod.rs` (the tests run the
//! same code).

#[path = "../tests/sharded_model/mod.rs"]
mod sharded_model;

use model_checkpoint::store::Name;
use std::process::Command;
use std::sync::Arc;

use model_checkpoint::sharded::{Ranks, ShardedCheckpoint};
use model_checkpoint::store::LocalFolder;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = arg("--dir").unwrap_or_else(|| "sharded-checkpoints".to_owned());
    let epochs: u64 = arg("--epochs").map_or(Ok(4), |e| e.parse())?;
    let resume = std::env::args().any(|a| a == "--resume");
    let storage = Arc::new(LocalFolder::default());
    // Under a launcher, this process is one rank.
    if let Some(ranks) = Ranks::from_env()? {
        let run_id = std::env::var("CKPT_RUN_ID").unwrap_or_else(|_| "5eed".to_owned());
        sharded_model::train(storage, &dir, ranks, &run_id, epochs, resume, None)?;
        return Ok(());
    }
    // Otherwise, launch the ranks as torchrun would: the same program, RANK and WORLD_SIZE.
    let world: usize = arg("--world").map_or(Ok(2), |w| w.parse())?;
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(std::env::current_exe()?)
                .args(std::env::args().skip(1))
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut child in children {
        if !child.wait()?.success() {
            return Err("a rank failed".into());
        }
    }
    let latest = model_checkpoint::sharded::latest_sharded(&*storage, &Name::from(&dir))?;
    let checkpoint = ShardedCheckpoint::open(&*storage, &latest)?;
    println!(
        "newest checkpoint: {latest} ({} ranks, {} tensors)",
        checkpoint.world_size(),
        checkpoint.tensors().len()
    );
    Ok(())
}
