//! A brief run of the torture harness (`harbour-loadtest torture`): real
//! `harbour serve` processes with two shards under mixed traffic, killed
//! with SIGKILL six times, one cycle with the disk filled past the reserve
//! (and, by the seed, a start refused on it) and one with slow fsyncs; after
//! every restart every answer is checked against the books. The long run's
//! figures are in docs/reliability.md.

use std::time::Duration;

use harbour_loadtest::torture::{self, TortureConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_switches_keep_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let config = TortureConfig {
        harbour: env!("CARGO_BIN_EXE_harbour").into(),
        dir: dir.path().to_path_buf(),
        cycles: 6,
        shards: 2,
        seed: 7,
        connections: 3,
        run_max: Duration::from_millis(400),
        disk_full_every: 3,
        slow_disk_every: 4,
        transfers_capacity: 1 << 16,
        progress: None,
    };
    let report = torture::run(&config).await.expect("the harness runs");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!((report.cycles, report.kills), (6, 6));
    assert!(report.transfers_answered_ok > 100, "traffic ran: {report:?}");
    assert!(report.effects_checked > 1_000, "{report:?}");
    assert_eq!(report.slow_disk_cycles, 1);
    if !report.disk_full_skipped {
        assert_eq!(report.disk_full_cycles, 2);
        assert!(report.refused_busy_disk > 0, "a full disk refused writes: {report:?}");
    }
}
