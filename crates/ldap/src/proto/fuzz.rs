//! Property tests ("fuzzing" in the normal test suite) of the parsers of
//! what a server sends: control values, search entries, intermediate
//! responses, range options, and the bounded BER parser they use. A fixed
//! seed and case count: the same inputs, in the same time, on every run.
//! Properties: no panic, no tree nested deeper than the bound, an error
//! (None) for what is not well formed, and round trips for what we encode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use ldap3::MAX_BER_DEPTH;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x6d66_6173_796e_6331),
        failure_persistence: None,
        ..Config::default()
    }
}

fn depth(t: &StructureTag) -> usize {
    match &t.payload {
        PL::P(_) => 1,
        PL::C(v) => 1 + v.iter().map(depth).max().unwrap_or(0),
    }
}

/// `levels` SEQUENCEs, each inside the one before.
fn nested(levels: usize) -> Vec<u8> {
    let mut m = vec![0x04, 0x00];
    for _ in 0..levels {
        m = ber_tlv(0x30, &m);
    }
    m
}

/// Well-formed values of every parser, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![
        paged_control(1000, b"cookie".to_vec())
            .val
            .unwrap_or_default(),
        vec![
            0x30, 0x0a, 0x02, 0x01, 0x01, 0x02, 0x01, 0x00, 0x04, 0x02, 0xab, 0xcd,
        ],
        vec![
            0x30, 0x09, 0x0a, 0x01, 0x03, 0x04, 0x02, 0x11, 0x22, 0x04, 0x00,
        ],
        vec![0x30, 0x03, 0x01, 0x01, 0xff],
        vec![0x80, 0x01, b'x'],
        vec![
            0xa3, 0x0a, 0x01, 0x01, 0xff, 0x31, 0x05, 0x04, 0x03, 1, 2, 3,
        ],
        vec![0xa1, 0x03, 0x04, 0x01, b'k'],
        vec![0x30, 0x05, 0xa0, 0x03, 0x80, 0x01, 0x64],
        vec![0x30, 0x03, 0x81, 0x01, 0x01],
        dirsync_control(DIRSYNC_INCREMENTAL_VALUES, 7, b"ck")
            .val
            .unwrap_or_default(),
        sync_request_control(Some(b"ab")).val.unwrap_or_default(),
        vec![0x30, 0x00],
    ];
    out.push(entry_bytes(b"uid=a,dc=x", &[(b"uid", &[b"a", b"b"])]));
    out
}

/// A SearchResultEntry ([APPLICATION 4]) with these attributes.
fn entry_bytes(dn: &[u8], attrs: &[(&[u8], &[&[u8]])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (name, values) in attrs {
        let vals: Vec<u8> = values.iter().flat_map(|v| ber_tlv(0x04, v)).collect();
        let mut a = ber_tlv(0x04, name);
        a.extend(ber_tlv(0x31, &vals));
        list.extend(ber_tlv(0x30, &a));
    }
    let mut e = ber_tlv(0x04, dn);
    e.extend(ber_tlv(0x30, &list));
    ber_tlv(0x64, &e)
}

/// Random BER trees: any tag, primitive content or nested elements.
fn ber_tree() -> impl Strategy<Value = Vec<u8>> {
    let leaf = (any::<u8>(), vec(any::<u8>(), 0..6))
        .prop_map(|(tag, content)| ber_tlv(tag & !0x20, &content));
    leaf.prop_recursive(8, 96, 4, |inner| {
        (any::<u8>(), vec(inner, 0..4)).prop_map(|(tag, kids)| ber_tlv(tag | 0x20, &kids.concat()))
    })
}

/// A seed with bytes replaced, inserted or cut, or wrapped in SEQUENCEs.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let n = seeds().len();
    (
        0..n,
        vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 1..5),
        0..40usize,
    )
        .prop_map(|(i, edits, wraps)| {
            let mut m = seeds().swap_remove(i);
            for (at, byte, how) in edits {
                let pos = at.index(m.len() + 1);
                match how {
                    0 if pos < m.len() => m[pos] = byte,
                    1 => m.insert(pos, byte),
                    2 => m.truncate(pos),
                    _ => {
                        if pos < m.len() {
                            m.remove(pos);
                        }
                    }
                }
            }
            for _ in 0..wraps {
                m = ber_tlv(0x30, &m);
            }
            m
        })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..48),
        ber_tree(),
        mutated(),
        (30..300usize).prop_map(nested),
    ]
}

