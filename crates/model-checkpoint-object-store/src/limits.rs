//! The deadlines and size bounds every request to a server has (see `http.rs`, which
//! enforces them, and `listing.rs`), so that a server that never answers, answers forever,
//! or lists forever gives an error in a known time and memory, never a hang or an abort.
//!
//! Per request:
//!
//! - [`CONNECT_TIMEOUT`] to open the connection;
//! - [`FIRST_BYTE_TIMEOUT`] from sending the request to the head of the reply, plus one
//!   second per [`MIN_BYTES_PER_SECOND`] bytes the request uploads (a part of a multipart
//!   upload goes out before its reply can come);
//! - [`STALL_TIMEOUT`] at most between two pieces of a reply's body;
//! - [`REQUEST_DEADLINE`] for the whole request, plus one second per
//!   [`MIN_BYTES_PER_SECOND`] bytes it sends or is expected to receive. A 16 MiB part
//!   ([`crate::DEFAULT_PART_SIZE`]) may take 60 + 256 s: four parts in flight are cut only on
//!   a link slower than 4 × 64 KiB/s (about 2 Mbit/s);
//! - a body bound: a ranged read's length plus [`RANGE_SLACK_BYTES`], [`MAX_REPLY_BYTES`]
//!   for any other successful reply (a listing page, an XML answer), and an error reply is
//!   cut at [`MAX_ERROR_REPLY_BYTES`] (the error keeps its status and first bytes).
//!
//! Transient failures (a refused connection, a timeout of a request that can be repeated, a
//! 5xx or 429 answer) are retried with backoff until [`RETRY_TIMEOUT`] has passed or after
//! [`MAX_RETRIES`] retries, whichever comes first; the attempt under way when the
//! [`RETRY_TIMEOUT`] passes is the last. So an endpoint that accepts connections and never
//! answers fails a request after [`FIRST_BYTE_TIMEOUT`] (15 s); one whose connections
//! cannot be opened after [`CONNECT_TIMEOUT`] (5 s); one that refuses connections after
//! four quick retries (under 2 s). The worst case for a request without a body, failures
//! that each come just in time, is [`RETRY_TIMEOUT`] plus the retries' backoff (at most
//! 1.5 s) plus one last [`FIRST_BYTE_TIMEOUT`]: under 27 s.
//!
//! An endpoint that let a request go unanswered (no head within its deadline, a connection
//! that timed out, a reply that stalled) is not asked again for [`QUIET_PERIOD`]: every
//! request to it in that time fails at once with the same reason, so that a command that
//! makes several requests fails in the time of one, not of each.
//!
//! A listing ([`model_checkpoint::store::Storage::list`]) asks for pages of 1,000 names and
//! stops with an error past [`MAX_LIST_PAGES`] pages or [`MAX_LISTED_OBJECTS`] objects, or
//! when the server hands the same continuation token twice.

use std::time::Duration;

/// Time to open a connection (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time from sending a request (its body included, see [`MIN_BYTES_PER_SECOND`]) to the
/// head of the reply.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest pause between two pieces of a reply's body (or between its head and its first
/// byte).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Time for a whole request without a body and a small reply; larger ones get one second
/// more per [`MIN_BYTES_PER_SECOND`] bytes.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// The slowest transfer a request's deadlines allow for: 64 KiB/s (512 kbit/s) per request.
pub const MIN_BYTES_PER_SECOND: u64 = 64 << 10;

/// How much a ranged read's reply may exceed the range before it is an error.
pub const RANGE_SLACK_BYTES: u64 = 64 << 10;

/// The largest successful reply other than a ranged read: a listing page of 1,000 names of
/// up to 1,024 bytes each, escaped as XML, fits several times over.
pub const MAX_REPLY_BYTES: u64 = 16 << 20;

/// How much of an error reply is read: its S3 error code comes first.
pub const MAX_ERROR_REPLY_BYTES: u64 = 64 << 10;

/// Retries of a transient failure stop once this much time has passed since the first
/// attempt.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Retries of a transient failure stop after this many.
pub const MAX_RETRIES: usize = 4;

/// How long an endpoint that left a request unanswered is not asked again.
pub const QUIET_PERIOD: Duration = Duration::from_secs(30);

/// The most pages one listing reads.
pub const MAX_LIST_PAGES: usize = 1_000;

/// The most objects one listing returns: a sharded checkpoint of 65,536 ranks four times
/// over.
pub const MAX_LISTED_OBJECTS: usize = 1 << 18;

/// The most pages the lock reads when it looks for locks in the folders below its own
/// (10,000 names): a lock below a larger tree may go unseen.
pub const MAX_LOCK_SCAN_PAGES: usize = 10;

/// The time `bytes` (sent or received) add to a request's deadlines: one second per
/// [`MIN_BYTES_PER_SECOND`] (at most 30 days).
pub(crate) fn transfer_time(bytes: u64) -> Duration {
    let millis = bytes.saturating_mul(1000) / MIN_BYTES_PER_SECOND;
    Duration::from_millis(millis.min(30 * 24 * 3600 * 1000))
}
