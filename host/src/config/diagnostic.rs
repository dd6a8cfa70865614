//! Config errors with their place in the file, rendered like a compiler's.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The complete message, naming the component (e.g. "receiver `otlp`: ...").
    pub message: String,
    /// Byte range in the original (unexpanded) text, when the problem has a place.
    pub span: Option<Range<usize>>,
}

impl Diagnostic {
    /// A problem at `span`.
    pub fn at(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Self { message: message.into(), span }
    }
}

/// Every problem found in one config file, with the text needed to show where each one is.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    path: PathBuf,
    source: String,
    /// The problems, in file order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Collects `items` for the file at `path` whose original text is `source`.
    pub fn new(path: &Path, source: &str, mut items: Vec<Diagnostic>) -> Self {
        items.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        Self { path: path.to_path_buf(), source: source.to_string(), items }
    }

    fn line_col(&self, offset: usize) -> (usize, usize, &str) {
        line_col(&self.source, offset)
    }
}

/// The 1-based line and column of byte `offset` in `source`, and that line's text.
pub fn line_col(source: &str, offset: usize) -> (usize, usize, &str) {
    let offset = offset.min(source.len());
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[offset..].find('\n').map_or(source.len(), |i| offset + i);
    let line_no = source[..offset].matches('\n').count() + 1;
    let col = source[line_start..offset].chars().count() + 1;
    (line_no, col, &source[line_start..line_end])
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "error: {}", item.message)?;
            let Some(span) = &item.span else {
                writeln!(f, "  --> {}", self.path.display())?;
                continue;
            };
            let (line, col, text) = self.line_col(span.start);
            let gutter = line.to_string().len();
            let pad = " ".repeat(gutter);
            // Underline the span, but never past the end of its first line.
            let width = self.source[span.start.min(self.source.len())..span.end.min(self.source.len())]
                .split('\n')
                .next()
                .map_or(1, |s| s.chars().count().max(1));
            let indent: String =
                text.chars().take(col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
            writeln!(f, "{pad}--> {}:{line}:{col}", self.path.display())?;
            writeln!(f, "{pad} |")?;
            writeln!(f, "{line} | {text}")?;
            writeln!(f, "{pad} | {indent}{}", "^".repeat(width))?;
        }
        let count = self.items.len();
        write!(f, "\n{count} error{} in {}", if count == 1 { "" } else { "s" }, self.path.display())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_column_and_caret() {
        let source = "a = 1\nbogus = 2\n";
        let d =
            Diagnostics::new(Path::new("x.toml"), source, vec![Diagnostic::at(Some(6..11), "unknown field")]);
        assert_eq!(
            d.to_string(),
            "error: unknown field\n --> x.toml:2:1\n  |\n2 | bogus = 2\n  | ^^^^^\n\n1 error in x.toml"
        );
    }
}
