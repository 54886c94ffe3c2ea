//! The audit trail of administrative acts (issue 16, `docs/security.md`):
//! every SET_FX_RATES, SET_CREDIT_LINES, RESOLVE_REVIEW, SET_TIME,
//! CLUSTER_CHANGE and RELOAD_CHANNELS, with the channel, the wall-clock time,
//! the peer and the request's content, and refused HELLOs, one JSON line
//! each in `DATA/audit.log`. An act is on disk (fdatasync) before it is
//! handed to the books, so an applied act is never missing from the trail,
//! even after `kill -9`. Refused HELLOs are written without a sync and at
//! most one a second (anyone can make HELLO fail; the others are counted in
//! the next line).
//!
//! The acts that change the books are in the log too, with their channel
//! (SCOPED records), so on a cluster every node writes each one on its own
//! trail when it applies it, with the entry's log index and time: the
//! trail is replicated, and a node that lost its disk writes it again as
//! it catches up. A node that took the act writes it twice: when taken,
//! with the channel's address, and when applied.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::protocol::kind;

/// The administrative acts recorded on the audit trail.
#[must_use]
pub fn audited(kind: u16) -> bool {
    matches!(
        kind,
        kind::SET_FX_RATES
            | kind::SET_CREDIT_LINES
            | kind::RESOLVE_REVIEW
            | kind::SET_TIME
            | kind::CLUSTER_CHANGE
            | kind::RELOAD_CHANNELS
    )
}

/// The trail's file in a data directory.
pub const AUDIT_FILE: &str = "audit.log";

/// One act.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    /// Unix ms (the wall clock of the node that took it).
    pub at_ms: u64,
    /// The channel: authenticated, or the one a refused HELLO claimed.
    pub channel: u32,
    /// The kind's name (`HELLO_REFUSED` for a refused HELLO).
    pub kind: String,
    pub peer: String,
    /// The request's body, hex.
    pub content: String,
    /// Refused HELLOs not written since the last line (rate limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
    /// A cluster node's line written when it applied the act: the raft log
    /// index of its entry (`at_ms` is then the entry's time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<u64>,
    /// Which of the entry's records it is (from 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<u32>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The open trail.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    /// The second of the last refused HELLO written, and those since.
    hello_second: AtomicU64,
    hello_suppressed: AtomicU64,
    /// The last (log index, record) whose act is written: entries applied
    /// again after a restart are not written twice.
    applied_through: Mutex<(u64, u32)>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl AuditLog {
    /// Opens (or creates) `dir/audit.log` for appending.
    pub fn open(dir: &Path) -> std::io::Result<AuditLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(AUDIT_FILE);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        // A line a crash cut was never acknowledged (its sync did not
        // return, or it is a refused HELLO's, never synced): cut it off, so
        // what is appended now starts a line of its own.
        let bytes = std::fs::read(&path)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
        if whole < bytes.len() {
            tracing::warn!(path = %path.display(), bytes = bytes.len() - whole, "the audit trail's cut last line dropped");
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        // The last applied act written: found by reading the lines (one
        // that does not read is skipped here, reported by `harbour audit`).
        let text = String::from_utf8_lossy(&bytes[..whole]).into_owned();
        let through = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Act>(l).ok())
            .filter_map(|a| Some((a.entry?, a.record.unwrap_or(0))))
            .max();
        Ok(AuditLog {
            path,
            file: Mutex::new(file),
            hello_second: AtomicU64::new(0),
            hello_suppressed: AtomicU64::new(0),
            applied_through: Mutex::new(through.unwrap_or((0, 0))),
        })
    }

    /// Records an act as a cluster node applies it, the `record`th of log
    /// entry `entry` (synced), unless it is written already (an entry
    /// applied again after a restart: acts are written in log order).
    pub fn applied(
        &self,
        (entry, record): (u64, u32),
        at_ms: u64,
        channel: u32,
        kind: &str,
        content: &[u8],
    ) -> std::io::Result<()> {
        let mut through = self.applied_through.lock();
        if (entry, record) <= *through {
            return Ok(());
        }
        let act = Act {
            at_ms,
            channel,
            kind: kind.into(),
            peer: String::new(),
            content: hex(content),
            suppressed: 0,
            entry: Some(entry),
            record: Some(record),
        };
        self.write(&act, true)?;
        *through = (entry, record);
        Ok(())
    }

    /// Records an administrative act durably (before it is applied).
    pub fn act(&self, channel: u32, kind: &str, peer: SocketAddr, content: &[u8]) -> std::io::Result<()> {
        let act = Act {
            at_ms: now_ms(),
            channel,
            kind: kind.into(),
            peer: peer.to_string(),
            content: hex(content),
            suppressed: 0,
            entry: None,
            record: None,
        };
        self.write(&act, true)
    }

    /// Records a refused HELLO, at most one a second (not synced).
    pub fn refused_hello(&self, channel: u32, peer: SocketAddr) {
        let second = now_ms() / 1000;
        if self.hello_second.swap(second, Ordering::Relaxed) == second {
            self.hello_suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let act = Act {
            at_ms: now_ms(),
            channel,
            kind: "HELLO_REFUSED".into(),
            peer: peer.to_string(),
            content: String::new(),
            suppressed: self.hello_suppressed.swap(0, Ordering::Relaxed),
            entry: None,
            record: None,
        };
        if let Err(e) = self.write(&act, false) {
            tracing::warn!(error = %e, "the audit trail could not record a refused HELLO");
        }
    }

    fn write(&self, act: &Act, sync: bool) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(act).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock();
        let before = file.metadata()?.len();
        let written = file.write_all(&line).and_then(|()| if sync { file.sync_data() } else { Ok(()) });
        if written.is_err() {
            // A line half written (a full disk) is taken back, so the next
            // act starts a line of its own.
            let _ = file.set_len(before);
        }
        written
    }

    /// Where the trail is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The acts of `dir`'s trail from `from_ms` to `to_ms` (Unix ms,
