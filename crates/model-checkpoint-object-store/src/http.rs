//! The HTTP client under every store this crate builds: object_store's reqwest client,
//! wrapped so that each request has the deadlines and each reply the size bound of
//! [`crate::limits`]. A deadline or a bound that is crossed ends the request with an
//! [`HttpError`] whose source is a [`Stopped`], which `errors.rs` turns into one line naming
//! the endpoint and what to check.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;
use tokio::time::{Instant, Sleep};

use crate::limits::{
    transfer_time, FIRST_BYTE_TIMEOUT, MAX_ERROR_REPLY_BYTES, MAX_REPLY_BYTES, QUIET_PERIOD,
    RANGE_SLACK_BYTES, REQUEST_DEADLINE, STALL_TIMEOUT,
};

/// Builds object_store's reqwest client with the bounds of [`crate::limits`] around it.
#[derive(Debug, Default)]
pub(crate) struct BoundedConnector;

impl HttpConnector for BoundedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        // reqwest's own timeout is one figure for every request, which would cut a large part
        // on a slow link or leave a small request hanging long: the deadlines here scale
        // with the bytes instead. The connect timeout stays reqwest's.
        let options = options.clone().with_timeout_disabled();
        let client = ReqwestConnector::default().connect(&options)?;
        Ok(HttpClient::new(Bounded { client }))
    }
}

#[derive(Debug)]
struct Bounded {
    client: HttpClient,
}

/// Why a request was stopped, naming the endpoint: the source of the [`HttpError`] it
/// ended with.
#[derive(Debug, Clone)]
pub(crate) struct Stopped {
    pub endpoint: String,
    pub reason: Reason,
}

#[derive(Debug, Clone)]
pub(crate) enum Reason {
    /// No head of a reply within the time.
    NoAnswer(Duration),
    /// The connection could not be opened in time.
    NoConnection,
    /// The body paused longer than [`STALL_TIMEOUT`].
    Stalled,
    /// The whole request took longer than its deadline.
    TooSlow(Duration),
    /// The body went past its bound.
    TooLong { bound: u64, what: Expected },
    /// The head announced a body past the bound.
    Announced {
        length: u64,
        bound: u64,
        what: Expected,
    },
    /// The endpoint left an earlier request unanswered `ago` before: not asked again.
    Quiet { earlier: Box<Reason>, ago: Duration },
    /// A success reply with a header this client cannot use: its name and value.
    BadHeader(&'static str, String),
    /// The connection was made, and what came back is not an HTTP reply to the request
    /// (hyper's parse error, as text), and the error status the endpoint answered an
    /// earlier request with, lately (a retry of it meets the rest of that reply).
    NotHttp(String, Option<u16>),
}

/// What a reply was expected to hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expected {
    Range(u64),
    Reply,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Range(len) => write!(f, "a read of {len} bytes"),
            Expected::Reply => f.write_str("a listing page or other reply"),
        }
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoAnswer(waited) => write!(f, "sent no answer within {}", secs(*waited)),
            Reason::NoConnection => write!(
                f,
                "did not accept a connection within {}",
                secs(crate::limits::CONNECT_TIMEOUT)
            ),
            Reason::Stalled => write!(f, "stopped sending its reply for {}", secs(STALL_TIMEOUT)),
            Reason::TooSlow(limit) => write!(
                f,
                "did not finish its reply within {} (at least {} KiB/s is needed)",
                secs(*limit),
                crate::limits::MIN_BYTES_PER_SECOND >> 10
            ),
            Reason::TooLong { bound, what } => {
                write!(f, "sent more than {bound} bytes for {what}")
            }
            Reason::Announced {
                length,
                bound,
                what,
            } => write!(
                f,
                "announced a reply of {length} bytes for {what} (at most {bound} expected)"
            ),
            Reason::BadHeader(name, value) => write!(
                f,
                "answered with a {name} header this client cannot use ({value:?})"
            ),
            Reason::NotHttp(cause, None) => write!(
                f,
                "sent what this client cannot read as an HTTP reply ({cause})"
            ),
            Reason::NotHttp(cause, Some(status)) => write!(
                f,
                "answered {status} to an earlier request, then sent what this client cannot read as an HTTP reply ({cause})"
            ),
            // Within the second, the request that went unanswered is the one just made
            // (by this command): said as such, not as some earlier request.
            Reason::Quiet { earlier, ago } if ago.as_secs() == 0 => write!(
                f,
                "{earlier} to the request just before this one, and is not asked again for {}",
                secs(QUIET_PERIOD)
            ),
            Reason::Quiet { earlier, ago } => write!(
                f,
                "{earlier} to an earlier request ({} s ago), and is not asked again for {}",
                ago.as_secs(),
                secs(QUIET_PERIOD)
            ),
        }
    }
}

