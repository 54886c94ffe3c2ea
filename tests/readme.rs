//! The README's hand session ("Moving money by hand") run as written, line
//! by line through `sh`, against a fresh switch: every command succeeds,
//! and what each line's comment says it prints (amounts, states, result
//! codes, hold names) is in its output. So the README cannot drift from
//! the switch again (issue 17).

mod common;

use harbour::protocol::ResultCode;

/// What a comment says the output shows: amounts like `749.50` (or
/// `-12.80`) and the names of states, result codes and holds.
fn promised(comment: &str) -> Vec<String> {
    let mut names: Vec<String> = (0..128).filter_map(ResultCode::from_u16).map(|c| c.name().to_string()).collect();
    for name in ["POSTED", "PENDING", "VOIDED", "ACTIVE", "REPAID"] {
        names.push(name.into());
    }
    names.extend(harbour::show::hold_names(0x7f).map(str::to_string));
    names.retain(|n| n.len() > 2);
    let amount = |t: &str| {
        let t = t.strip_prefix('-').unwrap_or(t);
        let (whole, frac) = t.split_once('.').unwrap_or(("", ""));
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 2
            && frac.bytes().all(|b| b.is_ascii_digit())
    };
    comment
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
        .map(|t| t.trim_end_matches('.'))
        .filter(|t| amount(t) || names.iter().any(|n| n == t))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hand_session_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::server_config(&dir.path().join("data"));
    // The switch as `serve` runs it: the system clock (the session's STR
    // is this month's).
    config.switch.clock = harbour::clock::Clock::System;
    let running = harbour::server::start(&config).await.unwrap();
    let lines = common::readme_block("Moving money by hand");
    assert_eq!(
        lines.first().map(String::as_str),
        Some("harbour=target/release/harbour"),
        "the session names the binary"
    );
    let mut ran = 0;
    for line in &lines[1..] {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (command, comment) = line.split_once(" #").unwrap_or((line, ""));
        let output = {
            let (command, cwd, addr) = (command.to_string(), dir.path().to_path_buf(), running.addr.to_string());
            tokio::task::spawn_blocking(move || {
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&command)
                    .env("harbour", env!("CARGO_BIN_EXE_harbour"))
                    .env("HARBOUR_ADDR", addr)
                    .current_dir(cwd)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        };
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "`{command}` failed:\n{text}");
        for expected in promised(comment) {
            assert!(text.contains(&expected), "`{command}`: its comment says {expected:?}, the output is:\n{text}");
        }
        ran += 1;
    }
    assert!(ran >= 30, "the whole session ran: {ran} commands");
    // The month's report holds the session's AML cases.
    let xml = std::fs::read_to_string(dir.path().join("str.xml")).expect("the STR was saved");
    assert!(xml.contains("SMS_OTP") && xml.contains("FACE_REVIEW"), "{xml}");
    running.stop().await.unwrap();
}

#[test]
fn comments_promise_amounts_and_names() {
    assert_eq!(promised("749.50 posted, 100.00 held"), ["749.50", "100.00"]);
    assert_eq!(promised("resend: ALREADY_EXISTS, nothing moves twice"), ["ALREADY_EXISTS"]);
    assert_eq!(promised("held for SMS_OTP"), ["SMS_OTP"]);
    assert_eq!(promised("APR 10.00% EAR 10.52%"), ["10.00", "10.52"]);
    assert_eq!(promised("FX_POSITION: 100.00 HKD, -12.80 USD"), ["100.00", "-12.80"]);
}
