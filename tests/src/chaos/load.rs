//! The signing load: coordinators, each a `frostgate sign` or `frostgate sign-psbt` process at a
//! time, in a loop; every signature they print is checked by the detector (a PSBT's finalized
//! transaction against the sighash rust-bitcoin computes from the PSBT).

use super::detector::Detector;
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::{consensus, Psbt, TapSighashType, Transaction};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Every fourth signing is a PSBT.
const PSBT_EVERY: u64 = 4;

/// The key under load.
#[derive(Debug, Clone)]
struct Key {
    id: String,
    output_key: String,
}

impl Key {
    fn from_keygen(keygen: &serde_json::Value) -> Key {
        let s = |f: &str| keygen[f].as_str().expect("keygen field").to_string();
        Key { id: s("key"), output_key: s("output_key") }
    }
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    completed: AtomicU64,
    failed: AtomicU64,
    /// Worker index -> pid of its running coordinator.
    running: Mutex<HashMap<usize, u32>>,
}

/// Coordinators running in background threads.
#[derive(Debug)]
pub struct Load {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `n` coordinators signing with the key of `keygen` through `cluster_file`.
    pub fn start(cluster_file: &Path, keygen: &serde_json::Value, detector: Arc<Detector>, n: usize) -> Load {
        let shared = Arc::new(Shared::default());
        let key = Key::from_keygen(keygen);
        let workers = (0..n)
            .map(|w| {
                let (shared, detector, key, file) =
                    (shared.clone(), detector.clone(), key.clone(), cluster_file.to_path_buf());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !shared.stop.load(Ordering::Relaxed) {
                        i += 1;
                        let ok = if i.is_multiple_of(PSBT_EVERY) {
                            sign_psbt(&file, &key, &detector, Some((&shared, w))).is_ok()
                        } else {
                            sign_digest(&file, &key, &detector, Some((&shared, w))).is_ok()
                        };
                        let counter = if ok { &shared.completed } else { &shared.failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            // Nodes may be down: do not spin.
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                })
            })
            .collect();
        Load { shared, workers }
    }

    /// SIGKILLs one running coordinator; whether there was one.
    pub fn kill_one(&self) -> bool {
        let pid = self.shared.running.lock().unwrap_or_else(|p| p.into_inner()).values().next().copied();
        pid.is_some_and(|pid| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).is_ok()
        })
    }

    /// Stops the coordinators (each finishes its signing); (completed, failed).
    pub fn stop(self) -> (u64, u64) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.join();
        }
        (self.shared.completed.load(Ordering::Relaxed), self.shared.failed.load(Ordering::Relaxed))
    }
}

/// One digest signing, outside the load (the soak's final liveness check).
pub fn sign_once(cluster_file: &Path, keygen: &serde_json::Value, detector: &Detector) -> Result<(), String> {
    sign_digest(cluster_file, &Key::from_keygen(keygen), detector, None)
}

/// Runs `frostgate args`, registered as worker `w`'s coordinator while it runs; its JSON output.
fn coordinator(args: &[&str], running: Option<(&Shared, usize)>) -> Result<serde_json::Value, String> {
    let child = Command::new(crate::host_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some((shared, w)) = running {
        shared.running.lock().unwrap_or_else(|p| p.into_inner()).insert(w, child.id());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string());
    if let Some((shared, w)) = running {
        shared.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&w);
    }
    let out = out?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn sign_digest(file: &Path, key: &Key, detector: &Detector, running: Option<(&Shared, usize)>) -> Result<(), String> {
    let message: [u8; 32] = crate::signing::random();
    let (m, f) = (hex::encode(message), file.display().to_string());
    let args = ["sign", "--cluster", &f, "--key", &key.id, "--message", &m, "--timeout-ms", "10000", "--json"];
    let out = coordinator(&args, running)?;
    let hex_field = |name: &str| hex::decode(out[name].as_str().unwrap_or_default()).unwrap_or_default();
    detector.signature("coordinator (sign)", &message, &hex_field("signature"), &hex_field("output_key"));
    Ok(())
}

fn sign_psbt(file: &Path, key: &Key, detector: &Detector, running: Option<(&Shared, usize)>) -> Result<(), String> {
    let decode32 = |h: &str| -> [u8; 32] { hex::decode(h).ok().and_then(|b| b.try_into().ok()).expect("32-byte key") };
    let output_key = decode32(&key.output_key);
    let recipient = crate::psbt::random_address().script_pubkey();
    let psbt = crate::psbt::spend(&decode32(&key.id), &output_key, &[100_000], &[(recipient, 60_000)]);
    let dir = file.parent().expect("cluster dir");
    let path: PathBuf = dir.join(format!("chaos-{}.psbt", hex::encode(crate::signing::random::<8>())));
    std::fs::write(&path, psbt.to_string()).map_err(|e| e.to_string())?;
    let (p, f) = (path.display().to_string(), file.display().to_string());
    let args = ["sign-psbt", "--cluster", &f, "--key", &key.id, "--psbt", &p, "--finalize", "--json"];
    let result = coordinator(&args, running);
    let _ = std::fs::remove_file(&path);
    let out = result?;
    let tx: Transaction =
        consensus::deserialize(&hex::decode(out["tx"].as_str().unwrap_or_default()).unwrap_or_default())
            .map_err(|e| e.to_string())?;
    check_key_spend(&psbt, &tx, &output_key, detector);
    Ok(())
}

/// Checks input 0's key-path signature against the sighash rust-bitcoin computes from the PSBT.
fn check_key_spend(psbt: &Psbt, tx: &Transaction, output_key: &[u8; 32], detector: &Detector) {
    let prevouts: Vec<_> = psbt.inputs.iter().filter_map(|i| i.witness_utxo.clone()).collect();
    let sighash = SighashCache::new(&psbt.unsigned_tx)
        .taproot_key_spend_signature_hash(0, &Prevouts::All(&prevouts), TapSighashType::Default)
        .expect("sighash");
    let witness = tx.input.first().and_then(|i| i.witness.nth(0)).unwrap_or_default();
    detector.signature("coordinator (sign-psbt)", sighash.as_ref(), witness, output_key);
}