impl Reason {
    /// What the user should check.
    fn check(&self) -> &'static str {
        match self {
            Reason::NoAnswer(_) | Reason::NoConnection => {
                "check AWS_ENDPOINT_URL (a running S3 server) and the network"
            }
            Reason::Stalled | Reason::TooSlow(_) => "check the server and the network",
            Reason::TooLong { .. }
            | Reason::Announced { .. }
            | Reason::BadHeader(..)
            | Reason::NotHttp(..) => "check that AWS_ENDPOINT_URL names an S3 server",
            Reason::Quiet { earlier, .. } => earlier.check(),
        }
    }
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the endpoint {} {}: {}",
            self.endpoint,
            self.reason,
            self.reason.check()
        )
    }
}

impl std::error::Error for Stopped {}

/// Endpoints that left a request unanswered: when, and how.
static QUIET: Mutex<Vec<(String, std::time::Instant, Reason)>> = Mutex::new(Vec::new());

/// The error statuses endpoints answered with lately, of those object_store retries: what a
/// reply that then cannot be read followed (object_store retries a 500 on the same connection, where the rest of the 500's
/// body waits).
static ANSWERED: Mutex<Vec<(String, std::time::Instant, u16)>> = Mutex::new(Vec::new());

/// Remembers that `endpoint` answered a request with the error `status`.
fn mark_answered(endpoint: &str, status: u16) {
    let mut answered = ANSWERED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    answered.retain(|(e, at, _)| e != endpoint && at.elapsed() < QUIET_PERIOD);
    answered.push((endpoint.to_owned(), std::time::Instant::now(), status));
}

/// The error status `endpoint` answered with lately, if any.
fn answered(endpoint: &str) -> Option<u16> {
    let answered = ANSWERED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    answered
        .iter()
        .rev()
        .find(|(e, at, _)| e == endpoint && at.elapsed() < QUIET_PERIOD)
        .map(|(_, _, status)| *status)
}

/// Remembers that `endpoint` left a request unanswered.
fn mark_quiet(endpoint: &str, reason: &Reason) {
    let mut quiet = QUIET
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    quiet.retain(|(e, at, _)| e != endpoint && at.elapsed() < QUIET_PERIOD);
    quiet.push((
        endpoint.to_owned(),
        std::time::Instant::now(),
        reason.clone(),
    ));
}

/// Why `endpoint` is not asked now, if it left a request unanswered lately.
fn quiet(endpoint: &str) -> Option<Reason> {
    let quiet = QUIET
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    quiet
        .iter()
        .rev()
        .find(|(e, at, _)| e == endpoint && at.elapsed() < QUIET_PERIOD)
        .map(|(_, at, reason)| Reason::Quiet {
            earlier: Box::new(match reason {
                Reason::Quiet { earlier, .. } => (**earlier).clone(),
                other => other.clone(),
            }),
            ago: at.elapsed(),
        })
}

/// `scheme://host:port` of a request.
fn endpoint_of(uri: &http::Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => "(no endpoint)".to_owned(),
    }
}

/// What the reply to `request` may hold: how many bytes it is expected to bring (for the
/// deadline), and its bound.
fn expected(request: &HttpRequest) -> (u64, u64, Expected) {
    let range = request
        .headers()
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(range_length);
    match range {
        Some(len) => (
            len,
            len.saturating_add(RANGE_SLACK_BYTES),
            Expected::Range(len),
        ),
        None => (0, MAX_REPLY_BYTES, Expected::Reply),
    }
}

/// The length of a `bytes=A-B` or `bytes=-N` range.
fn range_length(value: &str) -> Option<u64> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    if start.is_empty() {
        return end.trim().parse().ok();
    }
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    end.checked_sub(start)?.checked_add(1)
}

/// A success reply's `Content-Range`, which must be `bytes FIRST-LAST/SIZE` (or `/*`) with
/// FIRST <= LAST < SIZE, LAST below `u64::MAX`; else its value, shortened, to name it.
fn check_content_range(value: &http::HeaderValue) -> Result<(), String> {
    let text = String::from_utf8_lossy(value.as_bytes());
    let shown = || text.chars().take(80).collect::<String>();
    let parsed = (|| {
        let (range, size) = text.trim().strip_prefix("bytes ")?.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
        let size: Option<u64> = match size {
            "*" => None,
            size => Some(size.parse().ok()?),
        };
        (first <= last && last < u64::MAX && size.is_none_or(|size| last < size)).then_some(())
    })();
    parsed.ok_or_else(shown)
}

