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
//! other channel's connection is.

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
    /// Each channel's own quota, by channel id.
    quotas: HashMap<u32, Arc<Semaphore>>,
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
}

impl Refused {
    #[must_use]
    pub fn detail(self) -> &'static str {
        match self {
            Self::Address => "too many connections from this address awaiting HELLO",
            Self::ChannelFull => "this channel's connection limit is reached",
            Self::Full => "connection limit reached",
        }
    }
}

/// An unauthenticated connection's place: given back when dropped.
pub struct Place {
    gate: Arc<Gate>,
    id: u64,
    addr: IpAddr,
}

/// An authenticated connection's seats: given back when dropped.
pub struct Seat {
    _switch: OwnedSemaphorePermit,
    _channel: Option<OwnedSemaphorePermit>,
}

impl Gate {
    /// `quotas`: each channel's id and its own limit, if it has one.
    #[must_use]
    pub fn new(
        unauthenticated_max: usize,
        per_address_max: usize,
        connections_max: usize,
        quotas: impl IntoIterator<Item = (u32, Option<usize>)>,
    ) -> Arc<Gate> {
        let quotas = quotas.into_iter().filter_map(|(id, max)| Some((id, Arc::new(Semaphore::new(max?))))).collect();
        Arc::new(Gate {
            unauthenticated_max: unauthenticated_max.max(1),
            per_address_max: per_address_max.max(1),
            waiting: Mutex::default(),
            seats: Arc::new(Semaphore::new(connections_max)),
            quotas,
        })
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
        let quota = match self.quotas.get(&channel) {
            Some(q) => Some(Arc::clone(q).try_acquire_owned().map_err(|_| Refused::ChannelFull)?),
            None => None,
        };
        let seat = Arc::clone(&self.seats).try_acquire_owned().map_err(|_| Refused::Full)?;
        drop(place);
        Ok(Seat { _switch: seat, _channel: quota })
    }
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
        let gate = Gate::new(3, 2, 10, [(1, Some(1)), (2, None)]);
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
}
