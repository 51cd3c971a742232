//! TLS for `[server.tls]`: the PEM certificate chain and private key, read
//! into a rustls server configuration. Every problem names its key, so a
//! bad file stops start-up (and `check-config`) with exit status 2. The
//! client side (`wss:` in `roomcast load` and `roomcast client`) reads its
//! `--ca` file with the same [`read_certificates`].

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

/// Reads both files and checks that the key goes with the certificate.
pub fn server_config(cert_path: &str, key_path: &str) -> Result<rustls::ServerConfig, ConfigError> {
    let cert_error = |problem: String| ConfigError::key("server.tls.cert", format!("{cert_path}: {problem}"));
    let key_error = |problem: String| ConfigError::key("server.tls.key", format!("{key_path}: {problem}"));
    let certs = read_certificates(Path::new(cert_path)).map_err(cert_error)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| key_error(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| key_error(format!("does not go with server.tls.cert: {e}")))
}

/// Every PEM certificate in the file at `path`; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}
