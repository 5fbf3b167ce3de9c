//! Just enough HTTP/1.1 for the Docker Engine API and a registry's `HEAD` requests: one
//! request per connection (`Connection: close`), responses framed by `Content-Length`,
//! chunked transfer encoding or the end of the connection.
//!
//! A full client would be more code to compile than this is to read; the engine API is
//! reached over a unix socket, which general clients do not speak anyway.
//!
//! Why one file of ~700 lines: the request writer, the response reader and their caps
//! are one protocol, and the checks on what may reach a request line sit next to the
//! writer they guard; a third of it is tests.

use std::io;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The most a response head (status line and headers) may take.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// At most this many header lines in a response head (or trailer lines after a body).
const MAX_HEADERS: usize = 200;
/// A chunk-size line, a chunk's closing CRLF or a trailer line longer than this is refused.
const MAX_CONTROL_LINE: u64 = 8 * 1024;
/// A body line ([`Body::next_line`]) longer than this is refused.
const MAX_BODY_LINE: usize = 1024 * 1024;

/// A byte stream a request can go over: a unix socket, a TCP or TLS stream.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, already percent-encoded.
    pub target: &'a str,
    pub host: &'a str,
    pub headers: Vec<(&'a str, String)>,
}

#[derive(Debug)]
pub struct Response<S> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body<S>,
}

impl<S> Response<S> {
    /// The first header of that name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// How the body's end is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    /// `remaining` bytes of the current chunk are still to come.
    Chunked {
        remaining: u64,
    },
    UntilClose,
    Done,
}

/// A response body, decoded as it is read.
#[derive(Debug)]
pub struct Body<S> {
    reader: BufReader<S>,
    framing: Framing,
    /// Bytes read past the last full line by [`Body::next_line`].
    partial_line: Vec<u8>,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Writes `request` (with an empty body) and reads the response head.
pub async fn send<S: Connection>(stream: S, request: &Request<'_>) -> io::Result<Response<S>> {
    send_with_body(stream, request, None).await
}

/// Writes `request` with `body` (the caller sets its `Content-Type`) and reads the
/// response head.
pub async fn send_with_body<S: Connection>(
    mut stream: S,
    request: &Request<'_>,
    body: Option<&[u8]>,
) -> io::Result<Response<S>> {
    // Nothing is written unless the request line is one request line: a target carrying
    // a line break, a space or a `..` segment (from an image name, say) could smuggle a
    // second request onto the engine's socket or reach another endpoint.
    check_target(request.target)?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: tugboat\r\n",
        request.method, request.target, request.host
    );
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    } else if request.method != "GET" && request.method != "HEAD" {
        head.push_str("Content-Length: 0\r\n");
    }
    for (name, value) in &request.headers {
        if value.contains(['\r', '\n']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("header {name} contains a line break"),
            ));
        }
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if let Some(body) = body {
        stream.write_all(body).await?;
    }
    stream.flush().await?;
    read_response(stream, request.method == "HEAD").await
}

/// Reads a response head from `stream`; the body is left to read.
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: S,
    head_request: bool,
) -> io::Result<Response<S>> {
    let mut reader = BufReader::new(stream);
    let mut head_bytes = 0;
    let mut line = Vec::new();

    let status_line = read_head_line(&mut reader, &mut line, &mut head_bytes).await?;
    let mut parts = status_line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| invalid(format!("bad HTTP status line `{status_line}`")))?,
        _ => return Err(invalid(format!("bad HTTP status line `{status_line}`"))),
    };

    let mut headers = Vec::new();
    loop {
        let header = read_head_line(&mut reader, &mut line, &mut head_bytes).await?;
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad HTTP header line `{header}`")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
        if headers.len() > MAX_HEADERS {
            return Err(invalid(format!("more than {MAX_HEADERS} header lines")));
        }
    }

    let find = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Done
    } else if find("Transfer-Encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"))
    {
        Framing::Chunked { remaining: 0 }
    } else if let Some(length) = find("Content-Length") {
        let length = length
            .parse::<u64>()
            .map_err(|_| invalid(format!("bad Content-Length `{length}`")))?;
        if length == 0 {
            Framing::Done
        } else {
            Framing::Length(length)
        }
    } else {
        Framing::UntilClose
    };

    Ok(Response {
        status,
        headers,
        body: Body {
            reader,
            framing,
            partial_line: Vec::new(),
        },
    })
}

