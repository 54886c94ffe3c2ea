//! The async Rust client: connect and authenticate, then typed calls for
//! every kind, pipelined on one connection.
//!
//! Requests get increasing ids; a reader task matches answers to requests by
//! id, so many requests may be in flight at once and answers may arrive in
//! any order. Typed calls split a long slice into batches of the session's
//! `max_batch` and send them all before waiting. Every call has a timeout.
//! Backpressure: at most `max_in_flight` requests are outstanding (a
//! semaphore); further calls wait for a slot rather than being refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::frame::{self, ErrorCode, RESPONSE_BIT};
use crate::kind;
use crate::records::{
    self, Account, Balance, BalanceKey, CreditLine, Disburse, Finalize, FxRate, Id, LoanResult, Quote, QuoteRequest,
    Record, RecordResult, Repay, SetTime, StepUp, StrHeader, StrPageHeader, StrPageRequest, StrRequest, Transfer,
    TransferResult,
};
use crate::session::{Challenge, Hello, HelloResponse};

/// Largest answer body the client accepts (EXPORT_STR's may be 256 MiB).
pub const RESPONSE_BODY_MAX: u32 = (256 << 20) + 8;
/// Default time a call waits for its answer.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    Io(std::io::Error),
    /// No answer within the call's timeout.
    Timeout,
    /// The connection closed before the answer came.
    Closed,
    /// The switch answered with an ERROR frame.
    Refused {
        code: u16,
        detail: String,
    },
    /// The switch said something the protocol does not allow.
    Protocol(String),
}

impl ClientError {
    /// The ERROR frame's code, if the switch refused the request.
    #[must_use]
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { code, .. } => ErrorCode::from_u16(*code),
            _ => None,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Timeout => write!(f, "no answer in time"),
            Self::Closed => write!(f, "connection closed"),
            Self::Refused { code, detail } => {
                let name = ErrorCode::from_u16(*code).map_or("?", ErrorCode::name);
                write!(f, "refused: {name} ({code}): {detail}")
            }
            Self::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// An answer frame.
#[derive(Clone, Debug)]
pub struct Response {
    pub kind: u16,
    pub count: u32,
    pub body: Bytes,
    /// When the client's reader took the answer off the socket (so a
    /// caller that waits on answers in another order still measures each
    /// one's latency right).
    pub received: std::time::Instant,
}

/// A request's waiter and its in-flight place. The place is freed when the
/// answer arrives (or the connection closes), not when the caller stops
/// waiting, so the client never has more requests out than the switch
/// counts.
type Waiter = (oneshot::Sender<Result<Response, ClientError>>, OwnedSemaphorePermit);
type Waiters = Arc<Mutex<Option<HashMap<u64, Waiter>>>>;

/// One authenticated connection to the switch.
pub struct Client {
    /// Requests are written by the caller's own task (no hand-off, so no
    /// extra wake-up per request); the lock orders concurrent senders.
    writer: tokio::sync::Mutex<Writer>,
    /// Set once a write failed or was cut short: nothing more is sent.
    broken: AtomicBool,
    waiters: Waiters,
    next_id: AtomicU64,
    slots: Arc<Semaphore>,
    limits: HelloResponse,
    timeout: Duration,
}

/// A connection's halves: plain TCP or TLS.
type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// How to reach a switch over TLS 1.3: the client's rustls configuration
/// (the roots that sign the switch's certificate and, for mutual TLS, the
/// channel's own certificate and key) and the name the switch's
/// certificate must carry.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<tokio_rustls::rustls::ClientConfig>,
    pub server_name: tokio_rustls::rustls::pki_types::ServerName<'static>,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls {{ server_name: {:?} }}", self.server_name)
    }
}

#[cfg(feature = "tls")]
impl Tls {
    /// From PEM files: the CA that signs the switch's certificate, the
    /// channel's certificate and key (mutual TLS), and the switch's name
    /// (a DNS name or an IP address, as its certificate carries it).
    pub fn from_pem_files(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
        server_name: &str,
    ) -> Result<Tls, String> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let named = |path: &std::path::Path, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| named(ca, &e))? {
            roots.add(c.map_err(|e| named(ca, &e))?).map_err(|e| named(ca, &e))?;
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert).and_then(Iterator::collect).map_err(|e| named(cert, &e))?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| named(key, &e))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| e.to_string())?;
        let server_name = ServerName::try_from(server_name.to_string()).map_err(|e| format!("{server_name}: {e}"))?;
        Ok(Tls { config: Arc::new(config), server_name })
    }
}

