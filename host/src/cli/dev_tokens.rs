//! The tokens of a development cluster, one per node, of one kind: SoftHSM2 (the default),
//! kryoptic, a TPM 2.0 (swtpm) through tpm2-pkcs11, or an openCryptoki soft token. One place that
//! knows how each kind is made, which environment its module needs, and which daemons it runs.
//!
//! - tpm2: per node, in `enclave/tpm/` (0700, the enclave's user): `swtpm` on Unix sockets (a TCP
//!   port would let any local user reset or clear the TPM), a private D-Bus session bus and
//!   `tpm2-abrmd` on it, the tpm2-pkcs11 store; `up` starts them as the enclave's user, `down`
//!   stops them by pid. tpm2-pkcs11 cannot generate keys through PKCS#11: the key-encryption key is
//!   made with `tpm2_ptool addkey` and adopted by `token init`.
//! - opencryptoki: the slot daemon and token state are machine-wide (`/etc/opencryptoki`,
//!   `/var/lib/opencryptoki`): a pool of soft-token slots (`tokname fgN`) is configured once, each
//!   node takes a free slot (a registry under a lock), and its token is re-initialized.

use super::pid_file::alive;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::privileges::Account;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A kind of development token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenKind {
    /// SoftHSM2 (Debian `softhsm2`).
    Softhsm,
    /// kryoptic (built by `scripts/kryoptic.sh`; `FROSTGATE_KRYOPTIC_MODULE` names the module).
    Kryoptic,
    /// A TPM 2.0 (swtpm) through tpm2-pkcs11.
    Tpm2,
    /// An openCryptoki soft token (needs root: its daemon and state are machine-wide).
    Opencryptoki,
}

impl TokenKind {
    /// The name in `cluster.toml`.
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Softhsm => "softhsm",
            TokenKind::Kryoptic => "kryoptic",
            TokenKind::Tpm2 => "tpm2",
            TokenKind::Opencryptoki => "opencryptoki",
        }
    }

    /// The kind named in `cluster.toml` (none: SoftHSM, as clusters made before kinds existed).
    pub fn from_name(name: Option<&str>) -> Result<TokenKind, Error> {
        match name {
            None | Some("softhsm") => Ok(TokenKind::Softhsm),
            Some("kryoptic") => Ok(TokenKind::Kryoptic),
            Some("tpm2") => Ok(TokenKind::Tpm2),
            Some("opencryptoki") => Ok(TokenKind::Opencryptoki),
            Some(other) => Err(Error::new(ErrorCode::ConfigInvalid, format!("unknown token kind {other:?}"))),
        }
    }

    fn module(self) -> Result<PathBuf, Error> {
        Ok(PathBuf::from(match self {
            TokenKind::Softhsm => "/usr/lib/softhsm/libsofthsm2.so".to_string(),
            TokenKind::Kryoptic => std::env::var("FROSTGATE_KRYOPTIC_MODULE").map_err(|_| {
                Error::new(
                    ErrorCode::ConfigInvalid,
                    "--token kryoptic: set FROSTGATE_KRYOPTIC_MODULE (scripts/kryoptic.sh builds it)",
                )
            })?,
            TokenKind::Tpm2 => TPM2_MODULE.to_string(),
            TokenKind::Opencryptoki => OCK_MODULE.to_string(),
        }))
    }
}

const TPM2_MODULE: &str = "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1";
const OCK_MODULE: &str = "/usr/lib/x86_64-linux-gnu/opencryptoki/libopencryptoki.so.0";

fn io(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::HsmModuleUnavailable, format!("{what}: {e}"))
}

