//! Walking a template the way CPython's `MarkupIterator` does: literal text, `{{`/`}}`, and
//! replacement fields `{name[.attr|[key]]*[!conv][:spec]}`, with Python's error texts.

use super::error::FormatError;

/// One replacement field, as written.
pub(crate) struct Field<'a> {
    pub name: &'a [char],
    pub conversion: Option<char>,
    pub spec: &'a [char],
    /// The spec holds nested fields (`{x:{width}}`) to be formatted first.
    pub spec_has_fields: bool,
}

/// Literal text, then possibly a field.
pub(crate) struct Piece<'a> {
    pub literal: &'a [char],
    pub field: Option<Field<'a>>,
}

pub(crate) struct Markup<'a> {
    s: &'a [char],
    pos: usize,
}

impl<'a> Markup<'a> {
    pub(crate) fn new(s: &'a [char]) -> Self {
        Markup { s, pos: 0 }
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.s.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// The next piece, `None` at the end, or the first syntax error.
    pub(crate) fn next_piece(&mut self) -> Result<Option<Piece<'a>>, FormatError> {
        let s = self.s;
        if self.pos >= s.len() {
            return Ok(None);
        }
        let start = self.pos;
        let mut c = '\0';
        let mut markup_follows = false;
        while let Some(ch) = self.next_char() {
            c = ch;
            if ch == '{' || ch == '}' {
                markup_follows = true;
                break;
            }
        }
        let at_end = self.pos >= s.len();
        let mut len = self.pos - start;
        let next = s.get(self.pos).copied();
        if c == '}' && (at_end || next != Some('}')) {
            return Err(FormatError::value(
                "Single '}' encountered in format string",
            ));
        }
        if at_end && c == '{' {
            return Err(FormatError::value(
                "Single '{' encountered in format string",
            ));
        }
        if !at_end {
            if next == Some(c) {
                // A doubled brace: the literal keeps one, and no field follows.
                self.pos += 1;
                markup_follows = false;
            } else {
                len -= 1;
            }
        }
        let literal = &s[start..start + len];
        if !markup_follows {
            return Ok(Some(Piece {
                literal,
                field: None,
            }));
        }
        let field = self.parse_field()?;
        Ok(Some(Piece {
            literal,
            field: Some(field),
        }))
    }

    fn parse_field(&mut self) -> Result<Field<'a>, FormatError> {
        let s = self.s;
        let name_start = self.pos;
        let mut c = '\0';
        while let Some(ch) = self.next_char() {
            c = ch;
            match ch {
                '{' => return Err(FormatError::value("unexpected '{' in field name")),
                // A key in brackets may hold ':', '!' or '}'.
                '[' => {
                    while self.s.get(self.pos).is_some_and(|&b| b != ']') {
                        self.pos += 1;
                    }
                }
                '}' | ':' | '!' => break,
                _ => {}
            }
        }
        let name = &s[name_start..self.pos.saturating_sub(1).max(name_start)];
        if c != '!' && c != ':' {
            if c != '}' {
                return Err(FormatError::value("expected '}' before end of string"));
            }
            return Ok(Field {
                name,
                conversion: None,
                spec: &[],
                spec_has_fields: false,
            });
        }
        let mut conversion = None;
        if c == '!' {
            let Some(conv) = self.next_char() else {
                return Err(FormatError::value(
                    "end of string while looking for conversion specifier",
                ));
            };
            conversion = Some(conv);
            if let Some(after) = self.next_char() {
                if after == '}' {
                    return Ok(Field {
                        name,
                        conversion,
                        spec: &[],
                        spec_has_fields: false,
                    });
                }
                if after != ':' {
                    return Err(FormatError::value(
                        "expected ':' after conversion specifier",
                    ));
                }
            }
        }
        let spec_start = self.pos;
        let mut depth = 1;
        let mut spec_has_fields = false;
        while let Some(ch) = self.next_char() {
            match ch {
                '{' => {
                    spec_has_fields = true;
                    depth += 1;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(Field {
                            name,
                            conversion,
                            spec: &s[spec_start..self.pos - 1],
                            spec_has_fields,
                        });
                    }
                }
                _ => {}
            }
        }
        Err(FormatError::value("unmatched '{' in format spec"))
    }
}

