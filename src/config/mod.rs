//! Settings: every key of `shared/spec/config.md`, loaded from a TOML file and
//! `ROOMCAST_<SECTION>__<KEY>` environment overrides through the `config`
//! crate, then validated. Every error names the key it is about, so `serve`
//! and `check-config` can print one line and exit 2.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod hosts;
pub mod origin;
pub mod values;

pub use values::ByteSize;

/// Where `serve` and `check-config` look when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/roomcast.toml";

/// actix runs at most this many worker threads (and panics beyond).
const MAX_WORKERS: usize = 512;

/// Prefix of environment overrides: `ROOMCAST_SERVER__PORT=9000`.
const ENV_PREFIX: &str = "ROOMCAST";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub origin: OriginSettings,
    pub heartbeat: HeartbeatSettings,
    pub limits: LimitSettings,
    pub rooms: RoomSettings,
    pub api: ApiSettings,
    pub auth: AuthSettings,
    pub cluster: ClusterSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    #[serde(deserialize_with = "values::count")]
    pub port: u16,
    #[serde(deserialize_with = "values::count")]
    pub workers: usize,
    #[serde(deserialize_with = "values::count")]
    pub max_connections: usize,
    #[serde(deserialize_with = "values::count")]
    pub max_connections_per_ip: usize,
    pub hosts: Vec<String>,
    #[serde(with = "values::duration")]
    pub shutdown_timeout: Duration,
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginPolicy {
    /// The Origin's host and port must equal the request's `Host` header.
    SameHost,
    /// The Origin must be one of `origin.allow`.
    AllowList,
    /// Every Origin is accepted.
    Any,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginSettings {
    pub policy: OriginPolicy,
    pub allow: Vec<String>,
    #[serde(deserialize_with = "values::boolean")]
    pub allow_missing: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatSettings {
    #[serde(with = "values::duration")]
    pub interval: Duration,
    #[serde(with = "values::duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    #[serde(deserialize_with = "values::count")]
    pub max_message_bytes: usize,
    #[serde(deserialize_with = "values::count")]
    pub max_rooms_per_session: usize,
    #[serde(deserialize_with = "values::count")]
    pub max_members_per_room: usize,
    #[serde(deserialize_with = "values::count")]
    pub messages_per_second: u32,
    #[serde(deserialize_with = "values::count")]
    pub burst: u32,
    #[serde(deserialize_with = "values::count")]
    pub outbound_queue: usize,
    pub outbound_bytes: ByteSize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomSettings {
    #[serde(deserialize_with = "values::count")]
    pub history: usize,
    pub history_bytes: ByteSize,
    #[serde(deserialize_with = "values::count")]
    pub max_rooms: usize,
    #[serde(with = "values::duration")]
    pub empty_ttl: Duration,
    /// Ids of idempotent publishes remembered per room (the newest, each
    /// for at most five minutes).
    #[serde(deserialize_with = "values::count")]
    pub publish_ids: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    pub key: String,
    /// API publishes per key, sustained, and the burst (token bucket);
    /// beyond: 429 with Retry-After.
    #[serde(deserialize_with = "values::count")]
    pub messages_per_second: u32,
    #[serde(deserialize_with = "values::count")]
    pub burst: u32,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self { key: String::new(), messages_per_second: 1000, burst: 2000 }
    }
}

/// `auth.mode`: whether connections need a token (`shared/spec/auth.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No tokens: everything as without `[auth]`.
    Off,
    /// Anonymous connections allowed; private rooms need grants.
    Optional,
    /// Every connection needs a valid token.
    Required,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Off => "off",
            AuthMode::Optional => "optional",
            AuthMode::Required => "required",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub hmac_secret: String,
    pub hmac_secret_file: String,
    pub public_key: String,
    pub jwks_file: String,
    pub audience: String,
    pub issuer: String,
    #[serde(with = "values::duration")]
    pub leeway: Duration,
    pub private_rooms: Vec<String>,
    #[serde(deserialize_with = "values::count")]
    pub max_connections_per_user: usize,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: AuthMode::Off,
            hmac_secret: String::new(),
            hmac_secret_file: String::new(),
            public_key: String::new(),
            jwks_file: String::new(),
            audience: String::new(),
            issuer: String::new(),
            leeway: Duration::from_secs(30),
            private_rooms: Vec::new(),
            max_connections_per_user: 0,
        }
    }
}

