//! `cargo xtask …`: the project's own automation. Plain Rust, few dependencies.
//!
//! - `cargo xtask test`: set up the back ends the tests need, then `cargo test --workspace`.
//! - `cargo xtask bench`: set up the same back ends, then run the push and rollout-wait
//!   benchmark (`tests/benches/pipeline.rs`), which prints a table; then the Lambda's cold
//!   start and binary size, against their targets (`cargo xtask bench lambda`: only those;
//!   `cargo xtask bench report`: only the delivery report over 1,000 records in moto's S3;
//!   `cargo xtask bench fleet`: only the fleet release of 1, 10 and 50 services).
//! - `cargo xtask ci`: what CI runs (`.ci/run`).
//! - `cargo xtask lambda [--target TRIPLE] [--config FILE]`: build the Lambda's `bootstrap` in
//!   release mode and zip it (with FILE as `tugboat.toml`) into `<target dir>/lambda/tugboat-lambda.zip`.
//! - `cargo xtask moto [--port N]`: start the local AWS emulator (moto with the ECS rollout
//!   patch), seed the CV Matcher resources, print the environment to use it; Ctrl-C stops it.
//! - `cargo xtask deploy [--env E] [-- ARGS]`: run `tugboat deploy` on `examples/cv-matcher`.
//! - `cargo xtask check-workflows [FILE…]`: the GitHub Actions rules (no long-lived AWS keys,
//!   every `uses:` pinned to a commit SHA with its version in a comment) on FILEs, or on
//!   every workflow of the repository and its examples.
//! - `cargo xtask root`: print the workspace it runs in (found at run time, never the
//!   path it was compiled in, so a target folder shared between checkouts is safe).

mod check_workflows;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root()?;
    match args.first().map(String::as_str) {
        Some("root") => {
            println!("{}", root.display());
            Ok(())
        }
        Some("test") => test(&root, &args[1..]),
        Some("bench") => bench(&root, &args[1..]),
        Some("ci") => run(Command::new("bash")
            .arg(root.join(".ci/run"))
            .current_dir(&root)),
        Some("moto") => moto(&root, &args[1..]),
        Some("deploy") => deploy(&root, &args[1..]),
        Some("lambda") => lambda(&root, &args[1..]),
        Some("check-workflows") => check_workflows(&root, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|bench|ci|moto [--port N]|deploy [--env E] [tugboat args…]|lambda [--target T] [--config F]|check-workflows [FILE…]|root>"
            );
            bail!("unknown or missing task")
        }
    }
}

/// The workspace this xtask was *run* in, found at run time: a target folder shared
/// between checkouts may hold a binary compiled in another checkout, so the path it was
/// compiled in (`env!("CARGO_MANIFEST_DIR")`) is never used. `cargo run` sets
/// `CARGO_MANIFEST_DIR` to the xtask package of the workspace it runs in; without it,
/// `cargo locate-project --workspace` from the current folder.
fn project_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        let manifest_dir = PathBuf::from(dir);
        if manifest_dir.join("Cargo.toml").is_file() {
            if let Some(root) = manifest_dir.parent() {
                return Ok(root.to_path_buf());
            }
        }
    }
    let output = cargo()
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .output()
        .context("could not run cargo locate-project to find the workspace")?;
    if !output.status.success() {
        bail!(
            "cannot find the tugboat workspace from {}: run cargo xtask inside the checkout",
            std::env::current_dir().unwrap_or_default().display()
        );
    }
    let manifest = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("cargo locate-project named no folder")
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
    // `cargo xtask bench lambda`: only the Lambda's numbers (no back end needed).
    if extra == ["lambda"] {
        return lambda_bench(root);
    }
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
        .current_dir(root))?;
    // `cargo xtask bench report`: only the report over 1,000 records in moto's S3;
    // `cargo xtask bench fleet`: only the fleet row.
    if extra == ["report"] || extra == ["fleet"] {
        return Ok(());
    }
    lambda_bench(root)
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

