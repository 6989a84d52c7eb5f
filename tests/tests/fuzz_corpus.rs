//! The fuzz corpus as a regression test on stable: every input kept under `fuzz/corpus/<target>/`
//! (what `cargo fuzz` found interesting, crashes fixed included) and every in-code seed runs
//! through its target, which must not panic. `FROSTGATE_BLESS=1` writes the in-code seeds into
//! the corpus directories (what `scripts/fuzz.sh` starts from).

use frostgate_tests::fuzz::{seeds, TARGETS};
use std::path::PathBuf;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

#[test]
fn every_kept_fuzz_input_and_seed_runs_without_a_panic() {
    let bless = std::env::var_os("FROSTGATE_BLESS").is_some();
    for (name, target) in TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name}: no seeds");
        let dir = corpus(name);
        if bless {
            std::fs::create_dir_all(&dir).expect("corpus dir");
            for (i, s) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), s).expect("write seed");
            }
        }
        // The grpc seeds are mostly refusals (empty messages), `Health` is accepted.
        assert!(seeds.iter().any(|s| target(s)), "{name}: no seed is accepted all the way");
        if *name != "grpc" {
            assert!(seeds.iter().all(|s| target(s)), "{name}: a seed is not accepted all the way");
        }
        let kept: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (FROSTGATE_BLESS=1 creates it)", dir.display()))
            .map(|e| e.expect("entry").path())
            .collect();
        for path in &kept {
            // A file gone since the listing: a fuzzer is running on this corpus.
            let Ok(input) = std::fs::read(path) else { continue };
            // A panic names the input: the file to reproduce it with.
            if std::panic::catch_unwind(|| target(&input)).is_err() {
                panic!("{name}: {} panics", path.display());
            }
        }
        println!("{name}: {} seeds, {} kept inputs", seeds.len(), kept.len());
    }
}
