//! [`SlackNotifier`]: release messages to a Slack channel through `chat.postMessage`.

use crate::web_client::{self, chain, snippet};
use async_trait::async_trait;
use pipeline_core::config::NotifySettings;
use pipeline_core::{Notification, NotificationKind, Notifier, StageError};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::redirect::Policy;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::Duration;

/// Slack's Web API.
pub const DEFAULT_SLACK_API: &str = "https://slack.com/api";
/// A hung Slack must not hold up a deploy for long.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Slack's limit for a section's text is 3000 characters.
const MAX_REASON_CHARS: usize = 2500;
const REDACTED: &str = "<redacted>";

/// A [`Notifier`] that posts to one Slack channel with a bot token
/// (`chat:write` scope; the bot must be in the channel).
///
/// Each message has a one-line `text` (what Slack shows in notifications) and `blocks`
/// with the app, environment, release id, image digest, duration and, on failure, the
/// reason. A Slack that answers `ok: false`, an HTTP error or nothing within 5 s is an
/// error; the orchestrator turns it into a warning.
///
/// The token goes into the `Authorization` header only: `Debug`, errors and messages
/// never show it.
///
/// ```no_run
/// # use host_adapters::SlackNotifier;
/// # use pipeline_core::NotificationKind;
/// let notifier = SlackNotifier::new("xoxb-…", "C0123456789")
///     .only(vec![NotificationKind::Failed, NotificationKind::RolledBack]);
/// ```
pub struct SlackNotifier {
    token: String,
    channel: String,
    api_base: String,
    only: Vec<NotificationKind>,
    timeout: Duration,
    client: OnceLock<reqwest::Client>,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackNotifier")
            .field("token", &REDACTED)
            .field("channel", &self.channel)
            .field("api_base", &self.api_base)
            .field("only", &self.only)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SlackNotifier {
    pub fn new(token: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            channel: channel.into(),
            api_base: DEFAULT_SLACK_API.to_string(),
            only: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            client: OnceLock::new(),
        }
    }

    /// Another Web API root than `https://slack.com/api` (a proxy, a test server).
    pub fn with_api_base(mut self, api_base: impl Into<String>) -> Self {
        self.api_base = api_base.into().trim_end_matches('/').to_string();
        self
    }

    /// Sends only these kinds of notification; all of them when empty.
    pub fn only(mut self, kinds: Vec<NotificationKind>) -> Self {
        self.only = kinds;
        self
    }

    /// How long one message may take (5 s by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The notifier an environment's `[notify]` table asks for, from the process
    /// environment: the token from `SLACK_BOT_TOKEN`; the channel from `slack_channel`,
    /// else `SLACK_CHANNEL_ID`; the API root from `TUGBOAT_SLACK_API_URL` if set.
    /// `None` when the token or the channel is missing (or blank).
    pub fn from_env(settings: &NotifySettings) -> Option<Self> {
        Self::from_lookup(settings, &|name| std::env::var(name).ok())
    }

    /// [`SlackNotifier::from_env`] with the variables read through `lookup`.
    pub fn from_lookup(
        settings: &NotifySettings,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Self> {
        let set = |value: Option<String>| {
            value
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
        };
        let token = set(lookup("SLACK_BOT_TOKEN"))?;
        let channel =
            set(settings.slack_channel.clone()).or_else(|| set(lookup("SLACK_CHANNEL_ID")))?;
        let mut notifier = Self::new(token, channel).only(settings.on.clone());
        if let Some(api_base) = set(lookup("TUGBOAT_SLACK_API_URL")) {
            // The bot token never goes to an endpoint over plain http off this machine.
            if let Err(why) =
                crate::http::check_credential_endpoint("TUGBOAT_SLACK_API_URL", &api_base)
            {
                tracing::warn!("{why}; not notifying Slack");
                return None;
            }
            notifier = notifier.with_api_base(api_base);
        }
        Some(notifier)
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Whether a notification of this kind is sent.
    pub fn sends(&self, kind: NotificationKind) -> bool {
        self.only.is_empty() || self.only.contains(&kind)
    }

    /// The `chat.postMessage` body for a notification.
    pub fn message(&self, notification: &Notification) -> Value {
        let text = headline(notification);
        let mut fields = vec![
            field("App", &notification.app),
            field("Environment", &notification.environment),
            field("Release", &format!("`{}`", notification.release_id)),
        ];
        if let Some(digest) = &notification.image_digest {
            fields.push(field("Image", &format!("`{digest}`")));
        }
        if let Some(duration) = notification.duration {
            fields.push(field("Duration", &duration_text(duration)));
        }
        let mut blocks = vec![
            json!({"type": "section", "text": {"type": "mrkdwn", "text": escape(&text)}}),
            json!({"type": "section", "fields": fields}),
        ];
        if let Some(reason) = &notification.reason {
            let reason = snippet(reason, MAX_REASON_CHARS).replace("```", "'''");
            blocks.push(json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": format!("*Reason*\n```{}```", escape(&reason))},
            }));
        }
        json!({
            "channel": self.channel,
            "text": text,
            "blocks": blocks,
            "unfurl_links": false,
            "unfurl_media": false,
        })
    }

