//! Strategies shared by the property tests of every crate that parses network
//! input. The fuzzers mostly start from real, valid messages and break them (byte
//! edits, spliced tokens that matter to the grammar, huge numbers, truncation), which
//! reaches much deeper than random bytes; random bytes are tried too.
//!
//! The number of cases comes from `PROPTEST_CASES` (256 by default in the suite;
//! `scripts/fuzz` runs each target for minutes with many more).

use proptest::prelude::*;

/// One edit of an input.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Replace the byte at (position mod length).
    Replace(usize, u8),
    /// Insert bytes at (position mod length + 1).
    Insert(usize, Vec<u8>),
    /// Delete up to n bytes from the position.
    Delete(usize, usize),
    /// Repeat a range (n bytes from the position) right after itself, k times.
    Repeat(usize, usize, usize),
    /// Cut the input at the position.
    Truncate(usize),
}

/// Tokens that matter to the grammars we parse (SIP, SDP, JSON, JWT, STUN, RTP).
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b":",
    b";",
    b",",
    b"=",
    b"\"",
    b"<",
    b">",
    b"@",
    b" ",
    b"\t",
    b"\0",
    b"\xff",
    b"\xc3",
    b"{",
    b"}",
    b"[",
    b"]",
    b".",
    b"-",
    b"0",
    b"-1",
    b"65536",
    b"4294967296",
    b"18446744073709551616",
    b"1e999",
    b"null",
    b"true",
    b";tag=",
    b";branch=z9hG4bK",
    b";encoding=jwt",
    b"Content-Length: ",
    b"Via: SIP/2.0/UDP ",
    b"m=audio ",
    b"a=rtpmap:",
    b"a=ice-ufrag:",
    b"RTP/AVP ",
    b"RTP/SAVPF ",
    b"telephone-event/8000",
    b"\"jsonrpc\":\"2.0\"",
    b"\"method\":",
    b"\"id\":",
    b"\x21\x12\xa4\x42",
    b"\x80",
    b"\xc8",
];

fn edit() -> impl Strategy<Value = Edit> {
    let token = prop::sample::select(TOKENS).prop_map(|t| t.to_vec());
    let bytes = prop::collection::vec(any::<u8>(), 1..16);
    let long = (any::<u8>(), 100usize..20_000).prop_map(|(b, n)| vec![b; n]);
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Replace(p, b)),
        4 => (any::<usize>(), prop_oneof![6 => token, 3 => bytes, 1 => long])
            .prop_map(|(p, b)| Edit::Insert(p, b)),
        3 => (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        1 => (any::<usize>(), 1usize..64, 1usize..50).prop_map(|(p, n, k)| Edit::Repeat(p, n, k)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// `seed` with the edits applied in order.
pub fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for e in edits {
        let len = out.len();
        match e {
            Edit::Replace(p, b) if len > 0 => out[p % len] = *b,
            Edit::Insert(p, bytes) => {
                let at = p % (len + 1);
                out.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(p, n) if len > 0 => {
                let at = p % len;
                out.drain(at..(at + n).min(len));
            }
            Edit::Repeat(p, n, k) if len > 0 => {
                let at = p % len;
                let part = out[at..(at + n).min(len)].to_vec();
                let end = at + part.len();
                let copies: Vec<u8> = part.iter().copied().cycle().take(part.len() * k).collect();
                out.splice(end..end, copies);
            }
            Edit::Truncate(p) => out.truncate(p % (len + 1)),
            _ => {}
        }
    }
    out
}

/// One of `seeds`, broken by 1–8 edits (sometimes untouched).
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds),
        prop::collection::vec(edit(), 0..8),
    )
        .prop_map(|(seed, edits)| apply(&seed, &edits))
}

/// Random bytes, up to `max` long.
pub fn noise(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Mutated seeds most of the time, noise sometimes.
pub fn hostile(seeds: Vec<Vec<u8>>, max_noise: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![9 => mutated(seeds), 1 => noise(max_noise)]
}

/// The text of hostile bytes (lossy), for parsers that take `&str`.
pub fn hostile_text(seeds: Vec<Vec<u8>>, max_noise: usize) -> impl Strategy<Value = String> {
    hostile(seeds, max_noise).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_at_any_position_without_panicking() {
        let seed = b"abcdef";
        assert_eq!(apply(seed, &[Edit::Replace(7, b'x')]), b"axcdef");
        assert_eq!(apply(seed, &[Edit::Insert(6, b"--".to_vec())]), b"abcdef--");
        assert_eq!(apply(seed, &[Edit::Delete(4, 10)]), b"abcd");
        assert_eq!(
            apply(seed, &[Edit::Repeat(0, 2, 2)]),
            b"ababab"
                .iter()
                .chain(b"cdef")
                .copied()
                .collect::<Vec<u8>>()
        );
        assert_eq!(apply(seed, &[Edit::Truncate(3)]), b"abc");
        assert_eq!(
            apply(
                b"",
                &[
                    Edit::Replace(3, 1),
                    Edit::Delete(1, 1),
                    Edit::Repeat(1, 1, 1)
                ]
            ),
            b""
        );
    }
}
