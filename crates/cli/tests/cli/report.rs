//! `tugboat report` end to end: on records in `.tugboat/` (terminal, JSON, bad flags), on
//! records in moto's S3, and its HTML page in headless Chromium (Debian's `chromium`, which
//! `.ci/setup-backends` installs; `TUGBOAT_CHROMIUM` overrides where it is): rendered with
//! no request leaving the page, a screenshot that is not blank, the metrics in the DOM.
//!
//! Every request Chromium makes goes to a recording proxy (`--proxy-server`, loopback
//! included). Chromium also calls its own update and sign-in services on start, whatever
//! the page ([`BROWSER_SERVICES`]): those are told apart by host; anything else fails.

use crate::common::{assert_exit, result, text, Seeded, BUCKET};
use crate::{example, tugboat};
use aws_adapters::S3ArtifactStore;
use host_adapters::FileArtifactStore;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tugboat_tests::docker::TempDir;
use tugboat_tests::records::{put_records, sample_records};

/// A copy of the example with `count` releases of its local environment recorded in
/// `.tugboat/`, one every 20 hours, the newest an hour ago.
async fn example_with_local_records(count: u32) -> TempDir {
    let dir = TempDir::new("report").expect("temp dir");
    for file in [
        "tugboat.toml",
        "local-secrets.env",
        ".aws/task-definition.json",
    ] {
        let to = dir.path().join(file);
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(example().join(file), &to).expect("copy the example");
    }
    let store = Arc::new(FileArtifactStore::new(dir.path().join(".tugboat")));
    let records = sample_records(
        "cv-matcher",
        "local",
        count,
        chrono::Utc::now() - chrono::Duration::hours(1),
        chrono::Duration::hours(20),
    );
    put_records(store, records, 4).await.expect("records");
    dir
}

async fn report(dir: &Path, args: &[&str]) -> Output {
    tugboat()
        .current_dir(dir)
        .arg("report")
        .args(args)
        .output()
        .await
        .expect("run tugboat report")
}

