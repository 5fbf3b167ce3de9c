//! `tugboat history`: the deploy records of an environment.

use crate::output::Reporter;
use crate::wiring::reader_and_records;
use crate::Exit;
use pipeline_core::Project;

pub async fn history(
    project: &Project,
    environment: &str,
    limit: usize,
    reporter: &Reporter,
) -> Result<(), Exit> {
    let (_, stores) = reader_and_records(project, environment).await?;
    let records = stores
        .records
        .history(&project.config.app.name, environment, limit)
        .await?;
    let json =
        serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0, "records": records}});
    let mut text = String::from("RELEASE                    OUTCOME          REVISION            IMAGE                 BY\n");
    for r in &records {
        text.push_str(&format!(
            "{:<26} {:<16} {:<19} {:<21} {}\n",
            r.release_id.0,
            serde_json::to_value(r.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            r.revision
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "-".into()),
            r.image
                .as_ref()
                .map(|i| i.digest.chars().take(19).collect::<String>())
                .unwrap_or_else(|| "-".into()),
            r.actor
        ));
    }
    if records.is_empty() {
        text.push_str("(no releases recorded yet)\n");
    }
    reporter.finish(json, text.trim_end(), false);
    Ok(())
}
