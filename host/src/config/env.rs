//! `${VAR}` and `${VAR:-default}` substitution from the environment.
//!
//! Substitution happens on the TOML text before it is parsed, so a variable can stand anywhere a
//! value can: inside a string (`address = "0.0.0.0:${PORT:-4317}"`) or as a bare number or boolean
//! (`queue_size = ${QUEUE:-128}`). The value is inserted verbatim. Comments are left alone, so a
//! commented-out `${VAR}` never needs the variable. `$${` writes a literal `${`.
//!
//! Because the parser sees the expanded text, every position it reports is mapped back to the
//! original through an [`OffsetMap`], so errors point at what the user wrote.

use std::ops::Range;

/// A problem with one `${...}` reference, located in the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstitutionError {
    /// Where the reference stands in the original text.
    pub span: Range<usize>,
    /// What is wrong with it.
    pub message: String,
}

/// Maps byte offsets in expanded text back to the original text.
#[derive(Debug, Clone, Default)]
pub struct OffsetMap {
    /// Replaced regions, in order: (expanded range, original range).
    replaced: Vec<(Range<usize>, Range<usize>)>,
}

impl OffsetMap {
    /// The original offset of expanded offset `pos`. Offsets inside a substituted value map to
    /// the start of the `${...}` that produced it.
    pub fn to_original(&self, pos: usize) -> usize {
        let mut shift: isize = 0;
        for (expanded, original) in &self.replaced {
            if pos < expanded.start {
                break;
            }
            if pos < expanded.end {
                return original.start;
            }
            shift = original.end as isize - expanded.end as isize;
        }
        (pos as isize + shift) as usize
    }

