//! The `harbour` binary as a person uses it: `serve`, then the operator
//! subcommands against it, SIGTERM, and a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_harbour");

/// `harbour serve` on `data` with `config`, an ephemeral port, no metrics
/// and the manual clock.
fn serve_command(data: &std::path::Path, config: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics", "off", "--clock", "manual"])
        .arg("--data")
        .arg(data)
        .arg("--config")
        .arg(config);
    command
}

/// Starts `harbour serve` and returns it with the address it printed.
fn serve(data: &std::path::Path, config: &std::path::Path) -> (Child, String) {
    listening(&mut serve_command(data, config))
}

/// Runs a `harbour serve` command and returns it with the address it printed.
fn listening(command: &mut Command) -> (Child, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("harbour runs");
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

/// Writes a configuration file with the development channel and `roles`;
/// small capacities keep a debug build's start-up quick.
fn write_config(dir: &std::path::Path, roles: &str) -> std::path::PathBuf {
    let config = dir.join("harbour.toml");
    let text = format!(
        "accounts_capacity = 1024\ntransfers_capacity = 4096\n[wal]\nsegment_bytes_max = 1048576\n\
         [[channels]]\nid = 1\nkey = \"hksw-dev-key\"\nroles = [{roles}]\n"
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn a_person_moves_money_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let roles = "\"ACCOUNTS\", \"PAYMENTS\", \"LENDING\", \"TREASURY\", \"OPERATOR\", \"REPORTING\"";
    let config = write_config(dir.path(), roles);
    let data = dir.path().join("data");
    let (child, addr) = serve(&data, &config);

    let (ok, out) = run(&addr, &["ping"]);
    assert!(ok && out.contains("pong"), "{out}");
    assert!(run(&addr, &["account", "create", "--id", "1024"]).0);
    assert!(run(&addr, &["account", "create", "--id", "1025", "--country", "446"]).0);
    let (ok, out) = run(&addr, &["transfer", "--id", "1", "--from", "4", "--to", "1024", "--amount", "1000.00"]);
    assert!(ok && out.contains("transfer 1: POSTED 1000.00 HKD"), "{out}");
    let (ok, out) = run(&addr, &["transfer", "--id", "2", "--from", "1024", "--to", "1025", "--amount", "250.50"]);
    assert!(ok, "{out}");
    let (ok, out) =
        run(&addr, &["transfer", "--id", "3", "--from", "1024", "--to", "1025", "--amount", "100", "--pending"]);
    assert!(ok && out.contains("PENDING"), "{out}");
    let (ok, out) = run(&addr, &["balance", "--account", "1024"]);
    assert!(ok && out.contains("749.50") && out.contains("100.00"), "{out}");
    assert!(run(&addr, &["finalize", "--id", "3"]).0);
    let (ok, out) = run(&addr, &["transfer", "--id", "4", "--from", "1025", "--to", "1024", "--amount", "99999"]);
    assert!(!ok && out.contains("refused INSUFFICIENT_FUNDS"), "{out}");
    assert_eq!(out.matches("INSUFFICIENT_FUNDS").count(), 1, "one line per outcome: {out}");
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

/// A one-shot HTTP receiver: answers `status` to the first request and
/// hands back the request's head and body.
fn receiver(status: &'static str) -> (String, std::thread::JoinHandle<(String, Vec<u8>)>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jfiu/str", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 8192];
        let (head, body_len) = loop {
            let n = stream.read(&mut chunk).unwrap();
            bytes.extend_from_slice(&chunk[..n]);
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map(|v| v.trim().parse::<usize>().unwrap())
                    .unwrap();
                bytes.drain(..end + 4);
                break (head, len);
            }
        };
        while bytes.len() < body_len {
            let n = stream.read(&mut chunk).unwrap();
            bytes.extend_from_slice(&chunk[..n]);
        }
        write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        (head, bytes)
    });
    (url, handle)
}

