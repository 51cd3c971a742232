//! `deploy/roomcast.service`: `systemd-analyze verify` finds nothing to say
//! about it, and it keeps the settings docs/operations.md promises.
//!
//! Needs `systemd-analyze` (Debian's `systemd` package; scripts/test.sh
//! installs it). Where it is missing the verify test fails and says so;
//! SKIP_MISSING_TOOLS=1 compiles it as ignored instead (build.rs).

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
fn verify(path: &Path) -> (bool, String) {
    let analyze = common::tool(ANALYZE, "systemd");
    let output = Command::new(analyze).arg("verify").arg(path).output().expect("run systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

#[test]
#[cfg_attr(skip_systemd, ignore = "systemd-analyze is missing and SKIP_MISSING_TOOLS=1")]
fn systemd_analyze_verify_is_clean() {
    let path = unit_copy("clean", UNIT);
    let (ok, said) = verify(&path);
    assert!(ok && said.trim().is_empty(), "systemd-analyze verify: {said}");

    // The check can fail: a misspelt directive is reported.
    let broken = unit_copy("broken", &UNIT.replace("NoNewPrivileges=", "NoNewPrivilege="));
    let (_, said) = verify(&broken);
    assert!(said.contains("NoNewPrivilege"), "a misspelt key is reported: {said:?}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    let _ = std::fs::remove_dir_all(broken.parent().unwrap());
}

#[test]
fn the_unit_runs_hardened_drains_on_sigterm_and_reloads_on_sighup() {
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
    assert_eq!(value("ExecReload"), Some("/bin/kill -HUP $MAINPID"), "systemctl reload sends SIGHUP");
}