    /// Maps a whole range, widening it to cover any `${...}` it touches.
    pub fn range_to_original(&self, range: Range<usize>) -> Range<usize> {
        let start = self.to_original(range.start);
        let end = if range.end > range.start {
            let last = range.end - 1;
            match self.replaced.iter().find(|(e, _)| e.contains(&last)) {
                Some((_, original)) => original.end,
                None => self.to_original(last) + 1,
            }
        } else {
            start
        };
        start..end.max(start)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Bare,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
}

/// The text with every reference it could resolve substituted, and the ones it couldn't.
#[derive(Debug, Clone)]
pub struct Expanded {
    /// The text the TOML parser reads.
    pub text: String,
    /// Expanded offsets back to the original.
    pub map: OffsetMap,
    /// Every reference that could not be substituted. Each stands in the text as an empty value
    /// (`""` outside strings), so the rest of the file is still parsed and checked; a later error
    /// that touches one of these spans is a consequence of it, not news.
    pub errors: Vec<SubstitutionError>,
}

impl Expanded {
    /// Whether an error at `original` (a range in the original text) is explained by a failed
    /// substitution there.
    pub fn explains(&self, original: &Range<usize>) -> bool {
        let end = original.end.max(original.start + 1);
        self.errors.iter().any(|e| original.start < e.span.end && e.span.start < end)
    }
}

/// Expands every `${...}` outside comments using `lookup`, collecting every problem at once.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Expanded {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut map = OffsetMap::default();
    let mut errors = Vec::new();
    let mut context = Context::Bare;
    let mut copied_to = 0;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        match (context, bytes[i]) {
            (Context::Bare, b'#') => {
                i += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                continue;
            }
            (Context::Bare, b'"') if rest.starts_with(b"\"\"\"") => {
                context = Context::MultiBasic;
                i += 3;
                continue;
            }
            (Context::Bare, b'"') => context = Context::Basic,
            (Context::Bare, b'\'') if rest.starts_with(b"'''") => {
                context = Context::MultiLiteral;
                i += 3;
                continue;
            }
            (Context::Bare, b'\'') => context = Context::Literal,
            (Context::Basic | Context::MultiBasic, b'\\') => {
                i += 2;
                continue;
            }
            (Context::Basic, b'"') | (Context::Literal, b'\'') => context = Context::Bare,
            (Context::Basic | Context::Literal, b'\n') => context = Context::Bare,
            (Context::MultiBasic, b'"') if rest.starts_with(b"\"\"\"") => {
                context = Context::Bare;
                i += 3;
                continue;
            }
            (Context::MultiLiteral, b'\'') if rest.starts_with(b"'''") => {
                context = Context::Bare;
                i += 3;
                continue;
            }
            (_, b'$') if rest.starts_with(b"$${") => {
                // Escaped: keep one `$` and the `{`.
                out.push_str(&text[copied_to..i]);
                map.replaced.push((out.len()..out.len() + 2, i..i + 3));
                out.push_str("${");
                i += 3;
                copied_to = i;
                continue;
            }
            (_, b'$') if rest.starts_with(b"${") => {
                let close = rest.iter().position(|&b| b == b'}' || b == b'\n');
                let Some(close) = close.filter(|&c| rest[c] == b'}') else {
                    errors.push(SubstitutionError {
                        span: i..i + 2,
                        message:
                            "unclosed `${`: write `${NAME}` or `${NAME:-default}` (or `$${` for a literal)"
                                .into(),
                    });
                    i += 2;
                    continue;
                };
                let span = i..i + close + 1;
                let inner = &text[i + 2..i + close];
                let value = resolve(inner, lookup).unwrap_or_else(|message| {
                    errors.push(SubstitutionError { span: span.clone(), message });
                    // A stand-in that keeps the TOML parseable, so the rest is still checked.
                    if context == Context::Bare { "\"\"".to_string() } else { String::new() }
                });
                out.push_str(&text[copied_to..i]);
                map.replaced.push((out.len()..out.len() + value.len(), span.clone()));
                out.push_str(&value);
                i = span.end;
                copied_to = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&text[copied_to..]);
    Expanded { text: out, map, errors }
}

fn resolve(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(format!(
            "`${{{inner}}}` is not a variable reference: names are letters, digits and `_`, \
             optionally followed by `:-default`"
        ));
    }
    match (lookup(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_string()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(format!(
            "environment variable `{name}` is not set and has no default (write `${{{name}:-default}}` to give one)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("9999".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_in_strings_and_bare_values() {
        let out = expand("a = \"x:${PORT}\"\nb = ${N:-5}\nc = '${EMPTY:-d}'", &env).text;
        assert_eq!(out, "a = \"x:9999\"\nb = 5\nc = 'd'");
    }

    #[test]
    fn leaves_comments_and_escapes_alone() {
        let expanded = expand("# ${MISSING}\na = \"$${X}\" # ${ALSO_MISSING}", &env);
        assert!(expanded.errors.is_empty());
        let out = expanded.text;
        assert_eq!(out, "# ${MISSING}\na = \"${X}\" # ${ALSO_MISSING}");
    }

    #[test]
    fn a_hash_inside_a_string_is_not_a_comment() {
        let errors = expand("a = \"#${MISSING}\"", &env).errors;
        assert_eq!(errors[0].span, 6..16);
    }

    #[test]
    fn reports_every_problem_with_its_span() {
        let errors = expand("a = ${A}\nb = ${1x}\nc = ${C", &env).errors;
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].span, 4..8);
        assert!(errors[0].message.contains("`A` is not set"));
        assert!(errors[1].message.contains("not a variable reference"));
        assert!(errors[2].message.contains("unclosed"));
    }

    #[test]
    fn maps_offsets_back_to_the_original() {
        let Expanded { text: out, map, .. } = expand("a = ${PORT}\nbb = 1", &env);
        let bb = out.find("bb").expect("present");
        assert_eq!(map.to_original(bb), 12);
        assert_eq!(map.to_original(out.find("9999").expect("present") + 2), 4);
        assert_eq!(map.range_to_original(4..8), 4..11);
    }

    #[test]
    fn an_unset_variable_stands_in_as_an_empty_value_so_the_rest_still_parses() {
        let expanded = expand("a = ${A}\nb = \"${B}\"\nc = ${PORT}", &env);
        assert_eq!(expanded.text, "a = \"\"\nb = \"\"\nc = 9999");
        assert_eq!(expanded.errors.len(), 2);
        let c = expanded.text.find("9999").expect("present");
        assert_eq!(expanded.map.range_to_original(c..c + 4), 24..31);
        // An error at the value that stood in for `${A}` is explained by it; one elsewhere is not.
        assert!(expanded.explains(&expanded.map.range_to_original(4..6)));
        assert!(!expanded.explains(&(24..31)));
    }
}