/// How `{}` and `{0}` fields have been numbered so far in one call.
#[derive(Default)]
pub(crate) struct AutoNumber {
    state: Option<bool>, // Some(true): automatic, Some(false): manual
    next: usize,
}

/// A field name split into its first part (a keyword or a positional index) and the
/// attribute/index accesses after it.
pub(crate) enum Head<'a> {
    Keyword(&'a [char]),
    Positional(usize),
}

/// Reads a field name's leading integer as CPython's `get_integer` does: `Ok(None)` if it is
/// empty or not all digits.
pub(crate) fn leading_integer(s: &[char]) -> Result<Option<usize>, FormatError> {
    if s.is_empty() {
        return Ok(None);
    }
    let mut acc: i64 = 0;
    for c in s {
        let Some(d) = c.to_digit(10) else {
            return Ok(None);
        };
        let d = i64::from(d);
        if acc > (i64::MAX - d) / 10 {
            return Err(FormatError::value(
                "Too many decimal digits in format string",
            ));
        }
        acc = acc * 10 + d;
    }
    Ok(Some(usize::try_from(acc).unwrap_or(usize::MAX)))
}

/// Splits `name` at its first `.` or `[`, resolving automatic numbering.
pub(crate) fn split_name<'a>(
    name: &'a [char],
    auto: &mut AutoNumber,
) -> Result<(Head<'a>, &'a [char]), FormatError> {
    let cut = name
        .iter()
        .position(|&c| c == '.' || c == '[')
        .unwrap_or(name.len());
    let (first, rest) = name.split_at(cut);
    let index = leading_integer(first)?;
    let empty = first.is_empty();
    if empty || index.is_some() {
        let automatic = *auto.state.get_or_insert(empty);
        if automatic && !empty {
            return Err(FormatError::value(
                "cannot switch from automatic field numbering to manual field specification",
            ));
        }
        if !automatic && empty {
            return Err(FormatError::value(
                "cannot switch from manual field specification to automatic field numbering",
            ));
        }
    }
    let head = match index {
        _ if empty => {
            let n = auto.next;
            auto.next += 1;
            Head::Positional(n)
        }
        Some(i) => Head::Positional(i),
        None => Head::Keyword(first),
    };
    Ok((head, rest))
}

/// One access after the field's first part.
pub(crate) enum Access<'a> {
    Attribute(&'a [char]),
    Item(&'a [char]),
}

/// Reads the next `.attr` or `[key]` from `rest`, advancing it.
pub(crate) fn next_access<'a>(rest: &mut &'a [char]) -> Result<Option<Access<'a>>, FormatError> {
    let Some((&first, tail)) = rest.split_first() else {
        return Ok(None);
    };
    let access = match first {
        '.' => {
            let end = tail
                .iter()
                .position(|&c| c == '.' || c == '[')
                .unwrap_or(tail.len());
            let (attr, after) = tail.split_at(end);
            *rest = after;
            Access::Attribute(attr)
        }
        '[' => {
            let Some(end) = tail.iter().position(|&c| c == ']') else {
                return Err(FormatError::value("Missing ']' in format string"));
            };
            let key = &tail[..end];
            *rest = &tail[end + 1..];
            leading_integer(key)?;
            Access::Item(key)
        }
        _ => {
            return Err(FormatError::value(
                "Only '.' or '[' may follow ']' in format field specifier",
            ))
        }
    };
    let (Access::Attribute(part) | Access::Item(part)) = &access;
    if part.is_empty() {
        return Err(FormatError::value("Empty attribute in format string"));
    }
    Ok(Some(access))
}
