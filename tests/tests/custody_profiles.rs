//! Every custody profile on one token implementation, in process (`[custody] profile` forces a
//! weaker profile than the token could run; `scripts/kryoptic.sh` runs this file on kryoptic):
//! sealing round trips and refuses every tampered byte, a blob of another profile or token, and
//! a changed context; enclaves of different profiles agree on pairwise keys and verify each other's
//! identity signatures; boot refuses a profile other than the recorded one; a key-encryption-key
//! rotation carries the sealed root and identity over; an operator-made key that breaks the policy
//! is refused and init leaves nothing of its own behind.

use frostgate_common::error::ErrorCode;
use frostgate_common::ids::ParticipantId;
use frostgate_enclave::custody::identity::verify_identity_signature;
use frostgate_enclave::custody::profile::Profile;
use frostgate_enclave::custody::Custody;
use frostgate_enclave::sealing::{seal, unseal, SealContext, MAX_PLAINTEXT};
use frostgate_tests::token::{TestToken, TokenDir};
use std::sync::OnceLock;

struct Fixture {
    _dir: TokenDir,
    /// One open custody per profile, in `Profile::ALL` order.
    custodies: Vec<(Profile, Custody)>,
    /// Fresh tokens for the other tests, by label (all made before the module is loaded: SoftHSM
    /// does not see a token added later).
    spare: Vec<TestToken>,
}

const SPARE: [&str; 7] = ["recorded", "rotate-full", "rotate-cbc_hmac", "rotate-aes_only", "adopt", "probe", "twin"];

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = TokenDir::new();
        let tokens: Vec<TestToken> = (0..3).map(|i| dir.add_token(&format!("profile-{i}"))).collect();
        let spare: Vec<TestToken> = SPARE.iter().map(|l| dir.add_token(l)).collect();
        tokens[0].export_env();
        let custodies = Profile::ALL
            .into_iter()
            .zip(&tokens)
            .map(|(p, t)| {
                t.set_profile(p.name());
                (p, t.open_custody())
            })
            .collect();
        Fixture { _dir: dir, custodies, spare }
    })
}

fn spare(label: &str) -> &'static TestToken {
    fixture().spare.iter().find(|t| t.label == label).expect("spare token")
}

fn ctx() -> SealContext {
    frostgate_tests::token::test_seal_context()
}

#[test]
fn every_profile_seals_in_its_own_format_and_round_trips_every_size() {
    for (p, c) in &fixture().custodies {
        assert_eq!(c.profile(), *p);
        for len in [0usize, 1, 15, 16, 17, 32, 4096, MAX_PLAINTEXT] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let blob = seal(c, &ctx(), &plain).expect("seal");
            let expected_len = match p {
                Profile::Full => 1 + 12 + len + 16,
                // version, kek id, IV, whole blocks of the padded plaintext, tag.
                _ => 1 + 8 + 16 + (len / 16 + 1) * 16 + 32,
            };
            assert_eq!(blob.len(), expected_len, "{p} {len}");
            assert_eq!(&unseal(c, &ctx(), &blob).expect("unseal")[..], &plain[..], "{p} {len}");
            if len >= 16 {
                assert!(!blob.windows(16).any(|w| w == &plain[..16]), "{p}: plaintext visible in the blob");
            }
        }
        let a = seal(c, &ctx(), b"same").expect("seal");
        let b = seal(c, &ctx(), b"same").expect("seal");
        assert_ne!(a, b, "{p}: a fresh IV every time");
    }
}

#[test]
fn every_tampered_byte_truncation_and_extension_is_refused_under_every_profile() {
    for (p, c) in &fixture().custodies {
        let blob = seal(c, &ctx(), b"a key package would go here, 32+ bytes of it").expect("seal");
        for i in 0..blob.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = blob.clone();
                t[i] ^= bit;
                let e = unseal(c, &ctx(), &t).expect_err("tampered byte accepted");
                assert_eq!(e.code(), ErrorCode::UnsealFailed, "{p}: byte {i}");
            }
        }
        for len in 0..blob.len() {
            assert_eq!(unseal(c, &ctx(), &blob[..len]).expect_err("truncated").code(), ErrorCode::UnsealFailed, "{p}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert_eq!(unseal(c, &ctx(), &longer).expect_err("extended").code(), ErrorCode::UnsealFailed, "{p}");
        // A changed context: another seat or epoch.
        let other = SealContext { epoch: 6, ..ctx() };
        assert_eq!(unseal(c, &other, &blob).expect_err("epoch").code(), ErrorCode::UnsealFailed, "{p}");
        let other = SealContext { participant: ParticipantId::new(3).expect("id"), ..ctx() };
        assert_eq!(unseal(c, &other, &blob).expect_err("seat").code(), ErrorCode::UnsealFailed, "{p}");
        assert!(unseal(c, &ctx(), &blob).is_ok(), "{p}: the original still unseals");
    }
}

