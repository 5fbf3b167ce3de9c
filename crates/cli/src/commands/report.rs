//! `tugboat report`: the delivery report (DORA metrics, release timeline) from the deploy
//! records of one app, in the terminal, as JSON, and as a self-contained HTML page.

use super::report_html;
use crate::output::Reporter;
use crate::{wiring, Exit, Global};
use chrono::{DateTime, NaiveDate, Utc};
use pipeline_core::report::{Band, DeliveryReport, ReleaseRow, ReportRequest, RunKind};
use pipeline_core::{Project, RecordOutcome};
use std::path::PathBuf;

pub const EXAMPLES: &str = "Without --env the report covers every environment of tugboat.toml.

Examples:
  tugboat report --env production                    # the last 30 days
  tugboat report --env production --since 2026-10-01
  tugboat report --since 12w --output json           # every environment, 12 weeks
  tugboat report --env production --html report.html # a page to share or print";

/// `tugboat report`'s own flags (`--env` and `--output` are the global ones).
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// The window: `30d`, `12w`, `48h` back from now, or from a date (`2026-10-01`, UTC) or
    /// an RFC 3339 time.
    #[arg(long, default_value = "30d", value_name = "30d|DATE")]
    pub since: String,
    /// Also write the report as one self-contained HTML page (no script, no network).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Releases in the terminal's table.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
}

/// The window's start from `--since`, or the message of exit 2.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let help = "help: pass a span back from now (30d, 12w, 48h) or a date (2026-10-01) or time (2026-10-01T09:00:00Z)";
    let bad = |why: &str| format!("--since {text:?}: {why}\n  {help}");
    const UNITS: [(char, i64); 3] = [('h', 3600), ('d', 86_400), ('w', 7 * 86_400)];
    if let Some(span) = super::since::span_back(text, now, &UNITS, &bad) {
        return span;
    }
    let at = if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0).map(|t| t.and_utc())
    } else {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let at = at.ok_or_else(|| bad("not a span (30d) nor a date (2026-10-01)"))?;
    if at >= now {
        return Err(bad("that is not in the past"));
    }
    Ok(at)
}

/// The app whose records `--service` names: an app name, or an environment's service.
fn app_of(project: &Project, service: Option<&str>) -> String {
    let own = &project.config.app.name;
    match service {
        None => own.clone(),
        Some(s) if project.config.environments.values().any(|e| e.service == s) => own.clone(),
        Some(s) => s.to_string(),
    }
}

pub async fn run(global: &Global, args: ReportArgs, reporter: &Reporter) -> Result<u8, Exit> {
    let now = Utc::now();
    let since = parse_since(&args.since, now).map_err(Exit::bad_input)?;
    let project = crate::load(global)?;
    let environments: Vec<String> = match &global.environment {
        Some(name) => {
            project.environment(name)?;
            vec![name.clone()]
        }
        None => project.config.environments.keys().cloned().collect(),
    };
    // `--service` (global): the app whose records to read, by its `app.name` or an
    // environment's ECS service name; default: this tugboat.toml's app.
    if global.services.len() > 1 {
        return Err(Exit::bad_input(format!(
            "--service is given {} times; the report reads one app's records",
            global.services.len()
        )));
    }
    let app = app_of(&project, global.services.first().map(String::as_str));
    let mut records = Vec::new();
    for environment in &environments {
        let store = wiring::record_store(&project, environment).await?;
        records.extend(store.records_since(&app, environment, since).await?);
    }
    let request = ReportRequest {
        app,
        environments: if global.environment.is_some() {
            environments
        } else {
            Vec::new()
        },
        since,
        until: now,
    };
    let report = DeliveryReport::compute(&request, &records);
    let mut text = terminal(&report, args.limit);
    if let Some(path) = &args.html {
        std::fs::write(path, report_html::render(&report)).map_err(|err| {
            Exit::bad_input(format!(
                "--html {}: cannot write the page: {err}\n  help: pass a file in a folder that exists and that you can write",
                path.display()
            ))
        })?;
        text.push_str(&format!("\nwrote {}", path.display()));
    }
    let json = serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0,
        "report": report, "html": args.html}});
    reporter.finish(json, text.trim_end(), false);
    Ok(0)
}

/// `45s`, `4m 10s`, `3h 12m`, `2d 4h`.
pub fn human_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

pub fn band_text(band: Option<Band>) -> String {
    band.map_or_else(|| "no data".to_string(), |b| b.to_string())
}

/// The four headline numbers as people read them, shared by the terminal and the page.
pub struct Headline {
    pub name: &'static str,
    pub value: String,
    pub detail: String,
    pub band: Option<Band>,
}

pub fn headlines(report: &DeliveryReport) -> [Headline; 4] {
    let frequency = &report.deployment_frequency;
    let lead = &report.lead_time;
    let failure = &report.change_failure_rate;
    let restore = &report.time_to_restore;
    let or_none = |seconds: Option<u64>| seconds.map_or_else(|| "-".to_string(), human_duration);
    [
        Headline {
            name: "Deployment frequency",
            value: format!("{:.2} / day", frequency.per_day),
            detail: format!(
                "{:.1} per week, {} successful release(s) in {:.0} days",
                frequency.per_week, frequency.releases, report.days
            ),
            band: Some(frequency.band),
        },
        Headline {
            name: "Lead time for changes",
            value: or_none(lead.median_seconds),
            detail: {
                let mut detail = format!(
                    "median, commit to release; p90 {} ({} release(s))",
                    or_none(lead.p90_seconds),
                    lead.samples
                );
                if lead.without_commit_time > 0 {
                    detail.push_str(&format!(
                        "; {} without a commit time",
                        lead.without_commit_time
                    ));
                }
                detail
            },
            band: lead.band,
        },
        Headline {
            name: "Change failure rate",
            value: failure
                .rate
                .map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0)),
            detail: format!(
                "{} of {} release(s) failed or were rolled back",
                failure.failed, failure.releases
            ),
            band: failure.band,
        },
        Headline {
            name: "Time to restore",
            value: or_none(restore.median_seconds),
            detail: {
                let mut detail = format!("median, {} restored failure(s)", restore.samples);
                if restore.unrestored > 0 {
                    detail.push_str(&format!(", {} not restored yet", restore.unrestored));
                }
                detail
            },
            band: restore.band,
        },
    ]
}

