//! The short form of the chaos soak (`scripts/chaos.sh` runs the long one): a seeded sequence of
//! SIGKILLs (enclaves, hosts, nodes, coordinators) and commit-protocol crashes under continuous
//! digest and PSBT signing, with the outside detector in front of every node.

use frostgate_tests::chaos::{run, Options};

#[test]
fn a_short_chaos_soak_sees_no_double_release_no_nonce_reuse_and_every_node_back() {
    // Seed 3's first 30 actions include every kind of kill and every fault point.
    let report = run(&Options { cycles: 30, seed: 3, ..Options::default() });
    println!("{}", report.line());
    assert!(report.violations.is_empty(), "{}\n{}", report.line(), report.violations.join("\n"));
    assert!(
        report.signatures > 10 && report.kills > 10 && report.faults_fired > 0,
        "the soak did not exercise the cluster: {}",
        report.line()
    );
}