async fn read_frame(reader: &mut Reader, buf: &mut BytesMut) -> Result<(frame::Header, Bytes), ClientError> {
    loop {
        match frame::decode(buf, RESPONSE_BODY_MAX) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {
                if reader.read_buf(buf).await? == 0 {
                    return Err(ClientError::Closed);
                }
            }
            Err(e) => return Err(ClientError::Protocol(format!("bad frame from the switch: {}", e.code))),
        }
    }
}

fn refused(body: &[u8]) -> ClientError {
    match frame::parse_error_body(body) {
        Some((code, detail)) => ClientError::Refused { code, detail },
        None => ClientError::Protocol("unreadable ERROR frame".into()),
    }
}

impl Client {
    /// Connects, answers the CHALLENGE with HELLO, and reads the session's
    /// limits.
    pub async fn connect(addr: SocketAddr, channel_id: u32, key: &[u8]) -> Result<Client, ClientError> {
        let stream = tokio::time::timeout(TIMEOUT_DEFAULT, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)??;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Self::hello(Box::new(reader), Box::new(writer), channel_id, key).await
    }

    /// The same over TLS 1.3: the TLS handshake (the switch's certificate
    /// checked against `tls`'s roots and name; with mutual TLS, the
    /// channel's certificate shown), then HELLO inside it.
    #[cfg(feature = "tls")]
    pub async fn connect_tls(addr: SocketAddr, tls: &Tls, channel_id: u32, key: &[u8]) -> Result<Client, ClientError> {
        let stream = tokio::time::timeout(TIMEOUT_DEFAULT, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)??;
        stream.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
        let stream = tokio::time::timeout(TIMEOUT_DEFAULT, connector.connect(tls.server_name.clone(), stream))
            .await
            .map_err(|_| ClientError::Timeout)??;
        let (reader, writer) = tokio::io::split(stream);
        Self::hello(Box::new(reader), Box::new(writer), channel_id, key).await
    }

    /// CHALLENGE, HELLO and the session's limits on a connected stream.
    async fn hello(mut reader: Reader, mut writer: Writer, channel_id: u32, key: &[u8]) -> Result<Client, ClientError> {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let (h, body) = tokio::time::timeout(TIMEOUT_DEFAULT, read_frame(&mut reader, &mut buf))
            .await
            .map_err(|_| ClientError::Timeout)??;
        if h.kind == frame::ERROR_KIND {
            return Err(refused(&body));
        }
        let challenge = Challenge::decode(&body)
            .filter(|_| h.kind == kind::CHALLENGE)
            .ok_or_else(|| ClientError::Protocol("expected CHALLENGE".into()))?;
        let mut client_nonce = [0u8; 16];
        getrandom::fill(&mut client_nonce).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let hello = Hello::new(channel_id, key, &challenge.server_nonce, client_nonce);
        let mut out = BytesMut::new();
        frame::encode(&mut out, kind::HELLO, 1, 0, &hello.encode());
        writer.write_all(&out).await?;
        let (h, body) = tokio::time::timeout(TIMEOUT_DEFAULT, read_frame(&mut reader, &mut buf))
            .await
            .map_err(|_| ClientError::Timeout)??;
        if h.kind == frame::ERROR_KIND {
            return Err(refused(&body));
        }
        let limits = HelloResponse::decode(&body)
            .filter(|_| h.kind == kind::HELLO | RESPONSE_BIT)
            .ok_or_else(|| ClientError::Protocol("expected the HELLO response".into()))?;
        if limits.code != 0 {
            return Err(ClientError::Protocol(format!("HELLO answered with code {}", limits.code)));
        }

        let waiters: Waiters = Arc::new(Mutex::new(Some(HashMap::new())));
        let reader_waiters = Arc::clone(&waiters);
        tokio::spawn(async move {
            loop {
                match read_frame(&mut reader, &mut buf).await {
                    Ok((h, body)) => {
                        let error = h.kind == frame::ERROR_KIND;
                        let answer = if error {
                            Err(refused(&body))
                        } else {
                            Ok(Response { kind: h.kind, count: h.count, body, received: std::time::Instant::now() })
                        };
                        let mut guard = reader_waiters.lock();
                        let Some(map) = guard.as_mut() else { return };
                        if h.request_id == 0 && error {
                            // An error about no request in particular: the
                            // switch closes the connection; fail everyone.
                            let Err(ClientError::Refused { code, detail }) = answer else { unreachable!() };
                            for (_, (w, _place)) in map.drain() {
                                let _ = w.send(Err(ClientError::Refused { code, detail: detail.clone() }));
                            }
                        } else if let Some((waiter, _place)) = map.remove(&h.request_id) {
                            let _ = waiter.send(answer);
                        }
                    }
                    Err(_) => {
                        // Dropping the waiters fails every outstanding call.
                        reader_waiters.lock().take();
                        return;
                    }
                }
            }
        });
        Ok(Client {
            writer: tokio::sync::Mutex::new(writer),
            broken: AtomicBool::new(false),
            waiters,
            next_id: AtomicU64::new(1),
            slots: Arc::new(Semaphore::new(limits.max_in_flight as usize)),
            limits,
            timeout: TIMEOUT_DEFAULT,
        })
    }

