//! The architecture's invariants that a machine can check, over the dependency graph:
//! the core talks to no outside world, and the shipped binaries carry no mock code.

use std::process::Command;

/// The crates `package` depends on when it is built for shipping (no dev-dependencies).
fn shipped_dependencies(package: &str) -> String {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "tree", "--locked", "-e", "normal", "--prefix", "none", "-p", package,
        ])
        .current_dir(workspace)
        .output()
        .expect("cargo tree");
    assert!(
        output.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn crates_of(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect()
}

#[test]
fn the_core_has_no_aws_sdk_http_client_or_process_spawning() {
    let tree = shipped_dependencies("pipeline-core");
    let crates = crates_of(&tree);
    assert!(crates.contains(&"serde"), "the tree was not read: {tree}");
    let forbidden: Vec<&&str> = crates
        .iter()
        .filter(|c| {
            c.starts_with("aws-")
                || ["hyper", "reqwest", "ureq", "isahc", "duct", "subprocess"].contains(c)
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "pipeline-core depends on {forbidden:?}:\n{tree}"
    );
    // Nor does it start processes with the standard library or tokio.
    let sources =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/pipeline-core/src");
    let mut pending = vec![sources];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read");
                for spawn in [
                    "process::Command",
                    "tokio::process",
                    "std::net::",
                    "TcpStream",
                ] {
                    assert!(!text.contains(spawn), "{} uses {spawn}", path.display());
                }
            }
        }
    }
}

#[test]
fn shipped_binaries_carry_no_mock_code() {
    for package in ["tugboat-cli", "tugboat-lambda"] {
        let tree = shipped_dependencies(package);
        let crates = crates_of(&tree);
        assert!(
            crates.contains(&"pipeline-core"),
            "the tree of {package} was not read: {tree}"
        );
        for mock in ["mockall", "predicates", "fragile", "downcast"] {
            assert!(!crates.contains(&mock), "{package} ships {mock}");
        }
    }
}
