//! What the host does to a request's latency that the switch cannot: read at
//! start and named in the log, so an operator tuning the tail knows.
//!
//! On a KVM guest with the `haltpoll` idle driver and
//! `guest_halt_poll_ns = 0`, every idle vCPU halts at once, and every wake-up
//! (the fsync's completion, the shard waking the connection's writer) costs
//! a VM exit and an interrupt through the host: on the benchmark box that
//! was 40-60 µs of a 200 µs single-request round trip (see
//! `docs/operations.md`, "Latency on a virtual machine").

const IDLE_DRIVER: &str = "/sys/devices/system/cpu/cpuidle/current_driver";
const HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// The hints this host earns, one line each; empty when nothing is known to
/// cost latency (or the files are not there: not Linux, not a guest).
pub fn latency_hints() -> Vec<String> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    halt_poll_hint(read(IDLE_DRIVER).as_deref(), read(HALT_POLL_NS).as_deref()).into_iter().collect()
}

/// The hint for the guest's idle polling, from the two files' contents.
fn halt_poll_hint(driver: Option<&str>, poll_ns: Option<&str>) -> Option<String> {
    if driver?.trim() != "haltpoll" {
        return None;
    }
    let ns: u64 = poll_ns?.trim().parse().ok()?;
    (ns == 0).then(|| {
        format!(
            "{HALT_POLL_NS} is 0: an idle vCPU halts at once and every wake-up costs a VM exit; \
             200000 cut the single-request round trip by a third here (docs/operations.md)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::halt_poll_hint;

    #[test]
    fn only_a_haltpoll_guest_that_never_polls_earns_the_hint() {
        assert!(halt_poll_hint(Some("haltpoll\n"), Some("0\n")).is_some_and(|h| h.contains("guest_halt_poll_ns")));
        assert_eq!(halt_poll_hint(Some("haltpoll\n"), Some("200000\n")), None);
        assert_eq!(halt_poll_hint(Some("intel_idle\n"), Some("0\n")), None);
        assert_eq!(halt_poll_hint(Some("haltpoll\n"), None), None);
        assert_eq!(halt_poll_hint(None, Some("0\n")), None);
        assert_eq!(halt_poll_hint(Some("haltpoll\n"), Some("garbage")), None);
    }
}
