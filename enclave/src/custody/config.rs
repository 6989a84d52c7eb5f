//! Custody configuration: which PKCS#11 module, which token (by label, never by slot), where the
//! PIN comes from, and the labels of this enclave's objects.
//!
//! Invariant: the PIN is read only into `secrecy` memory, never logged or `Debug`-printed, and
//! never leaves the enclave process.

use frostgate_common::error::{Error, ErrorCode};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Debian's SoftHSM2 module.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// `[custody]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustodyConfig {
    /// Path of the PKCS#11 module.
    #[serde(default = "default_module")]
    pub module: PathBuf,
    /// Label of the token (slot ids are not stable; labels are).
    pub token_label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// Prefix of this enclave's object labels (`<prefix>-kek`, `<prefix>-mac-root`,
    /// `<prefix>-identity`).
    #[serde(default = "default_prefix")]
    pub object_label_prefix: String,
    /// The custody profile (`full`, `cbc_hmac`, `aes_only`). At `token init`: the profile to
    /// create (refused, naming what is missing, if the token cannot), else the strongest the
    /// token supports. At boot: must equal the token's recorded profile (never re-chosen).
    #[serde(default)]
    pub profile: Option<frostgate_common::protocol::CustodyProfile>,
}

/// Where the user PIN is read from. The configuration names the source, never the PIN.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum PinSource {
    /// A file holding the PIN (one trailing newline is ignored).
    File(PathBuf),
    /// The name of an environment variable holding the PIN.
    Env(String),
}

fn default_module() -> PathBuf {
    PathBuf::from(DEFAULT_MODULE)
}

fn default_prefix() -> String {
    "frostgate".into()
}

pub(crate) fn config_err(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, msg)
}

/// `O_NOFOLLOW` (Linux): opening a symbolic link fails.
const fn libc_o_nofollow() -> i32 {
    0o400000
}

impl CustodyConfig {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.token_label.is_empty() || self.token_label.len() > 32 {
            return Err(config_err("custody.token_label must be 1..=32 bytes (the PKCS#11 label field)"));
        }
        let p = &self.object_label_prefix;
        if p.is_empty() || p.len() > 32 || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(config_err("custody.object_label_prefix must be 1..=32 of [A-Za-z0-9_-]"));
        }
        Ok(())
    }

    /// Reads the PIN from its source into secret memory.
    pub fn read_pin(&self) -> Result<SecretString, Error> {
        self.pin.read()
    }
}

impl PinSource {
    /// Reads the PIN into secret memory.
    pub fn read(&self) -> Result<SecretString, Error> {
        let unavailable = |msg: String| Error::new(ErrorCode::HsmPinUnavailable, msg);
        let raw: Zeroizing<Vec<u8>> = match self {
            PinSource::File(path) => {
                // One descriptor for the check and the read (no swap between them); a link is
                // refused, and so is a file another user owns or can reach.
                use std::io::Read;
                use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
                let mut file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc_o_nofollow())
                    .open(path)
                    .map_err(|e| unavailable(format!("reading PIN file {}: {e}", path.display())))?;
                let meta = file.metadata().map_err(|e| unavailable(format!("PIN file {}: {e}", path.display())))?;
                crate::private_file::private_to_me(path, "PIN file", meta.uid(), meta.mode())?;
                let mut bytes = Zeroizing::new(Vec::new());
                file.read_to_end(&mut bytes)
                    .map_err(|e| unavailable(format!("reading PIN file {}: {e}", path.display())))?;
                bytes
            }
            PinSource::Env(name) => Zeroizing::new(
                std::env::var_os(name)
                    .ok_or_else(|| unavailable(format!("environment variable {name} is not set")))?
                    .into_encoded_bytes(),
            ),
        };
        let mut pin: &[u8] = &raw;
        if let Some(stripped) = pin.strip_suffix(b"\n") {
            pin = stripped.strip_suffix(b"\r").unwrap_or(stripped);
        }
        if pin.is_empty() {
            return Err(unavailable("the PIN source is empty".into()));
        }
        let pin = std::str::from_utf8(pin).map_err(|_| unavailable("the PIN is not UTF-8".into()))?;
        // `String::from(&str)` allocates exactly `len` bytes, so turning it into the boxed str
        // inside `SecretString` does not reallocate and leave an unwiped copy behind.
        Ok(SecretString::from(String::from(pin)))
    }
}

