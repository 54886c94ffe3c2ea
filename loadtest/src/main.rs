//! `harbour-loadtest`: generates, records and replays traffic against a
//! Harbour switch. This is the crate's placeholder until the load tester
//! lands (issue 7); it says so and exits non-zero, so no script mistakes it
//! for a run.

fn main() {
    eprintln!("harbour-loadtest: gen, replay and bench are not built yet (issue 7); nothing was run");
    std::process::exit(2);
}
