//! Checkpoint files on a real file system: round trips, every kind of damage giving a clear
//! error, and failed saves (folder in the way, disk full, read-only) leaving the previous
//! checkpoint intact and no temporary file behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use model_checkpoint::store::{self, is_temp_file, CheckpointFile, Kind, SaveOptions, Verify};
use model_checkpoint::{Error, HostTensor, NamedTensor};

fn tensors(seed: f32, len: usize) -> Vec<(String, HostTensor)> {
    let values: Vec<f32> = (0..len).map(|i| seed + i as f32 * 0.5).collect();
    vec![
        (
            "layer.weight".into(),
            HostTensor::from_f32(vec![len / 4, 4], &values),
        ),
        (
            "layer.bias".into(),
            HostTensor::from_f32(vec![4], &[seed, -seed, 0.25, 1e-3]),
        ),
        (
            "steps".into(),
            HostTensor::new(
                model_checkpoint::Dtype::I64,
                vec![1],
                7i64.to_le_bytes().to_vec(),
            )
            .expect("i64"),
        ),
    ]
}

fn save(path: &Path, seed: f32, len: usize) -> Result<store::SaveReport, Error> {
    let owned = tensors(seed, len);
    let named: Vec<NamedTensor<'_>> = owned
        .iter()
        .map(|(n, t)| NamedTensor::new(n.clone(), t.clone()))
        .collect();
    let mut info = BTreeMap::new();
    info.insert("logs".to_owned(), r#"{"loss":0.125}"#.to_owned());
    store::save(path, Kind::Full, &named, &info, &SaveOptions::default())
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| is_temp_file(p))
        .collect()
}

fn corrupt_reason(path: &Path) -> String {
    match CheckpointFile::open(path, Verify::Full) {
        Err(Error::Corrupt { reason, .. }) => reason,
        Err(other) => panic!("expected a corrupt-file error, got {other}"),
        Ok(_) => panic!("a damaged file verified"),
    }
}

#[test]
fn round_trip_keeps_names_shapes_dtypes_bytes_and_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.safetensors");
    let report = save(&path, 1.0, 64).expect("save");
    assert_eq!(report.bytes, std::fs::metadata(&path).expect("meta").len());
    let file = CheckpointFile::open(&path, Verify::Full).expect("open");
    assert_eq!(file.kind(), Kind::Full);
    assert!(file.has_checksums());
    assert_eq!(
        file.info().get("logs").map(String::as_str),
        Some(r#"{"loss":0.125}"#)
    );
    for (name, t) in tensors(1.0, 64) {
        let stored = file.tensor(&name).expect("tensor");
        assert_eq!(file.read(stored.name).expect("read"), t.data(), "{name}");
        assert_eq!(stored.shape, &*model_checkpoint::TensorData::shape(&t));
    }
    // Larger element types come first, so every tensor is aligned to its element size.
    let names: Vec<&str> = file.tensors().map(|t| t.name).collect();
    assert_eq!(names, ["steps", "layer.bias", "layer.weight"]);
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn truncated_file_is_reported_as_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.safetensors");
    save(&path, 1.0, 64).expect("save");
    let len = std::fs::metadata(&path).expect("meta").len();
    for keep in [len - 1, len / 2, 12, 3] {
        let bytes = std::fs::read(&path).expect("read");
        let cut = dir.path().join(format!("cut{keep}.safetensors"));
        std::fs::write(&cut, &bytes[..keep as usize]).expect("write");
        let reason = corrupt_reason(&cut);
        assert!(
            reason.contains("truncated") || reason.contains("not a valid safetensors file"),
            "{keep} bytes: {reason}"
        );
    }
}

#[test]
fn a_flipped_byte_in_a_tensor_names_the_tensor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.safetensors");
    save(&path, 1.0, 64).expect("save");
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 3; // inside layer.weight, the last tensor
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");
    let reason = corrupt_reason(&path);
    assert!(
        reason.contains("checksum mismatch in tensor \"layer.weight\""),
        "{reason}"
    );
    // Opening without verification still works, for speed when the caller chooses it.
    assert!(CheckpointFile::open(&path, Verify::HeaderOnly).is_ok());
}

#[test]
fn a_large_tensor_is_checked_as_it_is_read_in_chunks() {
    // 6 MiB of weights: read in 1 MiB chunks into fresh memory, each chunk's checksum on a
    // second core (which also makes the memory of the chunks ahead present); and 16 bytes
    // more, so that the last chunk is short.
    for len in [6 << 18, (6 << 18) + 4] {
        large_tensor_read_in_chunks(len);
    }
}

