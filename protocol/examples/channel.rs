//! A channel as a bank's back end writes one, against `harbour-protocol`
//! alone: connect and authenticate, open two accounts, pay in, move money,
//! look the balances up, and read every answer's result code.
//!
//! Start a switch (`cargo run --release -- serve`), then:
//!
//! ```sh
//! cargo run -p harbour-protocol --example channel -- 127.0.0.1:7400
//! ```
//!
//! Account ids are taken from the clock, so the example can run again
//! against the same switch.

use std::net::SocketAddr;

use harbour_protocol::ResultCode;
use harbour_protocol::accounts::SETTLEMENT_IN;
use harbour_protocol::client::Client;
use harbour_protocol::records::{ACCOUNT_KIND_CUSTOMER, Account, BalanceKey, Transfer};

/// HKD's ISO 4217 number.
const HKD: u16 = 344;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7400".into()).parse()?;
    // The development channel `serve` accepts on loopback.
    let client = Client::connect(addr, 1, b"hksw-dev-key").await?;
    client.ping().await?;
    let limits = client.limits();
    println!("connected to {addr}: up to {} requests in flight", limits.max_in_flight);

    let base =
        1_000_000 + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() % 1_000_000 * 2;
    let (alice, bob) = (base, base + 1);
    let account =
        |id| Account { account_id: id, kind: ACCOUNT_KIND_CUSTOMER, flags: 0, home_country: 344, customer_ref: id };
    for (id, result) in [alice, bob].iter().zip(client.create_accounts(&[account(alice), account(bob)]).await?) {
        println!("account {id}: {}", name(result.code));
    }

    // Transfer ids are the channel's own and make resends safe: sending
    // the same id again answers ALREADY_EXISTS and moves nothing.
    let id = u128::from(base) << 32;
    let hkd = |transfer_id, debit_account, credit_account, amount| Transfer {
        transfer_id,
        debit_account,
        credit_account,
        amount,
        debit_currency: HKD,
        credit_currency: HKD,
        ..Transfer::default()
    };
    let batch = [
        hkd(id, SETTLEMENT_IN, alice, 100_000), // HK$1,000.00 paid in
        hkd(id + 1, alice, bob, 25_050),        // HK$250.50 to Bob
        hkd(id + 1, alice, bob, 25_050),        // the same transfer again
        hkd(id + 2, bob, alice, 1_000_000),     // more than Bob has
    ];
    for (t, r) in batch.iter().zip(client.submit_transfers(&batch).await?) {
        println!("transfer {:#x}: {} (state {})", t.transfer_id, name(r.code), r.state);
    }

    let keys = [BalanceKey { account_id: alice, currency: HKD }, BalanceKey { account_id: bob, currency: HKD }];
    for b in client.lookup_balances(&keys).await? {
        println!("account {}: balance {}.{:02} HKD, held {}", b.account_id, b.balance / 100, b.balance % 100, b.held);
    }
    Ok(())
}

fn name(code: u16) -> String {
    ResultCode::from_u16(code).map_or_else(|| format!("code {code}"), |c| c.name().to_string())
}