#[test]
fn an_operator_reports_the_months_aml_cases() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "\"ACCOUNTS\", \"PAYMENTS\", \"OPERATOR\", \"REPORTING\"");
    let (child, addr) = serve(&dir.path().join("data"), &config);
    assert!(run(&addr, &["account", "create", "--id", "1024", "--ref", "77"]).0);
    assert!(run(&addr, &["transfer", "--id", "1", "--from", "4", "--to", "1024", "--amount", "200000"]).0);
    // To DPRK: held for SMS; then over the day's HK$80,000: held for FACE.
    let (ok, out) =
        run(&addr, &["transfer", "--id", "2", "--from", "1024", "--to", "3", "--amount", "100", "--country", "408"]);
    assert!(ok && out.contains("PENDING") && out.contains("held for SMS_OTP until 20"), "{out}");
    let (ok, out) = run(&addr, &["transfer", "--id", "3", "--from", "1024", "--to", "3", "--amount", "79900.01"]);
    assert!(ok && out.contains("held for FACE_REVIEW"), "{out}");
    let (ok, out) = run(&addr, &["step-up", "--id", "2", "--method", "face"]);
    assert!(!ok && out.contains("WRONG_METHOD"), "{out}");
    let (ok, out) = run(&addr, &["step-up", "--id", "2", "--method", "sms"]);
    assert!(ok && out.contains("POSTED"), "{out}");
    let (ok, out) = run(&addr, &["cancel", "--id", "3"]);
    assert!(ok && out.contains("VOIDED"), "{out}");

    // The month of the manual clock (2026-01) as XML, then CSV.
    let xml = dir.path().join("str.xml");
    let (ok, out) = run(&addr, &["str", "--month", "2026-01", "--format", "xml", "--out", xml.to_str().unwrap()]);
    assert!(ok, "{out}");
    let report = std::fs::read_to_string(&xml).unwrap();
    assert_eq!(report.matches("<case>").count(), 2, "{report}");
    assert!(report.contains("<transfer_id>2</transfer_id>") && report.contains("<outcome>passed</outcome>"));
    assert!(report.contains("<customer_ref>77</customer_ref>") && report.contains("<outcome>cancelled</outcome>"));
    // A case a page, and the same report.
    let paged = dir.path().join("paged.xml");
    let (ok, out) = run(&addr, &["str", "--month", "2026-01", "--page-cases", "1", "--out", paged.to_str().unwrap()]);
    assert!(ok && out.contains("2 cases"), "{out}");
    assert_eq!(std::fs::read_to_string(&paged).unwrap(), report);
    assert!(!dir.path().join("paged.xml.partial").exists());
    let (ok, out) = run(&addr, &["str", "--month", "2026-01", "--page-cases", "0"]);
    assert!(!ok && out.contains("--page-cases"), "{out}");
    let (ok, csv) = run(&addr, &["str", "--month", "2026-01", "--format", "csv"]);
    assert!(ok && csv.starts_with("transfer_id,submitted_at,") && csv.lines().count() == 3, "{csv}");
    // Submitted to the intelligence unit's endpoint.
    let (url, received) = receiver("200 OK");
    let (ok, out) = run(&addr, &["str", "--month", "2026-01", "--submit", &url, "--out", xml.to_str().unwrap()]);
    assert!(ok && out.contains("submitted"), "{out}");
    let (head, body) = received.join().unwrap();
    assert!(head.starts_with("POST /jfiu/str HTTP/1.1") && head.contains("application/xml"), "{head}");
    assert_eq!(body, std::fs::read(&xml).unwrap(), "the endpoint got the saved report");
    // An endpoint that refuses it is a failure the operator sees.
    let (url, received) = receiver("503 Service Unavailable");
    let (ok, out) = run(&addr, &["str", "--month", "2026-01", "--submit", &url]);
    assert!(!ok && out.contains("503"), "{out}");
    received.join().unwrap();
    // Bad input is refused; a month without cases says so.
    for bad in [&["str", "--month", "2026-13"][..], &["str", "--month", "2026-01", "--format", "pdf"][..]] {
        let (ok, out) = run(&addr, bad);
        assert!(!ok, "{bad:?}: {out}");
    }
    let (ok, out) = run(&addr, &["str", "--month", "2026-02", "--submit", "https://jfiu.example/str"]);
    assert!(!ok && out.contains("http://"), "{out}");
    let (ok, out) = run(&addr, &["str", "--month", "2026-02"]);
    assert!(ok && out.contains("nothing to report"), "{out}");
    terminate(child);
}

