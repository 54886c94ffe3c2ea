//! loom models of the thread handoffs (`harbour::handoff`): every
//! interleaving of a few threads, with the crate's atomics swapped for
//! loom's through `crate::sync`. Run with
//! `cargo test --features loom --test loom` (CI does); without the feature
//! this file is empty.
#![cfg(feature = "loom")]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::mpsc;
use loom::thread;

use harbour::handoff::{Admission, Settled, Windows};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// Connection tasks admitting requests at once (network → shards): what is
/// admitted never exceeds the bound, a refusal changes nothing, and every
/// admitted byte is given back.
#[test]
fn admission_never_exceeds_its_bound() {
    model(|| {
        let admission = Arc::new(Admission::new(10));
        let held = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (admission, held) = (Arc::clone(&admission), Arc::clone(&held));
                thread::spawn(move || {
                    if admission.admit(4, false) {
                        let now = held.fetch_add(4, Ordering::SeqCst) + 4;
                        assert!(now <= 10, "{now} bytes admitted past a bound of 10");
                        held.fetch_sub(4, Ordering::SeqCst);
                        admission.release(4);
                        true
                    } else {
                        false
                    }
                })
            })
            .collect();
        let admitted = threads.into_iter().map(|t| t.join().unwrap()).filter(|&a| a).count();
        assert!(admitted >= 1, "someone is admitted");
        assert_eq!(admission.queued(), 0, "every admitted byte given back");
    });
}

/// One shard sending link messages to another through a window of 2
/// (shard → shard): the queue never holds more than the window, nothing
/// is lost or reordered, and the sender never waits on the receiver.
#[test]
fn a_link_window_bounds_the_queue_and_loses_nothing() {
    const MESSAGES: u32 = 4;
    model(|| {
        let windows = Arc::new(Windows::new(2, 2));
        let in_queue = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel::<u32>();
        let sender = {
            let (windows, in_queue) = (Arc::clone(&windows), Arc::clone(&in_queue));
            thread::spawn(move || {
                let mut next = 0;
                while next < MESSAGES {
                    if windows.try_take(0, 1) {
                        let queued = in_queue.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(queued <= 2, "{queued} messages queued in a window of 2");
                        tx.send(next).unwrap();
                        next += 1;
                    } else {
                        // The shard goes on with its own work and retries.
                        thread::yield_now();
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < MESSAGES as usize {
            match rx.try_recv() {
                Ok(m) => {
                    in_queue.fetch_sub(1, Ordering::SeqCst);
                    windows.give_back(0, 1);
                    got.push(m);
                }
                Err(_) => thread::yield_now(),
            }
        }
        sender.join().unwrap();
        assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>());
        assert_eq!(windows.queued(0, 1), 0);
    });
}

/// A stop while shard 0 has a credit in flight to shard 1: neither stops
/// before the credit is applied and acknowledged, and both do stop.
#[test]
fn a_stop_waits_for_what_is_in_flight() {
    model(|| {
        let settled = Arc::new(Settled::new(2));
        let (to_one, from_zero) = mpsc::channel::<&'static str>();
        let (to_zero, from_one) = mpsc::channel::<&'static str>();
        let applied = Arc::new(AtomicUsize::new(0));
        let zero = {
            let settled = Arc::clone(&settled);
            thread::spawn(move || {
                // The credit was logged before the stop; now it is sent.
                to_one.send("credit").unwrap();
                let mut unacked = 1;
                loop {
                    if from_one.try_recv().is_ok() {
                        unacked = 0;
                    }
                    settled.publish(0, unacked == 0);
                    if unacked == 0 && settled.all() {
                        return;
                    }
                    thread::yield_now();
                }
            })
        };
        let one = {
            let (settled, applied) = (Arc::clone(&settled), Arc::clone(&applied));
            thread::spawn(move || {
                loop {
                    if from_zero.try_recv().is_ok() {
                        applied.fetch_add(1, Ordering::SeqCst);
                        // Acknowledged in the same step, before publishing.
                        to_zero.send("ack").unwrap();
                    }
                    settled.publish(1, true);
                    if settled.all() {
                        return;
                    }
                    thread::yield_now();
                }
            })
        };
        zero.join().unwrap();
        one.join().unwrap();
        assert_eq!(applied.load(Ordering::SeqCst), 1, "the credit was applied before both stopped");
    });
}
