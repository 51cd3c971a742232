//! Authentication (`shared/spec/auth.md`): signed tokens (JWT) that the
//! application hands its users and roomcast checks without calling anyone.
//!
//! - [`keys`]: the configured keys, and which one checks a given token.
//! - [`identity`]: the claims: the user, its grants, room tokens.
//! - [`patterns`]: room-name patterns (`private:*`).
//! - [`users`]: connections per user (`max_connections_per_user`).
//! - [`mint`]: making tokens (`roomcast token`, the load tester).
//!
//! The [`Verifier`] is built from `[auth]` at start and on every reload; the
//! upgrade gate asks it who a connection is, once, and the session carries
//! the answer ([`Identity`]) to the registry, which checks grants on `join`
//! and `publish`.

pub mod identity;
pub mod keys;
pub mod mint;
pub mod patterns;
pub mod users;

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};

use crate::config::{AuthMode, AuthSettings, ConfigError};
use crate::metrics::AuthFailure;
pub use identity::{Access, Claims, ConnectionClaims, Identity, RoomClaims};
use keys::Keys;
use patterns::Patterns;

/// The longest token accepted, header or query: identities live as long as
/// their sessions, so what one may hold is bounded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The most of a value from a token that an error (and so the log) repeats.
pub const SHOWN_BYTES: usize = 64;

/// A value from a token as an error message shows it: quoted, escaped, at
/// most [`SHOWN_BYTES`] of it (a token chooses its values, and errors are
/// logged).
pub fn shown(value: &str) -> String {
    let cut = crate::protocol::cut(value, SHOWN_BYTES);
    let more = if cut.len() < value.len() { "..." } else { "" };
    format!("{:?}{more}", cut)
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Signature, algorithm, claims: `unauthorized`, with what was wrong.
    Invalid(String),
    /// Only `exp` failed: `token_expired`.
    Expired,
}

impl TokenError {
    pub fn message(&self) -> String {
        match self {
            TokenError::Invalid(why) => format!("invalid token: {why}"),
            TokenError::Expired => "the token has expired".into(),
        }
    }
}

/// What authentication decides for a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Authentication is off, or optional and no token came.
    Anonymous,
    User(ConnectionClaims),
    /// Upgraded, then closed 1008 with `policy` as the reason.
    Refused {
        policy: Policy,
        failure: AuthFailure,
        message: String,
    },
}

pub struct Verifier {
    mode: AuthMode,
    keys: Keys,
    leeway: Duration,
    private_rooms: Patterns,
    /// `auth.issuer`: when set, a token's `iss` must be exactly this string.
    issuer: Box<str>,
}

