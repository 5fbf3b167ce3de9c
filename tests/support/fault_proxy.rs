//! A fault-injecting HTTP proxy between the SDK clients and moto: with a fixed seed it
//! answers a share of the requests with throttling or a 500, resets the connection before
//! forwarding, or forwards the request and then loses the answer (the call was applied,
//! the client never hears of it). What it injected is counted per kind.
//!
//! ```ignore
//! let proxy = FaultProxy::start(&moto.endpoint, FaultConfig::new(42, 0.10)).await?;
//! // point the SDK at proxy.endpoint ...
//! proxy.script("RegisterTaskDefinition", FaultKind::AnswerLost, 1); // the next one, always
//! println!("{}", proxy.counts());
//! ```
//!
//! HTTP/1.1 only, one request at a time per client connection (as the SDK sends them),
//! keep-alive towards the client, one fresh connection to moto per request. Bodies may
//! come with `Content-Length` or chunked; they are forwarded decoded with a
//! `Content-Length`, which changes nothing a server looks at (S3's `aws-chunked` content
//! encoding is part of the body and passes untouched).

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Longest request or response head line, and most header lines, the proxy accepts.
const MAX_LINE: usize = 64 * 1024;
const MAX_HEADERS: usize = 200;

/// What the proxy does instead of forwarding a request and its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Not forwarded; answered 400 `ThrottlingException` (JSON, CBOR), 400 `Throttling`
    /// (query) or 503 `SlowDown` (S3), as each protocol has it.
    Throttle,
    /// Not forwarded; answered 500 `InternalFailure` (`InternalError` for S3 and query).
    InternalError,
    /// Not forwarded; the connection is closed without an answer.
    ResetBeforeForward,
    /// Forwarded and answered by moto; the answer is read in full and the connection is
    /// closed without sending it.
    AnswerLost,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Throttle,
        FaultKind::InternalError,
        FaultKind::ResetBeforeForward,
        FaultKind::AnswerLost,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Throttle => "throttle",
            FaultKind::InternalError => "internal-error",
            FaultKind::ResetBeforeForward => "reset-before-forward",
            FaultKind::AnswerLost => "applied-then-answer-lost",
        }
    }
}

/// How often and what the proxy injects.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// Seeds the proxy's own generator: the n-th request seen gets the n-th draw.
    pub seed: u64,
    /// The share of requests that get a fault (0.0 to 1.0), drawn per request.
    pub rate: f64,
    /// The kinds drawn from, with equal odds.
    pub kinds: Vec<FaultKind>,
    /// Requests whose path starts with one of these are always forwarded untouched.
    pub excluded_paths: Vec<String>,
}

impl FaultConfig {
    /// Every kind at `rate`, moto's own APIs (`/tugboat-moto/`, `/moto-api/`) excluded.
    pub fn new(seed: u64, rate: f64) -> Self {
        Self {
            seed,
            rate,
            kinds: FaultKind::ALL.to_vec(),
            excluded_paths: vec!["/tugboat-moto/".into(), "/moto-api/".into()],
        }
    }
}

/// What the proxy saw and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Requests received (faulted or not).
    pub requests: usize,
    /// Requests received while faults were on and not excluded.
    pub eligible: usize,
    /// Faults injected, per kind.
    pub injected: BTreeMap<FaultKind, usize>,
    /// Faults injected per kind and operation (`ecs.RegisterTaskDefinition`, `s3.PUT`).
    pub by_operation: BTreeMap<(FaultKind, String), usize>,
}

impl FaultCounts {
    pub fn of(&self, kind: FaultKind) -> usize {
        self.injected.get(&kind).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.injected.values().sum()
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  requests {} ({} eligible for faults), faults {}",
            self.requests,
            self.eligible,
            self.total()
        )?;
        for kind in FaultKind::ALL {
            writeln!(f, "  {:<26} {:>4}", kind.name(), self.of(kind))?;
        }
        for ((kind, operation), n) in &self.by_operation {
            writeln!(f, "    {:<26} {operation:<42} {n:>3}", kind.name())?;
        }
        Ok(())
    }
}

/// A fault that is injected the next `remaining` times an operation is seen, whatever
/// the draw says (and whether or not random faults are on).
#[derive(Debug)]
struct Scripted {
    operation: String,
    kind: FaultKind,
    remaining: usize,
}