#[test]
fn a_lender_and_a_customer_use_credit_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "\"ACCOUNTS\", \"PAYMENTS\", \"LENDING\", \"OPERATOR\"");
    let (child, addr) = serve(&dir.path().join("data"), &config);
    assert!(run(&addr, &["account", "create", "--id", "1024"]).0);
    assert!(run(&addr, &["account", "create", "--id", "1025"]).0);
    let (ok, out) =
        run(&addr, &["credit-line", "--account", "1024", "--limit", "20000", "--apr", "10", "--micro-max", "500"]);
    assert!(ok && out.contains("OK"), "{out}");
    let (ok, out) = run(&addr, &["credit-line", "--account", "1024", "--limit", "1", "--apr", "48.01"]);
    assert!(!ok && out.contains("INVALID_FIELD"), "above the ordinance's 48%: {out}");
    let (ok, out) = run(&addr, &["loan", "disburse", "--id", "900", "--account", "1024", "--amount", "10000"]);
    assert!(ok && out.contains("ACTIVE") && out.contains("APR 10.00% EAR 10.52%"), "{out}");
    let (ok, out) = run(
        &addr,
        &["transfer", "--id", "901", "--from", "1024", "--to", "1025", "--amount", "10250", "--auto-credit"],
    );
    assert!(ok && out.contains("POSTED") && out.contains("micro-loan 250.00"), "{out}");
    let (ok, out) = run(&addr, &["balance", "--account", "1024"]);
    assert!(ok && out.contains("loans         10250.00") && out.contains("9750.00"), "{out}");
    // No time has passed on the manual clock: no interest yet.
    let (ok, out) = run(&addr, &["loan", "show", "--id", "900"]);
    assert!(ok && out.contains("interest 0.00"), "{out}");
    assert!(run(&addr, &["transfer", "--id", "902", "--from", "4", "--to", "1024", "--amount", "20000"]).0);
    let (ok, out) = run(&addr, &["loan", "repay", "--id", "1", "--loan", "900", "--amount", "10000.01"]);
    assert!(!ok && out.contains("OVERPAYMENT"), "{out}");
    let (ok, out) = run(&addr, &["loan", "repay", "--id", "2", "--loan", "900", "--amount", "10000"]);
    assert!(ok && out.contains("REPAID"), "{out}");
    let (ok, out) = run(&addr, &["loan", "show", "--id", "903"]);
    assert!(!ok && out.contains("LOAN_NOT_FOUND"), "{out}");
    terminate(child);
}

/// What recovery did reaches the operators' log on stderr, with its level
/// and fields: a torn last record is cut and said so at WARN.
#[test]
fn recovery_is_logged_for_operators() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "\"ACCOUNTS\"");
    let data = dir.path().join("data");
    let (child, _) = serve(&data, &config);
    terminate(child);
    // A write cut short by a power loss: the first 50 bytes of a record
    // landed, the rest of it did not.
    let log = std::fs::read_dir(data.join("shard-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a log segment");
    let mut bytes = std::fs::read(&log).unwrap();
    assert!(bytes[..64].iter().all(|&b| b == 0), "a switch that took no request logged nothing");
    let mut record = Vec::new();
    harbour::wal::encode_record(&mut record, 1, 1, 0x11, 0, &[7; 100]);
    bytes[..50].copy_from_slice(&record[..50]);
    std::fs::write(&log, bytes).unwrap();

    let mut child = serve_command(&data, &config)
        .env("HARBOUR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("harbour runs");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("a line");
    assert!(line.starts_with("listening on"), "it recovers and serves: {line:?}");
    // SAFETY: sending SIGTERM to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().expect("exits");
    let logs = String::from_utf8_lossy(&out.stderr);
    let line = logs.lines().find(|l| l.contains("recovery cut a torn last record")).unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("WARN") && line.contains("shard=0") && line.contains("offset=0"), "{line}");
    // The bytes cut are the 50 written, not the zero-filled rest of the
    // preallocated segment.
    assert!(line.contains("bytes=50"), "{line}");
}

