//! Text helpers: how values read from outside are quoted in messages, and digests as hex.

/// `s` when it is at most `max` characters, else its first and last characters around a note
/// of how many were left out: an oversized value read from outside (a name, a template, a
/// metadata field) must not turn an error message into megabytes.
pub fn shorten(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_owned();
    }
    let head = max * 2 / 3;
    let tail = max - head;
    let start: String = s.chars().take(head).collect();
    let end: String = s.chars().skip(count - tail).collect();
    format!("{start}…[{} characters]…{end}", count - head - tail)
}

/// `bytes` as lowercase hex, two digits a byte (digests in names, indexes and metadata).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_two_lowercase_digits_a_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::hex(&bytes), expected);
        assert_eq!(super::hex(&[]), "");
    }

    #[test]
    fn long_values_keep_both_ends() {
        assert_eq!(super::shorten("abc", 10), "abc");
        let long = "x".repeat(1000) + "END";
        let short = super::shorten(&long, 30);
        assert!(
            short.ends_with("END") && short.contains("[973 characters]"),
            "{short}"
        );
    }
}
