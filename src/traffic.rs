//! Traffic files: a stream of requests with their intended send times, as
//! the load tester generates them and `harbour serve --record` taps them,
//! so production-like traffic can be replayed later.
//!
//! Format, version 1 (little-endian; `docs/loadtest.md`):
//!
//! ```text
//! file header (32 bytes):  "HBTR"  u16 version=1  u16 flags=0  u64 created_unix_ms  [u8;16] zero
//! record header (24 bytes): u32 crc32c  u32 body_len  u64 offset_ns  u16 kind  u16 zero  u32 count
//! record body:             body_len bytes, the request's records exactly as on the wire
//! ```
//!
//! The CRC covers the record header's bytes 4..24 and the body. `offset_ns`
//! is when the request is meant to be sent, from the start of the traffic,
//! non-decreasing. Records are independent, so a file is written and read
//! as a stream, of any size; a torn last record (a recording cut by a
//! crash) ends the stream cleanly and is reported, a bad checksum before
//! the end is an error.

use std::io::{self, Read, Write};

/// First bytes of a traffic file.
pub const MAGIC: [u8; 4] = *b"HBTR";
/// The format version this build reads and writes.
pub const VERSION: u16 = 1;
/// Bytes of the file header.
pub const FILE_HEADER_SIZE: usize = 32;
/// Bytes of a record header.
pub const RECORD_HEADER_SIZE: usize = 24;
/// Largest body a record may hold (the contract's largest request body is
/// far below it).
pub const BODY_MAX: u32 = 64 << 20;

/// One request of a traffic file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficRecord {
    /// When it is meant to be sent, from the start, in nanoseconds.
    pub offset_ns: u64,
    pub kind: u16,
    /// Records in the body (the frame's `count`).
    pub count: u32,
    pub body: Vec<u8>,
}

/// What went wrong reading a traffic file.
#[derive(Debug)]
pub enum TrafficError {
    Io(io::Error),
    /// Not a traffic file, or another version.
    Header(String),
    /// A record whose checksum fails (not at the end of the stream).
    Corrupt {
        record: u64,
        reason: String,
    },
}

impl std::fmt::Display for TrafficError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "traffic file: {e}"),
            Self::Header(why) => write!(f, "traffic file header: {why}"),
            Self::Corrupt { record, reason } => write!(f, "traffic record {record}: {reason}"),
        }
    }
}

impl std::error::Error for TrafficError {}

impl From<io::Error> for TrafficError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Writes a traffic file to any `Write` (buffer it: records are small).
pub struct TrafficWriter<W: Write> {
    out: W,
    last_offset: u64,
    records: u64,
}

impl<W: Write> TrafficWriter<W> {
    /// Starts a file: writes its header.
    pub fn new(mut out: W, created_unix_ms: u64) -> io::Result<Self> {
        let mut header = [0u8; FILE_HEADER_SIZE];
        header[0..4].copy_from_slice(&MAGIC);
        header[4..6].copy_from_slice(&VERSION.to_le_bytes());
        header[8..16].copy_from_slice(&created_unix_ms.to_le_bytes());
        out.write_all(&header)?;
        Ok(Self { out, last_offset: 0, records: 0 })
    }

    /// Appends a request. Offsets must not go backwards (a later one is
    /// raised to the last).
    pub fn write(&mut self, offset_ns: u64, kind: u16, count: u32, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len()).ok().filter(|l| *l <= BODY_MAX);
        let len =
            len.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "body too large for a traffic record"))?;
        let offset_ns = offset_ns.max(self.last_offset);
        self.last_offset = offset_ns;
        let mut header = [0u8; RECORD_HEADER_SIZE];
        header[4..8].copy_from_slice(&len.to_le_bytes());
        header[8..16].copy_from_slice(&offset_ns.to_le_bytes());
        header[16..18].copy_from_slice(&kind.to_le_bytes());
        header[20..24].copy_from_slice(&count.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[4..]), body);
        header[0..4].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(body)?;
        self.records += 1;
        Ok(())
    }

    /// Records written so far.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes and hands back the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a traffic file as a stream of records.
pub struct TrafficReader<R: Read> {
    input: R,
    /// The creation time in the header.
    pub created_unix_ms: u64,
    records: u64,
    /// Set when the stream ended inside a record (a torn tail).
    pub torn_tail: bool,
}