/// `harbour check` tells an operator what a start would find without
/// changing anything; a removed newest segment is refused by both.
#[test]
fn check_reports_the_data_directory_and_a_start_refuses_a_lost_segment() {
    let dir = tempfile::tempdir().unwrap();
    let roles = "\"ACCOUNTS\", \"PAYMENTS\"";
    let config = write_config(dir.path(), roles);
    let data = dir.path().join("data");
    let (child, addr) = serve(&data, &config);
    assert!(run(&addr, &["account", "create", "--id", "1024"]).0);
    assert!(run(&addr, &["transfer", "--id", "1", "--from", "4", "--to", "1024", "--amount", "10.00"]).0);
    terminate(child);

    let check = |expect_ok: bool| {
        let out = Command::new(BIN).args(["check", "--data"]).arg(&data).output().expect("harbour runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.success(), expect_ok, "{text}");
        text
    };
    let text = check(true);
    assert!(text.contains("settings recorded: shards=1") && text.contains("durable mark"), "{text}");
    assert!(text.contains("a start would succeed"), "{text}");

    let shard = data.join("shard-0");
    let newest = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a segment");
    std::fs::remove_file(&newest).unwrap();
    let text = check(false);
    assert!(text.contains("REFUSED") && text.contains("missing or cut short"), "{text}");

    let out = serve_command(&data, &config).output().expect("harbour runs");
    assert!(!out.status.success(), "it started without its newest segment");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("durable.mark") && err.contains("missing or cut short"), "{err}");
}

/// SIGHUP reads the channels again: a role added to the file is taken
/// without a restart, a new key works, and a file with a mistake changes
/// nothing (the switch keeps serving with what it had).
#[test]
fn sighup_reloads_the_channels() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "\"ACCOUNTS\"");
    let (child, addr) = serve(&dir.path().join("data"), &config);
    let hup = || {
        // SAFETY: sending SIGHUP to our own child process.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) }, 0);
    };
    assert!(run(&addr, &["account", "create", "--id", "1024"]).0);
    let deposit = ["transfer", "--id", "1", "--from", "4", "--to", "1024", "--amount", "10.00"];
    let (ok, out) = run(&addr, &deposit);
    assert!(!ok && out.contains("FORBIDDEN"), "{out}");

    // A broken file: refused, the running channels stay.
    std::fs::write(&config, "accounts_capacity = 1024\n[[channels]]\nid = 1\n").unwrap();
    hup();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(run(&addr, &["ping"]).0, "still served with the old channels");

    // PAYMENTS added, and a second channel with its own key.
    let text = "accounts_capacity = 1024\ntransfers_capacity = 4096\n[wal]\nsegment_bytes_max = 1048576\n\
                [[channels]]\nid = 1\nkey = \"hksw-dev-key\"\nroles = [\"ACCOUNTS\", \"PAYMENTS\"]\n\
                [[channels]]\nid = 2\nkey = \"a-second-channel-key\"\nroles = []\n";
    std::fs::write(&config, text).unwrap();
    hup();
    let mut reloaded = false;
    for _ in 0..50 {
        if run(&addr, &deposit).0 {
            reloaded = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(reloaded, "the new role is taken after SIGHUP");
    let (ok, out) = run(&addr, &["ping", "--channel", "2", "--key", "a-second-channel-key"]);
    assert!(ok, "the new channel connects: {out}");
    terminate(child);
}

#[test]
fn a_switch_without_a_configuration_file_has_nothing_to_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command.args(["serve", "--listen", "127.0.0.1:0", "--metrics", "off", "--clock", "manual", "--data"]);
    let (child, addr) = listening(command.arg(dir.path().join("data")));
    let (ok, out) = run(&addr, &["reload"]);
    assert!(!ok && out.contains("no configuration file"), "{out}");
    assert!(run(&addr, &["ping"]).0, "still served with the embedded channel");
    terminate(child);
}

