//! The configuration in effect and what is built from it once (the names
//! the server answers to, the origin policy, the token verifier), swapped
//! whole by SIGHUP.

use std::sync::Arc;

use crate::auth::Verifier;
use crate::config::hosts::HostCheck;
use crate::config::origin::OriginCheck;
use crate::config::{Check, ConfigError, Settings};

/// What validating settings needs beyond their values: the certificate and
/// key load, the token keys parse.
pub const CHECKS: &[Check] = &[
    |settings| {
        let tls = &settings.server.tls;
        if tls.cert.is_empty() || tls.key.is_empty() {
            return Ok(());
        }
        crate::tls::certified_key(&tls.cert, &tls.key).map(drop)
    },
    |settings| Verifier::new(&settings.auth).map(drop),
];

/// The configuration in effect and the checks made from it, swapped whole
/// by SIGHUP: a request sees either the old or the new one.
pub struct Live {
    pub settings: Settings,
    pub hosts: HostCheck,
    pub origin: OriginCheck,
    /// `[auth]`: a reload reads the keys again.
    pub auth: Arc<Verifier>,
}

impl Live {
    pub fn new(settings: Settings) -> Result<Live, ConfigError> {
        let hosts = HostCheck::new(&settings.server)?;
        let origin = OriginCheck::new(&settings.origin);
        let auth = Arc::new(Verifier::new(&settings.auth)?);
        Ok(Live { settings, hosts, origin, auth })
    }
}
