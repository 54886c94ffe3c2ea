//! The switch: opening every shard (recovery, rounds reconciled and
//! continued, claims rebuilt), the data directory's settings, and the calls
//! that send requests.

use super::*;

/// The running switch: every shard's thread, and the router in front of
/// them.
pub struct Switch {
    core: Arc<Core>,
    threads: Vec<Option<JoinHandle<()>>>,
    config: SwitchConfig,
    reports: Vec<RecoveryReport>,
    /// What the shards say when stopping (`handoff::Settled`).
    shards_settled: Arc<Settled>,
    /// In a cluster, this node's raft and books.
    member: Option<crate::cluster::node::Member>,
}

/// File recording the settings a data directory was written with.
pub const META_FILE: &str = "META";

/// The settings that must not change over a data directory's life, as
/// `key=value` lines.
pub fn meta(config: &SwitchConfig) -> String {
    let w = config.engine.hold_windows;
    let clock = if config.clock.is_manual() { "manual" } else { "system" };
    let aml = config.engine.aml;
    let high_risk: Vec<String> = aml.high_risk.codes().iter().map(u16::to_string).collect();
    format!(
        "shards={}\nclock={clock}\nstep_up_window_ms={}\nmanual_review_window_ms={}\nclient_window_ms={}\n\
         quote_ttl_ms={}\naml_enabled={}\naml_daily_limit_hkd_minor={}\naml_high_risk_countries={}\n\
         aml_behaviour={}\naml_behaviour_model={}\naml_behaviour_threshold_q={}\naml_cooling_off_ms={}\n\
         aml_mule={}\naml_mule_min_inbound_hkd_minor={}\n",
        config.shards,
        w.step_up_ms,
        w.manual_review_ms,
        w.client_ms,
        config.engine.quote_ttl_ms,
        aml.enabled,
        aml.daily_limit_hkd_minor,
        high_risk.join(","),
        aml.behaviour,
        aml.model.version(),
        aml.threshold_q,
        aml.cooling_off_ms,
        // What runs: the rule runs only with AML and level 3 on.
        aml.mule_runs(),
        aml.mule_min_inbound_hkd_minor,
    )
}

/// The first setting that differs: (key, recorded, configured).
pub fn meta_mismatch(recorded: &str, wanted: &str) -> Option<(String, String, String)> {
    let pairs = |text: &str| -> Vec<(String, String)> {
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().into(), v.trim().into())).collect()
    };
    let recorded = pairs(recorded);
    let wanted = pairs(wanted);
    // With AML off no level 3 runs, so a missing model, threshold or mule
    // key cannot have decided anything differently.
    let aml_on = wanted.iter().any(|(k, v)| k == "aml_enabled" && v != "false");
    for (key, now) in wanted {
        match recorded.iter().find(|(k, _)| *k == key) {
            Some((_, was)) if *was != now => return Some((key, was.clone(), now)),
            Some(_) => {}
            // A key an older build did not record is accepted when that
            // build behaved as the setting's value does now; AML did not
            // exist before `aml_enabled` was recorded, so its log replays
            // only with AML off.
            None if key == "aml_enabled" && now != "false" => {
                return Some((key, "false (a data directory from before AML)".into(), now));
            }
            // Before the model was recorded, level 3 was model 1.
            None if aml_on && key == "aml_behaviour_model" && now != "1" => {
                return Some((key, "1 (a data directory from before the model was recorded)".into(), now));
            }
            // Before the threshold was recorded, model 1 tripped at 4 points.
            None if aml_on && key == "aml_behaviour_threshold_q" && now != "16" => {
                return Some((key, "16 (a data directory from before the threshold was set)".into(), now));
            }
            // Before the mule rule, no transfer was held for MULE_REVIEW.
            None if aml_on && key == "aml_mule" && now != "false" => {
                return Some((key, "false (a data directory from before the mule rule)".into(), now));
            }
            None => {}
        }
    }
    None
}

/// A file's text, or `None` if it is not there.
fn read_optional(path: &Path) -> Result<Option<String>, OpenError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OpenError::Io(e)),
    }
}