fn large_tensor_read_in_chunks(len: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.safetensors");
    save(&path, 1.0, len).expect("save");
    let file = CheckpointFile::open(&path, Verify::HeaderOnly).expect("open");
    let expected = tensors(1.0, len);
    assert_eq!(
        file.read("layer.weight").expect("read"),
        expected[0].1.data()
    );
    // A flipped byte in the middle, in the first and in the last chunk.
    let clean = std::fs::read(&path).expect("read");
    let start = clean.len() - len * 4;
    for at in [start, start + len * 2 + 1, clean.len() - 1] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x08;
        std::fs::write(&path, &bytes).expect("write");
        let file = CheckpointFile::open(&path, Verify::HeaderOnly).expect("header intact");
        let err = file.read("layer.weight").expect_err("damage found");
        assert!(
            err.to_string()
                .contains("checksum mismatch in tensor \"layer.weight\""),
            "byte {at}: {err}"
        );
    }
    // Truncated after it was opened: an error naming the truncation, never a short tensor.
    std::fs::write(&path, &clean).expect("write");
    let file = CheckpointFile::open(&path, Verify::HeaderOnly).expect("open");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len((start + len) as u64))
        .expect("truncate");
    let err = file.read("layer.weight").expect_err("truncated");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn a_flipped_byte_anywhere_in_the_header_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.safetensors");
    save(&path, 1.0, 64).expect("save");
    let clean = std::fs::read(&path).expect("read");
    let header_len = u64::from_le_bytes(clean[..8].try_into().expect("8 bytes")) as usize;
    // Every byte of the length prefix and the header, one at a time.
    for i in 0..8 + header_len {
        let mut bytes = clean.clone();
        bytes[i] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        match CheckpointFile::open(&path, Verify::Full) {
            Err(Error::Corrupt { .. }) => {}
            Err(other) => panic!("byte {i}: unexpected error kind: {other}"),
            Ok(_) => panic!("byte {i}: a flipped header byte went unnoticed"),
        }
    }
}

#[test]
fn a_newer_format_version_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.safetensors");
    save(&path, 1.0, 64).expect("save");
    let mut bytes = std::fs::read(&path).expect("read");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).expect("utf-8");
    // A well-formed file from a future writer: version 9, header checksum recomputed.
    let mut header = header.replace("\"format_version\":\"1\"", "\"format_version\":\"9\"");
    let key = "\"header_checksum\":\"";
    let at = header.find(key).expect("checksum field") + key.len();
    header.replace_range(at..at + 8, "00000000");
    let crc = crc32fast::hash(header.as_bytes());
    header.replace_range(at..at + 8, &format!("{crc:08x}"));
    bytes[8..8 + header_len].copy_from_slice(header.as_bytes());
    std::fs::write(&path, &bytes).expect("write");
    let reason = corrupt_reason(&path);
    assert_eq!(
        reason,
        "unsupported format version \"9\" (this build reads version 1)"
    );
}

#[test]
fn a_folder_at_the_path_fails_without_leaving_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("taken.safetensors");
    std::fs::create_dir(&path).expect("dir");
    assert!(matches!(
        save(&path, 1.0, 64),
        Err(Error::IsADirectory { .. })
    ));
    assert!(temp_files(dir.path()).is_empty());
}

/// A tmpfs of `size` mounted on a fresh folder, unmounted on drop. `None`, with the reason
/// printed, where mounting is impossible (not root, no mount namespace).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                println!(
                    "SKIPPED: cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn disk_full_leaves_the_previous_checkpoint_intact() {
    // Where mounting is impossible (no privilege), the test says so and skips.
    let Some(fs) = Tmpfs::mount("size=512k") else {
        return;
    };
    let path = fs.path().join("ckpt.safetensors");
    save(&path, 1.0, 4096).expect("a 16 KiB checkpoint fits");
    let before = std::fs::read(&path).expect("read");

    // 1 MiB of weights cannot fit in 512 KiB.
    let err = save(&path, 2.0, 256 * 1024).expect_err("disk full");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "old checkpoint untouched"
    );
    CheckpointFile::open(&path, Verify::Full).expect("old checkpoint still verifies");
    assert!(temp_files(fs.path()).is_empty(), "no temporary file left");
}

