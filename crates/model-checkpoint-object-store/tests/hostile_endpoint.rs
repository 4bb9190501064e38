//! The S3 backend against endpoints that misbehave (a TCP server on 127.0.0.1 in the test,
//! see `hostile/`): one that accepts and never answers, bodies that never end (a success, a
//! ranged read, an error), a reply announcing more than was asked, a listing whose pages
//! never end or that names objects outside the folder, a range no reply can end at, what is
//! not HTTP. Each gives an error naming the endpoint, in a known time (the deadlines here
//! only prove that nothing hangs) and within the reply's bound.

mod hostile;

use model_checkpoint::store::Name;
use std::time::{Duration, Instant};

use hostile::{Hostile, Reply};
use model_checkpoint::store::{CheckpointFile, Storage, Verify};
use model_checkpoint::Error;
use model_checkpoint_object_store::{limits, ObjectStorage};

fn storage(server: &Hostile) -> ObjectStorage {
    let env = server.env();
    let settings: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ObjectStorage::from_env_with("s3://bucket", &settings).expect("storage")
}

/// Runs `f` on a thread and fails the test if it has not returned within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}: it hangs"))
}

/// Opens `s3://bucket/x/w.safetensors`'s header at `server`, within a deadline.
fn open_header(server: &Hostile) -> Result<usize, Error> {
    let s = storage(server);
    within(Duration::from_secs(60), move || {
        CheckpointFile::open_in(
            &s,
            &Name::from("s3://bucket/x/w.safetensors"),
            Verify::HeaderOnly,
        )
        .map(|f| f.tensors().count())
    })
}

fn one_line(e: &Error) -> String {
    let text = e.to_string();
    assert!(!text.contains('\n'), "more than one line: {text}");
    text
}

#[test]
fn a_silent_endpoint_fails_within_the_deadline() {
    let server = Hostile::start(|_| Reply::Silent);
    let s = storage(&server);
    let started = Instant::now();
    let listed = within(Duration::from_secs(60), {
        let s = s.clone();
        move || s.list(&Name::from("s3://bucket/x"), 0)
    });
    let err = listed.expect_err("a silent endpoint lists nothing");
    let text = one_line(&err);
    assert!(
        text.contains(&format!(
            "the endpoint {} sent no answer within 15 s",
            server.endpoint()
        )),
        "{text}"
    );
    assert!(text.contains("check AWS_ENDPOINT_URL"), "{text}");
    // It waited for the first byte, once: no retry of a request that timed out past the
    // retry timeout.
    assert!(started.elapsed() >= limits::FIRST_BYTE_TIMEOUT, "{text}");
    assert_eq!(server.requests(), 1);

    // Asked again at once, it is not asked: the same reason, without a request.
    let again = within(Duration::from_secs(60), {
        let s = s.clone();
        move || s.exists(&Name::from("s3://bucket/x/w.safetensors"))
    });
    let text = one_line(&again.expect_err("still silent"));
    assert!(
        text.contains("sent no answer within 15 s to the request just before this one"),
        "{text}"
    );
    assert_eq!(server.requests(), 1, "the quiet endpoint was asked again");
}

#[test]
fn a_silent_endpoint_fails_a_save_within_the_deadline() {
    let server = Hostile::start(|_| Reply::Silent);
    let s = storage(&server);
    // Taking the lock is a conditional PUT with a body: its first byte's deadline grows by
    // the body's size only.
    let locked = within(Duration::from_secs(60), move || {
        s.lock(&Name::from("s3://bucket/run"))
            .map(|guard| guard.is_some())
    });
    let text = one_line(&locked.expect_err("no lock from a silent endpoint"));
    assert!(text.contains("sent no answer within 15"), "{text}");
}

#[test]
fn an_endless_body_is_an_error_not_an_abort() {
    // Every reply an endless body: a listing page has its bound.
    let server = Hostile::start(|r| match r.method.as_str() {
        "HEAD" => Reply::Empty(404),
        _ => Reply::Endless(200),
    });
    let s = storage(&server);
    let listed = within(Duration::from_secs(120), move || {
        s.list(&Name::from("s3://bucket/x"), 0)
    });
    let text = one_line(&listed.expect_err("an endless listing page"));
    assert!(
        text.contains(&format!(
            "the endpoint {} sent more than {} bytes for a listing page or other reply",
            server.endpoint(),
            limits::MAX_REPLY_BYTES
        )),
        "{text}"
    );
}

#[test]
fn an_endless_ranged_read_is_cut_at_its_range() {
    let server = Hostile::start(|r| match r.method.as_str() {
        "HEAD" => Reply::Empty(404),
        _ => Reply::EndlessRange { size: 1 << 40 },
    });
    let s = storage(&server);
    let opened = within(Duration::from_secs(120), move || {
        s.open(&Name::from("s3://bucket/x/w.safetensors"))
            .map(|r| r.len())
    });
    let text = one_line(&opened.expect_err("an endless ranged read"));
    // The opening read asks for 256 KiB.
    assert!(
        text.contains(&format!(
            "the endpoint {} sent more than {} bytes for a read of {} bytes",
            server.endpoint(),
            256 << 10,
            256 << 10
        )),
        "{text}"
    );
}

