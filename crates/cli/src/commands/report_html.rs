//! `tugboat report --html FILE`: the report as one self-contained page. Inline CSS and
//! inline SVG only: no script, no font, image or style sheet from anywhere, so the file
//! opens offline, mails as is, and prints on A4.
//!
//! Every string that comes from a record (actor, ref, reason, revision, ids, environment)
//! goes through [`escape`]: a record cannot inject markup into the page.

use super::report::{band_text, headlines, human_duration, kind_text, outcome_text, scope_text};
use chrono::{DateTime, Utc};
use pipeline_core::report::{Band, DeliveryReport, ReleaseRow, RunKind};
use pipeline_core::RecordOutcome;
use std::fmt::Write;

/// Rows of the release table on the page.
const TABLE_ROWS: usize = 25;
/// Bars of the lead time chart (the newest releases).
const LEAD_TIME_BARS: usize = 60;

/// Text for HTML element content and attribute values alike.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn band_class(band: Option<Band>) -> &'static str {
    match band {
        Some(Band::Elite) => "elite",
        Some(Band::High) => "high",
        Some(Band::Medium) => "medium",
        Some(Band::Low) => "low",
        None => "none",
    }
}

/// The class (and colour) of a run's mark and outcome pill.
fn outcome_class(row: &ReleaseRow) -> &'static str {
    if row.kind == RunKind::Rollback {
        return "rollback";
    }
    if row.rolled_back_later {
        return "undone";
    }
    match row.outcome {
        RecordOutcome::Succeeded => "ok",
        RecordOutcome::RolledBack => "rolledback",
        RecordOutcome::NotRestored => "notrestored",
        RecordOutcome::FailedUnchanged | RecordOutcome::Refused => "unchanged",
        RecordOutcome::InProgress => "inprogress",
    }
}

const STYLE: &str = r#"
:root { --ink:#1c2430; --muted:#5b6778; --line:#dde3ea; --panel:#ffffff; --bg:#f4f6f9;
  --ok:#1f9d55; --rolledback:#e07b00; --notrestored:#d1263b; --unchanged:#8a94a3;
  --inprogress:#2f6fdb; --rollback:#7a4cc2; --undone:#1f9d55; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 24px 32px; }
header h1 { margin: 0; font-size: 24px; letter-spacing: -0.01em; }
header p { margin: 4px 0 0; color: var(--muted); }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 18px; margin-top: 16px; break-inside: avoid; }
h2 { font-size: 15px; margin: 0 0 10px; }
.metrics { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin-top: 18px; }
.metric { background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
  padding: 14px 16px; border-top: 5px solid var(--band); break-inside: avoid; }
