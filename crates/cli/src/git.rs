//! The commit and ref being released, from GitHub Actions' variables or the local checkout.

use chrono::{DateTime, Utc};
use pipeline_core::GitInfo;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `GITHUB_SHA`/`GITHUB_REF` in Actions, else `HEAD` and its branch, or the tag on it;
/// the commit's author time from the checkout (none outside one).
pub fn current() -> GitInfo {
    let sha = std::env::var("GITHUB_SHA")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_default();
    let git_ref = std::env::var("GITHUB_REF")
        .ok()
        .or_else(|| {
            git(&["describe", "--exact-match", "--tags", "HEAD"]).map(|t| format!("refs/tags/{t}"))
        })
        .or_else(|| git(&["symbolic-ref", "-q", "HEAD"]))
        .unwrap_or_default();
    let committed_at = author_time(if sha.is_empty() { "HEAD" } else { &sha });
    GitInfo {
        sha,
        git_ref,
        committed_at,
    }
}

/// When `commit` was authored, as `git log -1 --format=%aI` tells it (strict ISO 8601).
fn author_time(commit: &str) -> Option<DateTime<Utc>> {
    let text = git(&["log", "-1", "--format=%aI", commit, "--"])?;
    parse_author_time(&text)
}

fn parse_author_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// Who runs the release.
pub fn actor() -> String {
    std::env::var("GITHUB_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn author_time_is_read_in_any_offset_and_kept_in_utc() {
        let at = parse_author_time("2026-11-26T15:15:00+01:00\n");
        assert_eq!(
            at.map(|t| t.to_rfc3339()),
            Some("2026-11-26T14:15:00+00:00".to_string())
        );
        assert_eq!(parse_author_time("not a date"), None);
    }
}
