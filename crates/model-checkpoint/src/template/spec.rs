//! The format-spec mini-language:
//! `[[fill]align][sign]["z"]["#"]["0"][width][grouping]["." precision][type]`.

use super::error::{code_name, FormatError};

/// Where padding goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    /// `<`
    Left,
    /// `>`
    Right,
    /// `^`
    Center,
    /// `=`: between the sign (and prefix) and the digits.
    AfterSign,
}

impl Align {
    fn from_char(c: char) -> Option<Align> {
        match c {
            '<' => Some(Align::Left),
            '>' => Some(Align::Right),
            '^' => Some(Align::Center),
            '=' => Some(Align::AfterSign),
            _ => None,
        }
    }
}

/// The thousands separator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grouping {
    None,
    /// `,` every three digits.
    Comma,
    /// `_` every three digits (decimal) or four (`b`, `o`, `x`, `X`).
    Underscore {
        every: usize,
    },
}

impl Grouping {
    pub(crate) fn separator(self) -> Option<(char, usize)> {
        match self {
            Grouping::None => None,
            Grouping::Comma => Some((',', 3)),
            Grouping::Underscore { every } => Some(('_', every)),
        }
    }
}

/// A parsed format spec. `kind` is the presentation type, `'\0'` when none was given and the
/// value's type has no default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FormatSpec {
    pub fill: char,
    pub align: Align,
    pub sign: Option<char>,
    pub no_neg_zero: bool,
    pub alternate: bool,
    pub width: Option<usize>,
    pub grouping: Grouping,
    pub precision: Option<usize>,
    pub kind: char,
}

/// Reads a run of decimal digits at `*pos`, as CPython does, failing on overflow of a
/// signed 64-bit size. Returns `None` when no digit is there.
fn read_integer(chars: &[char], pos: &mut usize) -> Result<Option<usize>, FormatError> {
    let mut acc: i64 = 0;
    let mut seen = false;
    while let Some(d) = chars.get(*pos).and_then(|c| c.to_digit(10)) {
        let d = i64::from(d);
        if acc > (i64::MAX - d) / 10 {
            return Err(FormatError::value(
                "Too many decimal digits in format string",
            ));
        }
        acc = acc * 10 + d;
        seen = true;
        *pos += 1;
    }
    // `acc` is non-negative and below i64::MAX, so it fits a 64-bit usize.
    Ok(seen.then(|| usize::try_from(acc).unwrap_or(usize::MAX)))
}

/// Parses `spec` for a value whose Python type is `type_name`, with that type's default
/// presentation type and alignment. Errors carry Python's texts.
pub(crate) fn parse(
    spec: &str,
    type_name: &str,
    default_kind: char,
    default_align: Align,
) -> Result<FormatSpec, FormatError> {
    let chars: Vec<char> = spec.chars().collect();
    let end = chars.len();
    let mut pos = 0;
    let mut out = FormatSpec {
        fill: ' ',
        align: default_align,
        sign: None,
        no_neg_zero: false,
        alternate: false,
        width: None,
        grouping: Grouping::None,
        precision: None,
        kind: default_kind,
    };
    let mut fill_given = false;
    let mut align_given = false;

    if let Some(align) = chars.get(1).and_then(|&c| Align::from_char(c)) {
        out.align = align;
        out.fill = chars[0];
        fill_given = true;
        align_given = true;
        pos = 2;
    } else if let Some(align) = chars.first().and_then(|&c| Align::from_char(c)) {
        out.align = align;
        align_given = true;
        pos = 1;
    }
    if let Some(&c @ ('+' | '-' | ' ')) = chars.get(pos) {
        out.sign = Some(c);
        pos += 1;
    }
    if chars.get(pos) == Some(&'z') {
        out.no_neg_zero = true;
        pos += 1;
    }
    if chars.get(pos) == Some(&'#') {
        out.alternate = true;
        pos += 1;
    }
    // A bare leading zero means "pad with zeros after the sign", kept for backwards
    // compatibility; it does not override an explicit fill.
    if !fill_given && chars.get(pos) == Some(&'0') {
        out.fill = '0';
        if !align_given && default_align == Align::Right {
            out.align = Align::AfterSign;
        }
        pos += 1;
    }
    out.width = read_integer(&chars, &mut pos)?;

    if chars.get(pos) == Some(&',') {
        out.grouping = Grouping::Comma;
        pos += 1;
    }
    if chars.get(pos) == Some(&'_') {
        if out.grouping != Grouping::None {
            return Err(FormatError::value("Cannot specify both ',' and '_'."));
        }
        out.grouping = Grouping::Underscore { every: 3 };
        pos += 1;
    }
    if chars.get(pos) == Some(&',') && matches!(out.grouping, Grouping::Underscore { .. }) {
        return Err(FormatError::value("Cannot specify both ',' and '_'."));
    }

    if chars.get(pos) == Some(&'.') {
        pos += 1;
        out.precision = read_integer(&chars, &mut pos)?;
        if out.precision.is_none() {
            return Err(FormatError::value("Format specifier missing precision"));
        }
    }

    if end - pos > 1 {
        return Err(FormatError::Value(format!(
            "Invalid format specifier '{spec}' for object of type '{type_name}'"
        )));
    }
    if let Some(&c) = chars.get(pos) {
        out.kind = c;
    }

    if let Some((sep, _)) = out.grouping.separator() {
        match out.kind {
            'd' | 'e' | 'f' | 'g' | 'E' | 'G' | '%' | 'F' | '\0' => {}
            'b' | 'o' | 'x' | 'X' if sep == '_' => {
                out.grouping = Grouping::Underscore { every: 4 };
            }
            other => {
                return Err(FormatError::Value(format!(
                    "Cannot specify '{sep}' with '{}'.",
                    code_name(other)
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_part() {
        let s = parse("*^+z#012_.3f", "float", '\0', Align::Right).expect("valid");
        assert_eq!(s.fill, '*');
        assert_eq!(s.align, Align::Center);
        assert_eq!(s.sign, Some('+'));
        assert!(s.no_neg_zero && s.alternate);
        // An explicit fill wins over the leading zero.
        assert_eq!(s.width, Some(12));
        assert_eq!(s.grouping, Grouping::Underscore { every: 3 });
        assert_eq!(s.precision, Some(3));
        assert_eq!(s.kind, 'f');
    }

    #[test]
    fn leading_zero_means_sign_aware_padding_for_numbers_only() {
        assert_eq!(
            parse("05", "int", 'd', Align::Right).map(|s| s.align),
            Ok(Align::AfterSign)
        );
        assert_eq!(
            parse("05", "str", 's', Align::Left).map(|s| s.align),
            Ok(Align::Left)
        );
    }

    #[test]
    fn errors_use_python_texts() {
        let err = |spec: &str| {
            parse(spec, "int", 'd', Align::Right)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("abc"),
            "Invalid format specifier 'abc' for object of type 'int'"
        );
        assert_eq!(err("."), "Format specifier missing precision");
        assert_eq!(err(",_"), "Cannot specify both ',' and '_'.");
        assert_eq!(err("_,"), "Cannot specify both ',' and '_'.");
        assert_eq!(err(",x"), "Cannot specify ',' with 'x'.");
        assert_eq!(err(",é"), "Cannot specify ',' with '\\xe9'.");
        assert_eq!(
            err("99999999999999999999"),
            "Too many decimal digits in format string"
        );
    }
}