/// The shard directories (`shard-N`) a data directory holds, in name
/// order; none if the directory does not exist.
pub fn shard_dirs(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut dirs: Vec<std::path::PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("shard-")))
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The settings a data directory was written with: `META`, which every
/// shard directory's copy must match; or, with `META` lost, the copies
/// (which must agree). `None` only for a directory that holds no shard's
/// data yet. A directory with data and no record at all is refused: its
/// log would replay under whatever settings were configured.
pub fn recorded_meta(dir: &Path) -> Result<Option<String>, OpenError> {
    let top = read_optional(&dir.join(META_FILE))?;
    let shard_dirs = shard_dirs(dir).map_err(OpenError::Io)?;
    let mut copies = Vec::new();
    let mut holds_data = None;
    for shard_dir in &shard_dirs {
        if let Some(copy) = read_optional(&shard_dir.join(META_FILE))? {
            copies.push((shard_dir.join(META_FILE), copy));
        }
        let data = std::fs::read_dir(shard_dir)
            .map_err(OpenError::Io)?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".log") || n.ends_with(".snap")));
        if data && holds_data.is_none() {
            holds_data = Some(shard_dir.clone());
        }
    }
    let reference = top.clone().or_else(|| copies.first().map(|(_, c)| c.clone()));
    if let Some(reference) = &reference {
        for (path, copy) in &copies {
            if copy != reference {
                return Err(OpenError::Meta(format!(
                    "{} disagrees with {}: restore the copy that matches the data, or the directory from a backup",
                    path.display(),
                    if top.is_some() {
                        dir.join(META_FILE).display().to_string()
                    } else {
                        copies[0].0.display().to_string()
                    }
                )));
            }
        }
        return Ok(Some(reference.clone()));
    }
    match holds_data {
        Some(shard_dir) => Err(OpenError::Meta(format!(
            "{} is missing and so are its copies, but {} holds data: its log cannot be replayed safely under \
             unknown settings; restore META from a backup (docs/operations.md, \"Data directory\")",
            dir.join(META_FILE).display(),
            shard_dir.display()
        ))),
        None => Ok(None),
    }
}

impl Switch {
    /// Opens (or creates) a data directory: `dir/shard-N/` per shard, and a
    /// record (`META`) of the settings that decide outcomes (shard count,
    /// clock, hold windows), which later starts must match: a replay under
    /// other settings would decide differently.
    pub fn open_dir(dir: &Path, config: SwitchConfig, backend: Backend) -> Result<Switch, OpenError> {
        if dir.join(crate::cluster::node::RAFT_DIR).exists() {
            return Err(OpenError::Meta(format!(
                "{} holds a cluster node's data: start it with its [cluster] configuration",
                dir.display()
            )));
        }
        let root = FileStorage::new(dir).map_err(OpenError::Io)?;
        let wanted = meta(&config);
        let recorded = recorded_meta(dir)?;
        if let Some((key, was, now)) = recorded.as_deref().and_then(|r| meta_mismatch(r, &wanted)) {
            return Err(OpenError::Settings { key, recorded: was, configured: now });
        }
        // Every shard directory keeps a copy, so losing `META` is noticed
        // and repaired from the copies, never taken for a new directory.
        let restoring = recorded.is_some();
        let settings = recorded.unwrap_or(wanted);
        for i in 0..config.shards {
            let shard_dir = dir.join(format!("shard-{i}"));
            std::fs::create_dir_all(&shard_dir).map_err(OpenError::Io)?;
            if read_optional(&shard_dir.join(META_FILE))?.is_none() {
                FileStorage::new(&shard_dir)
                    .and_then(|s| s.write_durably(META_FILE, settings.as_bytes()))
                    .map_err(OpenError::Io)?;
            }
        }
        if read_optional(&dir.join(META_FILE))?.is_none() {
            if restoring {
                tracing::warn!(dir = %dir.display(), "META was missing; restored from the shard directories' copies");
            }
            root.write_durably(META_FILE, settings.as_bytes()).map_err(OpenError::Io)?;
        }
        let mut storages: Vec<Arc<dyn Storage>> = Vec::with_capacity(config.shards);
        for i in 0..config.shards {
            let path = dir.join(format!("shard-{i}"));
            storages.push(open_backend(&path, backend).map_err(OpenError::Io)?);
        }
        Switch::open(config, storages)
    }

