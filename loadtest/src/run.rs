//! Sending traffic: `replay` (open loop, at the recorded pace, a multiple
//! of it, or a fixed rate, over C connections) and `bench` (closed loop,
//! the next batch when the previous answer arrives, as TigerBeetle's
//! `benchmark` does).
//!
//! Open loop: each request has an intended send time, and its latency is
//! measured from then, not from when it was actually sent, so a stalled
//! switch shows up in the percentiles instead of slowing the load down
//! (coordinated omission corrected, as wrk2 does). Requests of one lane go
//! on one connection, in order (see `workload`); requests that set things up
//! (accounts, rates, lines, deposits) are barriers: everything before them
//! is answered first, then they run alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harbour::client::{Client, Detached, Failover, is_failover};
use harbour::protocol::kind;
use harbour::protocol::records::{Record, Transfer};
use harbour::traffic::{TrafficReader, TrafficRecord};

use tokio::sync::mpsc;

use crate::report::Shared;
use crate::workload::{LANES, lane};

/// Where and how to send.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// A cluster's other nodes (empty for a single node): requests go to
    /// the leader, and through a failover they are sent again, in order,
    /// to the new one.
    pub others: Vec<SocketAddr>,
    /// TLS 1.3 (`--tls-*`), to every node alike.
    pub tls: Option<harbour::client::Tls>,
    pub channel: u32,
    pub key: Vec<u8>,
}

impl Target {
    /// A single node's target.
    #[must_use]
    pub fn single(addr: SocketAddr, channel: u32, key: &[u8]) -> Target {
        Target { addr, others: Vec::new(), tls: None, channel, key: key.to_vec() }
    }

    /// How to reach the leader through a failover.
    #[must_use]
    pub fn failover(&self) -> Failover {
        let mut addrs = vec![self.addr];
        addrs.extend(&self.others);
        let mut f = Failover::new(addrs, self.channel, &self.key);
        f.tls.clone_from(&self.tls);
        f.timeout = Duration::from_secs(60);
        f
    }

    /// A connection; in a cluster, to its leader (a read only the leader
    /// answers finds it).
    pub async fn connect(&self) -> Result<Client, String> {
        if let Some(tls) = self.tls.as_ref().filter(|_| self.others.is_empty()) {
            return Client::connect_tls(self.addr, tls, self.channel, &self.key)
                .await
                .map(|c| c.with_timeout(Duration::from_secs(60)))
                .map_err(|e| format!("{}: {e}", self.addr));
        }
        if self.others.is_empty() {
            return Client::connect(self.addr, self.channel, &self.key)
                .await
                .map(|c| c.with_timeout(Duration::from_secs(60)))
                .map_err(|e| format!("{}: {e}", self.addr));
        }
        let mut failover = self.failover();
        let mut client = failover.connect().await.map_err(|e| e.to_string())?;
        let probe = harbour::protocol::records::encode_all(&[harbour::protocol::records::BalanceKey {
            account_id: harbour::engine::book::SETTLEMENT_IN,
            currency: 344,
        }]);
        failover.request(&mut client, kind::LOOKUP_BALANCES, 1, &probe).await.map_err(|e| e.to_string())?;
        Ok(client)
    }
}

/// How fast to replay.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// The recorded offsets, divided by this factor (1.0: as recorded).
    Recorded(f64),
    /// A fixed rate of records per second, whatever was recorded.
    Rate(f64),
    /// As fast as the connections allow (no intended times).
    Max,
}

/// The lane a request belongs to, or `None` for a barrier (see module
/// docs).
#[must_use]
pub fn route(kind: u16, body: &[u8]) -> Option<u64> {
    let first = body.get(..16)?;
    let id_lane = |b: &[u8]| (u128::from_le_bytes(b[..16].try_into().expect("16 bytes")) >> 96) as u64 % LANES;
    match kind {
        kind::SUBMIT_TRANSFERS => {
            let t = Transfer::decode(body.get(..Transfer::SIZE)?);
            (t.debit_account >= harbour::engine::book::CUSTOMER_ID_MIN).then(|| lane(t.debit_account))
        }
        kind::CONFIRM_STEP_UP
        | kind::CANCEL_TRANSFERS
        | kind::FINALIZE_PENDING
        | kind::LOOKUP_TRANSFERS
        | kind::LOOKUP_LOANS
        | kind::RESOLVE_REVIEW => Some(id_lane(first)),
        kind::REPAY_LOANS => Some(id_lane(body.get(16..32)?)),
        kind::DISBURSE_LOANS => body.get(16..24).map(|a| lane(u64::from_le_bytes(a.try_into().expect("8 bytes")))),
        kind::LOOKUP_BALANCES | kind::FX_QUOTE => Some(0),
        _ => None,
    }
}

