//! `cargo xtask …`: the project's own automation. Plain Rust, few dependencies.
//!
//! - `cargo xtask test`: set up the back ends the tests need, then `cargo test --workspace`.
//! - `cargo xtask bench`: set up the same back ends, then run the push and rollout-wait
//!   benchmark (`tests/benches/pipeline.rs`), which prints a table.
//! - `cargo xtask ci`: what CI runs (`.ci/run`).
//! - `cargo xtask moto [--port N]`: start the local AWS emulator (moto with the ECS rollout
//!   patch), seed the CV Matcher resources, print the environment to use it; Ctrl-C stops it.
//! - `cargo xtask deploy [--env E] [-- ARGS]`: run `tugboat deploy` on `examples/cv-matcher`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    match args.first().map(String::as_str) {
        Some("test") => test(&root, &args[1..]),
        Some("bench") => bench(&root, &args[1..]),
        Some("ci") => run(Command::new("bash")
            .arg(root.join(".ci/run"))
            .current_dir(&root)),
        Some("moto") => moto(&root, &args[1..]),
        Some("deploy") => deploy(&root, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|bench|ci|moto [--port N]|deploy [--env E] [tugboat args…]>"
            );
            bail!("unknown or missing task")
        }
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    run(Command::new("bash")
        .arg(root.join(".ci/setup-backends"))
        .current_dir(root))?;
    run(cargo()
        .args(["test", "--workspace", "--locked"])
        .args(extra)
        .current_dir(root))
}

fn bench(root: &Path, extra: &[String]) -> Result<()> {
    run(Command::new("bash")
        .arg(root.join(".ci/setup-backends"))
        .current_dir(root))?;
    run(cargo()
        .args([
            "bench",
            "--locked",
            "--package",
            "tugboat-tests",
            "--bench",
            "pipeline",
        ])
        .args(extra)
        .current_dir(root))
}

fn moto_python() -> PathBuf {
    std::env::var_os("TUGBOAT_MOTO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/tugboat-moto-venv/bin/python")
        })
}

fn moto(root: &Path, args: &[String]) -> Result<()> {
    let port = match args.iter().position(|a| a == "--port") {
        Some(i) => args.get(i + 1).context("--port needs a number")?.clone(),
        None => "5000".to_string(),
    };
    run(Command::new("bash")
        .arg(root.join(".ci/setup-backends"))
        .current_dir(root))?;
    let python = moto_python();
    let support = root.join("tests/support/moto");
    let mut server = Command::new(&python)
        .arg(support.join("tugboat_moto.py"))
        .args(["--host", "127.0.0.1", "--port", &port])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the moto launcher")?;
    // Seed only once the launcher says it accepts connections.
    let stdout = server.stdout.take().context("the launcher's stdout")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("ready on"));
    if !ready {
        let _ = server.kill();
        bail!("the moto launcher exited before it was ready (is port {port} free? try --port N)");
    }
    std::thread::spawn(move || lines.for_each(drop));
    let endpoint = format!("http://127.0.0.1:{port}");
    let seeded = run(Command::new(&python)
        .arg(support.join("seed_cv_matcher.py"))
        .arg(&endpoint)
        .arg(root.join("examples/cv-matcher/.aws/task-definition.json")));
    if let Err(err) = seeded {
        let _ = server.kill();
        return Err(err);
    }
    println!("# moto with the ECS rollout patch is serving on {endpoint}; Ctrl-C stops it.");
    println!("# In another shell:");
    println!("export AWS_ENDPOINT_URL={endpoint}");
    println!("export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1");
    println!("export RECORDS_BUCKET=cv-matcher-deployments");
    let status = server.wait()?;
    if !status.success() {
        bail!("moto stopped: {status}");
    }
    Ok(())
}

fn deploy(root: &Path, args: &[String]) -> Result<()> {
    let example = root.join("examples/cv-matcher");
    run(cargo()
        .args([
            "run",
            "--quiet",
            "--package",
            "tugboat-cli",
            "--bin",
            "tugboat",
            "--",
            "deploy",
        ])
        .args([
            "--config",
            &example.join("tugboat.toml").display().to_string(),
        ])
        .args(args)
        .current_dir(&example))
}
