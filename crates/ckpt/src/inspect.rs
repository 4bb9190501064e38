//! `ckpt show` and `ckpt verify`.

use model_checkpoint::store::Name;
use std::path::PathBuf;

use clap::Args;
use model_checkpoint::store::Verify;
use serde_json::json;

use crate::location::Location;
use crate::Failure;

/// The largest metadata value `show --json` shows as the JSON it holds: a training state is
/// kilobytes; a tree of this much text takes at most about 128 MiB.
const MAX_VALUE_SHOWN_AS_JSON: usize = 4 << 20;

/// Show a checkpoint's metadata and its tensors (dtype, shape, checksum).
///
/// The tensor checksums are verified too; a mismatch is reported and exits with status 1.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt show checkpoints/digits.10-0.9528.safetensors
  ckpt show --json best.safetensors | python3 -m json.tool"#)]
pub(crate) struct ShowArgs {
    /// The checkpoint file.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Verify checkpoints: structure, format version, header checksum and every tensor's
/// checksum. One line per file; exit status 0 only if every file verifies.
///
/// Files without this format's checksums (plain safetensors from other tools) cannot be
/// verified and count as failures.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt verify checkpoints/
  ckpt verify best.safetensors last.safetensors"#)]
pub(crate) struct VerifyArgs {
    /// Files, or folders whose checkpoints to verify.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// A header's metadata for `--json`: structured values (JSON text) as the JSON they hold,
/// up to a size whose tree stays small (a tree takes up to thirty times its text, and a
/// header may hold a 90 MB array); larger ones, and the rest, as the text they are.
pub(crate) fn metadata_json(
    info: &std::collections::BTreeMap<String, String>,
) -> serde_json::Map<String, serde_json::Value> {
    info.iter()
        .map(|(k, v)| {
            let value = (v.len() <= MAX_VALUE_SHOWN_AS_JSON)
                .then(|| serde_json::from_str::<serde_json::Value>(v).ok())
                .flatten()
                .filter(|j| j.is_object() || j.is_array())
                .unwrap_or_else(|| json!(v));
            (k.clone(), value)
        })
        .collect()
}

fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

pub(crate) fn show(args: ShowArgs) -> Result<(), Failure> {
    let location = Location::of(&args.file)?;
    if crate::sharded::is_sharded(&*location.storage, &location.name) {
        return crate::sharded::show(&*location.storage, &location.name, args.json);
    }
    if location.is_folder()? && !location.is_remote() {
        return Err(format!(
            "{} is a folder: give one checkpoint file (ckpt ls {} lists them)",
            args.file.display(),
            args.file.display()
        )
        .into());
    }
    let file = location.open(Verify::HeaderOnly)?;
    let verified = file.verify_tensors();
    let tensors: Vec<_> = file.tensors().collect();
    let data_bytes: usize = tensors.iter().map(|t| t.len).sum();
    if args.json {
        let listing: Vec<_> = tensors
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "dtype": format!("{:?}", t.dtype),
                    "shape": t.shape,
                    "bytes": t.len,
                    "crc32": t.checksum.map(|c| format!("{c:08x}")),
                })
            })
            .collect();
        let metadata = metadata_json(file.info());
        let out = json!({
            "path": args.file.to_string_lossy(),
            "kind": file.kind().to_string(),
            "bytes": file.len(),
            "has_checksums": file.has_checksums(),
            "verified": verified.is_ok(),
            "metadata": metadata,
            "tensors": listing,
        });
        crate::output::json(&out);
    } else {
        let info = file.info();
        let get = |k: &str| info.get(k).map(String::as_str).unwrap_or("-");
        out!("file:     {}", args.file.display());
        out!(
            "kind:     {} ({} bytes, format {} version {})",
            file.kind(),
            file.len(),
            get("format"),
            get("format_version")
        );
        let raw = model_checkpoint::store::RawMeta::of(info);
        let or_dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
        out!(
            "epoch:    {}   batch: {}   global step: {}",
            or_dash(raw.epoch),
            or_dash(raw.batch),
            or_dash(raw.global_step)
        );
        let mode = raw
            .mode
            .map(|m| format!(" (mode {})", crate::shorten(m, 40)))
            .unwrap_or_default();
        out!(
            "monitor:  {}{mode}",
            crate::shorten(&or_dash(raw.monitor), 200)
        );
        out!("logs:     {}", crate::shorten(&or_dash(raw.logs), 2000));
        if let Some(signal) = raw.signal {
            out!("signal:   {} (saved on it)", crate::shorten(signal, 40));
        }
        let status = match (&verified, file.has_checksums()) {
            (_, false) => "none (not written by model-checkpoint)".to_owned(),
            (Ok(()), true) => "ok (crc32 of every tensor and of the header)".to_owned(),
            (Err(e), true) => format!("FAILED: {e}"),
        };
        out!("checksums: {status}");
        out!("tensors:  {} ({data_bytes} bytes)", tensors.len());
        // Names come from the file: shown shortened, in a column of bounded width.
        let names: Vec<String> = tensors
            .iter()
            .map(|t| crate::shorten(t.name, 200))
            .collect();
        let width = names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 80);
        out!("  {:width$}  {:6}  {:16}  crc32", "name", "dtype", "shape");
        for (t, name) in tensors.iter().zip(&names) {
            let crc = t.checksum.map_or("-".to_owned(), |c| format!("{c:08x}"));
            out!(
                "  {:width$}  {:6}  {:16}  {crc}",
                name,
                format!("{:?}", t.dtype),
                shape_text(t.shape)
            );
        }
    }
    verified.map_err(|e| Failure::verify(e.to_string()))
}

