//! Random tokens from the kernel (`/dev/urandom`): secrets of the local environment, lock tokens,
//! throwaway test keys.

use std::io::Read;

use crate::error::{Error, Result};

/// Hex of `n` random bytes (exit 3 when `/dev/urandom` cannot be read).
pub fn hex(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::unavailable(format!("cannot read /dev/urandom: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A 48-character hex secret.
pub fn secret() -> Result<String> {
    hex(24)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_hex_of_the_length_asked_and_differ() {
        let a = super::secret().unwrap();
        assert_eq!(a.len(), 48);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, super::secret().unwrap());
        assert_eq!(super::hex(3).unwrap().len(), 6);
    }
}
