//! HTTPS on the listening port (`keyplane serve --tls-cert FILE --tls-key FILE`): rustls
//! with the certificate chain and private key from PEM files, HTTP/1.1 with upgrades on top
//! (the Live API's WebSocket needs them: google-genai's Live client always dials `wss://`).
//!
//! The accept loop (`crate::front`) gives each TLS connection a bounded handshake; a failed
//! one (plain HTTP sent to the TLS port, an untrusted client) ends that connection only.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The PEM files `--tls-cert` and `--tls-key` name.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Reads and checks the certificate and key: a missing file, a file without a certificate
/// or key, or a key that does not match the certificate fails here, before the server
/// starts. The key's bytes never appear in an error.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS: no protocol version available")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "TLS: the key in {} does not fit the certificate in {}",
                files.key.display(),
                files.cert.display()
            )
        })?;
    // HTTP/1.1 only: the server speaks HTTP/1 (and its WebSocket upgrades).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("TLS: cannot read the certificate file {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!("TLS: {} is not a PEM certificate file: {e}", path.display())
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "TLS: {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        path.display()
    );
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("TLS: cannot read the key file {}", path.display()))?;
    // The parser's error never quotes the key material; keep it that way in ours.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        anyhow::anyhow!(
            "TLS: {} holds no private key (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_files_are_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let empty = write(dir.path(), "empty.pem", "");
        let junk = write(dir.path(), "junk.pem", "not pem at all\n");
        let cases = [
            (
                missing.clone(),
                missing.clone(),
                "cannot read the certificate file",
            ),
            (empty.clone(), empty.clone(), "holds no certificate"),
            (junk.clone(), junk.clone(), "holds no certificate"),
        ];
        for (cert, key, want) in cases {
            let err = server_config(&TlsFiles { cert, key }).unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains(want), "{text}");
        }
    }
}