#[test]
fn the_head_of_a_large_object_is_not_a_large_reply() {
    let server = Hostile::start(|r| match r.method.as_str() {
        "HEAD" => Reply::Head { size: 1 << 40 },
        _ => Reply::Empty(404),
    });
    let s = storage(&server);
    let exists = within(Duration::from_secs(60), move || {
        s.exists(&Name::from("s3://bucket/x/w.safetensors"))
    });
    assert!(exists.expect("a HEAD of a 1 TiB object"));
}

#[test]
fn a_reply_announcing_more_than_was_asked_is_refused_before_its_body() {
    let server = Hostile::start(|r| match r.method.as_str() {
        "HEAD" => Reply::Empty(404),
        _ => Reply::Announce { length: 1 << 50 },
    });
    let s = storage(&server);
    let opened = within(Duration::from_secs(120), move || {
        s.open(&Name::from("s3://bucket/x/w.safetensors"))
            .map(|r| r.len())
    });
    let text = one_line(&opened.expect_err("a reply larger than its range"));
    assert!(
        text.contains(&format!("announced a reply of {} bytes", 1u64 << 50)),
        "{text}"
    );
}

#[test]
fn an_error_with_an_endless_body_is_cut_and_reported() {
    for status in [500, 503, 404, 403, 400] {
        let server = Hostile::start(match status {
            500 => |_: &hostile::Request| Reply::Endless(500),
            503 => |_: &hostile::Request| Reply::Endless(503),
            404 => |_: &hostile::Request| Reply::Endless(404),
            403 => |_: &hostile::Request| Reply::Endless(403),
            _ => |_: &hostile::Request| Reply::Endless(400),
        });
        let s = storage(&server);
        let listed = within(Duration::from_secs(120), move || {
            s.list(&Name::from("s3://bucket/x"), 0)
        });
        let text = one_line(&listed.expect_err("an error"));
        assert!(text.len() < 600, "{status}: {text}");
        match status {
            403 => assert!(text.contains("access denied"), "{text}"),
            404 => assert!(
                text.contains(&format!(
                    "the endpoint {} answered 404 Not Found",
                    server.endpoint()
                )),
                "{text}"
            ),
            _ => assert!(
                text.contains(&format!(
                    "the endpoint {} answered {status}",
                    server.endpoint()
                )),
                "{text}"
            ),
        }
    }
}

#[test]
fn an_endless_listing_is_an_error() {
    // Pages of one name each: the page bound.
    let server = Hostile::start(|r| {
        if r.is_list() {
            Reply::Page { keys: 1 }
        } else {
            Reply::Empty(404)
        }
    });
    let s = storage(&server);
    let listed = within(Duration::from_secs(300), {
        let s = s.clone();
        move || s.list(&Name::from("s3://bucket/x"), 0)
    });
    let text = one_line(&listed.expect_err("a listing without end"));
    assert!(
        text.contains(&format!(
            "the listing goes on past {} pages",
            limits::MAX_LIST_PAGES
        )),
        "{text}"
    );
    assert!(text.contains(&server.endpoint()), "{text}");
    assert_eq!(server.requests(), limits::MAX_LIST_PAGES);

    // Full pages: the object bound comes first.
    let full = Hostile::start(|r| {
        if r.is_list() {
            Reply::Page { keys: 1000 }
        } else {
            Reply::Empty(404)
        }
    });
    let s = storage(&full);
    let listed = within(Duration::from_secs(300), move || {
        s.list(&Name::from("s3://bucket/x"), 0)
    });
    let text = one_line(&listed.expect_err("a listing without end"));
    assert!(
        text.contains(&format!("more than {} objects", limits::MAX_LISTED_OBJECTS)),
        "{text}"
    );
}

#[test]
fn a_reply_that_stops_midway_fails_within_the_deadline() {
    // The head, then nothing.
    let server = Hostile::start(|r| match r.method.as_str() {
        "HEAD" => Reply::Empty(404),
        _ => Reply::Drip {
            every: Duration::from_secs(3600),
        },
    });
    let s = storage(&server);
    let opened = within(Duration::from_secs(60), move || {
        s.open(&Name::from("s3://bucket/x/w.safetensors"))
            .map(|r| r.len())
    });
    let text = one_line(&opened.expect_err("a reply that stops"));
    assert!(
        text.contains(&format!(
            "the endpoint {} stopped sending its reply for 15 s",
            server.endpoint()
        )),
        "{text}"
    );
}

