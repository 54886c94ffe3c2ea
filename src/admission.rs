//! Connection admission that no one can exhaust (issue 16,
//! `docs/security.md`).
//!
//! A connection that has not said HELLO yet is *unauthenticated*: it holds
//! one of `unauthenticated_max` places, at most `per_address_max` of them
//! per source address, for at most the handshake deadline. When every
//! place is taken, a newcomer takes the place of the oldest unauthenticated
//! connection, which is closed: a flood of silent connections, from as
//! many addresses as it likes, only ever evicts itself, while a real
//! channel says HELLO within a round trip and moves on. On HELLO the
//! connection gives its place back and takes a seat of its channel's own
//! quota (`[[channels]] connections_max`) and of the switch's
//! (`connections_max`); a channel over its quota is refused BUSY, and no
//! other channel's connection is. Its requests then pass its channel's own
//! limits (requests in flight over all its connections, records per
//! second): a channel over them gets BUSY for its own frames only.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::metrics::METRICS;

/// The places and seats of one listener.
pub struct Gate {
    unauthenticated_max: usize,
    per_address_max: usize,
    waiting: Mutex<Waiting>,
    /// Seats of every authenticated connection (`connections_max`).
    seats: Arc<Semaphore>,
    /// Each channel's own limits, by channel id (replaced by a reload;
    /// connections seated before keep the limits they were seated with).
    channels: parking_lot::RwLock<HashMap<u32, Arc<Channel>>>,
}

/// A channel's own limits, as configured (`[[channels]]`); none: only the
/// switch's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelLimits {
    pub connections_max: Option<usize>,
    /// Requests in flight over all its connections.
    pub in_flight_max: Option<usize>,
    /// Records per second, as a token bucket holding `burst` records.
    pub records_per_second: Option<u64>,
    pub burst: u64,
}

/// One channel's quotas, shared by its connections.
struct Channel {
    /// As configured: a reload that leaves them as they are keeps these
    /// very quotas (and what they hold).
    limits: ChannelLimits,
    connections: Option<Arc<Semaphore>>,
    in_flight: Option<Arc<Semaphore>>,
    bucket: Option<Mutex<Bucket>>,
}

/// A token bucket of records.
struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn take(&mut self, records: u32) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens < f64::from(records) {
            return false;
        }
        self.tokens -= f64::from(records);
        true
    }
}

#[derive(Default)]
struct Waiting {
    next: u64,
    /// Unauthenticated connections, oldest first: their address, and how
    /// to tell one it was evicted.
    places: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    per_address: HashMap<IpAddr, usize>,
}

impl Waiting {
    fn forget(&mut self, addr: IpAddr) {
        if let Some(n) = self.per_address.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&addr);
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address already has `per_address_max` connections awaiting HELLO.
    Address,
    /// Its channel has all its seats taken.
    ChannelFull,
    /// Every seat of the switch is taken.
    Full,
    /// Its channel has `max_in_flight` requests unanswered.
    ChannelInFlight,
    /// Its channel sent more than `records_per_second` allow.
    ChannelRate,
}

impl Refused {
    #[must_use]
    pub fn detail(self) -> &'static str {
        match self {
            Self::Address => "too many connections from this address awaiting HELLO",
            Self::ChannelFull => "this channel's connection limit is reached",
            Self::Full => "connection limit reached",
            Self::ChannelInFlight => "this channel's max_in_flight is reached; nothing applied",
            Self::ChannelRate => "this channel is over its records_per_second; nothing applied",
        }
    }
}

/// An unauthenticated connection's place: given back when dropped.
pub struct Place {
    gate: Arc<Gate>,
    id: u64,
    addr: IpAddr,
}

/// An authenticated connection's seats: given back when dropped. Its
/// requests pass its channel's limits through it.
pub struct Seat {
    _switch: OwnedSemaphorePermit,
    _channel: Option<OwnedSemaphorePermit>,
    limits: Option<Arc<Channel>>,
}

