//! `ckpt` against S3 endpoints that misbehave (a TCP server on 127.0.0.1 in the test, see
//! `model-checkpoint-object-store/tests/hostile/`): one that accepts connections and never
//! answers, one whose every reply is a body without end (a success or an error), one whose
//! listing never ends. Every subcommand that reaches the bucket exits 2 with one line on
//! stderr naming the endpoint, within a deadline that proves it does not hang, and with its
//! peak memory far below what the endless bodies would take.

#[path = "../../model-checkpoint-object-store/tests/hostile/mod.rs"]
mod hostile;

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hostile::{Hostile, Reply};

/// What a run of `ckpt` did.
struct Run {
    args: Vec<String>,
    status: ExitStatus,
    stderr: String,
    /// Peak resident memory, in bytes.
    peak: u64,
}

/// Runs `ckpt` with `args` against `server`, killing it (and failing) past `limit`.
// The child is reaped by `wait4`, which also gives its peak memory, not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn ckpt(server: &Hostile, dir: &Path, args: &[&str], limit: Duration) -> Run {
    use std::os::unix::process::ExitStatusExt as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .current_dir(dir)
        .envs(server.env())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ckpt");
    let mut pipe = child.stderr.take().expect("stderr");
    let drain = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    });
    let pid = i32::try_from(child.id()).expect("pid");
    let started = Instant::now();
    let (status, peak) = loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child, without blocking; the pointers are to locals.
        let waited = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(waited >= 0, "wait4: {}", std::io::Error::last_os_error());
        if waited == pid {
            let peak = u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024;
            break (ExitStatus::from_raw(status), peak);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ckpt {args:?} hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        status,
        stderr: String::from_utf8_lossy(&drain.join().expect("stderr")).into_owned(),
        peak,
    }
}

/// Every subcommand that reaches the bucket, with what it is given.
fn commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["ls", "s3://bucket/x"],
        vec!["ls", "--json", "s3://bucket/x"],
        vec!["verify", "s3://bucket/x/w.safetensors"],
        vec!["verify", "s3://bucket/x"],
        vec!["show", "s3://bucket/x/w.safetensors"],
        vec!["best", "s3://bucket/x"],
        vec![
            "diff",
            "s3://bucket/x/a.safetensors",
            "s3://bucket/x/b.safetensors",
        ],
        vec!["unlock", "s3://bucket/x"],
        vec!["du", "s3://bucket/x"],
        vec!["du", "--json", "s3://bucket/x"],
        vec!["consolidate", "s3://bucket/x/sharded", "out.safetensors"],
        vec!["report", "s3://bucket/x", "-o", "report.html"],
        vec![
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--hidden",
            "4",
            "--filepath",
            "s3://bucket/x/w.{epoch:02d}.safetensors",
        ],
        vec![
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--hidden",
            "4",
            "--resume",
            "s3://bucket/x/latest",
            "--filepath",
            "s3://bucket/x/w.{epoch:02d}.safetensors",
        ],
        vec![
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--hidden",
            "4",
            "--dedup",
            "--filepath",
            "s3://bucket/x/w.{epoch:02d}.safetensors",
        ],
    ]
}

/// Runs every command against a server answering with `reply`, side by side, and checks
/// each: exit status 2, one line on stderr (naming the endpoint and containing `says`), in
/// time, in bounded memory.
fn every_command_fails_cleanly(reply: fn(&hostile::Request) -> Reply, says: &[&str]) {
    commands_fail_cleanly(commands(), reply, says);
}

fn commands_fail_cleanly(
    commands: Vec<Vec<&'static str>>,
    reply: fn(&hostile::Request) -> Reply,
    says: &[&str],
) {
    let server = Hostile::start(reply);
    let dir = tempfile::tempdir().expect("tempdir");
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = commands
            .into_iter()
            .map(|args| {
                let (server, dir) = (&server, dir.path());
                scope.spawn(move || ckpt(server, dir, &args, Duration::from_secs(90)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("run"))
            .collect()
    });
    let mut problems = Vec::new();
    for run in &runs {
        let lines: Vec<&str> = run.stderr.lines().collect();
        let ok = run.status.code() == Some(2)
            && lines.len() == 1
            && lines[0].starts_with("ckpt: error: ")
            && lines[0].contains(&server.endpoint())
            && says.iter().any(|s| lines[0].contains(s))
            // The endless bodies would take gigabytes; each bound is 16 MiB at most.
            && run.peak < 400 << 20;
        if !ok {
            problems.push(format!(
                "ckpt {:?}: {} (peak {} MiB), stderr: {}",
                run.args,
                run.status,
                run.peak >> 20,
                run.stderr
            ));
        }
    }
    for run in &runs {
        println!(
            "ckpt {:?}: peak {} MiB: {}",
            run.args,
            run.peak >> 20,
            run.stderr.trim_end()
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_silent_endpoint_fails_every_command_within_the_deadline() {
    every_command_fails_cleanly(|_| Reply::Silent, &["sent no answer within 15 s"]);
}

#[test]
fn an_endless_body_is_an_error_not_an_abort() {
    // Objects are missing (so that folders list), and every listing is endless.
    every_command_fails_cleanly(
        |r| match r.method.as_str() {
            "HEAD" => Reply::Empty(404),
            _ if r.is_list() => Reply::Endless(200),
            _ => Reply::EndlessRange { size: 1 << 40 },
        },
        &["sent more than"],
    );
}

#[test]
fn an_endless_body_to_every_request_is_an_error_not_an_abort() {
    every_command_fails_cleanly(
        |_| Reply::Endless(200),
        &["sent more than", "cannot read", "answered"],
    );
}

#[test]
fn an_error_with_an_endless_body_is_cut_and_reported() {
    every_command_fails_cleanly(|_| Reply::Endless(500), &["answered 500"]);
}

#[test]
fn an_endless_listing_is_an_error() {
    // The commands that list a folder (the others find their objects missing).
    let listing = commands()
        .into_iter()
        .filter(|args| {
            matches!(args[0], "ls" | "best" | "report" | "du")
                || args == &["verify", "s3://bucket/x"]
                || args.contains(&"--resume")
        })
        .collect();
    commands_fail_cleanly(
        listing,
        |r| {
            if r.is_list() {
                Reply::Page { keys: 1000 }
            } else {
                Reply::Empty(404)
            }
        },
        &["more than 262144 objects", "past 1000 pages"],
    );
}

#[test]
fn a_file_the_endpoint_will_not_send_is_an_error_not_a_verdict_on_it() {
    // The file (or a sharded checkpoint's index) is listed and its size known, but every
    // read of it is refused (403): that says nothing of the file, so `verify` and `best`
    // exit 2 naming the endpoint, not 1 ("does not verify") or "no checkpoint verifies".
    commands_fail_cleanly(
        vec![
            vec!["verify", "s3://bucket/x/w.safetensors"],
            vec!["verify", "s3://bucket/x"],
            vec!["verify", "s3://bucket/x/sh"],
            vec!["best", "s3://bucket/x"],
        ],
        |r| match r.method.as_str() {
            "HEAD"
                if r.target.ends_with("/w.safetensors")
                    || r.target.ends_with("/sh/model.safetensors.index.json") =>
            {
                Reply::Head { size: 4096 }
            }
            "HEAD" => Reply::Empty(404),
            _ if r.is_list() => Reply::Listing {
                key: "x/w.safetensors",
            },
            _ => Reply::Empty(403),
        },
        &["access denied"],
    );
}
