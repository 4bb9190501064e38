//! Names to keys: the core hands this backend the formatted paths of its templates
//! (`s3://bucket/run/w.01.safetensors`, or `s3:/bucket/run` once a path has been through
//! `std::path`), and gets the same spelling back from listings.

use model_checkpoint::store::Name;
use model_checkpoint::Error;
use object_store::path::Path as Key;

/// Where a bucket is: `s3://bucket`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub scheme: String,
    pub name: String,
}

impl Bucket {
    /// The object key of `name`: what follows the URL's `scheme://bucket` root (a [`Name`]
    /// has resolved `.` and `..` already, and never leaves its root); refused for another
    /// scheme or bucket, or a local path (a `save_last_as` path beside an `s3://` template
    /// given by mistake is never written into the bucket).
    pub fn key(&self, name: &Name) -> Result<Key, Error> {
        if name.root() != self.url() {
            return Err(bad(
                name.as_str(),
                &format!(
                    "it is not in {} (give a full {}:// URL)",
                    self.url(),
                    self.scheme
                ),
            ));
        }
        Key::parse(name.components().collect::<Vec<_>>().join("/"))
            .map_err(|e| bad(name.as_str(), &e.to_string()))
    }

    /// The object key of `text` (a URL given as text: `ckpt unlock`'s folder).
    pub fn key_of(&self, text: &str) -> Result<Key, Error> {
        self.key(&Name::new(text)?)
    }

    /// The URL of `key` (for messages and the crate's own bookkeeping).
    pub fn name(&self, key: &Key) -> String {
        format!("{}/{}", self.url(), key.as_ref())
    }

    /// The name the core uses for `key`: its URL.
    pub fn name_of(&self, key: &Key) -> Name {
        Name::from(self.name(key))
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
    fn names_map_to_keys() {
        let b = bucket();
        for name in [
            "s3://ckpt/run/w.01.safetensors",
            "s3://ckpt/run/./x/../w.01.safetensors",
        ] {
            assert_eq!(b.key_of(name).expect(name).as_ref(), "run/w.01.safetensors");
        }
        assert_eq!(
            b.name_of(&b.key_of("s3://ckpt/run/a").expect("key"))
                .as_str(),
            "s3://ckpt/run/a"
        );
        assert!(b.key_of("run/a").is_err(), "a local path is not a key");
        assert!(b.key_of("s3:/ckpt/run/a").is_err(), "a path, not a URL");
        assert!(b.key_of("s3://other/run/a").is_err());
        assert!(b.key_of("s3://ckpt/../a").is_err(), "it leaves the bucket");
        assert!(b.key_of("gs://ckpt/a").is_err());
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
