//! `harbour-sim`: runs the deterministic simulator of the whole switch
//! (`harbour::sim`) over many seeds and prints every failing seed, which
//! reproduces exactly with `--seed`.

use std::time::Instant;

use clap::Parser;

/// Runs seeds of the switch simulator (N shards, the router, links,
/// crashes and restarts in one thread) and checks the contract after
/// every step.
#[derive(Parser, Debug)]
#[command(name = "harbour-sim", version)]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Run this one seed and print what it did (or why it failed).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() {
    let args = Args::parse();
    if let Some(seed) = args.seed {
        let plan = harbour::sim::Plan::of_seed(seed);
        match harbour::sim::run_seed(seed) {
            Ok(report) => println!("seed {seed} ({plan:?}): ok: {report:?}"),
            Err(failure) => {
                println!("{failure}");
                std::process::exit(1);
            }
        }
        return;
    }
    let started = Instant::now();
    let (mut steps, mut failed, mut crashes, mut rolled) = (0usize, 0u64, 0usize, 0usize);
    let (mut contended, mut conflicts, mut ahead) = (0usize, 0usize, 0usize);
    for seed in args.from..args.from + args.seeds {
        match harbour::sim::run_seed(seed) {
            Ok(report) => {
                steps += report.steps;
                crashes += report.crashes;
                rolled += report.rolled_forward;
                contended += report.contended;
                ahead += report.went_ahead;
                conflicts += report.id_conflicts;
            }
            Err(failure) => {
                failed += 1;
                println!("FAILED {failure}");
            }
        }
        let done = seed - args.from + 1;
        if done % 1000 == 0 {
            eprintln!("{done} seeds, {failed} failed, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds ({}..{}): {} failed; {steps} steps in {secs:.1} s ({:.0} steps/s, {:.1} seeds/s); {crashes} crashes, \
         {rolled} parts rolled forward, {contended} routings put off by a claim, {conflicts} ID_CONFLICT answers, {ahead} records gone ahead of one left for a later round",
        args.seeds,
        args.from,
        args.from + args.seeds,
        failed,
        steps as f64 / secs,
        args.seeds as f64 / secs,
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
