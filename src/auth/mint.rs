//! Making tokens: `roomcast token` for development and tests, and the load
//! tester's one token per simulated user. Signed with the configured
//! `hmac_secret` (HS256), or with a PEM private key.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Map, Value, json};

use super::identity::now_seconds;

/// What a token says.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    pub sub: String,
    pub name: Option<String>,
    /// Patterns the user may join and publish to.
    pub rooms: Vec<String>,
    /// Patterns the user may only read.
    pub read: Vec<String>,
    /// A room token for this room (then `rooms` and `read` are not used).
    pub room: Option<String>,
    /// With `room`: join but not publish.
    pub read_only: bool,
    pub ttl: Duration,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

impl Claims {
    fn to_json(&self) -> Map<String, Value> {
        let now = now_seconds();
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(self.sub));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + self.ttl.as_secs().max(1)));
        if let Some(name) = &self.name {
            claims.insert("name".into(), json!(name));
        }
        match &self.room {
            Some(room) => {
                claims.insert("room".into(), json!(room));
                if self.read_only {
                    claims.insert("read".into(), json!(true));
                }
            }
            None => {
                if !self.rooms.is_empty() {
                    claims.insert("rooms".into(), json!(self.rooms));
                }
                if !self.read.is_empty() {
                    claims.insert("read".into(), json!(self.read));
                }
            }
        }
        if let Some(audience) = &self.audience {
            claims.insert("aud".into(), json!(audience));
        }
        if let Some(issuer) = &self.issuer {
            claims.insert("iss".into(), json!(issuer));
        }
        claims
    }
}

/// A token signed with an HMAC secret (HS256).
pub fn with_secret(secret: &[u8], claims: &Claims) -> Result<String, String> {
    let key = EncodingKey::from_secret(secret).map_err(|e| format!("cannot use the secret: {e}"))?;
    encode(&Header::new(Algorithm::HS256), &claims.to_json(), &key).map_err(|e| format!("cannot sign: {e}"))
}

/// A token signed with a PEM private key: RS256 for RSA, ES256 or ES384
/// for EC (as the curve allows), EdDSA for Ed25519; `kid` names the key in
/// a key set.
pub fn with_private_key(pem: &[u8], kid: Option<&str>, claims: &Claims) -> Result<String, String> {
    let candidates: [(Result<EncodingKey, _>, &[Algorithm]); 3] = [
        (EncodingKey::from_rsa_pem(pem), &[Algorithm::RS256]),
        (EncodingKey::from_ec_pem(pem), &[Algorithm::ES256, Algorithm::ES384]),
        (EncodingKey::from_ed_pem(pem), &[Algorithm::EdDSA]),
    ];
    let body = claims.to_json();
    for (key, algorithms) in candidates {
        let Ok(key) = key else { continue };
        for algorithm in algorithms {
            let mut header = Header::new(*algorithm);
            header.kid = kid.map(str::to_string);
            if let Ok(token) = encode(&header, &body, &key) {
                return Ok(token);
            }
        }
    }
    Err("not a PEM private key (RSA, EC P-256 or P-384, or Ed25519, PKCS#8 or PKCS#1)".into())
}

/// `roomcast token`: prints a signed token, for development and tests.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// The display name (`name`): the session's first nick.
    #[arg(long)]
    pub name: Option<String>,
    /// Room patterns the user may join and publish to (`rooms`), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "PATTERN,...")]
    pub rooms: Vec<String>,
    /// Room patterns the user may join but not publish to (`read`).
    #[arg(long, value_delimiter = ',', value_name = "PATTERN,...")]
    pub read: Vec<String>,
    /// Make a room token for this room instead (sent with `join`).
    #[arg(long, conflicts_with_all = ["rooms", "read"])]
    pub room: Option<String>,
    /// With --room: join but not publish (`"read": true`).
    #[arg(long, requires = "room")]
    pub read_only: bool,
    /// How long the token lives.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Configuration file, for auth.hmac_secret, auth.audience and
    /// auth.issuer [default: config/roomcast.toml when it exists].
    #[arg(long, short, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// Sign with this PEM private key (RS256, ES256/384, EdDSA) instead of
    /// the configured secret.
    #[arg(long, value_name = "PATH")]
    pub private_key: Option<std::path::PathBuf>,
    /// With --private-key: the key's id in a key set (`kid`).
    #[arg(long, requires = "private_key")]
    pub kid: Option<String>,
}

/// Runs `roomcast token`: 0 with the token on stdout, 2 for bad input or
/// no key to sign with.
pub fn run(args: TokenArgs) -> std::process::ExitCode {
    match token(&args) {
        Ok(token) => {
            println!("{token}");
            std::process::ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("roomcast token: {problem}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Grants that cannot do anything: a room outside `auth.private_rooms` is
/// open to every session, so a `read` grant there does not stop anyone
/// publishing (the mistake of a "read-only feed" that is not private).
fn ineffective_grants(args: &TokenArgs, private_rooms: &[String]) -> Vec<String> {
    let private = super::patterns::Patterns::parse(private_rooms).unwrap_or_default();
    let outside =
        |pattern: &str| super::patterns::Pattern::parse(pattern).is_ok_and(|pattern| !private.overlaps(&pattern));
    let mut warnings = Vec::new();
    for pattern in args.read.iter().filter(|pattern| outside(pattern)) {
        warnings.push(format!(
            "--read {pattern}: no room it names is private (auth.private_rooms), and rooms that are not private \
             are open to every session: the grant makes nothing read-only; add {pattern} to auth.private_rooms"
        ));
    }
    if let Some(room) = args.room.as_deref().filter(|room| outside(room)) {
        warnings.push(format!(
            "--room {room}: the room is not private (auth.private_rooms): every session may join it, and \
             publish there, without this token"
        ));
    }
    warnings
}

fn token(args: &TokenArgs) -> Result<String, String> {
    let (settings, _) =
        crate::Settings::load(args.config.as_deref(), &[|settings| super::Verifier::new(&settings.auth).map(drop)])
            .map_err(|e| format!("configuration error: {e}"))?;
    let auth = &settings.auth;
    let text = |value: &str| Some(value.to_string()).filter(|value| !value.is_empty());
    let claims = Claims {
        sub: args.sub.clone(),
        name: args.name.clone(),
        rooms: args.rooms.clone(),
        read: args.read.clone(),
        room: args.room.clone(),
        read_only: args.read_only,
        ttl: args.ttl,
        audience: text(&auth.audience),
        issuer: text(&auth.issuer),
    };
    // Checked as the server will check it, so that a typo shows here.
    let object: super::Claims =
        serde_json::from_value(Value::Object(claims.to_json())).map_err(|e| format!("bad claims: {e}"))?;
    match claims.room {
        Some(_) => super::identity::room(&object).map(drop)?,
        None => super::identity::connection(&object).map(drop)?,
    }
    for warning in ineffective_grants(args, &auth.private_rooms) {
        eprintln!("roomcast token: warning: {warning}");
    }
    match &args.private_key {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            with_private_key(&pem, args.kid.as_deref(), &claims)
        }
        None => match super::keys::hmac_secret(auth).map_err(|e| e.to_string())? {
            Some(secret) => with_secret(&secret, &claims),
            None => Err("no auth.hmac_secret (or auth.hmac_secret_file) in the configuration to sign with; \
                 set one, or give --private-key"
                .into()),
        },
    }
}
