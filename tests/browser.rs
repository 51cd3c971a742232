//! The chat page (page.md) in a real browser: headless Chromium driven
//! through chromedriver (WebDriver), against a real roomcast.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh
//! installs them). Where they are missing these tests fail and say so;
//! SKIP_MISSING_TOOLS=1 compiles them as ignored instead (build.rs).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Client, DEADLINE, Proxy, Server};
use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The token secret of the tests with authentication on.
const SECRET: &str = "browser-secret-of-at-least-32-bytes";

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver; a missing browser fails the test, saying what to install.
async fn driver() -> Driver {
    common::tool("chromium", "chromium");
    common::tool("chromedriver", "chromium-driver");
    let mut child = Command::new(CHROMEDRIVER)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    // chromedriver announces "... started successfully on port N." once it
    // listens.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                let _ = tx.send(rest.trim_end_matches('.').trim().to_string());
            }
        }
    });
    let port = rx.recv_timeout(DEADLINE).expect("chromedriver said on which port it listens");
    let url = format!("http://127.0.0.1:{port}");
    Driver { child, url }
}

/// A browser session with a fresh profile, showing the page at `page`.
struct Browser {
    client: fantoccini::Client,
    _profile: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    async fn open(driver: &Driver, page: &str) -> Browser {
        Self::open_with(driver, page, &[]).await
    }

    /// Like `open`, with more Chromium arguments.
    async fn open_with(driver: &Driver, page: &str, extra_args: &[&str]) -> Browser {
        let browser = Self::launch(driver, page, extra_args).await;
        browser.until("document.querySelector('[data-testid=status]').textContent === 'connected'").await;
        browser
    }

    /// Opens `page` and waits until the status starts with `status`.
    async fn open_with_status(driver: &Driver, page: &str, status: &str) -> Browser {
        let browser = Self::launch(driver, page, &[]).await;
        let condition =
            format!("document.querySelector('[data-testid=status]').textContent.startsWith({})", json!(status));
        browser.until(&condition).await;
        browser
    }