#[derive(Debug)]
struct State {
    upstream: String,
    config: FaultConfig,
    enabled: AtomicBool,
    rng: Mutex<SplitMix64>,
    counts: Mutex<FaultCounts>,
    scripted: Mutex<Vec<Scripted>>,
}

impl State {
    /// The fault for one request, if any (and counts it).
    fn decide(&self, path: &str, operation: &str) -> Option<FaultKind> {
        let mut counts = lock(&self.counts);
        counts.requests += 1;
        if self
            .config
            .excluded_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
        {
            return None;
        }
        let scripted = {
            let mut scripted = lock(&self.scripted);
            let found = scripted
                .iter_mut()
                .find(|s| s.remaining > 0 && operation.ends_with(s.operation.as_str()));
            found.map(|s| {
                s.remaining -= 1;
                s.kind
            })
        };
        let kind = match scripted {
            Some(kind) => Some(kind),
            None if self.enabled.load(Ordering::SeqCst) && !self.config.kinds.is_empty() => {
                counts.eligible += 1;
                let mut rng = lock(&self.rng);
                let hit = rng.next_f64() < self.config.rate;
                let pick = rng.next_u64();
                hit.then(|| {
                    let index = usize::try_from(pick % self.config.kinds.len() as u64).unwrap_or(0);
                    self.config.kinds[index]
                })
            }
            None => None,
        }?;
        *counts.injected.entry(kind).or_default() += 1;
        *counts
            .by_operation
            .entry((kind, operation.to_string()))
            .or_default() += 1;
        Some(kind)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    state: Arc<State>,
    accept_loop: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`
    /// (`http://127.0.0.1:PORT`). Random faults start switched off: see
    /// [`FaultProxy::set_faults`].
    pub async fn start(upstream: &str, config: FaultConfig) -> anyhow::Result<Self> {
        let authority = upstream
            .strip_prefix("http://")
            .with_context(|| format!("upstream {upstream} is not http://"))?
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fault proxy")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State {
            upstream: authority,
            rng: Mutex::new(SplitMix64(config.seed)),
            config,
            enabled: AtomicBool::new(false),
            counts: Mutex::default(),
            scripted: Mutex::default(),
        });
        let shared = state.clone();
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    // A connection ends on the client's close, a fault or a broken
                    // exchange; the client sees that as what it is.
                    let _ = serve(stream, &state).await;
                });
            }
        });
        Ok(Self {
            endpoint,
            state,
            accept_loop,
        })
    }

    /// Switches random faults on or off (setup and assertions run with them off).
    pub fn set_faults(&self, on: bool) {
        self.state.enabled.store(on, Ordering::SeqCst);
    }

    /// Injects `kind` the next `times` requests whose operation ends with `operation`
    /// (`RegisterTaskDefinition`, `ecs.UpdateService`, `s3.PUT`).
    pub fn script(&self, operation: &str, kind: FaultKind, times: usize) {
        lock(&self.state.scripted).push(Scripted {
            operation: operation.to_string(),
            kind,
            remaining: times,
        });
    }

    /// What was seen and injected so far.
    pub fn counts(&self) -> FaultCounts {
        lock(&self.state.counts).clone()
    }
}

/// The generator of the draws: splitmix64, small and the same on every platform.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        // 53 random bits in [0, 1).
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One HTTP message head: the start line and the header lines in order.
#[derive(Debug)]
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> anyhow::Result<Option<usize>> {
        self.header("content-length")
            .map(|v| v.trim().parse().context("a bad Content-Length"))
            .transpose()
    }

    /// The head without the framing headers, to be sent with new ones.
    fn without_framing(&self) -> String {
        let mut text = format!("{}\r\n", self.start);
        for (name, value) in &self.headers {
            if [
                "connection",
                "content-length",
                "transfer-encoding",
                "expect",
                "keep-alive",
            ]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
            {
                continue;
            }
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text
    }
}

/// Reads a head; `None` on a clean end of the stream before one.
async fn read_head<R: AsyncBufRead + Unpin>(reader: &mut R) -> anyhow::Result<Option<Head>> {
    let mut start = String::new();
    loop {
        start.clear();
        if read_line(reader, &mut start).await? == 0 {
            return Ok(None);
        }
        // Tolerate stray empty lines between messages.
        if !start.trim().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if read_line(reader, &mut line).await? == 0 {
            bail!("the stream ended inside a head");
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            bail!("more than {MAX_HEADERS} header lines");
        }
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("a header line without a colon: {line:?}"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Some(Head {
        start: start.trim_end_matches(['\r', '\n']).to_string(),
        headers,
    }))
}

async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
) -> anyhow::Result<usize> {
    let mut bytes = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut bytes)
        .await?;
    line.push_str(&String::from_utf8_lossy(&bytes));
    Ok(n)
}