pub fn outcome_text(row: &ReleaseRow) -> &'static str {
    if row.rolled_back_later {
        return "rolled back later";
    }
    match row.outcome {
        RecordOutcome::InProgress => "in progress",
        RecordOutcome::Succeeded => "succeeded",
        RecordOutcome::FailedUnchanged => "failed (unchanged)",
        RecordOutcome::RolledBack => "rolled back",
        RecordOutcome::NotRestored => "NOT RESTORED",
        RecordOutcome::Refused => "refused",
    }
}

pub fn kind_text(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Release => "release",
        RunKind::Rollback => "rollback",
    }
}

pub fn scope_text(report: &DeliveryReport) -> String {
    let environments = if report.environments.is_empty() {
        "every environment".to_string()
    } else {
        report.environments.join(", ")
    };
    format!(
        "{}, {environments}, {} to {} ({:.0} days)",
        report.app,
        report.since.format("%Y-%m-%d %H:%M"),
        report.until.format("%Y-%m-%d %H:%M UTC"),
        report.days
    )
}

/// The report for a terminal: the four metrics with their bands, counts, the slowest
/// stages and the last `limit` releases.
pub fn terminal(report: &DeliveryReport, limit: usize) -> String {
    let mut text = format!("Delivery report: {}\n\n", scope_text(report));
    for headline in headlines(report) {
        text.push_str(&format!(
            "  {:<22} {:>12}  {:<8} {}\n",
            headline.name,
            headline.value,
            band_text(headline.band),
            headline.detail
        ));
    }
    let c = &report.counts;
    text.push_str(&format!(
        "\n  {} release(s): {} succeeded, {} rolled back, {} not restored, {} rolled back later by hand; {} failed before the service changed, {} in progress; {} manual rollback(s)\n",
        c.releases, c.succeeded, c.rolled_back, c.not_restored, c.rolled_back_later,
        c.failed_before_change, c.in_progress, c.rollbacks
    ));
    if !report.slowest_stages.is_empty() {
        text.push_str("\nSlowest stages (median)\n");
        for stage in &report.slowest_stages {
            let seconds = stage.median_seconds.round() as u64;
            text.push_str(&format!(
                "  {:<9} {:>8}  ({} run(s))\n",
                stage.stage.to_string(),
                human_duration(seconds),
                stage.runs
            ));
        }
    }
    text.push_str("\nLast releases\n");
    if report.releases.is_empty() {
        text.push_str("  (no releases in the window)\n");
        return text;
    }
    text.push_str(&format!(
        "  {:<16} {:<12} {:<8} {:<18} {:<7} {:>9} {:>9}  {}\n",
        "STARTED (UTC)", "ENV", "KIND", "OUTCOME", "COMMIT", "LEAD TIME", "DURATION", "BY"
    ));
    for row in report.releases.iter().take(limit) {
        let or_dash = |s: Option<u64>| s.map_or_else(|| "-".to_string(), human_duration);
        text.push_str(&format!(
            "  {:<16} {:<12} {:<8} {:<18} {:<7} {:>9} {:>9}  {}\n",
            row.started_at.format("%Y-%m-%d %H:%M"),
            row.environment,
            kind_text(row.kind),
            outcome_text(row),
            if row.sha.is_empty() { "-" } else { &row.sha },
            or_dash(row.lead_time_seconds),
            or_dash(row.duration_seconds),
            row.actor
        ));
    }
    if report.releases.len() > limit {
        text.push_str(&format!(
            "  … {} more (--limit N, or --html FILE for all)\n",
            report.releases.len() - limit
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn since_takes_spans_dates_and_times() {
        let cases = [
            ("30d", "2026-11-02T12:00:00+00:00"),
            ("2w", "2026-11-18T12:00:00+00:00"),
            ("48h", "2026-11-30T12:00:00+00:00"),
            ("2026-10-01", "2026-10-01T00:00:00+00:00"),
            ("2026-11-30T09:30:00+01:00", "2026-11-30T08:30:00+00:00"),
        ];
        for (text, expected) in cases {
            let since = parse_since(text, now()).map(|t| t.to_rfc3339());
            assert_eq!(since.as_deref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn a_bad_since_names_the_flag_the_value_and_a_fix() {
        for (text, why) in [
            ("30x", "the unit is h, d or w"),
            ("0d", "longer than nothing"),
            ("yesterday", "not a span"),
            ("2026-13-01", "not a span"),
            ("2027-01-01", "not in the past"),
        ] {
            let message = parse_since(text, now()).err().unwrap_or_default();
            assert!(
                message.starts_with(&format!("--since {text:?}: ")),
                "{message}"
            );
            assert!(message.contains(why), "{text}: {message}");
            assert!(message.contains("help: pass a span"), "{message}");
        }
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(120), "2m");
        assert_eq!(human_duration(250), "4m 10s");
        assert_eq!(human_duration(3 * 3600 + 12 * 60 + 5), "3h 12m");
        assert_eq!(human_duration(2 * 86_400 + 4 * 3600), "2d 4h");
    }
}
