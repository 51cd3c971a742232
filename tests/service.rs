//! `deploy/roomcast.service`: `systemd-analyze verify` finds nothing to say
//! about it, and it keeps the settings docs/operations.md promises.
//!
//! Needs `systemd-analyze` (Debian's `systemd` package; CI installs it).
//! Where it is missing the verify test says so and passes, unless
//! CI_REQUIRE_TOOLS is set (CI sets it), which makes it fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT: &str = include_str!("../deploy/roomcast.service");
const ANALYZE: &str = "systemd-analyze";

/// The unit with its binary path pointed at the binary under test (verify
/// checks that the executable exists), written to a fresh directory.
fn unit_copy(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcast-unit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roomcast.service");
    std::fs::write(&path, text.replace("/usr/local/bin/roomcast", common::BINARY)).unwrap();
    path
}

/// `systemd-analyze verify` on `path`: its exit status and what it printed.
fn verify(path: &Path) -> Option<(bool, String)> {
    let output = match Command::new(ANALYZE).arg("verify").arg(path).output() {
        Ok(output) => output,
        Err(e) => {
            let why = format!("cannot run {ANALYZE} ({e}); apt-get install systemd");
            if std::env::var_os("CI_REQUIRE_TOOLS").is_some() {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        }
    };
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Some((output.status.success(), said))
}

#[test]
fn systemd_analyze_verify_is_clean() {
    let path = unit_copy("clean", UNIT);
    let Some((ok, said)) = verify(&path) else { return };
    assert!(ok && said.trim().is_empty(), "systemd-analyze verify: {said}");

    // The check can fail: a misspelt directive is reported.
    let broken = unit_copy("broken", &UNIT.replace("NoNewPrivileges=", "NoNewPrivilege="));
    let (_, said) = verify(&broken).expect("ran before");
    assert!(said.contains("NoNewPrivilege"), "a misspelt key is reported: {said:?}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    let _ = std::fs::remove_dir_all(broken.parent().unwrap());
}

#[test]
fn the_unit_runs_hardened_and_drains_on_sigterm() {
    let settings: Vec<(&str, &str)> = UNIT
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .collect();
    let value = |key: &str| settings.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    assert_eq!(value("User"), Some("roomcast"), "a dedicated user");
    assert_eq!(value("NoNewPrivileges"), Some("yes"));
    assert_eq!(value("ProtectSystem"), Some("strict"));
    assert_eq!(value("Restart"), Some("on-failure"));
    assert_eq!(value("KillSignal"), Some("SIGTERM"), "SIGTERM starts the drain");
    let files: u64 = value("LimitNOFILE").and_then(|v| v.parse().ok()).expect("LimitNOFILE");
    assert!(files >= 100_000, "room for max_connections' default");
    // systemd must wait out the drain (shutdown_timeout, 10 s by default)
    // before it sends SIGKILL.
    let stop: u64 = value("TimeoutStopSec").and_then(|v| v.parse().ok()).expect("TimeoutStopSec");
    assert!(stop > 10, "TimeoutStopSec={stop} outlasts the default shutdown_timeout");
    assert!(value("ExecStart").is_some_and(|v| v.ends_with("serve --config /etc/roomcast/roomcast.toml")));
}
