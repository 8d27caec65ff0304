//! Property tests of the codecs: what is encoded decodes to the same thing, and no input,
//! however malformed, makes a decoder panic.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::eio::{self, Frame, Incoming, PacketType};
use crate::sio::{self, PacketKind};

fn packet_type() -> impl Strategy<Value = (char, PacketType)> {
    prop_oneof![
        Just(('2', PacketType::Ping)),
        Just(('3', PacketType::Pong)),
        Just(('4', PacketType::Message)),
        Just(('6', PacketType::Noop)),
    ]
}

/// A frame as the server queues it, and what decoding it must give back.
fn frame() -> impl Strategy<Value = (Frame, Result<(PacketType, String), Vec<u8>>)> {
    prop_oneof![
        (packet_type(), "[^\u{1e}]{0,40}")
            .prop_map(|((c, t), data)| { (Frame::text(format!("{c}{data}")), Ok((t, data))) }),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| (Frame::Binary(Bytes::from(b.clone())), Err(b))),
    ]
}

fn same(decoded: &[Incoming<'_>], expected: &[Result<(PacketType, String), Vec<u8>>]) -> bool {
    decoded.len() == expected.len()
        && decoded.iter().zip(expected).all(|(d, e)| match (d, e) {
            (Incoming::Text(t, data), Ok((et, edata))) => t == et && data == edata,
            (Incoming::Binary(b), Err(eb)) => b[..] == eb[..],
            _ => false,
        })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn sio_packet() -> impl Strategy<Value = sio::Packet> {
    let nsp = prop_oneof![Just("/".to_owned()), "/[a-z]{1,8}"];
    let args = proptest::collection::vec(json_value(), 0..4);
    (0..6u8, nsp, "\\PC{1,10}", args, 1..5usize, 0..1_000_000u64).prop_map(
        |(kind, nsp, name, args, attachments, id)| {
            let event = {
                let mut all = vec![Value::String(name)];
                all.extend(args.iter().cloned());
                Value::Array(all)
            };
            let (kind, attachments, id, data) = match kind {
                0 => (PacketKind::Connect, 0, None, json!({"token": "t"})),
                1 => (PacketKind::Disconnect, 0, None, Value::Null),
                2 => (PacketKind::Event, 0, None, event),
                3 => (PacketKind::Ack, 0, Some(id), Value::Array(args)),
                4 => (PacketKind::BinaryEvent, attachments, Some(id), event),
                _ => (
                    PacketKind::BinaryAck,
                    attachments,
                    Some(id),
                    Value::Array(args),
                ),
            };
            sio::Packet {
                kind,
                nsp,
                attachments,
                id,
                data,
            }
        },
    )
}

proptest! {
    #[test]
    fn v4_payloads_round_trip(frames in proptest::collection::vec(frame(), 1..8)) {
        let (frames, expected): (Vec<_>, Vec<_>) = frames.into_iter().unzip();
        let body = eio::encode_payload_v4(&frames);
        let decoded = eio::decode_payload_v4(body.as_bytes()).unwrap();
        prop_assert!(same(&decoded, &expected));
    }

    #[test]
    fn v3_text_payloads_round_trip(frames in proptest::collection::vec(frame(), 1..8)) {
        let (frames, expected): (Vec<_>, Vec<_>) = frames.into_iter().unzip();
        let body = eio::encode_payload_v3_text(&frames);
        let decoded = eio::decode_payload_v3_text(body.as_bytes()).unwrap();
        prop_assert!(same(&decoded, &expected));
    }

    #[test]
    fn v3_binary_payloads_round_trip(frames in proptest::collection::vec(frame(), 1..8)) {
        let (frames, expected): (Vec<_>, Vec<_>) = frames.into_iter().unzip();
        let body = eio::encode_payload_v3_binary(&frames);
        let decoded = eio::decode_payload_v3_binary(&body).unwrap();
        prop_assert!(same(&decoded, &expected));
    }

    #[test]
    fn socket_io_packets_round_trip(packet in sio_packet()) {
        let json = if packet.data.is_null() { String::new() } else { packet.data.to_string() };
        let prefix = sio::nsp_prefix(&packet.nsp);
        let encoded = sio::encode(packet.kind, &prefix, packet.attachments, packet.id, &json);
        let decoded = sio::decode(&encoded[1..]).unwrap();
        prop_assert_eq!(decoded, packet);
    }

    #[test]
    fn events_encoded_in_one_pass_decode_back(
        name in "\\PC{1,10}",
        args in proptest::collection::vec(json_value(), 0..4),
    ) {
        let text = sio::encode_event("/n,", 0, Some(7), &name, &args).unwrap();
        let packet = sio::decode(&text[1..]).unwrap();
        let mut expected = vec![Value::String(name)];
        expected.extend(args);
        prop_assert_eq!((packet.nsp.as_str(), packet.id), ("/n", Some(7)));
        prop_assert_eq!(packet.data, Value::Array(expected));
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        crate::fuzz_decoders(&data);
    }

    #[test]
    fn arbitrary_text_never_panics_a_decoder(text in "\\PC{0,64}") {
        crate::fuzz_decoders(text.as_bytes());
        let _ = sio::decode(&text);
        let _ = eio::decode_text(&text);
    }
}
