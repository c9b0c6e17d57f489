//! What Patchbay's listeners share: accepting under connection caps (`accept.rs`,
//! the HTTP and SIP listeners alike), and TLS (rustls): a listener's certificate, read
//! from PEM files and read again on SIGHUP (the HTTP listener's and the SIP TLS
//! listener's), and the roots trusted for SIP trunks and proxies.

mod accept;
pub use accept::{AcceptMetrics, Acceptor, Admission, ConnectionCaps, Slot};

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// The listener's certificate chain and key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// A server configuration from the files, or why not.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// A TLS listener's configuration now; [`TlsServer::reload`] swaps it for new
/// connections, and a failed reload keeps the one in use.
#[derive(Clone)]
pub struct TlsServer {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl TlsServer {
    pub fn new(files: TlsFiles) -> Result<TlsServer, String> {
        let config = server_config(&files)?;
        Ok(TlsServer {
            files,
            current: Arc::new(RwLock::new(config)),
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Read the files again; on success new connections use them.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }
}

/// The client configuration for TLS trunks and proxies: the CAs of `ca` (PEM), or
/// the Web PKI roots.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub use tokio_rustls::rustls::ClientConfig as TlsClientConfig;
pub use tokio_rustls::{server::TlsStream, TlsAcceptor};
