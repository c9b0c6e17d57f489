//! Ogg pages (RFC 3533) carrying Opus (RFC 7845): the identification and comment
//! headers on pages of their own, then audio packets, a page per [`OggOpus::flush`].

/// CRC-32 of Ogg pages: polynomial 0x04c11db7, no reflection, initial value 0.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut j = 0;
        while j < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            j += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
};

fn crc(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |c, &b| {
        (c << 8) ^ CRC_TABLE[(((c >> 24) as u8) ^ b) as usize]
    })
}

/// Segments a page may hold (RFC 3533); pages are flushed well before.
const MAX_SEGMENTS: usize = 255;

/// One logical Ogg Opus stream being written.
#[derive(Debug)]
pub struct OggOpus {
    serial: u32,
    sequence: u32,
    /// Samples at 48 kHz of every packet so far (the granule position).
    granule: u64,
    segments: Vec<u8>,
    body: Vec<u8>,
    /// No page written yet (the next one is the beginning of the stream).
    first: bool,
}

impl OggOpus {
    /// A stream with the identification header (`channels`, the encoder's `pre_skip`
    /// at 48 kHz, the `input_rate` it was made from) and comment header written into
    /// `out`.
    pub fn new(
        serial: u32,
        channels: u8,
        pre_skip: u16,
        input_rate: u32,
        out: &mut Vec<u8>,
    ) -> OggOpus {
        let mut s = OggOpus {
            serial,
            sequence: 0,
            granule: 0,
            segments: Vec::with_capacity(MAX_SEGMENTS),
            body: Vec::with_capacity(8192),
            first: true,
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(channels);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&input_rate.to_le_bytes());
        head.extend_from_slice(&0u16.to_le_bytes());
        head.push(0);
        s.add(&head);
        s.flush(false, out);
        let vendor = b"patchbay";
        let mut tags = Vec::with_capacity(24);
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        s.add(&tags);
        s.flush(false, out);
        s
    }

    /// Samples (48 kHz) written so far.
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// Add one audio packet of `samples_48k` samples (written at the next flush; a page
    /// is flushed into `out` first if this one would not fit).
    pub fn packet(&mut self, packet: &[u8], samples_48k: u32, out: &mut Vec<u8>) {
        if self.segments.len() + packet.len() / 255 + 1 > MAX_SEGMENTS {
            self.flush(false, out);
        }
        self.add(packet);
        self.granule += u64::from(samples_48k);
    }

    fn add(&mut self, packet: &[u8]) {
        let mut n = packet.len();
        while n >= 255 {
            self.segments.push(255);
            n -= 255;
        }
        self.segments.push(n as u8);
        self.body.extend_from_slice(packet);
    }

    /// Write the packets added since the last page as one page (`last`: the end of the
    /// stream, written even when empty).
    pub fn flush(&mut self, last: bool, out: &mut Vec<u8>) {
        if self.segments.is_empty() && !last {
            return;
        }
        let start = out.len();
        out.extend_from_slice(b"OggS");
        out.push(0);
        let mut flags = 0u8;
        if self.first {
            flags |= 2;
        }
        if last {
            flags |= 4;
        }
        out.push(flags);
        // Header pages carry granule 0; audio pages the samples completed so far.
        out.extend_from_slice(&self.granule.to_le_bytes());
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        let crc_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.push(self.segments.len() as u8);
        out.extend_from_slice(&self.segments);
        out.extend_from_slice(&self.body);
        let c = crc(&out[start..]);
        out[crc_at..crc_at + 4].copy_from_slice(&c.to_le_bytes());
        self.sequence += 1;
        self.first = false;
        self.segments.clear();
        self.body.clear();
    }
}

/// The complete page that starts at `at` of `bytes` (its CRC checked): its end and
/// granule position.
fn page_at(bytes: &[u8], at: usize) -> Option<(usize, u64)> {
    let b = bytes.get(at..)?;
    if b.len() < 27 || &b[..4] != b"OggS" || b[4] != 0 {
        return None;
    }
    let n = b[26] as usize;
    let table = b.get(27..27 + n)?;
    let len = 27 + n + table.iter().map(|&s| s as usize).sum::<usize>();
    let mut page = b.get(..len)?.to_vec();
    let stored = u32::from_le_bytes(page[22..26].try_into().ok()?);
    page[22..26].fill(0);
    if crc(&page) != stored {
        return None;
    }
    Some((at + len, u64::from_le_bytes(b[6..14].try_into().ok()?)))
}

/// In `tail` (the end of a file a crash cut short), the last complete page: where it
/// ends (what follows is a torn page) and its granule position (the samples at 48 kHz
/// completed by then). None: no complete page in it.
pub fn last_complete_page(tail: &[u8]) -> Option<(usize, u64)> {
    let mut last = None;
    let mut at = 0;
    while at + 4 <= tail.len() {
        match page_at(tail, at) {
            Some((end, granule)) => {
                last = Some((end, granule));
                at = end;
            }
            None => at += 1,
        }
    }
    last
}

