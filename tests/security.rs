//! Channel security (issue 16, `docs/security.md`), as an attacker on the
//! network meets it: connection admission no one can exhaust, each
//! channel's own connection quota, the metrics endpoint serving only
//! `/metrics` and surviving silent connections, the data directory private
//! to the switch's user, and short keys refused beyond loopback.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use harbour::client::{Client, ClientError};
use harbour::config::{Channel, Config};
use harbour::protocol::frame::{ErrorCode, role};
use harbour::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const KEY: &[u8] = b"hksw-dev-key";
const QUOTA_KEY: &[u8] = b"a-channel-with-a-quota-of-two-conns";

fn config(dir: &std::path::Path) -> Config {
    let mut c = common::server_config(dir);
    c.channels.push(Channel { connections_max: Some(2), ..common::channel(2, QUOTA_KEY, role::ACCOUNTS) });
    c.unauthenticated_max = 64;
    c.unauthenticated_per_address = 8;
    c.metrics = Some("127.0.0.1:0".parse().unwrap());
    c
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// The ERROR frame's code a refused connection is sent, if any.
async fn refusal(stream: &mut TcpStream) -> Option<u16> {
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut bytes)).await;
    // CHALLENGE first for an admitted connection; an ERROR frame for a
    // refused one (kind 0xFFFF at offset 6, its code first in the body).
    let kind = u16::from_le_bytes(bytes.get(6..8)?.try_into().ok()?);
    if kind != harbour::protocol::frame::ERROR_KIND {
        return None;
    }
    let at = harbour::protocol::frame::HEADER_SIZE;
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

const IDLE_KEY: &[u8] = b"a-channel-that-holds-idle-connections";

/// Thousands of connections held open: 3,000 that never say HELLO, from
/// 150 addresses, and a channel's 1,000 authenticated idle ones (before
/// admission, 1,024 idle connections locked every channel out for the
/// idle timeout). A real channel still connects, and is answered, within
/// a second each time; the silent ones only evict each other, one address
/// alone is held to its own few places, and the idle channel to its quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_silent_and_idle_connections_cannot_keep_a_channel_out() {
    const SILENT: u32 = 3_000;
    const IDLE: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.connections_max = IDLE + 24;
    cfg.channels.push(Channel { connections_max: Some(IDLE), ..common::channel(5, IDLE_KEY, 0) });
    let running = server::start(&cfg).await.unwrap();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(Client::connect(running.addr, 5, IDLE_KEY).await.expect("within the idle channel's quota"));
    }
    match Client::connect(running.addr, 5, IDLE_KEY).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::Busy as u16),
        other => panic!("past its quota: {:?}", other.map(|_| ())),
    }
    let mut silent = Vec::with_capacity(SILENT as usize);
    for i in 0..SILENT {
        let from = IpAddr::from([127, 0, 1 + (i / 250) as u8, 1 + (i % 150) as u8]);
        if let Ok(s) = connect_from(from, running.addr).await {
            silent.push(s);
        }
    }
    assert!(silent.len() as u32 >= SILENT * 9 / 10, "the flood connected: {}", silent.len());
    for attempt in 0..3 {
        let started = Instant::now();
        let c = Client::connect(running.addr, 1, KEY).await.expect("a real channel is admitted");
        c.ping().await.expect("and answered");
        let took = started.elapsed();
        eprintln!(
            "attempt {attempt}: a real channel connected past {} silent and {IDLE} idle connections in {took:?}",
            silent.len()
        );
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    // One address: its 9th connection awaiting HELLO is refused BUSY.
    let from = IpAddr::from([127, 0, 99, 9]);
    let mut mine = Vec::new();
    for _ in 0..8 {
        mine.push(connect_from(from, running.addr).await.unwrap());
    }
    let mut ninth = connect_from(from, running.addr).await.unwrap();
    assert_eq!(refusal(&mut ninth).await, Some(ErrorCode::Busy as u16));

    let text = scrape(running.metrics_addr.unwrap(), "/metrics").await;
    let evicted = metric(&text, "harbour_connections_evicted_total");
    assert!(evicted >= f64::from(SILENT) / 2.0, "the silent ones evicted each other: {evicted}");
    drop((silent, idle));
    running.stop().await.unwrap();
}

