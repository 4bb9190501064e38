//! Text helpers for messages: how values read from outside are quoted.

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

#[cfg(test)]
mod tests {
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