enum Msg {
    Request { record: TrafficRecord, intended: Option<Instant> },
    Barrier(Arc<tokio::sync::Barrier>),
}

/// A connection's client, replaced through a failover. The gate is held
/// by the sender while it sends and by the collector while it recovers, so
/// nothing new is sent until every request of the old connection has been
/// answered or sent again, in order: a lane's order survives the failover.
struct Link {
    client: parking_lot::Mutex<(u64, Arc<Client>)>,
    gate: tokio::sync::Mutex<Failover>,
    target: Target,
}

impl Link {
    fn current(&self) -> (u64, Arc<Client>) {
        let c = self.client.lock();
        (c.0, Arc::clone(&c.1))
    }

    /// After `failed` on generation `generation`: a new connection, unless
    /// one was made since.
    async fn recover(
        &self,
        failover: &mut Failover,
        generation: u64,
        failed: &harbour::client::ClientError,
    ) -> Result<(), String> {
        if self.client.lock().0 != generation {
            return Ok(());
        }
        let client = failover.reconnect(Some(failed)).await.map_err(|e| format!("{}: {e}", self.target.addr))?;
        let mut c = self.client.lock();
        *c = (generation + 1, Arc::new(client));
        Ok(())
    }

    /// Sends `record` until a leader answers it (same bytes, same ids).
    async fn resend(
        &self,
        failover: &mut Failover,
        record: &TrafficRecord,
    ) -> Result<harbour::client::Response, String> {
        let started = Instant::now();
        loop {
            let (generation, client) = self.current();
            match client.request(record.kind, record.count, &record.body).await {
                Err(e) if is_failover(&e) && started.elapsed() < failover.deadline => {
                    self.recover(failover, generation, &e).await?;
                }
                answer => return answer.map_err(|e| e.to_string()),
            }
        }
    }
}

/// What the sender hands the collector: the answer to wait for (or why it
/// was not sent), and what to send again through a failover.
struct Sent {
    detached: Option<Detached>,
    failed: Option<harbour::client::ClientError>,
    generation: u64,
    record: TrafficRecord,
    intended: Instant,
}

enum Collect {
    Sent(Sent),
    Barrier(Arc<tokio::sync::Barrier>),
}

/// One connection: a sender that paces requests and a collector that
/// waits for their answers in order (and, in a cluster, sends again what a
/// failover left unanswered).
async fn connection(
    target: Target,
    client: Client,
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let link = Arc::new(Link {
        client: parking_lot::Mutex::new((0, Arc::new(client))),
        gate: tokio::sync::Mutex::new(target.failover()),
        target: target.clone(),
    });
    let cluster = !target.others.is_empty();
    let (to_collector, mut from_sender) = mpsc::channel::<Collect>(4096);
    let collector_shared = Arc::clone(&shared);
    let collector_link = Arc::clone(&link);
    let collector = tokio::spawn(async move {
        let link = collector_link;
        while let Some(item) = from_sender.recv().await {
            let sent = match item {
                Collect::Barrier(b) => {
                    b.wait().await;
                    continue;
                }
                Collect::Sent(sent) => sent,
            };
            let (kind, intended) = (sent.record.kind, sent.intended);
            let result = answer_of(sent.detached, sent.failed).await;
            if cluster && result.as_ref().is_err_and(is_failover) {
                // Nothing new is sent while this connection's unanswered
                // requests go again, in order.
                let mut failover = link.gate.lock().await;
                let failed = result.as_ref().expect_err("an error");
                // A cluster that found no leader in time fails this request
                // (counted as an error); the connection goes on, so the
                // replay's barriers are never left waiting for it.
                let answer = match link.recover(&mut failover, sent.generation, failed).await {
                    Ok(()) => link.resend(&mut failover, &sent.record).await,
                    Err(e) => Err(e),
                };
                collector_shared.resends.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                book(&collector_shared, kind, answer, intended);
                // Everything queued behind it was sent on the old
                // connection: answered already, or sent again now.
                while let Ok(item) = from_sender.try_recv() {
                    match item {
                        Collect::Barrier(b) => {
                            b.wait().await;
                        }
                        Collect::Sent(s) => {
                            let (kind, intended) = (s.record.kind, s.intended);
                            let answer = match answer_of(s.detached, s.failed).await {
                                Err(e) if is_failover(&e) => {
                                    collector_shared.resends.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    link.resend(&mut failover, &s.record).await
                                }
                                other => other.map_err(|e| e.to_string()),
                            };
                            book(&collector_shared, kind, answer, intended);
                        }
                    }
                }
                continue;
            }
            book(&collector_shared, kind, result.map_err(|e| e.to_string()), intended);
        }
        Ok::<(), String>(())
    });
    // The sender paces on a thread of its own: tokio's timer ticks in
    // milliseconds, a thread's own sleep and a short spin are precise to a
    // few microseconds.
    let runtime = tokio::runtime::Handle::current();
    let sender = tokio::task::spawn_blocking(move || {
        precise_sleeps();
        runtime.block_on(send_loop(rx, link, to_collector, shared));
    });
    sender.await.map_err(|e| e.to_string())?;
    collector.await.map_err(|e| e.to_string())?
}

