//! One file per command that is not a release (deploy, rollback and plan are in
//! main.rs, around the orchestrator).

pub mod fleet;
pub mod history;
pub mod infra;
pub mod init;
pub mod logs;
pub mod preflight;
pub mod report;
mod report_html;
pub mod run;
mod since;
pub mod status;
pub mod stop;
pub mod unlock;
