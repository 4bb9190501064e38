//! [`Name`]: where an object lives, as every storage, the engine and the errors spell it.
//! A save writes to, a reader opens and the callback reports (`last_saved`, retention, the
//! journal) the same name, because there is one normalisation, here. It depends on nothing
//! else in the crate (errors and policies hold names), and knows that a URL has a root,
//! not what any scheme means.

use std::fmt;
use std::path::Path;

/// A text that is not a valid [`Name`] (it becomes [`crate::Error::BadLocation`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    /// The text, as given.
    pub text: String,
    /// Why it is not a name.
    pub reason: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a valid location: {}",
            self.text, self.reason
        )
    }
}

impl std::error::Error for NameError {}

/// A validated, normalised, `/`-separated location: a relative path (`ck/w.safetensors`), an
/// absolute one (`/data/ck/w.safetensors`) or a URL (`s3://bucket/run/w.safetensors`), as
/// object_store's `path::Path` is for keys, with a root that `..` never leaves.
///
/// Normalising resolves `.` and `..` lexically and collapses repeated `/`, as every storage
/// resolves the names it is given: `new/../ck/w` is `ck/w` (TensorFlow's `gfile`, through
/// which Keras makes folders, resolves them so, and no `new/` is made). A leading `..` of a
/// relative name stays; `..` never goes above `/` (as on every file system), and a name
/// whose `..` would leave a URL's `scheme://bucket` is refused. The top of a relative name
/// is `.`.
///
/// A URL is `scheme://first/...` where the scheme is a letter followed by letters, digits,
/// `+`, `-` or `.`: this type knows that a URL has a root, not what a scheme means (the
/// storage for it does).
///
/// ```
/// use model_checkpoint::Name;
/// let n = |s: &str| Name::new(s).unwrap().to_string();
/// assert_eq!(n("ck/sub/../w.safetensors"), "ck/w.safetensors");
/// assert_eq!(n("./ck//w"), "ck/w");
/// assert_eq!(n("../w"), "../w");
/// assert_eq!(n("/../w"), "/w");
/// assert_eq!(n("s3://bucket/run/../w"), "s3://bucket/w");
/// assert!(Name::new("s3://bucket/run/../../w").is_err());
/// let name = Name::new("s3://bucket/run/w.01.safetensors").unwrap();
/// assert_eq!(name.scheme(), Some("s3"));
/// assert_eq!(name.parent().to_string(), "s3://bucket/run");
/// assert_eq!(name.file_name(), Some("w.01.safetensors"));
/// assert!(Name::new("s3://").is_err());
/// assert!(Name::new("ck/w\0").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name {
    /// The normalised text.
    text: String,
    /// How many bytes of `text` are the root: 0 (relative), 1 (`/`), or `scheme://first`.
    root: usize,
}

impl Name {
    /// `text` normalised (see the type's documentation).
    ///
    /// # Errors
    ///
    /// [`NameError`] (which `?` turns into [`crate::Error::BadLocation`]) for a name
    /// holding a NUL byte (no file system or object store takes one), a URL without its
    /// first component (`s3://`), or one whose `..` leaves it.
    pub fn new(text: &str) -> Result<Name, NameError> {
        let bad = |reason: &str| NameError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.contains('\0') {
            return Err(bad("a name cannot hold a NUL byte"));
        }
        let (scheme, rest) = split_scheme(text);
        let mut parts = rest.split('/').filter(|c| !c.is_empty() && *c != ".");
        let root = match scheme {
            Some(scheme) => match parts.next() {
                Some(first) if first != ".." => format!("{scheme}://{first}"),
                _ => return Err(bad("a URL needs a bucket (scheme://bucket/...)")),
            },
            None if rest.starts_with('/') => "/".to_owned(),
            None => String::new(),
        };
        let mut out: Vec<&str> = Vec::new();
        for part in parts {
            if part == ".." {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if scheme.is_some() {
                    // `/..` is `/` on every file system; a URL that climbs out of its
                    // bucket is a mistake (or an attack), never another bucket's key.
                    return Err(bad(&format!("it leaves the bucket {root}")));
                } else if root.is_empty() {
                    out.push("..");
                }
            } else {
                out.push(part);
            }
        }
        Ok(Name::from_parts(root, &out))
    }

