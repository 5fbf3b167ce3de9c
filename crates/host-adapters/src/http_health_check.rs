//! [`HttpHealthCheck`]: a release is healthy when its health URL answers the expected
//! status (and body) within the verification window.

use crate::web_client::{self, chain, snippet, WebClient};
use async_trait::async_trait;
use pipeline_core::config::VerifySettings;
use pipeline_core::{Events, StageError, Verifier, VerifyContext};
use reqwest::redirect::Policy;
use reqwest::Url;
use std::time::{Duration, Instant};

/// Redirects followed before giving up, as `curl -L --max-redirs 5`.
const MAX_REDIRECTS: usize = 5;
/// The first pause between attempts; it doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The time limit of one attempt (connect, headers and body), within the window.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No attempt is started with less time than this left in the window.
const MIN_ATTEMPT: Duration = Duration::from_millis(250);
/// How much of a body is read; enough for any health page.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How much of a body an error shows.
const BODY_SNIPPET_CHARS: usize = 200;
/// A warning every this many failed attempts, so a long wait is visible but not noisy.
const WARN_EVERY: u32 = 3;

/// What [`HttpHealthCheck`] checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// The full URL to `GET` (the release's URL and its health path).
    pub url: String,
    pub expected_status: u16,
    /// Text the body must contain; any body passes when `None`.
    pub body_contains: Option<String>,
    /// How long to keep trying before the release counts as unhealthy.
    pub window: Duration,
}

/// A [`Verifier`] (`http`) that `GET`s a health URL until it answers as expected or the
/// window closes. Redirects are followed (up to 5, to `http` and `https` only); each
/// attempt has its own time limit; attempts are spaced by an exponential backoff
/// (0.5 s doubling to 5 s). HTTPS uses rustls with the system's roots.
///
/// ```no_run
/// # use host_adapters::{HttpCheck, HttpHealthCheck};
/// # use std::time::Duration;
/// let check = HttpHealthCheck::new(HttpCheck {
///     url: "https://cv-matcher.example.com/health".into(),
///     expected_status: 200,
///     body_contains: Some("ok".into()),
///     window: Duration::from_secs(120),
/// });
/// ```
#[derive(Clone, Debug)]
pub struct HttpHealthCheck {
    check: HttpCheck,
    request_timeout: Duration,
}

/// Why one attempt did not pass.
#[derive(Clone, Debug)]
enum Miss {
    Status {
        status: u16,
        body: String,
    },
    BodyMismatch {
        body: String,
    },
    /// No answer: connection refused, timed out, a TLS or redirect error.
    NoAnswer(String),
}

impl HttpHealthCheck {
    pub fn new(check: HttpCheck) -> Self {
        Self {
            check,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The check an environment's `[verify]` table asks for; `None` without a `url`.
    pub fn from_settings(settings: &VerifySettings) -> Option<Self> {
        let base = settings.url.as_deref().map(str::trim)?;
        if base.is_empty() {
            return None;
        }
        let path = settings.health_path.trim();
        let url = if path.is_empty() {
            base.to_string()
        } else {
            format!(
                "{}/{}",
                base.trim_end_matches('/'),
                path.trim_start_matches('/')
            )
        };
        Some(Self::new(HttpCheck {
            url,
            expected_status: settings.expected_status,
            body_contains: settings.body_contains.clone().filter(|b| !b.is_empty()),
            window: Duration::from_secs(settings.timeout_seconds),
        }))
    }

    /// The time limit of each attempt (10 s by default); never more than what is left
    /// of the window.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn check(&self) -> &HttpCheck {
        &self.check
    }

    fn expectation(&self) -> String {
        match &self.check.body_contains {
            Some(text) => format!("{} with {text:?} in the body", self.check.expected_status),
            None => self.check.expected_status.to_string(),
        }
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        url: &Url,
        timeout: Duration,
    ) -> Option<Miss> {
        let exchange = async {
            let mut response = client.get(url.clone()).send().await?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(piece) = response.chunk().await? {
                body.extend_from_slice(&piece);
                if body.len() >= MAX_BODY_BYTES {
                    body.truncate(MAX_BODY_BYTES);
                    break;
                }
            }
            Ok::<_, reqwest::Error>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        let (status, body) = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                return Some(Miss::NoAnswer(format!(
                    "no answer within {}",
                    seconds(timeout)
                )))
            }
            Ok(Err(err)) => return Some(Miss::NoAnswer(chain(&err))),
            Ok(Ok(answer)) => answer,
        };
        if status != self.check.expected_status {
            return Some(Miss::Status { status, body });
        }
        match &self.check.body_contains {
            Some(text) if !body.contains(text.as_str()) => Some(Miss::BodyMismatch { body }),
            _ => None,
        }
    }

    fn describe(&self, miss: &Miss) -> String {
        match miss {
            Miss::Status { status, body } => {
                format!("answered {}{}", status_text(*status), body_part(body))
            }
            Miss::BodyMismatch { body } => format!(
                "answered {} but the body does not contain {:?}{}",
                status_text(self.check.expected_status),
                self.check.body_contains.as_deref().unwrap_or_default(),
                body_part(body)
            ),
            Miss::NoAnswer(error) => error.clone(),
        }
    }
}

