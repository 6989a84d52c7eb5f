//! The boundary manifest: a readable description of every message that crosses the channel,
//! generated from the code by tracing the serde types (`serde-reflection`).
//!
//! Invariant: `common/BOUNDARY.md` equals [`render`]'s output; `tests/manifest.rs` fails
//! otherwise, so every change to the boundary shows up as a reviewed diff of that file.

use crate::bounded::ALL_BOUNDS;
use crate::error::ErrorCode;
use crate::ids::ParticipantId;
use crate::limits;
use crate::protocol::ALL_LIST_BOUNDS;
use crate::protocol::{
    AggregateOutcome, Direction, Message, Role, ServiceState, ShareVerdict, TaprootMode, KINDS, PROTOCOL_VERSION,
};
use serde_reflection::{ContainerFormat, Format, Named, Registry, Samples, Tracer, TracerConfig, VariantFormat};
use std::fmt::Write;

/// Traces the message set. Fails only if a boundary type cannot be traced (a bug).
pub fn registry() -> Result<Registry, String> {
    let mut tracer = Tracer::new(TracerConfig::default().record_samples_for_newtype_structs(true));
    let mut samples = Samples::new();
    // Types whose decoder validates need a valid sample before the decoder can be traced.
    let participant = ParticipantId::new(1).map_err(|e| e.to_string())?;
    tracer.trace_value(&mut samples, &participant).map_err(|e| e.to_string())?;
    let e = |e: serde_reflection::Error| e.to_string();
    tracer.trace_type::<Message>(&samples).map_err(e)?;
    // Every enum nested in a message must be traced on its own to see all of its variants.
    tracer.trace_type::<ErrorCode>(&samples).map_err(e)?;
    tracer.trace_type::<ServiceState>(&samples).map_err(e)?;
    tracer.trace_type::<TaprootMode>(&samples).map_err(e)?;
    tracer.trace_type::<ShareVerdict>(&samples).map_err(e)?;
    tracer.trace_type::<AggregateOutcome>(&samples).map_err(e)?;
    tracer.trace_type::<crate::protocol::AuditDecision>(&samples).map_err(e)?;
    tracer.trace_type::<crate::protocol::SessionBinding>(&samples).map_err(e)?;
    tracer.trace_type::<crate::protocol::RequestOpen>(&samples).map_err(e)?;
    tracer.trace_type::<crate::protocol::SignOutcome>(&samples).map_err(e)?;
    tracer.trace_type::<crate::protocol::CustodyProfile>(&samples).map_err(e)?;
    tracer.trace_type::<crate::protocol::AttestationProvider>(&samples).map_err(e)?;
    tracer.trace_type::<crate::protocol::CeremonyKind>(&samples).map_err(e)?;
    tracer.registry().map_err(|e| e.to_string())
}

/// Renders the manifest as Markdown.
pub fn render() -> Result<String, String> {
    let registry = registry()?;
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# frostgate boundary manifest\n");
    let _ =
        writeln!(w, "Generated from the code by `frostgate enclave protocol`; `common/tests/manifest.rs` fails when");
    let _ = writeln!(
        w,
        "the code and this file differ. Review every diff of this file as a change to the trust boundary.\n"
    );
    let _ = writeln!(w, "Protocol version: {PROTOCOL_VERSION}\n");
    let _ = writeln!(w, "## Frame\n");
    let _ = writeln!(w, "| field | encoding |\n|---|---|");
    let _ = writeln!(
        w,
        "| length | u32 big-endian, bytes after this field, {}..={} |",
        limits::FRAME_HEADER_LEN,
        limits::MAX_FRAME_LEN
    );
    let _ = writeln!(w, "| version | u16 big-endian, must equal {PROTOCOL_VERSION} |");
    let _ = writeln!(
        w,
        "| request id | u64 big-endian; a reply carries its request's id; 0 = error about an unreadable frame |"
    );
    let _ = writeln!(w, "| message | postcard encoding of `Message`; its first varint is the message kind |\n");
    let _ = writeln!(w, "## Messages\n");
    let _ = writeln!(
        w,
        "Generated from the one boundary table (`common/src/protocol/table.rs`). `exposure`: `channel` \
         (host and enclave only) or `network` (also the gRPC RPC of that name); `needs`: the enclave's \
         state before it serves the request; `opens`, `closes`: the enclave registries whose entries \
         it opens or closes (the host's per-caller admission counts every opening against the \
         caller's quota from these columns); `purpose`: the row's doc comment.\n"
    );
    let _ = writeln!(
        w,
        "| kind | name | role | sender | exposure | needs | opens | closes | reply | payload | purpose |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    let variants = match registry.get("Message") {
        Some(ContainerFormat::Enum(v)) => v,
        _ => return Err("Message is not an enum".into()),
    };
    for (index, info) in KINDS.iter().enumerate() {
        let payload = variants
            .get(&(index as u32))
            .filter(|v| v.name == info.name)
            .map(|v| variant(&v.value))
            .ok_or_else(|| format!("KINDS[{index}] = {} does not match the Message enum", info.name))?;
        let role = match info.role {
            Role::Request => "request",
            Role::Reply => "reply",
        };
        let sender = match info.direction {
            Direction::HostToEnclave => "host",
            Direction::EnclaveToHost => "enclave",
            Direction::Both => "either",
        };
        let names = |r: &[crate::protocol::Registry]| r.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ");
        let (exposure, needs, opens, closes) = match info.request {
            Some(r) => (
                format!("{:?}", r.exposure).to_lowercase(),
                format!("{:?}", r.readiness).to_lowercase(),
                names(r.opens),
                names(r.closes),
            ),
            None => Default::default(),
        };
        let reply = Message::reply_names(index).join(" or ");
        let purpose = info.purpose.trim().replace('|', "\\|");
        let _ = writeln!(
            w,
            "| {index} | {} | {role} | {sender} | {exposure} | {needs} | {opens} | {closes} | {reply} | {payload} | {purpose} |",
            info.name
        );
    }
    if variants.len() != KINDS.len() {
        return Err(format!("Message has {} variants, KINDS lists {}", variants.len(), KINDS.len()));
    }
    let _ = writeln!(w, "\n## Types\n");
    for (name, container) in &registry {
        if name == "Message" {
            continue;
        }
        let _ = writeln!(w, "- `{name}`: {}", self::container(container));
    }
    let _ = writeln!(w, "\n## Bounded types\n");
    let _ = writeln!(w, "| type | max bytes | content |\n|---|---|---|");
    for b in ALL_BOUNDS.iter().chain(ALL_LIST_BOUNDS) {
        let _ = writeln!(w, "| {} | {} | {} |", b.name, b.max_len, b.meaning);
    }
    let _ = writeln!(w, "\n## Limits\n");
    let _ = writeln!(w, "| limit | value |\n|---|---|");
    let _ = writeln!(w, "| MAX_FRAME_LEN | {} |", limits::MAX_FRAME_LEN);
    let _ = writeln!(w, "| MAX_IN_FLIGHT (per side, per connection) | {} |", limits::MAX_IN_FLIGHT);
    let _ = writeln!(w, "| MAX_PARTICIPANTS | {} |", limits::MAX_PARTICIPANTS);
    let _ = writeln!(w, "\n## Error codes\n");
    let _ = writeln!(w, "| index | code | recovery class |\n|---|---|---|");
    for (i, c) in ErrorCode::ALL.iter().enumerate() {
        let _ = writeln!(w, "| {i} | {} | {} |", c.code(), c.recovery_class());
    }
    Ok(s)
}

