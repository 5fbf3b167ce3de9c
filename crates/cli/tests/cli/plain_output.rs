//! Off a terminal, or with `NO_COLOR`, tugboat writes no escape sequences: logs in CI and
//! files stay plain text.

use crate::common::{assert_exit, Seeded};
use crate::example;

const ESC: u8 = 0x1b;

#[track_caller]
fn assert_plain(what: &str, output: &std::process::Output) {
    for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        assert!(
            !bytes.contains(&ESC),
            "`tugboat {what}` wrote an escape sequence to {stream}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn piped_and_no_color_output_has_no_escape_sequences() {
    let seeded = Seeded::start().await;
    let commands: [(&[&str], i32); 9] = [
        (&["deploy", "--env", "production", "--image", "v1.1.0"], 0),
        (&["status", "--env", "production"], 0),
        (&["history", "--env", "production"], 0),
        (&["plan", "--env", "staging", "--image", "v1.1.0"], 0),
        (&["diff", "--env", "staging", "--image", "v1.1.0"], 0),
        (&["verify", "--env", "staging", "--image", "no-such-tag"], 2),
        (&["rollback", "--env", "staging"], 2),
        (&["plan", "--env", "nope"], 2),
        (&["deploy", "--no-such-flag"], 2),
    ];
    for no_color in [true, false] {
        for (args, code) in commands {
            let mut command = crate::tugboat();
            crate::aws_env(&mut command, &seeded.endpoint);
            // `tugboat()` sets NO_COLOR=1; without it, stdout and stderr are still pipes.
            if !no_color {
                command.env_remove("NO_COLOR");
            }
            let output = command
                .current_dir(example())
                .args(args)
                .output()
                .await
                .expect("run tugboat");
            let what = format!(
                "{} (NO_COLOR {})",
                args.join(" "),
                if no_color { "set" } else { "unset" }
            );
            assert_exit(&output, code);
            assert_plain(&what, &output);
        }
    }
    let help = crate::tugboat()
        .env_remove("NO_COLOR")
        .arg("--help")
        .output()
        .await
        .expect("run");
    assert_plain("--help", &help);
}

/// `tugboat ARGS` on a terminal: util-linux's `script` runs it on a pseudo-terminal and
/// copies what it wrote to its own stdout.
async fn on_a_terminal(seeded: &Seeded, no_color: bool, args: &[&str]) -> std::process::Output {
    let line = std::iter::once(env!("CARGO_BIN_EXE_tugboat"))
        .chain(args.iter().copied())
        .map(|word| format!("'{word}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = tokio::process::Command::new("script");
    crate::aws_env(&mut command, &seeded.endpoint);
    command.env_remove("GITHUB_REF").env_remove("NO_COLOR");
    if no_color {
        command.env("NO_COLOR", "1");
    }
    command
        .current_dir(example())
        .args(["-qec", &line, "/dev/null"])
        .output()
        .await
        .expect("run script (util-linux)")
}

#[tokio::test(flavor = "multi_thread")]
async fn no_color_on_a_terminal_has_no_escape_sequences() {
    let seeded = Seeded::start().await;
    // The control: on a terminal without NO_COLOR, help is styled.
    let styled = on_a_terminal(&seeded, false, &["--help"]).await;
    assert_exit(&styled, 0);
    assert!(
        styled.stdout.contains(&ESC),
        "a terminal without NO_COLOR gets styles; is `script` giving a terminal? {:?}",
        String::from_utf8_lossy(&styled.stdout)
    );

    for (args, code) in [
        (&["--help"][..], 0),
        (&["deploy", "--env", "staging", "--image", "v1.1.0"], 0),
        (&["status", "--env", "staging"], 0),
        (&["plan", "--env", "nope"], 2),
        (&["deploy", "--no-such-flag"], 2),
    ] {
        let output = on_a_terminal(&seeded, true, args).await;
        assert_exit(&output, code);
        assert_plain(
            &format!("{} (NO_COLOR=1, terminal)", args.join(" ")),
            &output,
        );
    }
}
