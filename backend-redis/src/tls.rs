//! TLS for `rediss://` URLs: the certificates a [`RedisConfig`] trusts and
//! presents, and rustls's crypto provider.
//!
//! redis-rs builds its rustls `ClientConfig` itself, on every connection,
//! from the process-wide default crypto provider; it has no hook to pass one
//! in. Its `tokio-rustls-comp` feature turns off rustls's default features,
//! so no provider is compiled in and connecting would panic with "no
//! process-level CryptoProvider available". This crate compiles in *ring*
//! and installs it as the default unless the application installed one
//! first.
//!
//! [`RedisConfig`]: crate::RedisConfig

use std::fmt;
use std::sync::Arc;

use crewq_core::{Error, Result};
use redis::{Client, ClientTlsConfig, ConnectionAddr, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// What a `RedisConfig` trusts and presents on a TLS connection; empty for
/// the platform's roots and no client certificate.
#[derive(Clone, Default)]
pub(crate) struct TlsTrust {
    /// CA certificates (PEM) trusted instead of the platform's roots.
    pub root_ca_pem: Option<Vec<u8>>,
    /// Certificate chain and private key (PEM) for mutual TLS.
    pub client_cert: Option<ClientCert>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone)]
pub(crate) struct ClientCert {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsTrust {
    // Says what is set, never the bytes: the client key is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTrust")
            .field("root_ca", &self.root_ca_pem.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

impl TlsTrust {
    fn is_empty(&self) -> bool {
        self.root_ca_pem.is_none() && self.client_cert.is_none()
    }
}

/// Installs *ring* as rustls's process-wide crypto provider unless one is
/// installed already (by the application, or by an earlier call).
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race against another installer is fine: either way a
        // provider is installed, and the application's choice wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `client` with `trust` applied, for a `rediss://` URL; `client` as it is
/// for any other URL when `trust` is empty.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when certificates are given for a URL that is
/// not `rediss://`, or a PEM does not parse, holds no certificate, or the
/// client key does not match its certificate.
pub(crate) fn apply(client: Client, trust: &TlsTrust, redacted_url: &str) -> Result<Client> {
    let is_tls = matches!(
        client.get_connection_info().addr(),
        ConnectionAddr::TcpTls { .. }
    );
    if is_tls {
        ensure_crypto_provider();
    }
    if trust.is_empty() {
        return Ok(client);
    }
    if !is_tls {
        // Connecting in plain text while the caller configured a CA would
        // look like TLS and not be.
        return Err(Error::InvalidArgument(format!(
            "TLS certificates are set but {redacted_url} is not a rediss:// URL"
        )));
    }
    Client::build_with_tls(
        client.get_connection_info().clone(),
        certificates_of(trust)?,
    )
    .map_err(|err| Error::InvalidArgument(format!("TLS settings for {redacted_url}: {err}")))
}

/// The certificates of `trust` as redis-rs takes them (a single client's
/// or a cluster client's), checked first.
///
/// # Errors
///
/// As [`apply`], for the certificates themselves.
pub(crate) fn certificates_of(trust: &TlsTrust) -> Result<TlsCertificates> {
    check(trust)?;
    Ok(TlsCertificates {
        client_tls: trust.client_cert.as_ref().map(|cert| ClientTlsConfig {
            client_cert: cert.chain_pem.clone(),
            client_key: cert.key_pem.clone(),
        }),
        root_cert: trust.root_ca_pem.clone(),
    })
}

impl TlsTrust {
    /// Whether a CA or a client certificate is set.
    pub(crate) fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

/// Checks `trust` the way rustls will use it, so bad input fails here as an
/// invalid argument rather than on every connection attempt.
fn check(trust: &TlsTrust) -> Result<()> {
    let mut roots = RootCertStore::empty();
    if let Some(pem) = &trust.root_ca_pem {
        for cert in certificates(pem, "TLS root CA")? {
            roots.add(cert).map_err(|err| {
                Error::InvalidArgument(format!("TLS root CA is not a usable certificate ({err})"))
            })?;
        }
    }
    let Some(client_cert) = &trust.client_cert else {
        return Ok(());
    };
    let chain = certificates(&client_cert.chain_pem, "TLS client certificate")?;
    // The key's own parse error never echoes the key.
    let key = PrivateKeyDer::from_pem_slice(&client_cert.key_pem).map_err(|err| {
        Error::InvalidArgument(format!("TLS client key is not a PEM private key ({err})"))
    })?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
        })
        .map(drop)
        .map_err(|err| {
            Error::InvalidArgument(format!(
                "TLS client certificate and key do not go together ({err})"
            ))
        })
}

/// The certificates of a PEM bundle: at least one, all parsed.
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| Error::InvalidArgument(format!("{what} is not valid PEM ({err})")))?;
    if certs.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{what} PEM holds no CERTIFICATE block"
        )));
    }
    Ok(certs)
}
