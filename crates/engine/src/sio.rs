//! Socket.IO packet codec (pure functions, no I/O).
//!
//! Text form: `<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]`, e.g.
//! `2["chat","hi"]`, `2/admin,13["ping"]`, `51-["file",{"_placeholder":true,"num":0}]`.
//! Binary attachments follow a BINARY_EVENT / BINARY_ACK as separate binary messages.

use serde_json::Value;

/// Largest accepted number of binary attachments announced by one packet.
pub(crate) const MAX_ATTACHMENTS: usize = 1000;
/// Ack ids are JavaScript numbers on the client: keep them within safe integers.
const MAX_ACK_DIGITS: usize = 15;

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl PacketKind {
    fn from_char(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }
    fn as_char(self) -> char {
        match self {
            Self::Connect => '0',
            Self::Disconnect => '1',
            Self::Event => '2',
            Self::Ack => '3',
            Self::ConnectError => '4',
            Self::BinaryEvent => '5',
            Self::BinaryAck => '6',
        }
    }
}

/// Why a Socket.IO packet was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SioError {
    UnknownType,
    BadAttachments,
    BadNamespace,
    BadAckId,
    BadPayload,
}

/// A decoded Socket.IO packet with its JSON data parsed and validated for its type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Packet {
    pub kind: PacketKind,
    pub nsp: String,
    pub attachments: usize,
    pub id: Option<u64>,
    /// `Null` when absent. Event/ack: an array; connect: an object or null.
    pub data: Value,
}

/// Decode and validate one Socket.IO packet (the text after the Engine.IO `4`).
pub(crate) fn decode(text: &str) -> Result<Packet, SioError> {
    let bytes = text.as_bytes();
    let kind = bytes
        .first()
        .copied()
        .and_then(PacketKind::from_char)
        .ok_or(SioError::UnknownType)?;
    let mut i = 1;

    let mut attachments = 0;
    if matches!(kind, PacketKind::BinaryEvent | PacketKind::BinaryAck) {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 4 || bytes.get(i) != Some(&b'-') {
            return Err(SioError::BadAttachments);
        }
        attachments = text[start..i]
            .parse()
            .map_err(|_| SioError::BadAttachments)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(SioError::BadAttachments);
        }
        i += 1;
    }

    let mut nsp = "/";
    if bytes.get(i) == Some(&b'/') {
        let end = text[i..].find(',').map_or(bytes.len(), |p| i + p);
        nsp = &text[i..end];
        i = if end < bytes.len() { end + 1 } else { end };
    }

    let start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let id = if i > start {
        if i - start > MAX_ACK_DIGITS {
            return Err(SioError::BadAckId);
        }
        Some(text[start..i].parse().map_err(|_| SioError::BadAckId)?)
    } else {
        None
    };

    let rest = &text[i..];
    let data = if rest.is_empty() {
        Value::Null
    } else {
        match serde_json::from_str(rest) {
            Ok(data) => data,
            // JavaScript strings may hold lone UTF-16 surrogates (an emoji cut in half);
            // `JSON.stringify` escapes them and Node accepts them. serde_json does not, so
            // retry once with each lone surrogate replaced by U+FFFD (off the hot path).
            Err(_) => {
                let repaired = replace_lone_surrogates(rest).ok_or(SioError::BadPayload)?;
                serde_json::from_str(&repaired).map_err(|_| SioError::BadPayload)?
            }
        }
    };

    let valid = match kind {
        PacketKind::Connect => data.is_null() || data.is_object(),
        PacketKind::Disconnect => data.is_null(),
        PacketKind::Event | PacketKind::BinaryEvent => {
            matches!(&data, Value::Array(a) if matches!(a.first(), Some(Value::String(_))))
        }
        PacketKind::Ack | PacketKind::BinaryAck => id.is_some() && data.is_array(),
        // Clients never send CONNECT_ERROR.
        PacketKind::ConnectError => false,
    };
    if !valid {
        return Err(SioError::BadPayload);
    }
    if nsp.len() > 256 {
        return Err(SioError::BadNamespace);
    }
    Ok(Packet {
        kind,
        nsp: nsp.to_owned(),
        attachments,
        id,
        data,
    })
}

