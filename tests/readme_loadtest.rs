//! The README's "A one-minute load test", its `$L` commands run as written
//! (through the load tester's own command line, in this process) against a
//! fresh switch, with two changes so a debug build in CI finishes in
//! seconds: the volumes are divided (`--transfers` by 1,000, `--accounts`
//! and `--rate` by 100, so the minute is six seconds), and `xdg-open` is
//! not run. It checks what the prose after the block promises: the
//! summary's throughput and codes, the `.hgrm` and the plot. One test in
//! its own binary: it sets the working directory and `HARBOUR_ADDR`.

mod common;

/// A command's words with its volumes divided for CI.
fn scaled(words: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let divisor = match i.checked_sub(1).map(|j| words[j]) {
            Some("--transfers") => 1_000,
            Some("--accounts" | "--rate") => 100,
            _ => 1,
        };
        out.push(match w.parse::<u64>() {
            Ok(n) if divisor > 1 => (n / divisor).max(100).to_string(),
            _ => (*w).to_string(),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_minute_load_test_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::server_config(&dir.path().join("data"));
    config.switch.clock = harbour::clock::Clock::System;
    config.switch.engine.accounts_capacity = 1 << 14;
    config.switch.engine.transfers_capacity = 1 << 16;
    let running = harbour::server::start(&config).await.unwrap();
    // SAFETY: the only test of this binary; nothing else reads the
    // environment or the working directory while it runs.
    unsafe { std::env::set_var("HARBOUR_ADDR", running.addr.to_string()) };
    std::env::set_current_dir(dir.path()).unwrap();

    let lines = common::readme_block("A one-minute load test");
    let mut ran = Vec::new();
    for line in &lines {
        let (command, _) = line.split_once(" #").unwrap_or((line, ""));
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.first().copied() {
            None => continue,
            Some("cargo") => assert_eq!(words, ["cargo", "build", "--release"], "the block builds the binaries"),
            Some("L=target/release/harbour-loadtest") => {}
            Some("xdg-open") => assert_eq!(words.get(1).copied(), Some("run.svg")),
            Some("$L") => {
                let args = std::iter::once("harbour-loadtest".to_string()).chain(scaled(&words[1..]));
                let cli = <harbour_loadtest::cli::Cli as clap::Parser>::try_parse_from(args)
                    .unwrap_or_else(|e| panic!("`{command}` does not parse: {e}"));
                harbour_loadtest::cli::run(cli).await.unwrap_or_else(|e| panic!("`{command}`: {e}"));
                ran.push(words[1].to_string());
            }
            Some(other) => panic!("a command the test does not know: {other}"),
        }
    }
    assert_eq!(ran, ["gen", "replay", "bench"]);
    // What the prose after the block says `replay` leaves.
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string("run.json").unwrap()).unwrap();
    assert!(json["records_per_second"].as_f64().is_some_and(|r| r > 0.0), "{json}");
    assert!(json["latency_us"]["p99.99"].as_u64().is_some() && json["codes"]["OK"].as_u64().is_some(), "{json}");
    // A paced replay says how late the tester itself sent.
    let late = &json["sent_late_us"];
    assert!(["p50", "p99", "p99.9", "max"].iter().all(|q| late[q].as_f64().is_some()), "{json}");
    eprintln!("replay: {} s, {} records", json["seconds"], json["records"]);
    let hgrm = std::fs::read_to_string("run.hgrm").unwrap();
    assert!(hgrm.contains("Percentile") && hgrm.contains("milliseconds"), "{hgrm}");
    let svg = std::fs::read_to_string("run.svg").unwrap();
    assert!(svg.contains("latency by percentile") && svg.contains("latency over time"));
    running.stop().await.unwrap();
}
