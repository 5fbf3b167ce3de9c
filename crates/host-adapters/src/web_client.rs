//! The HTTP client of the adapters that talk to web services (the health check, Slack):
//! reqwest with rustls on the ring provider (never aws-lc), trusting the system's
//! roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).
//!
//! The TLS configuration is handed to reqwest ready-made, so that nothing depends on a
//! process-wide default crypto provider being installed.

use reqwest::redirect::Policy;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// How long connecting (TCP and TLS) may take, whatever the request's own limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for HTTP and HTTPS with the system's trusted roots.
///
/// `roots_missing` is true when no trusted root was found: HTTPS then fails, and errors
/// should say to install `ca-certificates`.
pub(crate) struct WebClient {
    pub client: reqwest::Client,
    pub roots_missing: bool,
}

pub(crate) fn build(redirects: Policy) -> Result<WebClient, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("could not set up TLS: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(redirects)
        .user_agent(concat!("tugboat/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| format!("could not set up the HTTP client: {}", chain(&err)))?;
    Ok(WebClient {
        client,
        roots_missing: added == 0,
    })
}

/// An error and its causes, `a: b: c`, without the repetitions reqwest's and hyper's
/// layers add (`error sending request for url (…)` around `connection refused`).
pub(crate) fn chain(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        // hyper-util's `client error (Connect)` says less than the cause under it.
        let noise = text.is_empty() || text.starts_with("client error (");
        if !noise && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    if parts.is_empty() {
        // reqwest's own message names the kind of failure (and the URL).
        return error.to_string();
    }
    parts.join(": ")
}

/// At most `max` characters of `text`, with `…` when something was cut.
pub(crate) fn snippet(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_cut_on_character_boundaries() {
        assert_eq!(snippet("  ok \n", 200), "ok");
        assert_eq!(snippet("ééééé", 3), "ééé…");
        assert_eq!(snippet("abc", 3), "abc");
    }

    #[test]
    fn the_client_builds_without_a_default_crypto_provider() {
        assert!(build(Policy::none()).is_ok());
    }
}
