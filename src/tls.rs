//! TLS for `[server.tls]`: the PEM certificate chain and private key, read
//! into a rustls server configuration. Every problem names its key, so a
//! bad file stops start-up (and `check-config`) with exit status 2. SIGHUP
//! reads the files again ([`ServerCertificate`]).
//!
//! And the client side (`wss:` in `roomcast load` and `roomcast client`):
//! the system's roots, plus the certificates of `--ca FILE` both as
//! authorities and, like curl, as server certificates trusted as they are
//! (a self-signed certificate, which webpki would refuse as "a CA used as
//! an end entity").

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::ConfigError;

/// Reads both files and checks that the key goes with the certificate.
pub fn certified_key(cert_path: &str, key_path: &str) -> Result<Arc<CertifiedKey>, ConfigError> {
    let cert_error = |problem: String| ConfigError::key("server.tls.cert", format!("{cert_path}: {problem}"));
    let key_error = |problem: String| ConfigError::key("server.tls.key", format!("{key_path}: {problem}"));
    let certs = read_certificates(Path::new(cert_path)).map_err(cert_error)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| key_error(e.to_string()))?;
    CertifiedKey::from_der(certs, key, &rustls::crypto::ring::default_provider())
        .map(Arc::new)
        .map_err(|e| key_error(format!("does not go with server.tls.cert: {e}")))
}

/// The server's certificate, which SIGHUP can replace while connections go
/// on: each new TLS handshake takes the one in effect.
#[derive(Debug)]
pub struct ServerCertificate(ArcSwap<CertifiedKey>);

impl ServerCertificate {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(ServerCertificate(ArcSwap::new(key)))
    }

    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.0.store(key);
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// A rustls server configuration presenting `certificate`.
pub fn server_config(certificate: Arc<ServerCertificate>) -> Result<rustls::ServerConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::key("server.tls.cert", e))?
        .with_no_client_auth()
        .with_cert_resolver(certificate))
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

/// A rustls client configuration trusting the system's roots and the
/// certificates in `ca`.
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: `--ca` may be all we need.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    let mut pinned = Vec::new();
    if let Some(path) = ca {
        let problem = |e: String| format!("--ca {}: {e}", path.display());
        for cert in read_certificates(path).map_err(problem)? {
            // Some certificates cannot be authorities (no CA flag, say):
            // they are still trusted as server certificates.
            let _ = roots.add(cert.clone());
            pinned.push(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // No roots at all (no system store, and --ca holds server certificates
    // only) leaves the pinned certificates.
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().ok();
    if webpki.is_none() && pinned.is_empty() {
        return Err("no certificate to trust: the system has none; give one with --ca".into());
    }
    let verifier = Arc::new(TrustedCertificates { pinned, webpki, provider: provider.clone() });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Accepts a server certificate that is one of `pinned` byte for byte (its
/// name must still match, and the handshake's signatures must be its key's),
/// and otherwise whatever webpki accepts from the roots.
#[derive(Debug)]
struct TrustedCertificates {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for TrustedCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|cert| cert.as_ref() == end_entity.as_ref()) {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            None => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