    /// Starts one thread per storage, each recovering its shard first.
    pub fn open(config: SwitchConfig, storages: Vec<Arc<dyn Storage>>) -> Result<Switch, OpenError> {
        check_config(&config, storages.len())?;
        let n = config.shards;
        let now_ms = Arc::new(AtomicU64::new(0));
        let queued_bytes = Arc::new(Admission::new(QUEUED_BYTES_MAX));
        let mut router = Router::new(n, 1);
        if n > 1 {
            router.reserve(n * (config.engine.transfers_capacity + config.engine.loans_capacity));
        }
        // Each shard's link queue has room for a full window from every
        // other shard, so a link message is never refused or waited for.
        let windows = Arc::new(Windows::new(n, LINK_WINDOW_MAX));
        let settled = Arc::new(Settled::new(n));
        let (link_txs, link_rxs): (Vec<_>, Vec<_>) =
            (0..n).map(|_| crossbeam_channel::bounded::<LinkMessage>(windows.queue_capacity())).unzip();
        for (shard, storage) in storages.iter().enumerate() {
            let free = storage.free_bytes().map_err(OpenError::Io)?;
            if free < config.disk_reserve_bytes {
                return Err(OpenError::NoSpace { shard, free, reserve: config.disk_reserve_bytes });
            }
        }
        let logs_short: Vec<_> = (0..n).map(|_| Arc::new(std::sync::atomic::AtomicBool::new(false))).collect();
        let room = Room {
            storages: storages.clone(),
            reserve: config.disk_reserve_bytes,
            logs_short: logs_short.clone(),
            last: parking_lot::Mutex::new((None, true)),
        };
        let mut recovered = Recovered::default();
        let (mut txs, mut threads) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (i, (storage, link_rx)) in storages.into_iter().zip(link_rxs).enumerate() {
            let peers = Peers {
                me: i as u16,
                senders: link_txs.clone(),
                windows: Arc::clone(&windows),
                settled: Arc::clone(&settled),
            };
            let shared = (Arc::clone(&now_ms), Arc::clone(&queued_bytes), Arc::clone(&logs_short[i]));
            let Spawned { tx, thread, ready } = spawn_shard(i, storage, config, peers, link_rx, shared)?;
            recovered.take(i, ready.recv(), &mut router);
            txs.push(tx);
            threads.push(Some(thread));
        }
        let Recovered { reports, live_quotes, multis, first_error } = recovered;
        if first_error.is_none() && n > 1 {
            router.restore_quotes(&live_quotes);
        }
        let core = Core {
            txs,
            router: parking_lot::Mutex::new(router),
            answered: Arc::default(),
            queued_bytes,
            now_ms,
            clock: config.clock,
            quote_ttl_ms: config.engine.quote_ttl_ms,
            stopped: std::sync::atomic::AtomicBool::new(false),
            room,
            leading: None,
        };
        let switch = Switch { core: Arc::new(core), threads, config, reports, shards_settled: settled, member: None };
        let finished = match first_error {
            Some(e) => Err(e),
            None if n > 1 => lead::finish_rounds(&switch.core, &multis, 0),
            None => Ok(()),
        };
        if let Err(e) = finished {
            // A shard did not recover, or a round could not be finished:
            // the others stop at once, without waiting to settle with it
            // (the next start resends).
            switch.shards_settled.abandon();
            return Err(e);
        }
        Ok(switch)
    }