/// A channel with a quota of two connections: its third is refused BUSY
/// after HELLO, and another channel still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_is_held_to_its_own_quota() {
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(&config(dir.path())).await.unwrap();
    let first = Client::connect(running.addr, 2, QUOTA_KEY).await.unwrap();
    let second = Client::connect(running.addr, 2, QUOTA_KEY).await.unwrap();
    match Client::connect(running.addr, 2, QUOTA_KEY).await {
        Err(ClientError::Refused { code, detail }) => {
            assert_eq!(code, ErrorCode::Busy as u16);
            assert!(detail.contains("channel's connection limit"), "{detail}");
        }
        other => panic!("a third connection of the channel: {:?}", other.map(|_| ())),
    }
    let other = Client::connect(running.addr, 1, KEY).await.expect("another channel is not affected");
    other.ping().await.unwrap();
    drop(first);
    // A seat given back is taken again.
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = Client::connect(running.addr, 2, QUOTA_KEY).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    again.expect("the freed seat").ping().await.unwrap();
    drop(second);
    running.stop().await.unwrap();
}

async fn scrape(addr: SocketAddr, path: &str) -> String {
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).await.unwrap();
    text
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not served"))
}

/// The metrics endpoint serves `/metrics` only, and silent connections
/// holding every place do not keep a scraper out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_metrics_only_and_outlasts_silence() {
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(&config(dir.path())).await.unwrap();
    let at = running.metrics_addr.unwrap();
    let escape = scrape(at, "/../../etc/passwd").await;
    assert!(escape.starts_with("HTTP/1.1 404"), "{escape}");
    assert!(!escape.contains("harbour_"), "nothing but a 404");
    let mut silent = Vec::new();
    for i in 0..40u8 {
        silent.push(connect_from(IpAddr::from([127, 0, 2, 1 + i / 4]), at).await.unwrap());
    }
    let text = scrape(at, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200") && text.contains("harbour_connections_open"), "{text}");
    drop(silent);
    running.stop().await.unwrap();
}

/// The books' files are readable by the switch's user only.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cfg = config(dir.path());
    cfg.data = data.clone();
    let running = server::start(&cfg).await.unwrap();
    let c = Client::connect(running.addr, 1, KEY).await.unwrap();
    c.create_accounts(&[common::account(1024)]).await.unwrap();
    running.stop().await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let mut files = 0;
    let mut dirs = vec![data];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path) & 0o077, 0, "{} is private", path.display());
                dirs.push(path);
            } else {
                assert_eq!(mode(&path) & 0o077, 0, "{} is private", path.display());
                files += 1;
            }
        }
    }
    assert!(files >= 2, "the log and META were checked");
}

/// Beyond loopback every channel key is at least 32 bytes.
#[test]
fn short_keys_stay_on_loopback() {
    let mut c = Config { channels: vec![common::channel(1, b"eight-by", role::ALL)], ..Config::default() };
    c.validate().expect("an 8-byte key on loopback is a development setup");
    c.listen = "0.0.0.0:7400".parse().unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("at least 32 bytes"), "{e}");
    c.channels[0].key = QUOTA_KEY.to_vec();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("refusing plain TCP"), "beyond loopback: TLS, or plain TCP said in so many words: {e}");
    c.plain_tcp_beyond_loopback = true;
    c.validate().expect("a 35-byte key anywhere");
}