async fn read_head_line<S: AsyncRead + Unpin>(
    reader: &mut BufReader<S>,
    line: &mut Vec<u8>,
    head_bytes: &mut usize,
) -> io::Result<String> {
    line.clear();
    // Never buffer more than the head may be: a line without an end stops here.
    let room = (MAX_HEAD_BYTES + 1).saturating_sub(*head_bytes) as u64;
    let read = tokio::io::AsyncReadExt::take(&mut *reader, room)
        .read_until(b'\n', line)
        .await?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed before the response head was complete",
        ));
    }
    *head_bytes += read;
    if *head_bytes > MAX_HEAD_BYTES {
        return Err(invalid("the response head is too large"));
    }
    let text = String::from_utf8_lossy(line);
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

impl<S: AsyncRead + Unpin> Body<S> {
    /// The next piece of the decoded body, `None` at its end.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::UntilClose => {
                    let piece = self.take_available(u64::MAX).await?;
                    if piece.is_empty() {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    return Ok(Some(piece));
                }
                Framing::Length(remaining) => {
                    let piece = self.take_available(remaining).await?;
                    if piece.is_empty() {
                        return Err(unexpected_end());
                    }
                    let left = remaining - piece.len() as u64;
                    self.framing = if left == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(left)
                    };
                    return Ok(Some(piece));
                }
                Framing::Chunked { remaining: 0 } => {
                    let size = self.read_chunk_size().await?;
                    if size == 0 {
                        self.skip_trailers().await?;
                        self.framing = Framing::Done;
                    } else {
                        self.framing = Framing::Chunked { remaining: size };
                    }
                }
                Framing::Chunked { remaining } => {
                    let piece = self.take_available(remaining).await?;
                    if piece.is_empty() {
                        return Err(unexpected_end());
                    }
                    let left = remaining - piece.len() as u64;
                    if left == 0 {
                        self.expect_crlf().await?;
                    }
                    self.framing = Framing::Chunked { remaining: left };
                    return Ok(Some(piece));
                }
            }
        }
    }

    /// The whole (rest of the) body, at most `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(piece) = self.next_chunk().await? {
            all.extend_from_slice(&piece);
            if all.len() > limit {
                return Err(invalid(format!(
                    "the response body is larger than {limit} bytes"
                )));
            }
        }
        Ok(all)
    }

    /// The next line of the body without its line break; the last line may lack one.
    pub async fn next_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(end) = self.partial_line.iter().position(|&byte| byte == b'\n') {
                let rest = self.partial_line.split_off(end + 1);
                let line = std::mem::replace(&mut self.partial_line, rest);
                let text = String::from_utf8_lossy(&line);
                return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
            }
            if self.partial_line.len() > MAX_BODY_LINE {
                return Err(invalid(format!(
                    "a line of the response body is longer than {MAX_BODY_LINE} bytes"
                )));
            }
            match self.next_chunk().await? {
                Some(piece) => self.partial_line.extend_from_slice(&piece),
                None if self.partial_line.is_empty() => return Ok(None),
                None => {
                    let line = std::mem::take(&mut self.partial_line);
                    return Ok(Some(
                        String::from_utf8_lossy(&line)
                            .trim_end_matches('\r')
                            .to_string(),
                    ));
                }
            }
        }
    }

    /// Whatever is buffered (or arrives next), at most `limit` bytes; empty at EOF.
    async fn take_available(&mut self, limit: u64) -> io::Result<Vec<u8>> {
        let buffered = self.reader.fill_buf().await?;
        let take = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(buffered.len());
        let piece = buffered[..take].to_vec();
        self.reader.consume(take);
        Ok(piece)
    }

    /// One line of chunk framing (a size, a CRLF, a trailer), at most [`MAX_CONTROL_LINE`].
    async fn control_line(&mut self, line: &mut Vec<u8>) -> io::Result<usize> {
        line.clear();
        let read = tokio::io::AsyncReadExt::take(&mut self.reader, MAX_CONTROL_LINE)
            .read_until(b'\n', line)
            .await?;
        if read as u64 == MAX_CONTROL_LINE && line.last() != Some(&b'\n') {
            return Err(invalid("a chunk-size or trailer line is too long"));
        }
        Ok(read)
    }

    async fn read_chunk_size(&mut self) -> io::Result<u64> {
        let mut line = Vec::new();
        if self.control_line(&mut line).await? == 0 {
            return Err(unexpected_end());
        }
        let text = String::from_utf8_lossy(&line);
        let size = text.trim().split(';').next().unwrap_or("").trim();
        u64::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size `{}`", text.trim())))
    }

    async fn expect_crlf(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        self.control_line(&mut line).await?;
        if line == b"\r\n" || line == b"\n" {
            Ok(())
        } else {
            Err(invalid("a chunk did not end with CRLF"))
        }
    }

    async fn skip_trailers(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        for _ in 0..MAX_HEADERS {
            if self.control_line(&mut line).await? == 0 {
                // Some servers close right after the last chunk; the body is complete.
                return Ok(());
            }
            if line == b"\r\n" || line == b"\n" {
                return Ok(());
            }
        }
        Err(invalid(format!("more than {MAX_HEADERS} trailer lines")))
    }
}