    fn client(&self) -> Result<reqwest::Client, StageError> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        // chat.postMessage never redirects; following one would carry the token along.
        let client = web_client::build(Policy::none())
            .map_err(|err| self.error(format!("cannot send Slack messages: {err}")))?
            .client;
        let _ = self.client.set(client.clone());
        Ok(client)
    }

    /// A failure to send, with the token scrubbed from whatever the text quotes.
    fn error(&self, message: String) -> StageError {
        StageError::unavailable(self.scrub(&message))
    }

    fn scrub(&self, text: &str) -> String {
        if self.token.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.token, REDACTED)
        }
    }

    async fn post(&self, body: &Value) -> Result<(), StageError> {
        let url = format!("{}/chat.postMessage", self.api_base);
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", self.token)).map_err(|_| {
                self.error("SLACK_BOT_TOKEN is not a valid header value".to_string())
                    .with_help("the token is one line of printable characters (xoxb-…)")
            })?;
        authorization.set_sensitive(true);
        let request = self
            .client()?
            .post(&url)
            .header(AUTHORIZATION, authorization)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body.to_string())
            .timeout(self.timeout);
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let text = response.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        };
        // The request's own timeout covers the body too; this one is the promise that
        // nothing (a stuck DNS lookup, a slow TLS handshake) waits longer.
        let (status, text) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                return Err(self.error(format!(
                    "Slack did not answer chat.postMessage ({url}) within {}s",
                    self.timeout.as_secs_f32()
                )))
            }
            Ok(Err(err)) if err.is_timeout() => {
                return Err(self.error(format!(
                    "Slack did not answer chat.postMessage ({url}) within {}s",
                    self.timeout.as_secs_f32()
                )))
            }
            Ok(Err(err)) => {
                return Err(self.error(format!(
                    "could not send chat.postMessage to {url}: {}",
                    chain(&err)
                )))
            }
            Ok(Ok(answer)) => answer,
        };
        if !status.is_success() {
            return Err(self.error(format!(
                "Slack answered chat.postMessage with HTTP {status}: {}",
                snippet(&text, 200)
            )));
        }
        let answer: Value = serde_json::from_str(&text).map_err(|_| {
            self.error(format!(
                "Slack's answer to chat.postMessage is not JSON: {}",
                snippet(&text, 200)
            ))
        })?;
        if answer.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        let code = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error code");
        let error = self.error(format!(
            "Slack refused chat.postMessage to channel {}: {code}",
            self.channel
        ));
        Err(match help_for(code) {
            Some(help) => error.with_help(help),
            None => error,
        })
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    async fn notify(&self, notification: &Notification) -> Result<(), StageError> {
        if !self.sends(notification.kind) {
            return Ok(());
        }
        self.post(&self.message(notification)).await
    }
}