fn run(what: &str, c: &mut Command) -> Result<String, Error> {
    let o = c.output().map_err(|e| io(what, e))?;
    if !o.status.success() {
        return Err(io(what, format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A node's token, made.
#[derive(Debug)]
pub struct Made {
    /// The `[custody]` lines (module, label, PIN file) for enclave.toml.
    pub custody: String,
}

/// The label of node `id`'s token, unique where tokens of several clusters meet (openCryptoki's
/// slots are machine-wide: the slot number goes into the label).
fn label_for(kind: TokenKind, id: u16, slot: Option<u64>) -> String {
    match (kind, slot) {
        (TokenKind::Opencryptoki, Some(slot)) => format!("frostgate-node{id}-s{slot}"),
        _ => format!("frostgate-node{id}"),
    }
}

/// The environment the node's enclave (and `token` commands) need for this kind.
pub fn env(kind: TokenKind, ed: &Path) -> Vec<(&'static str, PathBuf)> {
    match kind {
        TokenKind::Softhsm => vec![("SOFTHSM2_CONF", ed.join("softhsm2.conf"))],
        TokenKind::Kryoptic => vec![("KRYOPTIC_CONF", ed.join("kryoptic.conf"))],
        TokenKind::Tpm2 => {
            let t = ed.join("tpm");
            let tcti = PathBuf::from(format!("tabrmd:bus_type=session,bus_name={}", bus_name(ed)));
            vec![
                ("DBUS_SESSION_BUS_ADDRESS", PathBuf::from(format!("unix:path={}", t.join("bus").display()))),
                ("TPM2_PKCS11_TCTI", tcti.clone()),
                ("TPM2TOOLS_TCTI", tcti),
                ("TPM2_PKCS11_STORE", t.join("store")),
                // tpm2-pkcs11 logs to stderr at "error" by default; keep the enclave's log clean.
                ("TPM2_PKCS11_LOG_LEVEL", PathBuf::from("0")),
            ]
        }
        TokenKind::Opencryptoki => Vec::new(),
    }
}

/// A D-Bus name unique to the node directory.
fn bus_name(ed: &Path) -> String {
    use bitcoin::hashes::{sha256, Hash};
    let digest = sha256::Hash::hash(ed.as_os_str().as_encoded_bytes());
    format!("com.intel.tss2.Tabrmd.fg{}", hex::encode(&digest.as_byte_array()[..6]))
}

/// Creates the token of node `id` in `ed` and writes its PIN to `pin_file`; daemons it needs are
/// started as this user and stopped again (`up` starts them as the enclave's user).
pub fn make(kind: TokenKind, ed: &Path, id: u16, pin_file: &Path, cluster: &Path) -> Result<Made, Error> {
    let module = kind.module()?;
    let mut label = label_for(kind, id, None);
    let mut pin = hex::encode(frostgate_host::random_bytes::<8>());
    match kind {
        TokenKind::Softhsm => {
            std::fs::write(
                ed.join("softhsm2.conf"),
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\nlibrary.reset_on_fork = true\n",
                    ed.join("tokens").display()
                ),
            )
            .map_err(|e| io("softhsm conf", e))?;
            let so_pin = hex::encode(frostgate_host::random_bytes::<8>());
            run(
                "softhsm2-util (install softhsm2)",
                Command::new("softhsm2-util")
                    .args(["--init-token", "--free", "--label", &label, "--so-pin", &so_pin, "--pin", &pin])
                    .envs(env(kind, ed)),
            )?;
        }
        TokenKind::Kryoptic => {
            let conf = ed.join("kryoptic.conf");
            std::fs::write(
                &conf,
                format!(
                    "[[slots]]\nslot = 1\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n",
                    ed.join("tokens/token.sql").display()
                ),
            )
            .map_err(|e| io("kryoptic conf", e))?;
            let so_pin = hex::encode(frostgate_host::random_bytes::<8>());
            let m = module.display().to_string();
            run(
                "pkcs11-tool",
                Command::new("pkcs11-tool")
                    .args(["--module", &m, "--slot", "1", "--init-token", "--label", &label, "--so-pin", &so_pin])
                    .envs(env(kind, ed)),
            )?;
            run(
                "pkcs11-tool",
                Command::new("pkcs11-tool")
                    .args(["--module", &m, "--slot", "1", "--login", "--login-type", "so", "--init-pin"])
                    .args(["--so-pin", &so_pin, "--new-pin", &pin])
                    .envs(env(kind, ed)),
            )?;
        }
        TokenKind::Tpm2 => {
            std::fs::create_dir_all(ed.join("tpm/state")).map_err(|e| io("tpm dir", e))?;
            std::fs::create_dir_all(ed.join("tpm/store")).map_err(|e| io("tpm dir", e))?;
            std::fs::set_permissions(ed.join("tpm"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(|e| io("tpm dir", e))?;
            let made = start(kind, ed, None).and_then(|()| tpm2_token(ed, &label, &pin));
            stop(kind, ed);
            made?;
        }
        TokenKind::Opencryptoki => {
            // openCryptoki's soft token takes user PINs of 4 to 8 characters.
            pin.truncate(8);
            label = super::dev_tokens_ock::make(&pin, cluster, |slot| label_for(kind, id, Some(slot)))?;
        }
    }
    super::output::write_private(pin_file, &format!("{pin}\n"))?;
    let module_line =
        if kind == TokenKind::Softhsm { String::new() } else { format!("module = \"{}\"\n", module.display()) };
    Ok(Made {
        custody: format!(
            "[custody]\n{module_line}token_label = \"{label}\"\npin = {{ file = \"{}\" }}\n",
            pin_file.display()
        ),
    })
}

fn tpm2_token(ed: &Path, label: &str, pin: &str) -> Result<(), Error> {
    let so_pin = hex::encode(frostgate_host::random_bytes::<8>());
    let ptool = |args: &[&str]| {
        run(
            "tpm2_ptool (install libtpm2-pkcs11-tools)",
            Command::new("tpm2_ptool").args(args).envs(env(TokenKind::Tpm2, ed)),
        )
    };
    ptool(&["init"])?;
    ptool(&[
        "addtoken",
        "--pid=1",
        &format!("--sopin={so_pin}"),
        &format!("--userpin={pin}"),
        &format!("--label={label}"),
    ])?;
    // tpm2-pkcs11 has no C_GenerateKey: the key-encryption key comes from its tool, and
    // `token init` adopts it (checked like its own: sensitive, never extractable, encrypt+decrypt).
    ptool(&[
        "addkey",
        "--algorithm=aes256",
        &format!("--label={label}"),
        &format!("--userpin={pin}"),
        "--key-label=frostgate-kek",
    ])?;
    Ok(())
}

/// Starts the daemons the node's token needs (tpm2: swtpm, D-Bus, tpm2-abrmd), as `user` when
/// given; a daemon already running is left alone. On failure none is left running.
pub fn start(kind: TokenKind, ed: &Path, user: Option<&Account>) -> Result<(), Error> {
    if kind != TokenKind::Tpm2 {
        return Ok(());
    }
    let started = start_tpm2(ed, user);
    if started.is_err() {
        stop(kind, ed);
    }
    started
}

fn start_tpm2(ed: &Path, user: Option<&Account>) -> Result<(), Error> {
    let t = ed.join("tpm");
    let as_user = |c: &mut Command| {
        if let Some(u) = user {
            c.uid(u.uid).gid(u.gid);
        }
        c.process_group(0);
    };
    if alive(&t.join("swtpm.pid")).is_none() {
        let _ = std::fs::remove_file(t.join("sock"));
        let mut c = Command::new("swtpm");
        c.args(["socket", "--tpm2", "--daemon", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", t.join("state").display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", t.join("sock").display()))
            .arg("--ctrl")
            // The swtpm TCTI finds the control socket at the server socket's path + ".ctrl".
            .arg(format!("type=unixio,path={}", t.join("sock.ctrl").display()))
            .arg("--pid")
            .arg(format!("file={}", t.join("swtpm.pid").display()));
        as_user(&mut c);
        run("swtpm (install swtpm)", &mut c)?;
    }
    if alive(&t.join("dbus.pid")).is_none() {
        let _ = std::fs::remove_file(t.join("bus"));
        let mut c = Command::new("dbus-daemon");
        c.args(["--session", "--fork", "--print-pid=1"])
            .arg(format!("--address=unix:path={}", t.join("bus").display()));
        as_user(&mut c);
        let pid = run("dbus-daemon (install dbus)", &mut c)?;
        std::fs::write(t.join("dbus.pid"), pid.trim()).map_err(|e| io("pid file", e))?;
    }
    if alive(&t.join("abrmd.pid")).is_none() {
        let log = std::fs::File::create(t.join("abrmd.log")).map_err(|e| io("abrmd log", e))?;
        let mut c = Command::new("tpm2-abrmd");
        c.args(["--session", "--allow-root"])
            .arg(format!("--dbus-name={}", bus_name(ed)))
            .arg(format!("--tcti=swtpm:path={}", t.join("sock").display()))
            .envs(env(TokenKind::Tpm2, ed))
            .stdout(std::process::Stdio::null())
            .stderr(log);
        as_user(&mut c);
        let child = c.spawn().map_err(|e| io("tpm2-abrmd (install tpm2-abrmd)", e))?;
        std::fs::write(t.join("abrmd.pid"), child.id().to_string()).map_err(|e| io("pid file", e))?;
        // Ready once the broker answers on its bus name.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut probe = Command::new("tpm2_getrandom");
            probe
                .arg("1")
                .envs(env(TokenKind::Tpm2, ed))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            if let Some(u) = user {
                probe.uid(u.uid).gid(u.gid);
            }
            let ok = probe.status().is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(io("tpm2-abrmd", "did not come up within 20 s (see enclave/tpm/abrmd.log)"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Stops the node token's daemons by pid (each checked to be this node's: an argument under `ed`).
pub fn stop(kind: TokenKind, ed: &Path) {
    if kind != TokenKind::Tpm2 {
        return;
    }
    let t = ed.join("tpm");
    for name in ["abrmd.pid", "dbus.pid", "swtpm.pid"] {
        let file = t.join(name);
        if let Some(pid) = alive(&file) {
            if mentions(pid, ed) {
                let p = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && alive(&file).is_some() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if alive(&file).is_some() {
                    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        let _ = std::fs::remove_file(&file);
    }
}

/// Whether process `pid`'s command line names a path under `dir`.
fn mentions(pid: i32, dir: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let needle = dir.display().to_string();
    raw.split(|b| *b == 0).any(|a| String::from_utf8_lossy(a).contains(&needle))
}