/// A body framed by `head`: chunked (decoded, trailers dropped), `Content-Length`, or,
/// for a response without either, everything up to the end of the stream.
async fn read_body<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    head: &Head,
    until_eof: bool,
) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.is_chunked() {
        loop {
            let mut line = String::new();
            if read_line(reader, &mut line).await? == 0 {
                bail!("the stream ended inside a chunked body");
            }
            let size = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size.trim(), 16)
                .with_context(|| format!("a bad chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    let mut trailer = String::new();
                    if read_line(reader, &mut trailer).await? == 0 || trailer.trim().is_empty() {
                        break;
                    }
                }
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).await?;
        }
    }
    match head.content_length()? {
        Some(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body).await?;
        }
        None if until_eof => {
            reader.read_to_end(&mut body).await?;
        }
        None => {}
    }
    Ok(body)
}

/// `ecs.RegisterTaskDefinition` (from `X-Amz-Target`), `monitoring.DescribeAlarms`
/// (Smithy RPC v2 CBOR path), `sts.GetCallerIdentity` (query `Action`, when in the URL)
/// or `s3.PUT` (anything else: S3's REST calls by method).
fn operation_of(head: &Head, method: &str, path: &str) -> String {
    if let Some(target) = head.header("x-amz-target") {
        let service = head
            .header("authorization")
            .and_then(|a| a.split('/').nth(3))
            .unwrap_or("json");
        let operation = target.rsplit('.').next().unwrap_or(target);
        return format!("{service}.{operation}");
    }
    if let Some((_, operation)) = path.split_once("/operation/") {
        return format!("cbor.{}", operation.split('?').next().unwrap_or(operation));
    }
    if head
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return "query.POST".to_string();
    }
    format!("s3.{method}")
}

enum Protocol {
    Json,
    Cbor,
    Query,
    RestXml,
}

fn protocol_of(head: &Head, path: &str) -> Protocol {
    if head.header("x-amz-target").is_some() {
        Protocol::Json
    } else if head
        .header("smithy-protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("rpc-v2-cbor"))
        || path.contains("/operation/")
    {
        Protocol::Cbor
    } else if head
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        Protocol::Query
    } else {
        Protocol::RestXml
    }
}

/// A CBOR text string (major type 3).
fn cbor_text(out: &mut Vec<u8>, text: &str) {
    let len = text.len();
    if len < 24 {
        out.push(0x60 | len as u8);
    } else if len < 256 {
        out.extend([0x78, len as u8]);
    } else {
        out.push(0x79);
        out.extend((len as u16).to_be_bytes());
    }
    out.extend(text.as_bytes());
}

/// The error answer a service of `protocol` gives for `kind` (throttle or 500).
fn error_response(protocol: &Protocol, kind: FaultKind) -> Vec<u8> {
    let throttle = kind == FaultKind::Throttle;
    let (status, content_type, extra, body): (&str, &str, &str, Vec<u8>) = match protocol {
        Protocol::Json => {
            let (status, code) = if throttle {
                ("400 Bad Request", "ThrottlingException")
            } else {
                ("500 Internal Server Error", "InternalFailure")
            };
            let body = serde_json::json!({"__type": code, "message": message(kind)}).to_string();
            (status, "application/x-amz-json-1.1", "", body.into_bytes())
        }
        Protocol::Cbor => {
            let (status, code) = if throttle {
                ("400 Bad Request", "ThrottlingException")
            } else {
                ("500 Internal Server Error", "InternalFailure")
            };
            let mut body = vec![0xA2];
            cbor_text(&mut body, "__type");
            cbor_text(&mut body, code);
            cbor_text(&mut body, "message");
            cbor_text(&mut body, message(kind));
            (
                status,
                "application/cbor",
                "smithy-protocol: rpc-v2-cbor\r\n",
                body,
            )
        }
        Protocol::Query => {
            let (status, code, party) = if throttle {
                ("400 Bad Request", "Throttling", "Sender")
            } else {
                ("500 Internal Server Error", "InternalError", "Receiver")
            };
            let body = format!(
                "<ErrorResponse><Error><Type>{party}</Type><Code>{code}</Code>\
                 <Message>{}</Message></Error><RequestId>tugboat-fault-proxy</RequestId>\
                 </ErrorResponse>",
                message(kind)
            );
            (status, "text/xml", "", body.into_bytes())
        }
        Protocol::RestXml => {
            let (status, code) = if throttle {
                ("503 Slow Down", "SlowDown")
            } else {
                ("500 Internal Server Error", "InternalError")
            };
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>{}</Message><RequestId>tugboat-fault-proxy</RequestId></Error>",
                message(kind)
            );
            (status, "application/xml", "", body.into_bytes())
        }
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}\
         x-amzn-RequestId: tugboat-fault-proxy\r\nContent-Length: {}\r\n\
         Connection: keep-alive\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend(body);
    response
}