    /// Sets how long each call waits for its answer.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The session's limits and roles, from the HELLO response.
    #[must_use]
    pub fn limits(&self) -> HelloResponse {
        self.limits
    }

    /// Sends one request and waits for its answer (an ERROR frame is
    /// `Refused`).
    pub async fn request(&self, kind: u16, count: u32, body: &[u8]) -> Result<Response, ClientError> {
        self.send(kind, count, body).await?.wait().await
    }

    /// Sends one request without waiting for its answer: call
    /// [`InFlight::wait`] later. Up to `max_in_flight` may be out at once;
    /// one more waits here until an earlier one is answered and dropped.
    pub async fn send(&self, kind: u16, count: u32, body: &[u8]) -> Result<InFlight<'_>, ClientError> {
        let place = tokio::time::timeout(self.timeout, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Closed)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self.waiters.lock().as_mut() {
            Some(map) => map.insert(id, (tx, place)),
            None => return Err(ClientError::Closed),
        };
        let mut bytes = BytesMut::with_capacity(frame::HEADER_SIZE + body.len());
        frame::encode(&mut bytes, kind, count, id, body);
        let mut writer = self.writer.lock().await;
        if self.broken.load(Ordering::Acquire) {
            if let Some(map) = self.waiters.lock().as_mut() {
                map.remove(&id);
            }
            return Err(ClientError::Closed);
        }
        // If this future is dropped mid-write, half a frame is on the wire:
        // the connection is then unusable, and the guard marks it so.
        let guard = BrokenUnlessDone(&self.broken);
        let written = writer.write_all(&bytes).await;
        std::mem::forget(guard);
        if written.is_err() {
            self.broken.store(true, Ordering::Release);
            if let Some(map) = self.waiters.lock().as_mut() {
                map.remove(&id);
            }
            return Err(ClientError::Closed);
        }
        Ok(InFlight { client: self, id, kind, rx })
    }

    /// Sends `items` as batches of at most `max_batch` records, all in flight
    /// at once, and returns every answer record in order.
    pub async fn batch<R: Record, A: Record>(&self, kind: u16, items: &[R]) -> Result<Vec<A>, ClientError> {
        let max = (self.limits.max_batch as usize).max(1);
        let chunks: Vec<&[R]> = if items.is_empty() { vec![items] } else { items.chunks(max).collect() };
        // Keep at most max_in_flight requests out; wait for the oldest first.
        let window = (self.limits.max_in_flight as usize).max(1);
        let mut sent = std::collections::VecDeque::with_capacity(window);
        let mut out = Vec::with_capacity(items.len());
        for chunk in &chunks {
            if sent.len() == window {
                decode_into(sent.pop_front().expect("a request in flight"), &mut out).await?;
            }
            sent.push_back(self.send(kind, chunk.len() as u32, &records::encode_all(chunk)).await?);
        }
        for in_flight in sent {
            decode_into(in_flight, &mut out).await?;
        }
        Ok(out)
    }

    /// PING.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.request(kind::PING, 0, &[]).await.map(|_| ())
    }

    /// CREATE_ACCOUNTS.
    pub async fn create_accounts(&self, accounts: &[Account]) -> Result<Vec<RecordResult>, ClientError> {
        self.batch(kind::CREATE_ACCOUNTS, accounts).await
    }

    /// SUBMIT_TRANSFERS.
    pub async fn submit_transfers(&self, transfers: &[Transfer]) -> Result<Vec<TransferResult>, ClientError> {
        self.batch(kind::SUBMIT_TRANSFERS, transfers).await
    }

    /// LOOKUP_TRANSFERS.
    pub async fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<TransferResult>, ClientError> {
        let ids: Vec<Id> = ids.iter().map(|&id| Id { id }).collect();
        self.batch(kind::LOOKUP_TRANSFERS, &ids).await
    }

    /// LOOKUP_BALANCES.
    pub async fn lookup_balances(&self, keys: &[BalanceKey]) -> Result<Vec<Balance>, ClientError> {
        self.batch(kind::LOOKUP_BALANCES, keys).await
    }

    /// FINALIZE_PENDING.
    pub async fn finalize_pending(&self, items: &[Finalize]) -> Result<Vec<TransferResult>, ClientError> {
        self.batch(kind::FINALIZE_PENDING, items).await
    }

    /// CANCEL_TRANSFERS.
    pub async fn cancel_transfers(&self, ids: &[u128]) -> Result<Vec<TransferResult>, ClientError> {
        let ids: Vec<Id> = ids.iter().map(|&id| Id { id }).collect();
        self.batch(kind::CANCEL_TRANSFERS, &ids).await
    }

    /// CONFIRM_STEP_UP.
    pub async fn confirm_step_up(&self, items: &[StepUp]) -> Result<Vec<TransferResult>, ClientError> {
        self.batch(kind::CONFIRM_STEP_UP, items).await
    }

    /// RESOLVE_REVIEW (an OPERATOR's).
    pub async fn resolve_review(&self, items: &[StepUp]) -> Result<Vec<TransferResult>, ClientError> {
        self.batch(kind::RESOLVE_REVIEW, items).await
    }

    /// SET_FX_RATES (a TREASURY's).
    pub async fn set_fx_rates(&self, rates: &[FxRate]) -> Result<Vec<RecordResult>, ClientError> {
        self.batch(kind::SET_FX_RATES, rates).await
    }

    /// FX_QUOTE.
    pub async fn fx_quote(&self, requests: &[QuoteRequest]) -> Result<Vec<Quote>, ClientError> {
        self.batch(kind::FX_QUOTE, requests).await
    }

    /// SET_CREDIT_LINES.
    pub async fn set_credit_lines(&self, lines: &[CreditLine]) -> Result<Vec<RecordResult>, ClientError> {
        self.batch(kind::SET_CREDIT_LINES, lines).await
    }

    /// DISBURSE_LOANS.
    pub async fn disburse_loans(&self, loans: &[Disburse]) -> Result<Vec<LoanResult>, ClientError> {
        self.batch(kind::DISBURSE_LOANS, loans).await
    }

    /// REPAY_LOANS.
    pub async fn repay_loans(&self, repayments: &[Repay]) -> Result<Vec<LoanResult>, ClientError> {
        self.batch(kind::REPAY_LOANS, repayments).await
    }

    /// LOOKUP_LOANS.
    pub async fn lookup_loans(&self, ids: &[u128]) -> Result<Vec<LoanResult>, ClientError> {
        let ids: Vec<Id> = ids.iter().map(|&id| Id { id }).collect();
        self.batch(kind::LOOKUP_LOANS, &ids).await
    }

    /// EXPORT_STR: the month's Suspicious Transaction Report (format
    /// `aml::report::FORMAT_XML` or `FORMAT_CSV`), as its header and bytes.
    pub async fn export_str(&self, year: u16, month: u8, format: u8) -> Result<(StrHeader, Vec<u8>), ClientError> {
        let request = StrRequest { year, month, format };
        let answer = self.request(kind::EXPORT_STR, 1, &records::encode_all(&[request])).await?;
        report_answer(&answer.body, "EXPORT_STR", |h: &StrHeader| h.report_len)
    }

    /// EXPORT_STR_PAGE: one page of a month's Suspicious Transaction
    /// Report, as its header and bytes. Ask the first page with the cursor
    /// and `as_of_ms` 0, then each next one with the `as_of_ms` and cursor
    /// the last answered, until a page is [`StrPageHeader::last`].
    pub async fn export_str_page(&self, request: &StrPageRequest) -> Result<(StrPageHeader, Vec<u8>), ClientError> {
        let answer = self.request(kind::EXPORT_STR_PAGE, 1, &records::encode_all(&[*request])).await?;
        report_answer(&answer.body, "EXPORT_STR_PAGE", |h: &StrPageHeader| h.report_len)
    }

    /// SET_TIME (manual clock only).
    pub async fn set_time(&self, unix_ms: u64) -> Result<RecordResult, ClientError> {
        let answers: Vec<RecordResult> = self.batch(kind::SET_TIME, &[SetTime { unix_ms }]).await?;
        answers.into_iter().next().ok_or_else(|| ClientError::Protocol("no SET_TIME answer".into()))
    }
}