/// hyper's words, when `e` comes from a reply hyper could not parse.
fn not_http(e: &HttpError) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(hyper) = err.downcast_ref::<hyper::Error>() {
            return hyper.is_parse().then(|| hyper.to_string());
        }
        source = err.source();
    }
    None
}

fn stop(endpoint: &str, kind: HttpErrorKind, reason: Reason) -> HttpError {
    HttpError::new(
        kind,
        Stopped {
            endpoint: endpoint.to_owned(),
            reason,
        },
    )
}

/// `now + d`, or a far deadline where that does not fit.
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 24 * 3600))
}

#[async_trait::async_trait]
impl HttpService for Bounded {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let endpoint = endpoint_of(request.uri());
        if let Some(reason) = quiet(&endpoint) {
            // Not retried: the retries would meet the same answer.
            return Err(stop(&endpoint, HttpErrorKind::Unknown, reason));
        }
        let sent = body_length(request.body());
        // A HEAD's Content-Length is the object's size; its reply has no body.
        let head_only = request.method() == http::Method::HEAD;
        let (expected_bytes, bound, what) = expected(&request);
        let head_time = FIRST_BYTE_TIMEOUT + transfer_time(sent);
        let total = REQUEST_DEADLINE + transfer_time(sent.saturating_add(expected_bytes));
        let deadline = after(total);
        let response = match tokio::time::timeout(head_time, self.client.execute(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                // reqwest times out only while connecting (its request timeout is off).
                // Not retried: the endpoint is not asked again for a while anyway.
                if e.kind() == HttpErrorKind::Timeout {
                    mark_quiet(&endpoint, &Reason::NoConnection);
                    return Err(stop(
                        &endpoint,
                        HttpErrorKind::Unknown,
                        Reason::NoConnection,
                    ));
                }
                // Reached, and answered with what is not HTTP (bytes before the request was
                // sent, a body after a HEAD's reply, a malformed head): said as such, not as
                // an endpoint that cannot be reached. Retried as object_store retries the
                // error's kind.
                if let Some(cause) = not_http(&e) {
                    let earlier = answered(&endpoint);
                    return Err(stop(&endpoint, e.kind(), Reason::NotHttp(cause, earlier)));
                }
                return Err(e);
            }
            Err(_) => {
                let reason = Reason::NoAnswer(head_time);
                mark_quiet(&endpoint, &reason);
                return Err(stop(&endpoint, HttpErrorKind::Timeout, reason));
            }
        };
        let (parts, body) = response.into_parts();
        // Only the statuses object_store retries: a 404 to a HEAD is an answer, and not
        // what a later unreadable reply followed.
        let status = parts.status;
        if status.is_server_error()
            || status == http::StatusCode::TOO_MANY_REQUESTS
            || status == http::StatusCode::REQUEST_TIMEOUT
        {
            mark_answered(&endpoint, status.as_u16());
        }
        if status.is_success() {
            if let Some(value) = parts.headers.get(http::header::CONTENT_RANGE) {
                // object_store computes the range's end + 1 unchecked: a last byte of
                // u64::MAX overflows there (a panic where overflow is checked).
                if let Err(value) = check_content_range(value) {
                    return Err(stop(
                        &endpoint,
                        HttpErrorKind::Decode,
                        Reason::BadHeader("Content-Range", value),
                    ));
                }
            }
        }
        let limit = if parts.status.is_success() {
            let announced = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(length) = announced.filter(|l| *l > bound && !head_only) {
                return Err(stop(
                    &endpoint,
                    HttpErrorKind::Decode,
                    Reason::Announced {
                        length,
                        bound,
                        what,
                    },
                ));
            }
            match what {
                // object_store retries a body that fails, asking for the rest of the range
                // (which a body past its end makes nonsense): a ranged read is cut instead,
                // and its reader refuses more bytes than it asked for (`reader.rs`).
                Expected::Range(_) => Limit::Cut(bound),
                Expected::Reply => Limit::Fail { bound, what },
            }
        } else {
            Limit::Cut(MAX_ERROR_REPLY_BYTES)
        };
        let body = Guarded {
            inner: body,
            endpoint,
            received: 0,
            limit,
            total,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            stall: Box::pin(tokio::time::sleep_until(after(STALL_TIMEOUT))),
            done: false,
        };
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

fn body_length(body: &HttpRequestBody) -> u64 {
    body.content_length() as u64
}

/// How a body's bound applies.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// Past `bound` bytes the reply is an error.
    Fail { bound: u64, what: Expected },
    /// An error reply, or a ranged read: what comes past the bound is not read (an error
    /// keeps its status and its first bytes; a read gets more than it asked for, and says
    /// so).
    Cut(u64),
}

