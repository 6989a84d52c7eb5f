//! Test tokens: each one in its own temporary directory with its own configuration file and a
//! random PIN, so tests never share token state and log scans for the PIN are meaningful.
//!
//! The provider is SoftHSM2 by default; `FROSTGATE_TEST_PKCS11=kryoptic` (with
//! `FROSTGATE_KRYOPTIC_MODULE` naming the built module) runs the same tests on kryoptic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Debian's SoftHSM2 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const SO_PIN: &str = "so-pin-12345678";

/// Which PKCS#11 implementation backs the test tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// SoftHSM2 (Debian package `softhsm2`).
    SoftHsm,
    /// kryoptic, built by `scripts/kryoptic.sh`.
    Kryoptic,
}

impl Provider {
    /// The provider selected by `FROSTGATE_TEST_PKCS11`.
    pub fn from_env() -> Provider {
        match std::env::var("FROSTGATE_TEST_PKCS11").as_deref() {
            Ok("kryoptic") => Provider::Kryoptic,
            Ok("softhsm") | Err(_) => Provider::SoftHsm,
            Ok(other) => panic!("FROSTGATE_TEST_PKCS11={other}: expected softhsm or kryoptic"),
        }
    }

    /// The module path.
    pub fn module(self) -> PathBuf {
        match self {
            Provider::SoftHsm => PathBuf::from(SOFTHSM_MODULE),
            Provider::Kryoptic => {
                PathBuf::from(std::env::var("FROSTGATE_KRYOPTIC_MODULE").expect("FROSTGATE_KRYOPTIC_MODULE"))
            }
        }
    }
}

/// A hex string from the OS CSPRNG.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A token directory (one provider configuration) holding one or more tokens.
#[derive(Debug)]
pub struct TokenDir {
    dir: tempfile::TempDir,
    /// The provider.
    pub provider: Provider,
    conf: PathBuf,
}

/// Writes a file readable by its owner only (PIN files: the enclave refuses any other mode).
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).expect("private file");
    f.write_all(contents.as_ref()).expect("write");
}

/// One initialized token with its PIN in a file and an enclave configuration naming it.
#[derive(Debug, Clone)]
pub struct TestToken {
    /// The token label.
    pub label: String,
    /// The user PIN (random).
    pub pin: String,
    /// File holding the PIN.
    pub pin_file: PathBuf,
    /// Enclave configuration (TOML) for this token.
    pub config: PathBuf,
    /// Module path.
    pub module: PathBuf,
    env: Vec<(String, String)>,
}

