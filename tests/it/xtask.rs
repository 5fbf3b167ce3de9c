//! `cargo xtask` from checkouts that share one target folder (what `.ci/run` does with
//! `~/.cache/tugboat-target`): each runs in its own tree, also when cargo reuses the
//! binary compiled in the other checkout, and after that checkout was deleted.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace this test was compiled in.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A copy of the workspace's sources (no target folder, no .git).
fn checkout(into: &Path) -> anyhow::Result<()> {
    let source = workspace();
    for entry in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
        "xtask",
        "crates",
        "tests",
    ] {
        let status = Command::new("cp")
            .arg("-a")
            .arg(source.join(entry))
            .arg(into)
            .status()
            .context("cp")?;
        anyhow::ensure!(status.success(), "copying {entry} failed");
    }
    Ok(())
}

fn xtask_root(checkout: &Path, target: &Path) -> anyhow::Result<String> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["xtask", "root"])
        .current_dir(checkout)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .context("cargo xtask root")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo xtask root in {} failed: {}",
        checkout.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[test]
fn xtask_runs_in_its_own_checkout_with_a_shared_target_folder() -> anyhow::Result<()> {
    let scratch = tugboat_tests::docker::TempDir::new("xtask")?;
    let (first, second, target) = (
        scratch.path().join("first"),
        scratch.path().join("second"),
        scratch.path().join("shared-target"),
    );
    for dir in [&first, &second] {
        std::fs::create_dir_all(dir)?;
        checkout(dir)?;
    }

    assert_eq!(xtask_root(&first, &target)?, first.display().to_string());
    // The second checkout builds into (and may reuse from) the same target folder.
    assert_eq!(xtask_root(&second, &target)?, second.display().to_string());
    // The first checkout is gone: the second still runs in its own tree.
    std::fs::remove_dir_all(&first)?;
    assert_eq!(xtask_root(&second, &target)?, second.display().to_string());
    Ok(())
}

fn check_workflows(files: &[&str]) -> anyhow::Result<std::process::Output> {
    let root = workspace();
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["xtask", "check-workflows"])
        .args(files.iter().map(|file| root.join(file)))
        .current_dir(&root)
        .env("RUST_BACKTRACE", "0")
        .output()
        .context("cargo xtask check-workflows")
}

#[test]
fn the_workflow_check_refuses_long_lived_aws_keys() -> anyhow::Result<()> {
    let output = check_workflows(&["tests/workflows/access-key.yml"])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("access-key.yml: line 13: `aws-access-key-id:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 14: `aws-secret-access-key:"),
        "{stderr}"
    );
    assert!(stderr.contains("role-to-assume"), "{stderr}");
    Ok(())
}

#[test]
fn the_workflow_check_refuses_an_action_pinned_to_a_tag() -> anyhow::Result<()> {
    let output = check_workflows(&["tests/workflows/tag-pinned.yml"])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("tag-pinned.yml: line 13: `uses: codecov/codecov-action@v5`"),
        "{stderr}"
    );
    assert!(stderr.contains("1 workflow rule(s) broken"), "{stderr}");
    Ok(())
}

#[test]
fn the_shipped_workflows_pass_the_workflow_check() -> anyhow::Result<()> {
    let output = check_workflows(&[])?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("workflows ok: 4 file(s)"));
    Ok(())
}
