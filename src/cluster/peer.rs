//! Raft's messages between nodes over TCP (the peer address of each
//! node). A frame is a u32 length (LE) of what follows, a kind byte and a
//! body. Log entries travel in the raft log's own binary form
//! (`log::encode_entry`); the small rest (votes, log ids, responses) as
//! JSON. Every call waits at most openraft's soft deadline for its answer;
//! a connection that fails is dropped and made again on the next call.
//!
//! With `[cluster.tls]` every connection is mutual TLS 1.3 with the
//! cluster's CA (`tls::PeerTls`): the dialler checks the node it dials is
//! the one it meant, and says its own id, which its certificate must name.
//! Without it, plain TCP (on loopback, or said in so many words).

use std::future::Future;
use std::io;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::tls::PeerTls;

use super::log::{decode_entry, encode_entry};
use super::{Entry, LogId, PeerNode, Raft, TypeConfig};

type Vote = openraft::alias::VoteOf<TypeConfig>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;

const APPEND: u8 = 1;
const VOTE: u8 = 2;
const SNAPSHOT: u8 = 3;
/// Answer kinds.
const OK: u8 = 0;
const FAILED: u8 = 1;
/// Largest frame a peer accepts (a snapshot of every shard's books comes
/// whole, for now).
const FRAME_MAX: usize = 1 << 30;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer's TLS handshake and node id, at most.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A peer connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Stream for T {}

#[derive(Serialize, Deserialize)]
struct AppendHead {
    vote: Vote,
    prev_log_id: Option<LogId>,
    leader_commit: Option<LogId>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotHead {
    vote: Vote,
    meta: SnapshotMeta,
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("peer frame: {what}"))
}

fn put_json(out: &mut Vec<u8>, value: &impl Serialize) -> io::Result<()> {
    let json = serde_json::to_vec(value).map_err(io::Error::other)?;
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(())
}

/// Reads a u32-length-prefixed piece at `*at`.
fn take<'a>(bytes: &'a [u8], at: &mut usize) -> io::Result<&'a [u8]> {
    let len = bytes.get(*at..*at + 4).ok_or_else(|| invalid("cut short"))?;
    let len = u32::from_le_bytes(len.try_into().expect("4")) as usize;
    let piece = bytes.get(*at + 4..*at + 4 + len).ok_or_else(|| invalid("cut short"))?;
    *at += 4 + len;
    Ok(piece)
}

fn encode_append(rpc: &AppendEntriesRequest<TypeConfig>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let head = AppendHead { vote: rpc.vote, prev_log_id: rpc.prev_log_id, leader_commit: rpc.leader_commit };
    put_json(&mut out, &head)?;
    out.extend_from_slice(&(rpc.entries.len() as u32).to_le_bytes());
    let mut body = Vec::new();
    for entry in &rpc.entries {
        body.clear();
        encode_entry(entry, &mut body)?;
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
    }
    Ok(out)
}

fn decode_append(bytes: &[u8]) -> io::Result<AppendEntriesRequest<TypeConfig>> {
    let mut at = 0;
    let head: AppendHead = serde_json::from_slice(take(bytes, &mut at)?).map_err(invalid)?;
    let count = bytes.get(at..at + 4).ok_or_else(|| invalid("cut short"))?;
    let count = u32::from_le_bytes(count.try_into().expect("4")) as usize;
    at += 4;
    let mut entries: Vec<Entry> = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let body = take(bytes, &mut at)?;
        if body.len() > super::log::ENTRY_BYTES_MAX {
            return Err(invalid(format!("an entry of {} bytes", body.len())));
        }
        entries.push(decode_entry(body)?);
    }
    if at != bytes.len() {
        return Err(invalid("bytes after the entries"));
    }
    Ok(AppendEntriesRequest {
        vote: head.vote,
        prev_log_id: head.prev_log_id,
        entries,
        leader_commit: head.leader_commit,
    })
}

async fn write_frame(stream: &mut (impl AsyncWrite + Unpin), kind: u8, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len() + 1).map_err(|_| invalid("frame too large"))?;
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.push(kind);
    frame.extend_from_slice(body);
    stream.write_all(&frame).await
}

