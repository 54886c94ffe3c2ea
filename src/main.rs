//! `harbour`: the switch (`serve`) and small operator commands that drive it
//! over the wire protocol with the Rust client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use harbour::client::{Client, ClientError};
use harbour::config::{self, Config};
use harbour::money::{CURRENCIES, CurrencyIndex, format_minor};
use harbour::protocol::ResultCode;
use harbour::protocol::records::{
    self, ACCOUNT_KIND_CUSTOMER, Account, BalanceKey, CreditLine, Disburse, FINALIZE_POST, FINALIZE_VOID, Finalize,
    LoanResult, Repay, StepUp, TRANSFER_PENDING, Transfer, TransferResult,
};

#[global_allocator]
static ALLOCATOR: harbour::alloc::HugePageAlloc = harbour::alloc::HugePageAlloc;

#[derive(Parser)]
#[command(name = "harbour", version, about = "Payment and transfer switch for Hong Kong virtual banks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the switch.
    Serve(ServeArgs),
    /// Check the switch answers.
    Ping(Conn),
    /// Accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Submit one transfer.
    Transfer(TransferArgs),
    /// Show an account's balances.
    Balance(BalanceArgs),
    /// Post or void a PENDING transfer's client hold.
    Finalize(FinalizeArgs),
    /// Show a transfer.
    Lookup(LookupArgs),
    /// Set a customer rate (a TREASURY's).
    Rate(RateArgs),
    /// Lock a rate for one transfer.
    Quote(QuoteArgs),
    /// Report a FACE or SMS_OTP verification's outcome for a held transfer.
    StepUp(StepUpArgs),
    /// Resolve a MANUAL_REVIEW hold (an OPERATOR's).
    Review(ReviewArgs),
    /// Cancel a PENDING transfer at the customer's request.
    Cancel(LookupArgs),
    /// Export a month's Suspicious Transaction Report (a REPORTING channel's).
    Str(StrArgs),
    /// Check a data directory without changing it: the settings record and
    /// its copies, each shard's segments, snapshots and durable mark, and
    /// whether a start would refuse it or repair it (exit 1 if refused).
    Check {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: std::path::PathBuf,
        /// The node's configuration (a cluster node's books are replayed
        /// with its capacities and settings; the defaults otherwise).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A live view of the switch's metrics, refreshed every second.
    Top {
        /// The metrics endpoint.
        #[arg(long, default_value = "127.0.0.1:9464")]
        metrics: SocketAddr,
        /// Print one screen and exit.
        #[arg(long)]
        once: bool,
        /// The endpoint's `user:password` (its metrics_auth).
        #[arg(long, env = "HARBOUR_METRICS_AUTH", hide_env_values = true)]
        metrics_auth: Option<String>,
    },
    /// Set an account's credit line in a currency (a LENDING channel's).
    CreditLine(CreditLineArgs),
    /// Loans: disburse, repay, show.
    Loan {
        #[command(subcommand)]
        command: LoanCommand,
    },
    /// A cluster's nodes: status, and adding or removing one (an
    /// OPERATOR's; docs/cluster.md).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Copy a running cluster node's books, consistent at one log entry,
    /// into a new data directory (an OPERATOR's). Payments pause only
    /// while the books are copied in memory.
    Backup {
        /// The directory to create (it must not hold data).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the audit trail of administrative acts (docs/security.md) as
    /// JSON lines, from a node's data directory.
    Audit {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// From this moment: YYYY-MM-DD (UTC) or Unix milliseconds.
        #[arg(long, default_value = "0")]
        from: String,
        /// Up to this moment, inclusive: YYYY-MM-DD (the whole day) or Unix ms.
        #[arg(long)]
        to: Option<String>,
    },
    /// Make the switch read its configuration file again and replace its
    /// channels (keys, roles, limits), as SIGHUP does (an OPERATOR's).
    Reload(Conn),
    /// Certificates for TLS (docs/security.md).
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// A development CA, the switch's certificate and key, and a
    /// certificate and key per channel (named `channel-<id>.harbour`), as
    /// PEM files in a new directory. For tests and a first look, never for
    /// production: the CA's key sits beside the certificates.
    Dev {
        /// The directory to write (its files must not exist).
        #[arg(long)]
        out: PathBuf,
        /// The switch's names (DNS names or IP addresses).
        #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        names: Vec<String>,
        /// The channels to make certificates for.
        #[arg(long = "channel", default_values_t = [1u32])]
        channels: Vec<u32>,
        /// Cluster nodes to make peer certificates for (named
        /// `node-<id>.harbour`; `[cluster.tls]`).
        #[arg(long = "node")]
        nodes: Vec<u64>,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Every node's view: role, term, leader, last log, commit and apply
    /// indexes, and each follower's lag behind the leader. Name every node
    /// with --addr.
    Status(Conn),
    /// Add a node: it catches up as a learner, then votes. Start it first
    /// with `join = true` in its [cluster] section.
    Add {
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// Where channels reach it (host:port).
        #[arg(long)]
        channel: String,
        /// Where the other nodes reach it (host:port).
        #[arg(long)]
        peer: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a voting node (replace one: add the new node, then remove
    /// the old).
    Remove {
        /// The node's id.
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args)]
struct CreditLineArgs {
    /// Account id.
    #[arg(long)]
    account: u64,
    #[arg(long, default_value = "HKD")]
    currency: String,
    /// Most principal outstanding, in major units.
    #[arg(long)]
    limit: String,
    /// APR in percent, at most two decimals (10.5 = 1050 bps; at most 48).
    #[arg(long)]
    apr: String,
    /// Draw micro-loans automatically for AUTO_CREDIT payments, each up to
    /// this much (major units).
    #[arg(long)]
    micro_max: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Subcommand)]
enum LoanCommand {
    /// Pay out a loan within the account's line.
    Disburse {
        /// Loan id (the idempotency key; shares its space with transfer ids).
        #[arg(long)]
        id: u128,
        /// The borrowing account (its credit line in --currency).
        #[arg(long)]
        account: u64,
        /// Principal in major units.
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        #[arg(long, default_value = "HKD")]
        currency: String,
        /// Term in days (sets the due date only).
        #[arg(long, default_value_t = 30)]
        term_days: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Repay a loan from its account: interest first, then principal.
    Repay {
        /// Repayment id (the idempotency key).
        #[arg(long)]
        id: u128,
        /// The loan's id (as given to `loan disburse --id`).
        #[arg(long)]
        loan: u128,
        /// Amount in the loan's major units.
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        /// The loan's currency (for parsing the amount).
        #[arg(long, default_value = "HKD")]
        currency: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a loan: principal and interest outstanding, APR and EAR.
    Show {
        /// The loan's id.
        #[arg(long)]
        id: u128,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args)]
struct StepUpArgs {
    /// Transfer id.
    #[arg(long)]
    id: u128,
    /// face or sms.
    #[arg(long)]
    method: String,
    /// The verification failed (default: passed).
    #[arg(long)]
    fail: bool,
    /// The transfer's debit currency, to show its amount.
    #[arg(long, default_value = "HKD")]
    currency: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
struct ReviewArgs {
    /// Transfer id.
    #[arg(long)]
    id: u128,
    /// Void the transfer (default: release it).
    #[arg(long)]
    fail: bool,
    /// The transfer's debit currency, to show its amount.
    #[arg(long, default_value = "HKD")]
    currency: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
struct StrArgs {
    /// The Hong Kong calendar month, YYYY-MM.
    #[arg(long)]
    month: String,
    /// xml or csv.
    #[arg(long, default_value = "xml")]
    format: String,
    /// Save the report here (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also POST it to the intelligence unit's endpoint (http://host:port/path).
    #[arg(long)]
    submit: Option<String>,
    /// Cases asked per page: the report comes a page at a time, so a month
    /// of millions of cases never sits in memory whole (1..=100000).
    #[arg(long, default_value_t = 20_000)]
    page_cases: u32,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
struct RateArgs {
    /// From currency (alphabetic or numeric).
    #[arg(long)]
    from: String,
    /// To currency.
    #[arg(long)]
    to: String,
    /// `to` per `from`, an exact decimal of at most nine places (7.78).
    #[arg(long)]
    rate: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
struct QuoteArgs {
    /// Debit currency.
    #[arg(long)]
    from: String,
    /// Credit currency.
    #[arg(long)]
    to: String,
    /// Amount in major units.
    #[arg(long, allow_hyphen_values = true)]
    amount: String,
    /// The amount is what the credit side receives.
    #[arg(long)]
    credit_side: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Each flag overrides the configuration file, which overrides the
/// embedded defaults (shown).
#[derive(Args)]
struct ServeArgs {
    /// Data directory [default: ./data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Channel address [default: 127.0.0.1:7400].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Metrics address (HTTP, Prometheus text), or "off" [default: 127.0.0.1:9464].
    #[arg(long)]
    metrics: Option<String>,
    /// Clock: system, or manual (SET_TIME moves it; tests) [default: system].
    #[arg(long)]
    clock: Option<String>,
    /// Configuration file (TOML; docs/operations.md) [default: none, the embedded defaults].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of shards (recorded in the data directory) [default: 1].
    #[arg(long)]
    shards: Option<usize>,
    /// Log the whole timeline of one request in N (target harbour::trace)
    /// [default: 0, none].
    #[arg(long, value_name = "N")]
    trace_sample: Option<u64>,
    /// Record every request the switch takes to this traffic file, for
    /// `harbour-loadtest replay`.
    #[arg(long)]
    record: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct Conn {
    /// The switch's channel address; for a cluster, any node's (repeat
    /// --addr to name several: a node that is down is skipped, and one
    /// that does not lead sends the command on to the leader).
    #[arg(long, env = "HARBOUR_ADDR", value_delimiter = ',', default_value = "127.0.0.1:7400")]
    addr: Vec<SocketAddr>,
    /// Channel id.
    #[arg(long, default_value_t = 1)]
    channel: u32,
    /// Channel key (or HARBOUR_KEY).
    #[arg(long, env = "HARBOUR_KEY", default_value = "hksw-dev-key", hide_env_values = true)]
    key: String,
    /// TLS 1.3: the CA that signs the switch's certificate (with
    /// --tls-cert and --tls-key: the channel's certificate and key).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The name the switch's certificate carries.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// Print the answer as one JSON line, with raw values (amounts in minor
    /// units, times in Unix ms) for scripts.
    #[arg(long)]
    json: bool,
}

impl Conn {
    /// How to reach the switch: its nodes, over TLS if asked.
    fn failover(&self) -> Result<harbour::client::Failover, String> {
        let mut failover = harbour::client::Failover::new(self.addr.clone(), self.channel, self.key.as_bytes());
        if let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            failover.tls = Some(harbour::client::Tls::from_pem_files(ca, cert, key, &self.tls_name)?);
        }
        Ok(failover)
    }
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create a customer account.
    Create {
        /// Account id (1024 or more).
        #[arg(long)]
        id: u64,
        /// Home country, ISO 3166-1 numeric (Hong Kong 344).
        #[arg(long, default_value_t = 344)]
        country: u16,
        /// The channel's customer reference.
        #[arg(long = "ref", default_value_t = 0)]
        customer_ref: u64,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args)]
struct TransferArgs {
    /// Transfer id (the idempotency key; resend with the same id).
    #[arg(long)]
    id: u128,
    /// Debit account (4 = SETTLEMENT_IN, for deposits).
    #[arg(long)]
    from: u64,
    /// Credit account (3 = REMITTANCE_OUT, for payments leaving the bank).
    #[arg(long)]
    to: u64,
    /// Amount in major units, e.g. 100.50.
    #[arg(long, allow_hyphen_values = true)]
    amount: String,
    /// Currency, alphabetic (HKD) or numeric (344).
    #[arg(long, default_value = "HKD")]
    currency: String,
    /// Credit currency, for a conversion (default: the same).
    #[arg(long)]
    to_currency: Option<String>,
    /// The amount is in the credit currency.
    #[arg(long)]
    credit_side: bool,
    /// A quote from `harbour quote` that locks the rate.
    #[arg(long, default_value_t = 0)]
    quote: u64,
    /// Destination country for a remittance (ISO 3166-1 numeric).
    #[arg(long, default_value_t = 0)]
    country: u16,
    /// Hold the transfer until `harbour finalize`.
    #[arg(long)]
    pending: bool,
    /// Cover a shortfall with a micro-loan from the account's credit line.
    #[arg(long)]
    auto_credit: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
struct BalanceArgs {
    /// Account id.
    #[arg(long)]
    account: u64,
    /// Only this currency (default: every currency with money in it).
    #[arg(long)]
    currency: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
struct FinalizeArgs {
    /// Transfer id.
    #[arg(long)]
    id: u128,
    /// Void instead of post.
    #[arg(long)]
    void: bool,
    /// The transfer's debit currency, to show its amount (the answer does
    /// not name it).
    #[arg(long, default_value = "HKD")]
    currency: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
struct LookupArgs {
    /// Transfer id.
    #[arg(long)]
    id: u128,
    /// The transfer's debit currency, to show its amount (the answer does
    /// not name it).
    #[arg(long, default_value = "HKD")]
    currency: String,
    #[command(flatten)]
    conn: Conn,
}

fn main() -> ExitCode {
    // A panic anywhere (a shard's broken invariant) must stop the whole
    // switch, not one thread of it: recovery restarts from the log.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let cli = Cli::parse();
    init_logs();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("harbour: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Ping(conn) => ping(&conn).await,
            Command::Account { command: AccountCommand::Create { id, country, customer_ref, conn } } => {
                create_account(&conn, id, country, customer_ref).await
            }
            Command::Transfer(args) => transfer(args).await,
            Command::Balance(args) => balance(args).await,
            Command::Finalize(args) => finalize(args).await,
            Command::Lookup(args) => lookup(args).await,
            Command::Rate(args) => set_rate(args).await,
            Command::Quote(args) => quote(args).await,
            Command::StepUp(args) => step_up(args).await,
            Command::Review(args) => review(args).await,
            Command::Cancel(args) => cancel(args).await,
            Command::Str(args) => export_str(args).await,
            Command::CreditLine(args) => credit_line(args).await,
            Command::Top { metrics, once, metrics_auth } => {
                let every = std::time::Duration::from_secs(1);
                tokio::task::spawn_blocking(move || harbour::top::run(metrics, metrics_auth.as_deref(), every, once))
                    .await
                    .map_err(|e| e.to_string())?
            }
            Command::Loan { command } => loan(command).await,
            Command::Check { data, config } => check(&data, config.as_deref()),
            Command::Cluster { command } => cluster(command).await,
            Command::Backup { out, conn } => backup(&out, &conn).await,
            Command::Reload(conn) => reload(&conn).await,
            Command::Audit { data, from, to } => audit(&data, &from, to.as_deref()),
            Command::Certs { command: CertsCommand::Dev { out, names, channels, nodes } } => {
                harbour::tls::dev_certs(&out, &names, &channels, &nodes).map(|written| {
                    for path in written {
                        println!("wrote {}", path.display());
                    }
                })
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Empty: the command printed its refusal already, in its line.
            if !message.is_empty() {
                eprintln!("harbour: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `harbour check`: what a start would find in `dir`, changing nothing.
fn check(dir: &std::path::Path, config_file: Option<&std::path::Path>) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    if dir.join(harbour::cluster::node::RAFT_DIR).is_dir() {
        return check_cluster_node(dir, config_file);
    }
    let mut refused = 0;
    match harbour::shard::recorded_meta(dir) {
        Ok(Some(settings)) => {
            let summary: Vec<&str> = settings.lines().take(2).collect();
            let restored =
                if dir.join("META").exists() { "" } else { " (META missing: a start restores it from the copies)" };
            println!("{}: settings recorded: {}{restored}", dir.display(), summary.join(", "));
        }
        Ok(None) => println!("{}: no settings recorded and no data: a new directory", dir.display()),
        Err(e) => {
            refused += 1;
            println!("{}: REFUSED: {e}", dir.display());
        }
    }
    let shards = harbour::shard::shard_dirs(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for shard in &shards {
        let storage =
            harbour::wal::storage::FileStorage::new(shard).map_err(|e| format!("{}: {e}", shard.display()))?;
        let found = harbour::wal::inspect(&storage).map_err(|e| e.to_string())?;
        let first = found.segments.first().map(|s| s.first_lsn);
        let last = found.segments.iter().rev().find_map(|s| s.last_lsn);
        println!(
            "{}: {} segments, LSN {}..{}, {} snapshots (newest at LSN {}), durable mark {}",
            shard.display(),
            found.segments.len(),
            first.map_or("-".into(), |l| l.to_string()),
            last.map_or("-".into(), |l| l.to_string()),
            found.snapshots.len(),
            found.snapshots.last().map_or("-".into(), |s| s.1.to_string()),
            found.mark.map_or("none".into(), |m| m.to_string()),
        );
        for s in &found.segments {
            let range = s.last_lsn.map_or_else(|| "no records".to_string(), |l| format!("LSN {}..{l}", s.first_lsn));
            println!("  {}: {range} ({} records)", s.name, s.records);
        }
        for r in &found.repaired {
            println!("  a start repairs: {r}");
        }
        for r in &found.refused {
            refused += 1;
            println!("  REFUSED: {r}");
        }
    }
    if refused > 0 {
        return Err(format!(
            "a start would be refused ({refused} problems); see docs/operations.md, \"Data directory\""
        ));
    }
    println!("a start would succeed");
    Ok(())
}

/// Operators' logs on stderr, plain text, at the level `HARBOUR_LOG`
/// names (error, warn, info, debug, trace; default info).
fn init_logs() {
    let level = std::env::var("HARBOUR_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    // openraft reports every election and membership step at INFO: at
    // the switch's INFO only its warnings show (HARBOUR_LOG=debug shows
    // them all).
    let quiet = level < tracing::Level::DEBUG;
    let filter = tracing_subscriber::filter::filter_fn(move |m| {
        *m.level() <= level && !(quiet && m.target().starts_with("openraft") && *m.level() > tracing::Level::WARN)
    });
    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).with_filter(filter))
        .init();
}

/// `harbour check` of a stopped cluster node's data directory: its books
/// replayed from the snapshot and the committed log (it cuts a torn tail
/// of the log, as a start would).
fn check_cluster_node(dir: &std::path::Path, config_file: Option<&std::path::Path>) -> Result<(), String> {
    let mut config = Config::default();
    if let Some(path) = config_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        config.merge_toml(&text).map_err(|e| e.to_string())?;
    }
    let replayed =
        harbour::cluster::node::replay(dir, &config.switch).map_err(|e| format!("{}: {e}", dir.display()))?;
    let hash: String = replayed.hashes.iter().flatten().take(16).map(|b| format!("{b:02x}")).collect();
    println!(
        "{}: a cluster node's data: books at log entry {}, state hash {hash}",
        dir.display(),
        replayed.applied.map_or(0, |a| a.index())
    );
    let mut failed = 0;
    for (shard, audit) in replayed.audits.iter().enumerate() {
        match audit {
            Ok(()) => println!("  shard {shard}: audit clean"),
            Err(e) => {
                failed += 1;
                println!("  shard {shard}: audit fails: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} shard(s) fail their audit: a start would refuse this directory"));
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    if let Some(delay) = harbour::wal::storage::failpoint_sync_delay() {
        tracing::warn!(
            delay_us = delay.as_micros() as u64,
            "HARBOUR_FAILPOINT_SYNC_DELAY_US: every fsync is slowed (a torture run)"
        );
    }
    for hint in harbour::host::latency_hints() {
        tracing::info!("latency: {hint}");
    }
    let args = std::sync::Arc::new(args);
    let config = serve_config(&args)?;
    // Handlers are in place before the line a supervisor waits for.
    let signals = signal_handlers().map_err(|e| format!("signal handlers: {e}"))?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("signal handlers: {e}"))?;
    let mut running = harbour::server::start(&config).await.map_err(|e| e.to_string())?;
    // Only a configuration file is read again: the embedded defaults have
    // nothing to reload (RELOAD_CHANNELS answers so).
    if args.config.is_some() {
        let source = std::sync::Arc::clone(&args);
        running.set_loader(std::sync::Arc::new(move || serve_config(&source)));
    }
    harbour::alloc::trim_when_idle(|| {
        harbour::metrics::METRICS.requests_total.load(std::sync::atomic::Ordering::Relaxed)
    });
    println!("listening on {}", running.addr);
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let stop = wait_for_signal(signals);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = hangup.recv() => {
                // SIGHUP: the channels (keys, roles, limits) are read again
                // from the configuration file; a bad file changes nothing.
                match running.reload() {
                    Ok(channels) => tracing::info!(channels, "SIGHUP: channels reloaded"),
                    Err(e) => tracing::warn!(error = %e, "SIGHUP: reload refused; the running channels stay"),
                }
            }
            failed = running.stopped() => {
                // A shard's log failed: exit without syncing or answering
                // more, and let the restart recover from disk.
                let why = failed.err().map_or_else(|| "server stopped".to_string(), |e| e.to_string());
                tracing::error!(error = %why, "stopping at once; the next start recovers from the log");
                std::process::exit(1);
            }
        }
    }
    running.stop().await.map_err(|e| e.to_string())
}

/// `serve`'s configuration: the file, then the command line's settings.
fn serve_config(args: &ServeArgs) -> Result<Config, String> {
    let mut config = Config::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        config.merge_toml(&text).map_err(|e| e.to_string())?;
    }
    if let Some(v) = &args.data {
        config.data.clone_from(v);
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = &args.metrics {
        config.metrics = if v == "off" { None } else { Some(v.parse().map_err(|_| format!("--metrics {v:?}"))?) };
    }
    if let Some(v) = &args.clock {
        config.switch.clock = config::parse_clock(v).map_err(|e| e.to_string())?;
    }
    if let Some(v) = args.trace_sample {
        config.trace_sample = v;
    }
    if let Some(v) = args.shards {
        config.switch.shards = v;
    }
    config.record.clone_from(&args.record);
    Ok(config)
}

type Signals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

fn signal_handlers() -> std::io::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
}

async fn wait_for_signal((mut term, mut interrupt): Signals) {
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// A connection to the switch, or to a cluster's leader: a read that only
/// the leader answers finds it (a node that does not lead names it in its
/// NOT_LEADER refusal), so every command follows a redirect.
async fn connect(conn: &Conn) -> Result<Client, String> {
    let named = |e: ClientError| {
        let nodes: Vec<String> = conn.addr.iter().map(ToString::to_string).collect();
        let refused = matches!(&e, ClientError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
            || e.to_string().contains("Connection refused");
        let hint = if refused {
            "\n  is the switch running? Start it with `cargo run --release -- serve` (or name another with --addr)"
        } else {
            ""
        };
        format!("{}: {e}{hint}", nodes.join(", "))
    };
    let mut failover = conn.failover()?;
    // One node: its own error at once (not running, wrong key); several:
    // a few seconds for an election.
    failover.deadline = std::time::Duration::from_secs(if conn.addr.len() > 1 { 10 } else { 0 });
    let mut client = failover.connect().await.map_err(named)?;
    let probe = harbour::protocol::records::encode_all(&[harbour::protocol::records::BalanceKey {
        account_id: harbour::engine::book::SETTLEMENT_IN,
        currency: 344,
    }]);
    failover.request(&mut client, harbour::protocol::kind::LOOKUP_BALANCES, 1, &probe).await.map_err(named)?;
    Ok(client)
}

fn err(e: ClientError) -> String {
    e.to_string()
}

fn code_name(code: u16) -> String {
    ResultCode::from_u16(code).map_or_else(|| format!("code {code}"), |c| c.name().to_string())
}

async fn ping(conn: &Conn) -> Result<(), String> {
    let client = connect(conn).await?;
    let start = std::time::Instant::now();
    client.ping().await.map_err(err)?;
    let limits = client.limits();
    println!(
        "pong from {} in {:?} (roles {:#x}, max_batch {}, max_in_flight {}, server time {})",
        conn.addr.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        start.elapsed(),
        limits.roles,
        limits.max_batch,
        limits.max_in_flight,
        harbour::show::hk_time(limits.server_time_ms)
    );
    Ok(())
}

async fn create_account(conn: &Conn, id: u64, country: u16, customer_ref: u64) -> Result<(), String> {
    let client = connect(conn).await?;
    let account =
        Account { account_id: id, kind: ACCOUNT_KIND_CUSTOMER, flags: 0, home_country: country, customer_ref };
    let result = client.create_accounts(&[account]).await.map_err(err)?;
    let code = result.first().map_or(u16::MAX, |r| r.code);
    if code == 0 || code == ResultCode::AlreadyExists.as_u16() {
        println!("account {id}: {}", code_name(code));
        return Ok(());
    }
    println!("account {id}: refused {}", harbour::show::refusal(code));
    Err(String::new())
}

fn currency(text: &str) -> Result<CurrencyIndex, String> {
    let found = match text.parse::<u16>() {
        Ok(code) => CurrencyIndex::of(code),
        Err(_) => CURRENCIES
            .iter()
            .position(|c| c.alpha.eq_ignore_ascii_case(text))
            .and_then(|i| CurrencyIndex::of(CURRENCIES[i].code)),
    };
    found.ok_or_else(|| format!("unknown currency {text:?}"))
}

/// Parses "123.45" in a currency's major units into minor units, exactly.
fn parse_amount(text: &str, currency: CurrencyIndex) -> Result<u64, String> {
    let cur = currency.currency();
    let digits = u32::from(cur.minor_units);
    if text.starts_with('-') {
        return Err(format!("amount {text:?}: amounts are positive (the direction is --from and --to)"));
    }
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit() || c == '.') || text.matches('.').count() > 1 {
        return Err(format!("amount {text:?}: write digits and at most one '.', without separators (e.g. 1000.50)"));
    }
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(format!("amount {text:?}: no digits"));
    }
    if frac.len() > digits as usize {
        return Err(match digits {
            0 => format!("amount {text:?}: {} has no minor units, give a whole amount", cur.alpha),
            n => format!("amount {text:?}: {} takes at most {n} decimals", cur.alpha),
        });
    }
    let parse =
        |s: &str| if s.is_empty() { Ok(0) } else { s.parse::<u64>().map_err(|_| format!("amount {text:?} too large")) };
    let frac_value = parse(frac)? * 10u64.pow(digits - frac.len() as u32);
    parse(whole)?
        .checked_mul(10u64.pow(digits))
        .and_then(|w| w.checked_add(frac_value))
        .ok_or_else(|| format!("amount {text:?} too large"))
}

/// The one line (or, with `--json`, the JSON) of a transfer's answer;
/// `Err("")` for a refusal, which the line has said.
fn show_transfer(r: &TransferResult, currency: CurrencyIndex, json: bool) -> Result<(), String> {
    use harbour::show;
    let state = ["NONE", "POSTED", "PENDING", "VOIDED"].get(r.state as usize).copied().unwrap_or("?");
    let refused = r.code != 0 && r.code != ResultCode::AlreadyExists.as_u16();
    let cur = currency.currency();
    let money = |minor: u64| format!("{} {}", format_minor(i128::from(minor), cur), cur.alpha);
    if json {
        let value = serde_json::json!({
            "transfer_id": r.transfer_id,
            "code": code_name(r.code),
            "state": state,
            "holds": show::hold_names(r.holds).collect::<Vec<_>>(),
            "hold_until_ms": r.hold_until_ms,
            "hold_until": (r.hold_until_ms != 0).then(|| show::hk_time(r.hold_until_ms)),
            "debit_amount": r.debit_amount,
            "credit_amount": r.credit_amount,
            "rate_e9": r.rate_e9,
            "auto_credit_amount": r.auto_credit_amount,
        });
        println!("{value}");
        return if refused { Err(String::new()) } else { Ok(()) };
    }
    let mut line = format!("transfer {}: ", r.transfer_id);
    if refused {
        line += &format!("refused {}", show::refusal(r.code));
        if r.state != records::STATE_NONE {
            line += &format!(" (it is {state})");
        }
        println!("{line}");
        return Err(String::new());
    }
    if r.code == ResultCode::AlreadyExists.as_u16() {
        line += "ALREADY_EXISTS (nothing moved again), ";
    }
    line += state;
    if r.state != records::STATE_NONE {
        line += &format!(" {}", money(r.debit_amount));
    }
    if r.state == records::STATE_PENDING {
        line += &format!(", held for {}", show::holds(r.holds));
        if r.hold_until_ms != 0 {
            line += &format!(" until {}", show::hk_time(r.hold_until_ms));
        }
        line += &format!(" ({})", show::release(r.holds, r.transfer_id));
    }
    if r.auto_credit_amount > 0 {
        line += &format!(", micro-loan {}", money(r.auto_credit_amount));
    }
    println!("{line}");
    Ok(())
}

async fn transfer(args: TransferArgs) -> Result<(), String> {
    let cur = currency(&args.currency)?;
    let to_cur = match &args.to_currency {
        Some(c) => currency(c)?,
        None => cur,
    };
    let amount = parse_amount(&args.amount, if args.credit_side { to_cur } else { cur })?;
    let client = connect(&args.conn).await?;
    let mut flags = if args.pending { TRANSFER_PENDING } else { 0 };
    if args.auto_credit {
        flags |= records::TRANSFER_AUTO_CREDIT;
    }
    if args.credit_side {
        flags |= records::TRANSFER_AMOUNT_IN_CREDIT_CURRENCY;
    }
    let t = Transfer {
        transfer_id: args.id,
        debit_account: args.from,
        credit_account: args.to,
        amount,
        debit_currency: cur.code(),
        credit_currency: to_cur.code(),
        destination_country: args.country,
        flags,
        fx_quote_id: args.quote,
        ..Transfer::default()
    };
    let r = client.submit_transfers(&[t]).await.map_err(err)?;
    let r = r.first().ok_or("no answer")?;
    let shown = show_transfer(r, cur, args.conn.json);
    if cur != to_cur && r.state != records::STATE_NONE && !args.conn.json {
        println!(
            "  credited {} {} at {}",
            format_minor(i128::from(r.credit_amount), to_cur.currency()),
            to_cur.currency().alpha,
            harbour::fx::format_rate(r.rate_e9)
        );
    }
    shown
}

async fn balance(args: BalanceArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let wanted: Vec<CurrencyIndex> = match &args.currency {
        Some(c) => vec![currency(c)?],
        None => CURRENCIES.iter().filter_map(|c| CurrencyIndex::of(c.code)).collect(),
    };
    let keys: Vec<BalanceKey> =
        wanted.iter().map(|c| BalanceKey { account_id: args.account, currency: c.code() }).collect();
    let balances = client.lookup_balances(&keys).await.map_err(err)?;
    if let Some(b) = balances.iter().find(|b| b.code != 0) {
        return Err(format!("account {}: {}", args.account, harbour::show::refusal(b.code)));
    }
    if args.conn.json {
        let shown: Vec<serde_json::Value> = balances
            .iter()
            .zip(&wanted)
            .filter(|(b, _)| args.currency.is_some() || b.balance != 0 || b.held != 0 || b.loans_outstanding != 0)
            .map(|(b, c)| {
                serde_json::json!({
                    "currency": c.currency().alpha,
                    "balance": b.balance,
                    "held": b.held,
                    "loans_outstanding": b.loans_outstanding,
                    "credit_available": b.credit_available,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "account": args.account, "balances": shown }));
        return Ok(());
    }
    println!("account {}", args.account);
    let mut shown = 0;
    for (b, c) in balances.iter().zip(&wanted) {
        let lending = b.credit_available != 0 || b.loans_outstanding != 0;
        if args.currency.is_some() || b.balance != 0 || b.held != 0 || lending {
            let cur = c.currency();
            print!(
                "  {}  balance {:>20}  held {:>16}",
                cur.alpha,
                format_minor(i128::from(b.balance), cur),
                format_minor(i128::from(b.held), cur)
            );
            if lending {
                print!(
                    "  loans {:>16}  credit available {:>16}",
                    format_minor(i128::from(b.loans_outstanding), cur),
                    format_minor(i128::from(b.credit_available), cur)
                );
            }
            println!();
            shown += 1;
        }
    }
    if shown == 0 {
        println!("  (no money in any currency)");
    }
    Ok(())
}

async fn set_rate(args: RateArgs) -> Result<(), String> {
    let (from, to) = (currency(&args.from)?, currency(&args.to)?);
    let rate_e9 = harbour::fx::parse_rate(&args.rate)?;
    let client = connect(&args.conn).await?;
    let r = client.set_fx_rates(&[records::FxRate { from: from.code(), to: to.code(), rate_e9 }]).await.map_err(err)?;
    let code = r.first().map_or(u16::MAX, |r| r.code);
    if code != 0 {
        println!("rate {} -> {}: refused {}", from.currency().alpha, to.currency().alpha, harbour::show::refusal(code));
        return Err(String::new());
    }
    println!("rate {} -> {}: {} (OK)", from.currency().alpha, to.currency().alpha, args.rate);
    Ok(())
}

async fn quote(args: QuoteArgs) -> Result<(), String> {
    let (from, to) = (currency(&args.from)?, currency(&args.to)?);
    let amount = parse_amount(&args.amount, if args.credit_side { to } else { from })?;
    let flags = if args.credit_side { records::QUOTE_AMOUNT_IN_CREDIT_CURRENCY } else { 0 };
    let client = connect(&args.conn).await?;
    let q = client
        .fx_quote(&[records::QuoteRequest { from: from.code(), to: to.code(), flags, amount }])
        .await
        .map_err(err)?;
    let q = q.first().ok_or("no answer")?;
    if q.code != 0 {
        return Err(harbour::show::refusal(q.code));
    }
    if args.conn.json {
        let value = serde_json::json!({
            "quote_id": q.quote_id,
            "debit_amount": q.debit_amount,
            "credit_amount": q.credit_amount,
            "rate_e9": q.rate_e9,
            "expires_at_ms": q.expires_at_ms,
            "expires_at": harbour::show::hk_time(q.expires_at_ms),
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "quote {}: {} {} -> {} {} at {}, good until {}",
        q.quote_id,
        format_minor(i128::from(q.debit_amount), from.currency()),
        from.currency().alpha,
        format_minor(i128::from(q.credit_amount), to.currency()),
        to.currency().alpha,
        harbour::fx::format_rate(q.rate_e9),
        harbour::show::hk_time(q.expires_at_ms)
    );
    Ok(())
}

async fn finalize(args: FinalizeArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let action = if args.void { FINALIZE_VOID } else { FINALIZE_POST };
    let r = client.finalize_pending(&[Finalize { transfer_id: args.id, action }]).await.map_err(err)?;
    finish_transfer(r.first(), &args.currency, args.conn.json)
}

async fn lookup(args: LookupArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let r = client.lookup_transfers(&[args.id]).await.map_err(err)?;
    finish_transfer(r.first(), &args.currency, args.conn.json)
}

async fn step_up(args: StepUpArgs) -> Result<(), String> {
    let method = match args.method.to_ascii_lowercase().as_str() {
        "face" => records::METHOD_FACE,
        "sms" | "sms_otp" => records::METHOD_SMS_OTP,
        other => return Err(format!("method must be face or sms, not {other:?}")),
    };
    let outcome = if args.fail { records::OUTCOME_FAIL } else { records::OUTCOME_PASS };
    let client = connect(&args.conn).await?;
    let r = client.confirm_step_up(&[StepUp { transfer_id: args.id, method, outcome }]).await.map_err(err)?;
    finish_transfer(r.first(), &args.currency, args.conn.json)
}

async fn review(args: ReviewArgs) -> Result<(), String> {
    let outcome = if args.fail { records::OUTCOME_FAIL } else { records::OUTCOME_PASS };
    let client = connect(&args.conn).await?;
    let step = StepUp { transfer_id: args.id, method: records::METHOD_MANUAL_REVIEW, outcome };
    let r = client.resolve_review(&[step]).await.map_err(err)?;
    finish_transfer(r.first(), &args.currency, args.conn.json)
}

async fn cancel(args: LookupArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let r = client.cancel_transfers(&[args.id]).await.map_err(err)?;
    finish_transfer(r.first(), &args.currency, args.conn.json)
}

/// A transfer's answer to a command on an existing transfer, its amount
/// in `currency` (the answer does not name its currency).
fn finish_transfer(r: Option<&TransferResult>, currency: &str, json: bool) -> Result<(), String> {
    let currency = self::currency(currency)?;
    show_transfer(r.ok_or("no answer")?, currency, json)
}

/// Parses an APR in percent with at most two decimals into basis points.
fn parse_apr(text: &str) -> Result<u32, String> {
    let bps = parse_amount(text, CurrencyIndex::HKD).map_err(|_| format!("APR {text:?}: a percentage like 10.5"))?;
    u32::try_from(bps).map_err(|_| format!("APR {text:?} is too large"))
}

async fn credit_line(args: CreditLineArgs) -> Result<(), String> {
    let cur = currency(&args.currency)?;
    let line = CreditLine {
        account_id: args.account,
        currency: cur.code(),
        flags: if args.micro_max.is_some() { records::CREDIT_AUTO_MICRO_CREDIT } else { 0 },
        apr_bps: parse_apr(&args.apr)?,
        limit: parse_amount(&args.limit, cur)?,
        micro_credit_max: args.micro_max.as_deref().map(|m| parse_amount(m, cur)).transpose()?.unwrap_or(0),
    };
    let client = connect(&args.conn).await?;
    let r = client.set_credit_lines(&[line]).await.map_err(err)?;
    let code = r.first().map_or(u16::MAX, |r| r.code);
    if code != 0 {
        println!(
            "credit line of {} in {}: refused {}",
            args.account,
            cur.currency().alpha,
            harbour::show::refusal(code)
        );
        return Err(String::new());
    }
    println!("credit line of {} in {}: OK", args.account, cur.currency().alpha);
    Ok(())
}

fn show_loan(r: &LoanResult) {
    let state = ["NONE", "ACTIVE", "REPAID"].get(r.state as usize).copied().unwrap_or("?");
    let again =
        if r.code == ResultCode::AlreadyExists.as_u16() { "ALREADY_EXISTS (nothing moved again), " } else { "" };
    print!("loan {}: {again}{state}", r.loan_id);
    if r.state != 0 {
        let cur = CurrencyIndex::of(r.currency).unwrap_or(CurrencyIndex::HKD).currency();
        let percent = |bps: u32| format_minor(i128::from(bps), CurrencyIndex::HKD.currency());
        print!(
            " account {} principal {} interest {} {} APR {}% EAR {}%",
            r.account_id,
            format_minor(i128::from(r.principal_outstanding), cur),
            format_minor(i128::from(r.interest_accrued), cur),
            cur.alpha,
            percent(r.apr_bps),
            percent(r.ear_bps)
        );
    }
    println!();
}

async fn loan(command: LoanCommand) -> Result<(), String> {
    let answers = match command {
        LoanCommand::Disburse { id, account, amount, currency: c, term_days, conn } => {
            let cur = currency(&c)?;
            let principal = parse_amount(&amount, cur)?;
            let d = Disburse { loan_id: id, account_id: account, currency: cur.code(), term_days, principal };
            connect(&conn).await?.disburse_loans(&[d]).await
        }
        LoanCommand::Repay { id, loan, amount, currency: c, conn } => {
            let r = Repay { repayment_id: id, loan_id: loan, amount: parse_amount(&amount, currency(&c)?)? };
            connect(&conn).await?.repay_loans(&[r]).await
        }
        LoanCommand::Show { id, conn } => connect(&conn).await?.lookup_loans(&[id]).await,
    };
    let answers = answers.map_err(err)?;
    let r = answers.first().ok_or("no answer")?;
    if r.code != 0 && r.code != ResultCode::AlreadyExists.as_u16() {
        println!("loan {}: refused {}", r.loan_id, harbour::show::refusal(r.code));
        return Err(String::new());
    }
    show_loan(r);
    Ok(())
}

/// Parses `YYYY-MM`.
fn parse_month(text: &str) -> Result<(u16, u8), String> {
    let bad = || format!("month {text:?} is not YYYY-MM");
    let (y, m) = text.split_once('-').ok_or_else(bad)?;
    let year: u16 = y.parse().map_err(|_| bad())?;
    let month: u8 = m.parse().map_err(|_| bad())?;
    if y.len() != 4 || m.len() != 2 || !(1..=12).contains(&month) {
        return Err(bad());
    }
    Ok((year, month))
}

async fn export_str(args: StrArgs) -> Result<(), String> {
    let (year, month) = parse_month(&args.month)?;
    let (format, content_type) = match args.format.to_ascii_lowercase().as_str() {
        "xml" => (harbour::aml::report::FORMAT_XML, "application/xml"),
        "csv" => (harbour::aml::report::FORMAT_CSV, "text/csv"),
        other => return Err(format!("format must be xml or csv, not {other:?}")),
    };
    if !(1..=harbour::protocol::records::STR_PAGE_LIMIT_MAX).contains(&args.page_cases) {
        return Err(format!("--page-cases must be 1..={}", harbour::protocol::records::STR_PAGE_LIMIT_MAX));
    }
    // Parse the endpoint before asking for the report: a typo fails fast.
    let endpoint = args.submit.as_deref().map(harbour::http::Endpoint::parse).transpose()?;
    let client = connect(&args.conn).await?;
    // The report goes page by page to where it is kept: a file (complete
    // under its name only once whole), a spool file for the endpoint, or
    // standard output. Neither side holds more than a page.
    let spool = match (&args.out, &endpoint) {
        (Some(path), _) => {
            let mut partial = path.clone().into_os_string();
            partial.push(".partial");
            Some((PathBuf::from(partial), path.clone()))
        }
        (None, Some(_)) => {
            let path = std::env::temp_dir().join(format!("harbour-str-{}.{}", std::process::id(), args.format));
            Some((path.clone(), path))
        }
        (None, None) => None,
    };
    let mut sink: Box<dyn std::io::Write> = match &spool {
        Some((partial, _)) => {
            Box::new(std::io::BufWriter::new(std::fs::File::create(partial).map_err(|e| io_at(partial, e))?))
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let request = harbour::protocol::records::StrPageRequest {
        year,
        month,
        format,
        limit: args.page_cases,
        ..Default::default()
    };
    let written = write_pages(&client, request, &mut sink).await;
    drop(sink);
    let (cases, bytes) = match written {
        Ok(Some(done)) => done,
        done => {
            // Nothing to report, or it failed: no file looks like a report.
            if let Some((partial, _)) = &spool {
                let _ = std::fs::remove_file(partial);
            }
            return done.map(|_| eprintln!("{}: no AML cases; nothing to report", args.month));
        }
    };
    if let Some((partial, path)) = &spool {
        if partial != path {
            std::fs::rename(partial, path).map_err(|e| io_at(path, e))?;
        }
        if args.out.is_some() {
            eprintln!("{}: {cases} cases, {bytes} bytes of report saved to {}", args.month, path.display());
        }
    }
    if let (Some(endpoint), Some((_, path))) = (endpoint, &spool) {
        let mut file = std::fs::File::open(path).map_err(|e| io_at(path, e))?;
        let posted = endpoint.post(content_type, bytes, &mut file, std::time::Duration::from_secs(30));
        if args.out.is_none() {
            let _ = std::fs::remove_file(path);
        }
        let status = posted?;
        eprintln!("{}: submitted to {} ({status})", args.month, args.submit.unwrap_or_default());
    }
    Ok(())
}

/// Asks a report's pages in turn and writes each to `sink`: the report's
/// cases and bytes, or `None` if the month has no case.
async fn write_pages(
    client: &Client,
    mut request: harbour::protocol::records::StrPageRequest,
    sink: &mut dyn std::io::Write,
) -> Result<Option<(u32, u64)>, String> {
    let mut bytes = 0u64;
    loop {
        let (header, page) = client.export_str_page(&request).await.map_err(err)?;
        if header.code == ResultCode::NothingToReport.as_u16() {
            return Ok(None);
        }
        if header.code != 0 {
            return Err(code_name(header.code));
        }
        sink.write_all(&page).map_err(|e| e.to_string())?;
        bytes += page.len() as u64;
        if header.last() {
            sink.flush().map_err(|e| e.to_string())?;
            return Ok(Some((header.cases, bytes)));
        }
        request.as_of_ms = header.as_of_ms;
        (request.after_ms, request.after_id) = (header.next_after_ms, header.next_after_id);
    }
}

/// An I/O error with the file it happened to.
fn io_at(path: &std::path::Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// `harbour cluster ...`.
async fn cluster(command: ClusterCommand) -> Result<(), String> {
    use harbour::protocol::records::{CLUSTER_ADD, CLUSTER_REMOVE, ClusterChange};
    let (conn, change) = match command {
        ClusterCommand::Status(conn) => return cluster_status(&conn).await,
        ClusterCommand::Add { id, channel, peer, conn } => {
            let change =
                ClusterChange::new(id, CLUSTER_ADD, &channel, &peer).ok_or("an address is longer than 64 bytes")?;
            (conn, change)
        }
        ClusterCommand::Remove { id, conn } => (conn, ClusterChange::new(id, CLUSTER_REMOVE, "", "").expect("empty")),
    };
    if !<ClusterChange as harbour::protocol::records::Record>::well_formed(&harbour::protocol::records::encode_all(&[
        change,
    ])) {
        return Err("the node id must be positive and the addresses host:port".into());
    }
    let client = connect(&conn).await?;
    let body = harbour::protocol::records::encode_all(&[change]);
    let answer = client.request(harbour::protocol::kind::CLUSTER_CHANGE, 1, &body).await.map_err(err)?;
    let view: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
    if let Some(e) = view.get("error") {
        return Err(format!("the membership change was refused: {e}"));
    }
    println!("members now: {}", view["members"]);
    Ok(())
}

/// `harbour audit`: the trail's acts in a window, one JSON line each.
fn audit(data: &std::path::Path, from: &str, to: Option<&str>) -> Result<(), String> {
    let from_ms = moment(from, false)?;
    let to_ms = to.map_or(Ok(u64::MAX), |t| moment(t, true))?;
    for act in harbour::audit::read(data, from_ms, to_ms)? {
        println!("{}", serde_json::to_string(&act).map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// A moment as Unix ms: `YYYY-MM-DD` (UTC; its first or, for `end`, last
/// millisecond) or a number of milliseconds.
fn moment(text: &str, end: bool) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let bad = || format!("{text:?}: give YYYY-MM-DD or Unix milliseconds");
    let parts: Vec<i64> = text.split('-').map(|p| p.parse::<i64>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    let [y, m, d] = parts[..] else { return Err(bad()) };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return Err(bad());
    }
    // Days from the civil date (H. Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let start = u64::try_from(days).map_err(|_| bad())? * 86_400_000;
    Ok(if end { start + 86_399_999 } else { start })
}

/// `harbour reload`: RELOAD_CHANNELS, and what the switch said.
async fn reload(conn: &Conn) -> Result<(), String> {
    let client = connect(conn).await?;
    let answer = client.request(harbour::protocol::kind::RELOAD_CHANNELS, 0, &[]).await.map_err(err)?;
    let v: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
    if v["reloaded"] == true {
        println!("reloaded: {} channels", v["channels"]);
        Ok(())
    } else {
        Err(format!("reload refused, nothing changed: {}", v["error"].as_str().unwrap_or("?")))
    }
}

/// `harbour cluster status`: each named node's own view.
async fn cluster_status(conn: &Conn) -> Result<(), String> {
    println!(
        "{:>5} {:>9} {:>6} {:>7} {:>10} {:>10} {:>10} {:>6}",
        "node", "role", "term", "leader", "last log", "committed", "applied", "lag"
    );
    let mut lags = std::collections::BTreeMap::new();
    let mut rows = Vec::new();
    for addr in &conn.addr {
        let mut one = conn.failover()?;
        one.addrs = vec![*addr];
        one.deadline = std::time::Duration::ZERO;
        let asked = async {
            let client = one.connect().await?;
            client.request(harbour::protocol::kind::CLUSTER_STATUS, 0, &[]).await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), asked).await {
            Ok(Ok(answer)) => {
                let v: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
                for r in v["replication"].as_array().into_iter().flatten() {
                    lags.insert(r["node"].as_u64().unwrap_or(0), r["lag"].as_u64().unwrap_or(0));
                }
                rows.push((addr, Some(v), String::new()));
            }
            Ok(Err(e)) => rows.push((addr, None, e.to_string())),
            Err(_) => rows.push((addr, None, "no answer in 5 s".into())),
        }
    }
    for (addr, view, error) in rows {
        let Some(v) = view else {
            println!("{addr}: unreachable: {error}");
            continue;
        };
        let node = v["node"].as_u64().unwrap_or(0);
        let lag = lags.get(&node).map_or_else(|| "-".to_string(), ToString::to_string);
        let n = |key: &str| v[key].as_u64().map_or_else(|| "-".to_string(), |n| n.to_string());
        println!(
            "{node:>5} {:>9} {:>6} {:>7} {:>10} {:>10} {:>10} {lag:>6}   {addr}",
            v["role"].as_str().unwrap_or("?"),
            n("term"),
            n("leader"),
            n("last_log_index"),
            n("committed"),
            n("applied"),
        );
    }
    Ok(())
}

/// `harbour backup --out DIR`.
async fn backup(out: &std::path::Path, conn: &Conn) -> Result<(), String> {
    let client = connect(conn).await?.with_timeout(std::time::Duration::from_secs(600));
    let answer = client.request(harbour::protocol::kind::BACKUP, 0, &[]).await.map_err(err)?;
    let at = harbour::cluster::node::write_backup(out, &answer.body).map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "backup of {} bytes at log entry {} written to {}: copy it into each node's data directory to start from it",
        answer.body.len(),
        at.map_or(0, |a| a.index()),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse() {
        assert_eq!(parse_month("2026-11"), Ok((2026, 11)));
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "2026-00", ""] {
            assert!(parse_month(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_parse_exactly_in_minor_units() {
        let hkd = currency("HKD").unwrap();
        let jpy = currency("392").unwrap();
        let kwd = currency("kwd").unwrap();
        assert_eq!(parse_amount("100.50", hkd), Ok(10_050));
        assert_eq!(parse_amount("0.01", hkd), Ok(1));
        assert_eq!(parse_amount("7", hkd), Ok(700));
        assert_eq!(parse_amount("1234", jpy), Ok(1234));
        assert_eq!(parse_amount("1.234", kwd), Ok(1234));
        assert!(parse_amount("1.234", hkd).is_err(), "three decimals in HKD");
        assert!(parse_amount("1.5", jpy).is_err(), "JPY has no minor unit");
        assert!(parse_amount("-1", hkd).is_err());
        assert!(parse_amount("99999999999999999999", hkd).is_err());
        assert!(currency("XYZ").is_err());
    }
}