/// The namespace part of a packet: empty for `/`, else `/nsp,`.
pub(crate) fn nsp_prefix(nsp: &str) -> String {
    if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    }
}

/// Encode an Engine.IO message carrying a Socket.IO packet: `4<type>[n-][/nsp,][id]<json>`.
/// `json` is already-serialized data (may be empty).
pub(crate) fn encode(
    kind: PacketKind,
    prefix: &str,
    attachments: usize,
    id: Option<u64>,
    json: &str,
) -> String {
    let mut out = String::with_capacity(json.len() + prefix.len() + 16);
    out.push('4');
    out.push(kind.as_char());
    if matches!(kind, PacketKind::BinaryEvent | PacketKind::BinaryAck) {
        out.push_str(&attachments.to_string());
        out.push('-');
    }
    out.push_str(prefix);
    if let Some(id) = id {
        out.push_str(&id.to_string());
    }
    out.push_str(json);
    out
}

/// Encode an EVENT / BINARY_EVENT carrying `[event, ...args]` in one buffer (one allocation,
/// no intermediate strings). `None` when `args` does not serialize to a JSON array.
pub(crate) fn encode_event<A: serde::Serialize + ?Sized>(
    prefix: &str,
    attachments: usize,
    id: Option<u64>,
    event: &str,
    args: &A,
) -> Option<String> {
    let kind = if attachments > 0 {
        PacketKind::BinaryEvent
    } else {
        PacketKind::Event
    };
    let mut out = encode(kind, prefix, attachments, id, "[").into_bytes();
    out.reserve(event.len() + 32);
    serde_json::to_writer(&mut out, event).ok()?;
    let args_start = out.len();
    serde_json::to_writer(&mut out, args).ok()?;
    if out.get(args_start) != Some(&b'[') {
        return None;
    }
    if out.len() - args_start == 2 {
        // `[]`: no arguments after the name.
        out.truncate(args_start);
        out.push(b']');
    } else {
        // `[a,b]` becomes `,a,b]` after the name.
        out[args_start] = b',';
    }
    String::from_utf8(out).ok()
}

/// Serialize emit arguments; they must form a JSON array.
pub(crate) fn args_json<A: serde::Serialize + ?Sized>(args: &A) -> Option<String> {
    let json = serde_json::to_string(args).ok()?;
    json.starts_with('[').then_some(json)
}