#[test]
fn a_sampled_requests_timeline_is_logged_whole() {
    for shards in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), "\"ACCOUNTS\", \"PAYMENTS\"");
        let mut command = serve_command(&dir.path().join("data"), &config);
        command.args(["--trace-sample", "1", "--shards", shards]).env("HARBOUR_LOG", "info");
        let (child, addr) = listening(&mut command);
        assert!(run(&addr, &["account", "create", "--id", "1024"]).0);
        for id in 1..=4 {
            let transfer = ["transfer", "--id", &id.to_string(), "--from", "4", "--to", "1024", "--amount", "1"];
            assert!(run(&addr, &transfer).0);
        }
        // SAFETY: sending SIGTERM to our own child process.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
        let logs = String::from_utf8_lossy(&child.wait_with_output().expect("exits").stderr).to_string();
        let transfers: Vec<&str> =
            logs.lines().filter(|l| l.contains("harbour::trace") && l.contains("kind 0x0011")).collect();
        assert_eq!(transfers.len(), 4, "every transfer ({shards} shards): {logs}");
        let marks = harbour::timeline::Mark::ALL.map(harbour::timeline::Mark::name);
        for line in transfers {
            // Every mark, in order, each at or after the one before.
            let mut last = 0.0;
            for mark in marks {
                let at = line.split(&format!(" {mark} ")).nth(1).unwrap_or_else(|| panic!("{mark}: {line}"));
                let at: f64 = at.split_whitespace().next().unwrap().parse().unwrap();
                assert!(at >= last, "{mark} at {at} before {last}: {line}");
                last = at;
            }
            assert!(line.contains("count 1 group 1") && line.ends_with(" µs"), "{line}");
        }
    }
}

/// `harbour certs dev`, a switch serving TLS with them, and the CLI
/// talking to it with the channel's certificate (and refused without).
#[test]
fn the_cli_speaks_tls_with_development_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(BIN).args(["certs", "dev", "--out"]).arg(&certs).output().expect("harbour runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = write_config(dir.path(), "\"ACCOUNTS\"");
    let mut text = std::fs::read_to_string(&config).unwrap();
    let path = |name: &str| certs.join(name).display().to_string();
    text.push_str(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        path("server.pem"),
        path("server.key"),
        path("ca.pem")
    ));
    std::fs::write(&config, text).unwrap();
    let (child, addr) = serve(&dir.path().join("data"), &config);
    let tls = ["--tls-ca", &path("ca.pem"), "--tls-cert", &path("channel-1.pem"), "--tls-key", &path("channel-1.key")];
    let (ok, out) = run(&addr, &[&["ping"][..], &tls].concat());
    assert!(ok && out.contains("pong"), "{out}");
    let (ok, out) = run(&addr, &[&["account", "create", "--id", "1024"][..], &tls].concat());
    assert!(ok, "{out}");
    let (ok, _) = run(&addr, &["ping"]);
    assert!(!ok, "plain TCP to a TLS switch is refused");
    terminate(child);
}

/// RELOAD_CHANNELS from the CLI (`harbour reload`, an OPERATOR's): the file
/// read again, a role taken; a channel without OPERATOR is refused.
#[test]
fn an_operator_reloads_the_channels_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "\"ACCOUNTS\", \"OPERATOR\"");
    let (child, addr) = serve(&dir.path().join("data"), &config);
    assert!(run(&addr, &["account", "create", "--id", "1024"]).0);
    let deposit = ["transfer", "--id", "1", "--from", "4", "--to", "1024", "--amount", "10.00"];
    assert!(!run(&addr, &deposit).0, "no PAYMENTS yet");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"OPERATOR\"]", "\"OPERATOR\", \"PAYMENTS\"]")
        + "[[channels]]\nid = 2\nkey = \"a-second-channel-key\"\nroles = [\"ACCOUNTS\"]\n";
    std::fs::write(&config, text).unwrap();
    let (ok, out) = run(&addr, &["reload"]);
    assert!(ok && out.contains("reloaded: 2 channels"), "{out}");
    // This CLI call's own session was closed by nothing: its key remains.
    let (ok, out) = run(&addr, &deposit);
    assert!(ok, "the new role: {out}");
    let (ok, out) = run(&addr, &["reload", "--channel", "2", "--key", "a-second-channel-key"]);
    assert!(!ok && out.contains("FORBIDDEN"), "{out}");
    // A broken file: refused with the reason, nothing changed.
    std::fs::write(&config, "colour = \"blue\"\n").unwrap();
    let (ok, out) = run(&addr, &["reload"]);
    assert!(!ok && out.contains("reload refused"), "{out}");
    assert!(run(&addr, &["ping"]).0);
    terminate(child);
}

