//! openCryptoki soft tokens for development clusters. Its slot daemon (`pkcsslotd`) and token
//! state are machine-wide, so this needs root: a pool of soft-token slots ([`POOL`], `tokname
//! fgN`) is added to `/etc/opencryptoki/opencryptoki.conf` once; each node takes a free slot from
//! a registry (`/var/lib/opencryptoki/frostgate-slots`, under a lock), and its token is
//! re-initialized (every object of the previous owner destroyed). A slot is free when the cluster
//! that took it no longer exists. The enclave's user joins group `pkcs11`.

use frostgate_common::error::{Error, ErrorCode};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

/// Slots frostgate's development clusters use.
pub const POOL: std::ops::RangeInclusive<u64> = 10..=25;
const CONF: &str = "/etc/opencryptoki/opencryptoki.conf";
const REGISTRY: &str = "/var/lib/opencryptoki/frostgate-slots";
/// Development SO PIN (openCryptoki's default; dev tokens only).
const SO_PIN: &str = "87654321";
const MODULE: &str = "/usr/lib/x86_64-linux-gnu/opencryptoki/libopencryptoki.so.0";

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::HsmModuleUnavailable, format!("openCryptoki: {what}: {e}"))
}

fn run(what: &str, c: &mut Command) -> Result<(), Error> {
    let o = c.output().map_err(|e| err(what, e))?;
    if !o.status.success() {
        return Err(err(what, format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))));
    }
    Ok(())
}

fn slotd_running() -> bool {
    Command::new("pgrep").args(["-x", "pkcsslotd"]).output().is_ok_and(|o| o.status.success())
}

/// The pool in the configuration, its token directories, and the slot daemon running.
fn ensure_pool() -> Result<(), Error> {
    let conf = std::fs::read_to_string(CONF).map_err(|e| err(CONF, format!("{e} (install opencryptoki)")))?;
    let mut added = String::new();
    for slot in POOL {
        if !conf.contains(&format!("tokname = fg{slot}\n")) {
            added.push_str(&format!("\nslot {slot}\n{{\nstdll = libpkcs11_sw.so\ntokname = fg{slot}\n}}\n"));
        }
        let dir = Path::new("/var/lib/opencryptoki").join(format!("fg{slot}"));
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| err("token dir", e))?;
            run("chown", Command::new("chown").arg("root:pkcs11").arg(&dir))?;
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o770))
                .map_err(|e| err("token dir", e))?;
        }
    }
    for dir in ["/var/lock/opencryptoki", "/var/log/opencryptoki"] {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    }
    if !added.is_empty() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(CONF)
            .and_then(|mut f| f.write_all(added.as_bytes()))
            .map_err(|e| err(CONF, e))?;
        // The daemon reads the slots at start.
        let _ = Command::new("pkill").args(["-x", "pkcsslotd"]).status();
        for _ in 0..100 {
            if !slotd_running() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    if !slotd_running() {
        run("pkcsslotd", &mut Command::new("pkcsslotd"))?;
    }
    Ok(())
}

/// Takes a free slot for `cluster` (under the registry's lock), re-initializes its token with the
/// label `label(slot)` and user PIN `pin`. Returns the label.
pub fn make(pin: &str, cluster: &Path, label: impl Fn(u64) -> String) -> Result<String, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            "--token opencryptoki needs root (its slot daemon and token state are machine-wide)",
        ));
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open("/run/frostgate-opencryptoki.lock")
        .map_err(|e| err("lock", e))?;
    lock.lock().map_err(|e| err("lock", e))?;
    ensure_pool()?;
    let registry = std::fs::read_to_string(REGISTRY).unwrap_or_default();
    let mut taken: Vec<(u64, String)> = registry
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(s, d)| Some((s.parse().ok()?, d.to_string())))
        // A slot whose cluster is gone is free again.
        .filter(|(_, d)| Path::new(d).join("cluster.toml").exists() || Path::new(d) == cluster)
        .collect();
    let slot = POOL
        .clone()
        .find(|s| !taken.iter().any(|(t, _)| t == s))
        .ok_or_else(|| err("slots", format!("every slot of {POOL:?} is taken by a live development cluster")))?;
    taken.push((slot, cluster.display().to_string()));
    let text: String = taken.iter().map(|(s, d)| format!("{s} {d}\n")).collect();
    std::fs::write(REGISTRY, text).map_err(|e| err(REGISTRY, e))?;
    let s = slot.to_string();
    let label = label(slot);
    let label = label.as_str();
    run(
        "init token",
        Command::new("pkcs11-tool").args([
            "--module",
            MODULE,
            "--slot",
            &s,
            "--init-token",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
        ]),
    )?;
    run(
        "init user PIN",
        Command::new("pkcs11-tool").args(["--module", MODULE, "--slot", &s, "--login", "--login-type", "so"]).args([
            "--so-pin",
            SO_PIN,
            "--init-pin",
            "--new-pin",
            pin,
        ]),
    )?;
    Ok(label.to_string())
}

/// Adds `user` to group `pkcs11` (the slot daemon's socket and the token state are its).
pub fn admit(user: &str) -> Result<(), Error> {
    run("usermod", Command::new("usermod").args(["-aG", "pkcs11", user]))
}
