//! The object store's errors as the core's: the operation and the object's URL, an
//! `io::ErrorKind` the core can act on (not found, already exists, permission denied), and
//! a one-line reason a user can act on, with the full error kept as the source.

use std::fmt;
use std::io;

use model_checkpoint::Error;

/// `e`, met while doing `action` to `name`, as the core's [`Error::Io`].
pub(crate) fn remote(action: &'static str, name: &str, e: object_store::Error) -> Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => io::ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    Error::Io {
        action,
        path: crate::names::shorten(name).into(),
        source: io::Error::new(kind, Remote::new(e)),
    }
}

/// `e` as an `io::Error` with a one-line message (for readers, whose errors are I/O errors).
pub(crate) fn io(e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, Remote::new(e))
}

/// An object-store error with a one-line summary in front of it.
#[derive(Debug)]
struct Remote {
    summary: String,
    source: object_store::Error,
}

impl Remote {
    fn new(source: object_store::Error) -> Self {
        let summary = match stopped(&source) {
            Some(stopped) => stopped.to_string(),
            None => summarize(&source.to_string()),
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
/// has one, with what to check.
fn summarize(full: &str) -> String {
    let code = between(full, "<Code>", "</Code>");
    let has = |needle: &str| full.contains(needle);
    let endpoint = endpoint_in(full);
    let at = endpoint
        .as_deref()
        .map(|e| format!(" {e}"))
        .unwrap_or_default();
    let hint = match code.as_deref() {
        Some("SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied") => {
            Some("access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_owned())
        }
        Some("NoSuchBucket") => Some("the bucket does not exist".to_owned()),
        _ if has("403 Forbidden") || has("401 Unauthorized") => {
            Some("access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_owned())
        }
        _ if has("error sending request")
            || has("Connection refused")
            || has("tcp connect error")
            || has("dns error")
            || has("timed out") =>
        {
            Some(format!("cannot reach the endpoint{at}: check AWS_ENDPOINT_URL (and AWS_ALLOW_HTTP for http://)"))
        }
        _ => status_in(full).map(|status| {
            format!("the endpoint{at} answered {status}: check AWS_ENDPOINT_URL and the server")
        }),
    };
    let one_line: String = full.split_whitespace().collect::<Vec<_>>().join(" ");
    let detail = match &code {
        Some(code) => format!("the server said {code}"),
        None => crate::names::shorten(&one_line),
    };
    match hint {
        Some(hint) if code.is_none() && status_in(full).is_some() => hint,
        Some(hint) => format!("{hint} ({detail})"),
        None => detail,
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
    (status.len() >= 3 && status.len() <= 64 && status.as_bytes()[..3].iter().all(u8::is_ascii_digit))
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
        let denied = summarize(
            "Generic S3 error: Error performing PUT http://127.0.0.1:1/b/k in 2ms\n - Server returned non-OK status: 403 Forbidden, body: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code></Error>",
        );
        assert_eq!(
            denied,
            "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the server said SignatureDoesNotMatch)"
        );
        let unreachable = summarize("Generic S3 error: error sending request\n for url (http://127.0.0.1:1/b): tcp connect error: Connection refused");
        assert!(
            unreachable.starts_with("cannot reach the endpoint"),
            "{unreachable}"
        );
        assert!(!unreachable.contains('\n'));
        let bucket = summarize("... <Code>NoSuchBucket</Code> ...");
        assert!(bucket.starts_with("the bucket does not exist"), "{bucket}");
        let status = summarize(&format!(
            "Generic S3 error: Error performing GET http://127.0.0.1:9/b?list-type=2 in 1s, after 4 retries - Server returned non-2xx status code: 500 Internal Server Error: {}",
            "x".repeat(65536)
        ));
        assert_eq!(
            status,
            "the endpoint http://127.0.0.1:9 answered 500 Internal Server Error: check AWS_ENDPOINT_URL and the server"
        );
    }
}
