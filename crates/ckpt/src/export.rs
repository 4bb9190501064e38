//! `ckpt export`: a checkpoint written again as one plain file, verified on the way; with
//! `--weights-only`, the model's weights alone from a full checkpoint.

use std::path::PathBuf;

use clap::Args;
use model_checkpoint::sharded::ShardedCheckpoint;
use model_checkpoint::store::{self, Export, Verify};

use crate::location::{within, Location};
use crate::Failure;

/// Write a checkpoint again as one plain safetensors file (local or s3://), every checksum
/// checked on the way.
///
/// With --weights-only, the file holds the model's weights only: the optimizer's tensors
/// (`__training__/`) and the training state are left out, so what Python, PyTorch or a
/// loader gets is the model. FULL may also be `DIR/latest` (the newest full checkpoint that
/// verifies) or, with --weights-only, a sharded checkpoint's folder (as `ckpt consolidate`).
/// OUT is never an input, and an existing OUT is replaced only if `ckpt export` or
/// `ckpt consolidate` wrote it.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt export ck/epoch-10.safetensors model.safetensors --weights-only
  ckpt export ck/latest s3://bucket/models/model.safetensors --weights-only"#)]
pub(crate) struct ExportArgs {
    /// The checkpoint to export (a file, DIR/latest, or an s3:// object).
    from: PathBuf,
    /// The file to write (or s3:// object).
    out: PathBuf,
    /// Leave out the optimizer's tensors and the training state.
    #[arg(long)]
    weights_only: bool,
}

pub(crate) fn export(args: ExportArgs) -> Result<(), Failure> {
    let from = Location::of(&args.from)?.resolve_latest()?;
    let to = Location::of(&args.out)?;
    let refuse = |why: &str| -> Failure {
        format!(
            "refusing to write {}: {why}",
            crate::printable(&crate::shorten(&args.out.to_string_lossy(), 300))
        )
        .into()
    };
    // An output never replaces an input, whatever the names look like (a link to it, a
    // second name of the same file); the core's gate then refuses any other file that is
    // not an earlier export.
    if within(&to.identity(), &from.identity()) || same_file(&from, &to) {
        return Err(refuse(&format!(
            "it is the checkpoint it reads ({}); write the export elsewhere",
            crate::printable(&crate::shorten(&args.from.to_string_lossy(), 300))
        )));
    }
    // `DIR/latest` is how every command names a folder's newest checkpoint: a file of that
    // name would take its place.
    if to.name.file_name() == Some("latest") {
        return Err(refuse(
            "DIR/latest names a folder's newest checkpoint in every command; give the file another name",
        ));
    }
    // Replacing a link would leave the user's link a file of its own.
    if !to.is_remote()
        && std::fs::symlink_metadata(&to.name).is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(refuse(
            "it is a symbolic link; give the path of the file itself",
        ));
    }
    if crate::sharded::is_sharded(&*from.storage, &from.name) {
        let checkpoint = ShardedCheckpoint::open(&*from.storage, &from.name)?;
        if !args.weights_only && checkpoint.is_dedup() {
            // One process's checkpoint: everything fits in one file.
            let report = checkpoint.export_whole(&*to.storage, &to.name)?;
            out!(
                "wrote {} (a deduplicated checkpoint as one file, {} bytes)",
                args.out.display(),
                report.bytes
            );
            return Ok(());
        }
        if !args.weights_only {
            return Err(format!(
                "{} is a sharded checkpoint: its training state stays in its shards; export its weights with --weights-only",
                args.from.display()
            )
            .into());
        }
        let report = checkpoint.consolidate(&*to.storage, &to.name)?;
        let of = if checkpoint.is_dedup() {
            "a deduplicated checkpoint".to_owned()
        } else {
            format!("a sharded checkpoint of {} ranks", checkpoint.world_size())
        };
        out!(
            "wrote {} (the weights of {of}, {} bytes)",
            args.out.display(),
            report.bytes
        );
        return Ok(());
    }
    if from.is_folder()? {
        return Err(format!(
            "{} is a folder without a sharded checkpoint's index: give a checkpoint file, or DIR/latest for its newest",
            crate::printable(&crate::shorten(&args.from.to_string_lossy(), 300))
        )
        .into());
    }
    // Every checksum, the training tensors' too: a damaged source is refused whole, even
    // when only its weights are kept.
    let source = from.open(Verify::Full)?;
    let keep = if args.weights_only {
        Export::Weights
    } else {
        Export::Everything
    };
    let exported = store::export(&source, &*to.storage, &to.name, keep)?;
    out!(
        "wrote {} ({} tensors{}, {} bytes) from {}",
        args.out.display(),
        exported.written,
        if exported.left_out > 0 {
            format!("; {} training tensors left out", exported.left_out)
        } else {
            String::new()
        },
        exported.report.bytes,
        crate::printable(&crate::shorten(from.name.as_str(), 300))
    );
    Ok(())
}

/// Whether `a` and `b` are one local file under two names (a hard link).
fn same_file(a: &Location, b: &Location) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a.is_remote() || b.is_remote() {
        return false;
    }
    match (std::fs::metadata(&a.name), std::fs::metadata(&b.name)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
