//! The live table of a fleet release on a terminal: one line per service (its stage,
//! running/desired tasks, elapsed time and outcome), redrawn as the service's events
//! come. Warnings, rollbacks and each service's end are still printed above it.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pipeline_core::PipelineEvent;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One service's line.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub stage: String,
    pub running: u32,
    pub desired: u32,
    pub started: Instant,
    /// Set when the service's release ended.
    pub finished: Option<Duration>,
    pub outcome: Option<String>,
}

impl Row {
    pub fn new(now: Instant) -> Self {
        Self {
            stage: "waiting".into(),
            running: 0,
            desired: 0,
            started: now,
            finished: None,
            outcome: None,
        }
    }

    /// Takes in one of the service's events; `true` when the line changed.
    pub fn apply(&mut self, event: &PipelineEvent, now: Instant) -> bool {
        match event {
            PipelineEvent::StageStarted { stage } => self.stage = stage.to_string(),
            PipelineEvent::StageFinished {
                stage, ok: false, ..
            } => self.stage = format!("{stage} FAILED"),
            PipelineEvent::RolloutProgress {
                running, desired, ..
            } => {
                self.running = *running;
                self.desired = *desired;
            }
            PipelineEvent::RollbackStarted { .. } => self.stage = "rolling back".into(),
            PipelineEvent::ServiceFinished { state, .. } => {
                self.outcome = Some(state.clone());
                self.finished = Some(now.saturating_duration_since(self.started));
            }
            _ => return false,
        }
        true
    }

    /// The line: `web@us-east-1   verify        2/2    41s  released`.
    pub fn render(&self, label: &str, width: usize, now: Instant) -> String {
        let elapsed = self
            .finished
            .unwrap_or_else(|| now.saturating_duration_since(self.started))
            .as_secs();
        let tasks = if self.desired > 0 {
            format!("{}/{}", self.running, self.desired)
        } else {
            "-".into()
        };
        format!(
            "{label:<width$}  {:<14}  {tasks:>7}  {:>5}  {}",
            self.stage,
            format!("{elapsed}s"),
            self.outcome.as_deref().unwrap_or("")
        )
    }
}

/// The table: a line per service, in the order they started.
pub struct FleetTable {
    multi: MultiProgress,
    rows: BTreeMap<String, (Row, ProgressBar)>,
    width: usize,
}

impl FleetTable {
    /// A table drawn on stderr above `spinner` (the run's own line).
    pub fn new(spinner: &ProgressBar) -> Self {
        let multi = MultiProgress::new();
        multi.add(spinner.clone());
        Self {
            multi,
            rows: BTreeMap::new(),
            width: 12,
        }
    }

    /// A line printed above the table.
    pub fn println(&self, text: &str) {
        let _ = self.multi.println(text);
    }

    /// Takes in an event of `service`, adding its line at its first event.
    pub fn update(&mut self, service: &str, event: &PipelineEvent) {
        let now = Instant::now();
        if !self.rows.contains_key(service) {
            self.width = self.width.max(service.len());
            let bar = self.multi.insert_from_back(1, ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_secs(1));
            self.rows.insert(service.to_string(), (Row::new(now), bar));
        }
        let width = self.width;
        let Some((row, bar)) = self.rows.get_mut(service) else {
            return;
        };
        row.apply(event, now);
        bar.set_message(row.render(service, width, now));
        if row.finished.is_some() {
            bar.disable_steady_tick();
        }
    }

    /// Leaves the finished lines on the screen.
    pub fn finish(&self) {
        for (row, bar) in self.rows.values() {
            if row.finished.is_none() {
                bar.abandon();
            } else {
                bar.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::Stage;

    #[test]
    fn a_row_follows_its_service() {
        let start = Instant::now();
        let mut row = Row::new(start);
        assert!(row
            .render("web", 12, start)
            .starts_with("web           waiting"));
        assert!(row.apply(
            &PipelineEvent::StageStarted {
                stage: Stage::Deploy
            },
            start
        ));
        let progress = PipelineEvent::RolloutProgress {
            deployment: "ecs-svc/1".into(),
            state: "IN_PROGRESS".into(),
            running: 1,
            pending: 1,
            desired: 2,
            failed_tasks: 0,
        };
        assert!(row.apply(&progress, start));
        assert!(!row.apply(
            &PipelineEvent::Info {
                message: "registered".into()
            },
            start
        ));
        let later = start + Duration::from_secs(41);
        assert_eq!(
            row.render("web@us-east-1", 13, later),
            "web@us-east-1  deploy              1/2    41s  "
        );
        row.apply(
            &PipelineEvent::ServiceFinished {
                state: "rolled back".into(),
                detail: "rolled back with the fleet".into(),
            },
            later,
        );
        // The elapsed time stops at the end.
        assert_eq!(
            row.render("web@us-east-1", 13, later + Duration::from_secs(30)),
            "web@us-east-1  deploy              1/2    41s  rolled back"
        );
    }
}
