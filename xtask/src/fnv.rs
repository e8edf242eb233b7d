//! FNV-1a, 64 bit: a stable, dependency-free hash for names and cache keys (not for security).
//! Used by the e2e image cache (content hash) and the local environment's fallback directory name.

/// FNV-1a, 64 bit: a stable content hash without a crypto dependency (a cache key, not a MAC).
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// A length-prefixed field, so that ("ab","c") and ("a","bc") differ.
    pub fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable_and_field_separated() {
        let mut a = Fnv::default();
        a.write(b"");
        assert_eq!(a.hex(), "cbf29ce484222325");
        let mut b = Fnv::default();
        b.write(b"a");
        assert_eq!(b.hex(), "af63dc4c8601ec8c");
        let (mut x, mut y) = (Fnv::default(), Fnv::default());
        x.field(b"ab");
        x.field(b"c");
        y.field(b"a");
        y.field(b"bc");
        assert_ne!(x.hex(), y.hex());
    }
}