fn container(c: &ContainerFormat) -> String {
    match c {
        ContainerFormat::UnitStruct => "unit".into(),
        ContainerFormat::NewTypeStruct(f) => format!("newtype({})", format(f)),
        ContainerFormat::TupleStruct(fs) => format!("tuple({})", list(fs)),
        ContainerFormat::Struct(fields) => format!("struct {{ {} }}", named(fields)),
        ContainerFormat::Enum(vs) => {
            let vs: Vec<String> = vs
                .iter()
                .map(|(i, v)| match &v.value {
                    VariantFormat::Unit => format!("{i}={}", v.name),
                    other => format!("{i}={}{}", v.name, variant_suffix(other)),
                })
                .collect();
            format!("enum {{ {} }}", vs.join(", "))
        }
    }
}

fn variant(v: &VariantFormat) -> String {
    match v {
        VariantFormat::Unit => "none".into(),
        other => variant_suffix(other).trim_start_matches('(').trim_end_matches(')').trim().to_string(),
    }
}

fn variant_suffix(v: &VariantFormat) -> String {
    match v {
        VariantFormat::Variable(_) => "(?)".into(),
        VariantFormat::Unit => String::new(),
        VariantFormat::NewType(f) => format!("({})", format(f)),
        VariantFormat::Tuple(fs) => format!("({})", list(fs)),
        VariantFormat::Struct(fields) => format!(" {{ {} }}", named(fields)),
    }
}

fn named(fields: &[Named<Format>]) -> String {
    fields.iter().map(|f| format!("{}: {}", f.name, format(&f.value))).collect::<Vec<_>>().join(", ")
}

fn list(fs: &[Format]) -> String {
    fs.iter().map(format).collect::<Vec<_>>().join(", ")
}

fn format(f: &Format) -> String {
    match f {
        Format::Variable(_) => "?".into(),
        Format::TypeName(n) => format!("`{n}`"),
        Format::Unit => "unit".into(),
        Format::Bool => "bool".into(),
        Format::I8 => "i8".into(),
        Format::I16 => "i16".into(),
        Format::I32 => "i32".into(),
        Format::I64 => "i64".into(),
        Format::I128 => "i128".into(),
        Format::U8 => "u8".into(),
        Format::U16 => "u16".into(),
        Format::U32 => "u32".into(),
        Format::U64 => "u64".into(),
        Format::U128 => "u128".into(),
        Format::F32 => "f32".into(),
        Format::F64 => "f64".into(),
        Format::Char => "char".into(),
        Format::Str => "string".into(),
        Format::Bytes => "bytes".into(),
        Format::Option(f) => format!("option<{}>", format(f)),
        Format::Seq(f) => format!("seq<{}>", format(f)),
        Format::Map { key, value } => format!("map<{}, {}>", format(key), format(value)),
        Format::Tuple(fs) => format!("({})", list(fs)),
        Format::TupleArray { content, size } => format!("[{}; {size}]", format(content)),
    }
}

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

/// Whether a type, field, variant or RPC name denotes secret material (a key share, a nonce, a
/// DKG secret package, a PIN, a private key). The hygiene tests run it over every name reachable
/// from the boundary and over the network API's contract; `public key package` and
/// `signature share` are public.
pub fn names_secret(name: &str) -> bool {
    let w = words(name);
    if w.iter().any(|x| SECRET_WORDS.contains(&x.as_str())) {
        return true;
    }
    // "public key package" is public; any other "key package" is the secret one.
    w.windows(2).enumerate().any(|(i, p)| {
        SECRET_PAIRS.contains(&(p[0].as_str(), p[1].as_str())) && !(p[0] == "key" && i > 0 && w[i - 1] == "public")
    })
}
