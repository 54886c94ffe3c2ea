//! TLS 1.3 with mutual authentication (issue 16, `docs/security.md`): a
//! channel with its own certificate and key is served; every other way in
//! is refused, with the reason in the switch's log and a metric.

mod common;

use std::sync::Arc;

use harbour::client::{Client, Tls};
use harbour::config::{Channel, TlsConfig};
use harbour::protocol::frame::{ErrorCode, role};
use harbour::server;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber, date_time_ymd,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const KEY_1: &[u8] = b"channel-one-key-0123456789abcdef0123";
const KEY_2: &[u8] = b"channel-two-key-0123456789abcdef0123";

/// A certificate authority kept in memory, to sign what a test needs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    /// A leaf for `names`, valid now unless `expired`, with `serial`.
    fn issue(&self, names: &[&str], client: bool, serial: u64, expired: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        (params.signed_by(&key, &self.cert, &self.key).unwrap().pem(), key.serialize_pem())
    }

    fn revoking(&self, serial: u64) -> String {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2025, 1, 1),
            next_update: date_time_ymd(2035, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(serial),
                revocation_time: date_time_ymd(2025, 6, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.cert, &self.key).unwrap().pem().unwrap()
    }
}

/// A client's TLS settings: the switch's CA and, maybe, a certificate.
fn client_tls(ca: &Ca, identity: Option<&(String, String)>) -> Tls {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert.pem().as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Tls { config: Arc::new(config), server_name: ServerName::try_from("localhost").unwrap() }
}

/// A switch's configuration serving mutual TLS with `ca`'s certificates
/// (its own for `localhost`), revoking by `crls`, with channel 1.
fn tls_switch(dir: &std::path::Path, ca: &Ca, crls: &[String]) -> harbour::config::Config {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (server_cert, server_key) = ca.issue(&["localhost"], false, 1, false);
    let mut cfg = common::server_config(&dir.join("data"));
    cfg.tls = Some(TlsConfig {
        cert: write("server.pem", &server_cert),
        key: write("server.key", &server_key),
        client_ca: write("ca.pem", &ca.cert.pem()),
        crls: crls.iter().enumerate().map(|(i, c)| write(&format!("revoked-{i}.crl"), c)).collect(),
    });
    cfg.channels = vec![channel(1, KEY_1)];
    cfg
}

fn channel(id: u32, key: &[u8]) -> Channel {
    common::channel(id, key, role::ACCOUNTS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_a_channel_and_refuses_every_other_way_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("bank CA");
    let other_ca = Ca::new("someone else's CA");
    let mut cfg = tls_switch(dir.path(), &ca, &[ca.revoking(99)]);
    cfg.metrics = Some("127.0.0.1:0".parse().unwrap());
    cfg.channels.push(channel(2, KEY_2));
    let running = server::start(&cfg).await.unwrap();
    let addr = running.addr;

    // The channel, its certificate and its key: served.
    let one = ca.issue(&["channel-1.harbour"], true, 10, false);
    let c = Client::connect_tls(addr, &client_tls(&ca, Some(&one)), 1, KEY_1).await.expect("served over TLS");
    c.create_accounts(&[common::account(1024)]).await.unwrap();

    // Every other way in is refused.
    let refused = |what: &str, r: Result<Client, harbour::client::ClientError>| match r {
        Ok(_) => panic!("{what}: served"),
        Err(e) => e,
    };
    refused("no client certificate", Client::connect_tls(addr, &client_tls(&ca, None), 1, KEY_1).await);
    let stranger = other_ca.issue(&["channel-1.harbour"], true, 11, false);
    refused("another CA's certificate", Client::connect_tls(addr, &client_tls(&ca, Some(&stranger)), 1, KEY_1).await);
    let expired = ca.issue(&["channel-1.harbour"], true, 12, true);
    refused("an expired certificate", Client::connect_tls(addr, &client_tls(&ca, Some(&expired)), 1, KEY_1).await);
    let revoked = ca.issue(&["channel-1.harbour"], true, 99, false);
    refused("a revoked certificate", Client::connect_tls(addr, &client_tls(&ca, Some(&revoked)), 1, KEY_1).await);
    let e = refused(
        "channel 1's certificate with channel 2's HELLO",
        Client::connect_tls(addr, &client_tls(&ca, Some(&one)), 2, KEY_2).await,
    );
    assert_eq!(e.error_code(), Some(ErrorCode::AuthFailed), "{e}");
    assert!(e.to_string().contains("not issued to this channel"), "{e}");
    let e = refused("the right certificate, a wrong key", {
        Client::connect_tls(addr, &client_tls(&ca, Some(&one)), 1, KEY_2).await
    });
    assert_eq!(e.error_code(), Some(ErrorCode::AuthFailed), "{e}");
    refused("plain TCP", Client::connect(addr, 1, KEY_1).await);

    // The channel is still served, and the refusals were counted.
    c.ping().await.unwrap();
    let text = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut http = tokio::net::TcpStream::connect(running.metrics_addr.unwrap()).await.unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut text = String::new();
        http.read_to_string(&mut text).await.unwrap();
        text
    };
    let refusals: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("harbour_tls_refused_total ").and_then(|v| v.trim().parse().ok()))
        .expect("the metric");
    assert!(refusals >= 5.0, "no cert, other CA, expired, revoked, another channel's: {refusals}");
    running.stop().await.unwrap();
}