/// `[cluster]` (`shared/spec/cluster.md`): rooms across processes through
/// Redis. All restart-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// `redis://...` or `rediss://...`; empty = one process.
    pub redis: String,
    pub prefix: String,
    #[serde(with = "values::duration")]
    pub node_timeout: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self { redis: String::new(), prefix: "roomcast".into(), node_timeout: Duration::from_secs(5) }
    }
}

impl ClusterSettings {
    pub fn enabled(&self) -> bool {
        !self.redis.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled() {
            let url = url::Url::parse(&self.redis)
                .map_err(|problem| ConfigError::key("cluster.redis", format!("not a URL: {problem}")))?;
            if !matches!(url.scheme(), "redis" | "rediss") || url.host_str().is_none_or(str::is_empty) {
                let problem = "must look like redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://...";
                return Err(ConfigError::key("cluster.redis", problem));
            }
            redis::Client::open(self.redis.as_str())
                .map_err(|problem| ConfigError::key("cluster.redis", problem.to_string()))?;
        }
        if self.prefix.is_empty() || self.prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::key("cluster.prefix", "must be non-empty, without spaces"));
        }
        if self.node_timeout < Duration::from_secs(1) {
            return Err(ConfigError::key("cluster.node_timeout", "must be at least 1s"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            workers: 0,
            max_connections: 100_000,
            max_connections_per_ip: 0,
            hosts: Vec::new(),
            shutdown_timeout: Duration::from_secs(10),
            tls: TlsSettings::default(),
        }
    }
}

impl Default for OriginSettings {
    fn default() -> Self {
        Self { policy: OriginPolicy::SameHost, allow: Vec::new(), allow_missing: true }
    }
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        Self { interval: Duration::from_secs(5), timeout: Duration::from_secs(10) }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: 65_536,
            max_rooms_per_session: 64,
            max_members_per_room: 10_000,
            messages_per_second: 50,
            burst: 100,
            outbound_queue: 1024,
            outbound_bytes: ByteSize::mib(4),
        }
    }
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            history: 50,
            history_bytes: ByteSize::mib(1),
            max_rooms: 100_000,
            empty_ttl: Duration::from_secs(300),
            publish_ids: 1000,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// A configuration problem, as one line that names the key and, when it is
