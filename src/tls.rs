//! TLS 1.3 around the channel protocol (issue 16, `docs/security.md`):
//! rustls on ring, mutual TLS (every channel shows a certificate from the
//! configured client CA, checked against its CRLs), and each channel's
//! certificate bound to the channel it says HELLO as: it must carry the
//! DNS name `channel-<id>.harbour`. HELLO's HMAC still applies inside.
//! The same for a cluster's peer links (`PeerTls`): mutual TLS with the
//! cluster's CA, each node's certificate naming `node-<id>.harbour`, the
//! node it says it is. Also the development certificates of `harbour
//! certs dev`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::config::{PeerTlsConfig, TlsConfig};
use crate::metrics::METRICS;

/// The DNS name a channel's certificate carries.
#[must_use]
pub fn channel_name(id: u32) -> String {
    format!("channel-{id}.harbour")
}

/// The DNS name a cluster node's certificate carries.
#[must_use]
pub fn node_name(id: u64) -> String {
    format!("node-{id}.harbour")
}

/// Whether `certificate` was issued to channel `id` (names
/// `channel-<id>.harbour` among its DNS names).
#[must_use]
pub fn names_channel(certificate: &CertificateDer<'_>, id: u32) -> bool {
    names(certificate, &channel_name(id))
}

/// Whether `certificate` names `name` among its DNS names.
fn names(certificate: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(certificate) else { return false };
    let Ok(name) = ServerName::try_from(name.to_string()) else { return false };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// A PEM file's certificates (at least one), its private key, or a CA's
/// roots with their revocation lists as a client verifier.
fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(path).and_then(Iterator::collect).map_err(|e| read_err(what, path, e))?;
    if certs.is_empty() {
        return Err(read_err(what, path, "no certificate in it"));
    }
    Ok(certs)
}

fn private_key(what: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| read_err(what, path, e))
}

/// Revocation lists, each a PEM file.
fn crls(what: &str, paths: &[std::path::PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    paths
        .iter()
        .map(|path| CertificateRevocationListDer::from_pem_file(path).map_err(|e| read_err(what, path, e)))
        .collect()
}

fn roots(what: &str, path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(what, path)? {
        roots.add(ca).map_err(|e| read_err(what, path, e))?;
    }
    Ok(roots)
}

/// A server side that requires a client certificate from `ca` (checked
/// against `crls`), TLS 1.3 only.
fn server_config(
    section: &str,
    (cert, key): (&Path, &Path),
    (ca, crls): (&Path, &[std::path::PathBuf]),
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&format!("{section}cert"), cert)?;
    let key = private_key(&format!("{section}key"), key)?;
    let ca_what = if section == "tls." { "tls.client_ca".to_string() } else { format!("{section}ca") };
    let roots = roots(&ca_what, ca)?;
    let revoked = self::crls(&format!("{section}crls"), crls)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .with_crls(revoked)
        .build()
        .map_err(|e| format!("{ca_what}: {e}"))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("{section}cert and {section}key: {e}"))
}

/// The listener's TLS side.
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
    /// The revocation lists it was made with, to check connections made
    /// before a reload brought them.
    crls: Arc<Vec<webpki::OwnedCertRevocationList>>,
}

fn read_err(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", path.display())
}

impl Acceptor {
    /// From `[tls]`: the switch's certificate chain and key, the CA that
    /// signs channels' certificates, and its revocation lists.
    pub fn new(c: &TlsConfig) -> Result<Acceptor, String> {
        let config = server_config("tls.", (&c.cert, &c.key), (&c.client_ca, &c.crls))?;
        let crls = crls("tls.crls", &c.crls)?
            .iter()
            .map(|der| webpki::OwnedCertRevocationList::from_der(der).map_err(|e| format!("tls.crls: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Acceptor { inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)), crls: Arc::new(crls) })
    }

    /// Whether one of its revocation lists revokes `certificate` (a
    /// channel's, accepted before those lists were read).
    #[must_use]
    pub fn revokes(&self, certificate: &CertificateDer<'_>) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(certificate) else { return true };
        self.crls.iter().any(|crl| {
            let crl = webpki::CertRevocationList::from(crl.clone());
            crl.issuer() == cert.issuer() && crl.find_serial(cert.serial()).is_ok_and(|found| found.is_some())
        })
    }

    /// The handshake, within `deadline`: the stream and the channel's
    /// certificate, or `None` (refused: logged with the reason, counted).
    pub async fn accept(
        &self,
        stream: TcpStream,
        deadline: Duration,
        peer: SocketAddr,
    ) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Option<CertificateDer<'static>>)> {
        let refused = |why: String| {
            // Counted always; logged at most once a second (anyone can
            // make handshakes fail).
            let n = METRICS.tls_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if log_now() {
                tracing::warn!(%peer, reason = %why, refused_so_far = n + 1, "TLS handshake refused");
            }
            None
        };
        match tokio::time::timeout(deadline, self.inner.accept(stream)).await {
            Ok(Ok(tls)) => {
                let certificate = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
                Some((tls, certificate))
            }
            Ok(Err(e)) => refused(e.to_string()),
            Err(_) => refused("no handshake within the deadline".into()),
        }
    }
}

/// Both sides of a cluster node's peer links under `[cluster.tls]`: one
/// certificate (naming `node-<id>.harbour`, for server and client auth)
/// and the cluster's CA, which must have signed every node's.
#[derive(Clone)]
pub struct PeerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
}

impl PeerTls {
    /// From `[cluster.tls]`.
    pub fn new(c: &PeerTlsConfig) -> Result<PeerTls, String> {
        let server = server_config("cluster.tls.", (&c.cert, &c.key), (&c.ca, &c.crls))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The dialler checks the CRLs too: a revoked node's key answers as
        // no one.
        let revoked = crls("cluster.tls.crls", &c.crls)?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots("cluster.tls.ca", &c.ca)?),
            Arc::clone(&provider),
        )
        .with_crls(revoked)
        .build()
        .map_err(|e| format!("cluster.tls.ca: {e}"))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(certificates("cluster.tls.cert", &c.cert)?, private_key("cluster.tls.key", &c.key)?)
            .map_err(|e| format!("cluster.tls.cert and cluster.tls.key: {e}"))?;
        Ok(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }

    /// The server side of a peer connection: the handshake and the node
    /// id the dialler says it is (a u64 first thing inside), which its
    /// certificate must name, all within `deadline`. `Err`: refused, with
    /// the reason (counted in the TLS refusals).
    pub async fn accept(
        &self,
        stream: TcpStream,
        deadline: Duration,
    ) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, u64), String> {
        use tokio::io::AsyncReadExt;
        let handshake = async {
            let mut tls = self.acceptor.accept(stream).await.map_err(|e| e.to_string())?;
            let id = tls.read_u64_le().await.map_err(|e| format!("no node id: {e}"))?;
            let certificate = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
            if !certificate.is_some_and(|c| names(&c, &node_name(id))) {
                return Err(format!("the certificate does not name {}", node_name(id)));
            }
            Ok((tls, id))
        };
        let accepted = tokio::time::timeout(deadline, handshake)
            .await
            .unwrap_or_else(|_| Err("no handshake within the deadline".into()));
        if accepted.is_err() {
            METRICS.tls_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        accepted
    }

    /// The client side: the handshake with node `target` (its certificate
    /// must name `node-<target>.harbour`), then this node's id `me`.
    pub async fn connect(
        &self,
        stream: TcpStream,
        target: u64,
        me: u64,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        use tokio::io::AsyncWriteExt;
        let name = ServerName::try_from(node_name(target)).map_err(std::io::Error::other)?;
        let mut tls = self.connector.connect(name, stream).await?;
        tls.write_all(&me.to_le_bytes()).await?;
        Ok(tls)
    }
}

/// Whether a refusal may be logged now: at most one a second.
pub(crate) fn log_now() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_S: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    LAST_S.swap(now, Ordering::Relaxed) != now
}

/// What `harbour certs dev` writes: a development CA, the switch's
/// certificate for `names` (DNS names or IP addresses), one certificate
/// per channel and one per cluster node, each with its key, as PEM files
/// in `out`.
pub fn dev_certs(
    out: &Path,
    names: &[String],
    channels: &[u32],
    nodes: &[u64],
) -> Result<Vec<std::path::PathBuf>, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let e = |e: rcgen::Error| e.to_string();
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut written = Vec::new();
    let mut write = |name: &str, text: String| -> Result<(), String> {
        let path = out.join(name);
        if path.exists() {
            return Err(format!("{} exists: development certificates never overwrite", path.display()));
        }
        // Keys (the CA's too) are the user's alone.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
        Ok(())
    };
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Harbour development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    write("ca.pem", ca_cert.pem())?;
    write("ca.key", ca_key.serialize_pem())?;
    let server_key = KeyPair::generate().map_err(e)?;
    let mut server = CertificateParams::new(names.to_vec()).map_err(e)?;
    server.distinguished_name.push(DnType::CommonName, "Harbour switch");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    write("server.pem", server.signed_by(&server_key, &ca_cert, &ca_key).map_err(e)?.pem())?;
    write("server.key", server_key.serialize_pem())?;
    for &id in channels {
        let key = KeyPair::generate().map_err(e)?;
        let mut params = CertificateParams::new(vec![channel_name(id)]).map_err(e)?;
        params.distinguished_name.push(DnType::CommonName, channel_name(id));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        write(&format!("channel-{id}.pem"), params.signed_by(&key, &ca_cert, &ca_key).map_err(e)?.pem())?;
        write(&format!("channel-{id}.key"), key.serialize_pem())?;
    }
    for &id in nodes {
        let key = KeyPair::generate().map_err(e)?;
        let mut params = CertificateParams::new(vec![node_name(id)]).map_err(e)?;
        params.distinguished_name.push(DnType::CommonName, node_name(id));
        // A node both serves its peers and dials them.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        write(&format!("node-{id}.pem"), params.signed_by(&key, &ca_cert, &ca_key).map_err(e)?.pem())?;
        write(&format!("node-{id}.key"), key.serialize_pem())?;
    }
    Ok(written)
}
