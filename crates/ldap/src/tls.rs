//! TLS for LDAPS and StartTLS, with rustls (pure Rust, linked into the binary).
//!
//! Not OpenSSL: loading libssl and libcrypto would cost every `mfasync`
//! process more before `main` than a whole password check takes once started
//! (BENCHMARKS.md, "History").
//!
//! What an administrator had with OpenSSL still holds:
//! - the system's trusted CAs (`/etc/ssl/certs`, `SSL_CERT_FILE`) and the
//!   certificates of `tls_ca_file` are trusted;
//! - a server certificate without a subjectAltName DNS name is matched on its
//!   subject CN (OpenSSL and Windows do this; webpki alone would refuse such a
//!   certificate, as issued by older AD CS templates);
//! - `tls_verify = false` accepts any certificate (the handshake's signatures
//!   are still checked);
//! - the NTLM/Kerberos channel binding hashes the server certificate (ldap3,
//!   `tls-server-end-point`).

use std::sync::Arc;

use mfasync_core::config::Directory;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::error::LdapError;

/// The rustls configuration for these settings; `None` when no server uses TLS.
pub(crate) fn client_config(dir: &Directory) -> Result<Option<Arc<ClientConfig>>, LdapError> {
    let any_tls = dir.starttls || dir.servers.iter().any(|s| s.starts_with("ldaps://"));
    if !any_tls {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::Config(format!("cannot set up TLS: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if dir.tls_verify {
        let roots = Arc::new(roots(dir.tls_ca_file.as_deref())?);
        let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| LdapError::Config(format!("cannot set up TLS: {e}")))?;
        Arc::new(Verifier {
            inner,
            roots,
            provider,
        })
    } else {
        // (a CA file that cannot be read is still an error)
        if let Some(path) = dir.tls_ca_file.as_deref().filter(|p| !p.is_empty()) {
            ca_file(path)?;
        }
        Arc::new(NoVerification(provider))
    };
    Ok(Some(Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )))
}

/// The system's trusted CAs, read once per process: every TLS connection's
/// settings start from them, and reading and parsing the system's bundle
/// (~140 certificates) for each password check's connection would be work
/// done again and again. Unreadable or malformed system certificates are
/// skipped, as OpenSSL does. (`tls_ca_file` is read each time: it is small,
/// and an administrator may replace it while `serve` runs.)
static SYSTEM_ROOTS: std::sync::LazyLock<RootCertStore> = std::sync::LazyLock::new(|| {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
});

/// The system's trusted CAs and those of `tls_ca_file`.
fn roots(ca: Option<&str>) -> Result<RootCertStore, LdapError> {
    let mut roots = SYSTEM_ROOTS.clone();
    if let Some(path) = ca.filter(|p| !p.is_empty()) {
        for cert in ca_file(path)? {
            roots.add(cert).map_err(|e| {
                LdapError::Config(format!("tls_ca_file {path}: bad certificate: {e}"))
            })?;
        }
    }
    Ok(roots)
}

/// The largest `tls_ca_file` read: a bundle of a few hundred CAs is far smaller.
const MAX_CA_FILE_BYTES: u64 = 4 << 20;

/// The text of the regular file `path`, at most `max` bytes: a device such as
/// `/dev/zero`, a FIFO or a directory (a configuration saved through the portal
/// can name any path) is refused without being read.
fn read_bounded(path: &str, max: u64) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(text)
}

/// The certificates of a PEM file (`tls_ca_file`).
fn ca_file(path: &str) -> Result<Vec<CertificateDer<'static>>, LdapError> {
    let pem = read_bounded(path, MAX_CA_FILE_BYTES)
        .map_err(|e| LdapError::Config(format!("tls_ca_file {path}: {e}")))?;
    let blocks = pem_certificates(&pem);
    if blocks.is_empty() {
        return Err(LdapError::Config(format!(
            "tls_ca_file {path}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
        )));
    }
    blocks
        .iter()
        .map(|b| {
            CertificateDer::from_pem_slice(b.as_bytes())
                .map_err(|e| LdapError::Config(format!("tls_ca_file {path}: bad certificate: {e}")))
        })
        .collect()
}