impl TokenDir {
    /// A fresh, empty token directory for the selected provider.
    pub fn new() -> TokenDir {
        let provider = Provider::from_env();
        let dir = tempfile::Builder::new().prefix("fg-token-").tempdir().expect("temp dir");
        let conf = match provider {
            Provider::SoftHsm => {
                std::fs::create_dir(dir.path().join("tokens")).expect("tokens dir");
                // The enclave refuses a token directory other users can reach.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir.path().join("tokens"), std::fs::Permissions::from_mode(0o700))
                    .expect("chmod tokens");
                let conf = dir.path().join("softhsm2.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\nlibrary.reset_on_fork = true\n",
                        dir.path().join("tokens").display()
                    ),
                )
                .expect("conf");
                conf
            }
            Provider::Kryoptic => dir.path().join("kryoptic.conf"),
        };
        TokenDir { dir, provider, conf }
    }

    /// The environment a process needs to see these tokens.
    pub fn env(&self) -> Vec<(String, String)> {
        let var = match self.provider {
            Provider::SoftHsm => "SOFTHSM2_CONF",
            Provider::Kryoptic => "KRYOPTIC_CONF",
        };
        vec![(var.into(), self.conf.display().to_string())]
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Initializes a new token with a random PIN and writes an enclave configuration for it.
    pub fn add_token(&self, label: &str) -> TestToken {
        let pin = format!("pin-{}", random_hex(12));
        let module = self.provider.module();
        match self.provider {
            Provider::SoftHsm => {
                let out = Command::new("softhsm2-util")
                    .args(["--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", &pin])
                    .envs(self.env())
                    .output()
                    .expect("softhsm2-util");
                assert!(out.status.success(), "init token: {}", String::from_utf8_lossy(&out.stderr));
            }
            Provider::Kryoptic => self.init_kryoptic_token(label, &pin, &module),
        }
        let pin_file = self.path().join(format!("{label}.pin"));
        write_private(&pin_file, format!("{pin}\n"));
        let config = self.path().join(format!("{label}.toml"));
        std::fs::write(
            &config,
            format!(
                "[custody]\nmodule = \"{}\"\ntoken_label = \"{label}\"\npin = {{ file = \"{}\" }}\n",
                module.display(),
                pin_file.display()
            ),
        )
        .expect("config");
        TestToken { label: label.into(), pin, pin_file, config, module, env: self.env() }
    }

    fn init_kryoptic_token(&self, label: &str, pin: &str, module: &Path) {
        // One sqlite database per token, each in its own slot.
        let existing = std::fs::read_to_string(&self.conf).unwrap_or_default();
        let slot = existing.matches("[[slots]]").count() + 1;
        let db = self.path().join(format!("{label}.sql"));
        std::fs::write(
            &self.conf,
            format!("{existing}[[slots]]\nslot = {slot}\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n\n", db.display()),
        )
        .expect("kryoptic conf");
        let m = module.display().to_string();
        let run = |args: &[&str]| {
            let out = Command::new("pkcs11-tool")
                .args(["--module", &m])
                .args(args)
                .envs(self.env())
                .output()
                .expect("pkcs11-tool");
            assert!(out.status.success(), "pkcs11-tool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let slot = slot.to_string();
        run(&["--slot", &slot, "--init-token", "--label", label, "--so-pin", SO_PIN]);
        run(&["--slot", &slot, "--login", "--login-type", "so", "--init-pin", "--so-pin", SO_PIN, "--new-pin", pin]);
    }
}

impl Default for TokenDir {
    fn default() -> Self {
        Self::new()
    }
}

impl TestToken {
    /// Creates this token's objects (as `token init` does) and opens it in this process.
    pub fn open_custody(&self) -> frostgate_enclave::custody::Custody {
        use frostgate_enclave::custody::Custody;
        let config =
            frostgate_enclave::config::EnclaveConfig::load(&self.config).expect("config").custody.expect("custody");
        frostgate_enclave::store::anchor::init_token(&config).expect("init objects");
        Custody::open(&config).expect("open")
    }

    /// Sets `[custody] profile` in this token's configuration (the profile `token init` makes and
    /// boot requires).
    pub fn set_profile(&self, profile: &str) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        let text: String = text.lines().filter(|l| !l.starts_with("profile = ")).map(|l| format!("{l}\n")).collect();
        let at = text.find("[custody]\n").expect("custody") + "[custody]\n".len();
        std::fs::write(&self.config, format!("{}profile = \"{profile}\"\n{}", &text[..at], &text[at..]))
            .expect("config");
    }

    /// The custody configuration as the enclave reads it.
    pub fn custody_config(&self) -> frostgate_enclave::custody::config::CustodyConfig {
        frostgate_enclave::config::EnclaveConfig::load(&self.config).expect("config").custody.expect("custody")
    }

    /// The environment a process needs to see this token.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Runs `pkcs11-tool` logged in to this token (the auditor's outside view).
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        Command::new("pkcs11-tool")
            .args([
                "--module",
                &self.module.display().to_string(),
                "--token-label",
                &self.label,
                "--login",
                "--pin",
                &self.pin,
            ])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("pkcs11-tool")
    }

    /// Writes a variant of this token's enclave configuration with `custody` lines replaced.
    pub fn config_with(
        &self,
        name: &str,
        module: Option<&str>,
        label: Option<&str>,
        pin_file: Option<&Path>,
    ) -> PathBuf {
        let path = self.config.with_file_name(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[custody]\nmodule = \"{}\"\ntoken_label = \"{}\"\npin = {{ file = \"{}\" }}\n",
                module.map(str::to_string).unwrap_or_else(|| self.module.display().to_string()),
                label.unwrap_or(&self.label),
                pin_file.unwrap_or(&self.pin_file).display()
            ),
        )
        .expect("config");
        path
    }

    /// Sets this process's provider environment (for in-process custody tests). Call before the
    /// PKCS#11 module is first loaded in this process.
    pub fn export_env(&self) {
        for (k, v) in &self.env {
            // Edition 2021: `set_var` is safe; tests call this once, before any thread reads it.
            std::env::set_var(k, v);
        }
    }
}

/// One token for the whole test process (in-process engine tests), its provider environment
/// exported and its custody open.
pub fn shared_custody() -> std::sync::Arc<frostgate_enclave::custody::Custody> {
    static C: std::sync::OnceLock<(std::sync::Arc<frostgate_enclave::custody::Custody>, TokenDir)> =
        std::sync::OnceLock::new();
    C.get_or_init(|| {
        let dir = TokenDir::new();
        let token = dir.add_token("shared");
        token.export_env();
        (std::sync::Arc::new(token.open_custody()), dir)
    })
    .0
    .clone()
}

/// The seal context the custody tests use (a key share of seat 2 of key 07..07 at epoch 5).
pub fn test_seal_context() -> frostgate_enclave::sealing::SealContext {
    frostgate_enclave::sealing::SealContext {
        kind: frostgate_enclave::sealing::SealedKind::KeyShare,
        key_id: frostgate_common::ids::KeyId::from_bytes([7; 32]),
        participant: frostgate_common::ids::ParticipantId::new(2).expect("id"),
        epoch: 5,
    }
}
