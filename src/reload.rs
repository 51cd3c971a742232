//! SIGHUP: read the configuration again (the same `--config`, or the same
//! default file, and the environment) and apply what can change without
//! dropping a connection.
//!
//! Live: the origin policy, `server.hosts`, `max_connections_per_ip`,
//! `shutdown_timeout`, every `[limits]` key, `[rooms]`, `[api]`, the log
//! level and the TLS certificate files (read again even when their names
//! did not change: that is how a renewed certificate is picked up). The rate
//! limit applies to open sessions at once, each starting with a full burst;
//! `max_message_bytes` and the outbound limits apply to sessions opened from
//! then on; a smaller history drops the oldest stored messages now.
//!
//! Restart only ([`RESTART_KEYS`] and switching TLS on or off): logged, and
//! the running value kept. A configuration that does not load or validate
//! is logged and changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Settings;
use crate::http::{AppState, Live};
use crate::registry::{self, messages::Reconfigure};
use crate::tls::ServerCertificate;

/// Keys read only at start-up.
pub const RESTART_KEYS: [&str; 8] = [
    "server.host",
    "server.port",
    "server.workers",
    "server.max_connections",
    "heartbeat.interval",
    "heartbeat.timeout",
    "auth.mode",
    "cluster",
];

pub struct Reloader {
    /// `serve --config`, if given.
    config: Option<PathBuf>,
    /// The certificate being served, when TLS is on.
    certificate: Option<Arc<ServerCertificate>>,
}

impl Reloader {
    pub fn new(config: Option<PathBuf>, certificate: Option<Arc<ServerCertificate>>) -> Self {
        Reloader { config, certificate }
    }

    /// Reloads, logging what changed, what needs a restart, or why
    /// nothing changed.
    pub fn reload(&self, state: &AppState) {
        match self.try_reload(state) {
            Ok(report) => log::info!("SIGHUP: {report}"),
            Err(problem) => log::error!("SIGHUP: configuration not reloaded, the running one stays: {problem}"),
        }
    }

    fn try_reload(&self, state: &AppState) -> Result<String, String> {
        let (mut settings, source) =
            Settings::load(self.config.as_deref(), crate::live::CHECKS).map_err(|e| e.to_string())?;
        let current = state.live();
        let old = &current.settings;
        let kept = keep_restart_keys(old, &mut settings);
        let certificate = match &self.certificate {
            Some(_) => Some(crate::tls::certified_key(&settings.server.tls.cert, &settings.server.tls.key)),
            None => None,
        };
        let certificate = certificate.transpose().map_err(|e| e.to_string())?;
        let changed = changed_keys(old, &settings);
        let live = Live::new(settings).map_err(|e| e.to_string())?;
        let new = &live.settings;

        if !kept.is_empty() {
            log::warn!("SIGHUP: changed, but not applied until a restart: {}", kept.join(", "));
        }
        if (old.limits.messages_per_second, old.limits.burst) != (new.limits.messages_per_second, new.limits.burst) {
            state.rate.set(new.limits.messages_per_second, new.limits.burst);
            state.api_rate.set(new.api.messages_per_second, new.api.burst);
        }
        state.peer_limit.set(new.server.max_connections_per_ip);
        state.user_limit.set(new.auth.max_connections_per_user);
        state.registry.do_send(Reconfigure { limits: registry::Limits::new(new) });
        if old.log.level != new.log.level
            && let Err(why) = crate::logging::set_level(&new.log.level)
        {
            log::warn!("SIGHUP: log.level not applied: {why}");
        }
        if let (Some(served), Some(certificate)) = (&self.certificate, certificate) {
            served.replace(certificate);
            log::info!("SIGHUP: TLS certificate read again from {}", new.server.tls.cert);
        }
        drop(current);
        state.live.store(Arc::new(live));

        let changed =
            if changed.is_empty() { "nothing changed".to_string() } else { format!("changed {}", changed.join(", ")) };
        Ok(format!("configuration reloaded from {source}: {changed}"))
    }
}

