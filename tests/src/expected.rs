//! Expected outputs computed independently of the product.

use crate::s3::{Digest, DigestBuilder};

/// Bytes of the `yes` part of the `big_output` fixture.
pub const BIG_OUTPUT_YES_BYTES: u64 = 200_000_000;
/// Length of the final newline-less line of `x`s of the `big_output` fixture.
pub const BIG_OUTPUT_LAST_LINE_BYTES: u64 = 10 * 1024 * 1024;
const BIG_OUTPUT_YES_LINE: &[u8] = b"fast-flow big output line 0123456789\n";

/// Length and SHA-256 of what `tests/fixtures/pipelines/big_output` prints:
/// `yes '<line>' | head -c 200000000`, then 10 MiB of `x` without a newline.
/// Generated in chunks, so the 210 MB are never held in memory.
pub fn big_output_digest() -> Digest {
    let mut digest = DigestBuilder::default();
    let chunk: Vec<u8> = BIG_OUTPUT_YES_LINE
        .iter()
        .copied()
        .cycle()
        .take(BIG_OUTPUT_YES_LINE.len() * 28_000) // ~1 MB, whole lines
        .collect();
    let mut remaining = BIG_OUTPUT_YES_BYTES as usize;
    while remaining > 0 {
        let n = remaining.min(chunk.len());
        digest.update(&chunk[..n]);
        remaining -= n;
    }
    let xs = vec![b'x'; 1024 * 1024];
    for _ in 0..BIG_OUTPUT_LAST_LINE_BYTES / xs.len() as u64 {
        digest.update(&xs);
    }
    digest.finish()
}

/// Splits a log into its lines the way the SSE stream reports them: each line
/// without its `\n`, and a final line without a newline still counts.
pub fn log_lines(log: &[u8]) -> Vec<String> {
    if log.is_empty() {
        return Vec::new();
    }
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    body.split(|b| *b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_handles_trailing_newline_and_unterminated_last_line() {
        assert_eq!(log_lines(b""), Vec::<String>::new());
        assert_eq!(log_lines(b"a\nb\n"), vec!["a", "b"]);
        assert_eq!(log_lines(b"a\n\nb"), vec!["a", "", "b"]);
        assert_eq!(log_lines(b"\n"), vec![""]);
    }

    #[test]
    fn digest_of_a_small_sequence_matches_sha256_of_whole_bytes() {
        use sha2::{Digest as _, Sha256};
        let mut builder = DigestBuilder::default();
        builder.update(b"hello ");
        builder.update(b"world");
        let digest = builder.finish();
        assert_eq!(digest.len, 11);
        assert_eq!(digest.sha256, hex::encode(Sha256::digest(b"hello world")));
    }
}

#[cfg(test)]
mod big_output_tests {
    /// Measured once with GNU coreutils: `sh -c "<the fixture's command>" | sha256sum`.
    const SHELL_SHA256: &str = "eef91aa12adb084165871f8d418aef04e582e9bd917636e3cf6fb6117f5b9517";

    #[test]
    fn big_output_digest_matches_what_the_shell_prints() {
        let digest = super::big_output_digest();
        assert_eq!(digest.len, 210_485_760);
        assert_eq!(digest.sha256, SHELL_SHA256);
    }
}
