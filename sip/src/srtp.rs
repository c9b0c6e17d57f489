//! SRTP and SRTCP (RFC 3711, RFC 7714) for SIP legs keyed by SDES (RFC 4568), on
//! str0m's crypto primitives: the ciphers, HMAC-SHA1 and the AES rounds of the key
//! derivation come from the provider str0m already uses for WebRTC, so there is no
//! second crypto stack. What is here: key derivation, the rollover counter, replay
//! windows, and the packet layouts. Nothing allocates per packet.

use std::sync::OnceLock;

// RFC 7714's IVs are the same for both key sizes: AeadAes128Gcm's serve both.
use str0m::crypto::{
    AeadAes128Gcm, AeadAes128GcmCipher, AeadAes256GcmCipher, Aes128CmSha1_80,
    Aes128CmSha1_80Cipher, CryptoProvider,
};

/// The crypto-suites we speak, in our order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
    AeadAes256Gcm,
}

impl Suite {
    pub const ALL: [Suite; 4] = [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
        Suite::AeadAes256Gcm,
    ];

    /// The name in `a=crypto` (RFC 4568 §6.2, RFC 7714 §14.2).
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Suite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name() == name)
    }

    fn key_len(self) -> usize {
        match self {
            Suite::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    fn salt_len(self) -> usize {
        match self {
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => 12,
            _ => 14,
        }
    }

    /// Bytes of `inline:` key material: master key then master salt.
    pub fn master_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    fn rtp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
            _ => 16,
        }
    }

    /// SRTCP's tag is 80 bits with either AES-CM suite (RFC 4568 §6.2.2).
    fn rtcp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 10,
            _ => 16,
        }
    }
}

/// A master key and salt (`key || salt`, as `inline:` carries them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey {
    bytes: [u8; 44],
    len: u8,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({} bytes)", self.len)
    }
}

impl MasterKey {
    /// Fresh key material for `suite` from the OS-seeded CSPRNG.
    pub fn random(suite: Suite) -> MasterKey {
        let mut bytes = [0u8; 44];
        for b in bytes.iter_mut().take(suite.master_len()) {
            *b = rand::random();
        }
        MasterKey {
            bytes,
            len: suite.master_len() as u8,
        }
    }