    /// A cluster node's switch (`docs/cluster.md`): the same queues and
    /// calls, in front of a proposer thread per shard instead of a shard
    /// with its own log. The books are `member`'s, applied from the raft
    /// log; `storages` are the disks whose reserve is kept (the raft log's).
    pub fn open_cluster(
        config: SwitchConfig,
        member: crate::cluster::node::Member,
        storages: Vec<Arc<dyn Storage>>,
    ) -> Result<Switch, OpenError> {
        check_config(&config, config.shards)?;
        let n = config.shards;
        let now_ms = member.books.now_ms();
        let queued_bytes = Arc::new(Admission::new(QUEUED_BYTES_MAX));
        // With several shards the router's claims and rounds are rebuilt in
        // each term this node leads (`lead`); with one there are none.
        let leading = (n > 1).then(|| Arc::new(lead::Leading::new(member.clone())));
        let (mut txs, mut threads) = (Vec::with_capacity(n), Vec::with_capacity(n + 1));
        for shard in 0..n {
            let (tx, rx) = crossbeam_channel::bounded(config.queue_depth_max);
            let gate = match config.aml_scorer.filter(|_| config.engine.aml.enabled) {
                Some(s) => Some(Gate::new(
                    Box::new(RemoteScorer::start(s.addr, s.io_timeout).map_err(OpenError::Io)?),
                    s.budget,
                )),
                None => None,
            };
            let proposer = propose::Proposer {
                shard: shard as u16,
                member: member.clone(),
                leading: leading.clone(),
                clock: config.clock,
                gate,
                gate_reported: GateStats::default(),
            };
            let (thread_now, thread_queued) = (Arc::clone(&now_ms), Arc::clone(&queued_bytes));
            let group_max = config.group_requests_max;
            let thread = std::thread::Builder::new()
                .name(format!("proposer-{shard}"))
                .spawn(move || proposer.run(&rx, group_max, &thread_now, &thread_queued))
                .map_err(OpenError::Io)?;
            txs.push(tx);
            threads.push(Some(thread));
        }
        let room = Room {
            storages,
            reserve: config.disk_reserve_bytes,
            logs_short: Vec::new(),
            last: parking_lot::Mutex::new((None, true)),
        };
        let core = Arc::new(Core {
            txs,
            router: parking_lot::Mutex::new(Router::new(n, 1)),
            answered: Arc::default(),
            queued_bytes,
            now_ms,
            clock: config.clock,
            quote_ttl_ms: config.engine.quote_ttl_ms,
            stopped: std::sync::atomic::AtomicBool::new(false),
            room,
            leading: leading.clone(),
        });
        if let Some(leading) = leading {
            let core = Arc::clone(&core);
            let thread = std::thread::Builder::new()
                .name("lead".into())
                .spawn(move || leading.run(&core, &config))
                .map_err(OpenError::Io)?;
            threads.push(Some(thread));
        }
        Ok(Switch {
            core,
            threads,
            config,
            reports: Vec::new(),
            shards_settled: Arc::new(Settled::new(n)),
            member: Some(member),
        })
    }

    /// In a cluster, this node's raft and books.
    #[must_use]
    pub fn member(&self) -> Option<&crate::cluster::node::Member> {
        self.member.as_ref()
    }

    /// What each shard's recovery found.
    #[must_use]
    pub fn recovery_reports(&self) -> &[RecoveryReport] {
        &self.reports
    }

    /// The switch's time as of the last group any shard applied (on the
    /// system clock, at least the wall clock).
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.core.now_ms()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    /// The shard that owns a customer account.
    #[must_use]
    pub fn shard_of(&self, account_id: u64) -> usize {
        shard_of(account_id, self.core.txs.len())
    }

    /// Applies a request and waits for its durable answer; waits for queue
    /// room rather than answering `Busy`.
    pub fn submit(&self, kind: u16, body: &[u8]) -> Reply {
        self.dispatch(kind, body, true)?.wait_blocking()
    }

    /// Like [`Switch::submit`], but answers `Busy` at once (nothing applied)
    /// if a shard's queue is full.
    pub fn try_submit(&self, kind: u16, body: &[u8]) -> Reply {
        self.dispatch(kind, body, false)?.wait_blocking()
    }