#[test]
fn a_blob_of_another_profile_or_token_is_refused() {
    let f = fixture();
    for (p, from) in &f.custodies {
        let blob = seal(from, &ctx(), b"share").expect("seal");
        for (q, to) in &f.custodies {
            if p != q {
                let e = unseal(to, &ctx(), &blob).expect_err("another profile's blob");
                assert_eq!(e.code(), ErrorCode::UnsealFailed, "{p} -> {q}");
                // Relabelled as the target's version: still refused (other keys, other format).
                let mut relabelled = blob.clone();
                relabelled[0] = seal(to, &ctx(), b"x").expect("seal")[0];
                assert_eq!(unseal(to, &ctx(), &relabelled).expect_err("relabelled").code(), ErrorCode::UnsealFailed);
            }
        }
    }
}

#[test]
fn enclaves_of_different_profiles_agree_on_pairwise_keys_and_verify_identity_signatures() {
    let f = fixture();
    for (p, a) in &f.custodies {
        let sig = a.identity_sign(b"transcript").expect("sign");
        assert!(verify_identity_signature(a.identity_public_key(), b"transcript", &sig.0, &sig.1), "{p}");
        assert!(!verify_identity_signature(a.identity_public_key(), b"transcripT", &sig.0, &sig.1), "{p}");
        for (q, b) in &f.custodies {
            if p == q {
                continue;
            }
            let ab = a.identity_shared_key(b.identity_public_key(), b"frostgate/test/v1").expect("ab");
            let ba = b.identity_shared_key(a.identity_public_key(), b"frostgate/test/v1").expect("ba");
            assert_eq!(*ab, *ba, "{p} and {q} derive different pairwise keys");
            let other = a.identity_shared_key(b.identity_public_key(), b"frostgate/test/v2").expect("ab2");
            assert_ne!(*ab, *other, "the context binds the key");
        }
    }
    // A sealed identity refuses a peer key that is not a curve point, as the token's does.
    let (_, sealed) = &f.custodies[2];
    let e = sealed.identity_shared_key(&[4u8; 65], b"context").expect_err("not a point");
    assert_eq!(e.code(), ErrorCode::DkgConfigInvalid);
}

#[test]
fn boot_refuses_a_profile_other_than_the_recorded_one_and_keeps_its_identity() {
    let t = spare("recorded");
    t.set_profile("cbc_hmac");
    let first = t.open_custody();
    let identity = first.identity_public_key().to_vec();
    first.close();
    for other in ["full", "aes_only"] {
        t.set_profile(other);
        let e = Custody::open(&t.custody_config()).expect_err("another profile");
        assert_eq!(e.code(), ErrorCode::CustodyProfileMismatch, "{e}");
        assert!(e.message().contains("cbc_hmac") && e.message().contains(other), "{e}");
    }
    // Without a configured profile the recorded one is used: never re-chosen from the mechanisms
    // (this token could run `full`).
    let text = std::fs::read_to_string(&t.config).expect("config");
    std::fs::write(
        &t.config,
        text.lines().filter(|l| !l.starts_with("profile")).map(|l| format!("{l}\n")).collect::<String>(),
    )
    .expect("config");
    let again = Custody::open(&t.custody_config()).expect("open");
    assert_eq!(again.profile(), Profile::CbcHmac);
    assert_eq!(again.identity_public_key(), identity.as_slice(), "the sealed identity survives a restart");
    again.close();
}

fn rotate_and_reopen(t: &TestToken) {
    let c = Custody::open(&t.custody_config()).expect("open");
    let identity = c.identity_public_key().to_vec();
    let store_key = c.derive_store_key().expect("store key");
    let old = seal(&c, &ctx(), b"share").expect("seal");
    assert!(c.begin_kek_rotation().expect("begin"));
    let resealed = seal(&c, &ctx(), &unseal(&c, &ctx(), &old).expect("old blob during rotation")).expect("reseal");
    c.finish_kek_rotation().expect("finish");
    assert_eq!(unseal(&c, &ctx(), &old).expect_err("old key gone").code(), ErrorCode::UnsealFailed);
    c.close();
    let c = Custody::open(&t.custody_config()).expect("reopen after rotation");
    assert_eq!(c.identity_public_key(), identity.as_slice(), "{}: identity carried over", c.profile());
    assert_eq!(*c.derive_store_key().expect("store key"), *store_key, "{}: store key unchanged", c.profile());
    assert_eq!(&unseal(&c, &ctx(), &resealed).expect("resealed")[..], b"share");
    c.close();
}