/// The files a path names: itself, or a folder's checkpoint candidates sorted by name.
fn files_of(location: &Location) -> Result<Vec<Name>, Failure> {
    if location.is_folder()? {
        location.files()
    } else {
        Ok(vec![location.name.clone()])
    }
}

pub(crate) fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let (mut good, mut bad) = (0usize, 0usize);
    // Files the storage failed to read: an error, not a verdict on them.
    let mut unread: Vec<String> = Vec::new();
    for path in &args.paths {
        let location = Location::of(path)?;
        if crate::sharded::is_sharded(&*location.storage, &location.name) {
            let (verdict, line) = crate::sharded::verify_line(&*location.storage, &location.name);
            match verdict {
                Ok(true) => good += 1,
                Ok(false) => bad += 1,
                Err(e) => unread.push(e),
            }
            out!("{line}");
            continue;
        }
        if crate::sharded::is_interrupted(&*location.storage, &location.name) {
            bad += 1;
            out!(
                "BAD     {}: an interrupted sharded save (shards without an index): not a checkpoint",
                path.display()
            );
            continue;
        }
        // A folder's sharded and deduplicated checkpoints, one level down, each one line.
        if location.is_folder()? {
            for (sub, committed) in crate::sharded::folders_in(&*location.storage, &location.name)?
            {
                if !committed {
                    continue;
                }
                let (verdict, line) = crate::sharded::verify_line(&*location.storage, &sub);
                match verdict {
                    Ok(true) => good += 1,
                    Ok(false) => bad += 1,
                    Err(e) => unread.push(e),
                }
                out!("{line}");
            }
        }
        for file in files_of(&location)? {
            // The metadata ModelCheckpoint writes is checked too (counters, logs).
            let opened = location.open_other(&file, Verify::Full).and_then(|f| {
                model_checkpoint::store::Meta::from_info(f.info())
                    .map_err(|reason| model_checkpoint::Error::Corrupt {
                        path: file.clone(),
                        reason,
                    })
                    .map(|_| f)
            });
            match opened {
                Ok(f) if f.has_checksums() => {
                    good += 1;
                    out!(
                        "ok      {} ({}, {} tensors, {} bytes)",
                        file.display(),
                        f.kind(),
                        f.tensors().count(),
                        f.len()
                    );
                }
                Ok(_) => {
                    bad += 1;
                    out!(
                        "NO SUMS {} (a plain safetensors file: nothing to verify against)",
                        file.display()
                    );
                }
                Err(e) if e.is_read_failure() => {
                    out!("ERROR   {e}");
                    unread.push(e.to_string());
                }
                Err(e) => {
                    bad += 1;
                    out!("BAD     {e}");
                }
            }
        }
    }
    if let Some(first) = unread.first() {
        let more = match unread.len() {
            1 => String::new(),
            n => format!(" (and {} more could not be read)", n - 1),
        };
        return Err(format!("{first}{more}").into());
    }
    if good + bad == 0 {
        return Err(Failure::verify("no files to verify"));
    }
    if bad > 0 {
        return Err(Failure::verify(format!(
            "{bad} of {} files did not verify",
            good + bad
        )));
    }
    Ok(())
}
