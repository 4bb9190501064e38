//! Kill a process with SIGKILL while it saves full checkpoints of an 8 MiB model in a loop,
//! over and over: after every kill, each file at a final path must verify completely, and
//! only temporary files (which the next start removes) may be incomplete.
//!
//! The child is this test binary itself, running the ignored `child_saves_forever`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use model_checkpoint::store::{self, is_temp_file, CheckpointFile, Kind, SaveOptions, Verify};
use model_checkpoint::{Dtype, HostTensor, NamedTensor};

const CHILD_DIR: &str = "CKPT_CRASH_CHILD_DIR";
const NAMES: [&str; 3] = [
    "latest.safetensors",
    "best.safetensors",
    "epoch.safetensors",
];

/// The model: eight 1 MiB float tensors and a step counter (8 MiB and a little).
fn model(step: u64) -> Vec<(String, HostTensor)> {
    let mut out: Vec<(String, HostTensor)> = (0..8)
        .map(|i| {
            let mut bytes = vec![0u8; 1 << 20];
            for (j, chunk) in bytes.chunks_exact_mut(8).enumerate().step_by(97) {
                chunk.copy_from_slice(&(step ^ (i << 40) ^ j as u64).to_le_bytes());
            }
            (
                format!("layer{i}.weight"),
                HostTensor::new(Dtype::F32, vec![512, 512], bytes).expect("1 MiB"),
            )
        })
        .collect();
    out.push((
        "step".into(),
        HostTensor::new(Dtype::U64, vec![1], step.to_le_bytes().to_vec()).expect("u64"),
    ));
    out
}

#[test]
#[ignore = "helper: the crash test runs it as a child process"]
fn child_saves_forever() {
    let dir = std::env::var_os(CHILD_DIR).expect("run by the crash test");
    let dir = Path::new(&dir);
    // What a real start does: clear the temporary files of the save that was killed.
    store::remove_stale_temp_files(dir).expect("clean");
    let seed = std::process::id() as u64;
    for step in 0.. {
        let owned = model(seed << 20 | step);
        let named: Vec<NamedTensor<'_>> = owned
            .iter()
            .map(|(n, t)| NamedTensor::new(n.clone(), t.clone()))
            .collect();
        let path = dir.join(NAMES[(step % 3) as usize]);
        store::save(
            &path,
            Kind::Full,
            &named,
            &Default::default(),
            &SaveOptions::default(),
        )
        .expect("save");
    }
}

/// A small seeded generator for kill delays.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_during_saves_never_leaves_a_torn_checkpoint() {
    let kills: usize = std::env::var("CKPT_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(120);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let (mut verified, mut temps_seen) = (0usize, 0usize);
    let started = Instant::now();
    for kill in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_saves_forever",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start child");
        std::thread::sleep(Duration::from_micros(2_000 + next(&mut rng) % 150_000));
        child.kill().expect("SIGKILL");
        let _ = child.wait();

        for entry in std::fs::read_dir(dir.path()).expect("list") {
            let path = entry.expect("entry").path();
            if is_temp_file(&path) {
                temps_seen += 1;
                continue;
            }
            match CheckpointFile::open(&path, Verify::Full) {
                Ok(file) => {
                    assert_eq!(file.kind(), Kind::Full);
                    verified += 1;
                }
                Err(e) => panic!("after kill {kill}, {} does not verify: {e}", path.display()),
            }
        }
    }
    println!(
        "crash test: {kills} kills in {:.1}s, {verified} checkpoints verified after kills, {temps_seen} leftover temporary files seen (removed by the next start)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        verified >= kills,
        "saves must complete between kills for the test to mean anything"
    );
    assert!(
        temps_seen > 0,
        "some kills must land mid-save for the test to mean anything"
    );
}

#[test]
fn the_cleanup_spares_the_temporary_files_this_process_is_writing() {
    // A folder's lock clears what killed saves left; a file another thread of this process
    // is writing there at that moment (a history rewritten in the background) is not one.
    let dir = tempfile::tempdir().expect("tempdir");
    let stale = dir.path().join(".w1.safetensors.ab12CD.ckpt-tmp");
    std::fs::write(&stale, b"left by a killed save").expect("stale");
    let mut pending = store::PendingFile::create(&dir.path().join("history.csv")).expect("create");
    std::io::Write::write_all(pending.file(), b"epoch\r\n").expect("write");
    assert!(is_temp_file(pending.temp_path()));
    let removed = store::remove_stale_temp_files(dir.path()).expect("clean");
    assert_eq!(removed, [stale]);
    assert!(pending.temp_path().exists());
    pending.commit(true).expect("commit after the cleanup");
    assert_eq!(
        std::fs::read(dir.path().join("history.csv")).expect("read"),
        b"epoch\r\n"
    );
    // Once committed (or dropped), a name is no longer spared.
    let again = dir.path().join(".history.csv.zz99yy.ckpt-tmp");
    std::fs::write(&again, b"x").expect("stale");
    assert_eq!(
        store::remove_stale_temp_files(dir.path()).expect("clean"),
        [again]
    );
}