#[test]
fn a_reply_that_trickles_fails_at_the_request_deadline() {
    // One byte every 10 s never pauses for 15 s, but a read of 4 KiB (a lock) may take
    // only the request's deadline.
    let server = Hostile::start(|r| match r.method.as_str() {
        "HEAD" => Reply::Empty(404),
        _ => Reply::Drip {
            every: Duration::from_secs(10),
        },
    });
    let s = storage(&server);
    let broken = within(Duration::from_secs(150), move || {
        s.break_lock("s3://bucket/x")
    });
    let text = one_line(&broken.expect_err("a reply that trickles"));
    assert!(
        text.contains(&format!(
            "the endpoint {} did not finish its reply within 60.1 s",
            server.endpoint()
        )),
        "{text}"
    );
    // And it is not asked again for a while: each later request would take as long.
    let s = storage(&server);
    let asked = server.requests();
    let again = within(Duration::from_secs(5), move || {
        s.break_lock("s3://bucket/y")
    });
    let text = one_line(&again.expect_err("not asked again"));
    assert!(text.contains("is not asked again"), "{text}");
    assert_eq!(server.requests(), asked);
}

#[test]
fn a_content_range_ending_past_what_a_range_can_is_refused_by_name() {
    // object_store adds one to the range's last byte unchecked: u64::MAX overflowed there
    // (a panic where overflow is checked, as in this test's build).
    let server = Hostile::start(|r| match r.method.as_str() {
        "HEAD" => Reply::Head { size: 64 << 20 },
        _ => Reply::RangeToTheEnd,
    });
    let opened = open_header(&server);
    let text = one_line(&opened.expect_err("a range to 2^64-1"));
    assert!(
        text.contains(&server.endpoint())
            && text.contains("Content-Range header this client cannot use"),
        "{text}"
    );
}

#[test]
fn a_listing_that_names_objects_outside_the_folder_is_refused() {
    // A server that ignores the prefix asked for: its objects are never the folder's.
    let server = Hostile::start(|_| Reply::Listing {
        key: "other/w.03.safetensors",
    });
    let s = storage(&server);
    let listed = within(Duration::from_secs(60), move || {
        s.list(&Name::from("s3://bucket/run"), 0)
    });
    let text = one_line(&listed.expect_err("a foreign object"));
    assert!(
        text.contains("the server listed \"other/w.03.safetensors\", which is not in it"),
        "{text}"
    );
    // The folder's own objects are listed.
    let server = Hostile::start(|_| Reply::Listing {
        key: "run/w.03.safetensors",
    });
    let s = storage(&server);
    let listed = within(Duration::from_secs(60), move || {
        s.list(&Name::from("s3://bucket/run"), 0)
    });
    let names: Vec<String> = listed
        .expect("listed")
        .into_iter()
        .map(|m| m.name.as_str().to_owned())
        .collect();
    assert_eq!(names, ["s3://bucket/run/w.03.safetensors"]);
}

#[test]
fn a_reply_of_fewer_bytes_than_its_range_is_refused_not_asked_again_byte_by_byte() {
    // Each GET is answered with one byte of the range asked for, of an object whose header
    // claims 10 MB: taken byte by byte, the header alone would be ten million requests.
    let server = Hostile::start(|r| match r.method.as_str() {
        "HEAD" => Reply::Head { size: 64 << 20 },
        _ => Reply::OneByte {
            size: 64 << 20,
            header: 10_000_000,
        },
    });
    let opened = open_header(&server);
    // object_store refuses a range other than the one asked for.
    let text = one_line(&opened.expect_err("a short reply"));
    assert!(
        text.contains(&server.endpoint()) && text.contains("got 0..1"),
        "{text}"
    );
    assert!(server.requests() < 100, "{} requests", server.requests());
}

#[test]
fn a_reply_that_is_not_http_is_not_blamed_on_an_earlier_answer_that_was_an_answer() {
    // A HEAD's 404 says the object is absent: it is not the error status a retried request
    // met the rest of, which the message names for a 500.
    let server = Hostile::start(|r| match r.method.as_str() {
        "HEAD" => Reply::Empty(404),
        _ => Reply::Garbage,
    });
    let s = storage(&server);
    let name = Name::from("s3://bucket/x/w.safetensors");
    let opened = within(Duration::from_secs(60), move || {
        assert!(!s.exists(&name).expect("a 404 is an answer"));
        CheckpointFile::open_in(&s, &name, Verify::HeaderOnly).map(|f| f.tensors().count())
    });
    let text = one_line(&opened.expect_err("not HTTP"));
    assert!(
        text.contains("sent what this client cannot read as an HTTP reply")
            && !text.contains("404"),
        "{text}"
    );
}

#[test]
fn a_server_that_refuses_every_create_of_what_is_not_there_is_not_taken_for_a_lock() {
    // 412 to each conditional create, 404 to each look: no lock is held by anyone.
    let server = Hostile::start(|r| match r.method.as_str() {
        "PUT" => Reply::Empty(412),
        _ => Reply::Empty(404),
    });
    let s = storage(&server);
    let locked = within(Duration::from_secs(60), move || {
        s.lock(&Name::from("s3://bucket/run")).map(|_| ())
    });
    let text = one_line(&locked.expect_err("refused"));
    assert!(
        text.contains("refused to create it four times") && !text.contains("locked"),
        "{text}"
    );
}
