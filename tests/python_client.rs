//! The Python client's own tests (`clients/python`), run by `cargo test`
//! against real switches: one on plain TCP, one with mutual TLS (the
//! development certificates, channel 1 with every role and channel 2 with
//! REPORTING only). Needs `python3` (3.9 or later) on the path; without it
//! the test says so and passes, except under CI (`CI` set), where it fails.

mod common;

use harbour::config::TlsConfig;
use harbour::protocol::frame::role;

const CHANNEL2_KEY: &[u8] = b"a-reporting-only-channel-key-of-32-bytes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_clients_tests_pass_against_a_switch() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI runs the Python client's tests: python3 is needed");
        eprintln!("python3 not found: the Python client's tests did not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sized = |mut c: harbour::config::Config| {
        c.switch.engine.accounts_capacity = 1 << 14;
        c.switch.engine.transfers_capacity = 1 << 17;
        c
    };
    let plain = harbour::server::start(&sized(common::server_config(&dir.path().join("plain")))).await.unwrap();

    let certs = dir.path().join("certs");
    harbour::tls::dev_certs(&certs, &["localhost".into(), "127.0.0.1".into()], &[1, 2], &[]).unwrap();
    let mut tls_config = sized(common::server_config(&dir.path().join("tls")));
    tls_config.tls = Some(TlsConfig {
        cert: certs.join("server.pem"),
        key: certs.join("server.key"),
        client_ca: certs.join("ca.pem"),
        crls: Vec::new(),
    });
    tls_config.channels.push(common::channel(2, CHANNEL2_KEY, role::REPORTING));
    let tls = harbour::server::start(&tls_config).await.unwrap();

    let root = env!("CARGO_MANIFEST_DIR");
    let (plain_addr, tls_addr) = (plain.addr.to_string(), tls.addr.to_string());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-m", "unittest", "discover", "-s", "clients/python/tests", "-t", "clients/python", "-v"])
            .current_dir(root)
            .env("HARBOUR_ADDR", plain_addr)
            .env("HARBOUR_TLS_ADDR", tls_addr)
            .env("HARBOUR_TLS_DIR", certs)
            .env("HARBOUR_TLS_CHANNEL2_KEY", std::str::from_utf8(CHANNEL2_KEY).unwrap())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the Python client's tests failed:\n{text}");
    // Every live test ran: none skipped for want of a switch.
    let ran = text.lines().filter(|l| l.ends_with(" ok")).count();
    let skipped: Vec<&str> = text.lines().filter(|l| l.contains("skipped")).collect();
    eprintln!("python3: {ran} tests passed; skipped: {skipped:?}");
    assert!(ran >= 80, "{text}");
    assert!(skipped.is_empty(), "a live test skipped: {skipped:?}");
    plain.stop().await.unwrap();
    tls.stop().await.unwrap();
}