    /// Hands a request to its shard(s) without waiting for the answer: the
    /// async server's entry point. With `wait` false a full queue is `Busy`
    /// and nothing is sent anywhere. A request that must wait for another's
    /// claims (`router`) is accepted and routed when its answer is awaited.
    pub fn dispatch(&self, kind: u16, body: &[u8], wait: bool) -> Result<PendingReply, SwitchError> {
        self.dispatch_traced(kind, body, wait, None)
    }

    /// [`Switch::dispatch`] of a request whose timeline is traced: its
    /// first round's parts carry `trace` to their shards.
    pub fn dispatch_traced(
        &self,
        kind: u16,
        body: &[u8],
        wait: bool,
        trace: Option<&Arc<Trace>>,
    ) -> Result<PendingReply, SwitchError> {
        self.core.check_room(kind, body)?;
        let stage = self.core.route_and_send(kind, body, wait, None, trace)?;
        let shown = crate::router::answer_kind(kind, body);
        Ok(PendingReply { core: Arc::clone(&self.core), kind, shown, wait, stage })
    }

    /// Whether every request goes whole to one shard (then
    /// [`Switch::dispatch_direct`] applies).
    #[must_use]
    pub fn single_shard(&self) -> bool {
        self.core.txs.len() == 1
    }

    /// With one shard: hands the request over with a callback the shard
    /// thread calls with the answer right after the fsync, sparing the
    /// caller a task wake-up per request. `Busy` (nothing sent) if the
    /// queue is full and `wait` is false; the callback is then dropped
    /// uncalled.
    pub fn dispatch_direct(
        &self,
        kind: u16,
        body: Vec<u8>,
        wait: bool,
        reply: ReplyFn,
        trace: Option<Arc<Trace>>,
    ) -> Result<(), SwitchError> {
        assert!(self.single_shard(), "dispatch_direct needs a single shard");
        if kinds::from_channel(crate::router::answer_kind(kind, &body)).is_none() {
            return Err(SwitchError::Engine(EngineError::UnknownKind(kind)));
        }
        self.core.check_room(kind, &body)?;
        self.core.enqueue(0, Request { trace, ..Request::new(kind, body, reply, 0) }, wait)
    }