#[tokio::test(flavor = "multi_thread")]
async fn report_on_local_records_in_the_terminal_and_as_json() {
    // 30 releases over 25 days; every seventh rolled back (4 of them).
    let dir = example_with_local_records(30).await;
    let human = report(dir.path(), &["--env", "local"]).await;
    assert_exit(&human, 0);
    let stdout = String::from_utf8_lossy(&human.stdout);
    for expected in [
        "Delivery report: cv-matcher, local",
        "Deployment frequency",
        "Lead time for changes",
        "Change failure rate",
        "13.3%",
        "4 of 30 release(s) failed or were rolled back",
        "Time to restore",
        "Slowest stages (median)",
        "deploy",
        "Last releases",
        "rolled back",
    ] {
        assert!(stdout.contains(expected), "{expected} in:\n{stdout}");
    }
    // The default table shows 10 releases and says how many more there are.
    assert!(stdout.contains("… 20 more"), "{stdout}");

    let json = report(dir.path(), &["--env", "local", "--output", "json"]).await;
    assert_exit(&json, 0);
    let numbers = &result(&json)["report"];
    assert_eq!(numbers["counts"]["releases"], 30);
    assert_eq!(numbers["counts"]["rolled_back"], 4);
    assert_eq!(numbers["change_failure_rate"]["failed"], 4);
    assert_eq!(numbers["change_failure_rate"]["band"], "medium");
    // 26 successful releases in 30 days, 1.2 h to 5.2 h from commit.
    assert_eq!(numbers["deployment_frequency"]["releases"], 26);
    assert_eq!(numbers["deployment_frequency"]["band"], "high");
    assert_eq!(numbers["lead_time"]["band"], "elite");
    assert_eq!(numbers["releases"].as_array().map(Vec::len), Some(30));

    // A shorter window holds fewer releases: 5 days back, one every 20 hours.
    let week = report(
        dir.path(),
        &["--env", "local", "--since", "5d", "--output", "json"],
    )
    .await;
    assert_exit(&week, 0);
    assert_eq!(result(&week)["report"]["counts"]["releases"], 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_report_flags_exit_2_with_the_flag_the_value_and_a_fix() {
    let dir = example_with_local_records(1).await;
    let missing = dir.path().join("no-such-folder/report.html");
    let cases: [(Vec<&str>, &[&str]); 4] = [
        (
            vec!["--env", "local", "--since", "30x"],
            &[
                "--since \"30x\"",
                "the unit is h, d or w",
                "help: pass a span",
            ],
        ),
        (
            vec!["--env", "local", "--since", "last tuesday"],
            &["--since \"last tuesday\"", "help: pass a span"],
        ),
        (vec!["--env", "nowhere"], &["\"nowhere\"", "local"]),
        (
            vec!["--env", "local", "--html", missing.to_str().expect("utf-8")],
            &["--html", "no-such-folder", "help:"],
        ),
    ];
    for (args, expected) in cases {
        let output = report(dir.path(), &args).await;
        assert_exit(&output, 2);
        let message = text(&output);
        assert!(!message.contains("panicked"), "{message}");
        for part in expected {
            assert!(message.contains(part), "{args:?}: {part} in {message}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn report_reads_the_records_in_s3() {
    let seeded = Seeded::start().await;
    let store = Arc::new(S3ArtifactStore::new(
        seeded.fixture.clients.s3.clone(),
        BUCKET,
        "tugboat",
    ));
    // 50 releases, one every 18 hours: 40 of them in the last 30 days.
    let records = sample_records(
        "cv-matcher",
        "production",
        50,
        chrono::Utc::now() - chrono::Duration::hours(2),
        chrono::Duration::hours(18),
    );
    put_records(store, records, 8).await.expect("records in S3");
    let output = seeded
        .run(&["report", "--env", "production", "--output", "json"])
        .await;
    assert_exit(&output, 0);
    let numbers = &result(&output)["report"];
    assert_eq!(numbers["environments"], serde_json::json!(["production"]));
    assert_eq!(numbers["counts"]["releases"], 40);
    let human = seeded
        .run(&[
            "report",
            "--env",
            "production",
            "--service",
            "cv-matcher-service",
        ])
        .await;
    assert_exit(&human, 0);
    assert!(text(&human).contains("40 release(s)"), "{}", text(&human));
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("TUGBOAT_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "the HTML report test needs Chromium at {} (bash .ci/setup-backends installs Debian's chromium; TUGBOAT_CHROMIUM=path overrides)",
        path.display()
    );
    path
}

/// Where Chromium itself connects on its own, whatever page it shows: the extension and
/// component updater (Debian's wrapper turns remote extensions on), the network time
/// query and the account check of Debian's built-in API keys. None is the page's.
const BROWSER_SERVICES: [&str; 3] = [
    "update.googleapis.com",
    "accounts.google.com",
    "clients2.google.com",
];

/// The host a proxied request's first line names (`CONNECT h:443`, `GET http://h/…`).
fn requested_host(first_line: &str) -> String {
    let target = first_line.split_whitespace().nth(1).unwrap_or_default();
    let target = target.split("://").nth(1).unwrap_or(target);
    let host_port = target.split('/').next().unwrap_or_default();
    host_port.split(':').next().unwrap_or_default().to_string()
}

/// A loopback "proxy" that records the host of every request sent to it, answers none.
async fn recording_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let recorded = hosts.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut head = vec![0; 512];
                let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut head))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                let text = String::from_utf8_lossy(&head[..read]).to_string();
                let first_line = text.lines().next().unwrap_or("(nothing sent)");
                if let Ok(mut hosts) = recorded.lock() {
                    hosts.push(requested_host(first_line));
                }
            });
        }
    });
    (address, hosts)
}

/// The hosts requested through the proxy other than Chromium's own services.
fn page_requests(hosts: &Mutex<Vec<String>>) -> Vec<String> {
    let hosts = hosts.lock().map(|h| h.clone()).unwrap_or_default();
    hosts
        .into_iter()
        .filter(|host| !BROWSER_SERVICES.contains(&host.as_str()))
        .collect()
}