#[test]
fn read_only_file_system_fails_clearly_and_keeps_the_old_file() {
    let Some(fs) = Tmpfs::mount("size=1m") else {
        return;
    };
    let path = fs.path().join("ckpt.safetensors");
    save(&path, 1.0, 64).expect("save");
    let before = std::fs::read(&path).expect("read");
    let remount = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(fs.path())
        .status()
        .expect("remount");
    assert!(remount.success());
    let err = save(&path, 2.0, 64).expect_err("read-only");
    assert!(err.to_string().contains("Read-only file system"), "{err}");
    assert!(
        err.to_string().contains(&fs.path().display().to_string()),
        "names the folder: {err}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn metadata_the_format_reads_back_is_checked_when_saving() {
    // A value the format cannot read back there would make the file list as damaged.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.safetensors");
    let w = HostTensor::from_f32(vec![2], &[1.0, 2.0]);
    let named = [NamedTensor::new("w", w)];
    for (key, value) in [
        ("epoch", "abc"),
        ("global_step", "-1"),
        ("batch", "1e3"),
        ("logs", "[1, 2]"),
    ] {
        let info = BTreeMap::from([(key.to_owned(), value.to_owned())]);
        let err = store::save(&path, Kind::Weights, &named, &info, &SaveOptions::default())
            .expect_err(key);
        assert!(
            matches!(err, Error::BadMetadata { .. }) && err.to_string().contains(key),
            "{key}: {err}"
        );
        assert!(!path.exists());
    }
    let info = BTreeMap::from([("epoch".to_owned(), "3".to_owned())]);
    store::save(&path, Kind::Weights, &named, &info, &SaveOptions::default()).expect("save");
}

#[test]
fn a_header_no_reader_takes_is_refused_before_it_replaces_a_good_file() {
    // Metadata that escapes to more than safetensors' 100 MB header limit (a control
    // character takes six bytes in JSON): the save is refused, and the file there is kept.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.safetensors");
    let named = [NamedTensor::new(
        "w",
        HostTensor::from_f32(vec![2], &[1.0, 2.0]),
    )];
    store::save(
        &path,
        Kind::Weights,
        &named,
        &BTreeMap::new(),
        &SaveOptions::default(),
    )
    .expect("the good file");
    let before = std::fs::read(&path).expect("read");
    let info = BTreeMap::from([("note".to_owned(), "\u{1}".repeat(17_000_000))]);
    let err = store::save(&path, Kind::Weights, &named, &info, &SaveOptions::default())
        .expect_err("a header past the limit");
    assert!(
        matches!(err, Error::TooLarge { .. }) && err.to_string().contains("100000000"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), before);
    assert!(temp_files(dir.path()).is_empty());
    CheckpointFile::open(&path, Verify::Full).expect("still opens");
}

#[test]
fn a_tensor_of_more_dimensions_than_a_checkpoint_holds_is_refused_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("deep.safetensors");
    let deep = HostTensor::from_f32(vec![1; 65], &[1.0]);
    let err = store::save(
        &path,
        Kind::Weights,
        &[NamedTensor::new("deep", deep)],
        &BTreeMap::new(),
        &SaveOptions::default(),
    )
    .expect_err("65 dimensions");
    assert!(matches!(err, Error::TensorName { .. }), "{err}");
    // Written by another tool: refused when read (a box copy steps through every dimension
    // for each row).
    let shape = vec![1; 65];
    let header =
        serde_json::json!({"deep": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4]}})
            .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(&path, bytes).expect("write");
    let reason = match CheckpointFile::open(&path, Verify::HeaderOnly) {
        Err(Error::Corrupt { reason, .. }) => reason,
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("65 dimensions opened"),
    };
    assert!(reason.contains("65 dimensions, beyond 64"), "{reason}");
}

#[test]
fn logs_with_many_names_are_read_in_one_pass() {
    // A header's logs are untrusted and bounded by bytes only: 300,000 names (and one
    // repeated, whose last value counts), read through a search of every name per name,
    // took minutes. A deadline stands for "it finishes".
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("logs.safetensors");
    let mut logs = String::from("{");
    for i in 0..300_000 {
        logs.push_str(&format!("\"m{i}\":{i},"));
    }
    logs.push_str("\"m7\":0.5}");
    let (done, finished) = std::sync::mpsc::channel();
    let worker_path = path.clone();
    std::thread::spawn(move || {
        let w = HostTensor::from_f32(vec![1], &[1.0]);
        let info = BTreeMap::from([("logs".to_owned(), logs)]);
        let read = store::save(
            &worker_path,
            Kind::Weights,
            &[NamedTensor::new("w", w)],
            &info,
            &SaveOptions::default(),
        )
        .and_then(|_| CheckpointFile::open(&worker_path, Verify::HeaderOnly))
        .and_then(|f| f.meta());
        let _ = done.send(read.map(|meta| (meta.logs.len(), meta.logs.get("m7"))));
    });
    let (names, m7) = finished
        .recv_timeout(std::time::Duration::from_secs(300))
        .expect("reading the logs did not finish, or failed")
        .expect("read");
    assert_eq!(names, 300_000);
    assert_eq!(m7.and_then(|v| v.as_f64()), Some(0.5));
}
