//! One request's timeline, for `serve --trace-sample N`: the switch marks
//! one request in N at every step of its life and logs the whole of it
//! once its answer is written (`docs/operations.md`, "A request's
//! timeline"). Every request's steps are also histograms
//! (`metrics::Stage`); a trace shows how they add up for one request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// The steps of a request's life, after the read that completed its frame
/// (the trace's origin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Its frame's checks start.
    Decoded = 0,
    /// Handed to a shard's queue.
    Queued = 1,
    /// Taken off the queue by the shard.
    Taken = 2,
    /// Its group starts.
    GroupStart = 3,
    /// The engine starts applying it.
    ApplyStart = 4,
    /// The engine applied it.
    ApplyEnd = 5,
    /// Its group's write and sync start.
    FsyncStart = 6,
    /// Its group is durable.
    FsyncEnd = 7,
    /// Its answer is queued for the connection's writer.
    Answered = 8,
    /// Its answer's bytes are written to the socket.
    Written = 9,
}

impl Mark {
    /// Every mark, in order.
    pub const ALL: [Mark; 10] = [
        Self::Decoded,
        Self::Queued,
        Self::Taken,
        Self::GroupStart,
        Self::ApplyStart,
        Self::ApplyEnd,
        Self::FsyncStart,
        Self::FsyncEnd,
        Self::Answered,
        Self::Written,
    ];

    /// Its name in the log line.
    #[must_use]
    pub fn name(self) -> &'static str {
        [
            "decoded",
            "queued",
            "taken",
            "group_start",
            "apply_start",
            "apply_end",
            "fsync_start",
            "fsync_end",
            "answered",
            "written",
        ][self as usize]
    }
}

/// A sampled request's marks, in nanoseconds after its frame was read.
/// Shared by the connection and the shard(s) that apply it; with several
/// shards each mark is the latest part's.
#[derive(Debug)]
pub struct Trace {
    origin: Instant,
    pub request_id: u64,
    pub kind: u16,
    pub count: u32,
    marks: [AtomicU64; Mark::ALL.len()],
    /// Requests in the group it was applied in (the largest, across shards).
    group: AtomicU32,
}

impl Trace {
    /// A trace of the request whose frame was read at `origin`.
    #[must_use]
    pub fn new(origin: Instant, request_id: u64, kind: u16, count: u32) -> Arc<Self> {
        Arc::new(Self {
            origin,
            request_id,
            kind,
            count,
            marks: [const { AtomicU64::new(0) }; Mark::ALL.len()],
            group: AtomicU32::new(0),
        })
    }

    /// Marks `mark` as reached at `at`.
    pub fn mark(&self, mark: Mark, at: Instant) {
        let ns = u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        self.marks[mark as usize].fetch_max(ns, Ordering::Relaxed);
    }

    /// Notes the size of the group it was applied in.
    pub fn group(&self, requests: usize) {
        self.group.fetch_max(u32::try_from(requests).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// The marks reached, in µs after the read (a mark never reached, as
    /// the shard's for a request answered without one, is `None`).
    #[must_use]
    pub fn micros(&self) -> [Option<f64>; Mark::ALL.len()] {
        Mark::ALL.map(|m| match self.marks[m as usize].load(Ordering::Relaxed) {
            0 => None,
            ns => Some(ns as f64 / 1_000.0),
        })
    }

    /// The timeline as one line: each mark's time after the read and the
    /// gap since the mark before it, in µs.
    #[must_use]
    pub fn line(&self) -> String {
        let mut out = format!(
            "request {} kind {:#06x} count {} group {}: read 0",
            self.request_id,
            self.kind,
            self.count,
            self.group.load(Ordering::Relaxed)
        );
        let mut before = 0.0;
        for (mark, at) in Mark::ALL.iter().zip(self.micros()) {
            if let Some(at) = at {
                out.push_str(&format!(" {} {at:.1} (+{:.1})", mark.name(), at - before));
                before = at;
            }
        }
        out.push_str(" µs");
        out
    }

    /// Logs the timeline (target `harbour::trace`, level info).
    pub fn log(&self) {
        tracing::info!(target: "harbour::trace", "{}", self.line());
    }
}

/// Which requests to trace: one in `every` (0: none).
#[derive(Debug, Default)]
pub struct Sampler {
    every: u64,
    seen: AtomicU64,
}

impl Sampler {
    #[must_use]
    pub fn new(every: u64) -> Self {
        Self { every, seen: AtomicU64::new(0) }
    }

    /// Whether the next request is traced.
    pub fn take(&self) -> bool {
        self.every != 0 && self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_trace_reads_as_marks_and_gaps_in_order() {
        let origin = Instant::now();
        let trace = Trace::new(origin, 7, 0x0011, 100);
        trace.mark(Mark::Decoded, origin + Duration::from_micros(3));
        trace.mark(Mark::Queued, origin + Duration::from_micros(10));
        trace.mark(Mark::Written, origin + Duration::from_micros(400));
        // Two shards mark the same step: the later one stands.
        trace.mark(Mark::FsyncEnd, origin + Duration::from_micros(300));
        trace.mark(Mark::FsyncEnd, origin + Duration::from_micros(250));
        trace.group(4);
        assert_eq!(
            trace.line(),
            "request 7 kind 0x0011 count 100 group 4: read 0 decoded 3.0 (+3.0) queued 10.0 (+7.0) \
             fsync_end 300.0 (+290.0) written 400.0 (+100.0) µs"
        );
    }

    #[test]
    fn one_request_in_n_is_sampled() {
        let sampler = Sampler::new(3);
        let taken: Vec<bool> = (0..7).map(|_| sampler.take()).collect();
        assert_eq!(taken, [true, false, false, true, false, false, true]);
        assert!(!Sampler::new(0).take(), "0 traces nothing");
    }
}
