//! Floats as Python formats them: `repr`, and the `e`, `f`, `g`, `%` and no-type
//! presentations, with correct rounding of the exact binary value (ties to even).
//!
//! Rust's own formatting produces the exact, correctly rounded decimal digits; this module
//! only places them the way CPython's `format_float_short` does.

use super::error::{code_name, FormatError};
use super::number::{lay_out, NumberParts};
use super::spec::FormatSpec;

/// More significant digits than any double's exact decimal value has (767).
const EXACT_SIGNIFICANT: usize = 800;
/// More digits after the point than any double's exact decimal value has (1,074).
const EXACT_FIXED: usize = 1100;

/// Decimal digits of a finite, non-negative double: value = 0.DIGITS × 10^point. No trailing
/// zeros; zero is `"0"` with point 1.
struct Digits {
    digits: Vec<u8>,
    point: i64,
}

impl Digits {
    fn new(mut digits: Vec<u8>, mut point: i64) -> Digits {
        let lead = digits.iter().take_while(|&&d| d == b'0').count();
        if lead == digits.len() {
            return Digits {
                digits: vec![b'0'],
                point: 1,
            };
        }
        digits.drain(..lead);
        point -= i64::try_from(lead).unwrap_or(0);
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        Digits { digits, point }
    }

    /// Parses Rust's `{:e}` output, such as `1.2345e4` or `5e-324`.
    fn from_scientific(text: &str) -> Digits {
        let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
        let exponent: i64 = exponent.parse().unwrap_or(0);
        let digits = mantissa.bytes().filter(u8::is_ascii_digit).collect();
        Digits::new(digits, exponent + 1)
    }

    /// The shortest digits that round-trip (Python's `repr`).
    fn shortest(x: f64) -> Digits {
        let shortest = format!("{x:e}");
        // When two shortest candidates are equally close to `x`, Rust rounds the tie up and
        // Python to even; the correctly rounded string of the same length is Python's,
        // provided it still reads back as `x`.
        let len = shortest
            .split('e')
            .next()
            .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
        let rounded = format!("{:.*e}", len.saturating_sub(1), x);
        if rounded.parse::<f64>().ok() == Some(x) {
            Digits::from_scientific(&rounded)
        } else {
            Digits::from_scientific(&shortest)
        }
    }

    /// `n` significant digits, correctly rounded (`n >= 1`).
    fn significant(x: f64, n: usize) -> Digits {
        // A double's exact decimal value has at most 767 significant digits: past them every
        // digit is 0 (and Rust's formatting takes precisions up to 65,535 only).
        let n = n.min(EXACT_SIGNIFICANT);
        Digits::from_scientific(&format!("{:.*e}", n.saturating_sub(1), x))
    }

    /// `n` digits after the point, correctly rounded.
    fn fixed(x: f64, n: usize) -> Digits {
        // Past 1,074 digits after the point a double's exact value has only zeros.
        let n = n.min(EXACT_FIXED);
        let text = format!("{x:.n$}");
        let (int_part, frac) = text.split_once('.').unwrap_or((&text, ""));
        let digits = int_part.bytes().chain(frac.bytes()).collect();
        Digits::new(digits, i64::try_from(int_part.len()).unwrap_or(0))
    }

    fn is_zero(&self) -> bool {
        self.digits == [b'0']
    }
}

/// The presentation after Python's `PyOS_double_to_string` has normalised it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Code {
    Exponent,
    Fixed,
    General,
    Repr,
}

struct Flags {
    add_dot_0: bool,
    alternate: bool,
    no_neg_zero: bool,
    upper: bool,
}

/// Python's `repr(x)` for a float: `0.1`, `3.0`, `1e-07`, `1e+16`, `nan`, `-inf`.
pub fn float_repr(x: f64) -> String {
    let flags = Flags {
        add_dot_0: true,
        alternate: false,
        no_neg_zero: false,
        upper: false,
    };
    double_to_string(x, Code::Repr, 0, &flags)
}

/// CPython's `PyOS_double_to_string` with `format_float_short`: the text of `x` in the given
/// presentation, including a leading `-` when negative.
fn double_to_string(x: f64, code: Code, precision: usize, flags: &Flags) -> String {
    if x.is_nan() {
        // Python never writes a sign for NaN.
        return if flags.upper { "NAN" } else { "nan" }.to_owned();
    }
    if x.is_infinite() {
        let inf = if flags.upper { "INF" } else { "inf" };
        return if x < 0.0 {
            format!("-{inf}")
        } else {
            inf.to_owned()
        };
    }
    let abs = x.abs();
    let (digits, code, precision) = match code {
        Code::Exponent => (Digits::significant(abs, precision + 1), code, precision + 1),
        Code::Fixed => (Digits::fixed(abs, precision), code, precision),
        Code::General => {
            let p = precision.max(1);
            (Digits::significant(abs, p), code, p)
        }
        Code::Repr => (Digits::shortest(abs), code, 0),
    };
    let negative = x.is_sign_negative() && !(flags.no_neg_zero && digits.is_zero());
    let body = place_digits(
        &digits,
        code,
        i64::try_from(precision).unwrap_or(i64::MAX),
        flags,
    );
    if negative {
        format!("-{body}")
    } else {
        body
    }
}

