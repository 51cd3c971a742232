//! Opening WebSocket connections as a client, for `roomcast load` and
//! `roomcast client`.
//!
//! `wss:` URLs go through rustls, trusting the system's roots plus, with
//! `--ca FILE`, the certificates in that PEM file (a self-signed server's
//! own certificate, or a private CA; see `tls::client_config`).
//!
//! Many connections to one server address from one source address run out
//! of ephemeral ports near 28k, so the dialer can spread connections over
//! several source addresses (127.0.0.1 to 127.0.0.N against a loopback
//! server). Buffers are kept small: tungstenite's defaults (128 KiB to read)
//! would cost gigabytes across 100k idle connections.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a connect and handshake may take.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum DialError {
    Io(io::Error),
    /// The server answered the handshake with this HTTP status.
    Refused(u16),
    Handshake(String),
    /// The server's certificate is not one this client trusts: trying
    /// again will not change that.
    Untrusted(String),
    /// No answer to the TCP connect or the handshake in time (a server at
    /// its descriptor limit leaves connections in its accept queue).
    TimedOut,
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Io(e) => write!(f, "{e}"),
            DialError::Refused(status) => write!(f, "refused with HTTP {status}"),
            DialError::Handshake(e) => write!(f, "handshake failed: {e}"),
            DialError::Untrusted(why) => write!(f, "certificate not trusted: {why}"),
            DialError::TimedOut => write!(f, "no handshake within {}s", HANDSHAKE_TIMEOUT.as_secs()),
        }
    }
}

impl std::error::Error for DialError {}

/// Who connections say they are (`auth.md`): sent as `Authorization:
/// Bearer`.
#[derive(Default)]
pub enum Credentials {
    #[default]
    None,
    /// One token for every connection.
    Token(String),
    /// A token of its own for every connection (user `load-1`, `load-2`,
    /// ...), signed with an HMAC secret, granting every room.
    Mint { secret: Vec<u8>, claims: crate::auth::mint::Claims, next: AtomicU64 },
}

impl Credentials {
    fn bearer(&self) -> Result<Option<String>, DialError> {
        let token = match self {
            Credentials::None => return Ok(None),
            Credentials::Token(token) => token.clone(),
            Credentials::Mint { secret, claims, next } => {
                let n = next.fetch_add(1, Ordering::Relaxed) + 1;
                let claims = crate::auth::mint::Claims { sub: format!("load-{n}"), ..claims.clone() };
                crate::auth::mint::with_secret(secret, &claims).map_err(DialError::Handshake)?
            }
        };
        Ok(Some(format!("Bearer {token}")))
    }
}

/// One server a dialer connects to.
struct Target {
    url: Url,
    server: SocketAddr,
    /// 127.0.0.1..N when the server is on IPv4 loopback.
    sources: Vec<IpAddr>,
    /// For `wss:` URLs.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    async fn new(url: Url, sources: usize, ca: Option<&Path>) -> io::Result<Target> {
        let tls = match url.scheme() {
            "wss" => Some(Arc::new(crate::tls::client_config(ca).map_err(io::Error::other)?)),
            _ => None,
        };
        let host = url.host_str().ok_or_else(|| io::Error::other("URL without a host"))?.to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| io::Error::other(format!("{host} has no address")))?;
        let sources = match server.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && sources > 1 => {
                (1..=sources.min(254) as u8).map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))).collect()
            }
            _ => Vec::new(),
        };
        Ok(Target { url, server, sources, tls })
    }
}

/// Opens connections to one server, or in turn to each of several (the
/// nodes of a cluster).
pub struct Dialer {
    targets: Vec<Target>,
    next_target: AtomicUsize,
    /// Publishers on the first server, the others on the rest.
    split: bool,
    credentials: Credentials,
    next_source: AtomicUsize,
    config: WebSocketConfig,
    /// Connections that could not be opened, and why the first one failed,
    /// for reports.
    failures: std::sync::atomic::AtomicU64,
    first_error: std::sync::OnceLock<String>,
}

/// The WebSocket URL with `default_path` when it has none, e.g.
/// `ws://127.0.0.1:8080` and `/ws` give `ws://127.0.0.1:8080/ws`.
pub fn endpoint(url: &str, default_path: &str) -> Result<Url, String> {
    let mut url = Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    match url.scheme() {
        "ws" | "wss" => {}
        other => return Err(format!("{url}: expected ws:// or wss://, not {other}://")),
    }
    if url.path().is_empty() || url.path() == "/" {
        url.set_path(default_path);
    }
    Ok(url)
}