    /// A name made of a root and normalised components.
    fn from_parts(root: String, parts: &[&str]) -> Name {
        let mut text = root;
        let root = text.len();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 || (root > 0 && !text.ends_with('/')) {
                text.push('/');
            }
            text.push_str(part);
        }
        if text.is_empty() {
            text.push('.');
        }
        Name { text, root }
    }

    /// `text` normalised, or kept as written when it is not a valid name, in a form every
    /// storage refuses (a NUL stays; a URL without a bucket is all root): what an
    /// infallible constructor (`CsvLogger::new`, `From<&Path>`) holds until the storage
    /// reports it.
    fn lenient(text: &str) -> Name {
        Name::new(text).unwrap_or_else(|_| Name {
            text: text.to_owned(),
            root: if split_scheme(text).0.is_some() {
                text.len()
            } else {
                0
            },
        })
    }

    /// The top of relative names, `.`.
    pub fn top() -> Name {
        Name {
            text: ".".to_owned(),
            root: 0,
        }
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The name as a local path (what a local folder opens).
    pub fn as_path(&self) -> &Path {
        Path::new(&self.text)
    }

    /// The name for `{}` in messages (what `Path::display` is for paths).
    pub fn display(&self) -> &Name {
        self
    }

    /// The URL's scheme (`s3`), or `None` for a path.
    pub fn scheme(&self) -> Option<&str> {
        self.text[..self.root].split_once("://").map(|(s, _)| s)
    }

    /// The root: `""` (relative), `"/"`, or a URL's `scheme://bucket`.
    pub fn root(&self) -> &str {
        &self.text[..self.root]
    }

    /// The root alone, as a name (`.` for a relative name).
    pub fn root_name(&self) -> Name {
        Name::from_parts(self.root().to_owned(), &[])
    }

    /// Whether the name is relative (no `/` and no URL root).
    pub fn is_relative(&self) -> bool {
        self.root == 0
    }

    /// The components after the root (none for the top).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.text[self.root..]
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
    }

    /// Whether nothing follows the root (`.`, `/`, `s3://bucket`).
    pub fn is_top(&self) -> bool {
        self.components().next().is_none()
    }

    /// The last component, unless the name is a top or ends in `..`.
    pub fn file_name(&self) -> Option<&str> {
        self.components().last().filter(|c| *c != "..")
    }

    /// The folder the name is in: the name without its last component (a top's folder is
    /// itself; a relative name's `..` goes one further up).
    pub fn parent(&self) -> Name {
        let parts: Vec<&str> = self.components().collect();
        match parts.last() {
            None => self.clone(),
            Some(&"..") => self.join(".."),
            Some(_) => Name::from_parts(self.root().to_owned(), &parts[..parts.len() - 1]),
        }
    }

    /// `rel` (a `/`-separated relative name; `..` resolves against this one) below this
    /// name. An absolute `rel` is taken as relative: a join never leaves this name's root.
    pub fn join(&self, rel: &str) -> Name {
        let mut parts: Vec<&str> = self.components().collect();
        for part in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if part == ".." {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if self.root == 0 {
                    parts.push("..");
                }
            } else {
                parts.push(part);
            }
        }
        Name::from_parts(self.root().to_owned(), &parts)
    }

    /// The name with its last component replaced by `file`.
    pub fn with_file_name(&self, file: &str) -> Name {
        self.parent().join(file)
    }

    /// The last component before its last `.` (all of it when there is none, or only a
    /// leading one), as `Path::file_stem`.
    pub fn file_stem(&self) -> Option<&str> {
        let file = self.file_name()?;
        Some(match file.rfind('.') {
            Some(0) | None => file,
            Some(i) => &file[..i],
        })
    }

    /// What follows the last component's last `.`, as `Path::extension`.
    pub fn extension(&self) -> Option<&str> {
        let file = self.file_name()?;
        match file.rfind('.') {
            Some(0) | None => None,
            Some(i) => Some(&file[i + 1..]),
        }
    }

    /// Whether this name is `dir` or lies below it, component by component.
    pub fn starts_with(&self, dir: &Name) -> bool {
        self.strip_prefix(dir).is_some()
    }

    /// What follows `dir` (`""` for `dir` itself), or `None` when the name is not below it.
    pub fn strip_prefix(&self, dir: &Name) -> Option<String> {
        if self.root() != dir.root() {
            return None;
        }
        let mut mine = self.components();
        for theirs in dir.components() {
            if mine.next() != Some(theirs) {
                return None;
            }
        }
        Some(mine.collect::<Vec<_>>().join("/"))
    }
}

