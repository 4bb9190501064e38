//! The one normalisation of names: what a save writes to, what a reader opens and what the
//! callback reports (`last_saved`, retention, the journal) are the same name.

/// `name` with `.` and `..` components resolved lexically and repeated `/` collapsed, as
/// every storage resolves the names it is given: `new/../ck/w` is `ck/w` (TensorFlow's
/// `gfile`, through which Keras makes folders, resolves them so, and no `new/` is made). A
/// leading `..` of a relative path stays; a leading `/` stays, and `..` never goes above it.
/// A URL keeps its `scheme://` and its first component (the bucket), which `..` never
/// leaves.
///
/// ```
/// use model_checkpoint::store::normalize;
/// assert_eq!(normalize("ck/sub/../w.safetensors"), "ck/w.safetensors");
/// assert_eq!(normalize("./ck//w"), "ck/w");
/// assert_eq!(normalize("../w"), "../w");
/// assert_eq!(normalize("/../w"), "/w");
/// assert_eq!(normalize("s3://bucket/run/../../w"), "s3://bucket/w");
/// ```
pub fn normalize(name: &str) -> String {
    let (scheme, rest) = match name.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            (Some(scheme), rest)
        }
        _ => (None, name),
    };
    let absolute = scheme.is_none() && rest.starts_with('/');
    let mut parts = rest.split('/').filter(|c| !c.is_empty() && *c != ".");
    // A URL's bucket is its root.
    let root = match scheme {
        Some(_) => parts.next(),
        None => None,
    };
    let mut out: Vec<&str> = Vec::new();
    for part in parts {
        if part == ".." {
            if out.last().is_some_and(|l| *l != "..") {
                out.pop();
            } else if !absolute && root.is_none() {
                out.push("..");
            }
        } else {
            out.push(part);
        }
    }
    let path = out.join("/");
    match (scheme, root) {
        (Some(scheme), Some(root)) if path.is_empty() => format!("{scheme}://{root}"),
        (Some(scheme), Some(root)) => format!("{scheme}://{root}/{path}"),
        (Some(scheme), None) => format!("{scheme}://"),
        (None, _) if absolute => format!("/{path}"),
        (None, _) if path.is_empty() && !name.is_empty() => ".".to_owned(),
        (None, _) => path,
    }
}

/// Where `ModelCheckpoint` saves on a signal (`save_on_interrupt`), in the template's folder,
/// when the name is free.
pub const INTERRUPT_FILE: &str = "interrupted.safetensors";

/// Whether `file` (a file name) is one a save on a signal takes: [`INTERRUPT_FILE`], or
/// `interrupted-RUNID.safetensors` when another run's file holds that name.
pub fn is_interrupt_name(file: &str) -> bool {
    file == INTERRUPT_FILE
        || file
            .strip_prefix("interrupted-")
            .and_then(|f| f.strip_suffix(".safetensors"))
            .is_some_and(|id| {
                (1..=64).contains(&id.len())
                    && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
}