/// A connection's sender: each request at its intended time, noting how
/// late it went (the tester's own share of the latency).
async fn send_loop(
    mut rx: mpsc::Receiver<Msg>,
    link: Arc<Link>,
    to_collector: mpsc::Sender<Collect>,
    shared: Arc<Shared>,
) {
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Barrier(b) => {
                if to_collector.send(Collect::Barrier(b)).await.is_err() {
                    break;
                }
            }
            Msg::Request { record, intended } => {
                if let Some(at) = intended {
                    until(at).await;
                    shared.sent_late(Instant::now().saturating_duration_since(at));
                }
                let intended = intended.unwrap_or_else(Instant::now);
                // The collector's place is taken before the gate, and the
                // request is in the collector's queue before the gate is
                // let go: a recovery that drains the queue sees it.
                let Ok(slot) = to_collector.reserve().await else { break };
                let gate = link.gate.lock().await;
                let (generation, client) = link.current();
                let sent = client.send(record.kind, record.count, &record.body).await;
                let (detached, failed) = match sent {
                    Ok(in_flight) => (Some(in_flight.detach()), None),
                    Err(e) => (None, Some(e)),
                };
                slot.send(Collect::Sent(Sent { detached, failed, generation, record, intended }));
                drop(gate);
            }
        }
    }
}

/// How long before the intended time a sender stops sleeping and spins.
const SPIN: Duration = Duration::from_micros(20);

/// Waits until `at`, to within a few microseconds: tokio's timer for the
/// bulk (it ticks in milliseconds), then the thread's own sleep, then a
/// spin of at most [`SPIN`]. Blocks the thread: senders have their own.
async fn until(at: Instant) {
    let coarse = Duration::from_millis(2);
    if let Some(early) = at.checked_sub(coarse).filter(|&early| early > Instant::now()) {
        tokio::time::sleep_until(early.into()).await;
    }
    if let Some(rest) = at.checked_duration_since(Instant::now()).and_then(|d| d.checked_sub(SPIN)) {
        std::thread::sleep(rest);
    }
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}

/// This thread's sleeps end when asked, not up to 50 µs later (Linux's
/// default timer slack).
fn precise_sleeps() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes a number of nanoseconds and changes
    // only this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// The answer a sent request got (or why it was not sent).
async fn answer_of(
    detached: Option<Detached>,
    failed: Option<harbour::client::ClientError>,
) -> Result<harbour::client::Response, harbour::client::ClientError> {
    match (detached, failed) {
        (Some(d), _) => d.wait().await,
        (None, why) => Err(why.unwrap_or(harbour::client::ClientError::Closed)),
    }
}

/// Books an answer, its latency measured from the intended send time.
fn book(shared: &Shared, kind: u16, result: Result<harbour::client::Response, String>, intended: Instant) {
    let latency = match &result {
        Ok(answer) => answer.received.saturating_duration_since(intended),
        Err(_) => intended.elapsed(),
    };
    shared.book(kind, result, latency, true);
}

