//! The keys tokens are checked with: `hmac_secret` (or `hmac_secret_file`),
//! `public_key` (PEM) and `jwks_file` (a JSON Web Key Set). A token's `kid`
//! picks a key of the set; otherwise its `alg` picks the configured key of
//! that kind. Either way the algorithms allowed are those of the key, so a
//! token cannot choose how it is checked: `alg: none` is no algorithm at
//! all, and an HS256 token signed with the bytes of the public key is
//! checked against `hmac_secret` (or refused when there is none).

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};

use crate::config::{AuthSettings, ConfigError};

/// The shortest HMAC secret: RFC 7518 §3.2 wants at least the hash's size.
pub const MIN_SECRET_BYTES: usize = 32;

/// One key, the algorithms tokens checked with it may use, and the checks
/// made with it (built once: a handshake only looks them up).
pub struct Key {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    validation: Validation,
}

impl Key {
    fn new(key: DecodingKey) -> Key {
        let algorithms = key.family().algorithms().to_vec();
        Key { key, algorithms, validation: Validation::default() }
    }

    pub fn decoding(&self) -> &DecodingKey {
        &self.key
    }

    pub fn validation(&self) -> &Validation {
        &self.validation
    }
}

#[derive(Default)]
pub struct Keys {
    hmac: Option<Key>,
    public: Option<Key>,
    set: Vec<(String, Key)>,
}

impl Keys {
    /// Reads every configured key; every problem names its key.
    pub fn load(settings: &AuthSettings) -> Result<Keys, ConfigError> {
        let mut keys = Keys::default();
        if let Some(secret) = hmac_secret(settings)? {
            keys.hmac = Some(Key::new(
                DecodingKey::from_secret(&secret)
                    .map_err(|e| ConfigError::key("auth.hmac_secret", format!("cannot be used as a key: {e}")))?,
            ));
        }
        if !settings.public_key.is_empty() {
            keys.public = Some(public_key(&settings.public_key)?);
        }
        if !settings.jwks_file.is_empty() {
            keys.set = key_set(&settings.jwks_file)?;
        }
        Ok(keys)
    }

    /// Sets every key's checks: `make` gets the key's algorithms.
    pub fn set_validation(&mut self, make: impl Fn(&[Algorithm]) -> Validation) {
        let keys = self.hmac.iter_mut().chain(self.public.iter_mut()).chain(self.set.iter_mut().map(|(_, key)| key));
        for key in keys {
            key.validation = make(&key.algorithms);
        }
    }

    /// The key, when exactly one is configured.
    pub fn only(&self) -> Option<&Key> {
        match (&self.hmac, &self.public, self.set.as_slice()) {
            (Some(key), None, []) | (None, Some(key), []) | (None, None, [(_, key)]) => Some(key),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hmac.is_none() && self.public.is_none() && self.set.is_empty()
    }

    /// The key a token with `header` is checked with, or why there is none.
    pub fn select(&self, header: &Header) -> Result<&Key, String> {
        // A `kid` names a key of the set only for an algorithm the set
        // serves: an HS256 token's `kid` is the application's own business.
        if let Some(kid) = &header.kid
            && self.set.iter().any(|(_, key)| key.algorithms.contains(&header.alg))
        {
            return self
                .set
                .iter()
                .find(|(id, _)| id == kid)
                .map(|(_, key)| key)
                .ok_or_else(|| format!("no key with kid {} in auth.jwks_file", super::shown(kid)));
        }
        let family = header.alg.family();
        [&self.hmac, &self.public]
            .into_iter()
            .flatten()
            .find(|key| key.key.family() == family)
            .ok_or_else(|| format!("no key configured for {:?} tokens", header.alg))
    }
}

/// `hmac_secret`, or the contents of `hmac_secret_file` without the line
/// break that ends most files.
pub fn hmac_secret(settings: &AuthSettings) -> Result<Option<Vec<u8>>, ConfigError> {
    let (key, secret) = match (settings.hmac_secret.is_empty(), settings.hmac_secret_file.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {
            return Err(ConfigError::key("auth.hmac_secret_file", "set auth.hmac_secret or this, not both"));
        }
        (false, true) => ("auth.hmac_secret", settings.hmac_secret.as_bytes().to_vec()),
        (true, false) => {
            let path = &settings.hmac_secret_file;
            let mut bytes = std::fs::read(path)
                .map_err(|e| ConfigError::key("auth.hmac_secret_file", format!("cannot read {path}: {e}")))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            ("auth.hmac_secret_file", bytes)
        }
    };
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::key(
            key,
            format!("the secret is {} bytes; at least {MIN_SECRET_BYTES} are needed", secret.len()),
        ));
    }
    Ok(Some(secret))
}

/// A PEM public key: RSA, EC (P-256, P-384) or Ed25519.
fn public_key(path: &str) -> Result<Key, ConfigError> {
    let error = |problem: String| ConfigError::key("auth.public_key", format!("{path}: {problem}"));
    let pem = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("PRIVATE KEY-----") {
        return Err(error("holds a private key; give the public key (openssl pkey -in KEY -pubout)".into()));
    }
    if text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(error("holds a certificate; give its public key (openssl x509 -in CERT -pubkey -noout)".into()));
    }
    DecodingKey::from_rsa_pem(&pem)
        .or_else(|_| DecodingKey::from_ec_pem(&pem))
        .or_else(|_| DecodingKey::from_ed_pem(&pem))
        .map(Key::new)
        .map_err(|_| error("not a PEM public key (RSA, EC P-256 or P-384, or Ed25519)".into()))
}

/// Every key of the set, by `kid`. HMAC (`oct`) keys are refused: secrets
/// belong in `hmac_secret`, not in a file of public keys.
fn key_set(path: &str) -> Result<Vec<(String, Key)>, ConfigError> {
    let error = |problem: String| ConfigError::key("auth.jwks_file", format!("{path}: {problem}"));
    let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| error(format!("not a JSON Web Key Set: {e}")))?;
    if set.keys.is_empty() {
        return Err(error("holds no keys".into()));
    }
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone().ok_or_else(|| error("every key needs a \"kid\"".into()))?;
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err(error(format!("key {kid:?} is a shared secret (\"oct\"); put it in auth.hmac_secret")));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| error(format!("key {kid:?}: {e}")))?;
        let mut key = Key::new(key);
        // A key that names its algorithm allows only that one.
        if let Some(named) = jwk.common.key_algorithm {
            let algorithm: Algorithm = named
                .to_string()
                .parse()
                .map_err(|_| error(format!("key {kid:?}: {named} is not a signature algorithm")))?;
            if !key.algorithms.contains(&algorithm) {
                return Err(error(format!("key {kid:?}: \"alg\" {named} does not fit the key")));
            }
            key.algorithms = vec![algorithm];
        }
        if keys.iter().any(|(id, _)| *id == kid) {
            return Err(error(format!("two keys have kid {kid:?}")));
        }
        keys.push((kid, key));
    }
    Ok(keys)
}
