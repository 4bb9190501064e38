//! Python's `str.format` for named fields: the engine behind `ModelCheckpoint`'s `filepath`.
//!
//! Keras builds checkpoint names with `filepath.format(epoch=epoch + 1, **logs)`, so a
//! template such as `weights.{epoch:02d}-{val_loss:.2f}.safetensors` means exactly what it
//! means in Python: the whole format-spec mini-language (fill, align, sign, `z`, `#`, `0`,
//! width, `,`/`_`, precision, types `b c d e E f F g G n o s x X %` and none), `{{`/`}}`,
//! conversions `!r`/`!s`/`!a`, nested fields in specs, Python's `repr` for floats without a
//! spec, correct rounding with ties to even, and Python's error texts.
//!
//! ```
//! use model_checkpoint::template::format;
//! use model_checkpoint::Value;
//!
//! let kwargs = [("epoch", Value::Int(7)), ("val_loss", Value::Float(0.125))];
//! assert_eq!(format("w.{epoch:02d}-{val_loss:.2f}", &kwargs)?, "w.07-0.12");
//! assert_eq!(format("{val_loss}", &kwargs)?, "0.125");
//! let err = format("{val_loss:d}", &kwargs).unwrap_err();
//! assert_eq!(err.to_string(), "Unknown format code 'd' for object of type 'float'");
//! # Ok::<(), model_checkpoint::template::FormatError>(())
//! ```

mod error;
mod float;
mod int;
mod markup;
mod number;
mod pattern;
mod pystr;
mod spec;

pub use error::FormatError;
pub use float::float_repr;
pub use pattern::Pattern;
pub(crate) use pystr::repr as python_repr;

use crate::Value;
use markup::{next_access, split_name, Access, AutoNumber, Head, Markup};
use spec::Align;

/// The largest width or precision a spec may ask for: 1 MiB. Python allows up to
/// `isize::MAX` and builds the string (raising `MemoryError` only when memory runs out).
/// A name longer than a file system takes is refused only when a file is about to be
/// created, as Keras's save fails then: Keras also formats names it never creates (a
/// best-only save that does not improve), so formatting itself allows far more than any
/// path, and refuses only what would be an unbounded allocation ([`FormatError::TooLong`]).
pub const MAX_FIELD_WIDTH: usize = 1 << 20;

/// The longest result [`format`] builds, in characters: 16 Mi.
pub const MAX_OUTPUT: usize = 1 << 24;

/// Formats `template` with keyword arguments, as Python's `template.format(**kwargs)`.
///
/// # Errors
///
/// A [`FormatError`] whose type and text are what Python would raise: a `KeyError` for a
/// field the arguments lack, a `ValueError` for malformed markup or a spec the value's type
/// rejects, an `IndexError` for positional fields. Beyond Python, a width or precision above
/// [`MAX_FIELD_WIDTH`] or a result above [`MAX_OUTPUT`] characters is a
/// [`FormatError::TooLong`] (Python's `MemoryError`), so that no template can exhaust memory.
pub fn format(template: &str, kwargs: &[(&str, Value)]) -> Result<String, FormatError> {
    let chars: Vec<char> = template.chars().collect();
    build(&chars, kwargs, 2, &mut AutoNumber::default())
}

/// Python's `format(value, spec)` for one value.
///
/// ```
/// use model_checkpoint::template::format_value;
/// use model_checkpoint::Value;
///
/// assert_eq!(format_value(&Value::Float(f64::INFINITY), ".5f")?, "inf");
/// assert_eq!(format_value(&Value::Int(1), ".5f")?, "1.00000");
/// # Ok::<(), model_checkpoint::template::FormatError>(())
/// ```
///
/// # Errors
///
/// Python's error when the spec is malformed or does not suit the value's type.
pub fn format_value(value: &Value, spec: &str) -> Result<String, FormatError> {
    render(&Object::from(*value), spec)
}

/// What a field resolves to: a log value, or the text a conversion made of it.
enum Object {
    Int(i64),
    Bool(bool),
    Float(f64),
    None,
    Str(String),
}

impl From<Value> for Object {
    fn from(v: Value) -> Self {
        match v {
            Value::Int(i) => Object::Int(i),
            Value::Bool(b) => Object::Bool(b),
            Value::Float(x) => Object::Float(x),
            Value::None => Object::None,
        }
    }
}

impl Object {
    fn type_name(&self) -> &'static str {
        match self {
            Object::Int(_) => "int",
            Object::Bool(_) => "bool",
            Object::Float(_) => "float",
            Object::None => "NoneType",
            Object::Str(_) => "str",
        }
    }

    fn str(&self) -> String {
        match self {
            Object::Int(i) => i.to_string(),
            Object::Bool(b) => (if *b { "True" } else { "False" }).to_owned(),
            Object::Float(x) => float_repr(*x),
            Object::None => "None".to_owned(),
            Object::Str(s) => s.clone(),
        }
    }

    fn repr(&self) -> String {
        match self {
            Object::Str(s) => pystr::repr(s),
            other => other.str(),
        }
    }

    /// The data attributes numbers have (`real`, `imag`, `numerator`, `denominator`).
    fn attribute(self, name: &[char]) -> Result<Object, FormatError> {
        let name: String = name.iter().collect();
        match (self, name.as_str()) {
            // A bool's numeric attributes are ints (`True.real` is `1`).
            (Object::Bool(b), "real" | "numerator") => Ok(Object::Int(i64::from(b))),
            (Object::Bool(_), "imag") => Ok(Object::Int(0)),
            (Object::Bool(_), "denominator") => Ok(Object::Int(1)),
            (Object::Int(i), "real" | "numerator") => Ok(Object::Int(i)),
            (Object::Int(_), "imag") => Ok(Object::Int(0)),
            (Object::Int(_), "denominator") => Ok(Object::Int(1)),
            (Object::Float(x), "real") => Ok(Object::Float(x)),
            (Object::Float(_), "imag") => Ok(Object::Float(0.0)),
            (obj, _) => Err(FormatError::Attribute(format!(
                "'{}' object has no attribute {}",
                obj.type_name(),
                pystr::repr(&name)
            ))),
        }
    }
}