/// Places the digits around a decimal point and adds an exponent where the presentation
/// asks for one; the layout of CPython's `format_float_short`.
fn place_digits(d: &Digits, code: Code, precision: i64, flags: &Flags) -> String {
    let digits_len = i64::try_from(d.digits.len()).unwrap_or(0);
    let mut point = d.point;
    let mut end = digits_len;
    let mut use_exp = false;
    match code {
        Code::Exponent => {
            use_exp = true;
            end = precision;
        }
        Code::Fixed => end = point.saturating_add(precision),
        Code::General => {
            let limit = if flags.add_dot_0 {
                precision - 1
            } else {
                precision
            };
            use_exp = point <= -4 || point > limit;
            if flags.alternate {
                end = precision;
            }
        }
        Code::Repr => use_exp = point <= -4 || point > 16,
    }
    let mut exponent = 0;
    if use_exp {
        exponent = point - 1;
        point = 1;
    }
    let start = if point <= 0 { point - 1 } else { 0 };
    end = if !use_exp && flags.add_dot_0 {
        end.max(point + 1)
    } else {
        end.max(point)
    };

    let zeros = |n: i64| "0".repeat(usize::try_from(n).unwrap_or(0));
    let text =
        |range: std::ops::Range<usize>| String::from_utf8_lossy(&d.digits[range]).into_owned();
    let mut out = String::new();
    if point <= 0 {
        out.push_str(&zeros(point - start));
        out.push('.');
        out.push_str(&zeros(-point));
    } else {
        out.push_str(&zeros(-start));
    }
    if 0 < point && point <= digits_len {
        let split = usize::try_from(point).unwrap_or(0);
        out.push_str(&text(0..split));
        out.push('.');
        out.push_str(&text(split..d.digits.len()));
    } else {
        out.push_str(&text(0..d.digits.len()));
    }
    if digits_len < point {
        out.push_str(&zeros(point - digits_len));
        out.push('.');
        out.push_str(&zeros(end - point));
    } else {
        out.push_str(&zeros(end - digits_len));
    }
    if out.ends_with('.') && !flags.alternate {
        out.pop();
    }
    if use_exp {
        out.push(if flags.upper { 'E' } else { 'e' });
        out.push_str(&format!("{exponent:+03}"));
    }
    out
}

/// Python's `format(x, spec)` for a float (also reached by ints under `e`, `f`, `g`, `%`).
pub(crate) fn format_float(
    x: f64,
    spec: &FormatSpec,
    type_name: &str,
) -> Result<String, FormatError> {
    let mut kind = spec.kind;
    if !matches!(kind, '\0' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G' | 'n' | '%') {
        return Err(FormatError::Value(format!(
            "Unknown format code '{}' for object of type '{type_name}'",
            code_name(kind)
        )));
    }
    if spec.precision.is_some_and(|p| p > i32::MAX as usize) {
        return Err(FormatError::value("precision too big"));
    }
    let mut flags = Flags {
        add_dot_0: false,
        alternate: spec.alternate,
        no_neg_zero: spec.no_neg_zero,
        upper: false,
    };
    let mut default_precision = 6;
    if kind == '\0' {
        // No type: repr without a precision, else 'g' keeping at least one decimal.
        flags.add_dot_0 = true;
        kind = 'r';
        default_precision = 0;
    }
    if kind == 'n' {
        kind = 'g';
    }
    let mut value = x;
    let percent = kind == '%';
    if percent {
        kind = 'f';
        value *= 100.0;
    }
    let precision = match spec.precision {
        None => default_precision,
        Some(p) => {
            if kind == 'r' {
                kind = 'g';
            }
            p
        }
    };
    flags.upper = kind.is_ascii_uppercase();
    let code = match kind.to_ascii_lowercase() {
        'e' => Code::Exponent,
        'f' => Code::Fixed,
        'g' => Code::General,
        _ => Code::Repr,
    };
    let mut text = double_to_string(value, code, precision, &flags);
    if percent {
        text.push('%');
    }
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let digit_end = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    let (digits, rest) = body.split_at(digit_end);
    let (decimal, remainder) = match rest.strip_prefix('.') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let parts = NumberParts {
        negative,
        prefix: "",
        digits,
        decimal,
        remainder,
    };
    Ok(lay_out(&parts, spec, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python() {
        let cases = [
            (0.1, "0.1"),
            (3.0, "3.0"),
            (1e-7, "1e-07"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (12345.678, "12345.678"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (f64::from(0.1f32), "0.10000000149011612"),
            (5e-324, "5e-324"),
            // An exact tie between two shortest candidates goes to the even digit.
            (f64::from_bits(0x4062_a8b2_4000_0000), "149.27175903320312"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for (x, want) in cases {
            assert_eq!(float_repr(x), want, "repr({x:?})");
        }
    }
}
