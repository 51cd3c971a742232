//! docs/authentication.md's token examples, run exactly as written: its
//! Python blocks with PyJWT (Debian's python3-jwt, under /usr/bin/python3)
//! and its Node blocks with Node's own crypto. What each prints must be a
//! token a real roomcast accepts. This is also the check of tokens made by
//! implementations independent of roomcast's (scripts/test.sh installs
//! them; under CI a missing one fails).

mod common;

use std::path::{Path, PathBuf};

use common::{Client, Server};

const SECRET: &str = "the-docs-secret-of-at-least-32-bytes";
/// Debian's Python, which has Debian's PyJWT (python3-jwt).
const PYTHON: &str = "/usr/bin/python3";

/// The fenced blocks of `language` in the docs, in order.
fn blocks(language: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/authentication.md")).unwrap();
    let fence = format!("```{language}\n");
    doc.split(&fence).skip(1).map(|rest| rest[..rest.find("```").expect("a closed block")].to_string()).collect()
}

/// A directory holding the ES256 examples' private key.
fn workdir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("auth-docs");
    std::fs::create_dir_all(&dir).unwrap();
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth/ec256-private.pem");
    std::fs::copy(key, dir.join("chat-signing-key.pem")).unwrap();
    dir
}

/// Runs `program` on `code` (from stdin) in `dir`; returns what it printed.
fn run(program: &Path, args: &[&str], code: &str, dir: &Path) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("CHAT_TOKEN_SECRET", SECRET)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    child.stdin.take().unwrap().write_all(code.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{code}\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// HS256 first, then ES256: each example's token must open a session for
/// user 42, named Ann.
async fn check(examples: Vec<String>, program: &Path, args: &[&str]) {
    assert_eq!(examples.len(), 2, "an HS256 and an ES256 example");
    let dir = workdir();
    let public_key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth/ec256-public.pem");
    let servers = [
        Server::start(&[("ROOMCAST_AUTH__MODE", "required"), ("ROOMCAST_AUTH__HMAC_SECRET", SECRET)]),
        Server::start(&[("ROOMCAST_AUTH__MODE", "required"), ("ROOMCAST_AUTH__PUBLIC_KEY", public_key)]),
    ];
    for (example, server) in examples.iter().zip(&servers) {
        let token = run(program, args, example, &dir);
        let mut client = Client::connect(&server.url(&format!("/ws?token={token}"))).await;
        let welcome = client.expect("welcome").await;
        assert_eq!(welcome["user"], "42", "{example}\n{welcome}");
        let joined = client.join("lobby").await;
        assert_eq!(joined["members"], 1);
        let members = client.request(serde_json::json!({"type": "members", "room": "lobby"})).await;
        assert_eq!(members["members"][0]["nick"], "Ann", "{members}");
    }
}

#[tokio::test]
#[cfg_attr(skip_pyjwt, ignore = "PyJWT (python3-jwt) is missing and SKIP_MISSING_TOOLS=1")]
async fn the_python_examples_make_tokens_roomcast_accepts() {
    let python = Path::new(PYTHON);
    let has_jwt = std::process::Command::new(python)
        .args(["-c", "import jwt, cryptography"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        has_jwt,
        "{PYTHON} with PyJWT is missing: install it (apt-get install python3-jwt python3-cryptography), \
         or run with SKIP_MISSING_TOOLS=1 to skip the tests that need it (they then show as ignored)"
    );
    check(blocks("python"), python, &["-"]).await;
}

#[tokio::test]
#[cfg_attr(skip_node, ignore = "node is missing and SKIP_MISSING_TOOLS=1")]
async fn the_node_examples_make_tokens_roomcast_accepts() {
    let node = common::tool("node", "nodejs");
    check(blocks("js"), &node, &["-"]).await;
}

/// The docs' configuration and their example grants (`rooms = ["team-*"]`,
/// `read = ["feed:*"]`) do what the docs say: a feed is read-only for the
/// user the example token is for, and closed to a user without a grant.
/// (The docs' block once left `feed:*` out of `private_rooms`, so the "read
/// only" feed took anyone's publishes.)
#[tokio::test]
async fn the_docs_configuration_makes_the_read_grant_read_only() {
    let config = blocks("toml").into_iter().find(|block| block.contains("private_rooms")).expect("the [auth] block");
    let private_rooms: Vec<String> = config
        .lines()
        .find_map(|line| line.trim().strip_prefix("private_rooms = "))
        .map(|list| list.split('#').next().unwrap_or(list))
        .and_then(|list| serde_json::from_str(list.trim()).ok())
        .expect("private_rooms as a list");
    let list = private_rooms.join(",");
    let server = Server::start(&[
        ("ROOMCAST_AUTH__MODE", "required"),
        ("ROOMCAST_AUTH__HMAC_SECRET", SECRET),
        ("ROOMCAST_AUTH__PRIVATE_ROOMS", &list),
    ]);
    let env = [("ROOMCAST_AUTH__HMAC_SECRET", SECRET)];
    // As the docs' `roomcast token` line makes it.
    let reader = common::mint(&["--sub", "42", "--name", "Ann", "--rooms", "team-*", "--read", "feed:*"], &env);
    let stranger = common::mint(&["--sub", "7"], &env);
    let mut ann = Client::connect(&server.url(&format!("/ws?token={reader}"))).await;
    ann.expect("welcome").await;
    ann.join("feed:prices").await;
    let publish = ann.request(serde_json::json!({"type": "publish", "room": "feed:prices", "body": 1, "ref": 1})).await;
    assert_eq!(publish["code"], "forbidden", "read-only: {publish}");
    let mut other = Client::connect(&server.url(&format!("/ws?token={stranger}"))).await;
    other.expect("welcome").await;
    let join = other.request(serde_json::json!({"type": "join", "room": "feed:prices", "ref": 1})).await;
    assert_eq!(join["code"], "forbidden", "private: {join}");
}