/// An STR answer's header and the report bytes after it, which must be
/// the `report_len` it says.
fn report_answer<H: Record>(
    body: &[u8],
    name: &str,
    report_len: impl Fn(&H) -> u32,
) -> Result<(H, Vec<u8>), ClientError> {
    if body.len() < H::SIZE {
        return Err(ClientError::Protocol(format!("{name} answer shorter than its header")));
    }
    let header = H::decode(&body[..H::SIZE]);
    let report = body[H::SIZE..].to_vec();
    if report.len() != report_len(&header) as usize {
        return Err(ClientError::Protocol(format!("{name} report_len does not match the body")));
    }
    Ok((header, report))
}

async fn decode_into<A: Record>(in_flight: InFlight<'_>, out: &mut Vec<A>) -> Result<(), ClientError> {
    let answer = in_flight.wait().await?;
    if answer.body.len() != answer.count as usize * A::SIZE {
        return Err(ClientError::Protocol("answer body is not whole records".into()));
    }
    out.extend(records::decode_all::<A>(&answer.body));
    Ok(())
}

/// Marks the connection broken when dropped (forgotten once a write ends).
struct BrokenUnlessDone<'a>(&'a AtomicBool);

impl Drop for BrokenUnlessDone<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A request sent and not yet answered.
pub struct InFlight<'a> {
    client: &'a Client,
    id: u64,
    kind: u16,
    rx: oneshot::Receiver<Result<Response, ClientError>>,
}