/// `harbour certs dev` writes a CA, the switch's and each channel's
/// certificate and key, which a switch and a channel use as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_certificates_work_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    harbour::tls::dev_certs(&certs, &names, &[1], &[]).unwrap();
    assert!(harbour::tls::dev_certs(&certs, &names, &[1], &[]).is_err(), "never overwrites");
    let mut cfg = common::server_config(&dir.path().join("data"));
    cfg.tls = Some(TlsConfig {
        cert: certs.join("server.pem"),
        key: certs.join("server.key"),
        client_ca: certs.join("ca.pem"),
        crls: Vec::new(),
    });
    let running = server::start(&cfg).await.unwrap();
    let tls = Tls::from_pem_files(
        &certs.join("ca.pem"),
        &certs.join("channel-1.pem"),
        &certs.join("channel-1.key"),
        "127.0.0.1",
    )
    .unwrap();
    let c = Client::connect_tls(running.addr, &tls, 1, b"hksw-dev-key").await.expect("served");
    c.ping().await.unwrap();
    running.stop().await.unwrap();
}

/// Connections that open TCP and never start the TLS handshake are held to
/// the unauthenticated places like any other: the oldest are closed
/// mid-handshake, and a channel still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_handshakes_are_evicted_like_silent_hellos() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("bank CA");
    let mut cfg = tls_switch(dir.path(), &ca, &[]);
    cfg.unauthenticated_max = 8;
    cfg.unauthenticated_per_address = 1_000;
    let running = server::start(&cfg).await.unwrap();
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(tokio::net::TcpStream::connect(running.addr).await.unwrap());
    }
    // The oldest were closed by the server, mid-handshake.
    let mut first = silent.remove(0);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), {
        use tokio::io::AsyncReadExt;
        first.read(&mut byte)
    })
    .await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "evicted before its handshake: {read:?}");
    let one = ca.issue(&["channel-1.harbour"], true, 10, false);
    let c = Client::connect_tls(running.addr, &client_tls(&ca, Some(&one)), 1, KEY_1).await.expect("served");
    c.ping().await.unwrap();
    drop(silent);
    running.stop().await.unwrap();
}

