//! Engine.IO packet and payload codecs (pure functions, no I/O).
//!
//! A packet is one character of type (`0` open … `6` noop) followed by its data. WebSocket
//! carries one packet per frame (binary frames are message packets: raw in v4, prefixed with
//! the byte 4 in v3). Long-polling bodies carry several packets:
//! - v4: text packets separated by the record separator `\x1e`, binary ones as `b<base64>`;
//! - v3: `<len>:<packet>` where `len` counts UTF-16 code units, binary as `b4<base64>`, or the
//!   v3 binary payload `<0|1><len digits as bytes 0-9>0xFF<data>` for clients that support it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

/// The v4 polling payload separator.
pub(crate) const RECORD_SEPARATOR: char = '\x1e';

/// Engine.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketType {
    Open,
    Close,
    Ping,
    Pong,
    Message,
    Upgrade,
    Noop,
}

impl PacketType {
    pub(crate) fn from_char(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return None,
        })
    }
}

/// Why a packet or payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Empty packet, unknown packet type or malformed framing.
    InvalidPacket,
    /// Bad base64 in a binary packet.
    InvalidBase64,
    /// A v3 length prefix that does not match the data.
    InvalidLength,
    /// The body is not UTF-8 where text is required.
    InvalidUtf8,
}

/// One packet received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// A text packet: type and the data after the type character.
    Text(PacketType, &'a str),
    /// A binary message packet.
    Binary(Bytes),
}

/// Decode one text packet (`<type><data>`).
pub(crate) fn decode_text(packet: &str) -> Result<Incoming<'_>, DecodeError> {
    let first = *packet
        .as_bytes()
        .first()
        .ok_or(DecodeError::InvalidPacket)?;
    let kind = PacketType::from_char(first).ok_or(DecodeError::InvalidPacket)?;
    Ok(Incoming::Text(kind, &packet[1..]))
}

/// Decode a v4 polling body: packets separated by `\x1e`, `b<base64>` for binary.
pub(crate) fn decode_payload_v4(body: &[u8]) -> Result<Vec<Incoming<'_>>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    text.split(RECORD_SEPARATOR)
        .map(|packet| match packet.strip_prefix('b') {
            Some(encoded) => decode_base64(encoded).map(Incoming::Binary),
            None => decode_text(packet),
        })
        .collect()
}

fn decode_base64(encoded: &str) -> Result<Bytes, DecodeError> {
    BASE64
        .decode(encoded)
        .map(Bytes::from)
        .map_err(|_| DecodeError::InvalidBase64)
}

/// One queued outbound frame: text (an encoded Engine.IO packet) or a binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    Binary(Bytes),
}

impl Frame {
    pub(crate) fn text(s: impl Into<String>) -> Self {
        Frame::Text(s.into().into())
    }
    pub(crate) fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }
}

/// Encode frames as a v4 polling body.
pub(crate) fn encode_payload_v4(frames: &[Frame]) -> String {
    let mut out = String::with_capacity(frames.iter().map(|f| f.len() + 1).sum());
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(RECORD_SEPARATOR);
        }
        match frame {
            Frame::Text(t) => out.push_str(t.as_str()),
            Frame::Binary(b) => {
                out.push('b');
                BASE64.encode_string(b, &mut out);
            }
        }
    }
    out
}

/// Number of UTF-16 code units of `s` (what v3 length prefixes count).
fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Decode a v3 text polling body: `<len>:<packet>` repeated; `b4<base64>` is binary.
pub(crate) fn decode_payload_v3_text(body: &[u8]) -> Result<Vec<Incoming<'_>>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    let mut packets = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let colon = rest.find(':').ok_or(DecodeError::InvalidLength)?;
        let digits = &rest[..colon];
        if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::InvalidLength);
        }
        let units: usize = digits.parse().map_err(|_| DecodeError::InvalidLength)?;
        let after = &rest[colon + 1..];
        // Walk `units` UTF-16 code units forward, never past the end.
        let mut counted = 0;
        let mut end = 0;
        for (index, c) in after.char_indices() {
            if counted >= units {
                end = index;
                break;
            }
            counted += c.len_utf16();
            end = index + c.len_utf8();
        }
        if counted != units || units == 0 {
            return Err(DecodeError::InvalidLength);
        }
        let packet = &after[..end];
        packets.push(match packet.strip_prefix("b4") {
            Some(encoded) => Incoming::Binary(decode_base64(encoded)?),
            None => decode_text(packet)?,
        });
        rest = &after[end..];
    }
    Ok(packets)
}

/// Decode a v3 binary polling body: `<0|1><len digits 0-9 as bytes>0xFF<data>` repeated.
/// Type 0 is a text packet (UTF-8, length in bytes), type 1 a binary one whose first byte is
/// the packet type (4).
pub(crate) fn decode_payload_v3_binary(body: &[u8]) -> Result<Vec<Incoming<'_>>, DecodeError> {
    let mut packets = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let is_binary = match rest[0] {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::InvalidPacket),
        };
        let mut len: usize = 0;
        let mut i = 1;
        loop {
            let digit = *rest.get(i).ok_or(DecodeError::InvalidLength)?;
            if digit == 0xFF {
                break;
            }
            if digit > 9 || i > 10 {
                return Err(DecodeError::InvalidLength);
            }
            len = len * 10 + digit as usize;
            i += 1;
        }
        if i == 1 {
            return Err(DecodeError::InvalidLength);
        }
        let data = rest
            .get(i + 1..i + 1 + len)
            .ok_or(DecodeError::InvalidLength)?;
        if is_binary {
            // The first byte is the packet type; only message packets carry binary.
            match data.split_first() {
                Some((4, bin)) => packets.push(Incoming::Binary(Bytes::copy_from_slice(bin))),
                _ => return Err(DecodeError::InvalidPacket),
            }
        } else {
            let text = std::str::from_utf8(data).map_err(|_| DecodeError::InvalidUtf8)?;
            packets.push(decode_text(text)?);
        }
        rest = &rest[i + 1 + len..];
    }
    Ok(packets)
}

