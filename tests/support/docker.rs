//! The Docker engine side of the tests: the example app copied to a temp dir and built
//! with [`DockerImageBuilder`], and the images a test made removed again.
//!
//! ```ignore
//! require_docker();
//! let mut images = Images::default();
//! let app = example_copy();
//! let built = build_image(app.path(), &format!("tugboat-tests-cv:{}", unique("t")), &mut images).await?;
//! ```

use anyhow::{bail, Context};
use host_adapters::DockerImageBuilder;
use pipeline_core::{BuildSpec, BuiltImage, Events, ImageBuilder};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
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
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(unique(&format!("tugboat-tests-{prefix}")));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// examples/cv-matcher in the repository.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cv-matcher")
}

/// A copy of the example app's sources (never `app/bin`), ready to build: its
/// `make image-context` has put the static busybox into the context. Tests never write
/// into the repository and can run side by side.
pub fn example_copy() -> anyhow::Result<TempDir> {
    let dir = TempDir::new("cv-matcher")?;
    let source = example_dir();
    for item in ["Dockerfile", "Makefile", ".aws", "app/www", "tests"] {
        copy_tree(&source.join(item), &dir.path().join(item))?;
    }
    let output = Command::new("make")
        .arg("image-context")
        .current_dir(dir.path())
        .output()
        .context("running `make image-context` (is make installed?)")?;
    if !output.status.success() {
        bail!(
            "`make image-context` in {} failed: {}{}",
            dir.path().display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(dir)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if from.is_dir() {
        fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Fails (the test is never skipped) unless the Docker engine answers.
pub fn require_docker() -> anyhow::Result<()> {
    docker(&["version", "--format", "{{.Server.Version}}"])
        .map(drop)
        .context("these tests need the docker CLI and a running Docker engine")
}

/// Runs the docker CLI and returns its stdout when it exits 0.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Removes the images it was told about when dropped (also when the test failed).
#[derive(Debug, Default)]
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
        // Newest first: the names a push added go before the image they name.
        for reference in self.references.iter().rev() {
            let _ = docker(&["rmi", "-f", reference]);
        }
    }
}

/// Builds the Dockerfile in `context` as `tag` with tugboat's [`DockerImageBuilder`];
/// the tag and the image are removed when `images` is dropped.
pub async fn build_image(
    context: &Path,
    tag: &str,
    images: &mut Images,
) -> anyhow::Result<BuiltImage> {
    images.add(tag);
    let spec = BuildSpec {
        context: context.to_path_buf(),
        dockerfile: context.join("Dockerfile"),
        platform: None,
        build_args: BTreeMap::new(),
        secrets: Vec::new(),
        tags: vec![tag.to_string()],
        labels: BTreeMap::new(),
        cache_from: Vec::new(),
    };
    let built = DockerImageBuilder::from_env()
        .build(&spec, &Events::new())
        .await
        .map_err(|err| anyhow::anyhow!("building {}: {err}", context.display()))?;
    images.add(built.image_id.clone());
    Ok(built)
}
