//! Exact de-duplication on normalized text: lower-cased, full-width ASCII folded, whitespace
//! collapsed; 128-bit BLAKE3 keys, so memory is 16 bytes per distinct record.

use std::collections::HashSet;

/// Normalizes text for duplicate detection.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        // Full-width ASCII (U+FF01..U+FF5E) → ASCII, ideographic space → space.
        let c = match c as u32 {
            0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            0x3000 => ' ',
            _ => c,
        };
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// Remembers what it has seen.
#[derive(Default)]
pub struct ExactDedup {
    seen: HashSet<[u8; 16]>,
}

impl ExactDedup {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if and only if these parts were not seen before (and remembers them).
    pub fn insert(&mut self, parts: &[&str]) -> bool {
        self.insert_key(Self::key(parts))
    }

    /// The 128-bit key of normalized parts (computable on any thread).
    pub fn key(parts: &[&str]) -> [u8; 16] {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(normalize(p).as_bytes());
            h.update(&[0x1f]);
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&h.finalize().as_bytes()[..16]);
        key
    }

    /// True if and only if `key` was not seen before (and remembers it).
    pub fn insert_key(&mut self, key: [u8; 16]) -> bool {
        self.seen.insert(key)
    }

    /// Number of distinct records seen.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True if and only if nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_ignores_case_width_and_spacing() {
        assert_eq!(normalize("  Hello\t  WORLD \n"), "hello world");
        assert_eq!(normalize("ＡＢＣ　１２３"), "abc 123");
        let mut d = ExactDedup::new();
        assert!(d.insert(&["What is  Rust?", ""]));
        assert!(!d.insert(&["what is rust?", ""]));
        assert!(d.insert(&["what is rust?", "context"]));
        assert!(d.insert(&["what is rust", ""]));
        // Part boundaries matter: ("ab", "c") is not ("a", "bc").
        assert!(d.insert(&["ab", "c"]));
        assert!(d.insert(&["a", "bc"]));
        assert_eq!(d.len(), 5);
    }
}