/// `json` with every lone surrogate escape (`\uD800`–`\uDFFF` not part of a high+low pair)
/// replaced by `\uFFFD`; `None` when there is none. Escaped backslashes are skipped, so
/// `\\ud800` (a backslash, then text) is left alone.
fn replace_lone_surrogates(json: &str) -> Option<String> {
    fn unit_at(bytes: &[u8], at: usize) -> Option<u16> {
        if bytes.get(at) != Some(&b'\\') || bytes.get(at + 1) != Some(&b'u') {
            return None;
        }
        let hex = std::str::from_utf8(bytes.get(at + 2..at + 6)?).ok()?;
        u16::from_str_radix(hex, 16).ok()
    }
    const HIGH: std::ops::Range<u16> = 0xD800..0xDC00;
    const LOW: std::ops::Range<u16> = 0xDC00..0xE000;
    let bytes = json.as_bytes();
    let mut repaired: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(unit) = unit_at(bytes, i) else {
            i += 2; // an escape like `\n` or `\\`: skip both characters
            continue;
        };
        let paired =
            HIGH.contains(&unit) && unit_at(bytes, i + 6).is_some_and(|u| LOW.contains(&u));
        if paired {
            i += 12;
        } else if HIGH.contains(&unit) || LOW.contains(&unit) {
            let out = repaired.get_or_insert_with(|| String::with_capacity(json.len()));
            // `\` is ASCII, so `i` is a character boundary.
            out.push_str(&json[copied..i]);
            out.push_str("\\ufffd");
            i += 6;
            copied = i;
        } else {
            i += 6;
        }
    }
    let mut out = repaired?;
    out.push_str(&json[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_connect_with_and_without_namespace_and_auth() {
        let p = decode("0").unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.data),
            (PacketKind::Connect, "/", Value::Null)
        );
        let p = decode("0/custom,{\"token\":\"abc\"}").unwrap();
        assert_eq!(p.nsp, "/custom");
        assert_eq!(p.data, json!({"token":"abc"}));
        assert_eq!(decode("0/custom").unwrap().nsp, "/custom");
        assert_eq!(decode("0[1]"), Err(SioError::BadPayload));
    }

    #[test]
    fn lone_surrogates_become_replacement_characters_and_pairs_stay_intact() {
        // "hello 😀".slice(0, 7) in JavaScript, as JSON.stringify writes it.
        let cut = decode(r#"21["message:send",{"text":"hello \ud83d"}]"#).unwrap();
        assert_eq!(
            cut.data,
            json!(["message:send", {"text": "hello \u{fffd}"}])
        );
        let low = decode(r#"2["m","\udc00x","\ud800"]"#).unwrap();
        assert_eq!(low.data, json!(["m", "\u{fffd}x", "\u{fffd}"]));
        let mixed = decode(r#"2["m","\ud83d\ude00 and \ud83d"]"#).unwrap();
        assert_eq!(mixed.data, json!(["m", "😀 and \u{fffd}"]));
        // An escaped backslash followed by "ud800" is text, not an escape.
        let text = decode(r#"2["m","\\ud800","\ud800"]"#).unwrap();
        assert_eq!(text.data, json!(["m", "\\ud800", "\u{fffd}"]));
        assert_eq!(decode(r#"2["m","\ud800"#), Err(SioError::BadPayload));
    }

    #[test]
    fn decodes_events_acks_and_binary_headers() {
        let p = decode("2456[\"message-with-ack\",1]").unwrap();
        assert_eq!((p.kind, p.id), (PacketKind::Event, Some(456)));
        let p = decode("52-/a,789[\"m\",{\"_placeholder\":true,\"num\":0}]").unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.nsp.as_str(), p.id),
            (PacketKind::BinaryEvent, 2, "/a", Some(789))
        );
        let p = decode("3/a,5[1]").unwrap();
        assert_eq!(
            (p.kind, p.id, p.data),
            (PacketKind::Ack, Some(5), json!([1]))
        );
    }

    #[test]
    fn rejects_malformed_packets() {
        for bad in [
            "",
            "abc",
            "2{}",
            "2abc[\"m\"]",
            "2[]",
            "2[1]",
            "3[1]",
            "5[\"m\"]",
            "1{}",
            "4{}",
            "9",
            "2[\"m\"",
            "59999999-[\"m\"]",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(decode("21234567890123456[\"m\"]"), Err(SioError::BadAckId));
    }

    #[test]
    fn encodes_packets_like_socket_io() {
        assert_eq!(
            encode(PacketKind::Event, "", 0, None, "[\"a\"]"),
            "42[\"a\"]"
        );
        assert_eq!(encode(PacketKind::Ack, "/c,", 0, Some(7), "[]"), "43/c,7[]");
        assert_eq!(
            encode(PacketKind::BinaryAck, "", 2, Some(789), "[]"),
            "462-789[]"
        );
        assert_eq!(
            encode_event("", 0, None, "m", &(1, "2")).unwrap(),
            "42[\"m\",1,\"2\"]"
        );
        assert_eq!(
            encode_event("/c,", 1, Some(3), "m", &[0u8; 0]).unwrap(),
            "451-/c,3[\"m\"]"
        );
        assert_eq!(
            encode_event("", 0, None, "m", &serde_json::json!({"a": 1})),
            None
        );
    }
}