/// known, where its value came from (a file, or the environment variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: Option<String>,
    source: Option<String>,
    problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key, &self.source) {
            (Some(key), Some(source)) => write!(f, "{key} (from {source}): {}", self.problem),
            (Some(key), None) => write!(f, "{key}: {}", self.problem),
            _ => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Keys whose values are secrets: never printed, not even in an error.
const SECRET_KEYS: [&str; 2] = ["api.key", "auth.hmac_secret"];

/// What `check-config` prints in place of a secret.
pub const REDACTED: &str = "<redacted>";

impl ConfigError {
    fn new(message: impl fmt::Display) -> Self {
        // The contract wants one line.
        let text = message.to_string();
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        Self { key: None, source: None, problem: line }
    }

    pub(crate) fn key(key: &str, problem: impl fmt::Display) -> Self {
        Self { key: Some(key.to_string()), ..Self::new(problem) }
    }

    /// Adds where the key's value came from: `file`, or the environment
    /// variable, as `merged` knows it.
    fn with_source(mut self, merged: &config::Config, file: Option<&Path>) -> Self {
        let Some(key) = &self.key else { return self };
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
        let origin = merged.get_table(section).ok().and_then(|table| Some(table.get(name)?.origin()?.to_string()));
        self.source = match origin.as_deref() {
            None => None,
            Some("the environment") => Some(format!("{ENV_PREFIX}_{}", key.replace('.', "__").to_ascii_uppercase())),
            Some(other) => Some(file.map_or_else(|| other.to_string(), |file| file.display().to_string())),
        };
        self
    }

    /// A problem with a secret's value says nothing of the value.
    fn hiding_secrets(mut self) -> Self {
        if self.key.as_deref().is_some_and(|key| SECRET_KEYS.contains(&key)) {
            self.problem = "must be a string (the value given is not repeated here)".into();
        }
        self
    }
}

/// Which configuration is in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// A check of the settings that only a layer above can make (a
/// certificate that loads, keys that parse: `live::CHECKS`), run with the
/// others so that its error names the key and where it was set alike.
pub type Check = fn(&Settings) -> Result<(), ConfigError>;

impl Settings {
    /// Loads `path` (or `config/roomcast.toml` when present, or nothing),
    /// applies environment overrides from the process, and validates; says
    /// which file it read.
    pub fn load(path: Option<&Path>, checks: &[Check]) -> Result<(Settings, ConfigSource), ConfigError> {
        let file = match path {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::new(format!("configuration file {} does not exist", path.display())));
            }
            Some(path) => Some(path),
            None => Some(Path::new(DEFAULT_CONFIG_PATH)).filter(|p| p.is_file()),
        };
        let settings = Self::load_from(file, None, checks)?;
        Ok((settings, file.map_or(ConfigSource::Defaults, |file| ConfigSource::File(file.to_path_buf()))))
    }

    /// Loads exactly `file` (if any) and the environment `env` (`None`: the
    /// process environment), then validates, with `checks` too.
    pub fn load_from(
        file: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
        checks: &[Check],
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            check_toml(file)?;
            builder = builder.add_source(config_file(file));
        }
        // Environment values stay strings; `values` reads them as the key's type.
        builder = builder
            .add_source(config::Environment::with_prefix(ENV_PREFIX).prefix_separator("_").separator("__").source(env));
        let merged = builder.build().map_err(ConfigError::new)?;
        reject_unknown_keys(&merged).map_err(|error| error.with_source(&merged, file))?;
        let mut tree: serde_json::Value = merged.clone().try_deserialize().map_err(ConfigError::new)?;
        split_lists(&mut tree);
        let settings: Settings = serde_path_to_error::deserialize(tree).map_err(|error| {
            ConfigError::key(&error.path().to_string(), error.inner()).hiding_secrets().with_source(&merged, file)
        })?;
        let valid = checks.iter().try_fold((), |(), check| check(&settings));
        settings.validate().and(valid).map_err(|error| error.with_source(&merged, file))?;
        Ok(settings)
    }

    /// Checks the combinations no type can express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("server.max_connections", self.server.max_connections),
            ("limits.max_message_bytes", self.limits.max_message_bytes),
            ("limits.max_rooms_per_session", self.limits.max_rooms_per_session),
            ("limits.max_members_per_room", self.limits.max_members_per_room),
            ("limits.messages_per_second", self.limits.messages_per_second as usize),
            ("limits.burst", self.limits.burst as usize),
            ("limits.outbound_queue", self.limits.outbound_queue),
            ("rooms.publish_ids", self.rooms.publish_ids),
            ("api.messages_per_second", self.api.messages_per_second as usize),
            ("api.burst", self.api.burst as usize),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        if self.rooms.max_rooms == 0 {
            return Err(ConfigError::key("rooms.max_rooms", "must be at least 1"));
        }
        if self.limits.outbound_bytes.0 == 0 {
            return Err(ConfigError::key("limits.outbound_bytes", "must be at least 1"));
        }
        if self.server.workers > MAX_WORKERS {
            return Err(ConfigError::key(
                "server.workers",
                format!("{} is more than {MAX_WORKERS}, the most actix runs", self.server.workers),
            ));
        }
        if self.server.host.trim().is_empty() {
            return Err(ConfigError::key("server.host", "must not be empty"));
        }
        use std::net::ToSocketAddrs;
        if let Err(problem) = (self.server.host.as_str(), self.server.port).to_socket_addrs() {
            return Err(ConfigError::key("server.host", format!("cannot resolve {:?}: {problem}", self.server.host)));
        }
        hosts::HostCheck::new(&self.server)?;
        if self.heartbeat.interval.is_zero() {
            return Err(ConfigError::key("heartbeat.interval", "must be longer than 0s"));
        }
        if self.heartbeat.timeout <= self.heartbeat.interval {
            return Err(ConfigError::key(
                "heartbeat.timeout",
                format!(
                    "{} must be longer than heartbeat.interval ({})",
                    humantime::format_duration(self.heartbeat.timeout),
                    humantime::format_duration(self.heartbeat.interval)
                ),
            ));
        }
        for entry in &self.origin.allow {
            if let Err(problem) = origin::Origin::parse(entry) {
                return Err(ConfigError::key("origin.allow", format!("{entry:?}: {problem}")));
            }
        }
        if self.origin.policy == OriginPolicy::AllowList && self.origin.allow.is_empty() {
            return Err(ConfigError::key("origin.allow", "policy \"allow-list\" needs at least one origin"));
        }
        let tls = &self.server.tls;
        match (tls.cert.is_empty(), tls.key.is_empty()) {
            (true, true) => {}
            (false, true) => {
                return Err(ConfigError::key("server.tls.key", "is needed with server.tls.cert"));
            }
            (true, false) => {
                return Err(ConfigError::key("server.tls.cert", "is needed with server.tls.key"));
            }
            (false, false) => {}
        }
        self.cluster.validate()?;
        validate_log_filter(&self.log.level).map_err(|problem| ConfigError::key("log.level", problem))
    }

    /// The effective settings as TOML, as `check-config` prints them:
    /// secrets that are set show as `"<redacted>"`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for secret in [&mut shown.api.key, &mut shown.auth.hmac_secret] {
            if !secret.is_empty() {
                *secret = REDACTED.into();
            }
        }
        if let Ok(mut url) = url::Url::parse(&shown.cluster.redis)
            && url.password().is_some()
        {
            let _ = url.set_password(Some(REDACTED));
            shown.cluster.redis = url.to_string();
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

/// Keys whose values are lists; from the environment they are one
/// comma-separated string (`ROOMCAST_ORIGIN__ALLOW=https://a,https://b`).
const LIST_KEYS: [(&str, &str); 3] = [("origin", "allow"), ("server", "hosts"), ("auth", "private_rooms")];

fn split_lists(tree: &mut serde_json::Value) {
    for (section, key) in LIST_KEYS {
        if let Some(value) = tree.get_mut(section).and_then(|s| s.get_mut(key))
            && let Some(text) = value.as_str()
        {
            let items = text.split(',').map(str::trim).filter(|item| !item.is_empty());
            *value = serde_json::Value::Array(items.map(|item| item.into()).collect());
        }
    }
}

/// Parses the file as TOML first, for an error that says where: the
/// `config` crate's spans several lines.
fn check_toml(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))?;
    let Err(error) = toml::from_str::<toml::Table>(&text) else {
        return Ok(());
    };
    let at = match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(":{line}:{column}")
        }
        None => String::new(),
    };
    Err(ConfigError::new(format!("{}{at}: {}", path.display(), error.message())))
}

