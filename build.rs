//! Tests that drive outside tools (Chromium, systemd-analyze, openssl,
//! curl, node, Debian's Python with PyJWT, redis-server) fail when the tool is missing, saying which package to install.
//! Only when the run allows it, with SKIP_MISSING_TOOLS=1 (and never when
//! CI=true), are they compiled as ignored instead, so the summary shows
//! them as ignored rather than passed: this script sets `skip_<group>` for
//! each group whose tools are missing.

use std::path::Path;

/// A group of tests, and the programs they need.
const GROUPS: [(&str, &[&str]); 6] = [
    ("browser", &["chromium", "chromedriver"]),
    ("systemd", &["systemd-analyze"]),
    ("openssl", &["openssl"]),
    ("curl", &["curl"]),
    ("node", &["node"]),
    ("redis", &["redis-server"]),
];

/// Debian's Python with PyJWT (python3-jwt), for docs/authentication.md's
/// Python examples.
fn has_pyjwt() -> bool {
    std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import jwt, cryptography"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| Path::new(&dir.join(program)).is_file())
}

fn main() {
    println!("cargo::rerun-if-env-changed=SKIP_MISSING_TOOLS");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PATH");
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    let may_skip = set("SKIP_MISSING_TOOLS") && !set("CI");
    for (group, programs) in GROUPS {
        println!("cargo::rustc-check-cfg=cfg(skip_{group})");
        if may_skip {
            // Installing a tool should bring its tests back.
            for program in programs {
                println!("cargo::rerun-if-changed=/usr/bin/{program}");
            }
        }
        if may_skip && !programs.iter().all(|program| on_path(program)) {
            println!("cargo::rustc-cfg=skip_{group}");
            println!("cargo::warning=the {group} tests are skipped: {} missing", programs.join(" or "));
        }
    }
    println!("cargo::rustc-check-cfg=cfg(skip_pyjwt)");
    if may_skip && !has_pyjwt() {
        println!("cargo::rustc-cfg=skip_pyjwt");
        println!("cargo::warning=the PyJWT tests are skipped: /usr/bin/python3 with python3-jwt missing");
    }
}