impl Verifier {
    /// Reads the keys and checks every `[auth]` key; `None` with auth off
    /// (the keys are still checked when set: a bad file is a mistake either
    /// way).
    pub fn new(settings: &AuthSettings) -> Result<Verifier, ConfigError> {
        let mut keys = Keys::load(settings)?;
        if settings.mode != AuthMode::Off && keys.is_empty() {
            return Err(ConfigError::key(
                "auth.mode",
                format!(
                    "{:?} needs a key: auth.hmac_secret, auth.hmac_secret_file, auth.public_key or auth.jwks_file",
                    settings.mode.as_str()
                ),
            ));
        }
        let private_rooms = Patterns::parse(&settings.private_rooms)
            .map_err(|problem| ConfigError::key("auth.private_rooms", problem))?;
        keys.set_validation(|algorithms| validation(algorithms, settings));
        let issuer = settings.issuer.as_str().into();
        Ok(Verifier { mode: settings.mode, keys, leeway: settings.leeway, private_rooms, issuer })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Whether `room` needs a grant (`auth.private_rooms`).
    pub fn is_private(&self, room: &str) -> bool {
        self.private_rooms.matches(room)
    }

    pub fn private_rooms(&self) -> &Patterns {
        &self.private_rooms
    }

    /// Who a new connection is, from its token (if it sent one).
    pub fn admit(&self, token: Option<&str>) -> Admission {
        let refused = |policy, failure, message: String| Admission::Refused { policy, failure, message };
        match (self.mode, token) {
            (AuthMode::Off, _) | (AuthMode::Optional, None) => Admission::Anonymous,
            (AuthMode::Required, None) => refused(
                Policy::Unauthorized,
                AuthFailure::Missing,
                "a token is required: send Authorization: Bearer TOKEN or ?token=TOKEN".into(),
            ),
            (_, Some(token)) => match self.connection(token) {
                Ok(claims) => Admission::User(claims),
                Err(TokenError::Expired) => {
                    refused(Policy::TokenExpired, AuthFailure::Expired, TokenError::Expired.message())
                }
                Err(error) => refused(Policy::Unauthorized, AuthFailure::Invalid, error.message()),
            },
        }
    }

    /// Milliseconds from now until a token with this `exp` is expired
    /// (the leeway included).
    pub fn lifetime_ms(&self, exp: u64) -> u64 {
        let end_ms = exp.saturating_add(self.leeway.as_secs()).saturating_mul(1000);
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        end_ms.saturating_sub(now_ms)
    }

    /// A connection token's user and grants, and its `exp`.
    pub fn connection(&self, token: &str) -> Result<ConnectionClaims, TokenError> {
        let claims = self.claims(token)?;
        let checked = identity::connection(&claims).map_err(TokenError::Invalid)?;
        self.unexpired(checked.exp)?;
        Ok(checked)
    }

    /// A room token's user, room and access.
    pub fn room(&self, token: &str) -> Result<RoomClaims, TokenError> {
        let claims = self.claims(token)?;
        let checked = identity::room(&claims).map_err(TokenError::Invalid)?;
        self.unexpired(identity::numeric_date(&claims, "exp").ok().flatten().unwrap_or(0))?;
        Ok(checked)
    }

    fn unexpired(&self, exp: u64) -> Result<(), TokenError> {
        if exp.saturating_add(self.leeway.as_secs()) < identity::now_seconds() {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// The claims of a token whose signature, algorithm, `nbf`, `aud` and
    /// `iss` hold; `exp` is checked by the caller.
    fn claims(&self, token: &str) -> Result<Claims, TokenError> {
        let invalid = |why: String| TokenError::Invalid(why);
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!("longer than {MAX_TOKEN_BYTES} bytes")));
        }
        // With one key there is nothing to choose: `decode` reads the
        // header itself and refuses an `alg` the key does not allow.
        let key = match self.keys.only() {
            Some(key) => key,
            None => {
                let header = decode_header(token).map_err(|e| invalid(format!("not a signed JWT ({e})")))?;
                self.keys.select(&header).map_err(invalid)?
            }
        };
        let claims = match decode::<Claims>(token, key.decoding(), key.validation()) {
            Ok(data) => data.claims,
            Err(error) => return Err(invalid(describe(error.kind()))),
        };
        // RFC 7519 lets `iss` be any string; an array that holds the
        // issuer (which the JWT library lets pass) is not the issuer.
        if !self.issuer.is_empty() && !claims.issued_by(&self.issuer) {
            return Err(invalid("wrong iss: it must be the configured issuer, as one string".into()));
        }
        Ok(claims)
    }
}

/// The checks `jsonwebtoken` makes of a token for a key allowing
/// `algorithms`: the signature, `nbf`, and `aud` and `iss` when configured.
/// `exp` is required but checked by [`Verifier`], which tells an expired
/// token from an invalid one.
fn validation(algorithms: &[Algorithm], settings: &AuthSettings) -> Validation {
    let mut validation = Validation {
        algorithms: algorithms.to_vec(),
        leeway: settings.leeway.as_secs(),
        // `exp` is read and checked by `identity`, which says what is wrong
        // with it (the library calls a malformed one missing).
        validate_exp: false,
        validate_nbf: true,
        required_spec_claims: Default::default(),
        validate_aud: !settings.audience.is_empty(),
        ..Validation::default()
    };
    if !settings.audience.is_empty() {
        validation.set_audience(&[&settings.audience]);
        validation.required_spec_claims.insert("aud".into());
    }
    if !settings.issuer.is_empty() {
        validation.set_issuer(&[&settings.issuer]);
        validation.required_spec_claims.insert("iss".into());
    }
    validation
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm => "its alg does not fit the configured key".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "wrong aud".into(),
        ErrorKind::InvalidIssuer => "wrong iss".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("`{claim}` is required"),
        ErrorKind::InvalidClaimFormat(claim) => format!("`{claim}` is malformed"),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            "not a signed JWT".into()
        }
        _ => "the configured key cannot check it".into(),
    }
}

/// Why authentication closes a session: the `error` code (on `/ws`) and the
/// close frame's reason (everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Unauthorized,
    TokenExpired,
    TooManyConnections,
}

impl Policy {
    pub fn error_code(self) -> crate::protocol::ErrorCode {
        use crate::protocol::ErrorCode;
        match self {
            Policy::Unauthorized => ErrorCode::Unauthorized,
            Policy::TokenExpired => ErrorCode::TokenExpired,
            Policy::TooManyConnections => ErrorCode::TooManyConnections,
        }
    }
}
