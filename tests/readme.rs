//! README's tour, run as one script in one shell, as a newcomer would type
//! it: every `sh` block of its "A 30-second tour" section, in order. The
//! commands say `cargo run --release -- ...`; here a `cargo` on PATH stands
//! for that and runs the binary under test, and port 8080 becomes a free
//! one (in the commands, and for the servers through ROOMCAST_SERVER__PORT).
//! Needs curl (scripts/test.sh installs it).

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

/// The `sh` blocks of the section headed `heading`, in order.
fn sh_blocks(markdown: &str, heading: &str) -> Vec<String> {
    let start = markdown.find(heading).unwrap_or_else(|| panic!("README has no {heading:?}"));
    let section = &markdown[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("a closed block");
        blocks.push(body[..close].to_string());
        rest = &body[close + 3..];
    }
    blocks
}

#[test]
#[cfg_attr(skip_curl, ignore = "curl is missing and SKIP_MISSING_TOOLS=1")]
fn the_tour_runs_as_one_script() {
    common::tool("curl", "curl");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = sh_blocks(&readme, "## A 30-second tour");
    assert!(blocks.len() >= 3, "the tour's blocks: {blocks:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    // If a command fails, the servers started in the background go too.
    let header = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n";
    let script = format!("{header}{}", blocks.concat()).replace("8080", &port);

    // `cargo run --release -- ARGS` is the binary under test with ARGS.
    let bin = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("readme-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let cargo = bin.join("cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\n[ \"$1 $2 $3\" = \"run --release --\" ] || {{ echo \"fake cargo: $*\" >&2; exit 99; }}\n\
             shift 3\nexec {} \"$@\"\n",
            common::BINARY
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let mut shell = std::process::Command::new("bash");
    // Its own process group, so a timeout can stop the servers it started.
    std::os::unix::process::CommandExt::process_group(&mut shell, 0);
    shell.current_dir(env!("CARGO_MANIFEST_DIR")).env("PATH", path).stdin(Stdio::piped());
    shell.stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("ROOMCAST_") || key == "RUST_LOG" {
            shell.env_remove(key);
        }
    }
    // The servers of the tour listen where its URLs (8080, replaced) point.
    shell.env("ROOMCAST_SERVER__PORT", &port);
    let mut child = shell.spawn().expect("bash");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(output) => output.expect("bash ran"),
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-9", "--", &format!("-{pid}")]).status();
            panic!("the tour did not end within 120 s:\n{script}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the tour failed\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains(r#"{"seq":1}"#), "the API publish: {stdout}");
    assert!(stdout.contains("\"body\":\"from a script\""), "the piped client: {stdout}");
    assert!(stdout.contains("roomcast_messages_in_total"), "the metrics: {stdout}");
    assert!(stdout.contains("roomcast load fanout") && stdout.contains("lost"), "the load test: {stdout}");
    assert!(stderr.contains(&format!("listening on http://127.0.0.1:{port}")), "{stderr}");
}