impl InFlight<'_> {
    /// The request id the client chose.
    #[must_use]
    pub fn request_id(&self) -> u64 {
        self.id
    }

    /// Waits for the answer, up to the client's timeout. (The request's
    /// place stays taken until the switch answers it.)
    pub async fn wait(self) -> Result<Response, ClientError> {
        self.detach().wait().await
    }

    /// Parts with the client borrow, so another task can wait for the
    /// answer (the load tester sends on one task and collects on another).
    #[must_use]
    pub fn detach(self) -> Detached {
        Detached { timeout: self.client.timeout, kind: self.kind, rx: self.rx }
    }
}

/// A request in flight that no longer borrows its client
/// ([`InFlight::detach`]).
pub struct Detached {
    timeout: Duration,
    kind: u16,
    rx: oneshot::Receiver<Result<Response, ClientError>>,
}

impl Detached {
    /// Waits for the answer, up to the client's timeout.
    pub async fn wait(self) -> Result<Response, ClientError> {
        let answer = match tokio::time::timeout(self.timeout, self.rx).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(Err(_)) => return Err(ClientError::Closed),
            Ok(Ok(answer)) => answer?,
        };
        if answer.kind != self.kind | RESPONSE_BIT {
            return Err(ClientError::Protocol(format!("answer kind {:#06x} to kind {:#06x}", answer.kind, self.kind)));
        }
        Ok(answer)
    }
}

/// How long [`Failover`] keeps looking for a leader before it gives up.
pub const FAILOVER_DEADLINE_DEFAULT: Duration = Duration::from_secs(30);
/// Pause between two tries while no leader is known (an election runs).
const FAILOVER_RETRY: Duration = Duration::from_millis(50);

/// Reaching a cluster's leader (contract §7): the nodes a channel knows,
/// and the way from a refusal or a lost connection to a connection to the
/// leader. A request whose answer did not come is sent again, with the
/// same ids, to the new leader: every kind is safe to resend.
#[derive(Clone, Debug)]
pub struct Failover {
    /// Every node's channel address (one, for a single node).
    pub addrs: Vec<SocketAddr>,
    pub channel_id: u32,
    pub key: Vec<u8>,
    /// The timeout of each call on a connection made here.
    pub timeout: Duration,
    /// How long to keep looking for a leader.
    pub deadline: Duration,
    /// The node to try next when no leader is named.
    next: usize,
    /// TLS 1.3 to every node (their certificates carry the same name).
    #[cfg(feature = "tls")]
    pub tls: Option<Tls>,
}