fn config_file(path: &Path) -> config::File<config::FileSourceFile, config::FileFormat> {
    config::File::from(path).format(config::FileFormat::Toml).required(true)
}

/// Every dotted key `Settings` knows, e.g. `server.tls.cert`.
fn known_keys() -> BTreeSet<String> {
    let value = toml::Value::try_from(Settings::default()).unwrap_or(toml::Value::Table(Default::default()));
    let mut keys = BTreeSet::new();
    collect_keys("", &value, &mut keys);
    keys
}

fn collect_keys(prefix: &str, value: &toml::Value, keys: &mut BTreeSet<String>) {
    if let toml::Value::Table(table) = value {
        for (name, child) in table {
            let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            keys.insert(key.clone());
            collect_keys(&key, child, keys);
        }
    }
}

/// serde's `deny_unknown_fields` says "unknown field `x`" without the
/// section; this walks the merged sources so the error names `server.x` and
/// where it came from.
fn reject_unknown_keys(merged: &config::Config) -> Result<(), ConfigError> {
    let known = known_keys();
    let root = config::Source::collect(merged).map_err(ConfigError::new)?;
    let mut stack: Vec<(String, config::Value)> = root.into_iter().collect();
    while let Some((key, value)) = stack.pop() {
        if !known.contains(&key) {
            return Err(ConfigError::key(&key, "unknown key"));
        }
        // Only the sections are tables; a table where a value belongs is a
        // type error that deserialization reports with its key.
        if let config::ValueKind::Table(table) = value.kind {
            let is_section = known.iter().any(|k| k.starts_with(&format!("{key}.")));
            if is_section {
                stack.extend(table.into_iter().map(|(name, child)| (format!("{key}.{name}"), child)));
            }
        }
    }
    Ok(())
}