/// The pre-skip of an Ogg Opus stream, from its first page (`head`: the file's start).
pub fn pre_skip(head: &[u8]) -> Option<u16> {
    let (end, _) = page_at(head, 0)?;
    let n = head[26] as usize;
    let body = head.get(27 + n..end)?;
    if body.len() < 12 || &body[..8] != b"OpusHead" {
        return None;
    }
    Some(u16::from_le_bytes([body[10], body[11]]))
}

/// Split `bytes` into pages: (flags, granule, sequence, packets), checking each CRC.
#[cfg(test)]
pub(crate) fn pages(mut bytes: &[u8]) -> Vec<(u8, u64, u32, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert_eq!(&bytes[..4], b"OggS");
        let n = bytes[26] as usize;
        let table = &bytes[27..27 + n];
        let body_len: usize = table.iter().map(|&s| s as usize).sum();
        let len = 27 + n + body_len;
        let mut page = bytes[..len].to_vec();
        let stored = u32::from_le_bytes(page[22..26].try_into().unwrap());
        page[22..26].fill(0);
        assert_eq!(crc(&page), stored, "CRC");
        let mut packets = vec![Vec::new()];
        let mut at = 27 + n;
        for &s in table {
            packets
                .last_mut()
                .unwrap()
                .extend_from_slice(&bytes[at..at + s as usize]);
            at += s as usize;
            if s < 255 {
                packets.push(Vec::new());
            }
        }
        packets.pop();
        out.push((
            bytes[5],
            u64::from_le_bytes(bytes[6..14].try_into().unwrap()),
            u32::from_le_bytes(bytes[18..22].try_into().unwrap()),
            packets,
        ));
        bytes = &bytes[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_cut_mid_page_ends_at_its_last_complete_page() {
        let mut out = Vec::new();
        let mut s = OggOpus::new(7, 1, 312, 8000, &mut out);
        for _ in 0..5 {
            s.packet(&[0xfc, 1, 2, 3], 960, &mut out);
        }
        s.flush(false, &mut out);
        let whole = out.len();
        s.packet(&[0xfc, 4, 5, 6], 960, &mut out);
        s.flush(false, &mut out);
        // Torn in the middle of the last page.
        let cut = &out[..out.len() - 3];
        assert_eq!(pre_skip(cut), Some(312));
        assert_eq!(last_complete_page(cut), Some((whole, 5 * 960)));
        // From a tail that starts mid-page.
        let from = 10;
        assert_eq!(
            last_complete_page(&cut[from..]),
            Some((whole - from, 5 * 960))
        );
        assert_eq!(last_complete_page(&out), Some((out.len(), 6 * 960)));
        assert_eq!(last_complete_page(b"not ogg"), None);
    }

    #[test]
    fn crc_of_known_input() {
        // The Ogg CRC (CRC-32/MPEG-2 without the final inversion and initial value 0).
        assert_eq!(crc(b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn headers_then_packets_byte_for_byte() {
        let mut out = Vec::new();
        let mut s = OggOpus::new(7, 1, 312, 8000, &mut out);
        let big = vec![9u8; 600];
        s.packet(&[0xfc, 1, 2, 3], 960, &mut out);
        s.packet(&big, 960, &mut out);
        s.flush(false, &mut out);
        s.packet(&[0xfc, 4], 960, &mut out);
        s.flush(true, &mut out);
        let p = pages(&out);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].0, 2, "beginning of stream");
        assert_eq!(&p[0].3[0][..8], b"OpusHead");
        assert_eq!(
            u16::from_le_bytes(p[0].3[0][10..12].try_into().unwrap()),
            312
        );
        assert_eq!(&p[1].3[0][..8], b"OpusTags");
        assert_eq!(p[2].3, vec![vec![0xfc, 1, 2, 3], big]);
        assert_eq!((p[2].1, p[2].2), (1920, 2));
        assert_eq!(
            (p[3].0, p[3].1, p[3].3.clone()),
            (4, 2880, vec![vec![0xfc, 4]])
        );
    }

    #[test]
    fn a_full_page_is_flushed_before_the_packet_that_would_overflow_it() {
        let mut out = Vec::new();
        let mut s = OggOpus::new(1, 1, 0, 48000, &mut out);
        let header_len = out.len();
        for _ in 0..300 {
            s.packet(&[0xfc; 10], 960, &mut out);
        }
        s.flush(true, &mut out);
        let p = pages(&out[header_len..]);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].3.len(), 255);
        assert_eq!(p[1].3.len(), 45);
        assert_eq!(p[1].1, 300 * 960);
    }
}
