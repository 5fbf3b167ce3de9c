//! `tugboat verify`: the preflight checks, printed.

use crate::output::{OutputFormat, Reporter};
use crate::Exit;
use pipeline_core::Project;
use pipeline_core::Stages;

/// Preflight checks before a first deploy ([`pipeline_core::preflight`]), printed.
pub async fn preflight(
    project: &Project,
    environment: &str,
    stages: &Stages,
    image: Option<&str>,
    reporter: &Reporter,
) -> Result<u8, Exit> {
    let checks: Vec<(String, Result<String, String>)> =
        pipeline_core::preflight(project, environment, stages, image)
            .await?
            .into_iter()
            .map(|check| (check.name, check.result))
            .collect();
    let failed = checks.iter().filter(|(_, r)| r.is_err()).count();
    let mut text = String::new();
    for (name, result) in &checks {
        match result {
            Ok(ok) => text.push_str(&format!("ok    {name}: {ok}\n")),
            Err(err) => text.push_str(&format!("FAIL  {name}: {err}\n")),
        }
    }
    let code = if failed == 0 { 0 } else { 2 };
    let json = serde_json::json!({"result": {"outcome": if failed == 0 { "succeeded" } else { "bad_input" }, "exit_code": code,
        "checks": checks.iter().map(|(n, r)| serde_json::json!({"check": n, "ok": r.is_ok(), "detail": r.as_ref().unwrap_or_else(|e| e)})).collect::<Vec<_>>()}});
    if reporter.format() == OutputFormat::Json || failed == 0 {
        reporter.finish(json, text.trim_end(), false);
    } else {
        reporter.finish(
            json,
            &format!("{}\n{failed} check(s) failed", text.trim_end()),
            true,
        );
    }
    Ok(code)
}