#[async_trait]
impl Verifier for HttpHealthCheck {
    fn name(&self) -> String {
        "http".to_string()
    }

    async fn verify(&self, _context: &VerifyContext, events: &Events) -> Result<(), StageError> {
        let shown = &self.check.url;
        let url = Url::parse(shown).map_err(|err| {
            StageError::bad_input(format!(
                "the health check URL {shown:?} is not a URL: {err}"
            ))
            .with_help("set [verify] url to something like https://app.example.com")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(StageError::bad_input(format!(
                "the health check URL {shown} is not http or https"
            )));
        }
        let WebClient {
            client,
            roots_missing,
        } = web_client::build(redirect_policy())
            .map_err(|err| StageError::unavailable(format!("cannot check {shown}: {err}")))?;

        let window = self.check.window;
        events.info(format!(
            "checking {shown}, expects {} (for up to {})",
            self.expectation(),
            seconds(window)
        ));
        let started = Instant::now();
        let deadline = started + window;
        let mut backoff = INITIAL_BACKOFF;
        let mut attempts: u32 = 0;
        let miss = loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = self.request_timeout.min(left.max(MIN_ATTEMPT));
            let Some(miss) = self.attempt(&client, &url, timeout).await else {
                if attempts > 1 {
                    events.info(format!(
                        "{shown} answered {} after {attempts} attempts",
                        self.check.expected_status
                    ));
                }
                return Ok(());
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_ATTEMPT + Duration::from_millis(50) {
                break miss;
            }
            if attempts % WARN_EVERY == 0 {
                events.warn(format!(
                    "{shown}: attempt {attempts} {}; trying for another {}",
                    self.describe(&miss),
                    seconds(left)
                ));
            }
            tokio::time::sleep(backoff.min(left - MIN_ATTEMPT)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };

        let tried = started.elapsed();
        let attempts_text = if attempts == 1 {
            "1 attempt".to_string()
        } else {
            format!("{attempts} attempts")
        };
        let mut error = StageError::failed(format!(
            "GET {shown} did not answer {} within the {} window ({attempts_text} over {}); last: {}",
            self.expectation(),
            seconds(window),
            seconds(tried),
            self.describe(&miss)
        ));
        error = match &miss {
            Miss::NoAnswer(_) if roots_missing && url.scheme() == "https" => error.with_help(
                "no trusted root certificates were found: install ca-certificates, or set SSL_CERT_FILE to a CA bundle",
            ),
            Miss::NoAnswer(_) => error.with_help(
                "check that the service is reachable from here at that URL (load balancer, security group, DNS), or raise [verify] timeout_seconds",
            ),
            _ => error.with_help(
                "check the service's logs, or [verify] health_path, expected_status and body_contains",
            ),
        };
        Err(error)
    }
}

fn redirect_policy() -> Policy {
    Policy::custom(|attempt| {
        let scheme = attempt.url().scheme().to_string();
        if scheme != "http" && scheme != "https" {
            let to = attempt.url().to_string();
            attempt.error(format!("redirected to {to}, which is not http or https"))
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

fn body_part(body: &str) -> String {
    let body = snippet(body, BODY_SNIPPET_CHARS);
    if body.is_empty() {
        " with an empty body".to_string()
    } else {
        format!(", body: {body:?}")
    }
}

/// `500ms`, `2s`, `1.5s`, `2m 5s`.
fn seconds(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 950 {
        format!("{millis}ms")
    } else if millis < 59_950 {
        let text = format!("{:.1}", duration.as_secs_f64());
        format!("{}s", text.trim_end_matches(".0"))
    } else {
        let secs = (millis + 500) / 1000;
        if secs % 60 == 0 {
            format!("{}m", secs / 60)
        } else {
            format!("{}m {}s", secs / 60, secs % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_give_the_full_url_and_window() {
        let settings = VerifySettings {
            url: Some("https://app.example.com/".into()),
            health_path: "health".into(),
            body_contains: Some("ok".into()),
            timeout_seconds: 30,
            ..VerifySettings::default()
        };
        let check = HttpHealthCheck::from_settings(&settings).map(|c| c.check().clone());
        assert_eq!(
            check,
            Some(HttpCheck {
                url: "https://app.example.com/health".into(),
                expected_status: 200,
                body_contains: Some("ok".into()),
                window: Duration::from_secs(30),
            })
        );
        assert!(HttpHealthCheck::from_settings(&VerifySettings::default()).is_none());
        let blank = VerifySettings {
            url: Some("  ".into()),
            ..VerifySettings::default()
        };
        assert!(HttpHealthCheck::from_settings(&blank).is_none());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(seconds(Duration::from_millis(250)), "250ms");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
        assert_eq!(seconds(Duration::from_secs(2)), "2s");
        assert_eq!(seconds(Duration::from_millis(999)), "1s");
        assert_eq!(seconds(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(seconds(Duration::from_secs(120)), "2m");
        assert_eq!(seconds(Duration::from_secs(125)), "2m 5s");
    }
}