/// One channel floods past its own `records_per_second`: BUSY goes to its
/// frames only, never to another channel's, whose latency is reported with
/// and without the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_channel_is_busy_alone() {
    use harbour::protocol::records::BalanceKey;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.channels.push(Channel {
        max_in_flight: Some(16),
        records_per_second: Some(20_000),
        ..common::channel(3, FLOOD_KEY, role::ACCOUNTS)
    });
    let running = server::start(&cfg).await.unwrap();
    let victim = Client::connect(running.addr, 1, KEY).await.unwrap();
    victim.create_accounts(&[common::account(1024)]).await.unwrap();

    // The other channel's latency, one lookup at a time.
    async fn p99(c: &Client) -> (Duration, usize) {
        let key = [BalanceKey { account_id: 1024, currency: common::HKD }];
        let mut took = Vec::new();
        let mut busy = 0;
        for _ in 0..300 {
            let started = Instant::now();
            match c.lookup_balances(&key).await {
                Ok(_) => took.push(started.elapsed()),
                Err(e) if e.error_code() == Some(ErrorCode::Busy) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        took.sort();
        (took[took.len() * 99 / 100 - 1], busy)
    }
    let (quiet, busy_quiet) = p99(&victim).await;

    let flooder = std::sync::Arc::new(Client::connect(running.addr, 3, FLOOD_KEY).await.unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut floods = Vec::new();
    for _ in 0..4 {
        let (flooder, stop) = (std::sync::Arc::clone(&flooder), std::sync::Arc::clone(&stop));
        floods.push(tokio::spawn(async move {
            let keys: Vec<BalanceKey> =
                (0..1000).map(|i| BalanceKey { account_id: 1024 + i, currency: common::HKD }).collect();
            let (mut ok, mut busy) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match flooder.lookup_balances(&keys).await {
                    Ok(_) => ok += 1,
                    Err(e) if e.error_code() == Some(ErrorCode::Busy) => busy += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            (ok, busy)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (flooded, busy_flooded) = p99(&victim).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut busy) = (0, 0);
    for f in floods {
        let (o, b) = f.await.unwrap();
        ok += o;
        busy += b;
    }
    eprintln!(
        "the other channel's p99: {quiet:?} alone, {flooded:?} during the flood \
         (the flooder: {ok} requests of 1,000 records answered, {busy} BUSY)"
    );
    assert_eq!((busy_quiet, busy_flooded), (0, 0), "BUSY never reaches the channel that keeps its limits");
    assert!(busy > 0 && ok > 0, "the flooder is held to its rate: {ok} answered, {busy} BUSY");
    let text = scrape(running.metrics_addr.unwrap(), "/metrics").await;
    assert!(metric(&text, "harbour_channel_limited_total") >= busy as f64);
    running.stop().await.unwrap();
}

const FLOOD_KEY: &[u8] = b"a-channel-that-floods-the-switch-0123";

const OLD_KEY: &[u8] = b"the-key-being-retired-0123456789abc";
const NEW_KEY: &[u8] = b"the-key-taking-over-0123456789abcdef";

fn rotating(dir: &std::path::Path, key: &[u8], previous: Option<&[u8]>, roles: u16) -> Config {
    let mut c = config(dir);
    c.channels.push(Channel { previous_key: previous.map(<[u8]>::to_vec), ..common::channel(5, key, roles) });
    c
}

/// A key rotation by reload: during the window the old and the new key
/// both say HELLO; after it only the new one does, and a session opened
/// with the old key is ended. A channel removed by a reload loses its
/// sessions; sessions of the others are kept, with their new roles. A
/// reload that touches another setting changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_channels_go_by_reload() {
    use harbour::protocol::records::BalanceKey;
    let dir = tempfile::tempdir().unwrap();
    let key = [BalanceKey { account_id: 1024, currency: common::HKD }];
    let mut running = server::start(&rotating(dir.path(), OLD_KEY, None, role::ACCOUNTS)).await.unwrap();
    let old = Client::connect(running.addr, 5, OLD_KEY).await.unwrap();
    let bystander = Client::connect(running.addr, 1, KEY).await.unwrap();
    assert!(Client::connect(running.addr, 5, NEW_KEY).await.is_err(), "not yet");

    // The window: both keys, and PAYMENTS added.
    let window = rotating(dir.path(), NEW_KEY, Some(OLD_KEY), role::ACCOUNTS | role::PAYMENTS);
    running.reload_channels(&window).unwrap();
    old.lookup_balances(&key).await.expect("the old session goes on");
    let new = Client::connect(running.addr, 5, NEW_KEY).await.expect("the new key");
    let again = Client::connect(running.addr, 5, OLD_KEY).await.expect("the old key, still");
    drop(again);
    let payments = new.submit_transfers(&[common::deposit(1, 1024, 5, common::HKD)]).await;
    assert!(payments.is_ok(), "the new role is taken: {:?}", payments.err());

    // Another setting changed: refused, nothing changed.
    let mut other = window.clone();
    other.idle_timeout_ms += 1;
    let e = running.reload_channels(&other).unwrap_err().to_string();
    assert!(e.contains("needs a restart"), "{e}");

    // The window closes: the old key is gone, and its session with it.
    running.reload_channels(&rotating(dir.path(), NEW_KEY, None, role::ACCOUNTS | role::PAYMENTS)).unwrap();
    let mut ended = false;
    for _ in 0..50 {
        if old.lookup_balances(&key).await.is_err() {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ended, "the session opened with the retired key is closed");
    match Client::connect(running.addr, 5, OLD_KEY).await {
        Err(e) => assert_eq!(e.error_code(), Some(ErrorCode::AuthFailed), "{e}"),
        Ok(_) => panic!("the retired key still says HELLO"),
    }
    new.lookup_balances(&key).await.expect("the new key's session goes on");

    // The channel removed: its session ends; the bystander's does not.
    running.reload_channels(&config(dir.path())).unwrap();
    let mut gone = false;
    for _ in 0..50 {
        if new.lookup_balances(&key).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "a removed channel's session is closed");
    bystander.ping().await.expect("another channel's session is kept");
    running.stop().await.unwrap();
}

/// With `metrics_auth`, the endpoint answers only a scraper that gives it
/// (HTTP basic auth); beyond loopback it is required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_asks_for_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.metrics_auth = Some("prometheus:a-long-password".into());
    let running = server::start(&cfg).await.unwrap();
    let at = running.metrics_addr.unwrap();
    let refused = scrape(at, "/metrics").await;
    assert!(refused.starts_with("HTTP/1.1 401") && !refused.contains("harbour_"), "{refused}");
    let served = tokio::task::spawn_blocking(move || harbour::top::scrape(at, Some("prometheus:a-long-password")))
        .await
        .unwrap()
        .unwrap();
    assert!(served.contains("harbour_connections_open"), "{served}");
    let wrong = tokio::task::spawn_blocking(move || harbour::top::scrape(at, Some("prometheus:not-the-password")))
        .await
        .unwrap()
        .unwrap();
    assert!(!wrong.contains("harbour_"), "a wrong password gets nothing");
    running.stop().await.unwrap();

    let mut public = config(dir.path());
    public.metrics = Some("0.0.0.0:9464".parse().unwrap());
    let e = public.validate().unwrap_err().to_string();
    assert!(e.contains("metrics_auth"), "{e}");
}

const CARDS_KEY: &[u8] = b"the-card-system-key-of-32-bytes-or-more";

/// Account scopes over the wire: a card system scoped to the accounts it
/// opened moves, steps up, cancels and reads only those. Another channel's
/// customer, and SETTLEMENT_IN (minting), are FORBIDDEN to it and nothing
/// moves; who opened each account survives a restart (from the log and
/// from a snapshot). With one shard, and with two, where the parts of a
/// request go SCOPED to each shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_channel_acts_only_on_the_accounts_it_opened() {
    scoped_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_channel_is_scoped_on_every_shard() {
    assert_ne!(harbour::shard::shard_of(1024, 2), harbour::shard::shard_of(5001, 2), "the scoped debit crosses");
    scoped_channel(2).await;
}

async fn scoped_channel(shards: usize) {
    use harbour::protocol::ResultCode::{self, *};
    use harbour::protocol::internal::Scope;
    use harbour::protocol::records::{Finalize, STATE_PENDING, TRANSFER_PENDING, Transfer};
    const HKD: u16 = 344;
    let codes = |rs: &[harbour::protocol::records::TransferResult]| -> Vec<ResultCode> {
        rs.iter().map(|r| ResultCode::from_u16(r.code).unwrap()).collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.switch.shards = shards;
    cfg.channels.push(Channel {
        scope: Scope { own: true, range: None },
        ..common::channel(4, CARDS_KEY, role::PAYMENTS | role::ACCOUNTS | role::REPORTING)
    });
    let running = server::start(&cfg).await.unwrap();
    let bank = Client::connect(running.addr, 1, KEY).await.unwrap();
    let cards = Client::connect(running.addr, 4, CARDS_KEY).await.unwrap();
    // The bank's customers Alice (1024) and Bob (1025); the card system's
    // Dave (5000) and Erin (5001).
    bank.create_accounts(&[common::account(1024), common::account(1025)]).await.unwrap();
    let opened = cards.create_accounts(&[common::account(5000), common::account(5001)]).await.unwrap();
    assert!(opened.iter().all(|r| r.code == 0));
    let funded = bank
        .submit_transfers(&[
            common::deposit(1, 1024, 100_000, HKD),
            common::deposit(2, 5000, 100_000, HKD),
            Transfer { flags: TRANSFER_PENDING, ..common::transfer(3, 1024, 1025, 500, HKD) },
        ])
        .await
        .unwrap();
    assert_eq!(codes(&funded), [Ok, Ok, Ok]);
    let before = scoped_balances(&bank, &[1024, 1025, 5000, 5001, 1]).await;

    let refused = cards
        .submit_transfers(&[
            common::transfer(10, 1024, 5000, 100, HKD),
            common::deposit(11, 5000, 100, HKD),
            common::transfer(12, 1025, 5001, 100, HKD),
        ])
        .await
        .unwrap();
    assert_eq!(codes(&refused), [Forbidden, Forbidden, Forbidden]);
    let finalize = [Finalize { transfer_id: 3, action: harbour::protocol::records::FINALIZE_POST }];
    assert_eq!(codes(&cards.finalize_pending(&finalize).await.unwrap()), [Forbidden]);
    assert_eq!(codes(&cards.cancel_transfers(&[3]).await.unwrap()), [Forbidden]);
    let looked = cards.lookup_transfers(&[3]).await.unwrap();
    assert_eq!((codes(&looked), looked[0].debit_amount), (vec![Forbidden], 0), "nothing of it shown");
    let read = scoped_balances(&cards, &[1024, 1, 5000]).await;
    assert_eq!(read.iter().map(|r| r.0).collect::<Vec<_>>(), [Forbidden, Forbidden, Ok]);
    assert_eq!(scoped_balances(&bank, &[1024, 1025, 5000, 5001, 1]).await, before, "nothing moved");
    // What reads every account at once is not for it, whatever its roles.
    let refused = cards.export_str(2026, 12, 2).await.unwrap_err();
    assert_eq!(refused.error_code(), Some(ErrorCode::Forbidden), "{refused}");
    assert!(refused.to_string().contains("scoped"), "{refused}");
    let page = harbour::protocol::records::StrPageRequest {
        year: 2026,
        month: 12,
        format: 2,
        limit: 10,
        ..Default::default()
    };
    let refused = cards.export_str_page(&page).await.unwrap_err();
    assert_eq!(refused.error_code(), Some(ErrorCode::Forbidden), "{refused}");
    assert_eq!(bank.lookup_transfers(&[3]).await.unwrap()[0].state, STATE_PENDING);

    // Its own customers pay anyone; the unscoped bank still debits them.
    let own = cards
        .submit_transfers(&[common::transfer(13, 5000, 1024, 300, HKD), common::transfer(14, 5000, 5001, 200, HKD)])
        .await
        .unwrap();
    assert_eq!(codes(&own), [Ok, Ok]);
    assert_eq!(codes(&bank.submit_transfers(&[common::transfer(15, 5001, 1025, 50, HKD)]).await.unwrap()), [Ok]);
    drop((bank, cards));
    running.stop().await.unwrap();

    // After a restart (the log replayed), then after a snapshot.
    for snapshot in [false, true] {
        let mut cfg = cfg.clone();
        if snapshot {
            cfg.switch.snapshot_log_bytes = 1;
        }
        let running = server::start(&cfg).await.unwrap();
        let cards = Client::connect(running.addr, 4, CARDS_KEY).await.unwrap();
        let id = if snapshot { 20 } else { 30 };
        let after = cards
            .submit_transfers(&[common::transfer(id, 5001, 5000, 1, HKD), common::transfer(id + 1, 1025, 5000, 1, HKD)])
            .await
            .unwrap();
        assert_eq!(codes(&after), [Ok, Forbidden], "snapshot {snapshot}");
        drop(cards);
        running.stop().await.unwrap();
    }
}

/// Each account's HKD balance as `c` may read it: code, balance, held.
async fn scoped_balances(c: &Client, ids: &[u64]) -> Vec<(harbour::protocol::ResultCode, i64, u64)> {
    use harbour::protocol::records::BalanceKey;
    let keys: Vec<BalanceKey> = ids.iter().map(|&account_id| BalanceKey { account_id, currency: 344 }).collect();
    let found = c.lookup_balances(&keys).await.unwrap();
    found.iter().map(|b| (harbour::protocol::ResultCode::from_u16(b.code).unwrap(), b.balance, b.held)).collect()
}
