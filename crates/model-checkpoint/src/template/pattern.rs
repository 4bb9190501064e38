//! What a template could produce: its literal text with a wildcard for every field. Used to
//! tell the files a run may manage (retention deletes only names its own template could
//! have made) and to refuse templates that would produce names the tool itself manages.

use super::error::FormatError;
use super::markup::Markup;

/// A template as literal runs and wildcards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pieces: Vec<PatternPiece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternPiece {
    Literal(String),
    /// A field: any text without a path separator.
    Field,
}

impl Pattern {
    /// The pattern of `template`.
    ///
    /// ```
    /// use model_checkpoint::template::Pattern;
    ///
    /// let p = Pattern::new("ck/w.{epoch:02d}-{val_loss:.2f}.safetensors")?;
    /// assert!(p.matches("ck/w.07-0.12.safetensors"));
    /// assert!(!p.matches("ck/other.safetensors"));
    /// assert!(!p.matches("ck/w.07-../../x.safetensors"));
    /// # Ok::<(), model_checkpoint::template::FormatError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Python's error for malformed markup.
    pub fn new(template: &str) -> Result<Pattern, FormatError> {
        let chars: Vec<char> = template.chars().collect();
        let mut markup = Markup::new(&chars);
        let mut pieces: Vec<PatternPiece> = Vec::new();
        while let Some(piece) = markup.next_piece()? {
            if !piece.literal.is_empty() {
                let text: String = piece.literal.iter().collect();
                match pieces.last_mut() {
                    Some(PatternPiece::Literal(prev)) => prev.push_str(&text),
                    _ => pieces.push(PatternPiece::Literal(text)),
                }
            }
            if piece.field.is_some() && pieces.last() != Some(&PatternPiece::Field) {
                pieces.push(PatternPiece::Field);
            }
        }
        Ok(Pattern { pieces })
    }

    /// Whether the template has no fields: it always produces the same text.
    pub fn is_fixed(&self) -> bool {
        !self.pieces.contains(&PatternPiece::Field)
    }

    /// Whether the template could produce `text` (each field standing for any text without
    /// a `/`).
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        matches_from(&self.pieces, &text)
    }

    /// Whether everything the template produces ends with `suffix` (its last piece is text
    /// ending so).
    pub fn always_ends_with(&self, suffix: &str) -> bool {
        matches!(self.pieces.last(), Some(PatternPiece::Literal(l)) if l.ends_with(suffix))
    }

    /// The pattern of the last path component only (after the last literal `/`).
    pub fn file_name(&self) -> Pattern {
        let mut pieces = Vec::new();
        for piece in self.pieces.iter().rev() {
            match piece {
                PatternPiece::Literal(l) => match l.rfind('/') {
                    Some(i) => {
                        if i + 1 < l.len() {
                            pieces.push(PatternPiece::Literal(l[i + 1..].to_owned()));
                        }
                        break;
                    }
                    None => pieces.push(piece.clone()),
                },
                PatternPiece::Field => pieces.push(PatternPiece::Field),
            }
        }
        pieces.reverse();
        Pattern { pieces }
    }
}

/// Glob matching with fields as `*` that never cross a `/`; iterative with backtracking to
/// the last field only, so it runs in time linear in practice and never recurses deeply.
fn matches_from(pieces: &[PatternPiece], text: &[char]) -> bool {
    // Dynamic programming over (piece, position): small inputs (paths), bounded work.
    let n = text.len();
    let mut reachable = vec![false; n + 1];
    reachable[0] = true;
    for piece in pieces {
        let mut next = vec![false; n + 1];
        match piece {
            PatternPiece::Literal(l) => {
                let l: Vec<char> = l.chars().collect();
                for i in 0..=n {
                    if reachable[i] && text[i..].starts_with(&l) {
                        next[i + l.len()] = true;
                    }
                }
            }
            PatternPiece::Field => {
                let mut open = false;
                for i in 0..=n {
                    open = (open && text[i - 1] != '/') || reachable[i];
                    next[i] = open;
                }
            }
        }
        reachable = next;
    }
    reachable[n]
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn fields_match_any_text_within_one_component() {
        let p = Pattern::new("a/{x}-{y:.2f}.st").expect("pattern");
        assert!(p.matches("a/1-0.50.st"));
        assert!(p.matches("a/-.st"));
        assert!(!p.matches("a/1/2-3.st"));
        assert!(!p.matches("b/1-2.st"));
        let fixed = Pattern::new("ck/best.safetensors").expect("pattern");
        assert!(fixed.is_fixed() && fixed.matches("ck/best.safetensors"));
        assert!(Pattern::new("{{x}}").expect("p").matches("{x}"));
        assert_eq!(
            Pattern::new("d{e}/w{x}.s").expect("p").file_name(),
            Pattern::new("w{x}.s").expect("p")
        );
    }

    #[test]
    fn suffixes_are_known_only_from_literal_text() {
        assert!(Pattern::new(".{epoch}.ckpt-tmp")
            .expect("p")
            .always_ends_with(".ckpt-tmp"));
        assert!(!Pattern::new("w{epoch}.safetensors")
            .expect("p")
            .always_ends_with(".ckpt-tmp"));
        assert!(!Pattern::new("{epoch}")
            .expect("p")
            .always_ends_with(".ckpt-tmp"));
    }
}
