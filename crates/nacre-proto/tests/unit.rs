//! Unit tests: framing errors, unknown tags, limits, error codes and the
//! request helpers (`to_batch`, `is_write`, `consistency`).

use nacre_proto::{
    decode_request, decode_response, encode_request, encode_response, split_frame, Batch, Bytes,
    BytesMut, ClientHello, Command, Consistency, DecodeError, ErrorCode, Guard, KeyEntry, Limits,
    Op, Page, RangeQuery, Request, Response, Revision, ServerHello, FRAME_HEADER_BYTES, MAGIC,
    PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn frame(req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(42, req, &mut out);
    out
}

// ---- framing -------------------------------------------------------------

#[test]
fn frame_layout_is_length_then_id_then_body() {
    let out = frame(&Request::Ping);
    assert_eq!(out, [9, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(FRAME_HEADER_BYTES, 12);
    let out = frame(&Request::Get {
        consistency: Consistency::AtLeast(5),
        key: b("ab"),
    });
    let mut want = vec![];
    want.extend_from_slice(&(8u32 + 1 + 9 + 4 + 2).to_le_bytes());
    want.extend_from_slice(&42u64.to_le_bytes());
    want.extend_from_slice(&[10, 2, 5, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'a', b'b']);
    assert_eq!(out, want);
}

#[test]
fn oversized_frame_is_rejected_from_the_header_alone() {
    // Only the 4-byte length has arrived.
    let mut buf = BytesMut::from(&1001u32.to_le_bytes()[..]);
    assert_eq!(
        split_frame(&mut buf, 1000),
        Err(DecodeError::FrameTooLarge {
            size: 1001,
            max: 1000
        })
    );
    // Exactly at the limit is fine: it waits for the rest.
    let mut buf = BytesMut::from(&1000u32.to_le_bytes()[..]);
    assert_eq!(split_frame(&mut buf, 1000), Ok(None));
    // The default limit.
    let max = Limits::default().frame_size_max_bytes;
    let mut buf = BytesMut::from(&((max + 1) as u32).to_le_bytes()[..]);
    assert!(matches!(
        split_frame(&mut buf, max),
        Err(DecodeError::FrameTooLarge { .. })
    ));
}

#[test]
fn frame_shorter_than_its_request_id_is_rejected() {
    let mut buf = BytesMut::from(&7u32.to_le_bytes()[..]);
    assert_eq!(
        split_frame(&mut buf, 1000),
        Err(DecodeError::Truncated {
            what: "frame header"
        })
    );
}

#[test]
fn split_frame_waits_for_the_whole_frame() {
    let out = frame(&Request::Delete { key: b("key") });
    for cut in 0..out.len() {
        let mut buf = BytesMut::from(&out[..cut]);
        assert_eq!(split_frame(&mut buf, 1000), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed");
    }
    let mut buf = BytesMut::from(&out[..]);
    buf.extend_from_slice(&[1, 2, 3]);
    let (id, body) = split_frame(&mut buf, 1000).unwrap().unwrap();
    assert_eq!(id, 42);
    assert_eq!(
        decode_request(body).unwrap(),
        Request::Delete { key: b("key") }
    );
    assert_eq!(&buf[..], &[1, 2, 3], "next frame's bytes left in place");
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut out = Vec::new();
    encode_request(1, &Request::Ping, &mut out);
    // Grow the body by one byte and fix the length.
    out.push(0);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    let (_, body) = split_frame(&mut BytesMut::from(&out[..]), 1000)
        .unwrap()
        .unwrap();
    assert_eq!(
        decode_request(body),
        Err(DecodeError::TrailingBytes {
            what: "request",
            count: 1
        })
    );

    let mut out = Vec::new();
    encode_response(1, &Response::U64(3), &mut out);
    out.extend_from_slice(&[9, 9]);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    let (_, body) = split_frame(&mut BytesMut::from(&out[..]), 1000)
        .unwrap()
        .unwrap();
    assert_eq!(
        decode_response(body),
        Err(DecodeError::TrailingBytes {
            what: "response",
            count: 2
        })
    );

    let mut cmd = Command {
        session: None,
        batch: Batch::default(),
    }
    .encode();
    cmd.push(0);
    assert_eq!(
        Command::decode(Bytes::from(cmd)),
        Err(DecodeError::TrailingBytes {
            what: "command",
            count: 1
        })
    );
}

#[test]
fn truncated_bodies_are_rejected() {
    let mut w = nacre_proto::wire::Writer::new();
    Request::Set {
        key: b("k"),
        value: b("value"),
    }
    .encode(&mut w);
    let full = w.into_inner();
    for cut in 0..full.len() {
        assert!(
            matches!(
                decode_request(Bytes::copy_from_slice(&full[..cut])),
                Err(DecodeError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
}

// ---- unknown tags --------------------------------------------------------

fn bad_tag(r: Result<impl std::fmt::Debug, DecodeError>, what: &str, tag: u32) {
    match r {
        Err(DecodeError::BadTag { what: w, tag: t }) => {
            assert_eq!((w, t), (what, tag));
        }
        other => panic!("expected BadTag {what} {tag}, got {other:?}"),
    }
}

#[test]
fn unknown_request_opcodes_are_rejected() {
    let known: Vec<u8> = vec![
        1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16, 17, 18, 30, 31, 32, 33, 34, 35, 36, 37, 38, 40,
        41, 42, 43, 44, 45, 50, 51, 52, 53, 54, 55, 56, 60, 61, 62, 63, 64, 65, 66,
    ];
    for op in 0..=255u8 {
        if !known.contains(&op) {
            bad_tag(decode_request(Bytes::from(vec![op])), "opcode", op as u32);
        }
    }
}

#[test]
fn unknown_response_tags_are_rejected() {
    for tag in 23..=254u8 {
        bad_tag(
            decode_response(Bytes::from(vec![tag])),
            "response",
            tag as u32,
        );
    }
}

#[test]
fn unknown_inner_tags_are_rejected() {
    // Consistency 3 in a Get.
    bad_tag(decode_request(Bytes::from(vec![10, 3])), "consistency", 3);
    // A bool that is neither 0 nor 1.
    bad_tag(decode_response(Bytes::from(vec![1, 2])), "bool", 2);
    // An option flag of 7 in a Value reply.
    bad_tag(decode_response(Bytes::from(vec![3, 7])), "value", 7);
    // Guard tag 0 and 7, op tag 0 and 15, inside a Batch request.
    let batch = |guards: &[u8], ops: &[u8]| {
        let mut v = vec![36];
        v.extend_from_slice(&(!guards.is_empty() as u32).to_le_bytes());
        v.extend_from_slice(guards);
        v.extend_from_slice(&(!ops.is_empty() as u32).to_le_bytes());
        v.extend_from_slice(ops);
        v.extend_from_slice(&[0; 8]);
        Bytes::from(v)
    };
    bad_tag(decode_request(batch(&[0], &[])), "guard", 0);
    bad_tag(decode_request(batch(&[7], &[])), "guard", 7);
    bad_tag(decode_request(batch(&[], &[0])), "op", 0);
    bad_tag(decode_request(batch(&[], &[15])), "op", 15);
    // Key span 3 in a Watch, event kind 2 and sub-tag 4 in a reply.
    bad_tag(decode_request(Bytes::from(vec![60, 3])), "key span", 3);
    bad_tag(
        decode_response(Bytes::from(vec![21, 4])),
        "coordination reply",
        4,
    );
    // Backup frame 2.
    bad_tag(decode_response(Bytes::from(vec![22, 2])), "backup frame", 2);
    let mut watched = vec![21, 0, 1, 0, 0, 0, 2];
    watched.extend_from_slice(&[0; 64]);
    bad_tag(decode_response(Bytes::from(watched)), "event kind", 2);
    bad_tag(decode_request(batch(&[], &[4, 9])), "guard", 9);
    // Command format 5.
    bad_tag(
        Command::decode(Bytes::from(vec![5, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
        "command format",
        5,
    );
    // Session flag 2.
    bad_tag(
        Command::decode(Bytes::from(vec![1, 2, 0, 0, 0, 0, 0, 0, 0, 0])),
        "session",
        2,
    );
}

/// A command is written in the oldest format that carries its ops, so a
/// batch of the ops format 1 always had is the same bytes as before format
/// 2 existed; a format-1 command holding a format-2 op, or a format-2
/// command holding none, was not written by this code and is refused.
#[test]
fn commands_use_the_oldest_format_that_carries_their_ops() {
    let old = Command {
        session: None,
        batch: Batch {
            guards: vec![Guard::Absent(b("g"))],
            ops: vec![Op::Set(b("k"), b("v")), Op::Check(Guard::Present(b("k")))],
        },
    };
    let mut bytes = old.encode();
    assert_eq!(bytes[0], Command::FORMAT_V1);
    assert_eq!(Command::decode(Bytes::from(bytes.clone())).unwrap(), old);
    // The same ops under a newer format byte have another encoding of the
    // same command: refused, so that every command has one (the fuzzer's
    // round trip found this).
    bytes[0] = Command::FORMAT_V2;
    bad_tag(
        Command::decode(Bytes::from(bytes)),
        "command format (newer than its ops need)",
        2,
    );

    let tas = Op::TestAndSet {
        key: b("k"),
        expected: None,
        wanted: Some(b("v")),
    };
    let new = Command {
        session: None,
        batch: Batch {
            guards: vec![],
            ops: vec![Op::Set(b("a"), b("1")), tas.clone()],
        },
    };
    let mut bytes = new.encode();
    assert_eq!(bytes[0], Command::FORMAT_V2);
    assert_eq!(Command::decode(Bytes::from(bytes.clone())).unwrap(), new);
    bytes[0] = Command::FORMAT_V1;
    bad_tag(
        Command::decode(Bytes::from(bytes)),
        "op newer than its command's format",
        10,
    );
}

#[test]
fn test_and_set_steps_are_checked_against_the_limits() {
    let limits = Limits {
        key_size_max_bytes: 4,
        value_size_max_bytes: 4,
        ..Limits::default()
    };
    let step = |key: &str, expected: Option<&str>, wanted: Option<&str>| {
        Request::Batch(Batch {
            guards: vec![],
            ops: vec![Op::TestAndSet {
                key: b(key),
                expected: expected.map(b),
                wanted: wanted.map(b),
            }],
        })
    };
    assert!(limits.check_request(&step("k", Some("v"), None)).is_ok());
    for req in [
        step("kkkkk", None, None),
        step("k", Some("vvvvv"), None),
        step("k", None, Some("vvvvv")),
    ] {
        assert_eq!(
            limits.check_request(&req).unwrap_err().code,
            ErrorCode::TooLarge,
            "{req:?}"
        );
    }
}

#[test]
fn bad_utf8_is_rejected() {
    let mut v = vec![9u8];
    v.extend_from_slice(&2u32.to_le_bytes());
    v.extend_from_slice(&[0xff, 0xfe]);
    assert_eq!(
        decode_response(Bytes::from(v)),
        Err(DecodeError::BadUtf8 { what: "text" })
    );
}

// ---- handshake -----------------------------------------------------------

#[test]
fn hello_layouts() {
    let mut out = Vec::new();
    ClientHello {
        version: PROTOCOL_VERSION,
        cluster_id: "c1".into(),
    }
    .encode(&mut out);
    assert_eq!(out, [b'N', b'A', b'C', b'R', 2, 0, 2, 0, b'c', b'1']);
    assert_eq!(&out[..4], &MAGIC);

    let mut out = Vec::new();
    ServerHello::refuse(ErrorCode::WrongCluster, "c1", "n", "no").encode(&mut out);
    assert_eq!(
        out,
        [b'N', b'A', b'C', b'R', 2, 0, 10, 0, 2, 0, b'c', b'1', 1, 0, b'n', 2, 0, b'n', b'o']
    );
    let ok = ServerHello::ok("c1", "n");
    assert_eq!(
        (ok.status, ok.version, ok.message.as_str()),
        (0, PROTOCOL_VERSION, "")
    );
}

#[test]
fn hello_rejects_bad_magic_and_long_names() {
    assert_eq!(ClientHello::decode(b"NAX"), Err(DecodeError::BadMagic));
    assert_eq!(ServerHello::decode(b"HTTP/1.1"), Err(DecodeError::BadMagic));
    assert_eq!(ClientHello::decode(b"NA"), Ok(None));
    let mut v = b"NACR\x01\x00".to_vec();
    v.extend_from_slice(&256u16.to_le_bytes());
    assert_eq!(
        ClientHello::decode(&v),
        Err(DecodeError::FrameTooLarge {
            size: 256,
            max: 255
        })
    );
}

// ---- pages (protocol 2) --------------------------------------------------

fn entry(k: &str, v: &str) -> KeyEntry {
    KeyEntry {
        key: b(k),
        value: b(v),
        rev: Revision {
            create_rev: 3,
            mod_rev: 4,
            version: 2,
        },
    }
}

#[test]
fn page_layouts() {
    // KeyPage: tag 19, the keys as vec<bytes>, then the more flag.
    let page = Response::KeyPage(Page {
        items: vec![b("a"), b("bc")],
        more: true,
    });
    let mut out = Vec::new();
    encode_response(7, &page, &mut out);
    let mut want = vec![];
    want.extend_from_slice(&(8u32 + 1 + 4 + 5 + 6 + 1).to_le_bytes());
    want.extend_from_slice(&7u64.to_le_bytes());
    want.extend_from_slice(&[19, 2, 0, 0, 0, 1, 0, 0, 0, b'a', 2, 0, 0, 0, b'b', b'c', 1]);
    assert_eq!(out, want);
    assert_eq!(page.frame_length(), out.len() - 4);
    assert_eq!(Page::<Bytes>::frame_length(5 + 6), out.len() - 4);

    // EntryPage: tag 20, the entries as vec<KeyEntry>, then the more flag.
    let page = Response::EntryPage(Page {
        items: vec![entry("k", "v")],
        more: false,
    });
    let mut out = Vec::new();
    encode_response(7, &page, &mut out);
    let mut body = vec![20, 1, 0, 0, 0, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v'];
    for rev in [3u64, 4, 2] {
        body.extend_from_slice(&rev.to_le_bytes());
    }
    body.push(0);
    assert_eq!(&out[12..], &body[..]);
    assert_eq!(page.frame_length(), out.len() - 4);
    assert_eq!(
        Page::<KeyEntry>::frame_length(entry("k", "v").encoded_len()),
        out.len() - 4
    );

    // The more flag is a bool like any other: 2 is refused.
    bad_tag(
        decode_response(Bytes::from(vec![19, 0, 0, 0, 0, 2])),
        "more",
        2,
    );
    // A page without its flag is truncated.
    assert_eq!(
        decode_response(Bytes::from(vec![20, 0, 0, 0, 0])),
        Err(DecodeError::Truncated { what: "more" })
    );
}

#[test]
fn a_page_continues_after_its_last_key_only_when_more_follows() {
    let page = |more| Page {
        items: vec![entry("a", "1"), entry("b", "2")],
        more,
    };
    assert_eq!(page(true).next_after(), Some(&b("b")));
    assert_eq!(page(false).next_after(), None);
    let empty: Page<Bytes> = Page {
        items: vec![],
        more: true,
    };
    assert_eq!(empty.next_after(), None);
}

#[test]
fn the_next_page_asks_for_the_rest_after_the_last_key() {
    let q = RangeQuery {
        first: Some(b("a")),
        first_inclusive: true,
        last: Some(b("m")),
        last_inclusive: true,
        max: 7,
        reverse: false,
    };
    let next = q.after(b("c"));
    assert_eq!((next.first, next.first_inclusive), (Some(b("c")), false));
    assert_eq!(
        (next.last, next.last_inclusive, next.max),
        (Some(b("m")), true, 7)
    );
    // Descending: the high end moves down.
    let rev = RangeQuery {
        reverse: true,
        ..q.clone()
    };
    let next = rev.after(b("k"));
    assert_eq!((next.last, next.last_inclusive), (Some(b("k")), false));
    assert_eq!((next.first, next.first_inclusive), (Some(b("a")), true));
}

#[test]
fn a_prefix_is_the_range_up_to_the_first_key_past_it() {
    let range = |p: &[u8]| {
        let q = RangeQuery::prefix(Bytes::copy_from_slice(p), 5);
        assert_eq!(
            (q.first_inclusive, q.last_inclusive, q.max),
            (true, false, 5)
        );
        assert_eq!(q.first.as_deref(), Some(p));
        q.last
    };
    assert_eq!(range(b"ab"), Some(b("ac")));
    assert_eq!(range(&[b'a', 0xff, 0xff]), Some(b("b")));
    assert_eq!(range(&[0xff, 0xff]), None);
    assert_eq!(range(b""), None);
}

#[test]
fn a_version_1_peer_gets_the_plain_lists_it_knows() {
    assert_eq!((PROTOCOL_VERSION_MIN, PROTOCOL_VERSION), (1, 2));
    let keys = Response::KeyPage(Page {
        items: vec![b("a")],
        more: true,
    });
    assert_eq!(keys.clone().for_version(1), Response::Keys(vec![b("a")]));
    assert_eq!(keys.clone().for_version(2), keys);
    let entries = Response::EntryPage(Page {
        items: vec![entry("a", "1")],
        more: false,
    });
    assert_eq!(
        entries.clone().for_version(1),
        Response::Entries(vec![entry("a", "1")])
    );
    assert_eq!(entries.clone().for_version(2), entries);
    assert_eq!(Response::U64(1).for_version(1), Response::U64(1));
}

// ---- limits --------------------------------------------------------------

fn small() -> Limits {
    Limits {
        frame_size_max_bytes: 1000,
        key_size_max_bytes: 4,
        value_size_max_bytes: 8,
        batch_ops_max: 3,
        batch_size_max_bytes: 20,
        multi_get_keys_max: 2,
        range_results_max: 10,
    }
}

fn too_large(r: Result<(), nacre_proto::ErrorReply>, mentions: &str) {
    let e = r.expect_err("over a limit");
    assert_eq!(e.code, ErrorCode::TooLarge);
    assert!(
        e.message.contains(mentions),
        "{:?} should mention {mentions}",
        e.message
    );
}

#[test]
fn default_limits() {
    let l = Limits::default();
    assert_eq!(l.frame_size_max_bytes, 24 << 20);
    assert_eq!(l.key_size_max_bytes, 4096);
    assert_eq!(l.value_size_max_bytes, 16 << 20);
    assert_eq!(l.batch_ops_max, 10_000);
    assert_eq!(l.batch_size_max_bytes, 20 << 20);
    assert_eq!(l.multi_get_keys_max, 10_000);
    assert_eq!(l.range_results_max, 10_000);
    // A maximal key and value fit in one frame.
    assert!(l.key_size_max_bytes + l.value_size_max_bytes + 64 < l.frame_size_max_bytes);
}

#[test]
fn key_limit() {
    let l = small();
    let c = Consistency::Consistent;
    assert!(l
        .check_request(&Request::Get {
            consistency: c,
            key: b("abcd")
        })
        .is_ok());
    for req in [
        Request::Get {
            consistency: c,
            key: b("abcde"),
        },
        Request::GetEntry {
            consistency: c,
            key: b("abcde"),
        },
        Request::Exists {
            consistency: c,
            key: b("abcde"),
        },
        Request::MultiGet {
            consistency: c,
            keys: vec![b("a"), b("abcde")],
        },
        Request::PrefixKeys {
            consistency: c,
            prefix: b("abcde"),
            max: 1,
        },
        Request::Set {
            key: b("abcde"),
            value: b(""),
        },
        Request::Delete { key: b("abcde") },
        Request::Confirm {
            key: b("abcde"),
            value: b(""),
        },
        Request::TestAndSet {
            key: b("abcde"),
            expected: None,
            wanted: None,
        },
        Request::Replace {
            key: b("abcde"),
            wanted: None,
        },
        Request::DeletePrefix { prefix: b("abcde") },
        Request::Range {
            consistency: c,
            query: RangeQuery {
                first: None,
                first_inclusive: true,
                last: Some(b("abcde")),
                last_inclusive: true,
                max: 1_000_000,
                reverse: false,
            },
        },
        Request::Batch(Batch {
            guards: vec![Guard::Present(b("abcde"))],
            ops: vec![],
        }),
        Request::Batch(Batch {
            guards: vec![Guard::PrefixKeysEqual {
                prefix: b("a"),
                keys: vec![b("abcde")],
            }],
            ops: vec![],
        }),
        Request::Batch(Batch {
            guards: vec![],
            ops: vec![Op::Remove(b("abcde"))],
        }),
    ] {
        too_large(l.check_request(&req), "key_size_max_bytes");
    }
}

#[test]
fn value_limit() {
    let l = small();
    assert!(l
        .check_request(&Request::Set {
            key: b("k"),
            value: b("12345678")
        })
        .is_ok());
    for req in [
        Request::Set {
            key: b("k"),
            value: b("123456789"),
        },
        Request::Confirm {
            key: b("k"),
            value: b("123456789"),
        },
        Request::TestAndSet {
            key: b("k"),
            expected: Some(b("123456789")),
            wanted: None,
        },
        Request::TestAndSet {
            key: b("k"),
            expected: None,
            wanted: Some(b("123456789")),
        },
        Request::Replace {
            key: b("k"),
            wanted: Some(b("123456789")),
        },
        Request::Batch(Batch {
            guards: vec![],
            ops: vec![Op::Set(b("k"), b("123456789"))],
        }),
        Request::Batch(Batch {
            guards: vec![],
            ops: vec![Op::Check(Guard::ValueEquals(b("k"), b("123456789")))],
        }),
    ] {
        too_large(l.check_request(&req), "value_size_max_bytes");
    }
}

#[test]
fn batch_ops_limit() {
    let l = small();
    let ok = Batch {
        guards: vec![Guard::Absent(b("a"))],
        ops: vec![Op::Delete(b("a")), Op::Delete(b("b"))],
    };
    assert!(l.check_batch(&ok).is_ok());
    let over = Batch {
        guards: vec![Guard::Absent(b("a")), Guard::Absent(b("b"))],
        ops: vec![Op::Delete(b("a")), Op::Delete(b("b"))],
    };
    too_large(l.check_batch(&over), "batch_ops_max");
    too_large(l.check_request(&Request::Batch(over)), "batch_ops_max");
}

#[test]
fn batch_bytes_limit() {
    let l = small();
    // 3 ops of 4 + 8 bytes = 36 > 20, each within its own limits.
    let over = Batch {
        guards: vec![],
        ops: vec![
            Op::Set(b("k1"), b("12345678")),
            Op::Set(b("k2"), b("12345678")),
            Op::Set(b("k3"), b("12345678")),
        ],
    };
    assert_eq!(over.payload_bytes(), 30);
    too_large(l.check_batch(&over), "batch_size_max_bytes");
    let ok = Batch {
        guards: vec![],
        ops: vec![
            Op::Set(b("k1"), b("12345678")),
            Op::Set(b("k2"), b("12345678")),
        ],
    };
    assert!(l.check_batch(&ok).is_ok());
}

#[test]
fn multi_get_keys_limit() {
    let l = small();
    let c = Consistency::Any;
    assert!(l
        .check_request(&Request::MultiGet {
            consistency: c,
            keys: vec![b("a"), b("b")]
        })
        .is_ok());
    let keys = vec![b("a"), b("b"), b("c")];
    too_large(
        l.check_request(&Request::MultiGet {
            consistency: c,
            keys: keys.clone(),
        }),
        "multi_get_keys_max",
    );
    too_large(
        l.check_request(&Request::MultiGetOption {
            consistency: c,
            keys,
        }),
        "multi_get_keys_max",
    );
}

#[test]
fn range_max_is_not_an_error() {
    // It is clamped by the server, not refused.
    let req = Request::RangeEntries {
        consistency: Consistency::Consistent,
        query: RangeQuery {
            first: Some(b("a")),
            first_inclusive: true,
            last: None,
            last_inclusive: false,
            max: u32::MAX,
            reverse: true,
        },
    };
    assert!(small().check_request(&req).is_ok());
}

// ---- error codes ---------------------------------------------------------

#[test]
fn error_codes_round_trip() {
    let known = [
        (ErrorCode::NotFound, 1, "not_found"),
        (ErrorCode::AssertionFailed, 2, "assertion_failed"),
        (ErrorCode::NotMaster, 3, "not_master"),
        (ErrorCode::InconsistentRead, 4, "inconsistent_read"),
        (ErrorCode::BadInput, 5, "bad_input"),
        (ErrorCode::TooLarge, 6, "too_large"),
        (ErrorCode::GoingDown, 7, "going_down"),
        (ErrorCode::Unavailable, 8, "unavailable"),
        (ErrorCode::Busy, 9, "busy"),
        (ErrorCode::WrongCluster, 10, "wrong_cluster"),
        (ErrorCode::UnsupportedVersion, 11, "unsupported_version"),
        (ErrorCode::Timeout, 12, "timeout"),
        (ErrorCode::Corruption, 13, "corruption"),
        (ErrorCode::Internal, 14, "internal"),
        (ErrorCode::Conflict, 15, "conflict"),
        (ErrorCode::ScriptError, 16, "script_error"),
        (ErrorCode::BudgetExceeded, 17, "budget_exceeded"),
        (ErrorCode::LearnerBehind, 18, "learner_behind"),
        (ErrorCode::LeaseNotFound, 19, "lease_not_found"),
        (ErrorCode::Compacted, 20, "compacted"),
        (ErrorCode::SlowConsumer, 21, "slow_consumer"),
        (ErrorCode::Cancelled, 22, "cancelled"),
        (ErrorCode::Fenced, 23, "fenced"),
    ];
    for (code, n, name) in known {
        assert_eq!(code.to_u16(), n);
        assert_eq!(ErrorCode::from_u16(n), code);
        assert_eq!(code.name(), name);
        assert_eq!(code.to_string(), name);
    }
    for n in [0u16, 24, 1000, u16::MAX] {
        assert_eq!(ErrorCode::from_u16(n), ErrorCode::Unknown(n));
        assert_eq!(ErrorCode::Unknown(n).to_u16(), n);
        assert_eq!(ErrorCode::Unknown(n).name(), "unknown");
    }
    // Every u16 survives from_u16 then to_u16.
    for n in 0..=u16::MAX {
        assert_eq!(ErrorCode::from_u16(n).to_u16(), n);
    }
}

// ---- request helpers -----------------------------------------------------

#[test]
fn to_batch_for_each_write() {
    let k = b("k");
    let v = b("v");
    let e = b("e");
    let one = |ops: Vec<Op>| {
        Some(Batch {
            guards: vec![],
            ops,
        })
    };
    assert_eq!(
        Request::Set {
            key: k.clone(),
            value: v.clone()
        }
        .to_batch(),
        one(vec![Op::Set(k.clone(), v.clone())])
    );
    assert_eq!(
        Request::Delete { key: k.clone() }.to_batch(),
        one(vec![Op::Delete(k.clone())])
    );
    assert_eq!(
        Request::TestAndSet {
            key: k.clone(),
            expected: None,
            wanted: Some(v.clone())
        }
        .to_batch(),
        Some(Batch {
            guards: vec![Guard::Absent(k.clone())],
            ops: vec![Op::Set(k.clone(), v.clone())]
        })
    );
    assert_eq!(
        Request::TestAndSet {
            key: k.clone(),
            expected: Some(e.clone()),
            wanted: None
        }
        .to_batch(),
        Some(Batch {
            guards: vec![Guard::ValueEquals(k.clone(), e.clone())],
            ops: vec![Op::Remove(k.clone())]
        })
    );
    assert_eq!(
        Request::Replace {
            key: k.clone(),
            wanted: Some(v.clone())
        }
        .to_batch(),
        one(vec![Op::Set(k.clone(), v.clone())])
    );
    assert_eq!(
        Request::Replace {
            key: k.clone(),
            wanted: None
        }
        .to_batch(),
        one(vec![Op::Remove(k.clone())])
    );
    assert_eq!(
        Request::DeletePrefix { prefix: k.clone() }.to_batch(),
        one(vec![Op::DeletePrefix(k.clone())])
    );
    let batch = Batch {
        guards: vec![Guard::VersionEquals(k.clone(), 0)],
        ops: vec![Op::Set(k.clone(), v.clone())],
    };
    assert_eq!(Request::Batch(batch.clone()).to_batch(), Some(batch));
    assert_eq!(Request::Nop.to_batch(), Some(Batch::default()));
    assert!(Request::Nop.to_batch().unwrap().is_empty());
    // Confirm is decided by the server with a read first.
    assert_eq!(
        Request::Confirm {
            key: k.clone(),
            value: v.clone()
        }
        .to_batch(),
        None
    );
    assert_eq!(
        Request::Get {
            consistency: Consistency::Any,
            key: k
        }
        .to_batch(),
        None
    );
}

fn every_request() -> Vec<Request> {
    let c = Consistency::AtLeast(3);
    let q = RangeQuery {
        first: None,
        first_inclusive: false,
        last: None,
        last_inclusive: false,
        max: 5,
        reverse: false,
    };
    vec![
        Request::Ping,
        Request::Version,
        Request::WhoMaster,
        Request::Statistics,
        Request::GetTxid,
        Request::Get {
            consistency: c,
            key: b("k"),
        },
        Request::GetEntry {
            consistency: c,
            key: b("k"),
        },
        Request::Exists {
            consistency: c,
            key: b("k"),
        },
        Request::MultiGet {
            consistency: c,
            keys: vec![],
        },
        Request::MultiGetOption {
            consistency: c,
            keys: vec![],
        },
        Request::Range {
            consistency: c,
            query: q.clone(),
        },
        Request::RangeEntries {
            consistency: c,
            query: q,
        },
        Request::PrefixKeys {
            consistency: c,
            prefix: b("p"),
            max: 1,
        },
        Request::KeyCount { consistency: c },
        Request::Set {
            key: b("k"),
            value: b("v"),
        },
        Request::Delete { key: b("k") },
        Request::Confirm {
            key: b("k"),
            value: b("v"),
        },
        Request::TestAndSet {
            key: b("k"),
            expected: None,
            wanted: None,
        },
        Request::Replace {
            key: b("k"),
            wanted: None,
        },
        Request::DeletePrefix { prefix: b("p") },
        Request::Batch(Batch::default()),
        Request::Nop,
    ]
}

#[test]
fn is_write_and_consistency() {
    let reqs = every_request();
    let opcodes: Vec<u8> = reqs.iter().map(Request::opcode).collect();
    assert_eq!(
        opcodes,
        [1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16, 17, 18, 30, 31, 32, 33, 34, 35, 36, 37]
    );
    for r in &reqs {
        let write = matches!(
            r,
            Request::Set { .. }
                | Request::Delete { .. }
                | Request::Confirm { .. }
                | Request::TestAndSet { .. }
                | Request::Replace { .. }
                | Request::DeletePrefix { .. }
                | Request::Batch(_)
                | Request::Nop
        );
        assert_eq!(r.is_write(), write, "{r:?}");
        let read = (10..=18).contains(&r.opcode());
        assert_eq!(
            r.consistency(),
            read.then_some(Consistency::AtLeast(3)),
            "{r:?}"
        );
        // Every write but Confirm compiles to a batch.
        assert_eq!(
            r.to_batch().is_some(),
            write && !matches!(r, Request::Confirm { .. }),
            "{r:?}"
        );
    }
    assert_eq!(Consistency::default(), Consistency::Consistent);
}

#[test]
fn guard_key_and_payload() {
    assert_eq!(Guard::ValueEquals(b("ab"), b("cde")).key(), &b("ab"));
    assert_eq!(Guard::ValueEquals(b("ab"), b("cde")).payload_bytes(), 5);
    let g = Guard::PrefixKeysEqual {
        prefix: b("p"),
        keys: vec![b("p1"), b("p22")],
    };
    assert_eq!(g.key(), &b("p"));
    assert_eq!(g.payload_bytes(), 6);
    assert_eq!(Op::Check(g).payload_bytes(), 6);
    assert_eq!(Guard::VersionEquals(b("abc"), 9).payload_bytes(), 3);
}

/// A backup request is its opcode alone; its replies are tag 22 with a
/// sub-tag: 0 a chunk (length-prefixed bytes), 1 the end (four u64 and the
/// length-prefixed checksum).
#[test]
fn backup_layouts() {
    let body = |r: &Response| {
        let mut w = nacre_proto::wire::Writer::new();
        r.encode(&mut w);
        w.into_inner()
    };
    let mut w = nacre_proto::wire::Writer::new();
    Request::Backup.encode(&mut w);
    assert_eq!(w.into_inner(), vec![45]);
    assert_eq!(
        decode_request(Bytes::from(vec![45])).unwrap(),
        Request::Backup
    );
    assert!(matches!(
        decode_request(Bytes::from(vec![45, 0])),
        Err(DecodeError::TrailingBytes { .. })
    ));
    let chunk = Response::Backup(nacre_proto::BackupFrame::Chunk(b("ab")));
    assert_eq!(body(&chunk), vec![22, 0, 2, 0, 0, 0, b'a', b'b']);
    let end = Response::Backup(nacre_proto::BackupFrame::End(nacre_proto::BackupSummary {
        applied: 7,
        revision: 6,
        pairs: 5,
        size_bytes: 1056,
        sha256: Bytes::from(vec![9u8; 32]),
    }));
    let bytes = body(&end);
    assert_eq!(&bytes[..2], &[22, 1]);
    assert_eq!(&bytes[2..10], &7u64.to_le_bytes());
    assert_eq!(&bytes[26..34], &1056u64.to_le_bytes());
    assert_eq!(&bytes[34..38], &32u32.to_le_bytes());
    assert_eq!(bytes.len(), 2 + 32 + 4 + 32);
    assert_eq!(bytes.len(), end.encoded_len());
    assert_eq!(decode_response(Bytes::from(bytes)).unwrap(), end);
    // A chunk cut short is refused, not read as a shorter one.
    assert!(matches!(
        decode_response(Bytes::from(vec![22, 0, 3, 0, 0, 0, b'a'])),
        Err(DecodeError::Truncated { .. })
    ));
}
