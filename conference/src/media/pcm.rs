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
        let mut tail = (self.head + self.len) % cap;
        for &s in samples {
            self.buf[tail] = s;
            tail = (tail + 1) % cap;
        }
        self.len += samples.len();
    }

    /// Fill `out` entirely if enough samples are queued; otherwise leave both untouched.
    pub fn pop(&mut self, out: &mut [i16]) -> bool {
        if self.len < out.len() {
            return false;
        }
        let cap = self.buf.len();
        for o in out.iter_mut() {
            *o = self.buf[self.head];
            self.head = (self.head + 1) % cap;
        }
        self.len -= out.len();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
