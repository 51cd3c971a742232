//! `server.hosts`: the names this server answers to in `Host`. A browser
//! page from another site can reach a server on loopback or a private
//! network by making its own name resolve there (DNS rebinding); its
//! requests then carry that name in `Host`, and the same name in `Origin`,
//! so only a list of the server's own names tells them apart. Requests
//! naming anything else get 421.
//!
//! With the list empty, any name is answered, except by a server bound to a
//! loopback address: that one answers only `localhost`, `127.0.0.1` and
//! `[::1]`, which is all a browser on the same machine uses.

use std::net::ToSocketAddrs;

use actix_web::http::uri::Authority;

use crate::config::{ConfigError, ServerSettings};

/// An accepted name, and the port it must come with (any when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Name {
    host: String,
    port: Option<u16>,
}

impl Name {
    /// `chat.example.com`, `chat.example.com:443`, `[::1]`, `10.0.0.5:8080`.
    fn parse(text: &str) -> Option<Name> {
        let authority: Authority = text.trim().parse().ok()?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return None;
        }
        Some(Name { host: canonical(authority.host()), port: authority.port_u16() })
    }
}

/// Lowercase, without the trailing dot of a fully qualified name.
fn canonical(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

pub struct HostCheck {
    /// `None`: every name is answered.
    names: Option<Vec<Name>>,
}

impl HostCheck {
    pub fn new(server: &ServerSettings) -> Result<HostCheck, ConfigError> {
        let mut names = Vec::with_capacity(server.hosts.len());
        for entry in &server.hosts {
            let name = Name::parse(entry).ok_or_else(|| {
                ConfigError::key("server.hosts", format!("{entry:?} is not a host name such as \"chat.example.com\""))
            })?;
            names.push(name);
        }
        if names.is_empty() {
            if !bound_to_loopback(&server.host, server.port) {
                return Ok(HostCheck { names: None });
            }
            names = LOOPBACK_NAMES.iter().filter_map(|name| Name::parse(name)).collect();
        }
        Ok(HostCheck { names: Some(names) })
    }

    /// `Ok` when the request's `Host` names this server, or why not.
    pub fn check(&self, host: Option<&str>) -> Result<(), &'static str> {
        let Some(names) = &self.names else {
            return Ok(());
        };
        let host = host.ok_or("a Host header is required")?;
        let given = Name::parse(host).ok_or("the Host header is not a host name")?;
        let known = names.iter().any(|name| name.host == given.host && name.port.is_none_or(|p| given.port == Some(p)));
        if known { Ok(()) } else { Err("this server does not answer to that host name (server.hosts)") }
    }
}

/// Whether every address `host` resolves to is a loopback address.
fn bound_to_loopback(host: &str, port: u16) -> bool {
    match (host, port).to_socket_addrs() {
        Ok(addresses) => {
            let mut addresses = addresses.peekable();
            addresses.peek().is_some() && addresses.all(|address| address.ip().is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(host: &str, hosts: &[&str], header: Option<&str>) -> bool {
        let server = ServerSettings {
            host: host.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..ServerSettings::default()
        };
        HostCheck::new(&server).expect("valid").check(header).is_ok()
    }

    #[test]
    fn loopback_servers_answer_loopback_names_only() {
        for ok in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST", "localhost."] {
            assert!(check("127.0.0.1", &[], Some(ok)), "{ok}");
        }
        for refused in
            ["evil.example:8080", "evil.example", "127.0.0.2:8080", "localhost.evil.example", "user@localhost"]
        {
            assert!(!check("127.0.0.1", &[], Some(refused)), "{refused}");
        }
        assert!(!check("127.0.0.1", &[], None), "no Host");
        assert!(check("localhost", &[], Some("localhost:1")));
    }

    #[test]
    fn other_servers_answer_any_name_unless_listed() {
        assert!(check("0.0.0.0", &[], Some("anything.example:9")));
        assert!(check("0.0.0.0", &[], None));
        let hosts = ["chat.example.com", "10.0.0.5:8080"];
        assert!(check("0.0.0.0", &hosts, Some("chat.example.com")));
        assert!(check("0.0.0.0", &hosts, Some("Chat.Example.com:443")));
        assert!(check("0.0.0.0", &hosts, Some("10.0.0.5:8080")));
        assert!(!check("0.0.0.0", &hosts, Some("10.0.0.5:8081")));
        assert!(!check("0.0.0.0", &hosts, Some("10.0.0.5")));
        assert!(!check("0.0.0.0", &hosts, Some("evil.example")));
        assert!(!check("127.0.0.1", &hosts, Some("localhost:8080")), "a list replaces the loopback names");
    }

    #[test]
    fn bad_entries_name_the_key() {
        let server = ServerSettings { hosts: vec!["not a name".into()], ..ServerSettings::default() };
        let error = HostCheck::new(&server).err().expect("refused").to_string();
        assert!(error.starts_with("server.hosts"), "{error}");
    }
}