/// `log.level` is a level, or `target=level` items separated by commas
/// (an env_logger filter). A bare word must be a level, so a typo cannot
/// pass as a target name.
fn validate_log_filter(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("must not be empty".into());
    }
    for item in filter.split(',') {
        let level = match item.split_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level,
            Some(_) => return Err(format!("{filter:?}: {item:?} has no target before '='")),
            None => item,
        };
        if level.trim().parse::<log::LevelFilter>().is_err() {
            return Err(format!("{filter:?}: {:?} is not one of off, error, warn, info, debug, trace", level.trim()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from_env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load_from(None, Some(env), &[])
    }

    #[test]
    fn defaults_validate() {
        Settings::default().validate().expect("defaults are valid");
    }

    #[test]
    fn every_documented_key_is_known() {
        let keys = known_keys();
        for key in [
            "server.host",
            "server.port",
            "server.workers",
            "server.max_connections",
            "server.max_connections_per_ip",
            "server.hosts",
            "server.shutdown_timeout",
            "server.tls.cert",
            "server.tls.key",
            "origin.policy",
            "origin.allow",
            "origin.allow_missing",
            "heartbeat.interval",
            "heartbeat.timeout",
            "limits.max_message_bytes",
            "limits.max_rooms_per_session",
            "limits.max_members_per_room",
            "limits.messages_per_second",
            "limits.burst",
            "limits.outbound_queue",
            "limits.outbound_bytes",
            "rooms.history",
            "rooms.history_bytes",
            "rooms.max_rooms",
            "rooms.empty_ttl",
            "rooms.publish_ids",
            "api.key",
            "api.messages_per_second",
            "api.burst",
            "log.level",
        ] {
            assert!(keys.contains(key), "{key} missing from Settings");
        }
    }

    #[test]
    fn environment_overrides_and_lists() {
        let s = from_env(&[
            ("ROOMCAST_SERVER__PORT", "9000"),
            ("ROOMCAST_HEARTBEAT__INTERVAL", "1s 500ms"),
            ("ROOMCAST_HEARTBEAT__TIMEOUT", "4s"),
            ("ROOMCAST_ORIGIN__POLICY", "allow-list"),
            ("ROOMCAST_ORIGIN__ALLOW", "https://a.example,http://b.example:8080"),
            ("ROOMCAST_API__KEY", "12345"),
            ("ROOMCAST_SERVER__HOSTS", "chat.example.com, localhost:8080"),
            ("ROOMCAST_LIMITS__OUTBOUND_BYTES", "256KiB"),
            ("ROOMCAST_ROOMS__HISTORY_BYTES", "65536"),
            ("ROOMCAST_ORIGIN__ALLOW_MISSING", "false"),
        ])
        .expect("valid");
        assert_eq!(s.server.hosts, vec!["chat.example.com", "localhost:8080"]);
        assert_eq!(s.limits.outbound_bytes, ByteSize::kib(256));
        assert_eq!(s.rooms.history_bytes, ByteSize::kib(64));
        assert!(!s.origin.allow_missing);
        let empty = from_env(&[("ROOMCAST_ORIGIN__ALLOW", "")]).expect("valid");
        assert!(empty.origin.allow.is_empty());
        assert_eq!(s.server.port, 9000);
        assert_eq!(s.heartbeat.interval, Duration::from_millis(1500));
        assert_eq!(s.origin.allow, vec!["https://a.example", "http://b.example:8080"]);
        assert_eq!(s.api.key, "12345");
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("ROOMCAST_SERVER__PORT", "eighty")], "server.port"),
            (&[("ROOMCAST_SERVER__BOGUS", "1")], "server.bogus"),
            (&[("ROOMCAST_HEARTBEAT__TIMEOUT", "2s")], "heartbeat.timeout"),
            (&[("ROOMCAST_HEARTBEAT__INTERVAL", "5")], "heartbeat.interval"),
            (&[("ROOMCAST_ORIGIN__POLICY", "allow-list")], "origin.allow"),
            (&[("ROOMCAST_ORIGIN__POLICY", "everyone")], "origin.policy"),
            (&[("ROOMCAST_ORIGIN__ALLOW", "not a url")], "origin.allow"),
            (&[("ROOMCAST_LIMITS__BURST", "0")], "limits.burst"),
            (&[("ROOMCAST_API__BURST", "0")], "api.burst"),
            (&[("ROOMCAST_API__MESSAGES_PER_SECOND", "-1")], "api.messages_per_second"),
            (&[("ROOMCAST_LOG__LEVEL", "loud")], "log.level"),
            (&[("ROOMCAST_SERVER__TLS__CERT", "/x.pem")], "server.tls.key"),
            (&[("ROOMCAST_SERVER__WORKERS", "513")], "server.workers"),
            (&[("ROOMCAST_SERVER__MAX_CONNECTIONS", "1.5")], "server.max_connections"),
            (&[("ROOMCAST_ORIGIN__ALLOW_MISSING", "yes")], "origin.allow_missing"),
            (&[("ROOMCAST_SERVER__HOSTS", "a b")], "server.hosts"),
            (&[("ROOMCAST_SERVER__HOST", "nonexistent.invalid")], "server.host"),
            (&[("ROOMCAST_LIMITS__OUTBOUND_BYTES", "4MB")], "limits.outbound_bytes"),
            (&[("ROOMCAST_LIMITS__OUTBOUND_BYTES", "0")], "limits.outbound_bytes"),
            (&[("ROOMCAST_ROOMS__MAX_ROOMS", "0")], "rooms.max_rooms"),
            (&[("ROOMCAST_ROOMS__HISTORY_BYTES", "-1")], "rooms.history_bytes"),
        ];
        for (env, key) in cases {
            let err = from_env(env).expect_err("must fail").to_string();
            assert!(err.contains(key), "{env:?}: {err:?} does not name {key}");
            assert!(!err.contains('\n'), "{err:?} spans lines");
        }
    }

    #[test]
    fn toml_round_trip() {
        let text = Settings::default().to_toml();
        assert!(text.contains("interval = \"5s\""), "{text}");
        assert!(text.contains("outbound_bytes = \"4MiB\""), "{text}");
        let back: Settings = toml::from_str(&text).expect("parses back");
        assert_eq!(back.heartbeat.timeout, Duration::from_secs(10));
    }

    #[test]
    fn log_filters() {
        for ok in ["info", "debug", "roomcast=debug,actix_web=warn", "off", "warn,roomcast=trace"] {
            assert!(validate_log_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "loud", "roomcast=loud", "roomcast", "=info"] {
            assert!(validate_log_filter(bad).is_err(), "{bad}");
        }
    }
}