fn unexpected_end() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection closed in the middle of the response body",
    )
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
/// A request target is a path (starting with `/`) and an optional query, both without
/// control bytes, spaces, DEL or `#`, and the path without `.` or `..` segments.
pub fn check_target(target: &str) -> io::Result<()> {
    let refuse = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refused to send a request whose target {why}"),
        ))
    };
    if target.bytes().any(|b| b <= 0x20 || b == 0x7f || b == b'#') {
        return refuse("contains a control byte, a space or `#`");
    }
    let (path, _query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return refuse("is not an absolute path");
    }
    if path
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return refuse("has a `.` or `..` segment");
    }
    Ok(())
}

/// Checks a Docker image reference (`[registry[:port]/]name[/name…][:tag][@sha256:…]`, or an
/// image id `sha256:<hex>`) before it goes into an Engine API path: only the characters the
/// distribution grammar allows, no empty or `.`/`..` components, a tag of at most 128.
pub fn check_image_reference(reference: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{reference:?} is not an image reference: {why}"));
    if reference.is_empty() || reference.len() > 512 {
        return bad("empty or longer than 512 characters");
    }
    if let Some(hex) = reference.strip_prefix("sha256:") {
        return if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(())
        } else {
            bad("an image id is sha256: and 64 hex digits")
        };
    }
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@');
    if !reference.bytes().all(allowed) {
        return bad("only letters, digits and . _ - / : @ are allowed");
    }
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("a digest is sha256: and 64 hex digits");
        }
    }
    // A tag follows the last `:` after the last `/` (a `:` before it is a registry port).
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_and_tag[..last_slash + i],
            Some(&name_and_tag[last_slash + i + 1..]),
        ),
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        if tag.is_empty()
            || tag.len() > 128
            || tag.starts_with(['.', '-'])
            || tag.contains(['/', ':'])
        {
            return bad("a tag is 1 to 128 of letters, digits, _ . - (not starting with . or -)");
        }
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with(['.', '-', '_']))
    {
        return bad("empty, `.` or `..` name component");
    }
    Ok(())
}

/// An endpoint that will receive a credential (a registry password, the Slack token) must
/// be `https://`, or plain `http://` (or a bare `host:port`) on this machine's loopback.
pub fn check_credential_endpoint(variable: &str, endpoint: &str) -> Result<(), String> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, endpoint),
    };
    if scheme.as_deref() == Some("https") {
        return Ok(());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme.as_deref() {
        None | Some("http") if loopback => Ok(()),
        None | Some("http") => Err(format!(
            "{variable} points at {authority} over plain http: a credential would travel unencrypted; use https://, or http on 127.0.0.1"
        )),
        Some(other) => Err(format!(
            "{variable} has the scheme {other}://: only https:// (or http on 127.0.0.1) may receive a credential"
        )),
    }
}