/// Administrative acts are on the audit trail before they are applied,
/// survive kill -9, and `harbour audit` exports them as JSON lines, with
/// refused HELLOs.
#[test]
fn the_audit_trail_survives_a_kill_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "\"ACCOUNTS\", \"TREASURY\", \"OPERATOR\"");
    let data = dir.path().join("data");
    let (mut child, addr) = serve(&data, &config);
    let (ok, out) = run(&addr, &["rate", "--from", "HKD", "--to", "USD", "--rate", "0.128"]);
    assert!(ok, "{out}");
    assert!(run(&addr, &["account", "create", "--id", "1024"]).0, "not an administrative act");
    let (ok, _) = run(&addr, &["ping", "--key", "wrong-key-123"]);
    assert!(!ok);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = Command::new(BIN).args(["audit", "--from", "2020-01-01", "--data"]).arg(&data).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let acts: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(acts.len(), 2, "{text}");
    assert_eq!((acts[0]["kind"].as_str(), acts[0]["channel"].as_u64()), (Some("SET_FX_RATES"), Some(1)));
    assert!(acts[0]["content"].as_str().is_some_and(|c| !c.is_empty()) && acts[0]["peer"].as_str().is_some());
    assert_eq!(acts[1]["kind"], "HELLO_REFUSED");
    let out = Command::new(BIN).args(["audit", "--to", "2020-01-01", "--data"]).arg(&data).output().unwrap();
    assert!(out.status.success() && out.stdout.is_empty(), "nothing before 2020");
}

/// A newcomer's mistakes are answered with what to do, before anything is
/// sent where the command can tell.
#[test]
fn mistakes_get_a_way_forward() {
    let nothing = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let transfer = |amount: &str, currency: &str| {
        run(
            &nothing,
            &["transfer", "--id", "1", "--from", "4", "--to", "1024", "--amount", amount, "--currency", currency],
        )
    };
    for (amount, currency, says) in [
        ("-5", "HKD", "amounts are positive"),
        ("1,000.00", "HKD", "without separators"),
        ("1.5", "JPY", "JPY has no minor units"),
        ("1.001", "HKD", "HKD takes at most 2 decimals"),
    ] {
        let (ok, out) = transfer(amount, currency);
        assert!(!ok && out.contains(says), "{amount} {currency}: {out}");
    }
    // Nothing listens there (the listener is gone).
    let (ok, out) = run(&nothing, &["ping"]);
    assert!(!ok && out.contains("is the switch running?"), "{out}");
}

/// Refusals name their code once, with a hint, and times read in Hong
/// Kong time.
#[test]
fn answers_read_as_a_person_reads() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "\"ACCOUNTS\", \"PAYMENTS\"");
    let (child, addr) = serve(&dir.path().join("data"), &config);
    let (ok, out) = run(&addr, &["account", "create", "--id", "5"]);
    assert!(!ok && out.contains("refused INVALID_ID") && out.contains("start at 1024"), "{out}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    assert!(run(&addr, &["account", "create", "--id", "1024"]).0);
    assert!(run(&addr, &["transfer", "--id", "1", "--from", "4", "--to", "1024", "--amount", "10"]).0);
    let (ok, out) = run(&addr, &["transfer", "--id", "2", "--from", "1024", "--to", "3", "--amount", "1", "--pending"]);
    assert!(ok && out.contains("held for CLIENT until 20") && out.contains("+08:00"), "{out}");
    let (ok, out) = run(&addr, &["lookup", "--id", "2", "--json"]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(ok && json["hold_until_ms"].as_u64().is_some_and(|ms| ms > 0), "{out}");
    assert_eq!(json["holds"], serde_json::json!(["CLIENT"]));
    let (ok, out) = run(&addr, &["balance", "--account", "1024", "--json"]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(ok, "{out}");
    assert_eq!(json["balances"][0]["balance"], 1000, "minor units: {out}");
    assert_eq!(json["balances"][0]["held"], 100, "{out}");
    terminate(child);
}