/// Encode frames as a v3 text polling body (binary as `b4<base64>`).
pub(crate) fn encode_payload_v3_text(frames: &[Frame]) -> String {
    let mut out = String::new();
    for frame in frames {
        match frame {
            Frame::Text(t) => {
                out.push_str(&utf16_len(t.as_str()).to_string());
                out.push(':');
                out.push_str(t.as_str());
            }
            Frame::Binary(b) => {
                let encoded = BASE64.encode(b);
                out.push_str(&(encoded.len() + 2).to_string());
                out.push_str(":b4");
                out.push_str(&encoded);
            }
        }
    }
    out
}

/// Encode frames as a v3 binary polling body.
pub(crate) fn encode_payload_v3_binary(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.iter().map(|f| f.len() + 12).sum());
    let push_len = |out: &mut Vec<u8>, len: usize| {
        out.extend(len.to_string().bytes().map(|d| d - b'0'));
        out.push(0xFF);
    };
    for frame in frames {
        match frame {
            Frame::Text(t) => {
                out.push(0);
                // socket.io-client 2.x counts characters here (it decodes the string part
                // with a per-byte view only for ASCII); send the UTF-8 byte length, which is
                // what engine.io-parser 2.x's Node encoder does for Buffers.
                push_len(&mut out, t.len());
                out.extend_from_slice(t.as_bytes());
            }
            Frame::Binary(b) => {
                out.push(1);
                push_len(&mut out, b.len() + 1);
                out.push(4);
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// Largest query string we parse (the request line is already bounded by hyper).
const MAX_QUERY_PAIRS: usize = 64;

/// Split and percent-decode a query string (bounded number of pairs).
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .take(MAX_QUERY_PAIRS)
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_packets_decode_type_and_data() {
        assert_eq!(
            decode_text("4hello"),
            Ok(Incoming::Text(PacketType::Message, "hello"))
        );
        assert_eq!(
            decode_text("2probe"),
            Ok(Incoming::Text(PacketType::Ping, "probe"))
        );
        assert_eq!(decode_text(""), Err(DecodeError::InvalidPacket));
        assert_eq!(decode_text("abc"), Err(DecodeError::InvalidPacket));
    }

    #[test]
    fn v4_payload_splits_on_record_separator_and_decodes_base64() {
        let packets = decode_payload_v4(b"4hello\x1ebAQIDBA==").unwrap();
        assert_eq!(
            packets,
            vec![
                Incoming::Text(PacketType::Message, "hello"),
                Incoming::Binary(Bytes::from_static(&[1, 2, 3, 4]))
            ]
        );
        assert!(decode_payload_v4(b"4a\x1eb!!").is_err());
        assert!(decode_payload_v4(b"\xff").is_err());
    }

    #[test]
    fn v4_payload_round_trips() {
        let frames = vec![
            Frame::text("4test1"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        ];
        assert_eq!(encode_payload_v4(&frames), "4test1\x1ebAQIDBA==");
    }

    #[test]
    fn v3_text_payload_counts_utf16_units() {
        let frames = vec![Frame::text("4€😀"), Frame::text("2")];
        let body = encode_payload_v3_text(&frames);
        assert_eq!(body, "4:4€😀1:2");
        let packets = decode_payload_v3_text(body.as_bytes()).unwrap();
        assert_eq!(
            packets,
            vec![
                Incoming::Text(PacketType::Message, "€😀"),
                Incoming::Text(PacketType::Ping, "")
            ]
        );
        assert!(decode_payload_v3_text(b"5:4ab").is_err());
        assert!(decode_payload_v3_text(b"x:4").is_err());
        assert!(decode_payload_v3_text(b"0:").is_err());
    }

    #[test]
    fn v3_text_payload_carries_base64_binary() {
        let frames = vec![Frame::Binary(Bytes::from_static(&[1, 2, 3]))];
        let body = encode_payload_v3_text(&frames);
        assert_eq!(body, "6:b4AQID");
        assert_eq!(
            decode_payload_v3_text(body.as_bytes()).unwrap(),
            vec![Incoming::Binary(Bytes::from_static(&[1, 2, 3]))]
        );
    }

    #[test]
    fn v3_binary_payload_round_trips() {
        let frames = vec![
            Frame::text("42[\"a\"]"),
            Frame::Binary(Bytes::from_static(&[9, 8])),
        ];
        let body = encode_payload_v3_binary(&frames);
        assert_eq!(&body[..3], &[0, 7, 0xFF]);
        let packets = decode_payload_v3_binary(&body).unwrap();
        assert_eq!(
            packets,
            vec![
                Incoming::Text(PacketType::Message, "2[\"a\"]"),
                Incoming::Binary(Bytes::from_static(&[9, 8]))
            ]
        );
        assert!(decode_payload_v3_binary(&[0, 9, 9, 0xFF, b'4']).is_err());
        assert!(decode_payload_v3_binary(&[2]).is_err());
        assert!(decode_payload_v3_binary(&[0, 1]).is_err());
    }
}