async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<(u8, Vec<u8>)> {
    let len = stream.read_u32_le().await? as usize;
    if len == 0 || len > FRAME_MAX {
        return Err(invalid(format!("length {len}")));
    }
    let kind = stream.read_u8().await?;
    // The buffer grows as bytes arrive: a length alone reserves nothing.
    let mut body = Vec::new();
    (&mut *stream).take(len as u64 - 1).read_to_end(&mut body).await?;
    if body.len() != len - 1 {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    Ok((kind, body))
}

/// Whether `vote` is node `node`'s own (a leader's or a candidate's), and
/// `node` a member: under `[cluster.tls]` a peer proved who it is, and
/// speaks for no other node.
fn speaks_for(raft: &Raft, vote: &Vote, node: Option<u64>) -> io::Result<()> {
    use openraft::rt::WatchReceiver;
    use openraft::vote::RaftLeaderId;
    let Some(node) = node else { return Ok(()) };
    let claimed = *vote.leader_id().node_id();
    if claimed != node {
        return Err(invalid(format!("node {node} speaks for node {claimed}")));
    }
    // A node that knows no membership yet (one joining, before its first
    // entry) takes its leader at its word: the certificate proved who.
    let metrics = raft.metrics();
    let membership = metrics.borrow_watched().membership_config.clone();
    let mut nodes = membership.membership().nodes().peekable();
    let member = nodes.peek().is_none() || nodes.any(|(id, _)| *id == node);
    if !member {
        return Err(invalid(format!("node {node} is not a member")));
    }
    Ok(())
}

/// Answers one request frame with the local raft; `node` is who sent it,
/// if TLS proved it.
async fn handle(raft: &Raft, node: Option<u64>, kind: u8, body: &[u8]) -> io::Result<Vec<u8>> {
    let json = |r: Result<Vec<u8>, serde_json::Error>| r.map_err(io::Error::other);
    match kind {
        APPEND => {
            let rpc = decode_append(body)?;
            speaks_for(raft, &rpc.vote, node)?;
            let answer = raft.append_entries(rpc).await.map_err(io::Error::other)?;
            json(serde_json::to_vec(&answer))
        }
        VOTE => {
            let rpc: VoteRequest<TypeConfig> = serde_json::from_slice(body).map_err(invalid)?;
            speaks_for(raft, &rpc.vote, node)?;
            let answer = raft.vote(rpc).await.map_err(io::Error::other)?;
            json(serde_json::to_vec(&answer))
        }
        SNAPSHOT => {
            let mut at = 0;
            let head: SnapshotHead = serde_json::from_slice(take(body, &mut at)?).map_err(invalid)?;
            speaks_for(raft, &head.vote, node)?;
            let snapshot = Snapshot { meta: head.meta, snapshot: std::io::Cursor::new(body[at..].to_vec()) };
            let answer = raft.install_full_snapshot(head.vote, snapshot).await.map_err(io::Error::other)?;
            json(serde_json::to_vec(&answer))
        }
        other => Err(invalid(format!("kind {other}"))),
    }
}

/// TLS handshakes with peers at once, at most: strangers opening
/// connections wait for a place instead of taking every descriptor.
const HANDSHAKES_MAX: usize = 64;

/// Serves raft's messages from other nodes, for as long as the node runs:
/// a failed accept (out of descriptors, say) is waited out, not fatal.
pub async fn serve(listener: TcpListener, raft: Raft, tls: Option<PeerTls>) -> io::Result<()> {
    let handshakes = std::sync::Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "the peer listener could not accept; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let raft = raft.clone();
        let tls = tls.clone();
        let Ok(place) = std::sync::Arc::clone(&handshakes).acquire_owned().await else { continue };
        tokio::spawn(async move {
            let (mut stream, node): (Box<dyn Stream>, Option<u64>) = match tls {
                None => (Box::new(stream), None),
                Some(tls) => match tls.accept(stream, HANDSHAKE_TIMEOUT).await {
                    Ok((stream, node)) => (Box::new(stream), Some(node)),
                    Err(why) => {
                        // Counted always (`PeerTls::accept`), logged at
                        // most once a second, as the channels' refusals.
                        if crate::tls::log_now() {
                            tracing::warn!(%from, reason = %why, "a peer connection refused");
                        }
                        return;
                    }
                },
            };
            drop(place);
            while let Ok((kind, body)) = read_frame(&mut stream).await {
                let (status, answer) = match handle(&raft, node, kind, &body).await {
                    Ok(answer) => (OK, answer),
                    Err(e) => (FAILED, e.to_string().into_bytes()),
                };
                if write_frame(&mut stream, status, &answer).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Bytes of an append that earn its deadline one more millisecond.
const APPEND_BYTES_PER_MS: u64 = 16 << 10;

/// The client side of every node's peer links. A node is dialled at its
/// peer address, or where `dial` says (a proxy or a tunnel in between);
/// with `tls`, as node `me`.
#[derive(Clone, Default)]
pub struct TcpLinks {
    pub dial: std::sync::Arc<std::collections::BTreeMap<u64, String>>,
    pub tls: Option<PeerTls>,
    pub me: u64,
}

/// One node's link to another, over one connection made on demand.
pub struct TcpLink {
    addr: String,
    target: u64,
    tls: Option<(PeerTls, u64)>,
    stream: Option<Box<dyn Stream>>,
}

impl RaftNetworkFactory<TypeConfig> for TcpLinks {
    type Network = TcpLink;

    async fn new_client(&mut self, target: u64, node: &PeerNode) -> TcpLink {
        let addr = self.dial.get(&target).unwrap_or(&node.peer).clone();
        TcpLink { addr, target, tls: self.tls.clone().map(|t| (t, self.me)), stream: None }
    }
}

/// Why a call failed.
enum CallError {
    /// No connection could be made.
    Unreachable(io::Error),
    /// The connection failed, the answer was late, or the peer failed.
    Network(io::Error),
}

impl TcpLink {
    /// One request and its answer, within `deadline` in all (connecting
    /// included). The connection is taken out while the call runs and put
    /// back only after a whole exchange: a call cancelled or failed midway
    /// (a frame half written, an answer still coming) never leaves a
    /// connection out of step for the next call.
    async fn call(&mut self, kind: u8, body: &[u8], deadline: Duration) -> Result<Vec<u8>, CallError> {
        let taken = self.stream.take();
        let (addr, target, tls) = (self.addr.clone(), self.target, self.tls.clone());
        let exchange = async move {
            let mut stream = match taken {
                Some(stream) => stream,
                None => {
                    let timed_out = || CallError::Unreachable(io::Error::from(io::ErrorKind::TimedOut));
                    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(CallError::Unreachable)?;
                    let _ = stream.set_nodelay(true);
                    match tls {
                        None => Box::new(stream) as Box<dyn Stream>,
                        Some((tls, me)) => Box::new(
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(stream, target, me))
                                .await
                                .map_err(|_| timed_out())?
                                .map_err(CallError::Unreachable)?,
                        ),
                    }
                }
            };
            write_frame(&mut stream, kind, body).await.map_err(CallError::Network)?;
            let answer = read_frame(&mut stream).await.map_err(CallError::Network)?;
            Ok::<_, CallError>((stream, answer))
        };
        let (stream, answer) = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| CallError::Network(io::Error::from(io::ErrorKind::TimedOut)))??;
        self.stream = Some(stream);
        match answer {
            (OK, body) => Ok(body),
            (_, reason) => Err(CallError::Network(io::Error::other(String::from_utf8_lossy(&reason).into_owned()))),
        }
    }
}

fn rpc_error(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, RPCError<TypeConfig>> {
    serde_json::from_slice(body).map_err(|e| RPCError::Network(NetworkError::new(&invalid(e))))
}

impl RaftNetworkV2<TypeConfig> for TcpLink {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let body = encode_append(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // openraft allows three quarters of a heartbeat (37.5 ms): enough
        // for a heartbeat, not for a follower to take and fsync a group of
        // megabytes. Entries get a millisecond more per 16 KiB (a second
        // for the largest entry); the replication stream has no hard limit.
        let deadline = option.soft_ttl() + Duration::from_millis(body.len() as u64 / APPEND_BYTES_PER_MS);
        let answer = self.call(APPEND, &body, deadline).await.map_err(rpc_error)?;
        decode(&answer)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let body = serde_json::to_vec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = self.call(VOTE, &body, option.soft_ttl()).await.map_err(rpc_error)?;
        decode(&answer)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut body = Vec::new();
        put_json(&mut body, &SnapshotHead { vote, meta: snapshot.meta })
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        body.extend_from_slice(snapshot.snapshot.get_ref());
        // A snapshot is large: the hard deadline, not the soft one.
        let answer = self.call(SNAPSHOT, &body, option.hard_ttl()).await.map_err(rpc_error)?;
        decode(&answer).map_err(StreamingError::from)
    }
}