pub fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod request_line_tests {
    use super::*;

    async fn response_to(raw: Vec<u8>) -> io::Result<Vec<u8>> {
        let (mut server, client) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut server, &raw).await;
        });
        let mut response = read_response(client, false).await?;
        response.body.read_to_end(1 << 30).await
    }

    #[tokio::test]
    async fn endless_lines_and_too_many_headers_are_refused_without_buffering_them() {
        // A status line with no end, a header flood, a chunk-size line with no end.
        let endless_head = [b"HTTP/1.1 200 OK".to_vec(), vec![b'a'; 200 * 1024]].concat();
        assert!(response_to(endless_head).await.is_err());
        let mut flood = b"HTTP/1.1 200 OK\r\n".to_vec();
        for n in 0..500 {
            flood.extend_from_slice(format!("X-{n}: y\r\n").as_bytes());
        }
        flood.extend_from_slice(b"\r\n");
        assert!(response_to(flood).await.is_err());
        let endless_chunk = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            vec![b'1'; 64 * 1024],
        ]
        .concat();
        assert!(response_to(endless_chunk).await.is_err());
        // A normal chunked body still reads.
        let fine =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec();
        assert_eq!(response_to(fine).await.ok(), Some(b"abc".to_vec()));
    }

    #[tokio::test]
    async fn a_hostile_target_writes_nothing() {
        for target in [
            "/images/x HTTP/1.1\r\nHost: docker\r\n\r\nPOST /containers/create",
            "/images/a b/json",
            "/images/../containers/create",
            "/images/./x",
            "/images/x#frag",
            "images/relative",
            "/images/x\u{7f}",
        ] {
            let (client, mut server) = tokio::io::duplex(4096);
            let request = Request {
                method: "POST",
                target,
                host: "docker",
                headers: Vec::new(),
            };
            let sent = send(client, &request).await;
            assert!(sent.is_err(), "{target:?} was sent");
            let mut written = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut written)
                .await
                .unwrap_or_default();
            assert!(
                written.is_empty(),
                "{target:?}: bytes were written: {written:?}"
            );
        }
    }

    #[test]
    fn credentials_go_to_https_or_this_machine_only() {
        for ok in [
            "https://slack.com/api/",
            "https://registry.example.com:5000",
            "http://127.0.0.1:9/api/",
            "http://localhost:5000",
            "127.0.0.1:5000",
            "http://[::1]:8080/",
        ] {
            assert_eq!(check_credential_endpoint("X", ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://slack.example.com/api/",
            "registry.example.com:5000",
            "http://10.0.0.5:5000",
            "ftp://127.0.0.1/",
        ] {
            assert!(
                check_credential_endpoint("X", bad).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn image_references_follow_the_distribution_grammar() {
        for good in [
            "cv_matcher",
            "cv_matcher:3f2a9c1",
            "library/busybox:1.36",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/cv_matcher:v1.2.0",
            "127.0.0.1:5000/cv_matcher@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_image_reference(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "app\r\nPOST /containers/create",
            "app name",
            "../../containers/create",
            "app/../secret",
            "app?x=1",
            "app#x",
            "app:",
            "app:-tag",
            "app@sha256:abc",
            "sha256:abc",
        ] {
            assert!(check_image_reference(bad).is_err(), "{bad:?} was accepted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &str, head_request: bool) -> Response<&[u8]> {
        match read_response(raw.as_bytes(), head_request).await {
            Ok(response) => response,
            Err(err) => panic!("could not parse the response: {err}"),
        }
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_line_by_line() {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n\
                   5\r\n{\"a\":\r\n4;ext=1\r\n1}\r\n\r\n\
                   7\r\n{\"b\":2}\r\n\
                   1\r\n\n\r\n\
                   0\r\nX-Trailer: yes\r\n\r\n";
        let mut response = parse(raw, false).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        let mut lines = Vec::new();
        while let Ok(Some(line)) = response.body.next_line().await {
            lines.push(line);
        }
        assert_eq!(lines, vec!["{\"a\":1}", "{\"b\":2}"]);
    }

    #[tokio::test]
    async fn content_length_bodies_stop_at_the_length() {
        let raw = "HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhello and more";
        let mut response = parse(raw, false).await;
        assert_eq!(response.status, 404);
        assert_eq!(
            response.body.read_to_end(1024).await.ok(),
            Some(b"hello".to_vec())
        );
    }

    #[tokio::test]
    async fn head_responses_have_no_body_whatever_the_length_says() {
        let raw =
            "HTTP/1.1 200 OK\r\nContent-Length: 735\r\nDocker-Content-Digest: sha256:aa\r\n\r\n";
        let mut response = parse(raw, true).await;
        assert_eq!(response.header("docker-content-digest"), Some("sha256:aa"));
        assert_eq!(response.body.read_to_end(1024).await.ok(), Some(Vec::new()));
    }

    #[tokio::test]
    async fn bodies_without_framing_end_with_the_connection() {
        let raw = "HTTP/1.0 200 OK\r\n\r\nline one\nline two";
        let mut response = parse(raw, false).await;
        assert_eq!(
            response.body.next_line().await.ok().flatten().as_deref(),
            Some("line one")
        );
        assert_eq!(
            response.body.next_line().await.ok().flatten().as_deref(),
            Some("line two")
        );
        assert_eq!(response.body.next_line().await.ok().flatten(), None);
    }

    #[tokio::test]
    async fn truncated_bodies_are_errors() {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nabc";
        let mut response = parse(raw, false).await;
        assert!(response.body.read_to_end(1024).await.is_err());
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        let mut response = parse(raw, false).await;
        assert!(response.body.read_to_end(1024).await.is_err());
    }

    #[tokio::test]
    async fn garbage_is_not_a_response() {
        assert!(read_response(&b"SSH-2.0-OpenSSH\r\n\r\n"[..], false)
            .await
            .is_err());
        assert!(read_response(&b""[..], false).await.is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query_value("127.0.0.1:5000/cv_matcher"),
            "127.0.0.1%3A5000%2Fcv_matcher"
        );
        assert_eq!(encode_query_value("v1.2.0-rc_1~"), "v1.2.0-rc_1~");
    }
}