/// Puts the running values of the restart-only keys into `new`; names the
/// ones that differed.
fn keep_restart_keys(old: &Settings, new: &mut Settings) -> Vec<&'static str> {
    let mut kept = Vec::new();
    let mut keep = |key: &'static str, differs: bool| {
        if differs {
            kept.push(key);
        }
    };
    keep(RESTART_KEYS[0], old.server.host != new.server.host);
    keep(RESTART_KEYS[1], old.server.port != new.server.port);
    keep(RESTART_KEYS[2], old.server.workers != new.server.workers);
    keep(RESTART_KEYS[3], old.server.max_connections != new.server.max_connections);
    keep(RESTART_KEYS[4], old.heartbeat.interval != new.heartbeat.interval);
    keep(RESTART_KEYS[5], old.heartbeat.timeout != new.heartbeat.timeout);
    // On or off changes what every frame carries (`user`); the keys,
    // grants and limits reload.
    keep(RESTART_KEYS[6], old.auth.mode != new.auth.mode);
    keep(RESTART_KEYS[7], old.cluster != new.cluster);
    let tls_switched = old.server.tls.cert.is_empty() != new.server.tls.cert.is_empty();
    keep("server.tls (on or off)", tls_switched);
    new.server.host.clone_from(&old.server.host);
    new.server.port = old.server.port;
    new.server.workers = old.server.workers;
    new.server.max_connections = old.server.max_connections;
    new.heartbeat = old.heartbeat.clone();
    new.auth.mode = old.auth.mode;
    new.cluster = old.cluster.clone();
    if tls_switched {
        new.server.tls = old.server.tls.clone();
    }
    kept
}

/// The keys (`section.key`) whose values differ; never the values, which
/// may be secrets.
fn changed_keys(old: &Settings, new: &Settings) -> Vec<String> {
    let (old, new) = (flatten(old), flatten(new));
    new.iter().filter(|(key, value)| old.get(*key) != Some(value)).map(|(key, _)| key.clone()).collect()
}

fn flatten(settings: &Settings) -> std::collections::BTreeMap<String, serde_json::Value> {
    fn walk(prefix: &str, value: serde_json::Value, into: &mut std::collections::BTreeMap<String, serde_json::Value>) {
        match value {
            serde_json::Value::Object(fields) => {
                for (key, value) in fields {
                    let key = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                    walk(&key, value, into);
                }
            }
            leaf => {
                into.insert(prefix.to_string(), leaf);
            }
        }
    }
    let mut flat = std::collections::BTreeMap::new();
    walk("", serde_json::to_value(settings).unwrap_or_default(), &mut flat);
    flat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_keys_keep_their_running_values_and_the_rest_is_named() {
        let old = Settings::default();
        let mut new = Settings::default();
        new.server.port = 9999;
        new.heartbeat.timeout *= 2;
        new.limits.messages_per_second = 7;
        new.api.key = "secret".into();
        new.origin.allow = vec!["https://a.example".into()];
        let kept = keep_restart_keys(&old, &mut new);
        assert_eq!(kept, ["server.port", "heartbeat.timeout"]);
        assert_eq!(new.server.port, old.server.port);
        assert_eq!(new.heartbeat.timeout, old.heartbeat.timeout);
        assert_eq!(changed_keys(&old, &new), ["api.key", "limits.messages_per_second", "origin.allow"]);
        assert!(changed_keys(&old, &old).is_empty());
    }

    #[test]
    fn tls_cannot_be_switched_on_by_a_reload() {
        let old = Settings::default();
        let mut new = Settings::default();
        new.server.tls.cert = "cert.pem".into();
        new.server.tls.key = "key.pem".into();
        assert_eq!(keep_restart_keys(&old, &mut new), ["server.tls (on or off)"]);
        assert!(new.server.tls.cert.is_empty());
    }
}