    pub fn from_bytes(b: &[u8]) -> Option<MasterKey> {
        let mut bytes = [0u8; 44];
        bytes.get_mut(..b.len())?.copy_from_slice(b);
        Some(MasterKey {
            bytes,
            len: b.len() as u8,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SrtpError {
    #[error("too short")]
    Short,
    #[error("authentication failed")]
    Auth,
    #[error("replayed or too old")]
    Replay,
    #[error("key material does not fit the suite")]
    Key,
}

fn provider() -> &'static CryptoProvider {
    static P: OnceLock<CryptoProvider> = OnceLock::new();
    P.get_or_init(str0m::crypto::from_feature_flags)
}

/// aws-lc-rs' CTR mode wants its output this much longer than its input.
const CTR_PADDING: usize = 15;
/// Room needed beyond a packet for its protection: the longest tag, the SRTCP index,
/// the CTR padding.
pub const OVERHEAD: usize = 16 + 4 + CTR_PADDING;

const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;

/// The AES-CM key derivation of RFC 3711 §4.3 (key derivation rate 0).
fn derive(master: &MasterKey, suite: Suite, label: u8, out: &mut [u8]) {
    let (key, salt) = master.as_bytes().split_at(suite.key_len());
    let mut input = [0u8; 16];
    input[..salt.len()].copy_from_slice(salt);
    input[7] ^= label;
    let mut block = [0u8; 32];
    let crypto = provider().srtp_provider;
    for (round, chunk) in out.chunks_mut(16).enumerate() {
        input[14..].copy_from_slice(&(round as u16).to_be_bytes());
        if key.len() == 32 {
            crypto.srtp_aes_256_ecb_round(key, &input, &mut block);
        } else {
            crypto.srtp_aes_128_ecb_round(key, &input, &mut block);
        }
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// One direction's session keys for RTP or RTCP.
enum Keys {
    Cm {
        auth: [u8; 20],
        salt: [u8; 14],
        cipher: Box<dyn Aes128CmSha1_80Cipher>,
    },
    /// AEAD_AES_128_GCM or AEAD_AES_256_GCM: the same IVs and layouts (RFC 7714).
    Gcm {
        salt: [u8; 12],
        cipher: Box<dyn Aead>,
    },
}

/// AES-GCM of either key size.
trait Aead: Send + Sync {
    fn seal(&mut self, iv: &[u8; 12], aad: &[u8], input: &[u8], out: &mut [u8]) -> bool;
    fn open(&mut self, iv: &[u8; 12], aad: &[&[u8]], input: &[u8], out: &mut [u8])
        -> Option<usize>;
}

macro_rules! aead {
    ($t:ty) => {
        impl Aead for Box<$t> {
            fn seal(&mut self, iv: &[u8; 12], aad: &[u8], input: &[u8], out: &mut [u8]) -> bool {
                self.encrypt(iv, aad, input, out).is_ok()
            }
            fn open(
                &mut self,
                iv: &[u8; 12],
                aad: &[&[u8]],
                input: &[u8],
                out: &mut [u8],
            ) -> Option<usize> {
                self.decrypt(iv, aad, input, out).ok()
            }
        }
    };
}
aead!(dyn AeadAes128GcmCipher);
aead!(dyn AeadAes256GcmCipher);

impl Keys {
    fn new(master: &MasterKey, suite: Suite, rtcp: bool, encrypt: bool) -> Keys {
        let (lk, la, ls) = if rtcp {
            (LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT)
        } else {
            (LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT)
        };
        let crypto = provider().srtp_provider;
        match suite {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => {
                let (mut key, mut auth, mut salt) = ([0u8; 16], [0u8; 20], [0u8; 14]);
                derive(master, suite, lk, &mut key);
                derive(master, suite, la, &mut auth);
                derive(master, suite, ls, &mut salt);
                Keys::Cm {
                    auth,
                    salt,
                    cipher: crypto.aes_128_cm_sha1_80().create_cipher(key, encrypt),
                }
            }
            Suite::AeadAes128Gcm => {
                let (mut key, mut salt) = ([0u8; 16], [0u8; 12]);
                derive(master, suite, lk, &mut key);
                derive(master, suite, ls, &mut salt);
                Keys::Gcm {
                    salt,
                    cipher: Box::new(crypto.aead_aes_128_gcm().create_cipher(key, encrypt)),
                }
            }
            Suite::AeadAes256Gcm => {
                let (mut key, mut salt) = ([0u8; 32], [0u8; 12]);
                derive(master, suite, lk, &mut key);
                derive(master, suite, ls, &mut salt);
                Keys::Gcm {
                    salt,
                    cipher: Box::new(crypto.aead_aes_256_gcm().create_cipher(key, encrypt)),
                }
            }
        }
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    provider().sha1_hmac_provider.sha1_hmac(key, parts)
}

fn tag_matches(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Length of an RTP packet's header (fixed part, CSRCs, extension).
fn rtp_header_len(p: &[u8]) -> Option<usize> {
    if p.len() < 12 {
        return None;
    }
    let mut len = 12 + 4 * (p[0] & 0x0f) as usize;
    if p[0] & 0x10 != 0 {
        let ext = p.get(len..len + 4)?;
        len += 4 + 4 * u16::from_be_bytes([ext[2], ext[3]]) as usize;
    }
    (len <= p.len()).then_some(len)
}

fn ssrc_at(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

/// A 64-packet replay window over a 48-bit (RTP) or 31-bit (RTCP) index.
#[derive(Default)]
struct ReplayWindow {
    highest: Option<u64>,
    seen: u64,
}

impl ReplayWindow {
    fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(h) = self.highest else { return Ok(()) };
        if index > h {
            return Ok(());
        }
        let back = h - index;
        if back >= 64 || self.seen & (1 << back) != 0 {
            return Err(SrtpError::Replay);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        match self.highest {
            Some(h) if index <= h => self.seen |= 1 << (h - index),
            Some(h) => {
                let ahead = index - h;
                self.seen = if ahead >= 64 { 0 } else { self.seen << ahead };
                self.seen |= 1;
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }
}

/// Protects what a leg sends.
pub struct SrtpSender {
    suite: Suite,
    rtp: Keys,
    rtcp: Keys,
    roc: u32,
    last_seq: Option<u16>,
    srtcp_index: u32,
}

impl SrtpSender {
    pub fn new(suite: Suite, master: &MasterKey) -> Result<SrtpSender, SrtpError> {
        if master.as_bytes().len() != suite.master_len() {
            return Err(SrtpError::Key);
        }
        Ok(SrtpSender {
            suite,
            rtp: Keys::new(master, suite, false, true),
            rtcp: Keys::new(master, suite, true, true),
            roc: 0,
            last_seq: None,
            srtcp_index: 0,
        })
    }

    /// Protect the RTP packet `p` into `out` (at least `p.len() + OVERHEAD` long);
    /// returns the SRTP packet's length.
    pub fn protect_rtp(&mut self, p: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        let hlen = rtp_header_len(p).ok_or(SrtpError::Short)?;
        if out.len() < p.len() + OVERHEAD {
            return Err(SrtpError::Short);
        }
        let seq = u16::from_be_bytes([p[2], p[3]]);
        if let Some(last) = self.last_seq {
            if seq < last && last - seq > 0x8000 {
                self.roc = self.roc.wrapping_add(1);
            }
        }
        self.last_seq = Some(seq);
        let index = ((self.roc as u64) << 16) | seq as u64;
        let ssrc = ssrc_at(p, 8);
        let (header, body) = p.split_at(hlen);
        out[..hlen].copy_from_slice(header);
        let tag = self.suite.rtp_tag_len();
        let end = match &mut self.rtp {
            Keys::Cm { auth, salt, cipher } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                cipher
                    .encrypt(&iv, body, &mut out[hlen..p.len() + CTR_PADDING])
                    .map_err(|_| SrtpError::Key)?;
                let mac = hmac(auth, &[&out[..p.len()], &self.roc.to_be_bytes()]);
                out[p.len()..p.len() + tag].copy_from_slice(&mac[..tag]);
                p.len() + tag
            }
            Keys::Gcm { salt, cipher } => {
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, self.roc, seq);
                if !cipher.seal(&iv, header, body, &mut out[hlen..p.len() + tag]) {
                    return Err(SrtpError::Key);
                }
                p.len() + tag
            }
        };
        Ok(end)
    }

    /// Protect the RTCP compound packet `p` into `out` (at least `p.len() + OVERHEAD`).
    pub fn protect_rtcp(&mut self, p: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        if p.len() < 8 || out.len() < p.len() + OVERHEAD {
            return Err(SrtpError::Short);
        }
        let index = self.srtcp_index;
        self.srtcp_index = (index + 1) & 0x7fff_ffff;
        let e_and_index = (0x8000_0000 | index).to_be_bytes();
        let ssrc = ssrc_at(p, 4);
        out[..8].copy_from_slice(&p[..8]);
        let tag = self.suite.rtcp_tag_len();
        match &mut self.rtcp {
            Keys::Cm { auth, salt, cipher } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index as u64);
                cipher
                    .encrypt(&iv, &p[8..], &mut out[8..p.len() + CTR_PADDING])
                    .map_err(|_| SrtpError::Key)?;
                out[p.len()..p.len() + 4].copy_from_slice(&e_and_index);
                let mac = hmac(auth, &[&out[..p.len() + 4]]);
                out[p.len() + 4..p.len() + 4 + tag].copy_from_slice(&mac[..tag]);
            }
            Keys::Gcm { salt, cipher } => {
                let iv = AeadAes128Gcm::rtcp_iv(*salt, ssrc, index);
                let aad = rtcp_aad(p, e_and_index);
                if !cipher.seal(&iv, &aad, &p[8..], &mut out[8..p.len() + tag]) {
                    return Err(SrtpError::Key);
                }
                out[p.len() + tag..p.len() + tag + 4].copy_from_slice(&e_and_index);
            }
        }
        Ok(p.len() + 4 + tag)
    }
}

fn rtcp_aad(p: &[u8], e_and_index: [u8; 4]) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&p[..8]);
    aad[8..].copy_from_slice(&e_and_index);
    aad
}

/// Checks and decrypts what a leg receives.
pub struct SrtpReceiver {
    suite: Suite,
    rtp: Keys,
    rtcp: Keys,
    ssrc: Option<u32>,
    window: ReplayWindow,
    rtcp_window: ReplayWindow,
}

impl SrtpReceiver {
    pub fn new(suite: Suite, master: &MasterKey) -> Result<SrtpReceiver, SrtpError> {
        if master.as_bytes().len() != suite.master_len() {
            return Err(SrtpError::Key);
        }
        Ok(SrtpReceiver {
            suite,
            rtp: Keys::new(master, suite, false, false),
            rtcp: Keys::new(master, suite, true, false),
            ssrc: None,
            window: ReplayWindow::default(),
            rtcp_window: ReplayWindow::default(),
        })
    }

    /// The packet index `seq` most likely stands for (RFC 3711 Appendix A), given the
    /// replay window of its stream.
    fn estimate(window: &ReplayWindow, seq: u16) -> u64 {
        let Some(h) = window.highest else {
            return seq as u64;
        };
        let (roc, s_l) = ((h >> 16) as u32, (h & 0xffff) as u16);
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                roc.wrapping_sub(1)
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc.wrapping_add(1)
        } else {
            roc
        };
        ((v as u64) << 16) | seq as u64
    }

    /// Check and decrypt the SRTP packet `p` into `out` (at least `p.len() + OVERHEAD`);
    /// returns the RTP packet's length.
    pub fn unprotect_rtp(&mut self, p: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        let hlen = rtp_header_len(p).ok_or(SrtpError::Short)?;
        let tag = self.suite.rtp_tag_len();
        if p.len() < hlen + tag || out.len() < p.len() + OVERHEAD {
            return Err(SrtpError::Short);
        }
        let ssrc = ssrc_at(p, 8);
        // A new stream (another SSRC) has its own index space: it is checked against a
        // scratch window and replaces the current stream only once it authenticates, so
        // a forged packet with any SSRC changes nothing.
        let scratch = ReplayWindow::default();
        let new_stream = self.ssrc != Some(ssrc);
        let window = if new_stream { &scratch } else { &self.window };
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let index = Self::estimate(window, seq);
        window.check(index)?;
        let roc = (index >> 16) as u32;
        let (header, rest) = p.split_at(hlen);
        out[..hlen].copy_from_slice(header);
        let plain = match &mut self.rtp {
            Keys::Cm { auth, salt, cipher } => {
                let body_end = p.len() - tag;
                let mac = hmac(auth, &[&p[..body_end], &roc.to_be_bytes()]);
                if !tag_matches(&mac[..tag], &p[body_end..]) {
                    return Err(SrtpError::Auth);
                }
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                let body = &p[hlen..body_end];
                cipher
                    .decrypt(&iv, body, &mut out[hlen..hlen + body.len() + CTR_PADDING])
                    .map_err(|_| SrtpError::Auth)?;
                body.len()
            }
            Keys::Gcm { salt, cipher } => {
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, roc, seq);
                let n = rest.len() - tag;
                cipher
                    .open(&iv, &[header], rest, &mut out[hlen..hlen + n])
                    .ok_or(SrtpError::Auth)?
            }
        };
        if new_stream {
            self.ssrc = Some(ssrc);
            self.window = scratch;
        }
        self.window.accept(index);
        Ok(hlen + plain)
    }

    /// Check and decrypt the SRTCP packet `p` into `out` (at least `p.len() + OVERHEAD`);
    /// returns the RTCP packet's length.
    pub fn unprotect_rtcp(&mut self, p: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        let tag = self.suite.rtcp_tag_len();
        if p.len() < 8 + 4 + tag || out.len() < p.len() + OVERHEAD {
            return Err(SrtpError::Short);
        }
        let ssrc = ssrc_at(p, 4);
        out[..8].copy_from_slice(&p[..8]);
        let (index_at, len) = match self.rtcp {
            Keys::Cm { .. } => (p.len() - tag - 4, p.len() - tag - 4),
            _ => (p.len() - 4, p.len() - 4 - tag),
        };
        let e_and_index = [
            p[index_at],
            p[index_at + 1],
            p[index_at + 2],
            p[index_at + 3],
        ];
        let word = u32::from_be_bytes(e_and_index);
        let (encrypted, index) = (word & 0x8000_0000 != 0, word & 0x7fff_ffff);
        self.rtcp_window.check(index as u64)?;
        match &mut self.rtcp {
            Keys::Cm { auth, salt, cipher } => {
                let mac = hmac(auth, &[&p[..index_at + 4]]);
                if !tag_matches(&mac[..tag], &p[index_at + 4..]) {
                    return Err(SrtpError::Auth);
                }
                if encrypted {
                    let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index as u64);
                    cipher
                        .decrypt(&iv, &p[8..len], &mut out[8..len + CTR_PADDING])
                        .map_err(|_| SrtpError::Auth)?;
                } else {
                    out[8..len].copy_from_slice(&p[8..len]);
                }
            }
            Keys::Gcm { salt, cipher } => {
                let iv = AeadAes128Gcm::rtcp_iv(*salt, ssrc, index);
                let aad = rtcp_aad(p, e_and_index);
                cipher
                    .open(&iv, &[&aad], &p[8..index_at], &mut out[8..len])
                    .ok_or(SrtpError::Auth)?;
            }
        }
        self.rtcp_window.accept(index as u64);
        Ok(len)
    }
}

#[cfg(test)]
mod tests;