    async fn launch(driver: &Driver, page: &str, extra_args: &[&str]) -> Browser {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "roomcast-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1100,760",
        ]
        .iter()
        .chain(extra_args)
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
        // Both of rustls' crypto providers are compiled in (through
        // fantoccini's dependencies): say which one to use.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("a browser session");
        let timeouts = fantoccini::wd::TimeoutConfiguration::new(Some(DEADLINE), Some(DEADLINE), None);
        client.update_timeouts(timeouts).await.expect("timeouts");
        client.goto(page).await.expect("open the page");
        Browser { client, _profile: TempDir(profile) }
    }

    /// Waits (event-driven: a MutationObserver) until the JavaScript
    /// expression `condition` is truthy; returns its value.
    async fn until(&self, condition: &str) -> Value {
        let script = r#"
            const check = new Function("return (" + arguments[0] + ");");
            const done = arguments[arguments.length - 1];
            const test = () => { let v; try { v = check(); } catch (e) { return false; }
                                 if (v) { observer.disconnect(); done(v); return true; } return false; };
            const observer = new MutationObserver(test);
            if (!test()) observer.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
        "#;
        match self.client.execute_async(script, vec![json!(condition)]).await {
            Ok(value) => value,
            Err(e) => panic!("not true within {DEADLINE:?}: {condition}: {e}\npage text: {}", self.page_text().await),
        }
    }

    async fn page_text(&self) -> String {
        self.client.execute("return document.body.innerText", vec![]).await.map(|v| v.to_string()).unwrap_or_default()
    }

    async fn testid(&self, id: &str) -> fantoccini::elements::Element {
        self.client.find(Locator::Css(&format!("[data-testid=\"{id}\"]"))).await.unwrap_or_else(|e| panic!("{id}: {e}"))
    }

    /// Types into a field and presses Enter.
    async fn enter(&self, id: &str, text: &str) {
        let field = self.testid(id).await;
        field.clear().await.unwrap();
        field.send_keys(&format!("{text}{}", char::from(fantoccini::key::Key::Enter))).await.unwrap();
    }

    async fn join(&self, room: &str) {
        self.enter("room-input", room).await;
        self.until(&format!(
            "[...document.querySelectorAll('[data-testid=room-tab]')].some(t => t.textContent.startsWith({}))",
            json!(room)
        ))
        .await;
    }

    async fn say(&self, text: &str) {
        let input = self.testid("message-input").await;
        input.send_keys(text).await.unwrap();
        self.testid("send-button").await.click().await.unwrap();
    }

    /// The texts of every element with this data-testid, in order.
    async fn texts(&self, id: &str) -> Vec<String> {
        let script = format!("return [...document.querySelectorAll('[data-testid={id}]')].map(e => e.textContent)");
        let value = self.client.execute(&script, vec![]).await.unwrap();
        serde_json::from_value(value).unwrap()
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// `[data-testid=message]` elements whose text contains `needle`.
fn message_with(needle: &str) -> String {
    format!(
        "[...document.querySelectorAll('[data-testid=message]')].some(m => m.textContent.includes({}))",
        json!(needle)
    )
}

fn member_list_is(names: &[&str]) -> String {
    // Sorted the same way on both sides (by UTF-16 code unit, which for
    // these ASCII names is byte order).
    let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    names.sort();
    format!(
        "JSON.stringify([...document.querySelectorAll('[data-testid=member]')].map(m => m.textContent).sort()) === {}",
        json!(serde_json::to_string(&names).unwrap())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn two_people_chat_with_presence_and_nicks() {
    let driver = driver().await;
    let server = Server::start(&[]);
    let page = server.http("/");
    let ann = Browser::open(&driver, &page).await;
    let bob = Browser::open(&driver, &page).await;
    ann.enter("nick-input", "ann").await;
    bob.enter("nick-input", "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    ann.until(&member_list_is(&["ann", "bob"])).await;
    bob.until(&member_list_is(&["ann", "bob"])).await;

    ann.say("hello bob").await;
    bob.until(&message_with("hello bob")).await;
    let seen = bob.texts("message").await;
    assert!(seen[0].contains("ann") && seen[0].contains("hello bob"), "{seen:?}");
    bob.enter("message-input", "hi ann").await;
    ann.until(&message_with("hi ann")).await;
    assert_eq!(ann.texts("message").await.len(), 2, "oldest first, each once");
    assert!(ann.texts("message").await[0].contains("hello bob"));

    // Presence: bob leaves, ann's list follows.
    bob.testid("leave-button").await.click().await.unwrap();
    ann.until(&member_list_is(&["ann"])).await;
    // A client outside the browser sees the same room.
    let mut observer = Client::json(&server).await;
    let joined = observer.request(json!({"type":"join","room":"lobby","history":10})).await;
    let bodies: Vec<&str> = joined["history"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["hello bob", "hi ann"]);
    ann.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn everything_displayed_is_escaped() {
    let driver = driver().await;
    let server = Server::start(&[]);
    let viewer = Browser::open(&driver, &server.http("/")).await;
    viewer.join("x").await;
    let mut sender = Client::json(&server).await;
    let evil = "<img src=x onerror=pwned=1>";
    assert_eq!(sender.request(json!({"type":"nick","name":evil})).await["type"], "ok");
    sender.join("x").await;
    sender.request(json!({"type":"publish","room":"x","body":"<b>bold</b><script>window.pwned=2</script>"})).await;
    viewer.until(&message_with("<b>bold</b>")).await;
    viewer.until(&member_list_is(&[evil, &viewer_id(&viewer).await])).await;
    let texts = viewer.texts("message").await;
    assert!(texts[0].contains(evil), "the nick shows as text: {texts:?}");
    let injected = viewer.client.execute("return [window.pwned ?? null, document.querySelectorAll('#log img, #log b, #log script, #members img').length]", vec![]).await.unwrap();
    assert_eq!(injected, json!([null, 0]), "no markup from other people reached the DOM");
    viewer.close().await;
}

/// The viewer's own id, as shown in its member list (it set no nick).
async fn viewer_id(browser: &Browser) -> String {
    browser.until("document.querySelector('.member-list li.me')").await;
    let value = browser
        .client
        .execute("return document.querySelector('.member-list li.me').textContent", vec![])
        .await
        .unwrap();
    value.as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn several_rooms_with_tabs() {
    let driver = driver().await;
    let server = Server::start(&[]);
    let me = Browser::open(&driver, &server.http("/")).await;
    me.join("first").await;
    me.join("second").await;
    assert_eq!(me.texts("room-tab").await, vec!["first", "second"]);
    // `second` is current: what is said in `first` waits behind its tab.
    let mut other = Client::json(&server).await;
    other.join("first").await;
    other.request(json!({"type":"publish","room":"first","body":"in first"})).await;
    other.join("second").await;
    other.request(json!({"type":"publish","room":"second","body":"in second"})).await;
    me.until(&message_with("in second")).await;
    assert!(!me.texts("message").await.iter().any(|t| t.contains("in first")));
    me.until("[...document.querySelectorAll('[data-testid=room-tab]')][0].textContent === 'first1'").await; // unread badge
    me.client.find(Locator::Css("[data-testid=room-tab]")).await.unwrap().click().await.unwrap();
    me.until(&message_with("in first")).await;
    assert_eq!(me.texts("message").await.len(), 1);
    // Leaving the current room makes another current.
    me.testid("leave-button").await.click().await.unwrap();
    me.until("document.querySelectorAll('[data-testid=room-tab]').length === 1").await;
    me.until(&message_with("in second")).await;
    me.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn a_reconnect_recovers_missed_messages_without_duplicates() {
    let driver = driver().await;
    let server = Server::start(&[]);
    // The page is served through a proxy, so its WebSocket goes through it
    // too and can be cut while the server runs on.
    let proxy = Proxy::start(server.addr).await;
    let me = Browser::open(&driver, &format!("http://{}/", proxy.addr)).await;
    me.join("news").await;
    let mut other = Client::json(&server).await;
    other.join("news").await;
    other.request(json!({"type":"publish","room":"news","body":"before"})).await;
    me.until(&message_with("before")).await;

    proxy.cut_all();
    me.until("document.querySelector('[data-testid=status]').textContent !== 'connected'").await;
    for body in ["missed one", "missed two"] {
        other.request(json!({"type":"publish","room":"news","body":body})).await;
    }
    me.until("document.querySelector('[data-testid=status]').textContent === 'connected'").await;
    me.until(&message_with("missed two")).await;
    other.request(json!({"type":"publish","room":"news","body":"after"})).await;
    me.until(&message_with("after")).await;
    let texts = me.texts("message").await;
    let bodies: Vec<&str> = ["before", "missed one", "missed two", "after"].to_vec();
    assert_eq!(texts.len(), 4, "no duplicates: {texts:?}");
    for (text, body) in texts.iter().zip(bodies) {
        assert!(text.ends_with(body), "in order: {texts:?}");
    }
    assert!(me.texts("notice").await.is_empty(), "everything was recovered");
    me.close().await;
}

/// The server restarts under the page: the room comes back empty under a
/// new epoch, its seq counting from 1 again. Every message published after
/// the restart is shown, once, and nothing claims that messages were lost
/// (before epochs, the page took seq 1, 2, 3 for ones it had seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn after_a_server_restart_every_new_message_is_shown_once() {
    let driver = driver().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let server = Server::start(&[("ROOMCAST_SERVER__PORT", &port)]);
    let me = Browser::open(&driver, &server.http("/")).await;
    me.join("news").await;
    let mut other = Client::json(&server).await;
    other.join("news").await;
    for n in 0..4 {
        other.request(json!({"type":"publish","room":"news","body":format!("before {n}")})).await;
    }
    me.until(&message_with("before 3")).await;

    drop(other);
    drop(server);
    me.until("document.querySelector('[data-testid=status]').textContent !== 'connected'").await;
    let server = Server::start(&[("ROOMCAST_SERVER__PORT", &port)]);
    me.until("document.querySelector('[data-testid=status]').textContent === 'connected'").await;
    let mut other = Client::json(&server).await;
    other.join("news").await;
    for n in 0..3 {
        other.request(json!({"type":"publish","room":"news","body":format!("after {n}")})).await;
    }
    me.until(&message_with("after 2")).await;
    let texts = me.texts("message").await;
    let bodies: Vec<String> =
        (0..4).map(|n| format!("before {n}")).chain((0..3).map(|n| format!("after {n}"))).collect();
    assert_eq!(texts.len(), bodies.len(), "each once: {texts:?}");
    for (text, body) in texts.iter().zip(&bodies) {
        assert!(text.ends_with(body.as_str()), "in order: {texts:?}");
    }
    assert!(me.texts("notice").await.is_empty(), "no notice: {:?}", me.texts("notice").await);
    me.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn messages_that_cannot_be_recovered_are_announced() {
    let driver = driver().await;
    // Two messages of history: a longer absence cannot be recovered.
    let server = Server::start(&[("ROOMCAST_ROOMS__HISTORY", "2")]);
    let proxy = Proxy::start(server.addr).await;
    let me = Browser::open(&driver, &format!("http://{}/", proxy.addr)).await;
    me.join("busy").await;
    let mut other = Client::json(&server).await;
    other.join("busy").await;
    proxy.cut_all();
    me.until("document.querySelector('[data-testid=status]').textContent !== 'connected'").await;
    for n in 1..=5 {
        other.request(json!({"type":"publish","room":"busy","body":format!("m{n}")})).await;
    }
    me.until("document.querySelector('[data-testid=notice]')").await;
    let notices = me.texts("notice").await;
    assert!(notices[0].contains("could not be recovered"), "{notices:?}");
    me.until(&message_with("m5")).await;
    let texts = me.texts("message").await;
    assert_eq!(texts.len(), 2, "what the history still had: {texts:?}");
    me.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn screenshot_of_the_page() {
    let driver = driver().await;
    let server = Server::start(&[]);
    let page = server.http("/");
    let ann = Browser::open(&driver, &page).await;
    let mut bob = Client::json(&server).await;
    ann.enter("nick-input", "ann").await;
    ann.join("general").await;
    ann.join("random").await;
    ann.client.find(Locator::Css("[data-testid=room-tab]")).await.unwrap().click().await.unwrap();
    bob.request(json!({"type":"nick","name":"bob"})).await;
    bob.join("general").await;
    ann.until(&member_list_is(&["ann", "bob"])).await;
    bob.request(json!({"type":"publish","room":"general","body":"morning! the deploy went out at 9"})).await;
    ann.until(&message_with("deploy went out")).await;
    ann.say("great, no alerts on my side").await;
    ann.until(&message_with("no alerts")).await;
    bob.request(json!({"type":"publish","room":"random","body":"lunch?"})).await;
    let png = ann.client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chat-page.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());
    ann.close().await;
}

/// On a phone-sized window the page fits its width (nothing to scroll
/// sideways) and the message field and send button stay on screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn fits_a_phone_screen() {
    let driver = driver().await;
    let server = Server::start(&[]);
    let phone = Browser::open(&driver, &server.http("/")).await;
    phone.client.set_window_size(390, 844).await.expect("resize");
    phone.enter("nick-input", "pat").await;
    phone.join("a-room-with-a-rather-long-name").await;
    phone.join("second").await;
    phone.say(&"a long line without any break ".repeat(12)).await;
    phone.until(&message_with("a long line")).await;
    let layout = phone
        .client
        .execute(
            r#"const fits = (id) => { const r = document.querySelector(`[data-testid=${id}]`).getBoundingClientRect();
                                     return r.width > 0 && r.left >= 0 && r.right <= innerWidth && r.bottom <= innerHeight; };
               return { width: innerWidth, scroll: document.documentElement.scrollWidth,
                        input: fits("message-input"), send: fits("send-button"), status: fits("status") };"#,
            vec![],
        )
        .await
        .unwrap();
    assert!(layout["width"].as_u64().unwrap() <= 420, "the window is phone-sized: {layout}");
    assert!(layout["scroll"].as_u64() <= layout["width"].as_u64(), "no sideways scrolling: {layout}");
    assert_eq!(
        (&layout["input"], &layout["send"], &layout["status"]),
        (&json!(true), &json!(true), &json!(true)),
        "{layout}"
    );
    let png = phone.client.screenshot().await.unwrap();
    std::fs::write(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chat-page-phone.png"), &png).unwrap();
    phone.close().await;
}

/// Served over https, the page connects with wss (a ws: socket from an https
/// page would be blocked as mixed content) and the origin check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn over_https_the_page_uses_wss() {
    let driver = driver().await;
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("a certificate");
    let dir = std::env::temp_dir().join(format!("roomcast-browser-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::start(&[
        ("ROOMCAST_SERVER__TLS__CERT", cert.to_str().unwrap()),
        ("ROOMCAST_SERVER__TLS__KEY", key.to_str().unwrap()),
    ]);
    let page = server.http("/");
    assert!(page.starts_with("https://"), "{page}");
    // The certificate is self-signed: tell Chromium to accept it.
    let me = Browser::open_with(&driver, &page, &["--ignore-certificate-errors"]).await;
    let socket_url = me.client.execute("return roomcast._socket.url", vec![]).await.unwrap();
    assert!(socket_url.as_str().is_some_and(|url| url.starts_with("wss://")), "{socket_url}");
    me.join("secure").await;
    me.say("sent over wss").await;
    me.until(&message_with("sent over wss")).await;
    me.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn the_page_passes_the_token_in_its_address_and_shows_a_refusal() {
    let env = [("ROOMCAST_AUTH__MODE", "required"), ("ROOMCAST_AUTH__HMAC_SECRET", SECRET)];
    let server = Server::start(&env);
    let token = |sub: &str| common::mint(&["--sub", sub, "--name", "Ann", "--ttl", "10m"], &env);
    let driver = driver().await;
    let ann = Browser::open(&driver, &server.http(&format!("/?token={}", token("ann")))).await;
    ann.join("lobby").await;
    ann.say("signed in").await;
    // The nick comes from the token's `name`; an outside client sees `user`.
    ann.until(&message_with("Ann")).await;
    let mut observer = Client::connect(&server.url(&format!("/ws?token={}", token("obs")))).await;
    observer.expect("welcome").await;
    let joined = observer.request(json!({"type": "join", "room": "lobby", "history": 1})).await;
    assert_eq!(joined["history"][0]["user"], "ann", "{joined}");
    // A bad token: refused, said so, and not retried in a loop.
    let refused = Browser::open_with_status(&driver, &server.http("/?token=not-a-token"), "refused").await;
    let status = refused.testid("status").await.text().await.unwrap();
    assert!(status.contains("unauthorized"), "{status}");
    assert_eq!(server.metric("roomcast_auth_failures_total{reason=\"invalid\"}").await, 1);
    refused.close().await;
    ann.close().await;
}

/// An HTTP front for the page's origin, as an application puts roomcast
/// behind its own host: it answers the requests `answer` takes (its token
/// endpoint, its own pages), counted, and hands every other request, and
/// WebSocket upgrades, to the server.
struct TokenGate {
    addr: std::net::SocketAddr,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenGate {
    /// A front whose `POST /token` answers `token()`.
    async fn start(target: std::net::SocketAddr, token: impl Fn() -> String + Send + Sync + 'static) -> TokenGate {
        let answer = move |head: &str| head.starts_with("post /token").then(|| ("text/plain", token()));
        Self::answering(target, answer).await
    }

    /// A front that answers what `answer` gives (content type, body) for a
    /// request head (lowercase), and passes the rest on.
    async fn answering(
        target: std::net::SocketAddr,
        answer: impl Fn(&str) -> Option<(&'static str, String)> + Send + Sync + 'static,
    ) -> TokenGate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the gate");
        let addr = listener.local_addr().unwrap();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (counter, answer) = (served.clone(), std::sync::Arc::new(answer));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (counter, answer) = (counter.clone(), answer.clone());
                tokio::spawn(async move {
                    let _ = gate_connection(client, target, &*answer, &counter).await;
                });
            }
        });
        TokenGate { addr, served }
    }

    fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads one HTTP message's head and body (by Content-Length) from
/// `stream`, `buffer` holding what was read beyond it.
async fn read_message(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    use tokio::io::AsyncReadExt;
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if stream.read_buf(buffer).await? == 0 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        if stream.read_buf(buffer).await? == 0 {
            return Ok(None);
        }
    }
    Ok(Some(buffer.drain(..head_end + length).collect()))
}

/// What a front answers itself: (content type, body) for a request head.
type Answer = dyn Fn(&str) -> Option<(&'static str, String)> + Send + Sync;

async fn gate_connection(
    mut client: tokio::net::TcpStream,
    target: std::net::SocketAddr,
    answer: &Answer,
    served: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut buffer = Vec::new();
    while let Some(request) = read_message(&mut client, &mut buffer).await? {
        let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
        if let Some((kind, body)) = answer(&head) {
            served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n", body.len());
            client.write_all(head.as_bytes()).await?;
            client.write_all(body.as_bytes()).await?;
            continue;
        }
        let mut server = tokio::net::TcpStream::connect(target).await?;
        server.write_all(&request).await?;
        if head.contains("upgrade: websocket") {
            server.write_all(&buffer).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
            return Ok(());
        }
        let mut from_server = Vec::new();
        let Some(response) = read_message(&mut server, &mut from_server).await? else {
            return Ok(());
        };
        client.write_all(&response).await?;
    }
    Ok(())
}

/// `?token_url=`: the page fetches a fresh token before its token expires
/// and sends it on the open connection, so a signed-in person stays
/// connected, in the same session, past the first token's life (before, the
/// server closed the page at expiry and it said "send auth").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn the_page_refreshes_its_token_from_token_url_before_it_expires() {
    let env =
        [("ROOMCAST_AUTH__MODE", "required"), ("ROOMCAST_AUTH__HMAC_SECRET", SECRET), ("ROOMCAST_AUTH__LEEWAY", "0s")];
    let server = Server::start(&env);
    let token = move |ttl: &str| common::mint(&["--sub", "ann", "--name", "Ann", "--ttl", ttl], &env);
    // Long enough for the browser to start and connect with it.
    let first = token("8s");
    let expires = std::time::Instant::now() + Duration::from_secs(8);
    let gate = TokenGate::start(server.addr, move || token("1h")).await;
    let driver = driver().await;
    let page = format!("http://{}/?token={first}&token_url=/token", gate.addr);
    let ann = Browser::open(&driver, &page).await;
    ann.join("lobby").await;
    let session = ann.client.execute("return roomcast.welcome.id", vec![]).await.unwrap();
    // Past the first token's expiry: a rule about time, so the test waits for it.
    tokio::time::sleep(expires.saturating_duration_since(std::time::Instant::now()) + Duration::from_millis(1500))
        .await;
    assert!(gate.served() >= 1, "the page asked the token URL");
    ann.say("still here").await;
    ann.until(&message_with("still here")).await;
    let now = ann.client.execute("return roomcast.welcome.id", vec![]).await.unwrap();
    assert_eq!(session, now, "the same session: refreshed, not reconnected");
    assert_eq!(ann.testid("status").await.text().await.unwrap(), "connected");
    ann.close().await;
}

/// Signed in with a token: the page says who, and the token's `name` is the
/// nick even when this browser remembered another one (before, a nick saved
/// by an earlier anonymous visit stood in for the token's name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn the_page_shows_who_is_signed_in_and_keeps_the_token_s_name() {
    let env = [("ROOMCAST_AUTH__MODE", "optional"), ("ROOMCAST_AUTH__HMAC_SECRET", SECRET)];
    let server = Server::start(&env);
    let token = common::mint(&["--sub", "ann-42", "--name", "Ann", "--ttl", "10m"], &env);
    let driver = driver().await;
    // An anonymous visit first, which saves a nick in this browser.
    let me = Browser::open(&driver, &server.http("/")).await;
    me.enter("nick-input", "zed").await;
    me.until("localStorage.getItem('roomcast.nick') === 'zed'").await;
    me.client.goto(&server.http(&format!("/?token={token}"))).await.unwrap();
    me.until("document.querySelector('[data-testid=status]').textContent === 'connected'").await;
    me.until("document.querySelector('[data-testid=signed-in]').textContent.includes('ann-42')").await;
    me.join("lobby").await;
    me.say("who am I").await;
    me.until(&message_with("who am I")).await;
    let texts = me.texts("message").await;
    assert!(texts[0].contains("Ann") && !texts[0].contains("zed"), "{texts:?}");
    me.close().await;
}

/// A room the server refuses (private, no grant) is dropped: its tab goes,
/// the page says why, and it is not joined (and refused) again on every
/// reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn a_refused_room_is_dropped_and_not_joined_again() {
    let env = [
        ("ROOMCAST_AUTH__MODE", "optional"),
        ("ROOMCAST_AUTH__HMAC_SECRET", SECRET),
        ("ROOMCAST_AUTH__PRIVATE_ROOMS", "private:*"),
    ];
    let server = Server::start(&env);
    let proxy = Proxy::start(server.addr).await;
    let driver = driver().await;
    let me = Browser::open(&driver, &format!("http://{}/", proxy.addr)).await;
    me.join("open").await;
    me.enter("room-input", "private:plans").await;
    me.until("[...document.querySelectorAll('[data-testid=notice]')].some(n => n.textContent.includes('Could not join private:plans'))").await;
    let tabs = me.texts("room-tab").await;
    assert_eq!(tabs, ["open"], "the refused room has no tab");
    let forbidden = "roomcast_auth_failures_total{reason=\"forbidden\"}";
    assert_eq!(server.metric(forbidden).await, 1);
    proxy.cut_all();
    me.until("document.querySelector('[data-testid=status]').textContent !== 'connected'").await;
    me.until("document.querySelector('[data-testid=status]').textContent === 'connected'").await;
    // A room joined after the reconnect answers after any rejoin sent before it.
    me.join("later").await;
    me.until("[...document.querySelectorAll('[data-testid=member]')].length === 1").await;
    assert_eq!(server.metric(forbidden).await, 1, "not asked again");
    me.close().await;
}

/// Text sent while the cluster's Redis is down stays in the box (the server
/// answered `unavailable`), and goes out once Redis is back: shown once,
/// the box then empty. Before, the box was cleared and the text lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn text_sent_while_the_cluster_is_unavailable_is_kept_and_sent_once() {
    let redis = common::Redis::start();
    let server = redis.node(&[("ROOMCAST_CLUSTER__PREFIX", "page")]);
    let driver = driver().await;
    let me = Browser::open(&driver, &server.http("/")).await;
    me.join("drafts").await;
    // Joined (the member list has the page's session) before Redis goes.
    me.until("document.querySelectorAll('[data-testid=member]').length === 1").await;
    let port = redis.kill();
    assert_eq!(server.wait_for_metric("roomcast_cluster_up", 0).await, 0);
    let before = server.metric("roomcast_messages_out_total").await;
    me.say("typed while Redis was down").await;
    // The server answered (unavailable): the text is still in the box.
    let answered = server.wait_for_metric_past("roomcast_messages_out_total", before).await;
    assert!(answered > before, "the server never answered");
    let kept =
        me.client.execute("return document.querySelector('[data-testid=message-input]').value", vec![]).await.unwrap();
    assert_eq!(kept, json!("typed while Redis was down"));
    assert!(me.texts("message").await.is_empty());
    let _redis = common::Redis::start_on(port);
    me.until(&message_with("typed while Redis was down")).await;
    me.until("document.querySelector('[data-testid=message-input]').value === ''").await;
    assert_eq!(me.texts("message").await.len(), 1, "once");
    me.close().await;
}

/// docs/client-js.md's browser example, run as the docs give it: a page of
/// the application's own, on roomcast's origin, importing `/roomcast.js`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn the_docs_browser_example_runs_as_written() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/client-js.md")).unwrap();
    let block = docs.split("<!-- example: browser -->\n```html\n").nth(1).expect("the browser example");
    let html = block[..block.find("```").expect("a closed block")].to_string();
    let server = Server::start(&[]);
    let mut observer = Client::json(&server).await;
    observer.join("lobby").await;
    let front = TokenGate::answering(server.addr, move |head| {
        head.starts_with("get /chat.html").then(|| ("text/html", html.clone()))
    })
    .await;
    let driver = driver().await;
    let page = Browser::launch(&driver, &format!("http://{}/chat.html", front.addr), &[]).await;
    page.until(
        "[...document.querySelectorAll('#log li')].some(li => li.textContent.includes('hello from the browser'))",
    )
    .await;
    assert_eq!(observer.expect("presence").await["event"], "join");
    let message = observer.expect("message").await;
    assert_eq!(message["body"], "hello from the browser");
    page.close().await;
}

