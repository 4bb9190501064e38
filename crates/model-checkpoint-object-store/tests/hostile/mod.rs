//! A hostile "S3 endpoint" for tests: a TCP server on 127.0.0.1 (std::net, a thread per
//! connection) that answers every request as the test says: never, with a body that never
//! ends, with an error whose body never ends, or with a listing whose pages never end.
//! It counts the requests it read, and stops when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request's head, as read.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.target.contains("list-type=2")
    }
}

/// How to answer a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Never: the connection stays open and silent.
    Silent,
    /// This status, and a chunked body that never ends.
    Endless(u16),
    /// 206 for the request's range of an object of `size` bytes, with the range's length
    /// announced and a chunked body that never ends.
    EndlessRange { size: u64 },
    /// 206 for the request's range, announcing `length` bytes (and sending none).
    Announce { length: u64 },
    /// A listing page of `keys` names with a continuation token: there is always a next.
    Page { keys: usize },
    /// This status, no body.
    Empty(u16),
    /// What S3 answers a HEAD of an object of `size` bytes.
    Head { size: u64 },
    /// 206 for the request's range, then one byte every `every` (and silence once the
    /// range is sent).
    Drip { every: Duration },
    /// 206 with one byte of the range asked for, announced as such (`Content-Range` of that
    /// byte), of an object of `size` bytes that begins as a safetensors file whose header is
    /// `header` bytes long.
    OneByte { size: u64, header: u64 },
    /// 206 whose `Content-Range` ends at byte 2^64-1, of an object of that many bytes.
    RangeToTheEnd,
    /// A last listing page naming one object: `key`.
    Listing { key: &'static str },
    /// What is not an HTTP reply.
    Garbage,
}