/// The value after `flag`, if it is given.
fn option(args: &[String], flag: &str) -> Result<Option<String>> {
    match args.iter().position(|a| a == flag) {
        Some(i) => Ok(Some(
            args.get(i + 1)
                .with_context(|| format!("{flag} needs a value"))?
                .clone(),
        )),
        None => Ok(None),
    }
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

fn host_triple() -> Result<String> {
    let output = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV named no host")
}

/// The newest `GLIBC_2.N` symbol version the binary asks for (`N`).
fn newest_glibc(binary: &[u8]) -> Option<u32> {
    let needle = b"GLIBC_2.";
    binary
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .filter_map(|(at, _)| {
            let digits: String = binary[at + needle.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|b| char::from(*b))
                .collect();
            digits.parse().ok()
        })
        .max()
}

/// The release profile, optimised for size: Lambda downloads and maps the binary at every
/// cold start, and the start itself takes a few milliseconds either way.
const LAMBDA_PROFILE: [&str; 4] = [
    "--config",
    "profile.release.opt-level=\"s\"",
    "--config",
    "profile.release.codegen-units=1",
];

/// Builds `bootstrap` in release mode (optimised for size) and returns its path.
fn build_bootstrap(root: &Path, target: Option<&str>) -> Result<PathBuf> {
    let mut build = cargo();
    build.args(LAMBDA_PROFILE).args([
        "build",
        "--release",
        "--locked",
        "--package",
        "tugboat-lambda",
        "--bin",
        "bootstrap",
    ]);
    if let Some(target) = target {
        build.args(["--target", target]);
    }
    run(build.current_dir(root))?;
    let targets = target_dir(root);
    Ok(match target {
        Some(target) => targets.join(target).join("release/bootstrap"),
        None => targets.join("release/bootstrap"),
    })
}

/// Starts `bootstrap` against a Runtime API served here and returns the time from the
/// process start to its first `GET …/invocation/next` (the end of its cold start).
fn cold_start(binary: &Path) -> Result<std::time::Duration> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let address = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let started = std::time::Instant::now();
    let mut child = Command::new(binary)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "tugboat")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("TUGBOAT_CONFIG", "/nonexistent/tugboat.toml")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let deadline = started + std::time::Duration::from_secs(10);
    let mut request = Vec::new();
    let result = loop {
        if std::time::Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "bootstrap made no `next` request within 10 s"
            ));
        }
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
                let mut chunk = [0u8; 1024];
                // The request line arrives in the first packet.
                while !request.windows(2).any(|w| w == b"\r\n") {
                    let read = stream.read(&mut chunk)?;
                    if read == 0 {
                        break;
                    }
                    request.extend_from_slice(&chunk[..read]);
                }
                let at = started.elapsed();
                break if request.starts_with(b"GET /2018-06-01/runtime/invocation/next ") {
                    Ok(at)
                } else {
                    Err(anyhow::anyhow!(
                        "bootstrap's first request was not `next`: {}",
                        String::from_utf8_lossy(&request)
                    ))
                };
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            Err(err) => break Err(err.into()),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The Lambda's numbers: cold start (median of several runs) and stripped size.
fn lambda_bench(root: &Path) -> Result<()> {
    const RUNS: usize = 9;
    const COLD_START_TARGET_MS: f64 = 30.0;
    const SIZE_TARGET_MB: f64 = 15.0;
    let binary = build_bootstrap(root, None)?;
    let mut times = (0..RUNS)
        .map(|_| cold_start(&binary))
        .collect::<Result<Vec<_>>>()?;
    times.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let median = ms(times[RUNS / 2]);
    let size = std::fs::metadata(&binary)
        .with_context(|| format!("reading {}", binary.display()))?
        .len() as f64
        / (1024.0 * 1024.0);
    let verdict = |ok: bool| if ok { "ok" } else { "OVER TARGET" };
    println!(
        "lambda bootstrap ({}, {})",
        binary.display(),
        host_triple()?
    );
    println!(
        "  cold start (process start -> first `next`), median of {RUNS}: {median:.1} ms (min {:.1}, max {:.1}); target < {COLD_START_TARGET_MS} ms: {}",
        ms(times[0]),
        ms(times[RUNS - 1]),
        verdict(median < COLD_START_TARGET_MS)
    );
    println!(
        "  binary size (release, stripped, opt-level s): {size:.1} MB; target < {SIZE_TARGET_MB} MB: {}",
        verdict(size < SIZE_TARGET_MB)
    );
    Ok(())
}

