//! Test support: temp dirs, the example app, a real `docker-registry` process (shared
//! with the workspace's tests: `tests/support/registry.rs`), image cleanup, recorded
//! events. Anything missing (engine, registry binary) fails the test.

use pipeline_core::{Events, PipelineEvent, RecordedEvents, StageError};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A name no other test (or concurrent run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A directory removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique(&format!("host-adapters-it-{prefix}")));
        if let Err(err) = fs::create_dir_all(&path) {
            panic!("cannot create {}: {err}", path.display());
        }
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        if let Err(err) = fs::write(&path, contents) {
            panic!("cannot write {}: {err}", path.display());
        }
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// examples/cv-matcher in the repository.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cv-matcher")
}

/// A copy of the example app's sources (not `app/bin`, not `coverage.xml`), so that tests
/// never write into the repository and can run side by side.
pub fn example_copy() -> TempDir {
    let dir = TempDir::new("cv-matcher");
    let source = example_dir();
    for item in [
        "Dockerfile",
        "Makefile",
        "tugboat.toml",
        ".aws",
        "app/www",
        "tests",
    ] {
        copy_tree(&source.join(item), &dir.path().join(item));
    }
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        let _ = fs::create_dir_all(to);
        let entries = match fs::read_dir(from) {
            Ok(entries) => entries,
            Err(err) => panic!("cannot read {}: {err}", from.display()),
        };
        for entry in entries.flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            let _ = fs::create_dir_all(parent);
        }
        if let Err(err) = fs::copy(from, to) {
            panic!("cannot copy {} to {}: {err}", from.display(), to.display());
        }
    }
}

/// Panics (the test fails, it is not skipped) unless the Docker engine answers.
pub fn require_docker() {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "these tests need a running Docker engine; `docker version` said: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(err) => panic!("these tests need the docker CLI and a running engine: {err}"),
    }
}

/// Runs the docker CLI; `Ok(stdout)` when it exits 0.
pub fn docker(args: &[&str]) -> Result<String, String> {
    match Command::new("docker").args(args).output() {
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        }
        Ok(output) => Err(String::from_utf8_lossy(&output.stderr).trim().to_string()),
        Err(err) => Err(err.to_string()),
    }
}

/// Removes the images it was told about when dropped (also when the test panicked).
#[derive(Default)]
pub struct Images {
    references: Vec<String>,
}

impl Images {
    pub fn add(&mut self, reference: impl Into<String>) {
        self.references.push(reference.into());
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        // Names first, so that removing the id then also removes its build parents.
        for reference in self.references.iter().rev() {
            let _ = docker(&["rmi", "-f", reference]);
        }
    }
}

/// The ids of the intermediate images a classic build printed (` ---> 1a2b3c4d5e6f`).
pub fn intermediate_images(events: &[PipelineEvent]) -> Vec<String> {
    output_lines(events)
        .iter()
        .filter_map(|line| line.trim().strip_prefix("---> "))
        .filter(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect()
}

/// An `Events` whose events the test can read back.
pub fn recorded() -> (Events, Arc<RecordedEvents>) {
    let recorder = RecordedEvents::new();
    (Events::new().with(recorder.clone()), recorder)
}

pub fn output_lines(events: &[PipelineEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            PipelineEvent::Output { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// Everything a person could see of an error.
pub fn error_text(error: &StageError) -> String {
    format!("{error}\nhelp: {}", error.help.as_deref().unwrap_or(""))
}

// The registry starter is shared with the workspace's integration tests (`tests/`).
// Not every helper there is used here.
#[allow(dead_code)]
#[path = "../../../../tests/support/registry.rs"]
mod registry;
pub use registry::{make_certificates, sha256_digest, LocalRegistry, MANIFEST_V2};