/// `text` (an enclave.toml) with `profile = "<name>"` recorded in its `[custody]` table, as
/// `token init` leaves it; `None` if there is no `[custody]` line or the table names a profile
/// already (boot then checks that one).
pub fn with_profile(text: &str, profile: frostgate_common::protocol::CustodyProfile) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.trim() == "[custody]")?;
    let table_end =
        lines[at + 1..].iter().position(|l| l.trim_start().starts_with('[')).map_or(lines.len(), |i| at + 1 + i);
    if lines[at + 1..table_end].iter().any(|l| l.trim_start().starts_with("profile")) {
        return None;
    }
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.insert(at + 1, format!("profile = \"{}\"", profile.name()));
    Some(out.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnclaveConfig;
    use secrecy::ExposeSecret;

    #[test]
    fn parses_and_rejects_unknown_fields() {
        let ok = EnclaveConfig::parse("[custody]\ntoken_label = \"n1\"\npin = { env = \"P\" }\n").expect("valid");
        let c = ok.custody.expect("custody");
        assert_eq!(c.module, PathBuf::from(DEFAULT_MODULE));
        assert_eq!(c.object_label_prefix, "frostgate");
        for bad in [
            "[custody]\ntoken_label = \"n1\"\npin = { env = \"P\" }\nslot = 3\n",
            "[custody]\ntoken_label = \"n1\"\n",
            "[custody]\ntoken_label = \"\"\npin = { env = \"P\" }\n",
            "[custody]\ntoken_label = \"n1\"\npin = { env = \"P\" }\nobject_label_prefix = \"a b\"\n",
            "[custodie]\n",
        ] {
            let e = EnclaveConfig::parse(bad).expect_err(bad);
            assert_eq!(e.code(), ErrorCode::ConfigInvalid, "{bad}");
        }
    }

    #[test]
    fn token_init_records_the_profile_in_the_custody_table_once() {
        use frostgate_common::protocol::CustodyProfile;
        let text = "[custody]\ntoken_label = \"n1\"\npin = { env = \"P\" }\n\n[group]\nparticipants = []\n";
        let recorded = with_profile(text, CustodyProfile::AesOnly).expect("recorded");
        let parsed = EnclaveConfig::parse(&recorded).expect("still valid");
        assert_eq!(parsed.custody.expect("custody").profile, Some(CustodyProfile::AesOnly));
        assert!(recorded.contains("[group]"));
        assert_eq!(with_profile(&recorded, CustodyProfile::Full), None, "already recorded");
        assert_eq!(with_profile("[policy]\n", CustodyProfile::Full), None, "no custody table");
    }

    #[test]
    fn pin_from_file_strips_one_newline_and_debug_redacts() {
        let dir = std::env::temp_dir().join(format!("fg-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("pin");
        std::fs::write(&f, "s3cr3t-pin\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        let chmod = |mode| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).expect("chmod");
        chmod(0o600);
        let c = CustodyConfig {
            module: default_module(),
            token_label: "t".into(),
            pin: PinSource::File(f.clone()),
            object_label_prefix: "p".into(),
            profile: None,
        };
        let pin = c.read_pin().expect("pin");
        assert_eq!(pin.expose_secret(), "s3cr3t-pin");
        assert!(!format!("{pin:?}").contains("s3cr3t"));
        // Readable by others: refused, on the descriptor it would be read from.
        chmod(0o644);
        assert_eq!(c.read_pin().expect_err("other-readable").code(), ErrorCode::ConfigInvalid);
        chmod(0o600);
        // A symbolic link to a PIN file: refused (O_NOFOLLOW).
        let link = dir.join("pin-link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&f, &link).expect("symlink");
        let linked = CustodyConfig { pin: PinSource::File(link.clone()), ..c.clone() };
        assert_eq!(linked.read_pin().expect_err("link").code(), ErrorCode::HsmPinUnavailable);
        std::fs::remove_file(&link).expect("rm link");
        std::fs::write(&f, "\n").expect("write");
        assert_eq!(c.read_pin().expect_err("empty").code(), ErrorCode::HsmPinUnavailable);
        std::fs::remove_file(&f).expect("rm");
        assert_eq!(c.read_pin().expect_err("missing").code(), ErrorCode::HsmPinUnavailable);
        let c = CustodyConfig { pin: PinSource::Env("FROSTGATE_TEST_SURELY_UNSET_VAR".into()), ..c };
        assert_eq!(c.read_pin().expect_err("unset").code(), ErrorCode::HsmPinUnavailable);
    }
}
