//! Just enough HTTP/1.1 for the Docker Engine API and a registry's `HEAD` requests: one
//! request per connection (`Connection: close`), responses framed by `Content-Length`,
//! chunked transfer encoding or the end of the connection.
//!
//! A full client would be more code to compile than this is to read; the engine API is
//! reached over a unix socket, which general clients do not speak anyway.

use std::io;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The most a response head (status line and headers) may take.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A byte stream a request can go over: a unix socket, a TCP or TLS stream.
pub(crate) trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// Path and query, already percent-encoded.
    pub target: &'a str,
    pub host: &'a str,
    pub headers: Vec<(&'a str, String)>,
}

#[derive(Debug)]
pub(crate) struct Response<S> {
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
pub(crate) struct Body<S> {
    reader: BufReader<S>,
    framing: Framing,
    /// Bytes read past the last full line by [`Body::next_line`].
    partial_line: Vec<u8>,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Writes `request` (with an empty body) and reads the response head.
pub(crate) async fn send<S: Connection>(
    stream: S,
    request: &Request<'_>,
) -> io::Result<Response<S>> {
    send_with_body(stream, request, None).await
}

/// Writes `request` with `body` (the caller sets its `Content-Type`) and reads the
/// response head.
pub(crate) async fn send_with_body<S: Connection>(
    mut stream: S,
    request: &Request<'_>,
    body: Option<&[u8]>,
) -> io::Result<Response<S>> {
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
pub(crate) async fn read_response<S: AsyncRead + Unpin>(
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
    let read = reader.read_until(b'\n', line).await?;
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

    async fn read_chunk_size(&mut self) -> io::Result<u64> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(unexpected_end());
        }
        let text = String::from_utf8_lossy(&line);
        let size = text.trim().split(';').next().unwrap_or("").trim();
        u64::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size `{}`", text.trim())))
    }

    async fn expect_crlf(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).await?;
        if line == b"\r\n" || line == b"\n" {
            Ok(())
        } else {
            Err(invalid("a chunk did not end with CRLF"))
        }
    }

    async fn skip_trailers(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            if self.reader.read_until(b'\n', &mut line).await? == 0 {
                // Some servers close right after the last chunk; the body is complete.
                return Ok(());
            }
            if line == b"\r\n" || line == b"\n" {
                return Ok(());
            }
        }
    }
}

fn unexpected_end() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection closed in the middle of the response body",
    )
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub(crate) fn encode_query_value(value: &str) -> String {
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
