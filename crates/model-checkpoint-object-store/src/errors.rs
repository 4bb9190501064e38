//! The object store's errors as the core's: the operation and the object's URL, an
//! `io::ErrorKind` the core can act on (not found, already exists, permission denied), and
//! a one-line reason a user can act on, with the full error kept as the source.

use std::fmt;
use std::io;

use model_checkpoint::Error;

/// `e`, met while doing `action` to `name` of `inner`'s store, as the core's [`Error::Io`].
pub(crate) fn remote(
    inner: &crate::Inner,
    action: &'static str,
    name: &str,
    e: object_store::Error,
) -> Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => io::ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        _ => kind_of(&e),
    };
    Error::Io {
        action,
        path: crate::names::shorten(name).into(),
        source: io::Error::new(kind, Remote::new(e, &inner.endpoint)),
    }
}

/// `e` as an `io::Error` with a one-line message (for readers, whose errors are I/O errors).
pub(crate) fn io(inner: &crate::Inner, e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        _ => kind_of(&e),
    };
    io::Error::new(kind, Remote::new(e, &inner.endpoint))
}

/// `TimedOut` for a request a deadline stopped, `InvalidData` for a reply past its bound.
fn kind_of(e: &object_store::Error) -> io::ErrorKind {
    use crate::http::Reason;
    match stopped(e).map(|s| &s.reason) {
        Some(Reason::TooLong { .. } | Reason::Announced { .. }) => io::ErrorKind::InvalidData,
        Some(_) => io::ErrorKind::TimedOut,
        None => io::ErrorKind::Other,
    }
}

/// An object-store error with a one-line summary in front of it.
#[derive(Debug)]
struct Remote {
    summary: String,
    source: object_store::Error,
}

impl Remote {
    fn new(source: object_store::Error, endpoint: &str) -> Self {
        let summary = match stopped(&source) {
            Some(stopped) => stopped.to_string(),
            None if matches!(source, object_store::Error::NotFound { .. }) => {
                let full = source.to_string();
                match (between(&full, "<Code>", "</Code>"), endpoint_in(&full)) {
                    (Some(code), _) => format!("not found (the server said {code})"),
                    (None, Some(at)) => format!("not found (the endpoint {at} answered 404)"),
                    (None, None) => "not found".to_owned(),
                }
            }
            None => summarize(
                &source.to_string(),
                endpoint,
                matches!(source, object_store::Error::Generic { .. }),
            ),
        };
        Remote { summary, source }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for Remote {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The deadline or bound that stopped the request `e` failed with, if one did (see
/// `http.rs`): found among its sources.
fn stopped(e: &object_store::Error) -> Option<&crate::http::Stopped> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if let Some(stopped) = error.downcast_ref::<crate::http::Stopped>() {
            return Some(stopped);
        }
        source = error.source();
    }
    None
}

/// What the server or the connection said, in one line: the S3 error code where the reply
/// has one, with what to check. `endpoint` is where requests go (the URL in the error, if
/// it names one, is preferred); `generic` is whether object_store had no closer kind for it.
fn summarize(full: &str, endpoint: &str, generic: bool) -> String {
    let code = between(full, "<Code>", "</Code>");
    let has = |needle: &str| full.contains(needle);
    let endpoint = endpoint_in(full).unwrap_or_else(|| endpoint.to_owned());
    let status = status_in(full);
    let one_line: String = full.split_whitespace().collect::<Vec<_>>().join(" ");
    let detail = match &code {
        Some(code) => format!("the server said {code}"),
        None => crate::names::shorten(&one_line),
    };
    match code.as_deref() {
        Some("SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied") => {
            format!("access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ({detail})")
        }
        Some("NoSuchBucket") => format!("the bucket does not exist ({detail})"),
        _ if has("403 Forbidden") || has("401 Unauthorized") => {
            format!("access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ({detail})")
        }
        _ if has("error sending request")
            || has("Connection refused")
            || has("tcp connect error")
            || has("dns error")
            || has("timed out") =>
        {
            format!("cannot reach the endpoint {endpoint}: check AWS_ENDPOINT_URL (and AWS_ALLOW_HTTP for http://) ({detail})")
        }
        _ if status.is_some() => {
            let status = status.unwrap_or_default();
            match &code {
                Some(_) => format!("the endpoint {endpoint} answered {status} ({detail}): check AWS_ENDPOINT_URL and the server"),
                None => format!("the endpoint {endpoint} answered {status}: check AWS_ENDPOINT_URL and the server"),
            }
        }
        _ if generic && status.is_none() => format!(
            "the endpoint {endpoint} sent a reply this client cannot read ({detail}): check that AWS_ENDPOINT_URL names an S3 server"
        ),
        _ => detail,
    }
}

/// `scheme://host:port` of the first URL in `text` (object_store names the request's).
fn endpoint_in(text: &str) -> Option<String> {
    let start = text.find("http://").or_else(|| text.find("https://"))?;
    let url = &text[start..];
    let after_scheme = url.find("://")? + 3;
    let end = url[after_scheme..]
        .find(|c: char| c == '/' || c == '?' || c.is_whitespace())
        .map_or(url.len(), |i| after_scheme + i);
    Some(crate::names::shorten(&url[..end]))
}

/// `NNN Reason` of a status object_store reports (`… status code: 500 Internal Server
/// Error: body`).
fn status_in(text: &str) -> Option<String> {
    let rest = &text[text.find("status code: ")? + "status code: ".len()..];
    let status = rest.split(':').next()?.trim();
    (status.len() >= 3
        && status.len() <= 64
        && status.as_bytes()[..3].iter().all(u8::is_ascii_digit))
    .then(|| status.to_owned())
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    let code = &text[start..start + len];
    (code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_one_line_and_say_what_to_check() {
        let at = "http://127.0.0.1:1";
        let denied = summarize(
            "Generic S3 error: Error performing PUT http://127.0.0.1:1/b/k in 2ms\n - Server returned non-OK status: 403 Forbidden, body: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code></Error>",
            at,
            true,
        );
        assert_eq!(
            denied,
            "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the server said SignatureDoesNotMatch)"
        );
        let unreachable = summarize("Generic S3 error: error sending request\n for url (http://127.0.0.1:1/b): tcp connect error: Connection refused", at, true);
        assert!(
            unreachable.starts_with(
                "cannot reach the endpoint http://127.0.0.1:1: check AWS_ENDPOINT_URL"
            ),
            "{unreachable}"
        );
        assert!(!unreachable.contains('\n'));
        let bucket = summarize("... <Code>NoSuchBucket</Code> ...", at, true);
        assert!(bucket.starts_with("the bucket does not exist"), "{bucket}");
        let status = summarize(
            &format!(
                "Generic S3 error: Error performing GET http://127.0.0.1:9/b?list-type=2 in 1s, after 4 retries - Server returned non-2xx status code: 500 Internal Server Error: {}",
                "x".repeat(65536)
            ),
            at,
            true,
        );
        assert_eq!(
            status,
            "the endpoint http://127.0.0.1:9 answered 500 Internal Server Error: check AWS_ENDPOINT_URL and the server"
        );
        let unreadable = summarize(
            "Generic S3 error: Last-Modified Header missing from response",
            at,
            true,
        );
        assert_eq!(
            unreadable,
            "the endpoint http://127.0.0.1:1 sent a reply this client cannot read (Generic S3 error: Last-Modified Header missing from response): check that AWS_ENDPOINT_URL names an S3 server"
        );
    }
}