/// webpki's verification, with OpenSSL's fallback to the subject CN for a
/// certificate that names no DNS subjectAltName.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let err = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let wrong_name = matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        );
        let ServerName::DnsName(host) = server_name else {
            return Err(err);
        };
        if !wrong_name || !cn_fallback(end_entity, host.as_ref()) {
            return Err(err);
        }
        // The name is the CN's: the chain must still lead to a trusted CA.
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `tls_verify = false`: any certificate, any name.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// OpenSSL's rule (`X509_check_host`): when a certificate has no DNS
/// subjectAltName, the host may match its subject CN (also `*.` wildcards in
/// the leftmost label).
fn cn_fallback(der: &CertificateDer<'_>, host: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return false;
    };
    let has_dns_san = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .any(|n| matches!(n, x509_parser::extensions::GeneralName::DNSName(_))),
        Ok(None) => false,
        // a malformed or duplicated extension: no fallback
        Err(_) => return false,
    };
    if has_dns_san {
        return false;
    }
    let matched = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| name_matches(cn, host));
    matched
}

/// `pattern` (a CN) names `host`: equal ignoring case and a final dot, or a
/// `*.rest` wildcard standing for exactly one leftmost label of a host with
/// at least two labels after it.
fn name_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    let host = host.trim_end_matches('.');
    if pattern.is_empty() || host.is_empty() {
        return false;
    }
    if let Some(rest) = pattern.strip_prefix("*.") {
        let Some((first, host_rest)) = host.split_once('.') else {
            return false;
        };
        return !first.is_empty()
            && rest.contains('.')
            && !rest.contains('*')
            && host_rest.eq_ignore_ascii_case(rest);
    }
    !pattern.contains('*') && pattern.eq_ignore_ascii_case(host)
}

/// Split a PEM file into its certificates.
pub(crate) fn pem_certificates(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(b) = rest.find(BEGIN) {
        let after = &rest[b..];
        match after.find(END) {
            Some(e) => {
                out.push(after[..e + END.len()].to_string());
                rest = &after[e + END.len()..];
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_splitting() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let c = pem_certificates(pem);
        assert_eq!(c.len(), 2);
        assert!(c[1].contains("BBB"));
    }

    #[test]
    fn cn_names_match_like_openssl() {
        assert!(name_matches("dc1.example.com", "DC1.Example.com"));
        assert!(name_matches("dc1.example.com.", "dc1.example.com"));
        assert!(!name_matches("dc1.example.com", "dc2.example.com"));
        assert!(!name_matches("example.com", "dc1.example.com"));
        assert!(name_matches("*.example.com", "dc1.example.com"));
        assert!(!name_matches("*.example.com", "a.dc1.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.com", "example.com"));
        assert!(!name_matches("dc*.example.com", "dc1.example.com"));
        assert!(!name_matches("", "x"));
    }
}

#[cfg(test)]
mod bounded_read_tests {
    use super::read_bounded;

    #[test]
    fn ca_files_are_read_only_when_regular_and_small() {
        let Err(e) = read_bounded("/dev/zero", 1024) else {
            panic!("/dev/zero was read")
        };
        assert_eq!(e, "not a regular file");
        let Err(e) = read_bounded("/", 1024) else {
            panic!("a directory was read")
        };
        assert_eq!(e, "not a regular file");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; 2048]).unwrap_or_else(|e| panic!("{e}"));
        let big = big.display().to_string();
        assert_eq!(
            read_bounded(&big, 1024),
            Err("larger than 1024 bytes".to_string())
        );
        assert_eq!(read_bounded(&big, 4096).map(|t| t.len()), Ok(2048));
    }
}
