//! Laying out a formatted number: sign, prefix, padding, thousands grouping, as CPython's
//! `calc_number_widths` and `fill_number` do.

use super::spec::{Align, FormatSpec};

/// A number already rendered to text, split into the parts that padding and grouping treat
/// differently.
pub(crate) struct NumberParts<'a> {
    pub negative: bool,
    /// `0x`, `0o`, `0b` (alternate form), else empty.
    pub prefix: &'a str,
    /// The integer digits, which grouping and zero-padding apply to.
    pub digits: &'a str,
    /// Whether a decimal point follows the digits.
    pub decimal: bool,
    /// Everything after the decimal point (or after the digits): fraction, exponent, `%`.
    pub remainder: &'a str,
}

/// Joins the parts under the spec's sign, width, fill, alignment and grouping rules.
/// `upper` upper-cases the prefix and digits (the `X` type).
pub(crate) fn lay_out(n: &NumberParts<'_>, spec: &FormatSpec, upper: bool) -> String {
    let sign = match spec.sign {
        Some('+') => Some(if n.negative { '-' } else { '+' }),
        Some(' ') => Some(if n.negative { '-' } else { ' ' }),
        _ => n.negative.then_some('-'),
    };
    let width = spec.width.map_or(-1, to_i64);
    let non_digit = i64::from(sign.is_some())
        + to_i64(n.prefix.chars().count())
        + i64::from(n.decimal)
        + to_i64(n.remainder.chars().count());
    // Only "0=" (which a bare leading zero implies) pads inside the digits, so that the
    // padding zeros are grouped like digits: format(1234, "010,") == "00,001,234".
    let min_width = if spec.fill == '0' && spec.align == Align::AfterSign {
        width - non_digit
    } else {
        0
    };
    let grouped = if n.digits.is_empty() {
        String::new()
    } else {
        group_digits(n.digits, min_width, spec.grouping.separator())
    };
    let padding = (width - non_digit - to_i64(grouped.chars().count())).max(0);
    let padding = usize::try_from(padding).unwrap_or(0);
    let (left, inner, right) = match spec.align {
        Align::Left => (0, 0, padding),
        Align::Center => (padding / 2, 0, padding - padding / 2),
        Align::AfterSign => (0, padding, 0),
        Align::Right => (padding, 0, 0),
    };

    let mut out = String::new();
    out.extend(std::iter::repeat_n(spec.fill, left));
    out.extend(sign);
    push_cased(&mut out, n.prefix, upper);
    out.extend(std::iter::repeat_n(spec.fill, inner));
    push_cased(&mut out, &grouped, upper);
    if n.decimal {
        out.push('.');
    }
    out.push_str(n.remainder);
    out.extend(std::iter::repeat_n(spec.fill, right));
    out
}

fn push_cased(out: &mut String, text: &str, upper: bool) {
    if upper {
        out.push_str(&text.to_ascii_uppercase());
    } else {
        out.push_str(text);
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Inserts separators every `every` digits from the right and pads with zeros up to
/// `min_width`, never starting with a separator (so the result may be one wider than asked).
/// This follows CPython's `_PyUnicode_InsertThousandsGrouping`.
fn group_digits(digits: &str, min_width: i64, separator: Option<(char, usize)>) -> String {
    let digits: Vec<char> = digits.chars().collect();
    let mut min_width = min_width.max(0);
    let mut remaining = to_i64(digits.len());
    // Built right to left, reversed at the end.
    let mut out: Vec<char> = Vec::new();
    let mut use_separator = false;
    let mut finished = false;

    let fill = |out: &mut Vec<char>, remaining: i64, len: i64, sep: Option<char>| {
        let zeros = (len - remaining).max(0);
        let take = remaining.min(len).max(0);
        if let Some(s) = sep {
            out.push(s);
        }
        let end = usize::try_from(remaining).unwrap_or(0);
        let start = end.saturating_sub(usize::try_from(take).unwrap_or(0));
        out.extend(digits[start..end].iter().rev());
        out.extend(std::iter::repeat_n(
            '0',
            usize::try_from(zeros).unwrap_or(0),
        ));
        take
    };

    if let Some((sep, every)) = separator {
        let every = to_i64(every);
        loop {
            let len = every.min(remaining.max(min_width).max(1));
            let taken = fill(&mut out, remaining, len, use_separator.then_some(sep));
            use_separator = true;
            remaining -= taken;
            min_width -= len;
            if remaining <= 0 && min_width <= 0 {
                finished = true;
                break;
            }
            min_width -= 1;
        }
    }
    if !finished {
        let len = remaining.max(min_width).max(1);
        let sep = separator.map(|(s, _)| s).filter(|_| use_separator);
        fill(&mut out, remaining, len, sep);
    }
    out.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_pads_with_grouped_zeros() {
        assert_eq!(group_digits("1234", 10, Some((',', 3))), "00,001,234");
        assert_eq!(group_digits("1234", 8, Some((',', 3))), "0,001,234");
        assert_eq!(group_digits("1234567", 0, Some((',', 3))), "1,234,567");
        assert_eq!(group_digits("11111111", 0, Some(('_', 4))), "1111_1111");
        assert_eq!(group_digits("12", 5, None), "00012");
        assert_eq!(group_digits("123", 0, None), "123");
    }
}