#[test]
fn a_kek_rotation_carries_the_sealed_root_and_identity_over() {
    for p in Profile::ALL {
        let t = spare(&format!("rotate-{}", p.name()));
        t.set_profile(p.name());
        t.open_custody().close();
        rotate_and_reopen(t);
        // Nothing of the old key's is left: the records sealed under it are gone with it.
        let o = t.pkcs11_tool(&["-O"]);
        let listing = String::from_utf8_lossy(&o.stdout);
        assert_eq!(listing.matches("label:      frostgate-kek").count(), 1, "{p}: {listing}");
        let copies = |label: &str| listing.matches(&format!("'{label}'")).count();
        let (root, identity) = match p {
            Profile::Full => (0, 0),
            Profile::CbcHmac => (0, 1),
            Profile::AesOnly => (1, 1),
        };
        assert_eq!((copies("frostgate-root"), copies("frostgate-identity-sealed")), (root, identity), "{p}: {listing}");
    }
}

#[test]
fn an_operator_key_that_breaks_the_policy_is_refused_and_init_leaves_nothing_else() {
    let t = spare("adopt");
    // Made without care: modifiable, copyable (SoftHSM's defaults), so not adoptable.
    let o = t.pkcs11_tool(&["--keygen", "--key-type", "AES:32", "--label", "frostgate-kek", "--sensitive"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = frostgate_enclave::store::anchor::init_token(&t.custody_config()).expect_err("weak key adopted");
    assert_eq!(e.code(), ErrorCode::HsmObjectPolicyViolation, "{e}");
    assert!(e.message().contains("frostgate-kek"), "{e}");
    let listing = String::from_utf8_lossy(&t.pkcs11_tool(&["-O"]).stdout).to_string();
    assert_eq!(listing.matches("frostgate").count(), 1, "only the operator's key is left:\n{listing}");
    // A second init still refuses it, rather than finding a half-made token.
    let e = frostgate_enclave::store::anchor::init_token(&t.custody_config()).expect_err("again");
    assert_eq!(e.code(), ErrorCode::HsmObjectPolicyViolation, "{e}");
}

#[test]
fn probe_names_the_profile_and_changes_nothing() {
    let t = spare("probe");
    let o = std::process::Command::new(frostgate_tests::enclave_bin())
        .args(["token", "probe", "--module", &t.module.display().to_string(), "--token-label", &t.label, "--json"])
        .arg("--pin-file")
        .arg(&t.pin_file)
        .envs(t.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("probe");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["profile"], "full", "{report}");
    assert!(report["profiles"].as_array().expect("profiles").iter().all(|p| p["missing"] == serde_json::json!([])));
    let checks = report["object_checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 4, "{report}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{report}");
    let in_place = checks[3]["check"].as_str().expect("check");
    assert!(in_place.starts_with("C_SetAttributeValue") && in_place.contains("anchor updated in place"), "{report}");
    assert!(report["mechanisms"].as_array().expect("mechanisms").iter().any(|m| m == "CKM_AES_GCM"), "{report}");
    let listing = String::from_utf8_lossy(&t.pkcs11_tool(&["-O"]).stdout).to_string();
    assert!(!listing.contains("frostgate"), "the probe left an object:\n{listing}");
}

#[test]
fn two_key_encryption_keys_with_one_id_are_refused_at_boot() {
    let t = spare("twin");
    t.open_custody().close();
    let listing = String::from_utf8_lossy(&t.pkcs11_tool(&["-O", "--type", "secrkey"]).stdout).to_string();
    let kek = listing.split("label:      frostgate-kek").nth(1).expect("the key-encryption key");
    let id = kek.lines().find_map(|l| l.trim().strip_prefix("ID:")).expect("its id").trim().to_string();
    // A second key under the same label and id (an operator's slip when making the next one).
    let o =
        t.pkcs11_tool(&["--keygen", "--key-type", "AES:32", "--label", "frostgate-kek", "--id", &id, "--sensitive"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = Custody::open(&t.custody_config()).expect_err("ambiguous keys");
    assert_eq!(e.code(), ErrorCode::HsmObjectPolicyViolation, "{e}");
    assert!(e.message().contains("same id"), "{e}");
}