/// Whether a call failed in a way a cluster's failover explains: the
/// connection went (the node died, or closed it when it lost its
/// leadership), or the node is not the leader. The request may or may not
/// have been applied; resending it is safe.
#[must_use]
pub fn is_failover(e: &ClientError) -> bool {
    match e {
        ClientError::Closed | ClientError::Io(_) | ClientError::Timeout => true,
        ClientError::Refused { code, .. } => *code == ErrorCode::NotLeader as u16,
        ClientError::Protocol(_) => false,
    }
}

impl Failover {
    #[must_use]
    pub fn new(addrs: Vec<SocketAddr>, channel_id: u32, key: &[u8]) -> Failover {
        Failover {
            addrs,
            channel_id,
            key: key.to_vec(),
            timeout: TIMEOUT_DEFAULT,
            deadline: FAILOVER_DEADLINE_DEFAULT,
            next: 0,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Connects to the first node that answers.
    pub async fn connect(&mut self) -> Result<Client, ClientError> {
        self.reconnect(None).await
    }

    /// After `failed` (see [`is_failover`]): a connection to the leader it
    /// names, else to the next node that answers, trying until the
    /// deadline. A node reached this way may still not lead; the next
    /// refusal names the leader.
    pub async fn reconnect(&mut self, failed: Option<&ClientError>) -> Result<Client, ClientError> {
        let started = std::time::Instant::now();
        let mut named = match failed {
            Some(ClientError::Refused { detail, .. }) if !detail.is_empty() => {
                tokio::net::lookup_host(detail.as_str()).await.ok().and_then(|mut a| a.next())
            }
            _ => None,
        };
        if failed.is_some() && named.is_none() {
            // No leader named: an election is running, or the node died.
            tokio::time::sleep(FAILOVER_RETRY).await;
        }
        let mut tried = 0usize;
        loop {
            let addr = match named.take() {
                Some(addr) => addr,
                None => {
                    let addr = *self.addrs.get(self.next % self.addrs.len().max(1)).ok_or(ClientError::Closed)?;
                    self.next = self.next.wrapping_add(1);
                    addr
                }
            };
            let connecting = tokio::time::timeout(self.timeout, self.connect_to(addr));
            let error = match connecting.await {
                Ok(Ok(client)) => return Ok(client.with_timeout(self.timeout)),
                Ok(Err(e)) if !is_failover(&e) => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => ClientError::Timeout,
            };
            // Every node tried once at least, and the deadline passed.
            if started.elapsed() >= self.deadline && tried + 1 >= self.addrs.len() {
                return Err(error);
            }
            tried += 1;
            tokio::time::sleep(FAILOVER_RETRY).await;
        }
    }

    /// One node, over TLS if configured.
    async fn connect_to(&self, addr: SocketAddr) -> Result<Client, ClientError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return Client::connect_tls(addr, tls, self.channel_id, &self.key).await;
        }
        Client::connect(addr, self.channel_id, &self.key).await
    }

    /// Sends one request on `client` and waits for its answer; through a
    /// failover, sends it again to the leader (same bytes, same ids) on a
    /// new connection, which replaces `client`.
    pub async fn request(
        &mut self,
        client: &mut Client,
        kind: u16,
        count: u32,
        body: &[u8],
    ) -> Result<Response, ClientError> {
        let started = std::time::Instant::now();
        // A refusal that names the leader is followed even past the
        // deadline, a few times (leadership may move meanwhile).
        let mut redirects = 0;
        loop {
            match client.request(kind, count, body).await {
                Err(e) if is_failover(&e) => {
                    let named = matches!(&e, ClientError::Refused { detail, .. } if !detail.is_empty());
                    if started.elapsed() >= self.deadline && !(named && redirects < 4) {
                        return Err(e);
                    }
                    redirects += usize::from(named);
                    *client = self.reconnect(Some(&e)).await?;
                }
                answer => return answer,
            }
        }
    }
}