fn help_for(code: &str) -> Option<&'static str> {
    Some(match code {
        "not_authed" | "invalid_auth" | "account_inactive" | "token_revoked" | "token_expired" => {
            "check SLACK_BOT_TOKEN: it must be a bot token (xoxb-…) of an installed app"
        }
        "missing_scope" => "give the Slack app the chat:write scope and reinstall it",
        "channel_not_found" => {
            "check [notify] slack_channel or SLACK_CHANNEL_ID: use the channel's id (C0123456789)"
        }
        "not_in_channel" => "invite the bot to the channel (/invite @your-bot)",
        "is_archived" => "the channel is archived: unarchive it or pick another",
        "ratelimited" | "rate_limited" => {
            "Slack is rate limiting this app; the next message may go through"
        }
        _ => return None,
    })
}

fn headline(notification: &Notification) -> String {
    let Notification {
        app,
        environment,
        release_id,
        duration,
        reason,
        ..
    } = notification;
    let after = duration
        .map(|d| format!(" after {}", duration_text(d)))
        .unwrap_or_default();
    let because = reason
        .as_deref()
        .map(|r| format!(": {}", snippet(first_line(r), 150)))
        .unwrap_or_default();
    match notification.kind {
        NotificationKind::Started => {
            format!(":rocket: {app}: releasing {release_id} to {environment}")
        }
        NotificationKind::Succeeded => format!(
            ":white_check_mark: {app}: released {release_id} to {environment}{}",
            duration
                .map(|d| format!(" in {}", duration_text(d)))
                .unwrap_or_default()
        ),
        NotificationKind::Failed => {
            format!(":x: {app}: release {release_id} to {environment} failed{after}{because}")
        }
        NotificationKind::RolledBack => format!(
            ":leftwards_arrow_with_hook: {app}: release {release_id} to {environment} was rolled back{after}{because}"
        ),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn field(name: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", escape(value))})
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped, or it reads them as links and mentions.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `45s`, `3m 12s`, `1h 2m`.
fn duration_text(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            vars.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        }
    }

    #[test]
    fn from_env_needs_a_token_and_a_channel() {
        let settings = NotifySettings {
            slack_channel: Some("C1".into()),
            on: vec![NotificationKind::Failed],
        };
        let notifier =
            SlackNotifier::from_lookup(&settings, &lookup(&[("SLACK_BOT_TOKEN", "xoxb-1")]));
        assert_eq!(notifier.as_ref().map(|n| n.channel()), Some("C1"));
        assert_eq!(
            notifier
                .as_ref()
                .map(|n| n.sends(NotificationKind::Started)),
            Some(false)
        );
        assert_eq!(
            notifier.as_ref().map(|n| n.api_base.as_str()),
            Some(DEFAULT_SLACK_API)
        );

        let blank_channel = NotifySettings {
            slack_channel: Some(String::new()),
            on: Vec::new(),
        };
        let notifier = SlackNotifier::from_lookup(
            &blank_channel,
            &lookup(&[
                ("SLACK_BOT_TOKEN", "xoxb-1"),
                ("SLACK_CHANNEL_ID", "C2"),
                ("TUGBOAT_SLACK_API_URL", "http://127.0.0.1:9/api/"),
            ]),
        );
        assert_eq!(notifier.as_ref().map(|n| n.channel()), Some("C2"));
        assert_eq!(
            notifier.as_ref().map(|n| n.api_base.as_str()),
            Some("http://127.0.0.1:9/api")
        );
        assert_eq!(
            notifier
                .as_ref()
                .map(|n| n.sends(NotificationKind::Started)),
            Some(true)
        );

        assert!(
            SlackNotifier::from_lookup(&blank_channel, &lookup(&[("SLACK_BOT_TOKEN", "x")]))
                .is_none()
        );
        assert!(
            SlackNotifier::from_lookup(&settings, &lookup(&[("SLACK_BOT_TOKEN", " ")])).is_none()
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_text(Duration::from_secs(45)), "45s");
        assert_eq!(duration_text(Duration::from_secs(192)), "3m 12s");
        assert_eq!(duration_text(Duration::from_secs(3720)), "1h 2m");
    }

    #[test]
    fn mrkdwn_is_escaped() {
        assert_eq!(escape("a <b> & c"), "a &lt;b&gt; &amp; c");
    }
}