fn build(
    template: &[char],
    kwargs: &[(&str, Value)],
    depth: u8,
    auto: &mut AutoNumber,
) -> Result<String, FormatError> {
    if depth == 0 {
        return Err(FormatError::value("Max string recursion exceeded"));
    }
    let mut out = String::new();
    let mut markup = Markup::new(template);
    while let Some(piece) = markup.next_piece()? {
        out.extend(piece.literal);
        let Some(field) = piece.field else { continue };

        let (head, mut rest) = split_name(field.name, auto)?;
        let mut object = match head {
            Head::Keyword(key) => {
                let key: String = key.iter().collect();
                match kwargs.iter().find(|(k, _)| *k == key) {
                    Some((_, v)) => Object::from(*v),
                    None => return Err(FormatError::MissingKey { key }),
                }
            }
            Head::Positional(i) => {
                return Err(FormatError::Index(format!(
                    "Replacement index {i} out of range for positional args tuple"
                )))
            }
        };
        while let Some(access) = next_access(&mut rest)? {
            object = match access {
                Access::Attribute(name) => object.attribute(name)?,
                Access::Item(_) => {
                    return Err(FormatError::Type(format!(
                        "'{}' object is not subscriptable",
                        object.type_name()
                    )))
                }
            };
        }
        object = match field.conversion {
            None => object,
            Some('r') => Object::Str(object.repr()),
            Some('s') => Object::Str(object.str()),
            // Numbers and None have ASCII reprs, so `ascii()` equals `repr()` here.
            Some('a') => Object::Str(object.repr()),
            Some(c) => {
                return Err(FormatError::Value(format!(
                    "Unknown conversion specifier {}",
                    if (c as u32) > 32 && (c as u32) < 127 {
                        c.to_string()
                    } else {
                        format!("\\x{:x}", c as u32)
                    }
                )))
            }
        };
        let spec: String = if field.spec_has_fields {
            build(field.spec, kwargs, depth - 1, auto)?
        } else {
            field.spec.iter().collect()
        };
        out.push_str(&render(&object, &spec)?);
        if out.len() > MAX_OUTPUT {
            return Err(too_long(format!(
                "the formatted text exceeds {MAX_OUTPUT} characters"
            )));
        }
    }
    Ok(out)
}

/// Python's `format(object, spec)`.
fn render(object: &Object, spec: &str) -> Result<String, FormatError> {
    if spec.is_empty() {
        return Ok(object.str());
    }
    let parsed = match object {
        Object::Int(_) => spec::parse(spec, "int", 'd', Align::Right)?,
        // Python formats a bool as its int under any spec but the empty one.
        Object::Bool(_) => spec::parse(spec, "bool", 'd', Align::Right)?,
        Object::Float(_) => spec::parse(spec, "float", '\0', Align::Right)?,
        Object::Str(_) => spec::parse(spec, "str", 's', Align::Left)?,
        Object::None => {
            return Err(FormatError::Type(
                "unsupported format string passed to NoneType.__format__".to_owned(),
            ))
        }
    };
    let over = |n: Option<usize>| n.is_some_and(|n| n > MAX_FIELD_WIDTH);
    if over(parsed.width) || over(parsed.precision) {
        // Whatever Python itself would reject (a precision an int cannot take, one past
        // `i32::MAX` for a float) keeps Python's error: try the spec with sizes that
        // allocate nothing much, and refuse the real ones only if that succeeds.
        let mut probe = parsed.clone();
        probe.width = probe.width.map(|w| w.min(1));
        probe.precision = probe
            .precision
            .map(|p| if p > i32::MAX as usize { p } else { p.min(1) });
        render_parsed(object, &probe)?;
        return Err(too_long(format!(
            "format spec {:?} asks for more than {MAX_FIELD_WIDTH} characters",
            crate::text::shorten(spec, 100)
        )));
    }
    render_parsed(object, &parsed)
}

fn render_parsed(object: &Object, spec: &spec::FormatSpec) -> Result<String, FormatError> {
    match object {
        Object::Int(i) => int::format_int(*i, spec, "int"),
        Object::Bool(b) => int::format_int(i64::from(*b), spec, "bool"),
        Object::Float(x) => float::format_float(*x, spec, "float"),
        Object::Str(s) => pystr::format_str(s, spec),
        Object::None => Err(FormatError::Type(
            "unsupported format string passed to NoneType.__format__".to_owned(),
        )),
    }
}

fn too_long(message: String) -> FormatError {
    FormatError::TooLong(message)
}

#[cfg(test)]
mod tests;
