//! `frostgate-chaos`: the chaos soak (see `frostgate_tests::chaos`). Prints one summary line
//! (or the report as JSON) and exits non-zero on any violation. Run it through `scripts/chaos.sh`,
//! which builds the binaries with the development features it needs.
#![forbid(unsafe_code)]

use clap::Parser;
use frostgate_tests::chaos::{run, Options};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(about = "Chaos soak of a local frostgate cluster")]
struct Args {
    /// Chaos actions to take.
    #[arg(long, default_value_t = 30)]
    cycles: u32,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Signing threshold.
    #[arg(long, default_value_t = 2)]
    threshold: u16,
    /// Seed of the action sequence (random when absent; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent coordinators.
    #[arg(long, default_value_t = 3)]
    coordinators: usize,
    /// Print each cycle's action and outcome on stderr.
    #[arg(long)]
    verbose: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let seed = a.seed.unwrap_or_else(|| u64::from_le_bytes(frostgate_tests::signing::random()));
    let report = run(&Options {
        cycles: a.cycles,
        nodes: a.nodes,
        threshold: a.threshold,
        seed,
        coordinators: a.coordinators,
        verbose: a.verbose,
        ..Options::default()
    });
    for v in &report.violations {
        println!("VIOLATION: {v}");
    }
    if a.json {
        println!("{}", serde_json::to_string(&report).expect("report"));
    } else {
        println!("{}", report.line());
    }
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