/// After reconnects the member list is the server's: the page's own user
/// included, nobody twice, a member who left while it was away gone (on a
/// cluster node too: scripts/test.sh runs this file both ways).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_browser, ignore = "Chromium or chromedriver is missing and SKIP_MISSING_TOOLS=1")]
async fn the_member_list_is_exact_after_reconnects() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(server.addr).await;
    let driver = driver().await;
    let me = Browser::open(&driver, &format!("http://{}/", proxy.addr)).await;
    me.enter("nick-input", "me").await;
    me.join("crew").await;
    let mut stays = Client::json(&server).await;
    stays.request(json!({"type":"nick","name":"stays"})).await;
    stays.join("crew").await;
    let mut goes = Client::json(&server).await;
    goes.request(json!({"type":"nick","name":"goes"})).await;
    goes.join("crew").await;
    me.until(&member_list_is(&["goes", "me", "stays"])).await;
    for _ in 0..2 {
        proxy.cut_all();
        me.until("document.querySelector('[data-testid=status]').textContent !== 'connected'").await;
        me.until("document.querySelector('[data-testid=status]').textContent === 'connected'").await;
    }
    drop(goes);
    me.until(&member_list_is(&["me", "stays"])).await;
    proxy.cut_all();
    me.until("document.querySelector('[data-testid=status]').textContent === 'connected'").await;
    let mut late = Client::json(&server).await;
    late.request(json!({"type":"nick","name":"late"})).await;
    late.join("crew").await;
    me.until(&member_list_is(&["late", "me", "stays"])).await;
    me.close().await;
}