/// Builds `bootstrap` in release mode and zips it for the `provided.al2023` runtime.
fn lambda(root: &Path, args: &[String]) -> Result<()> {
    let target = option(args, "--target")?;
    let config = option(args, "--config")?;
    let binary = build_bootstrap(root, target.as_deref())?;
    let targets = target_dir(root);
    let cross = target.is_some();
    let triple = match target {
        Some(target) => target,
        None => host_triple()?,
    };
    if !triple.contains("-linux-") {
        bail!("Lambda runs Linux, and this builds for {triple}: pass --target <arch>-unknown-linux-gnu");
    }
    let architecture = match triple.split('-').next() {
        Some("x86_64") => "x86_64",
        Some("aarch64") => "arm64",
        _ => bail!("Lambda runs x86_64 or arm64 (aarch64), not {triple}"),
    };

    let out = targets.join("lambda");
    let package = out.join("package");
    if package.exists() {
        std::fs::remove_dir_all(&package)
            .with_context(|| format!("cleaning {}", package.display()))?;
    }
    std::fs::create_dir_all(&package).with_context(|| format!("creating {}", package.display()))?;
    let mut files = vec!["bootstrap".to_string()];
    std::fs::copy(&binary, package.join("bootstrap"))
        .with_context(|| format!("copying {}", binary.display()))?;
    if let Some(config) = &config {
        std::fs::copy(config, package.join("tugboat.toml"))
            .with_context(|| format!("copying {config}"))?;
        files.push("tugboat.toml".to_string());
    }
    let zip = out.join("tugboat-lambda.zip");
    if zip.exists() {
        std::fs::remove_file(&zip)
            .with_context(|| format!("removing the old {}", zip.display()))?;
    }
    let has_zip = Command::new("zip")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_zip {
        run(Command::new("zip")
            .args(["-q", "-X"])
            .arg(&zip)
            .args(&files)
            .current_dir(&package))?;
    } else {
        // ZipInfo.from_file keeps the Unix mode: bootstrap must stay executable.
        let script = "import sys, zipfile\n\
            with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n\
            \x20   for name in sys.argv[2:]:\n\
            \x20       info = zipfile.ZipInfo.from_file(name, name)\n\
            \x20       info.compress_type = zipfile.ZIP_DEFLATED\n\
            \x20       z.writestr(info, open(name, 'rb').read())\n";
        run(Command::new("python3")
            .args(["-c", script])
            .arg(&zip)
            .args(&files)
            .current_dir(&package))?;
    }

    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    let zipped = std::fs::metadata(&zip).map(|m| m.len()).unwrap_or(0);
    let mb = |n: u64| n as f64 / (1024.0 * 1024.0);
    println!("{}", zip.display());
    println!(
        "  bootstrap for {triple}: {:.1} MB ({:.1} MB zipped){}",
        mb(bytes.len() as u64),
        mb(zipped),
        if config.is_some() {
            ", with tugboat.toml"
        } else {
            ""
        }
    );
    println!("  deploy infra/lambda.yaml with Architecture={architecture} (the template's default is arm64; it must match the zip)");
    if architecture == "x86_64" && !cross {
        println!("  for arm64 (Graviton): rustup target add aarch64-unknown-linux-gnu, a linker for it, then cargo xtask lambda --target aarch64-unknown-linux-gnu");
    }
    // provided.al2023 has glibc 2.34: a binary that asks for newer symbols will not start.
    match newest_glibc(&bytes) {
        Some(minor) if minor > 34 => println!(
            "  WARNING: bootstrap needs glibc 2.{minor}, and provided.al2023 has 2.34: build on an older glibc or for a musl target"
        ),
        Some(minor) => println!("  needs glibc 2.{minor} at most (provided.al2023 has 2.34): ok"),
        None => println!("  links no glibc symbol versions (static or musl)"),
    }
    Ok(())
}

/// The workflows to check: the FILEs given, or every `*.yml`/`*.yaml` under
/// `.github/workflows` of the repository and of each example.
fn check_workflows(root: &Path, files: &[String]) -> Result<()> {
    let files: Vec<PathBuf> = if files.is_empty() {
        let mut folders = vec![root.join(".github/workflows")];
        for example in std::fs::read_dir(root.join("examples")).context("examples/")? {
            folders.push(example?.path().join(".github/workflows"));
        }
        let mut found = Vec::new();
        for folder in folders.iter().filter(|folder| folder.is_dir()) {
            for entry in std::fs::read_dir(folder)? {
                let path = entry?.path();
                if path
                    .extension()
                    .is_some_and(|ext| ext == "yml" || ext == "yaml")
                {
                    found.push(path);
                }
            }
        }
        found.sort();
        found
    } else {
        files.iter().map(PathBuf::from).collect()
    };
    if files.is_empty() {
        bail!("no workflow found under {}", root.display());
    }
    let mut broken = 0;
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the workflow {}", file.display()))?;
        let shown = file.strip_prefix(root).unwrap_or(file);
        for violation in check_workflows::check(&text) {
            eprintln!("{}: {violation}", shown.display());
            broken += 1;
        }
    }
    if broken > 0 {
        bail!(
            "{broken} workflow rule(s) broken in {} file(s) checked",
            files.len()
        );
    }
    println!(
        "workflows ok: {} file(s), every action pinned to a commit SHA, no AWS access keys",
        files.len()
    );
    Ok(())
}