/// Replays a traffic file; returns the shared results and how long the
/// timed part took.
pub async fn replay(
    target: &Target,
    mut reader: TrafficReader<impl std::io::Read>,
    connections: usize,
    pace: Pace,
    progress: bool,
) -> Result<(Arc<Shared>, Duration, Duration), String> {
    let shared = Shared::new();
    let connections = connections.max(1);
    let mut senders = Vec::with_capacity(connections);
    let mut tasks = Vec::with_capacity(connections);
    // Every connection is up before anything is sent (so a barrier never
    // waits for a connection that failed to connect).
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(target.connect().await?);
    }
    for client in clients {
        let (tx, rx) = mpsc::channel::<Msg>(1024);
        senders.push(tx);
        tasks.push(tokio::spawn(connection(target.clone(), client, rx, Arc::clone(&shared))));
    }
    let mut setup_client = target.connect().await?;
    let mut setup_failover = target.failover();
    let setup_started = Instant::now();
    let mut setup = Duration::ZERO;
    let mut start: Option<(Instant, u64)> = None;
    let mut dispatched = 0u64;
    let mut outstanding_barrier = false;
    let mut paused = Duration::ZERO;
    let reporter = progress.then(|| tokio::spawn(crate::report::progress(Arc::clone(&shared))));
    for record in reader.by_ref() {
        let record = record.map_err(|e| e.to_string())?;
        match route(record.kind, &record.body) {
            None => {
                // A barrier: everything before it answered, then it alone.
                if dispatched > 0 && !outstanding_barrier {
                    let draining = Instant::now();
                    let barrier = Arc::new(tokio::sync::Barrier::new(connections + 1));
                    for tx in &senders {
                        tx.send(Msg::Barrier(Arc::clone(&barrier))).await.map_err(|_| "a connection failed")?;
                    }
                    barrier.wait().await;
                    paused += draining.elapsed();
                }
                outstanding_barrier = true;
                let sent_at = Instant::now();
                let answer = if target.others.is_empty() {
                    setup_client.request(record.kind, record.count, &record.body).await
                } else {
                    setup_failover.request(&mut setup_client, record.kind, record.count, &record.body).await
                };
                shared.book(record.kind, answer.map_err(|e| e.to_string()), sent_at.elapsed(), false);
                if start.is_some() {
                    // The pacing clock stops while a barrier runs: its
                    // time is the tester's, not the switch's latency.
                    paused += sent_at.elapsed();
                }
                if start.is_none() {
                    setup = setup_started.elapsed();
                }
            }
            Some(lane) => {
                outstanding_barrier = false;
                let (t0, offset0) = *start.get_or_insert_with(|| {
                    *shared.traffic_started.lock().expect("not poisoned") = Some(Instant::now());
                    (Instant::now(), record.offset_ns)
                });
                let t0 = t0 + paused;
                let since = record.offset_ns.saturating_sub(offset0);
                let intended = match pace {
                    Pace::Recorded(speed) => Some(t0 + Duration::from_nanos((since as f64 / speed.max(1e-9)) as u64)),
                    Pace::Rate(rate) => Some(t0 + Duration::from_secs_f64(dispatched as f64 / rate.max(1e-9))),
                    Pace::Max => None,
                };
                dispatched += u64::from(record.count.max(1));
                let tx = &senders[(lane as usize) % connections];
                tx.send(Msg::Request { record, intended }).await.map_err(|_| "a connection failed")?;
            }
        }
    }
    if reader.torn_tail {
        eprintln!("traffic file ends in a torn record (a cut recording); replayed what was whole");
    }
    drop(senders);
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let elapsed = start.map_or(Duration::ZERO, |(t0, _)| t0.elapsed().saturating_sub(paused));
    if let Some(r) = reporter {
        r.abort();
    }
    Ok((shared, setup, elapsed))
}

/// The closed-loop benchmark's shape.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub accounts: u64,
    pub transfers: u64,
    pub batch: u64,
    pub zipf: bool,
    pub seed: u64,
}

