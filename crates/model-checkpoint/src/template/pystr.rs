//! Python's `repr` of strings, and `format(str, spec)`.

use super::error::{code_name, FormatError};
use super::spec::{Align, FormatSpec};

/// Python's `repr(s)`: single quotes unless the text holds a single quote and no double
/// quote, with backslash escapes for the quote, backslash and unprintable characters.
pub(crate) fn repr(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (c as u32) < 0x7f => out.push(c),
            c if !is_printable(c) => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// An approximation of Python's `str.isprintable` for non-ASCII characters: controls,
/// separators other than the plain space, and format characters are not printable.
fn is_printable(c: char) -> bool {
    let n = c as u32;
    !(c.is_control()
        || (0x80..=0xa0).contains(&n)
        || n == 0xad
        || (0x2000..=0x200f).contains(&n)
        || (0x2028..=0x202f).contains(&n)
        || (0x205f..=0x206f).contains(&n)
        || n == 0x3000
        || n == 0xfeff
        || (0xd800..=0xdfff).contains(&n)
        || (0xfff9..=0xfffb).contains(&n))
}

/// Python's `format(s, spec)` for a `str` whose spec has already been parsed.
pub(crate) fn format_str(s: &str, spec: &FormatSpec) -> Result<String, FormatError> {
    if spec.kind != 's' {
        return Err(FormatError::Value(format!(
            "Unknown format code '{}' for object of type 'str'",
            code_name(spec.kind)
        )));
    }
    match spec.sign {
        Some(' ') => {
            return Err(FormatError::value(
                "Space not allowed in string format specifier",
            ))
        }
        Some(_) => {
            return Err(FormatError::value(
                "Sign not allowed in string format specifier",
            ))
        }
        None => {}
    }
    if spec.no_neg_zero {
        return Err(FormatError::value(
            "Negative zero coercion (z) not allowed in string format specifier",
        ));
    }
    if spec.alternate {
        return Err(FormatError::value(
            "Alternate form (#) not allowed in string format specifier",
        ));
    }
    if spec.align == Align::AfterSign {
        return Err(FormatError::value(
            "'=' alignment not allowed in string format specifier",
        ));
    }
    let text: String = match spec.precision {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_owned(),
    };
    Ok(pad(&text, spec))
}

/// Pads `text` to the spec's width with its fill character and alignment (`=` never reaches
/// here).
pub(crate) fn pad(text: &str, spec: &FormatSpec) -> String {
    let len = text.chars().count();
    let width = spec.width.unwrap_or(0);
    if width <= len {
        return text.to_owned();
    }
    let total = width - len;
    let (left, right) = match spec.align {
        Align::Left => (0, total),
        Align::Center => (total / 2, total - total / 2),
        Align::Right | Align::AfterSign => (total, 0),
    };
    let mut out = String::with_capacity(text.len() + total);
    out.extend(std::iter::repeat_n(spec.fill, left));
    out.push_str(text);
    out.extend(std::iter::repeat_n(spec.fill, right));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_picks_quotes_as_python_does() {
        assert_eq!(repr("foo"), "'foo'");
        assert_eq!(repr("it's"), "\"it's\"");
        assert_eq!(repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(repr("tab\there\\"), "'tab\\there\\\\'");
        assert_eq!(repr("é"), "'é'");
        assert_eq!(repr("\u{200b}"), "'\\u200b'");
    }
}