/// Headless Chromium on `page` with every request sent to `proxy` (loopback included)
/// and its own background traffic off; `extra` says what to produce.
async fn render(page: &Path, proxy: &str, profile: &Path, extra: &[String]) -> Output {
    let mut command = tokio::process::Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--window-size=1280,800",
            "--proxy-bypass-list=<-loopback>",
        ])
        .arg(format!("--proxy-server=http://{proxy}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("run chromium")
}

/// Distinct colours and the share of pixels that are not (near) white.
fn pixel_stats(png_file: &Path) -> (u32, u32, usize, f64) {
    let file = std::fs::File::open(png_file).expect("the screenshot");
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size().expect("a buffer size")];
    let frame = reader.next_frame(&mut buffer).expect("a frame");
    let channels = match frame.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    let pixels: Vec<&[u8]> = buffer[..frame.buffer_size()]
        .chunks_exact(channels)
        .collect();
    let colours: HashSet<[u8; 3]> = pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    let not_white = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|&c| c < 235))
        .count();
    (
        frame.width,
        frame.height,
        colours.len(),
        not_white as f64 / pixels.len().max(1) as f64,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_html_report_renders_offline_in_chromium() {
    let dir = example_with_local_records(30).await;
    let page = dir.path().join("report.html");
    let page_arg = page.to_str().expect("utf-8").to_string();
    let written = report(
        dir.path(),
        &["--env", "local", "--html", &page_arg, "--output", "json"],
    )
    .await;
    assert_exit(&written, 0);
    let numbers = &result(&written)["report"];
    let rate = numbers["change_failure_rate"]["rate"]
        .as_f64()
        .expect("a rate");
    let html = std::fs::read_to_string(&page).expect("the page");
    for forbidden in ["://", "<script", "<link", "src=", "url("] {
        assert!(!html.contains(forbidden), "{forbidden} in the page");
    }

    // First, that the harness sees a request when a page makes one.
    let (proxy, requests) = recording_proxy().await;
    let probe = dir.path().join("probe.html");
    std::fs::write(
        &probe,
        "<!DOCTYPE html><html><body><img src=\"http://tugboat-probe.test/x.png\"></body></html>",
    )
    .expect("probe page");
    let profile = dir.path().join("chromium-profile");
    let _ = render(&probe, &proxy, &profile, &["--dump-dom".to_string()]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        page_requests(&requests).contains(&"tugboat-probe.test".to_string()),
        "the proxy did not see the probe page's request: {:?}",
        requests.lock().map(|r| r.clone()).unwrap_or_default()
    );

    // The report: no request of the page's while Chromium loads, renders and shoots it.
    let (proxy, requests) = recording_proxy().await;
    let shot = dir.path().join("report.png");
    let screenshot = render(
        &page,
        &proxy,
        &profile,
        &[format!("--screenshot={}", shot.display())],
    )
    .await;
    assert!(shot.is_file(), "no screenshot: {}", text(&screenshot));
    let dom = render(&page, &proxy, &profile, &["--dump-dom".to_string()]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        page_requests(&requests),
        Vec::<String>::new(),
        "the page made requests"
    );

    let (width, height, colours, not_white) = pixel_stats(&shot);
    assert_eq!((width, height), (1280, 800));
    assert!(
        colours >= 64,
        "a blank-looking screenshot: {colours} colours"
    );
    assert!(
        (0.05..0.95).contains(&not_white),
        "{:.1}% of the pixels are not white",
        not_white * 100.0
    );

    let dom = String::from_utf8_lossy(&dom.stdout);
    for name in [
        "Deployment frequency",
        "Lead time for changes",
        "Change failure rate",
        "Time to restore",
    ] {
        assert!(dom.contains(name), "{name} is not in the DOM");
    }
    let percent = format!("{:.1}%", rate * 100.0);
    assert!(dom.contains(&percent), "{percent} is not in the DOM");
    assert!(dom.contains("<svg"), "the charts are in the DOM");
    assert!(
        dom.contains("class=\"metric"),
        "the metric cards are in the DOM"
    );
}
