//! A test whose tool is missing fails and says what to install; it never
//! counts as passed. Shown on the browser tests: their own test binary, run
//! with chromedriver gone from `PATH` and `CI=true`, as a CI machine
//! without it would.

use std::path::PathBuf;
use std::process::Command;

/// The newest `browser-<hash>` test binary next to this one: `cargo test`
/// builds every test target before it runs any.
fn browser_tests() -> PathBuf {
    let this = std::env::current_exe().expect("this test binary");
    let deps = this.parent().expect("its directory");
    let candidates = std::fs::read_dir(deps).expect("the test binaries").filter_map(Result::ok).filter(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        name.strip_prefix("browser-").is_some_and(|hash| hash.chars().all(|c| c.is_ascii_hexdigit()))
    });
    let newest = candidates.max_by_key(|entry| entry.metadata().and_then(|m| m.modified()).ok());
    newest.map(|entry| entry.path()).expect("the browser tests are built: run the whole suite (cargo test)")
}

#[test]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
fn without_chromedriver_the_browser_tests_fail_and_say_what_to_install() {
    // A PATH with Chromium and nothing else.
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("path-without-chromedriver");
    let _ = std::fs::remove_dir_all(&bin);
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("/usr/bin/chromium", bin.join("chromium")).unwrap();

    let output = Command::new(browser_tests())
        .env("PATH", &bin)
        .env("CI", "true")
        .args(["--test-threads", "2"])
        .output()
        .expect("run the browser tests");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(101), "the run fails: {stdout}");
    assert!(stdout.contains("test result: FAILED. 0 passed"), "none passed: {stdout}");
    assert!(
        stderr.contains("chromedriver is missing: install it (apt-get install chromium-driver)")
            || stdout.contains("chromedriver is missing: install it (apt-get install chromium-driver)"),
        "the reason, with the package to install: {stdout}\n{stderr}"
    );
}
