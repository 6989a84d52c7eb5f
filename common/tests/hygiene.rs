//! Secret hygiene by construction: no boundary type can carry a key share, a nonce, a DKG
//! secret package or a PIN, and `common` depends on no crate that defines such types.

use serde_reflection::{ContainerFormat, Format, VariantFormat};

/// Words that name secret material. A boundary type, field or variant whose name contains one of
/// these (as a snake_case or CamelCase word) fails the test.
const SECRET_WORDS: &[&str] =
    &["secret", "nonce", "nonces", "pin", "password", "passphrase", "private", "kek", "seed", "plaintext"];
/// Word pairs that name secret material.
const SECRET_PAIRS: &[(&str, &str)] =
    &[("signing", "share"), ("secret", "share"), ("key", "package"), ("key", "share")];

fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in name.chars() {
        if ch == '_' || ch == '-' {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if ch.is_uppercase() && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            cur.extend(ch.to_lowercase());
        } else {
            cur.extend(ch.to_lowercase());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn names_secret(name: &str) -> bool {
    let w = words(name);
    if w.iter().any(|x| SECRET_WORDS.contains(&x.as_str())) {
        return true;
    }
    // "public key package" is public; any other "key package" is the secret one.
    w.windows(2).enumerate().any(|(i, p)| {
        SECRET_PAIRS.contains(&(p[0].as_str(), p[1].as_str())) && !(p[0] == "key" && i > 0 && w[i - 1] == "public")
    })
}

fn collect_format_names(f: &Format, out: &mut Vec<String>) {
    match f {
        Format::TypeName(n) => out.push(n.clone()),
        Format::Option(f) | Format::Seq(f) => collect_format_names(f, out),
        Format::Map { key, value } => {
            collect_format_names(key, out);
            collect_format_names(value, out);
        }
        Format::Tuple(fs) => fs.iter().for_each(|f| collect_format_names(f, out)),
        Format::TupleArray { content, .. } => collect_format_names(content, out),
        _ => {}
    }
}

/// Every type, field and variant name reachable from the boundary.
fn boundary_names() -> Vec<String> {
    let registry = frostgate_common::manifest::registry().expect("trace");
    let mut names = Vec::new();
    for (ty, c) in &registry {
        names.push(ty.clone());
        match c {
            ContainerFormat::Struct(fields) => {
                for f in fields {
                    names.push(f.name.clone());
                    collect_format_names(&f.value, &mut names);
                }
            }
            ContainerFormat::Enum(vs) => {
                for v in vs.values() {
                    // A unit variant carries no data (e.g. the error code `HsmPinIncorrect`),
                    // so only variants with a payload are checked by name.
                    if !matches!(v.value, VariantFormat::Unit) {
                        names.push(v.name.clone());
                    }
                    match &v.value {
                        VariantFormat::Struct(fields) => fields.iter().for_each(|f| {
                            names.push(f.name.clone());
                            collect_format_names(&f.value, &mut names);
                        }),
                        VariantFormat::NewType(f) => collect_format_names(f, &mut names),
                        VariantFormat::Tuple(fs) => fs.iter().for_each(|f| collect_format_names(f, &mut names)),
                        _ => {}
                    }
                }
            }
            ContainerFormat::NewTypeStruct(f) => collect_format_names(f, &mut names),
            ContainerFormat::TupleStruct(fs) => fs.iter().for_each(|f| collect_format_names(f, &mut names)),
            ContainerFormat::UnitStruct => {}
        }
    }
    names
}

#[test]
fn the_detector_recognizes_secret_names() {
    for secret in [
        "SigningShare",
        "signing_share",
        "SigningNonces",
        "nonces",
        "KeyPackage",
        "key_package",
        "pin",
        "UserPin",
        "SecretShare",
        "round2_secret_package",
        "kek_value",
        "Seed",
        "plaintext",
    ] {
        assert!(names_secret(secret), "{secret} not detected");
    }
    for public in [
        "PublicKeyPackage",
        "public_key_package",
        "SignatureShare",
        "signature_share",
        "SigningCommitments",
        "hiding_commitment",
        "Ping",
        "Spinner",
        "pinned_identity",
        "Label",
        "HealthReply",
    ] {
        assert!(!names_secret(public), "{public} flagged");
    }
}

#[test]
fn no_boundary_type_field_or_variant_names_a_secret() {
    let names = boundary_names();
    assert!(names.len() > 10, "tracing found too little: {names:?}");
    let bad: Vec<_> = names.iter().filter(|n| names_secret(n)).collect();
    assert!(bad.is_empty(), "boundary names that denote secrets: {bad:?}");
}

#[test]
fn common_depends_on_no_crate_that_holds_secrets() {
    let manifest = include_str!("../Cargo.toml");
    let deps = manifest.split("[dependencies]").nth(1).expect("[dependencies]").split("\n[").next().expect("section");
    for forbidden in ["frost", "secrecy", "zeroize", "cryptoki", "ring", "secp256k1", "bitcoin"] {
        for line in deps.lines() {
            let name = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
            assert!(!name.contains(forbidden), "common depends on {name}, which can hold secrets");
        }
    }
}
