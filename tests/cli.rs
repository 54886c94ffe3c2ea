//! The `harbour` binary as a person uses it: `serve`, then the operator
//! subcommands against it, SIGTERM, and a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_harbour");

/// Starts `harbour serve` and returns it with the address it printed.
fn serve(data: &std::path::Path, config: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics", "off", "--clock", "manual"])
        .arg("--data")
        .arg(data)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("harbour runs");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("a line");
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}")).to_string();
    (child, addr)
}

fn run(addr: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).args(["--addr", addr]).output().expect("harbour runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn terminate(mut child: Child) {
    // SAFETY: sending SIGTERM to our own child process.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = child.wait().expect("exits");
    assert!(status.success(), "SIGTERM is a clean exit 0: {status:?}");
}

#[test]
fn a_person_moves_money_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("harbour.toml");
    // Small capacities keep a debug build's start-up quick.
    std::fs::write(
        &config,
        "accounts_capacity = 1024\ntransfers_capacity = 4096\n[wal]\nsegment_bytes_max = 1048576\n\
         [[channels]]\nid = 1\nkey = \"hksw-dev-key\"\n\
         roles = [\"ACCOUNTS\", \"PAYMENTS\", \"LENDING\", \"TREASURY\", \"OPERATOR\", \"REPORTING\"]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let (child, addr) = serve(&data, &config);

    let (ok, out) = run(&addr, &["ping"]);
    assert!(ok && out.contains("pong"), "{out}");
    assert!(run(&addr, &["account", "create", "--id", "1024"]).0);
    assert!(run(&addr, &["account", "create", "--id", "1025", "--country", "446"]).0);
    let (ok, out) = run(&addr, &["transfer", "--id", "1", "--from", "4", "--to", "1024", "--amount", "1000.00"]);
    assert!(ok && out.contains("OK state POSTED amount 1000.00 HKD"), "{out}");
    let (ok, out) = run(&addr, &["transfer", "--id", "2", "--from", "1024", "--to", "1025", "--amount", "250.50"]);
    assert!(ok, "{out}");
    let (ok, out) =
        run(&addr, &["transfer", "--id", "3", "--from", "1024", "--to", "1025", "--amount", "100", "--pending"]);
    assert!(ok && out.contains("PENDING"), "{out}");
    let (ok, out) = run(&addr, &["balance", "--account", "1024"]);
    assert!(ok && out.contains("749.50") && out.contains("100.00"), "{out}");
    assert!(run(&addr, &["finalize", "--id", "3"]).0);
    let (ok, out) = run(&addr, &["transfer", "--id", "4", "--from", "1025", "--to", "1024", "--amount", "99999"]);
    assert!(!ok && out.contains("INSUFFICIENT_FUNDS"), "{out}");
    let (ok, out) = run(&addr, &["transfer", "--id", "5", "--from", "1024", "--to", "1025", "--amount", "1.001"]);
    assert!(!ok && out.contains("decimals"), "bad input is refused before it is sent: {out}");
    // Conversions: a rate, a quote that locks it, a transfer that uses it.
    let (ok, out) = run(&addr, &["rate", "--from", "HKD", "--to", "USD", "--rate", "0.128"]);
    assert!(ok && out.contains("OK"), "{out}");
    let (ok, out) = run(&addr, &["rate", "--from", "HKD", "--to", "USD", "--rate", "0.1234567891"]);
    assert!(!ok && out.contains("nine decimal"), "{out}");
    let (ok, out) = run(&addr, &["quote", "--from", "HKD", "--to", "USD", "--amount", "100"]);
    assert!(ok && out.contains("quote 1: 100.00 HKD -> 12.80 USD at 0.128"), "{out}");
    let args = ["transfer", "--id", "6", "--from", "1024", "--to", "1025", "--amount", "100", "--to-currency", "USD"];
    let (ok, out) = run(&addr, &[&args[..], &["--quote", "1"]].concat());
    assert!(ok && out.contains("credited 12.80 USD at 0.128"), "{out}");
    let (ok, out) = run(&addr, &["balance", "--account", "1"]);
    assert!(ok && out.contains("HKD") && out.contains("-12.80"), "FX_POSITION's open position: {out}");
    let (ok, out) = run(&addr, &["ping", "--key", "wrong-key-123"]);
    assert!(!ok && out.contains("AUTH_FAILED"), "{out}");
    terminate(child);

    // Everything answered is there after the restart.
    let (child, addr) = serve(&data, &config);
    let (ok, out) = run(&addr, &["balance", "--account", "1025"]);
    assert!(ok && out.contains("350.50"), "{out}");
    let (ok, out) = run(&addr, &["lookup", "--id", "3"]);
    assert!(ok && out.contains("POSTED"), "{out}");
    terminate(child);
}

#[test]
fn the_dev_key_never_listens_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--metrics", "off"])
        .arg("--data")
        .arg(dir.path())
        .output()
        .expect("harbour runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("development key"));
}