/// `text`'s scheme and what follows `://`, or no scheme.
fn split_scheme(text: &str) -> (Option<&str>, &str) {
    match text.split_once("://") {
        Some((scheme, rest))
            if scheme
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            (Some(scheme), rest)
        }
        _ => (None, text),
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A NUL (only in a name that failed its check) is shown, not written to a terminal.
        f.write_str(&self.text.replace('\0', "\u{fffd}"))
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl AsRef<Path> for Name {
    fn as_ref(&self) -> &Path {
        self.as_path()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<Path> for Name {
    fn eq(&self, other: &Path) -> bool {
        self.as_path() == other
    }
}

impl PartialEq<std::path::PathBuf> for Name {
    fn eq(&self, other: &std::path::PathBuf) -> bool {
        self.as_path() == other
    }
}

impl PartialEq<&Path> for Name {
    fn eq(&self, other: &&Path) -> bool {
        self.as_path() == *other
    }
}

/// A local path as a name: what a local folder reports in its errors and listings. A path
/// that is not UTF-8 is spelled with U+FFFD where it is not (as `Path::display` shows it);
/// an invalid one is kept as written (see `From<&str>`).
impl From<&Path> for Name {
    fn from(path: &Path) -> Name {
        Name::lenient(&path.to_string_lossy())
    }
}

/// A text as a name: normalised when valid, otherwise kept as written in a form every
/// storage refuses (see [`Name::new`] for the checked form).
impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name::lenient(text)
    }
}

impl From<&String> for Name {
    fn from(text: &String) -> Name {
        Name::lenient(text)
    }
}

impl From<String> for Name {
    fn from(text: String) -> Name {
        Name::lenient(&text)
    }
}

impl From<std::path::PathBuf> for Name {
    fn from(path: std::path::PathBuf) -> Name {
        Name::from(path.as_path())
    }
}

impl From<&std::path::PathBuf> for Name {
    fn from(path: &std::path::PathBuf) -> Name {
        Name::from(path.as_path())
    }
}

impl From<&Name> for Name {
    fn from(name: &Name) -> Name {
        name.clone()
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let text = String::deserialize(d)?;
        Name::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Name;

    fn n(s: &str) -> String {
        Name::new(s)
            .map(|n| n.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn normalises_lexically_and_keeps_roots() {
        assert_eq!(n(""), ".");
        assert_eq!(n("."), ".");
        assert_eq!(n("a/.."), ".");
        assert_eq!(n("../../x"), "../../x");
        assert_eq!(n("a/../../x"), "../x");
        assert_eq!(n("/"), "/");
        assert_eq!(n("//a//b/"), "/a/b");
        assert_eq!(n("s3://b"), "s3://b");
        assert_eq!(n("s3://b/"), "s3://b");
        assert!(n("s3://b/../..").contains("leaves the bucket"));
        assert_eq!(n("gs:/b/k"), "gs:/b/k");
        assert!(n("s3://../k").contains("bucket"));
        // Not a scheme: a placeholder or a path before `://`.
        assert_eq!(n("{x}://a"), "{x}:/a");
        assert_eq!(n("a/b://c"), "a/b:/c");
    }

    #[test]
    fn parts() {
        let name = Name::new("s3://b/run/w.01.safetensors").unwrap();
        assert_eq!(name.file_stem(), Some("w.01"));
        assert_eq!(name.extension(), Some("safetensors"));
        assert_eq!(name.with_file_name("x").as_str(), "s3://b/run/x");
        assert_eq!(name.parent().parent().as_str(), "s3://b");
        assert_eq!(name.parent().parent().parent().as_str(), "s3://b");
        assert!(name.starts_with(&Name::new("s3://b/run").unwrap()));
        assert!(!name.starts_with(&Name::new("s3://b/ru").unwrap()));
        assert!(!name.starts_with(&Name::new("run").unwrap()));
        assert_eq!(Name::new("w").unwrap().parent().as_str(), ".");
        assert_eq!(Name::new("..").unwrap().parent().as_str(), "../..");
        assert_eq!(Name::new(".hidden").unwrap().extension(), None);
        assert_eq!(Name::top().join("../a").as_str(), "../a");
        assert_eq!(Name::new("/x").unwrap().join("../../a").as_str(), "/a");
        assert_eq!(
            Name::new("ck/w").unwrap().strip_prefix(&Name::top()),
            Some("ck/w".to_owned())
        );
    }
}