fn message(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Throttle => "Rate exceeded",
        _ => "We encountered an internal error. Please try again.",
    }
}

/// Serves one client connection, a request at a time.
async fn serve(stream: TcpStream, state: &State) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    while let Some(head) = read_head(&mut reader).await? {
        let mut parts = head.start.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        if head
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body = read_body(&mut reader, &head, false).await?;
        let operation = operation_of(&head, &method, &path);
        let fault = state.decide(&path, &operation);
        match fault {
            Some(kind @ (FaultKind::Throttle | FaultKind::InternalError)) => {
                write
                    .write_all(&error_response(&protocol_of(&head, &path), kind))
                    .await?;
                continue;
            }
            // Dropping both halves closes the connection without an answer.
            Some(FaultKind::ResetBeforeForward) => return Ok(()),
            Some(FaultKind::AnswerLost) | None => {}
        }
        let answer = forward(state, &head, &method, &body).await;
        if fault == Some(FaultKind::AnswerLost) {
            return Ok(());
        }
        match answer {
            Ok(answer) => write.write_all(&answer).await?,
            Err(err) => {
                let text = format!("fault proxy: moto did not answer: {err:#}");
                let response = format!(
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                write.write_all(response.as_bytes()).await?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Sends one request to moto over a fresh connection and returns the answer, reframed
/// with a `Content-Length` for a keep-alive client connection.
async fn forward(state: &State, head: &Head, method: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let upstream = TcpStream::connect(&state.upstream)
        .await
        .with_context(|| format!("connecting to {}", state.upstream))?;
    let (read, mut write) = upstream.into_split();
    let mut request = head.without_framing();
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    write.write_all(request.as_bytes()).await?;
    write.write_all(body).await?;
    write.flush().await?;
    let mut reader = BufReader::new(read);
    let response = loop {
        let response = read_head(&mut reader)
            .await?
            .context("moto closed the connection without an answer")?;
        // Interim answers (100 Continue) are not passed on.
        if !response
            .start
            .split(' ')
            .nth(1)
            .is_some_and(|s| s.starts_with('1'))
        {
            break response;
        }
    };
    let status = response.start.split(' ').nth(1).unwrap_or_default();
    let bodiless = method.eq_ignore_ascii_case("HEAD") || status == "204" || status == "304";
    // The client connection is HTTP/1.1 and kept alive, whatever moto answered with.
    let mut answer = response.without_framing();
    if let Some((_, rest)) = answer.split_once(' ') {
        answer = format!("HTTP/1.1 {rest}");
    }
    if bodiless {
        if let Some(length) = response.header("content-length") {
            answer.push_str(&format!("Content-Length: {length}\r\n"));
        }
        answer.push_str("Connection: keep-alive\r\n\r\n");
        return Ok(answer.into_bytes());
    }
    let body = read_body(&mut reader, &response, true).await?;
    answer.push_str(&format!(
        "Content-Length: {}\r\nConnection: keep-alive\r\n\r\n",
        body.len()
    ));
    let mut answer = answer.into_bytes();
    answer.extend(body);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draws_are_fixed_by_the_seed() {
        let draws = |seed| {
            let mut rng = SplitMix64(seed);
            (0..5).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn a_json_throttle_is_what_ecs_answers() {
        let text = String::from_utf8(error_response(&Protocol::Json, FaultKind::Throttle))
            .unwrap_or_default();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/x-amz-json-1.1\r\n"));
        assert!(text.ends_with(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#));
    }
}