    /// Stops every shard after the group it is applying; waits for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    pub(super) fn stop(&mut self) {
        self.core.stopped.store(true, Ordering::Relaxed);
        for tx in &self.core.txs {
            let _ = tx.send(Message::Stop);
        }
        let threads = &mut self.threads;
        let mut join = || {
            for thread in threads.iter_mut() {
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        };
        // A cluster node's threads wait on raft's runtime (the lead
        // watcher's timers, a barrier entry): dropped on one of that
        // runtime's workers, the switch hands the worker's tasks over
        // before it waits, or the runtime could not move them on.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(join);
            }
            _ => join(),
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the shard count, storages and queue bounds are usable.
fn check_config(config: &SwitchConfig, storages: usize) -> Result<(), OpenError> {
    if config.shards == 0 || config.shards > SHARDS_MAX || storages != config.shards {
        return Err(OpenError::Config(format!("shards must be 1..={SHARDS_MAX}, one storage each")));
    }
    if config.group_requests_max == 0
        || config.group_requests_max > GROUP_REQUESTS_MAX
        || config.queue_depth_max < config.group_requests_max
        || config.queue_depth_max > QUEUE_DEPTH_MAX
    {
        return Err(OpenError::Config(format!(
            "need 0 < group_requests_max <= {GROUP_REQUESTS_MAX} and group_requests_max <= queue_depth_max \
             <= {QUEUE_DEPTH_MAX}"
        )));
    }
    Ok(())
}

/// What a shard thread reports once it recovered: its recovery, its next
/// quote id, and (with several shards) what it stores and its rounds.
type Ready = Result<(RecoveryReport, u64, Option<(crate::engine::StoredIds, multi::Multi)>), WalError>;

/// Starts shard `i`'s thread: it recovers, reports on the returned channel,
/// then runs until stopped.
fn spawn_shard(
    i: usize,
    storage: Arc<dyn Storage>,
    mut config: SwitchConfig,
    peers: Peers,
    link_rx: Receiver<LinkMessage>,
    (shard_now, shard_queued, log_short): (Arc<AtomicU64>, Arc<Admission>, Arc<std::sync::atomic::AtomicBool>),
) -> Result<Spawned, OpenError> {
    let n = config.shards;
    let (tx, rx) = crossbeam_channel::bounded(config.queue_depth_max);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Ready>(1);
    config.engine.shard = i as u16;
    config.engine.shards = n as u16;
    let thread = std::thread::Builder::new()
        .name(format!("shard-{i}"))
        .spawn(move || {
            let (mut shard, report) = match Shard::open(storage, &config) {
                Ok(opened) => opened,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // With AML off nothing is judged: no scorer either.
            if let Some(s) = config.aml_scorer.filter(|_| config.engine.aml.enabled) {
                match RemoteScorer::start(s.addr, s.io_timeout) {
                    Ok(scorer) => shard.set_gate(Gate::new(Box::new(scorer), s.budget)),
                    Err(source) => {
                        let _ = ready_tx.send(Err(WalError::Io {
                            op: "start aml scorer thread",
                            file: String::new(),
                            source,
                        }));
                        return;
                    }
                }
            }
            shard.wal.use_short_flag(log_short);
            shard_now.fetch_max(shard.engine.now_ms(), Ordering::Relaxed);
            // The router's claims are rebuilt from what every shard stores
            // (with one shard there are none).
            let stored = (n > 1).then(|| (shard.engine.stored_ids(), shard.engine.multi().clone()));
            let _ = ready_tx.send(Ok((report, shard.engine.next_quote_id(), stored)));
            shard.run(&rx, &link_rx, &peers, config.group_requests_max, &shard_now, &shard_queued);
        })
        .map_err(OpenError::Io)?;
    Ok(Spawned { tx, thread, ready: ready_rx })
}

/// A shard thread just started: its queue, its handle, and where it says
/// it recovered.
struct Spawned {
    tx: Sender<Message>,
    thread: JoinHandle<()>,
    ready: Receiver<Ready>,
}

/// What the shards' recoveries gave, gathered in shard order.
#[derive(Default)]
struct Recovered {
    reports: Vec<RecoveryReport>,
    live_quotes: Vec<Vec<u64>>,
    multis: Vec<multi::Multi>,
    first_error: Option<OpenError>,
}

impl Recovered {
    /// Takes shard `i`'s report into the router and the operator's log.
    fn take(&mut self, i: usize, ready: Result<Ready, crossbeam_channel::RecvError>, router: &mut Router) {
        let (report, quote, stored) = match ready {
            Ok(Ok(ready)) => ready,
            Ok(Err(error)) => return self.fail(OpenError::Recovery { shard: i, error }),
            Err(_) => return self.fail(OpenError::Recovery { shard: i, error: WalError::Failed }),
        };
        router.note_quote_id(quote);
        if let Some((stored, multi)) = stored {
            router.restore_stored(i, stored.ids, stored.repayments);
            self.live_quotes.push(stored.quotes);
            router.restore_requests(multi.applied);
            self.multis.push(multi);
        }
        // The operator's record of what recovery did.
        if let Some((file, offset, bytes)) = &report.torn_tail {
            tracing::warn!(shard = i, %file, offset, bytes, "recovery cut a torn last record");
        }
        for skipped in &report.snapshots_skipped {
            tracing::warn!(shard = i, snapshot = %skipped, "recovery skipped a snapshot whose checksum fails");
        }
        self.reports.push(report);
    }

    fn fail(&mut self, error: OpenError) {
        self.first_error.get_or_insert(error);
    }
}

/// A shard's (or a cluster node's) storage in `path`, on `backend`.
pub fn open_backend(path: &Path, backend: Backend) -> io::Result<Arc<dyn Storage>> {
    #[cfg(target_os = "linux")]
    if backend == Backend::Uring && crate::wal::storage::UringStorage::available() {
        return Ok(Arc::new(crate::wal::storage::UringStorage::new(path)?));
    }
    let _ = backend;
    Ok(Arc::new(FileStorage::new(path)?))
}