impl Dialer {
    /// Resolves the server's address once. `sources` > 1 spreads
    /// connections over 127.0.0.1..=127.0.0.N when the server is on IPv4
    /// loopback (other targets use the system's choice). `ca` adds trusted
    /// certificates for `wss:`.
    pub async fn new(url: Url, sources: usize, ca: Option<&Path>) -> io::Result<Dialer> {
        Self::to_each(vec![url], sources, ca).await
    }

    /// A dialer whose connections go to each of `urls` in turn.
    pub async fn to_each(urls: Vec<Url>, sources: usize, ca: Option<&Path>) -> io::Result<Dialer> {
        let mut targets = Vec::with_capacity(urls.len());
        for url in urls {
            targets.push(Target::new(url, sources, ca).await?);
        }
        if targets.is_empty() {
            return Err(io::Error::other("no URL"));
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(8 * 1024)
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        Ok(Dialer {
            targets,
            next_target: AtomicUsize::new(0),
            split: false,
            credentials: Credentials::None,
            next_source: AtomicUsize::new(0),
            config,
            failures: std::sync::atomic::AtomicU64::new(0),
            first_error: std::sync::OnceLock::new(),
        })
    }

    /// Every URL, comma-separated, for reports.
    pub fn urls(&self) -> String {
        self.targets.iter().map(|target| target.url.as_str()).collect::<Vec<_>>().join(",")
    }

    /// How many servers connections are spread over.
    pub fn target_count(&self) -> usize {
        self.targets.len()
    }

    /// The first server's URL.
    pub fn url(&self) -> &Url {
        &self.targets[0].url
    }

    /// With several servers: publishers connect to the first, everyone
    /// else to the others (so every delivery crosses between nodes).
    pub fn split_publishers(mut self, split: bool) -> Self {
        self.split = split && self.targets.len() > 1;
        self
    }

    fn pick(&self, publisher: bool) -> &Target {
        let next = self.next_target.fetch_add(1, Ordering::Relaxed);
        match (self.split, publisher) {
            (true, true) => &self.targets[0],
            (true, false) => &self.targets[1 + next % (self.targets.len() - 1)],
            (false, _) => &self.targets[next % self.targets.len()],
        }
    }

    /// Connects a load member: a publisher or not matters with
    /// [`Dialer::split_publishers`].
    pub async fn connect_member(&self, publisher: bool, recv_buffer: Option<u32>) -> Result<Ws, DialError> {
        self.connect_to(self.pick(publisher), &[], recv_buffer).await
    }

    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    pub async fn connect(&self) -> Result<Ws, DialError> {
        self.connect_with(&[], None).await
    }

    /// Connects with a 4 KiB kernel receive buffer, for a client meant to
    /// stop reading: the server's writes back up sooner.
    pub async fn connect_small_buffer(&self) -> Result<Ws, DialError> {
        self.connect_with(&[], Some(4096)).await
    }

    /// Connects with extra handshake headers (e.g. a subprotocol) and,
    /// optionally, a receive buffer size.
    pub async fn connect_with(&self, headers: &[(&str, &str)], recv_buffer: Option<u32>) -> Result<Ws, DialError> {
        self.connect_to(self.pick(false), headers, recv_buffer).await
    }

    async fn connect_to(
        &self,
        target: &Target,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> Result<Ws, DialError> {
        let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.open(target, headers, recv_buffer))
            .await
            .unwrap_or(Err(DialError::TimedOut));
        if let Err(e) = &result {
            log::debug!("connect: {e}");
            self.failures.fetch_add(1, Ordering::Relaxed);
            if self.first_error.get().is_none() {
                let _ = self.first_error.set(e.to_string());
            }
        }
        result
    }

    /// Keeps `why` as the first failure's reason, if none was kept: a
    /// connection opened but refused after the upgrade (`auth.md`).
    pub fn note_failure(&self, why: String) {
        let _ = self.first_error.set(why);
    }

    /// How many connections could not be opened so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// Why the first failed connection failed, if one did.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.get().map(String::as_str)
    }

