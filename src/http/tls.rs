//! HTTPS for every listener (README "Security: TLS"): `http.tls_cert_file` + `http.tls_key_file`.
//!
//! Owns: reading the PEM certificate chain and private key and building the rustls server
//! configuration (ring provider, TLS 1.2 and 1.3), with one-line start-up errors.
//! Leaves to others: serving (`mod.rs` hands the configuration to actix-web's rustls listener)
//! and the HSTS header (`headers.rs`).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::error::StartupError;

/// A ready rustls server configuration.
#[derive(Debug, Clone)]
pub struct TlsConfig(pub(crate) rustls::ServerConfig);

/// The TLS configuration when `http.tls_cert_file`/`tls_key_file` are set, `None` otherwise.
///
/// # Errors
/// [`StartupError::Auth`] naming the file: missing or unreadable, no certificate or key in it,
/// a key that does not match the certificate.
pub fn load(config: &Config) -> Result<Option<TlsConfig>, StartupError> {
    if !config.tls_enabled() {
        return Ok(None);
    }
    let (cert_path, key_path) = (&config.http.tls_cert_file, &config.http.tls_key_file);
    let certs = read_certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        fail(key_path, "http.tls_key_file", &format!("no PEM private key readable ({})", pem_error(&e)))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError::Auth(format!("TLS set-up failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| fail(key_path, "http.tls_key_file", &format!("unusable with http.tls_cert_file ({e})")))?;
    Ok(Some(TlsConfig(server)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, StartupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(path, "http.tls_cert_file", &pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(path, "http.tls_cert_file", &pem_error(&e)))?;
    if certs.is_empty() {
        return Err(fail(path, "http.tls_cert_file", "no PEM certificate in it"));
    }
    Ok(certs)
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

fn fail(path: &Path, key: &str, why: &str) -> StartupError {
    StartupError::Auth(format!("{key} {}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_stop_the_start_with_one_line_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem\n").expect("write");
        let cfg = |cert: &Path, key: &Path| {
            let mut c = Config::default();
            c.http.tls_cert_file = cert.to_owned();
            c.http.tls_key_file = key.to_owned();
            c
        };
        let missing = dir.path().join("missing.pem");
        for (c, needle) in [(cfg(&missing, &junk), "http.tls_cert_file"), (cfg(&junk, &junk), "http.tls_cert_file")] {
            let msg = load(&c).expect_err(needle).to_string();
            assert!(msg.contains(needle) && !msg.contains('\n'), "{msg}");
        }
        assert!(load(&Config::default()).expect("off").is_none());
    }
}
