//! Secret hygiene by construction: no boundary type can carry a key share, a nonce, a DKG
//! secret package or a PIN, and `common` depends on no crate that defines such types.

use frostgate_common::manifest::names_secret;
use serde_reflection::{ContainerFormat, Format, VariantFormat};

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
