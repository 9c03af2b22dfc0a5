//! Length + SHA-256 of a byte sequence, computed while streaming.

use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Digest {
    pub len: u64,
    pub sha256: String,
}

#[derive(Default)]
pub struct DigestBuilder {
    len: u64,
    hasher: Sha256,
}

impl DigestBuilder {
    pub fn update(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        self.hasher.update(chunk);
    }

    pub fn finish(self) -> Digest {
        Digest { len: self.len, sha256: hex::encode(self.hasher.finalize()) }
    }
}

/// What `yes <LINE> | head -c <len>` prints: the expected archive of the big-output run.
pub fn repeated_line(line: &str, len: u64) -> Digest {
    let mut pattern = Vec::with_capacity(64 * 1024);
    while pattern.len() < 64 * 1024 - line.len() - 1 {
        pattern.extend_from_slice(line.as_bytes());
        pattern.push(b'\n');
    }
    let mut digest = DigestBuilder::default();
    let mut left = len;
    while left > 0 {
        let take = left.min(pattern.len() as u64) as usize;
        digest.update(&pattern[..take]);
        left -= take as u64;
    }
    digest.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_line_matches_a_direct_hash() {
        let line = "abc";
        let direct: Vec<u8> = "abc\n".repeat(100_000).into_bytes()[..250_001].to_vec();
        let mut builder = DigestBuilder::default();
        builder.update(&direct);
        assert_eq!(repeated_line(line, 250_001), builder.finish());
    }
}