/// inclusive), in order. A last line cut by a crash (never synced: a
/// refused HELLO's) is skipped; any other line that does not read is an
/// error naming it.
pub fn read(dir: &Path, from_ms: u64, to_ms: u64) -> Result<Vec<Act>, String> {
    let path = dir.join(AUDIT_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut acts = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Act>(line) {
            Ok(act) if (from_ms..=to_ms).contains(&act.at_ms) => acts.push(act),
            Ok(_) => {}
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => return Err(format!("{} line {}: {e}", path.display(), i + 1)),
        }
    }
    Ok(acts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acts_are_read_back_in_a_window_and_a_cut_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let peer: SocketAddr = "10.0.0.9:5555".parse().unwrap();
        log.act(7, "SET_TIME", peer, &[1, 2, 255]).unwrap();
        log.refused_hello(9, peer);
        log.refused_hello(9, peer);
        let acts = read(dir.path(), 0, u64::MAX).unwrap();
        assert_eq!(acts.len(), 2, "{acts:?}");
        assert_eq!((acts[0].channel, acts[0].kind.as_str(), acts[0].content.as_str()), (7, "SET_TIME", "0102ff"));
        assert_eq!(acts[1].kind, "HELLO_REFUSED");
        assert!(read(dir.path(), acts[0].at_ms + 10_000, u64::MAX).unwrap().is_empty(), "outside the window");
        std::fs::OpenOptions::new().append(true).open(log.path()).unwrap().write_all(b"{\"at_ms\": 1").unwrap();
        assert_eq!(read(dir.path(), 0, u64::MAX).unwrap().len(), 2, "a cut last line is skipped");
        // Opened again (a restart after the crash that cut it), the cut
        // line is dropped, so the next act is a line of its own.
        drop(log);
        let log = AuditLog::open(dir.path()).unwrap();
        log.act(8, "SET_TIME", peer, &[3]).unwrap();
        let acts = read(dir.path(), 0, u64::MAX).expect("every line reads");
        assert_eq!(acts.iter().map(|a| a.channel).collect::<Vec<_>>(), [7, 9, 8]);
    }

    /// Acts a cluster node applies are written once per (entry, record),
    /// however often the entry is applied, across a reopen too.
    #[test]
    fn an_applied_act_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.applied((5, 0), 1_000, 3, "SET_FX_RATES", &[1]).unwrap();
        log.applied((5, 1), 1_000, 3, "SET_TIME", &[2]).unwrap();
        log.applied((5, 0), 1_000, 3, "SET_FX_RATES", &[1]).unwrap();
        drop(log);
        let log = AuditLog::open(dir.path()).unwrap();
        log.applied((5, 1), 1_000, 3, "SET_TIME", &[2]).unwrap();
        log.applied((6, 0), 2_000, 4, "SET_TIME", &[3]).unwrap();
        let acts = read(dir.path(), 0, u64::MAX).unwrap();
        let at: Vec<(Option<u64>, Option<u32>)> = acts.iter().map(|a| (a.entry, a.record)).collect();
        assert_eq!(at, [(Some(5), Some(0)), (Some(5), Some(1)), (Some(6), Some(0))]);
    }
}