impl<R: Read> TrafficReader<R> {
    /// Opens a stream: reads and checks the header.
    pub fn new(mut input: R) -> Result<Self, TrafficError> {
        let mut header = [0u8; FILE_HEADER_SIZE];
        input.read_exact(&mut header).map_err(|e| TrafficError::Header(format!("too short: {e}")))?;
        if header[0..4] != MAGIC {
            return Err(TrafficError::Header("not a traffic file (magic)".into()));
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if version != VERSION {
            return Err(TrafficError::Header(format!("version {version}, this build reads {VERSION}")));
        }
        let created_unix_ms = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        Ok(Self { input, created_unix_ms, records: 0, torn_tail: false })
    }

    /// Records read so far.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next record; `None` at the end (or at a torn tail).
    pub fn next_record(&mut self) -> Result<Option<TrafficRecord>, TrafficError> {
        let mut header = [0u8; RECORD_HEADER_SIZE];
        match read_full(&mut self.input, &mut header)? {
            0 => return Ok(None),
            n if n < RECORD_HEADER_SIZE => {
                self.torn_tail = true;
                return Ok(None);
            }
            _ => {}
        }
        let crc = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let corrupt = |reason: String| TrafficError::Corrupt { record: self.records, reason };
        if len > BODY_MAX || header[18..20] != [0, 0] {
            return Err(corrupt(format!("header out of range (body {len} bytes)")));
        }
        let mut body = vec![0u8; len as usize];
        if read_full(&mut self.input, &mut body)? < body.len() {
            self.torn_tail = true;
            return Ok(None);
        }
        if crc32c::crc32c_append(crc32c::crc32c(&header[4..]), &body) != crc {
            return Err(corrupt("checksum fails".into()));
        }
        self.records += 1;
        Ok(Some(TrafficRecord {
            offset_ns: u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")),
            kind: u16::from_le_bytes([header[16], header[17]]),
            count: u32::from_le_bytes(header[20..24].try_into().expect("4 bytes")),
            body,
        }))
    }
}

impl<R: Read> Iterator for TrafficReader<R> {
    type Item = Result<TrafficRecord, TrafficError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// A request on its way to the recorder's thread: offset, kind, count, body.
type Taken = (u64, u16, u32, bytes::Bytes);

/// Records requests to a traffic file on its own thread, for
/// `harbour serve --record FILE`. Recording never blocks the switch and is
/// bounded in memory: a request that would take the recorder's queue past
/// `RECORDER_QUEUE_MAX` requests or `RECORDER_BYTES_MAX` bytes is not
/// recorded and is counted in `dropped` (say so when replaying such a
/// file). A write error stops recording (counted in `failed`), never the
/// switch.
pub struct Recorder {
    /// The queue (`None` tells the writer to finish) and the writer
    /// thread, taken by `finish`.
    tx: crossbeam_channel::Sender<Option<Taken>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<io::Result<u64>>>>,
    started: std::time::Instant,
    queued_bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Requests not recorded because the queue was full.
    pub dropped: std::sync::atomic::AtomicU64,
    /// Requests not recorded because writing had failed.
    pub failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Requests queued for the recorder's thread at most.
pub const RECORDER_QUEUE_MAX: usize = 65_536;
/// Bytes of request bodies queued for the recorder's thread at most (as the
/// shards' own queues: a slow disk never costs the switch more memory).
pub const RECORDER_BYTES_MAX: u64 = 256 << 20;

impl Recorder {
    /// Creates (truncates) the file and starts the writer thread.
    pub fn start(path: &std::path::Path) -> io::Result<Self> {
        use std::sync::atomic::Ordering;
        let file = std::fs::File::create(path)?;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut writer = TrafficWriter::new(io::BufWriter::with_capacity(1 << 20, file), now)?;
        let (tx, rx) = crossbeam_channel::bounded::<Option<Taken>>(RECORDER_QUEUE_MAX);
        let queued_bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (thread_bytes, thread_failed) = (std::sync::Arc::clone(&queued_bytes), std::sync::Arc::clone(&failed));
        let thread = std::thread::Builder::new().name("recorder".into()).spawn(move || {
            let mut error = None;
            for (offset_ns, kind, count, body) in rx.iter().map_while(|taken| taken) {
                thread_bytes.fetch_sub(body.len() as u64, Ordering::Relaxed);
                if error.is_some() {
                    thread_failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if let Err(e) = writer.write(offset_ns, kind, count, &body) {
                    thread_failed.fetch_add(1, Ordering::Relaxed);
                    error = Some(e);
                }
            }
            let records = writer.records();
            writer.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            error.map_or(Ok(records), Err)
        })?;
        Ok(Self {
            tx,
            thread: std::sync::Mutex::new(Some(thread)),
            started: std::time::Instant::now(),
            queued_bytes,
            dropped: std::sync::atomic::AtomicU64::new(0),
            failed,
        })
    }

    /// Records a request the switch took, at the time it took it (the body
    /// is shared, not copied).
    pub fn record(&self, kind: u16, count: u32, body: &bytes::Bytes) {
        use std::sync::atomic::Ordering;
        let offset_ns = self.started.elapsed().as_nanos() as u64;
        let len = body.len() as u64;
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > RECORDER_BYTES_MAX {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // After `finish` nobody reads the queue: it fills and drops.
        if self.tx.try_send(Some((offset_ns, kind, count, body.clone()))).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes out what is queued and syncs the file; returns the records
    /// written. Later calls (and drop) do nothing more.
    pub fn finish(&self) -> io::Result<u64> {
        let taken = self.thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match taken {
            Some(thread) => {
                // The writer drains what is queued before the marker.
                let _ = self.tx.send(None);
                thread.join().unwrap_or_else(|_| Err(io::Error::other("the recorder thread panicked")))
            }
            None => Ok(0),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!(error = %e, "recording traffic failed");
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match input.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<TrafficRecord> {
        (0..50u64)
            .map(|i| TrafficRecord {
                offset_ns: i * 1_000,
                kind: 0x11,
                count: (i % 4) as u32,
                body: vec![i as u8; (i % 4) as usize * 64],
            })
            .collect()
    }

    fn write(records: &[TrafficRecord]) -> Vec<u8> {
        let mut w = TrafficWriter::new(Vec::new(), 1_767_225_600_000).unwrap();
        for r in records {
            w.write(r.offset_ns, r.kind, r.count, &r.body).unwrap();
        }
        assert_eq!(w.records(), records.len() as u64);
        w.finish().unwrap()
    }

    #[test]
    fn round_trips() {
        let records = sample();
        let bytes = write(&records);
        let mut reader = TrafficReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.created_unix_ms, 1_767_225_600_000);
        let back: Vec<TrafficRecord> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(back, records);
        assert!(!reader.torn_tail);
    }

    #[test]
    fn a_torn_tail_ends_the_stream_and_corruption_is_an_error() {
        let records = sample();
        let bytes = write(&records);
        for cut in [bytes.len() - 1, bytes.len() - 70, FILE_HEADER_SIZE + 3] {
            let mut reader = TrafficReader::new(&bytes[..cut]).unwrap();
            let back: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
            assert!(reader.torn_tail, "cut at {cut}");
            assert_eq!(back[..], records[..back.len()]);
        }
        let mut flipped = bytes.clone();
        flipped[FILE_HEADER_SIZE + RECORD_HEADER_SIZE + 200] ^= 1;
        let results: Vec<_> = TrafficReader::new(&flipped[..]).unwrap().collect();
        assert!(results.iter().any(Result::is_err), "a flipped bit is caught");
        assert!(TrafficReader::new(&b"HBTX"[..]).is_err());
        let mut other = bytes;
        other[4] = 2;
        assert!(matches!(TrafficReader::new(&other[..]), Err(TrafficError::Header(_))));
    }

    #[test]
    fn offsets_never_go_backwards() {
        let mut w = TrafficWriter::new(Vec::new(), 0).unwrap();
        w.write(500, 1, 0, &[]).unwrap();
        w.write(100, 1, 0, &[]).unwrap();
        let bytes = w.finish().unwrap();
        let offsets: Vec<u64> = TrafficReader::new(&bytes[..]).unwrap().map(|r| r.unwrap().offset_ns).collect();
        assert_eq!(offsets, [500, 500]);
    }
}
