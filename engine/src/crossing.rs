//! The cross-shard side of a transfer: a credit sent to the account's
//! shard, a credit applied from another shard, and what their
//! acknowledgements and refunds do.

use super::*;

impl Engine {
    /// Applies a LINK_IN record: the peer's entries in sequence (each
    /// once), then its acknowledgement, which posts the transfers it
    /// covers. Refunds come before the acknowledgement of the credits they
    /// answer (`Links::message`), so a refused credit is voided, never
    /// posted.
    pub(crate) fn link_in(&mut self, m: &links::LinkIn) {
        let peer = m.from;
        for (i, e) in m.entries.iter().enumerate() {
            // As in `submit_batch`: the credited accounts' slots, then their
            // entries, ahead of use, so the misses overlap.
            if let Some(ahead) = m.entries.get(i + PREFETCH_AHEAD) {
                self.book.prefetch_slot(ahead.account);
            }
            if let Some(ahead) = m.entries.get(i + PREFETCH_AHEAD / 2) {
                self.book.prefetch_entry(ahead.account);
            }
            let link = &mut self.links.links[usize::from(peer)];
            if e.seq <= link.applied {
                continue;
            }
            assert_eq!(e.seq, link.applied + 1, "entries from shard {peer} skip a sequence");
            link.applied = e.seq;
            match e.kind {
                EntryKind::Credit => self.apply_credit(peer, e),
                EntryKind::Refund => {
                    let (credit, flight) =
                        self.links.flight(peer, e.amount).expect("a refund answers a credit in flight");
                    assert_eq!(credit.id, e.id, "a refund names its credit's transfer");
                    assert_eq!(self.transfers.get(flight.at).holds, Holds::IN_FLIGHT.bits(), "refunded once");
                    self.void_entry(flight.at, &flight, VoidReason::Refused);
                    self.refunds += 1;
                }
                EntryKind::Account => {
                    self.links.remote.insert(e.account);
                }
                EntryKind::QuoteSpent => self.quotes.spend_remote(e.id as u64),
            }
        }
        // The acknowledged transfers post in outbox order; their records,
        // then their debit accounts' slots and entries, are loaded ahead.
        let p = usize::from(peer);
        let ack = m.ack;
        let ahead = |links: &Links, k: usize| {
            let link = &links.links[p];
            link.outbox.get(k).filter(|e| e.seq <= ack)?;
            link.flights.get(k).copied().flatten()
        };
        loop {
            if let Some(f) = ahead(&self.links, PREFETCH_AHEAD) {
                self.transfers.prefetch_at(f.at);
            }
            if let Some(f) = ahead(&self.links, PREFETCH_AHEAD / 2) {
                self.book.prefetch_slot(self.transfers.get(f.at).debit_account);
            }
            if let Some(f) = ahead(&self.links, PREFETCH_AHEAD / 4) {
                self.book.prefetch_entry(self.transfers.get(f.at).debit_account);
            }
            let Some(flight) = self.links.pop_acknowledged(peer, m.ack) else { break };
            if let Some(flight) = flight {
                self.finish_flight(&flight);
            }
        }
    }

    /// A CREDIT from another shard: from this shard's part of INTERSHARD to
    /// the account, or, if the account can't take it (its balance would
    /// overflow), a REFUND back.
    pub(crate) fn apply_credit(&mut self, peer: u16, e: &links::Entry) {
        let inter = self.book.system(book::INTERSHARD);
        let currency = CurrencyIndex::of(e.currency).expect("a credit's currency was checked at submission");
        let fits =
            self.book.find(e.account).filter(|&c| self.book.entry(c).kind == AccountKind::Customer).filter(|&c| {
                i64::try_from(e.amount).is_ok()
                    && check_credit(&self.book.balance_at(c, currency), e.amount).is_ok()
                    && check_system_debit(&self.book.balance_at(inter, currency), e.amount).is_ok()
            });
        match fits {
            Some(credit) => {
                let amount = i64::try_from(e.amount).expect("checked");
                self.add(inter, currency, -amount);
                self.add(credit, currency, amount);
                // A customer's credit names its sender (0: a system account's).
                if self.config.aml.mule_runs() && e.sender != 0 {
                    self.feed_inbound(credit, e.sender, currency, e.amount);
                }
            }
            None => {
                self.links.push(peer, EntryKind::Refund, e.id, 0, 0, e.seq);
                self.link_wait = true;
            }
        }
    }

    /// Puts the credit of an in-flight transfer in the outbox to its credit
    /// account's shard, with its timing beside it.
    pub(crate) fn send_credit(&mut self, at: TransferIndex, flight: PendingEntry) {
        let s = *self.transfers.get(at);
        let peer = shard_of(s.credit_account, usize::from(self.links.shards())) as u16;
        let entry = links::Entry {
            seq: 0,
            kind: EntryKind::Credit,
            id: s.id(),
            account: s.credit_account,
            currency: s.credit_currency.code(),
            amount: s.credit_amount,
            sender: match self.book.find(s.debit_account) {
                Some(d) if self.book.entry(d).kind == AccountKind::Customer => {
                    crate::aml::mule::sender_key(s.debit_account)
                }
                _ => 0,
            },
        };
        self.links.push_flight(peer, entry, Some(flight));
        self.link_wait = true;
    }

    /// Where a stored transfer's credit leg lands on this shard: its credit
    /// account, or INTERSHARD for another shard's customer.
    pub(crate) fn credit_leg(&self, account: u64) -> AccountPos {
        self.book.find(account).unwrap_or_else(|| {
            assert!(self.links.remote.contains(&account), "credit account {account} is known");
            self.book.system(book::INTERSHARD)
        })
    }

    /// The credit of a transfer in flight was applied: it posts (unless a
    /// refund voided it first).
    pub(crate) fn finish_flight(&mut self, flight: &PendingEntry) {
        if self.transfers.get(flight.at).holds == Holds::IN_FLIGHT.bits() {
            let inter = self.book.system(book::INTERSHARD);
            self.post(flight.at, flight, inter);
        }
    }
}
