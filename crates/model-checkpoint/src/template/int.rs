//! Ints as Python formats them: `b c d o x X n`, and `e f g %` through float.

use super::error::{code_name, FormatError};
use super::float::format_float;
use super::number::{lay_out, NumberParts};
use super::spec::FormatSpec;

/// Python's `format(v, spec)` for an int, or for a bool (`type_name`) with `v` its int.
pub(crate) fn format_int(
    v: i64,
    spec: &FormatSpec,
    type_name: &str,
) -> Result<String, FormatError> {
    match spec.kind {
        'b' | 'c' | 'd' | 'o' | 'x' | 'X' | 'n' => {}
        // Python converts the int to a float for these; an i64 always fits a double.
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' | '%' => return format_float(v as f64, spec, type_name),
        other => {
            return Err(FormatError::Value(format!(
                "Unknown format code '{}' for object of type '{type_name}'",
                code_name(other)
            )))
        }
    }
    if spec.precision.is_some() {
        return Err(FormatError::value(
            "Precision not allowed in integer format specifier",
        ));
    }
    if spec.no_neg_zero {
        return Err(FormatError::value(
            "Negative zero coercion (z) not allowed in integer format specifier",
        ));
    }
    if spec.kind == 'c' {
        return format_char(v, spec);
    }
    let magnitude = v.unsigned_abs();
    let (digits, prefix) = match spec.kind {
        'b' => (format!("{magnitude:b}"), "0b"),
        'o' => (format!("{magnitude:o}"), "0o"),
        'x' | 'X' => (format!("{magnitude:x}"), "0x"),
        _ => (magnitude.to_string(), ""),
    };
    let parts = NumberParts {
        negative: v < 0,
        prefix: if spec.alternate { prefix } else { "" },
        digits: &digits,
        decimal: false,
        remainder: "",
    };
    Ok(lay_out(&parts, spec, spec.kind == 'X'))
}

fn format_char(v: i64, spec: &FormatSpec) -> Result<String, FormatError> {
    if spec.sign.is_some() {
        return Err(FormatError::value(
            "Sign not allowed with integer format specifier 'c'",
        ));
    }
    if spec.alternate {
        return Err(FormatError::value(
            "Alternate form (#) not allowed with integer format specifier 'c'",
        ));
    }
    if !(0..=0x10ffff).contains(&v) {
        return Err(FormatError::Overflow(
            "%c arg not in range(0x110000)".to_owned(),
        ));
    }
    // Surrogates are valid Python characters but not Rust ones; they cannot name a file.
    let c = u32::try_from(v)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or(char::REPLACEMENT_CHARACTER);
    let text = c.to_string();
    let parts = NumberParts {
        negative: false,
        prefix: "",
        digits: "",
        decimal: false,
        remainder: &text,
    };
    Ok(lay_out(&parts, spec, false))
}