    /// "no member could connect to URL", with the first reason.
    pub fn none_connected(&self, who: &str) -> String {
        match self.first_error() {
            Some(why) => format!("no {who} could connect to {}: {why}", self.urls()),
            None => format!("no {who} could connect to {}", self.urls()),
        }
    }

    async fn open(&self, target: &Target, headers: &[(&str, &str)], recv_buffer: Option<u32>) -> Result<Ws, DialError> {
        let socket = if target.server.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
        let socket = socket.map_err(DialError::Io)?;
        if !target.sources.is_empty() {
            let n = self.next_source.fetch_add(1, Ordering::Relaxed) % target.sources.len();
            socket.bind(SocketAddr::new(target.sources[n], 0)).map_err(DialError::Io)?;
        }
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes).map_err(DialError::Io)?;
        }
        let stream = socket.connect(target.server).await.map_err(DialError::Io)?;
        stream.set_nodelay(true).map_err(DialError::Io)?;
        let mut request = target.url.as_str().into_client_request().map_err(|e| DialError::Handshake(e.to_string()))?;
        for (name, value) in headers {
            let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| DialError::Handshake(e.to_string()))?;
            let value =
                value.parse().map_err(|e: tokio_tungstenite::tungstenite::http::header::InvalidHeaderValue| {
                    DialError::Handshake(e.to_string())
                })?;
            request.headers_mut().insert(name, value);
        }
        if let Some(bearer) = self.credentials.bearer()? {
            let value = bearer.parse().map_err(|_| DialError::Handshake("the token is not a header value".into()))?;
            request.headers_mut().insert(tokio_tungstenite::tungstenite::http::header::AUTHORIZATION, value);
        }
        let tls = target.tls.clone().map(Connector::Rustls);
        match tokio_tungstenite::client_async_tls_with_config(request, stream, Some(self.config), tls).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(DialError::Refused(response.status().as_u16()))
            }
            Err(tokio_tungstenite::tungstenite::Error::Io(e)) => Err(untrusted(&e).unwrap_or(DialError::Io(e))),
            Err(e) => Err(DialError::Handshake(e.to_string())),
        }
    }
}

/// The certificate refusal inside a TLS handshake's error, said plainly.
fn untrusted(error: &io::Error) -> Option<DialError> {
    use rustls::{CertificateError, OtherError};
    let Some(rustls::Error::InvalidCertificate(why)) = error.get_ref()?.downcast_ref::<rustls::Error>() else {
        return None;
    };
    const PASS_CA: &str = "pass --ca FILE with the server's certificate or its CA";
    let plain = match why {
        CertificateError::UnknownIssuer => format!("issued by no CA this client trusts; {PASS_CA}"),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired".to_string(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it is not made for this host name (its subjectAltName)".to_string()
        }
        CertificateError::Other(OtherError(other)) if other.to_string().contains("CaUsedAsEndEntity") => {
            // `openssl req -x509` makes these: trusted as given by --ca.
            format!("a self-signed CA certificate serves as the server's own; {PASS_CA}")
        }
        CertificateError::Other(OtherError(other)) => format!("{other}; {PASS_CA}"),
        other => format!("{other:?}; {PASS_CA}"),
    };
    Some(DialError::Untrusted(plain))
}

/// The TCP socket under a connection, TLS or not.
pub fn tcp(ws: &Ws) -> Option<&TcpStream> {
    match ws.get_ref() {
        MaybeTlsStream::Rustls(tls) => Some(tls.get_ref().0),
        MaybeTlsStream::Plain(tcp) => Some(tcp),
        // The enum is non-exhaustive; the dialer makes only the two above.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("ws://127.0.0.1:8080", "/ws").unwrap().as_str(), "ws://127.0.0.1:8080/ws");
        assert_eq!(endpoint("ws://h:1/", "/echo").unwrap().as_str(), "ws://h:1/echo");
        assert_eq!(endpoint("ws://h:1/ws/room", "/ws").unwrap().as_str(), "ws://h:1/ws/room");
        assert_eq!(endpoint("wss://h:1", "/ws").unwrap().as_str(), "wss://h:1/ws");
        assert!(endpoint("http://h:1", "/ws").is_err());
        assert!(endpoint("nonsense", "/ws").is_err());
    }
}