/// TigerBeetle-style closed loop: create accounts, then one connection
/// sends a batch and waits for its answer before the next. Returns the
/// batch latencies (µs) and the time the transfers took.
pub async fn bench(target: &Target, c: &BenchConfig) -> Result<(Arc<Shared>, Duration, Duration), String> {
    use harbour::protocol::records::Account;
    let setup = Instant::now();
    let mut client = target.connect().await?;
    let mut failover = target.failover();
    let first = 1u64 << 40; // clear of any other workload's accounts
    // Transfer ids of this run alone (the top 64 bits from the clock), so a
    // second bench on the same switch, or one after `gen`'s traffic,
    // collides with nothing; accounts are created or found as they are.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let run = u128::from(run | 1) << 64;
    let ids: Vec<u64> = (0..c.accounts).map(|i| first + i).collect();
    for chunk in ids.chunks(8_000) {
        let accounts: Vec<Account> = chunk
            .iter()
            .map(|&a| Account { account_id: a, kind: 1, home_country: 344, customer_ref: a, ..Account::default() })
            .collect();
        client.create_accounts(&accounts).await.map_err(|e| e.to_string())?;
        let deposits: Vec<Transfer> = chunk
            .iter()
            .map(|&a| Transfer {
                transfer_id: run | u128::from(a),
                debit_account: harbour::engine::book::SETTLEMENT_IN,
                credit_account: a,
                amount: 1 << 40,
                debit_currency: 344,
                credit_currency: 344,
                ..Transfer::default()
            })
            .collect();
        client.submit_transfers(&deposits).await.map_err(|e| e.to_string())?;
    }
    let shared = Shared::new();
    let zipf = c.zipf.then(|| crate::workload::zipf_table(c.accounts, 1.0));
    // A fixed shuffle of ranks to accounts, as `gen` does.
    let mut rng = harbour::aml::synth::Rng::new(c.seed);
    let pick = |rng: &mut harbour::aml::synth::Rng| -> u64 {
        let k = match &zipf {
            Some(z) => {
                let u = rng.unit();
                (z.partition_point(|&p| p < u) as u64).min(c.accounts - 1)
            }
            None => rng.below(c.accounts),
        };
        // Ranks to accounts through a fixed permutation (an odd multiplier
        // modulo a power of two would do; an affine map modulo the count
        // with a multiplier coprime to it is one).
        first + (k * coprime(c.accounts) + 7) % c.accounts
    };
    let setup = setup.elapsed();
    let start = Instant::now();
    *shared.traffic_started.lock().expect("not poisoned") = Some(start);
    let mut sent = 0u64;
    let mut next_id = run | (1u128 << 63);
    let mut body = Vec::with_capacity(c.batch as usize * Transfer::SIZE);
    // Realistic payees, as `gen`'s default profile: each account pays its
    // own few payees (each in turn first, so AML level 3 has learned them
    // all by the time it judges the account) about its usual amount, so
    // default AML holds what it should, not every transfer.
    let mut paid = vec![0u32; c.accounts as usize];
    let habit = |debit: u64, j: u64| {
        let mut to = first + harbour::hash::mix64(debit ^ j.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % c.accounts;
        if to == debit {
            to = first + (to - first + 1) % c.accounts;
        }
        to
    };
    while sent < c.transfers {
        let n = c.batch.min(c.transfers - sent);
        body.clear();
        for _ in 0..n {
            let debit = pick(&mut rng);
            let turn = &mut paid[(debit - first) as usize];
            let j = if (*turn as u64) < BENCH_PAYEES { u64::from(*turn) } else { rng.below(BENCH_PAYEES) };
            *turn = turn.saturating_add(1);
            let credit = habit(debit, j);
            let usual = 100 + harbour::hash::mix64(debit) % 1_000;
            next_id += 1;
            let t = Transfer {
                transfer_id: next_id,
                debit_account: debit,
                credit_account: credit,
                amount: usual * 4 / 5 + rng.below(usual * 2 / 5 + 1),
                debit_currency: 344,
                credit_currency: 344,
                ..Transfer::default()
            };
            let at = body.len();
            body.resize(at + Transfer::SIZE, 0);
            t.encode(&mut body[at..]);
        }
        let began = Instant::now();
        let answer = if target.others.is_empty() {
            client.request(kind::SUBMIT_TRANSFERS, n as u32, &body).await
        } else {
            failover.request(&mut client, kind::SUBMIT_TRANSFERS, n as u32, &body).await
        };
        let latency = answer.as_ref().map_or_else(|_| began.elapsed(), |a| a.received - began);
        shared.book(kind::SUBMIT_TRANSFERS, answer.map_err(|e| e.to_string()), latency, true);
        sent += n;
    }
    Ok((shared, setup, start.elapsed()))
}

/// Usual payees of each bench account.
const BENCH_PAYEES: u64 = 4;

/// A multiplier coprime to `n` (for a permutation of 0..n).
fn coprime(n: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    (0x9e37_79b9u64..).find(|m| gcd(*m, n) == 1).expect("some number is coprime to n")
}