pub struct Hostile {
    pub port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Hostile {
    /// Starts a server answering each request with `reply(request)`.
    pub fn start(reply: fn(&Request) -> Reply) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        {
            let (requests, stop, held) = (requests.clone(), stop.clone(), held.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, stop, held) = (requests.clone(), stop.clone(), held.clone());
                    std::thread::spawn(move || serve(stream, reply, &requests, &stop, &held));
                }
            });
        }
        Hostile {
            port,
            requests,
            stop,
            held,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The settings a client needs to talk to it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "x".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "y".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for stream in self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wakes the accepting thread, which then ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    stream: TcpStream,
    reply: fn(&Request) -> Reply,
    requests: &AtomicUsize,
    stop: &AtomicBool,
    held: &Mutex<Vec<TcpStream>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::SeqCst) {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        requests.fetch_add(1, Ordering::SeqCst);
        let answered = match reply(&request) {
            Reply::Silent => {
                // Kept open, and never answered.
                if let Ok(clone) = writer.try_clone() {
                    held.lock().unwrap_or_else(|e| e.into_inner()).push(clone);
                }
                return;
            }
            Reply::Endless(status) => endless(&mut writer, status, &[], stop),
            Reply::EndlessRange { size } => {
                let (start, end) = range(&request).unwrap_or((0, size.saturating_sub(1)));
                // object_store wants a length; the body is chunked, which overrides it.
                let headers = [
                    format!("Content-Length: {}", end - start + 1),
                    format!("Content-Range: bytes {start}-{end}/{size}"),
                    "ETag: \"hostile\"".to_owned(),
                    "Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT".to_owned(),
                ];
                endless(&mut writer, 206, &headers, stop)
            }
            Reply::Announce { length } => {
                let (start, _) = range(&request).unwrap_or((0, 0));
                let end = start + length - 1;
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {length}\r\nContent-Range: bytes {start}-{end}/{}\r\nETag: \"hostile\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n",
                    end + 1
                );
                writer.write_all(head.as_bytes()).is_ok() && writer.write_all(&[0u8; 1024]).is_ok()
            }
            Reply::Page { keys } => {
                let n = requests.load(Ordering::SeqCst);
                let mut page = String::from(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>bucket</Name>",
                );
                for k in 0..keys {
                    page.push_str(&format!(
                        "<Contents><Key>x/page{n}-{k}.safetensors</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>\"e\"</ETag><Size>100</Size></Contents>"
                    ));
                }
                page.push_str(&format!(
                    "<IsTruncated>true</IsTruncated><NextContinuationToken>token-{n}</NextContinuationToken></ListBucketResult>"
                ));
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{page}",
                    page.len()
                );
                writer.write_all(reply.as_bytes()).is_ok()
            }
            Reply::Head { size } => writer
                .write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nETag: \"hostile\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n").as_bytes(),
                )
                .is_ok(),
            Reply::OneByte { size, header } => {
                let (start, _) = range(&request).unwrap_or((0, 0));
                let byte = match start {
                    0..=7 => header.to_le_bytes()[start as usize],
                    8 => b'{',
                    _ => b' ',
                };
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: 1\r\nContent-Range: bytes {start}-{start}/{size}\r\nETag: \"hostile\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n"
                );
                writer.write_all(head.as_bytes()).is_ok() && writer.write_all(&[byte]).is_ok()
            }
            Reply::Drip { every } => {
                let (start, end) = range(&request).unwrap_or((0, 0));
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\nETag: \"hostile\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n",
                    end - start + 1,
                    end + 1
                );
                let mut ok = writer.write_all(head.as_bytes()).is_ok();
                for _ in start..=end {
                    if !ok || stop.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(every);
                    ok = writer.write_all(b"x").is_ok();
                }
                // Then silent, with the connection open.
                if let Ok(clone) = writer.try_clone() {
                    held.lock().unwrap_or_else(|e| e.into_inner()).push(clone);
                }
                return;
            }
            Reply::RangeToTheEnd => {
                let max = u64::MAX;
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: 8\r\nContent-Range: bytes 0-{max}/{max}\r\nETag: \"hostile\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n"
                );
                writer.write_all(head.as_bytes()).is_ok() && writer.write_all(&[0u8; 8]).is_ok()
            }
            Reply::Listing { key } => {
                let page = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>bucket</Name><Contents><Key>{key}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>\"e\"</ETag><Size>100</Size></Contents><IsTruncated>false</IsTruncated></ListBucketResult>"
                );
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{page}",
                    page.len()
                );
                writer.write_all(reply.as_bytes()).is_ok()
            }
            Reply::Garbage => {
                let _ = writer.write_all(b"NOT HTTP AT ALL\r\n\r\n");
                return;
            }
            Reply::Empty(status) => writer
                .write_all(
                    format!("HTTP/1.1 {status} Status\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                )
                .is_ok(),
        };
        if !answered {
            return;
        }
    }
}

/// Writes `status` with `headers` and a chunked body of 64 KiB chunks until the client goes.
fn endless(writer: &mut TcpStream, status: u16, headers: &[String], stop: &AtomicBool) -> bool {
    let mut head = format!(
        "HTTP/1.1 {status} Whatever\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n"
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    if writer.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let chunk = {
        let body = b"<Error><Code>InternalError</Code><Message>".repeat(1524);
        let mut chunk = format!("{:x}\r\n", body.len()).into_bytes();
        chunk.extend_from_slice(&body);
        chunk.extend_from_slice(b"\r\n");
        chunk
    };
    while !stop.load(Ordering::SeqCst) {
        if writer.write_all(&chunk).is_err() {
            return false;
        }
    }
    false
}

/// `bytes=A-B` of a request.
fn range(request: &Request) -> Option<(u64, u64)> {
    let spec = request.header("range")?.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Reads one request's head and skips its body (by Content-Length).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let request = Request {
        method,
        target,
        headers,
    };
    let length: u64 = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::io::copy(&mut reader.take(length), &mut std::io::sink()).ok()?;
    Some(request)
}
