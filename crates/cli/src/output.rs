//! How a run is shown: live progress on a terminal, timestamped lines in a CI log, or
//! one JSON object per line for scripts. Only this binary decides how to print.

use crate::fleet_table::FleetTable;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use pipeline_core::{EventSubscriber, PipelineEvent};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Live progress on a terminal, plain timestamped lines elsewhere.
    Human,
    /// One JSON event per line, then a final result object.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Prints pipeline events as they happen.
pub struct Reporter {
    format: OutputFormat,
    verbosity: Verbosity,
    live: Option<ProgressBar>,
    /// A fleet's live table, made at the first event of a service (terminal only).
    table: Mutex<Option<FleetTable>>,
    started: Instant,
    lock: Mutex<()>,
}

impl Reporter {
    pub fn new(format: OutputFormat, verbosity: Verbosity) -> Self {
        let terminal = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let live = (format == OutputFormat::Human && terminal && verbosity != Verbosity::Quiet)
            .then(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            });
        Self {
            format,
            verbosity,
            live,
            table: Mutex::new(None),
            started: Instant::now(),
            lock: Mutex::new(()),
        }
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// A line for people (stderr in human mode, nothing in JSON mode).
    pub fn line(&self, text: &str) {
        if self.format == OutputFormat::Json || self.verbosity == Verbosity::Quiet {
            return;
        }
        match &self.live {
            Some(bar) => bar.println(text),
            None => {
                let stamp = Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
                eprintln!("{stamp} {text}");
            }
        }
    }

    /// Prints the last line of a run: JSON result or the human message.
    pub fn finish(&self, json: serde_json::Value, human: &str, failed: bool) {
        if let Some(table) = self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            table.finish();
        }
        if let Some(bar) = &self.live {
            bar.finish_and_clear();
        }
        // A closed pipe (`tugboat history | head`) is not an error worth a panic.
        let _ = match self.format {
            OutputFormat::Json => writeln!(std::io::stdout(), "{json}"),
            OutputFormat::Human if failed => writeln!(std::io::stderr(), "{human}"),
            OutputFormat::Human if self.verbosity != Verbosity::Quiet => {
                writeln!(std::io::stdout(), "{human}")
            }
            OutputFormat::Human => Ok(()),
        };
    }

    fn human(&self, event: &PipelineEvent) -> Option<String> {
        let elapsed = self.started.elapsed().as_secs();
        Some(match event {
            PipelineEvent::ReleaseStarted {
                release_id,
                app,
                environment,
            } => {
                format!("release {release_id} of {app} to {environment}")
            }
            PipelineEvent::StageStarted { stage } => format!("{stage}: started"),
            PipelineEvent::StageFinished {
                stage,
                duration_ms,
                ok,
            } => format!(
                "{stage}: {} in {:.1}s",
                if *ok { "done" } else { "FAILED" },
                *duration_ms as f64 / 1000.0
            ),
            PipelineEvent::Output { stage, line } => {
                if self.verbosity != Verbosity::Verbose {
                    if let Some(bar) = &self.live {
                        bar.set_message(format!("{stage}: {line}"));
                    }
                    return None;
                }
                format!("{stage}| {line}")
            }
            PipelineEvent::Info { message } => message.clone(),
            PipelineEvent::RolloutProgress {
                deployment,
                state,
                running,
                pending,
                desired,
                failed_tasks,
            } => {
                let text = format!(
                    "rollout {deployment}: {state} running {running}/{desired} pending {pending}{} ({elapsed}s)",
                    if *failed_tasks > 0 { format!(" failed {failed_tasks}") } else { String::new() }
                );
                if let Some(bar) = &self.live {
                    bar.set_message(text);
                    return None;
                }
                text
            }
            PipelineEvent::ServiceEvent { at, message } => {
                format!("service event {}: {message}", at.format("%H:%M:%S"))
            }
            PipelineEvent::Warning { message } => format!("warning: {message}"),
            PipelineEvent::RollbackStarted { to, reason } => {
                format!("ROLLING BACK to {to}: {reason}")
            }
            PipelineEvent::TaskOutput { task, line } => format!("{task} | {line}"),
            PipelineEvent::ServiceFinished { state, detail } => format!("{state}: {detail}"),
        })
    }
}

impl EventSubscriber for Reporter {
    fn on_event(&self, event: &PipelineEvent) {
        self.print(None, event);
    }

    /// A fleet's service: its name before each line, a `service` field in JSON.
    fn on_service_event(&self, service: &str, event: &PipelineEvent) {
        self.print(Some(service), event);
    }
}

impl Reporter {
    fn print(&self, service: Option<&str>, event: &PipelineEvent) {
        let _guard = self.lock.lock();
        match self.format {
            OutputFormat::Json => {
                let mut value = serde_json::to_value(event).unwrap_or_default();
                if let Some(object) = value.as_object_mut() {
                    object.insert("ts".into(), Utc::now().to_rfc3339().into());
                    if let Some(service) = service {
                        object.insert("service".into(), service.into());
                    }
                }
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{value}");
            }
            OutputFormat::Human => {
                let quiet_skip = self.verbosity == Verbosity::Quiet
                    && !matches!(
                        event,
                        PipelineEvent::Warning { .. } | PipelineEvent::RollbackStarted { .. }
                    );
                if quiet_skip {
                    return;
                }
                if let (Some(service), Some(bar)) = (service, &self.live) {
                    self.draw_in_table(bar, service, event);
                    return;
                }
                let text = self.human(event).map(|text| match service {
                    Some(service) => format!("[{service}] {text}"),
                    None => text,
                });
                if let Some(text) = text {
                    let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
                    match (&self.live, table.as_ref()) {
                        (Some(_), Some(table)) => table.println(&text),
                        (Some(bar), None) => bar.println(text),
                        (None, _) => {
                            let stamp = Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
                            eprintln!("{stamp} {text}");
                        }
                    }
                }
            }
        }
    }

    /// A fleet's service event on a terminal: its line of the table is redrawn; what
    /// people must not miss (warnings, rollbacks, one-off task output, the service's
    /// end; everything with --verbose) is printed above the table too.
    fn draw_in_table(&self, bar: &ProgressBar, service: &str, event: &PipelineEvent) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let table = table.get_or_insert_with(|| FleetTable::new(bar));
        table.update(service, event);
        let above = self.verbosity == Verbosity::Verbose
            || matches!(
                event,
                PipelineEvent::Warning { .. }
                    | PipelineEvent::RollbackStarted { .. }
                    | PipelineEvent::TaskOutput { .. }
                    | PipelineEvent::ServiceFinished { .. }
            );
        if above {
            if let Some(text) = self.human(event) {
                table.println(&format!("[{service}] {text}"));
            }
        }
    }
}
