//! Typed progress events, fanned out to any number of subscribers (a terminal renderer,
//! a JSON line writer, a log, a test recorder).

use crate::model::{Revision, Stage};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// Something that happened during a run. Front ends add their own timestamps.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PipelineEvent {
    /// A run started for a release.
    ReleaseStarted {
        release_id: String,
        app: String,
        environment: String,
    },
    StageStarted {
        stage: Stage,
    },
    StageFinished {
        stage: Stage,
        duration_ms: u64,
        ok: bool,
    },
    /// A line printed by a test command or the image build.
    Output {
        stage: Stage,
        line: String,
    },
    /// A fact worth a line of its own (registered revision, pushed digest).
    Info {
        message: String,
    },
    /// Task counts of the deployment being followed.
    RolloutProgress {
        deployment: String,
        state: String,
        running: u32,
        pending: u32,
        desired: u32,
        failed_tasks: u32,
    },
    /// A new entry in the service's event log.
    ServiceEvent {
        at: DateTime<Utc>,
        message: String,
    },
    Warning {
        message: String,
    },
    RollbackStarted {
        to: Revision,
        reason: String,
    },
    /// A line a one-off task (a `before_deploy` migration, `tugboat run`) logged, as it
    /// comes; secret values already removed.
    TaskOutput {
        /// The one-off task's name (`migrate`).
        task: String,
        line: String,
    },
    /// Where a fleet's service is after its release, or after the fleet rolled it back
    /// (`released`, `rolled back`, `unchanged`, `NOT RESTORED`); sent for that service.
    ServiceFinished {
        state: String,
        detail: String,
    },
}

/// Receives every event of a run, in order.
pub trait EventSubscriber: Send + Sync {
    fn on_event(&self, event: &PipelineEvent);

    /// An event of one service of a fleet release (`web`, `web@eu-west-1`); by default
    /// the same as [`EventSubscriber::on_event`].
    fn on_service_event(&self, service: &str, event: &PipelineEvent) {
        let _ = service;
        self.on_event(event);
    }
}

/// The fan-out point that stages and the orchestrator emit into.
#[derive(Clone, Default)]
pub struct Events {
    subscribers: Vec<Arc<dyn EventSubscriber>>,
    /// The fleet service these events are about ([`Events::for_service`]).
    service: Option<Arc<str>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("subscribers", &self.subscribers.len())
            .field("service", &self.service)
            .finish()
    }
}

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn subscribe(&mut self, subscriber: Arc<dyn EventSubscriber>) {
        self.subscribers.push(subscriber);
    }

    pub fn with(mut self, subscriber: Arc<dyn EventSubscriber>) -> Self {
        self.subscribe(subscriber);
        self
    }

    /// The same subscribers, told that every event is about one service of a fleet.
    pub fn for_service(&self, service: &str) -> Self {
        Self {
            subscribers: self.subscribers.clone(),
            service: Some(Arc::from(service)),
        }
    }

    pub fn emit(&self, event: PipelineEvent) {
        for subscriber in &self.subscribers {
            match &self.service {
                Some(service) => subscriber.on_service_event(service, &event),
                None => subscriber.on_event(&event),
            }
        }
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.emit(PipelineEvent::Warning {
            message: message.into(),
        });
    }

    pub fn info(&self, message: impl Into<String>) {
        self.emit(PipelineEvent::Info {
            message: message.into(),
        });
    }
}

/// A subscriber that keeps every event; for tests and for embedding programs that want
/// the whole stream after the run.
#[derive(Default)]
pub struct RecordedEvents {
    events: Mutex<Vec<PipelineEvent>>,
}

impl RecordedEvents {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn take(&self) -> Vec<PipelineEvent> {
        match self.events.lock() {
            Ok(mut events) => std::mem::take(&mut *events),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

impl EventSubscriber for RecordedEvents {
    fn on_event(&self, event: &PipelineEvent) {
        match self.events.lock() {
            Ok(mut events) => events.push(event.clone()),
            Err(poisoned) => poisoned.into_inner().push(event.clone()),
        }
    }
}
