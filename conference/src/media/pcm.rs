//! A fixed-capacity FIFO of PCM samples: decoded packets of any duration in,
//! 20 ms frames out (and the reverse on the way out to a leg whose ptime is not 20 ms).

#[derive(Debug)]
pub struct PcmFifo {
    buf: Vec<i16>,
    head: usize,
    len: usize,
}

impl PcmFifo {
    /// A FIFO holding at most `capacity` samples; older samples are dropped on overflow.
    pub fn new(capacity: usize) -> PcmFifo {
        PcmFifo {
            buf: vec![0; capacity.max(1)],
            head: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Append samples; if they do not fit, the oldest are dropped.
    pub fn push(&mut self, samples: &[i16]) {
        let cap = self.buf.len();
        let samples = &samples[samples.len().saturating_sub(cap)..];
        let overflow = (self.len + samples.len()).saturating_sub(cap);
        if overflow > 0 {
            self.head = (self.head + overflow) % cap;
            self.len -= overflow;
        }
        // At most two contiguous copies: up to the end of the ring, then from its start.
        let tail = (self.head + self.len) % cap;
        let first = samples.len().min(cap - tail);
        self.buf[tail..tail + first].copy_from_slice(&samples[..first]);
        self.buf[..samples.len() - first].copy_from_slice(&samples[first..]);
        self.len += samples.len();
    }

    /// Fill `out` entirely if enough samples are queued; otherwise leave both untouched.
    pub fn pop(&mut self, out: &mut [i16]) -> bool {
        if self.len < out.len() {
            return false;
        }
        let cap = self.buf.len();
        let n = out.len();
        let first = n.min(cap - self.head);
        out[..first].copy_from_slice(&self.buf[self.head..self.head + first]);
        out[first..].copy_from_slice(&self.buf[..n - first]);
        self.head = (self.head + n) % cap;
        self.len -= n;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_around_the_ring() {
        let mut f = PcmFifo::new(5);
        let mut out = [0; 3];
        for round in 0..10i16 {
            f.push(&[round, round + 1, round + 2]);
            assert!(f.pop(&mut out));
            assert_eq!(out, [round, round + 1, round + 2]);
        }
        assert!(f.is_empty());
    }

    #[test]
    fn fifo_order_partial_and_overflow() {
        let mut f = PcmFifo::new(8);
        f.push(&[1, 2, 3]);
        let mut out = [0; 4];
        assert!(!f.pop(&mut out));
        f.push(&[4, 5]);
        assert!(f.pop(&mut out));
        assert_eq!(out, [1, 2, 3, 4]);
        f.push(&[6, 7, 8, 9, 10, 11, 12, 13]);
        // 5..13 is 9 samples into 8 slots: 5 dropped.
        assert_eq!(f.len(), 8);
        let mut out = [0; 8];
        assert!(f.pop(&mut out));
        assert_eq!(out, [6, 7, 8, 9, 10, 11, 12, 13]);
    }
}
