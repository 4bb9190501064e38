//! Names to keys: the core hands this backend the formatted paths of its templates
//! (`s3://bucket/run/w.01.safetensors`, or `s3:/bucket/run` once a path has been through
//! `std::path`), and gets the same spelling back from listings.

use model_checkpoint::Error;
use object_store::path::Path as Key;

/// Where a bucket is: `s3://bucket`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub scheme: String,
    pub name: String,
}

impl Bucket {
    /// The object key of `name`: the URL's scheme and bucket stripped (in either spelling),
    /// `.` and `..` resolved lexically (as a local folder's names are), and refused if it
    /// leaves the bucket or names another bucket.
    pub fn key(&self, name: &str) -> Result<Key, Error> {
        let rest = self.strip(name).ok_or_else(|| {
            bad(
                name,
                &format!(
                    "it is not in {} (give a full {}:// URL)",
                    self.url(),
                    self.scheme
                ),
            )
        })?;
        let mut parts: Vec<&str> = Vec::new();
        for part in rest.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(bad(name, "it leaves the bucket"));
                    }
                }
                other => parts.push(other),
            }
        }
        Key::parse(parts.join("/")).map_err(|e| bad(name, &e.to_string()))
    }

    /// `name` without `scheme://bucket` (or `scheme:/bucket`), or `None` for another
    /// bucket's URL or a name without this scheme (a local path given by mistake, such as a
    /// `save_last_as` path beside an `s3://` template, is never written into the bucket).
    fn strip<'a>(&self, name: &'a str) -> Option<&'a str> {
        let after = name.strip_prefix(&format!("{}:", self.scheme))?;
        let after = after.trim_start_matches('/');
        let (bucket, rest) = after.split_once('/').unwrap_or((after, ""));
        (bucket == self.name).then_some(rest)
    }

    /// The name the core uses for `key`: its URL.
    pub fn name(&self, key: &Key) -> String {
        format!("{}://{}/{}", self.scheme, self.name, key.as_ref())
    }

    /// The URL of the bucket itself.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.name)
    }
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (without slashes at its ends).
///
/// # Errors
///
/// [`Error::BadLocation`] for a URL without a scheme this crate knows or without a bucket.
pub(crate) fn parse_url(url: &str) -> Result<(Bucket, String), Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad(url, "it is not a URL like s3://bucket/prefix"))?;
    if !crate::SCHEMES.contains(&scheme) {
        return Err(bad(
            url,
            &format!(
                "the scheme {scheme:?} is not one of {} (in this build)",
                crate::SCHEMES.join(", ")
            ),
        ));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (1..=255).contains(&bucket.len())
        && bucket.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        });
    if !valid {
        return Err(bad(url, "its bucket name is missing or malformed"));
    }
    Ok((
        Bucket {
            scheme: scheme.to_owned(),
            name: bucket.to_owned(),
        },
        prefix.trim_matches('/').to_owned(),
    ))
}

fn bad(name: &str, reason: &str) -> Error {
    Error::BadLocation {
        location: shorten(name),
        reason: reason.to_owned(),
    }
}

/// At most 200 characters of an untrusted name, for messages.
pub(crate) fn shorten(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> Bucket {
        parse_url("s3://ckpt").expect("url").0
    }

    #[test]
    fn names_map_to_keys_in_either_spelling() {
        let b = bucket();
        for name in [
            "s3://ckpt/run/w.01.safetensors",
            "s3:/ckpt/run/w.01.safetensors",
            "s3://ckpt/run/./x/../w.01.safetensors",
        ] {
            assert_eq!(b.key(name).expect(name).as_ref(), "run/w.01.safetensors");
        }
        assert_eq!(
            b.name(&b.key("s3://ckpt/run/a").expect("key")),
            "s3://ckpt/run/a".to_owned()
        );
        assert!(b.key("run/a").is_err(), "a local path is not a key");
        assert!(b.key("s3://other/run/a").is_err());
        assert!(b.key("s3://ckpt/../other/a").is_err());
        assert!(b.key("gs://ckpt/a").is_err());
    }

    #[test]
    fn urls_need_a_known_scheme_and_a_bucket() {
        assert_eq!(
            parse_url("s3://b/run/x/").expect("url").1,
            "run/x".to_owned()
        );
        assert!(parse_url("ftp://b/x").is_err());
        assert!(parse_url("s3:///x").is_err());
        assert!(parse_url("s3://B!/x").is_err());
        assert!(parse_url("run/x").is_err());
    }
}
