//! The origin policy, checked on every WebSocket endpoint before the upgrade.
//!
//! Origins compare case-insensitively on scheme and host with default ports
//! made explicit (80 for http/ws, 443 for https/wss). `same-host` compares
//! the Origin's host and port with the `Host` header; a `Host` without a
//! port means the default port of the Origin's scheme, because that is what
//! a browser omits (this also keeps TLS-terminating proxies working), and
//! so it matches an Origin on that port only. `same-host` cannot tell a
//! rebound name from the real one (both headers carry it): `server.hosts`
//! does that (see `hosts`).

use actix_web::http::uri::Authority;

use crate::config::{OriginPolicy, OriginSettings};

/// A parsed `Origin`: `scheme://host[:port]`, lowercased, port explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    pub fn parse(text: &str) -> Result<Origin, &'static str> {
        let url = url::Url::parse(text.trim()).map_err(|_| "not an origin such as https://chat.example.com")?;
        let host = url.host_str().ok_or("an origin needs a host")?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("an origin has no user name or password");
        }
        if (url.path() != "/" && !url.path().is_empty()) || url.query().is_some() || url.fragment().is_some() {
            return Err("an origin has no path, query or fragment");
        }
        Ok(Origin {
            scheme: url.scheme().to_string(),
            host: host.to_ascii_lowercase(),
            port: url.port_or_known_default(),
        })
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

pub struct OriginCheck {
    policy: OriginPolicy,
    allow: Vec<Origin>,
    allow_missing: bool,
}

impl OriginCheck {
    /// Entries of `origin.allow` were checked by `Settings::validate`;
    /// any that still do not parse match nothing.
    pub fn new(settings: &OriginSettings) -> Self {
        OriginCheck {
            policy: settings.policy,
            allow: settings.allow.iter().filter_map(|entry| Origin::parse(entry).ok()).collect(),
            allow_missing: settings.allow_missing,
        }
    }

    /// `Ok` to upgrade, or why not (for the log and the 403 body).
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), &'static str> {
        if self.policy == OriginPolicy::Any {
            return Ok(());
        }
        let Some(origin) = origin else {
            return if self.allow_missing { Ok(()) } else { Err("an Origin header is required") };
        };
        let origin = Origin::parse(origin).map_err(|_| "the Origin header is not an origin")?;
        match self.policy {
            OriginPolicy::Any => Ok(()),
            OriginPolicy::AllowList if self.allow.contains(&origin) => Ok(()),
            OriginPolicy::AllowList => Err("origin not in origin.allow"),
            OriginPolicy::SameHost => {
                let host: Authority = host.and_then(|h| h.parse().ok()).ok_or("no usable Host header")?;
                let same_host = host.host().eq_ignore_ascii_case(&origin.host);
                let same_port = host.port_u16().or_else(|| default_port(&origin.scheme)) == origin.port;
                if same_host && same_port { Ok(()) } else { Err("origin is not this host") }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: OriginPolicy, allow: &[&str], origin: Option<&str>, host: Option<&str>) -> bool {
        let settings =
            OriginSettings { policy, allow: allow.iter().map(|s| s.to_string()).collect(), allow_missing: true };
        OriginCheck::new(&settings).check(origin, host).is_ok()
    }

    #[test]
    fn same_host() {
        use OriginPolicy::SameHost;
        assert!(check(SameHost, &[], Some("http://localhost:8080"), Some("localhost:8080")));
        assert!(check(SameHost, &[], Some("HTTP://LocalHost:8080"), Some("localhost:8080")));
        assert!(check(SameHost, &[], Some("http://chat.example"), Some("chat.example")));
        assert!(check(SameHost, &[], Some("https://chat.example"), Some("chat.example")));
        assert!(check(SameHost, &[], Some("https://chat.example"), Some("chat.example:443")));
        assert!(check(SameHost, &[], Some("http://[::1]:9000"), Some("[::1]:9000")));
        assert!(!check(SameHost, &[], Some("http://chat.example:80"), Some("chat.example:8080")));
        assert!(!check(SameHost, &[], Some("http://chat.example:8080"), Some("chat.example")), "no port is 80");
        assert!(!check(SameHost, &[], Some("https://chat.example:8443"), Some("chat.example")), "no port is 443");
        assert!(check(SameHost, &[], Some("http://chat.example:80"), Some("chat.example")));
        assert!(!check(SameHost, &[], Some("http://evil.example:8080"), Some("localhost:8080")));
        assert!(!check(SameHost, &[], Some("null"), Some("localhost:8080")));
        assert!(!check(SameHost, &[], Some("http://localhost:8080"), None));
        assert!(check(SameHost, &[], None, Some("localhost:8080")), "allow_missing");
    }

    #[test]
    fn allow_list() {
        use OriginPolicy::AllowList;
        let allow = ["https://chat.example.com", "http://localhost:3000"];
        assert!(check(AllowList, &allow, Some("https://chat.example.com"), Some("x")));
        assert!(check(AllowList, &allow, Some("https://CHAT.example.com:443"), Some("x")));
        assert!(check(AllowList, &allow, Some("http://localhost:3000"), Some("x")));
        assert!(!check(AllowList, &allow, Some("http://chat.example.com"), Some("chat.example.com")));
        assert!(!check(AllowList, &allow, Some("http://localhost:3001"), Some("x")));
    }

    #[test]
    fn any_and_missing() {
        assert!(check(OriginPolicy::Any, &[], Some("null"), None));
        let strict = OriginSettings { policy: OriginPolicy::SameHost, allow: vec![], allow_missing: false };
        assert!(OriginCheck::new(&strict).check(None, Some("h")).is_err());
    }

    #[test]
    fn origin_syntax() {
        assert!(Origin::parse("https://a.example").is_ok());
        assert!(Origin::parse("https://a.example/").is_ok());
        assert!(Origin::parse("https://a.example/path").is_err());
        assert!(Origin::parse("a.example").is_err());
        assert!(Origin::parse("https://user@a.example").is_err());
    }
}