impl Limit {
    fn bound(&self) -> u64 {
        match *self {
            Limit::Fail { bound, .. } | Limit::Cut(bound) => bound,
        }
    }
}

/// A reply's body with its bound, its stall timeout and the request's deadline.
struct Guarded {
    inner: HttpResponseBody,
    endpoint: String,
    received: u64,
    limit: Limit,
    total: Duration,
    deadline: Pin<Box<Sleep>>,
    stall: Pin<Box<Sleep>>,
    done: bool,
}

impl Guarded {
    fn fail(
        &mut self,
        kind: HttpErrorKind,
        reason: Reason,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        self.done = true;
        Poll::Ready(Some(Err(stop(&self.endpoint, kind, reason))))
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                let before = this.received;
                this.received = before.saturating_add(data.len() as u64);
                let bound = this.limit.bound();
                if this.received > bound {
                    match this.limit {
                        Limit::Fail { bound, what } => {
                            return this
                                .fail(HttpErrorKind::Decode, Reason::TooLong { bound, what });
                        }
                        Limit::Cut(bound) => {
                            this.done = true;
                            let keep = usize::try_from(bound - before).unwrap_or(usize::MAX);
                            let data = data.slice(..keep.min(data.len()));
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                    }
                }
                this.stall.as_mut().reset(after(STALL_TIMEOUT));
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    // Not asked again for a while, as for a stall: a reply that trickles
                    // in just faster than the stall timeout would otherwise cost each
                    // later request its whole deadline.
                    let reason = Reason::TooSlow(this.total);
                    mark_quiet(&this.endpoint, &reason);
                    return this.fail(HttpErrorKind::Timeout, reason);
                }
                if this.stall.as_mut().poll(cx).is_ready() {
                    mark_quiet(&this.endpoint, &Reason::Stalled);
                    return this.fail(HttpErrorKind::Timeout, Reason::Stalled);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    /// Never more than the bound: a reader sizes its buffer by this, and a hostile
    /// `Content-Length` must not make it allocate more.
    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        hint.set_lower(self.inner.size_hint().lower().min(self.limit.bound()));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_measured_as_s3_reads_them() {
        assert_eq!(range_length("bytes=0-4095"), Some(4096));
        assert_eq!(range_length("bytes=10-10"), Some(1));
        assert_eq!(range_length("bytes=-100"), Some(100));
        assert_eq!(range_length("bytes=5-"), None);
        assert_eq!(range_length("bytes=9-3"), None);
        assert_eq!(range_length("items=0-1"), None);
    }

    #[test]
    fn content_ranges_are_checked_before_object_store_reads_them() {
        let check = |v: &str| check_content_range(&http::HeaderValue::from_str(v).expect("value"));
        assert!(check("bytes 0-99/100").is_ok());
        assert!(check("bytes 5-5/*").is_ok());
        for bad in [
            "bytes 0-18446744073709551615/18446744073709551615",
            "bytes 0-18446744073709551615/*",
            "bytes 9-3/100",
            "bytes 0-100/100",
            "bytes 0-99",
            "items 0-99/100",
            "bytes -1-99/100",
            "bytes */100",
        ] {
            assert_eq!(check(bad), Err(bad.to_owned()), "{bad}");
        }
    }

    #[test]
    fn reasons_are_one_line_naming_the_endpoint() {
        let stopped = Stopped {
            endpoint: "http://127.0.0.1:9".to_owned(),
            reason: Reason::Quiet {
                earlier: Box::new(Reason::NoAnswer(Duration::from_secs(15))),
                ago: Duration::from_millis(2500),
            },
        };
        let text = stopped.to_string();
        assert_eq!(
            text,
            "the endpoint http://127.0.0.1:9 sent no answer within 15 s to an earlier request (2 s ago), and is not asked again for 30 s: check AWS_ENDPOINT_URL (a running S3 server) and the network"
        );
    }
}