impl Seat {
    /// Admits a request of `records` records under its channel's limits:
    /// the channel's in-flight place it holds until answered, if the
    /// channel has a bound.
    pub fn admit(&self, records: u32) -> Result<Option<OwnedSemaphorePermit>, Refused> {
        let Some(limits) = &self.limits else { return Ok(None) };
        let place = match &limits.in_flight {
            Some(s) => Some(Arc::clone(s).try_acquire_owned().map_err(|_| Refused::ChannelInFlight)?),
            None => None,
        };
        if let Some(bucket) = &limits.bucket
            && !bucket.lock().take(records)
        {
            return Err(Refused::ChannelRate);
        }
        Ok(place)
    }
}

impl Gate {
    /// `channels`: each channel's id and its own limits.
    #[must_use]
    pub fn new(
        unauthenticated_max: usize,
        per_address_max: usize,
        connections_max: usize,
        channels: impl IntoIterator<Item = (u32, ChannelLimits)>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            unauthenticated_max: unauthenticated_max.max(1),
            per_address_max: per_address_max.max(1),
            waiting: Mutex::default(),
            seats: Arc::new(Semaphore::new(connections_max)),
            channels: parking_lot::RwLock::new(limits_of(channels)),
        })
    }

    /// Each channel's limits from now on (a reload). A channel whose limits
    /// are unchanged keeps its quotas as they are (its seats, in-flight
    /// places and bucket), so a reload never hands anyone fresh ones; a
    /// channel whose limits change starts new quotas, which its sessions
    /// opened before do not count against.
    pub fn set_channels(&self, channels: impl IntoIterator<Item = (u32, ChannelLimits)>) {
        let mut current = self.channels.write();
        let mut next = limits_of(channels);
        for (id, channel) in &mut next {
            if let Some(kept) = current.get(id).filter(|c| c.limits == channel.limits) {
                *channel = Arc::clone(kept);
            }
        }
        *current = next;
    }

    /// Admits a new connection from `addr` as unauthenticated, evicting the
    /// oldest unauthenticated connection if every place is taken. The
    /// receiver fires if this one is evicted in turn.
    pub fn admit(self: &Arc<Gate>, addr: IpAddr) -> Result<(Place, oneshot::Receiver<()>), Refused> {
        let mut waiting = self.waiting.lock();
        if waiting.per_address.get(&addr).copied().unwrap_or(0) >= self.per_address_max {
            return Err(Refused::Address);
        }
        if waiting.places.len() >= self.unauthenticated_max
            && let Some((_, (old, evict))) = waiting.places.pop_first()
        {
            waiting.forget(old);
            let _ = evict.send(());
            METRICS.connections_evicted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (tx, rx) = oneshot::channel();
        let id = waiting.next;
        waiting.next += 1;
        waiting.places.insert(id, (addr, tx));
        *waiting.per_address.entry(addr).or_default() += 1;
        METRICS.connections_unauthenticated.store(waiting.places.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((Place { gate: Arc::clone(self), id, addr }, rx))
    }

    /// After a good HELLO from `channel`: its seats, and the place given
    /// back.
    pub fn seat(&self, place: Place, channel: u32) -> Result<Seat, Refused> {
        let limits = self.channels.read().get(&channel).cloned();
        let quota = match limits.as_ref().and_then(|l| l.connections.as_ref()) {
            Some(q) => Some(Arc::clone(q).try_acquire_owned().map_err(|_| Refused::ChannelFull)?),
            None => None,
        };
        let seat = Arc::clone(&self.seats).try_acquire_owned().map_err(|_| Refused::Full)?;
        drop(place);
        Ok(Seat { _switch: seat, _channel: quota, limits })
    }
}

fn limits_of(channels: impl IntoIterator<Item = (u32, ChannelLimits)>) -> HashMap<u32, Arc<Channel>> {
    let semaphore = |n: Option<usize>| n.map(|n| Arc::new(Semaphore::new(n)));
    channels
        .into_iter()
        .map(|(id, l)| {
            let bucket = l.records_per_second.map(|r| {
                let burst = l.burst.max(r) as f64;
                Mutex::new(Bucket { per_second: r as f64, burst, tokens: burst, at: std::time::Instant::now() })
            });
            let channel = Channel {
                limits: l,
                connections: semaphore(l.connections_max),
                in_flight: semaphore(l.in_flight_max),
                bucket,
            };
            (id, Arc::new(channel))
        })
        .collect()
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut waiting = self.gate.waiting.lock();
        // An evicted connection's place was given back when it was evicted.
        if waiting.places.remove(&self.id).is_some() {
            waiting.forget(self.addr);
        }
        METRICS.connections_unauthenticated.store(waiting.places.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_oldest_unauthenticated_is_evicted_and_addresses_are_bounded() {
        let one = ChannelLimits { connections_max: Some(1), ..ChannelLimits::default() };
        let gate = Gate::new(3, 2, 10, [(1, one), (2, ChannelLimits::default())]);
        let (a, mut a_evicted) = gate.admit(ip(1)).unwrap();
        let (_b, _) = gate.admit(ip(1)).unwrap();
        assert_eq!(gate.admit(ip(1)).err(), Some(Refused::Address), "two per address");
        let (_c, _) = gate.admit(ip(2)).unwrap();
        assert!(a_evicted.try_recv().is_err(), "not yet");
        let (_d, _) = gate.admit(ip(3)).unwrap();
        assert!(a_evicted.try_recv().is_ok(), "the oldest made room");
        // Its address has a free place again.
        let (e, _) = gate.admit(ip(1)).unwrap();
        drop(a);
        // A channel's quota is its own; the switch's bounds them all.
        let seat = gate.seat(e, 1).unwrap();
        let (f, _) = gate.admit(ip(4)).unwrap();
        assert_eq!(gate.seat(f, 1).err(), Some(Refused::ChannelFull));
        let (g, _) = gate.admit(ip(4)).unwrap();
        assert!(gate.seat(g, 2).is_ok(), "another channel is not affected");
        drop(seat);
        let (h, _) = gate.admit(ip(5)).unwrap();
        assert!(gate.seat(h, 1).is_ok(), "a seat given back is taken again");
    }

    #[test]
    fn a_channel_is_held_to_its_in_flight_and_rate() {
        let limits =
            ChannelLimits { in_flight_max: Some(2), records_per_second: Some(100), burst: 150, ..Default::default() };
        let gate = Gate::new(4, 4, 10, [(1, limits)]);
        let seat = gate.seat(gate.admit(ip(1)).unwrap().0, 1).unwrap();
        let other = gate.seat(gate.admit(ip(2)).unwrap().0, 1).unwrap();
        let a = seat.admit(100).unwrap();
        let _b = other.admit(10).unwrap();
        assert_eq!(seat.admit(1).err(), Some(Refused::ChannelInFlight), "two in flight, over both connections");
        drop(a);
        assert_eq!(seat.admit(100).err(), Some(Refused::ChannelRate), "40 of the burst's 150 left");
        assert!(seat.admit(40).is_ok(), "what is left passes");
        let unlimited = gate.seat(gate.admit(ip(3)).unwrap().0, 9).unwrap();
        assert!(unlimited.admit(8189).unwrap().is_none(), "a channel without limits");
    }

    #[test]
    fn a_reload_keeps_unchanged_quotas_and_renews_changed_ones() {
        let one = ChannelLimits { connections_max: Some(1), ..ChannelLimits::default() };
        let gate = Gate::new(4, 4, 10, [(1, one)]);
        let _seat = gate.seat(gate.admit(ip(1)).unwrap().0, 1).unwrap();
        gate.set_channels([(1, one)]);
        let again = gate.seat(gate.admit(ip(2)).unwrap().0, 1);
        assert_eq!(again.err(), Some(Refused::ChannelFull), "a reload hands out no fresh seat");
        let two = ChannelLimits { connections_max: Some(2), ..ChannelLimits::default() };
        gate.set_channels([(1, two)]);
        assert!(gate.seat(gate.admit(ip(2)).unwrap().0, 1).is_ok(), "changed limits: new quotas");
    }
}
