//! The commit and ref being released, from GitHub Actions' variables or the local checkout.

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

/// `GITHUB_SHA`/`GITHUB_REF` in Actions, else `HEAD` and its branch, or the tag on it.
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
    GitInfo { sha, git_ref }
}

/// Who runs the release.
pub fn actor() -> String {
    std::env::var("GITHUB_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}
