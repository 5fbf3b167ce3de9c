//! Plain log lines for CloudWatch Logs (which adds the timestamp): the function's own
//! lines and every pipeline event as one JSON object. Nothing logged holds a secret:
//! tugboat never reads secret values, and events are logged by id and kind only.

use pipeline_core::{EventSubscriber, PipelineEvent};
use std::sync::Arc;

/// Installs the subscriber: the level from `RUST_LOG` (`error` … `trace`, default `info`),
/// no colours, no timestamps. Does nothing if one is installed already.
pub fn init() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|text| {
            text.trim()
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .ok()
        })
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(std::io::stdout)
        .try_init();
}

/// Logs each pipeline event as a line: `pipeline {"event":"info","message":"registered cv-matcher:2"}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogEvents;

impl LogEvents {
    pub fn new() -> Arc<Self> {
        Arc::new(Self)
    }
}

impl EventSubscriber for LogEvents {
    fn on_event(&self, event: &PipelineEvent) {
        let line = serde_json::to_string(event).unwrap_or_else(|err| format!("{event:?} ({err})"));
        match event {
            PipelineEvent::Warning { .. } => tracing::warn!("pipeline {line}"),
            _ => tracing::info!("pipeline {line}"),
        }
    }
}