/// Every parser of a value the server sends, on `v`; true when one of them
/// accepted it.
fn parse_all(v: &[u8]) -> bool {
    let results = [
        paged_cookie(v).is_some(),
        dirsync_response(v).is_some(),
        sync_state(v).is_some(),
        sync_done(v).is_some(),
        sync_info(v).is_some(),
        ppolicy_error(v).is_some(),
    ];
    if let Some((_, tag)) = parse_tag(v) {
        let re = ResultEntry::new(tag.clone());
        if let Ok(e) = parse_entry(re) {
            assert!(e
                .attrs
                .iter()
                .all(|(_, vals)| vals.iter().all(|x| x.len() <= MAX_VALUE_BYTES)));
        }
        let _ = parse_intermediate(ResultEntry::new(tag));
    }
    results.contains(&true)
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn the_bounded_parser_never_panics_nor_nests_past_the_bound(v in input()) {
        if let Some((used, tag)) = parse_tag(&v) {
            prop_assert!(used <= v.len());
            prop_assert!(depth(&tag) <= MAX_BER_DEPTH + 1);
        }
    }

    #[test]
    fn control_and_entry_parsers_never_panic(v in input()) {
        parse_all(&v);
    }

    #[test]
    fn range_options_never_panic(returned in "[a-zA-Z;=0-9*-]{0,24}", attr in "[a-zA-Z]{0,8}") {
        if let Some((lo, Some(hi))) = parse_range(&returned, &attr) {
            prop_assert!(returned.contains(&lo.to_string()) && returned.contains(&hi.to_string()));
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn what_we_encode_parses_back(size in 1..5000i32, cookie in vec(any::<u8>(), 0..300)) {
        let paged = paged_control(size, cookie.clone()).val.unwrap_or_default();
        prop_assert_eq!(paged_cookie(&paged), Some(cookie.clone()));
        // a DirSync response has the request's shape: (more, unused, cookie)
        let resp = dirsync_control(1, 0, &cookie).val.unwrap_or_default();
        prop_assert_eq!(dirsync_response(&resp), Some((true, cookie)));
    }

    #[test]
    fn entries_keep_short_values_and_skip_long_ones(
        short in vec(vec(any::<u8>(), 0..64), 0..4),
        long in 0..3usize,
    ) {
        let big = vec![b'x'; MAX_VALUE_BYTES + 1];
        let mut values: Vec<&[u8]> = short.iter().map(Vec::as_slice).collect();
        values.extend(std::iter::repeat_n(big.as_slice(), long));
        let bytes = entry_bytes(b"uid=a,dc=x", &[(b"description", &values), (b"uid", &[b"a"])]);
        let (_, tag) = parse_tag(&bytes).expect("well formed");
        let e = parse_entry(ResultEntry::new(tag)).expect("an entry");
        prop_assert_eq!(e.values("description"), short.as_slice());
        let uid = e.first_str("uid");
        prop_assert_eq!(uid.as_deref(), Some("a"));
    }
}

/// Inputs that crashed (stack overflow) or that the parsers must refuse:
/// every parser says None, none overflows the stack.
#[test]
fn regressions_are_refused() {
    let deep = nested(40_000);
    for v in [
        deep.clone(),
        nested(MAX_BER_DEPTH + 1),
        vec![0x30],
        vec![0x30, 0x89, 1, 0, 0, 0, 0, 0, 0, 0, 1],
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        vec![0x30, 0x05, 0x02, 0x01, 0x01, 0x04, 0x09],
    ] {
        assert!(!parse_all(&v), "{:02x?}", &v[..v.len().min(16)]);
    }
    assert!(parse_tag(&deep).is_none());
    // an empty SEQUENCE: only a Sync Done value may be empty
    let empty = [0x30, 0x00];
    assert_eq!(sync_done(&empty), Some((None, false)));
    assert_eq!(paged_cookie(&empty), None);
    assert_eq!(dirsync_response(&empty), None);
    assert_eq!(sync_state(&empty), None);
    assert_eq!(ppolicy_error(&empty), None);
    // a control value of 40,000 nested SEQUENCEs inside a paged response
    // control: refused, not a stack overflow
    assert_eq!(paged_cookie(&ber_tlv(0x30, &deep)), None);
    // an entry DN longer than the value cap is an error, not stored
    let long_dn = vec![b'a'; MAX_VALUE_BYTES + 1];
    let (_, tag) = parse_tag(&entry_bytes(&long_dn, &[])).expect("well formed");
    let e = parse_entry(ResultEntry::new(tag)).unwrap_err();
    assert!(e.contains("DN is 65537 bytes long"), "{e}");
    // at the bound: accepted
    assert!(parse_tag(&nested(MAX_BER_DEPTH)).is_some());
}