/// A cluster whose peer links are mutual TLS (`[cluster.tls]`, with
/// `harbour certs dev --node`): three nodes elect a leader and commit over
/// them. Strangers at a peer port are refused without an answer: plain
/// TCP, a channel's certificate from the same CA, and a node's own
/// certificate claiming to be another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_links_are_mutual_tls_and_refuse_strangers() {
    use harbour::client::Failover;
    use harbour::config::PeerTlsConfig;
    use harbour::protocol::kind;
    use harbour::protocol::records::{self, Account};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    harbour::tls::dev_certs(&certs, &["127.0.0.1".to_string()], &[1], &[1, 2, 3]).unwrap();
    // Below the ephemeral range, as for any node's ports (failover::free_port).
    let free = || harbour_loadtest::failover::free_port().expect("a free port");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free(), free())).collect();
    let nodes: String = (1..=3)
        .map(|i| {
            let (channel, peer) = ports[i - 1];
            format!("[[cluster.nodes]]\nid = {i}\nchannel = \"127.0.0.1:{channel}\"\npeer = \"127.0.0.1:{peer}\"\n")
        })
        .collect();
    let mut running = Vec::new();
    for i in 1..=3u64 {
        let mut config = harbour::config::Config::default();
        let text = format!(
            "accounts_capacity = 4096\ntransfers_capacity = 65536\n\
             [[channels]]\nid = 1\nkey = \"{}\"\nroles = [\"ACCOUNTS\"]\n[cluster]\nnode_id = {i}\n{nodes}",
            std::str::from_utf8(KEY_1).unwrap()
        );
        config.merge_toml(&text).unwrap();
        let cluster = config.cluster.as_mut().unwrap();
        cluster.tls = Some(PeerTlsConfig {
            cert: certs.join(format!("node-{i}.pem")),
            key: certs.join(format!("node-{i}.key")),
            ca: certs.join("ca.pem"),
            crls: Vec::new(),
        });
        config.data = dir.path().join(format!("node-{i}"));
        config.listen = format!("127.0.0.1:{}", ports[i as usize - 1].0).parse().unwrap();
        config.metrics = None;
        running.push(harbour::server::start(&config).await.unwrap());
    }
    let addrs: Vec<std::net::SocketAddr> = running.iter().map(|r| r.addr).collect();
    let mut failover = Failover::new(addrs, 1, KEY_1);
    let mut client = failover.connect().await.unwrap();
    let body = records::encode_all(&[Account { account_id: 5000, kind: 1, home_country: 344, ..Account::default() }]);
    let created = failover.request(&mut client, kind::CREATE_ACCOUNTS, 1, &body).await.unwrap();
    // ALREADY_EXISTS when a leader change made the client resend it (§7).
    let code = records::decode_all::<records::RecordResult>(&created.body).next().unwrap().code;
    assert!(code == 0 || code == harbour::protocol::ResultCode::AlreadyExists.as_u16(), "committed: {code}");

    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], ports[0].1));
    let refused_before = harbour::metrics::METRICS.tls_refused.load(std::sync::atomic::Ordering::Relaxed);
    // A frame a peer would send (a vote, kind 2), and whether any answer
    // comes back before the connection closes.
    async fn answered(mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) -> bool {
        let mut frame = 3u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&[2, b'{', b'}']);
        if stream.write_all(&frame).await.is_err() {
            return false;
        }
        // Whatever comes before the close (a TLS alert, for plain TCP)
        // must not be a peer's answer frame: u32 length, kind OK or FAILED.
        let frame = |bytes: &[u8]| {
            let len = bytes.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
            len >= 1 && bytes.len() >= 4 + len && bytes[4] <= 1
        };
        let mut bytes = Vec::new();
        let read = async {
            let mut chunk = [0u8; 512];
            while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                bytes.extend_from_slice(&chunk[..n]);
                if frame(&bytes) {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), read).await.unwrap_or(false)
    }
    let plain = tokio::net::TcpStream::connect(peer).await.unwrap();
    assert!(!answered(plain).await, "plain TCP is not a peer");
    // A node's own certificate saying its own id is answered (the check
    // above would see it); the others are not.
    for (cert, claims, served) in [("node-2", 2u64, true), ("channel-1", 2, false), ("node-2", 3, false)] {
        let stranger = harbour::tls::PeerTls::new(&PeerTlsConfig {
            cert: certs.join(format!("{cert}.pem")),
            key: certs.join(format!("{cert}.key")),
            ca: certs.join("ca.pem"),
            crls: Vec::new(),
        })
        .unwrap();
        let tcp = tokio::net::TcpStream::connect(peer).await.unwrap();
        let answer = match stranger.connect(tcp, 1, claims).await {
            Ok(tls) => answered(tls).await,
            Err(_) => false,
        };
        assert_eq!(answer, served, "{cert} claiming node {claims}");
    }
    let refused = harbour::metrics::METRICS.tls_refused.load(std::sync::atomic::Ordering::Relaxed) - refused_before;
    assert!(refused >= 3, "every refusal counted: {refused}");
    for r in running {
        r.stop().await.unwrap();
    }
}

/// A reload reads `[tls]`'s files again: a certificate revoked since the
/// switch started is refused, and the connection it made before is
/// closed; another channel's connection stays. Adding or removing `[tls]`
/// needs a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_the_revocation_lists_again() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("bank CA");
    let mut cfg = tls_switch(dir.path(), &ca, &[ca.revoking(99)]);
    cfg.channels.push(channel(2, KEY_2));
    let mut running = server::start(&cfg).await.unwrap();
    let one = ca.issue(&["channel-1.harbour"], true, 20, false);
    let two = ca.issue(&["channel-2.harbour"], true, 21, false);
    let c1 = Client::connect_tls(running.addr, &client_tls(&ca, Some(&one)), 1, KEY_1).await.unwrap();
    let c2 = Client::connect_tls(running.addr, &client_tls(&ca, Some(&two)), 2, KEY_2).await.unwrap();
    c1.ping().await.unwrap();

    // Channel 1's certificate is revoked: the same CRL file, new contents.
    let crl = &cfg.tls.as_ref().unwrap().crls[0];
    std::fs::write(crl, ca.revoking(20)).unwrap();
    running.reload_channels(&cfg).expect("reloads");
    let mut closed = false;
    for _ in 0..50 {
        if c1.ping().await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(closed, "the revoked certificate's connection is closed");
    assert!(
        Client::connect_tls(running.addr, &client_tls(&ca, Some(&one)), 1, KEY_1).await.is_err(),
        "and it connects no more"
    );
    c2.ping().await.expect("another channel's connection stays");

    let mut plain = cfg.clone();
    plain.tls = None;
    let e = running.reload_channels(&plain).unwrap_err();
    assert!(e.0.contains("[tls]"), "{e}");
    running.stop().await.unwrap();
}
