#![allow(dead_code)] // each test or bench uses its own part
//! A Lambda Runtime API served on 127.0.0.1, enough to run the real `bootstrap`:
//! `GET /2018-06-01/runtime/invocation/next` hands out queued events (and holds the
//! request while there is none, as Lambda does), `POST …/invocation/{id}/response`,
//! `…/{id}/error` and `…/init/error` are recorded. It notes when the first `next`
//! arrived: the end of the function's cold start.

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

/// What the function sent back for an invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Response,
    Error,
    InitError,
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub request_id: String,
    pub kind: ReplyKind,
    pub body: Value,
}

struct Shared {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    replies: mpsc::UnboundedSender<Reply>,
    first_next: Mutex<Option<Instant>>,
    next_arrived: Notify,
}

pub struct FakeRuntimeApi {
    /// What `AWS_LAMBDA_RUNTIME_API` is set to.
    pub address: SocketAddr,
    events: mpsc::UnboundedSender<(String, Value)>,
    replies: tokio::sync::Mutex<mpsc::UnboundedReceiver<Reply>>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeRuntimeApi {
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (events, queued) = mpsc::unbounded_channel();
        let (replies_tx, replies) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: tokio::sync::Mutex::new(queued),
            replies: replies_tx,
            first_next: Mutex::new(None),
            next_arrived: Notify::new(),
        });
        let serving = shared.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, serving.clone()));
            }
        });
        Ok(Self {
            address,
            events,
            replies: tokio::sync::Mutex::new(replies),
            shared,
            server,
        })
    }

    /// Queues an invocation.
    pub fn invoke(&self, request_id: &str, payload: Value) {
        let _ = self.events.send((request_id.to_string(), payload));
    }

    /// The next reply the function sent, waiting at most `limit`.
    pub async fn reply(&self, limit: Duration) -> Option<Reply> {
        let mut replies = self.replies.lock().await;
        tokio::time::timeout(limit, replies.recv())
            .await
            .ok()
            .flatten()
    }

    /// When the first `next` request arrived, waiting at most `limit` for it.
    pub async fn first_next(&self, limit: Duration) -> Option<Instant> {
        let wait = async {
            loop {
                let notified = self.shared.next_arrived.notified();
                if let Some(at) = *self
                    .shared
                    .first_next
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                {
                    return at;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.ok()
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Serves one keep-alive connection.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffer).await {
        let (status, headers, body) = answer(&request, &shared).await;
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(&body).await.is_err()
        {
            return;
        }
    }
}

async fn answer(
    request: &Request,
    shared: &Shared,
) -> (&'static str, Vec<(String, String)>, Vec<u8>) {
    const PREFIX: &str = "/2018-06-01/runtime/";
    let Some(route) = request.path.strip_prefix(PREFIX) else {
        return ("404 Not Found", Vec::new(), b"{}".to_vec());
    };
    if request.method == "GET" && route == "invocation/next" {
        {
            let mut first = shared.first_next.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(Instant::now());
            }
        }
        shared.next_arrived.notify_waiters();
        // Held until an event is queued, like Lambda's long poll.
        let next = shared.events.lock().await.recv().await;
        let Some((request_id, payload)) = next else {
            std::future::pending::<()>().await;
            return ("500 Internal Server Error", Vec::new(), Vec::new());
        };
        let deadline = SystemTime::now()
            .checked_add(Duration::from_secs(900))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let headers = vec![
            ("Lambda-Runtime-Aws-Request-Id".to_string(), request_id),
            (
                "Lambda-Runtime-Deadline-Ms".to_string(),
                deadline.to_string(),
            ),
            (
                "Lambda-Runtime-Invoked-Function-Arn".to_string(),
                "arn:aws:lambda:us-east-1:123456789012:function:tugboat".to_string(),
            ),
            (
                "Lambda-Runtime-Trace-Id".to_string(),
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                    .to_string(),
            ),
        ];
        return ("200 OK", headers, payload.to_string().into_bytes());
    }
    if request.method == "POST" {
        let kind = if route == "init/error" {
            Some((String::new(), ReplyKind::InitError))
        } else {
            route
                .strip_prefix("invocation/")
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(id, what)| match what {
                    "response" => Some((id.to_string(), ReplyKind::Response)),
                    "error" => Some((id.to_string(), ReplyKind::Error)),
                    _ => None,
                })
        };
        if let Some((request_id, kind)) = kind {
            let body = serde_json::from_slice(&request.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&request.body).into_owned())
            });
            let _ = shared.replies.send(Reply {
                request_id,
                kind,
                body,
            });
            return ("202 Accepted", Vec::new(), br#"{"status":"OK"}"#.to_vec());
        }
    }
    ("404 Not Found", Vec::new(), b"{}".to_vec())
}

/// Reads one request (head and `Content-Length` body); `None` when the peer closed.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while buffer.len() < body_start + length {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = buffer[body_start..body_start + length].to_vec();
    buffer.drain(..body_start + length);
    Some(Request { method, path, body })
}