.metric .top { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
.metric .name { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; }
.metric .value { font-size: 30px; font-weight: 700; margin: 4px 0 2px; white-space: nowrap; }
.metric .detail { color: var(--muted); font-size: 12px; }
.band { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px;
  font-weight: 600; color: #fff; background: var(--band); text-transform: uppercase; letter-spacing: 0.05em; }
.elite { --band: #1f9d55; } .high { --band: #2b8ac6; } .medium { --band: #d99a00; }
.low { --band: #d1263b; } .none { --band: #a0a9b5; }
.counts { color: var(--muted); margin: 10px 2px 0; font-size: 13px; }
.charts { display: grid; grid-template-columns: 3fr 2fr; gap: 16px; }
.charts section { margin-top: 16px; }
svg { display: block; width: 100%; height: auto; }
svg text { font: 11px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill: var(--muted); }
svg .axis { stroke: var(--line); }
svg .lane { fill: #f7f9fb; }
svg .ok { fill: var(--ok); } svg .rolledback { fill: var(--rolledback); }
svg .notrestored { fill: var(--notrestored); } svg .unchanged { fill: var(--unchanged); }
svg .inprogress { fill: var(--inprogress); } svg .rollback { fill: var(--rollback); }
svg .undone { fill: var(--ok); stroke: var(--notrestored); stroke-width: 2.5; }
svg .bar { fill: #2b8ac6; } svg .stagebar { fill: #5a7bd6; }
svg .median { stroke: var(--ink); stroke-dasharray: 5 4; stroke-width: 1.2; }
svg .p90 { stroke: var(--rolledback); stroke-dasharray: 2 3; stroke-width: 1.2; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; margin-top: 8px; color: var(--muted); font-size: 12px; }
.legend span::before { content: ""; display: inline-block; width: 10px; height: 10px;
  border-radius: 50%; margin-right: 5px; vertical-align: -1px; background: var(--dot); }
.legend .ok { --dot: var(--ok); } .legend .rolledback { --dot: var(--rolledback); }
.legend .notrestored { --dot: var(--notrestored); } .legend .unchanged { --dot: var(--unchanged); }
.legend .inprogress { --dot: var(--inprogress); } .legend .rollback { --dot: var(--rollback); }
.legend .undone::before { box-shadow: inset 0 0 0 2px var(--notrestored); --dot: var(--ok); }
table { width: 100%; border-collapse: collapse; font-size: 12.5px; }
th { text-align: left; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); padding: 6px 6px; }
td { border-bottom: 1px solid #eef1f5; padding: 5px 6px; vertical-align: top; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.reason { color: var(--muted); max-width: 280px; overflow-wrap: anywhere; white-space: normal; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.pill { display: inline-block; padding: 0 8px; border-radius: 999px; color: #fff; font-size: 11.5px;
  white-space: nowrap; background: var(--dot); }
.pill.ok { --dot: var(--ok); } .pill.rolledback { --dot: var(--rolledback); }
.pill.notrestored { --dot: var(--notrestored); } .pill.unchanged { --dot: var(--unchanged); }
.pill.inprogress { --dot: var(--inprogress); } .pill.rollback { --dot: var(--rollback); }
.pill.undone { --dot: var(--notrestored); }
.empty { color: var(--muted); padding: 18px 0; text-align: center; }
footer { color: var(--muted); font-size: 11.5px; margin-top: 16px; }
@page { size: A4; margin: 12mm; }
@media print {
  body { background: #fff; font-size: 11px; }
  main { max-width: none; padding: 0; }
  section, .metric { border-color: #c9d1db; }
  .metrics { gap: 8px; }
  .metric .value { font-size: 22px; }
  .charts { grid-template-columns: 1fr 1fr; }
  table { font-size: 9.5px; }
  th, td { padding: 3px 4px; }
  td { white-space: normal; }
  td:first-child, td.num { white-space: nowrap; }
  td.reason { max-width: none; min-width: 110px; }
  section.releases { break-inside: auto; }
  tr { break-inside: avoid; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

/// The whole page.
pub fn render(report: &DeliveryReport) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let title = format!("Delivery report · {}", report.app);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <header><h1>{}</h1><p>{}</p></header>\n",
        escape(&title),
        escape(&title),
        escape(&scope_text(report))
    );
    metrics(&mut page, report);
    timeline(&mut page, report);
    page.push_str("<div class=\"charts\">\n");
    lead_time_chart(&mut page, report);
    stage_chart(&mut page, report);
    page.push_str("</div>\n");
    release_table(&mut page, report);
    let _ = write!(
        page,
        "<footer>Bands as DORA's Accelerate State of DevOps Report 2023 defines the performance levels \
         (elite, high, medium, low). Generated by tugboat at {} from {} deploy record(s).</footer>\n\
         </main>\n</body>\n</html>\n",
        report.until.format("%Y-%m-%d %H:%M UTC"),
        report.releases.len()
    );
    page
}

fn metrics(page: &mut String, report: &DeliveryReport) {
    page.push_str("<div class=\"metrics\">\n");
    for headline in headlines(report) {
        let class = band_class(headline.band);
        let _ = writeln!(
            page,
            "<div class=\"metric {class}\"><div class=\"top\"><span class=\"name\">{}</span>\
             <span class=\"band\">{}</span></div>\
             <div class=\"value\">{}</div><div class=\"detail\">{}</div></div>",
            escape(headline.name),
            escape(&band_text(headline.band)),
            escape(&headline.value),
            escape(&headline.detail)
        );
    }
    page.push_str("</div>\n");
    let c = &report.counts;
    let _ = writeln!(
        page,
        "<p class=\"counts\">{} release(s): {} succeeded, {} rolled back, {} not restored, \
         {} rolled back later by hand · {} failed before the service changed · {} in progress · \
         {} manual rollback(s)</p>",
        c.releases,
        c.succeeded,
        c.rolled_back,
        c.not_restored,
        c.rolled_back_later,
        c.failed_before_change,
        c.in_progress,
        c.rollbacks
    );
}

/// x of a time on an axis from `report.since` to `report.until` over `width` from `left`.
fn x_of(report: &DeliveryReport, at: DateTime<Utc>, left: f64, width: f64) -> f64 {
    let span = (report.until - report.since).num_seconds().max(1) as f64;
    let offset = (at - report.since).num_seconds() as f64;
    left + (offset / span).clamp(0.0, 1.0) * width
}

fn timeline(page: &mut String, report: &DeliveryReport) {
    page.push_str("<section><h2>Release timeline</h2>\n");
    let mut environments: Vec<&str> = report
        .releases
        .iter()
        .map(|r| r.environment.as_str())
        .collect();
    environments.sort_unstable();
    environments.dedup();
    if environments.is_empty() {
        page.push_str("<p class=\"empty\">No releases in this window.</p></section>\n");
        return;
    }
    let (left, width, lane) = (110.0, 1060.0, 40.0);
    let height = 28.0 + lane * environments.len() as f64;
    let _ = writeln!(
        page,
        "<svg viewBox=\"0 0 1190 {height:.0}\" role=\"img\" aria-label=\"release timeline\">"
    );
    for (i, env) in environments.iter().enumerate() {
        let y = 4.0 + lane * i as f64;
        let _ = writeln!(
            page,
            "<rect class=\"lane\" x=\"{left}\" y=\"{y:.1}\" width=\"{width}\" height=\"{:.1}\" rx=\"4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            lane - 6.0,
            left - 8.0,
            y + lane / 2.0,
            escape(env)
        );
    }
    // Day ticks, labelled so that about eight labels fit.
    let axis_y = 4.0 + lane * environments.len() as f64;
    let days = report.days.ceil().max(1.0) as i64;
    let every = (days / 8).max(1);
    let _ = writeln!(
        page,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{axis_y:.1}\" x2=\"{:.1}\" y2=\"{axis_y:.1}\"/>",
        left + width
    );
    let first_day = report.since.date_naive();
    for day in 0..=days {
        let Some(date) = first_day.checked_add_days(chrono::Days::new(day as u64)) else {
            break;
        };
        let Some(at) = date.and_hms_opt(0, 0, 0).map(|t| t.and_utc()) else {
            continue;
        };
        if at < report.since || at > report.until {
            continue;
        }
        let x = x_of(report, at, left, width);
        let _ = write!(
            page,
            "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{axis_y:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
            axis_y + 4.0
        );
        if day % every == 0 {
            let _ = write!(
                page,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                axis_y + 16.0,
                date.format("%b %d")
            );
        }
    }
    page.push('\n');
    // Oldest first, so the newest mark is drawn on top.
    for row in report.releases.iter().rev() {
        let Some(lane_index) = environments.iter().position(|e| *e == row.environment) else {
            continue;
        };
        let x = x_of(report, row.started_at, left, width);
        let y = 4.0 + lane * lane_index as f64 + lane / 2.0;
        let class = outcome_class(row);
        let tip = escape(&format!(
            "{} {} {}: {}{}",
            row.started_at.format("%Y-%m-%d %H:%M"),
            kind_text(row.kind),
            row.release_id,
            outcome_text(row),
            row.revision
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        if row.kind == RunKind::Rollback {
            // A rollback is a downward triangle above the releases: the service went back.
            let y = y - 10.0;
            let _ = writeln!(
                page,
                "<path class=\"{class}\" d=\"M{:.1} {:.1} L{:.1} {:.1} L{x:.1} {:.1} Z\"><title>{tip}</title></path>",
                x - 7.0,
                y - 6.0,
                x + 7.0,
                y - 6.0,
                y + 7.0
            );
        } else {
            let _ = writeln!(
                page,
                "<circle class=\"{class}\" cx=\"{x:.1}\" cy=\"{:.1}\" r=\"6\"><title>{tip}</title></circle>",
                y + 4.0
            );
        }
    }
    page.push_str(
        "</svg>\n<div class=\"legend\"><span class=\"ok\">succeeded</span>\
        <span class=\"undone\">succeeded, rolled back later</span>\
        <span class=\"rolledback\">failed, rolled back</span>\
        <span class=\"notrestored\">failed, not restored</span>\
        <span class=\"unchanged\">failed before the service changed</span>\
        <span class=\"inprogress\">in progress</span>\
        <span class=\"rollback\">manual rollback (▼)</span></div>\n</section>\n",
    );
}

fn lead_time_chart(page: &mut String, report: &DeliveryReport) {
    page.push_str("<section><h2>Lead time for changes (commit to release)</h2>\n");
    // Oldest first, the newest LEAD_TIME_BARS.
    let mut bars: Vec<(&ReleaseRow, u64)> = report
        .releases
        .iter()
        .filter_map(|r| r.lead_time_seconds.map(|s| (r, s)))
        .take(LEAD_TIME_BARS)
        .collect();
    bars.reverse();
    if bars.is_empty() {
        page.push_str(
            "<p class=\"empty\">No successful release with a commit time in this window.</p></section>\n",
        );
        return;
    }
    let (left, top, width, height) = (56.0, 10.0, 560.0, 190.0);
    let max = bars.iter().map(|(_, s)| *s).max().unwrap_or(1).max(1) as f64;
    let y_of = |seconds: f64| top + height - seconds / max * height;
    let _ = writeln!(
        page,
        "<svg viewBox=\"0 0 710 230\" role=\"img\" aria-label=\"lead time per release\">\
         <line class=\"axis\" x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">0</text>",
        top + height,
        left + width,
        top + height,
        left - 6.0,
        top + 8.0,
        human_duration(max as u64),
        left - 6.0,
        top + height
    );
    let slot = width / bars.len() as f64;
    let bar_width = (slot * 0.7).clamp(1.5, 28.0);
    for (i, (row, seconds)) in bars.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar_width) / 2.0;
        let y = y_of(*seconds as f64);
        let _ = writeln!(
            page,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_width:.1}\" height=\"{:.1}\"><title>{}</title></rect>",
            (top + height - y).max(0.5),
            escape(&format!(
                "{} {}: {}",
                row.started_at.format("%Y-%m-%d %H:%M"),
                row.release_id,
                human_duration(*seconds)
            ))
        );
    }
    for (class, label, value) in [
        ("median", "median", report.lead_time.median_seconds),
        ("p90", "p90", report.lead_time.p90_seconds),
    ] {
        let Some(value) = value else { continue };
        let y = y_of(value as f64);
        let _ = writeln!(
            page,
            "<line class=\"{class}\" x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{label} {}</text>",
            left + width,
            left + width + 6.0,
            y + 4.0,
            human_duration(value)
        );
    }
    let _ = writeln!(
        page,
        "<text x=\"{left}\" y=\"{:.1}\">older</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">newer</text></svg>",
        top + height + 18.0,
        left + width,
        top + height + 18.0
    );
    page.push_str("</section>\n");
}

fn stage_chart(page: &mut String, report: &DeliveryReport) {
    page.push_str("<section><h2>Slowest stages (median)</h2>\n");
    if report.slowest_stages.is_empty() {
        page.push_str("<p class=\"empty\">No stage timings in this window.</p></section>\n");
        return;
    }
    let (left, width, row_height) = (70.0, 250.0, 30.0);
    let max = report
        .slowest_stages
        .iter()
        .map(|s| s.median_seconds)
        .fold(0.0_f64, f64::max)
        .max(0.1);
    let height = 10.0 + row_height * report.slowest_stages.len() as f64;
    let _ = writeln!(
        page,
        "<svg viewBox=\"0 0 460 {height:.0}\" role=\"img\" aria-label=\"median seconds per stage\">"
    );
    for (i, stage) in report.slowest_stages.iter().enumerate() {
        let y = 6.0 + row_height * i as f64;
        let bar = (stage.median_seconds / max * width).max(1.0);
        let _ = writeln!(
            page,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect class=\"stagebar\" x=\"{left}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"18\" rx=\"3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{} · {} run(s)</text>",
            left - 8.0,
            y + 13.0,
            stage.stage,
            left + bar + 6.0,
            y + 13.0,
            human_duration(stage.median_seconds.round() as u64),
            stage.runs
        );
    }
    page.push_str("</svg>\n</section>\n");
}

fn release_table(page: &mut String, report: &DeliveryReport) {
    let _ = writeln!(
        page,
        "<section class=\"releases\"><h2>Releases ({} in the window{})</h2>",
        report.releases.len(),
        if report.releases.len() > TABLE_ROWS {
            format!(", the newest {TABLE_ROWS}")
        } else {
            String::new()
        }
    );
    if report.releases.is_empty() {
        page.push_str("<p class=\"empty\">No releases in this window.</p></section>\n");
        return;
    }
    page.push_str(
        "<table><thead><tr><th>Started (UTC)</th><th>Environment</th><th>Kind</th><th>Outcome</th>\
         <th>Commit</th><th>Ref</th><th>Revision</th><th class=\"num\">Lead time</th>\
         <th class=\"num\">Duration</th><th>By</th><th>Reason</th></tr></thead><tbody>\n",
    );
    let or_dash = |s: Option<u64>| s.map_or_else(|| "-".to_string(), human_duration);
    for row in report.releases.iter().take(TABLE_ROWS) {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><span class=\"pill {}\">{}</span></td>\
             <td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
            row.started_at.format("%Y-%m-%d %H:%M"),
            escape(&row.environment),
            kind_text(row.kind),
            outcome_class(row),
            escape(outcome_text(row)),
            escape(if row.sha.is_empty() { "-" } else { &row.sha }),
            escape(&row.git_ref),
            escape(row.revision.as_deref().unwrap_or("-")),
            or_dash(row.lead_time_seconds),
            or_dash(row.duration_seconds),
            escape(&row.actor),
            escape(row.reason.as_deref().unwrap_or(""))
        );
    }
    page.push_str("</tbody></table>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::report::ReportRequest;
    use pipeline_core::{DeployRecord, GitInfo, ReleaseId, Stage, StageTiming};

    fn hostile_record() -> DeployRecord {
        let started_at = DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let evil =
            "<script>alert('x')</script><img src=x onerror=\"fetch('https://evil.example')\">";
        let git = GitInfo {
            sha: "abc1234def".into(),
            git_ref: format!("refs/heads/{evil}"),
            committed_at: Some(started_at - chrono::Duration::hours(2)),
        };
        DeployRecord {
            release_id: ReleaseId(format!("r20261120-100000-{evil}")),
            app: "cv-matcher".into(),
            environment: format!("prod{evil}"),
            git,
            image: None,
            revision: Some(pipeline_core::Revision::new("arn", format!("rev{evil}"))),
            previous_revision: None,
            outcome: RecordOutcome::RolledBack,
            reason: Some(format!("rollout failed {evil} & more")),
            stages: vec![StageTiming {
                stage: Stage::Deploy,
                millis: 60_000,
                ok: false,
            }],
            actor: format!("mallory{evil}"),
            started_at,
            finished_at: Some(started_at + chrono::Duration::minutes(5)),
            rollback_of: None,
            deployment_id: None,
            trigger: None,
            scan_override: None,
            task_definition: None,
            warnings: Vec::new(),
            rollback_deployment_id: None,
            rollback_started_at: None,
            concluding: None,
            one_off_tasks: Vec::new(),
        }
    }

    #[test]
    fn strings_from_records_cannot_inject_markup() {
        let record = hostile_record();
        let request = ReportRequest {
            app: "cv-matcher".into(),
            environments: Vec::new(),
            since: record.started_at - chrono::Duration::days(3),
            until: record.started_at + chrono::Duration::days(3),
        };
        let report = DeliveryReport::compute(&request, &[record]);
        assert_eq!(
            report.releases.len(),
            1,
            "the hostile record is on the page"
        );
        let page = render(&report);
        for forbidden in ["<script", "<img", "onerror=\"", "alert('x')"] {
            assert!(!page.contains(forbidden), "{forbidden} in the page");
        }
        assert!(page.contains("mallory&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(page.contains("rollout failed &lt;script&gt;"));
        assert!(page.contains("&amp; more"));
    }

    #[test]
    fn the_page_names_no_other_resource() {
        let request = ReportRequest {
            app: "cv-matcher".into(),
            environments: vec!["production".into()],
            since: hostile_record().started_at,
            until: hostile_record().started_at + chrono::Duration::days(30),
        };
        let page = render(&DeliveryReport::compute(&request, &[]));
        for forbidden in ["://", "<script", "<link", "@import", "url(", "src="] {
            assert!(!page.contains(forbidden), "{forbidden} in the page");
        }
        assert!(page.contains("@page { size: A4"));
    }

    #[test]
    fn escape_covers_text_and_attributes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
