//! Name patterns for plugin configs: `*` matches any run of characters, everything else matches
//! itself. `"GET /healthz"`, `"health*"`, `"*password*"`.

use serde::{Deserialize, Deserializer};

/// A compiled `*` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<String>,
    anchored_start: bool,
    anchored_end: bool,
}

impl Pattern {
    /// Compiles `text`.
    pub fn new(text: &str) -> Self {
        Self {
            parts: text.split('*').filter(|p| !p.is_empty()).map(str::to_string).collect(),
            anchored_start: !text.starts_with('*'),
            anchored_end: !text.ends_with('*'),
        }
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let mut rest = text;
        let last = self.parts.len().saturating_sub(1);
        for (i, part) in self.parts.iter().enumerate() {
            if i == 0 && self.anchored_start {
                let Some(after) = rest.strip_prefix(part.as_str()) else { return false };
                rest = after;
                if i == last && self.anchored_end {
                    return rest.is_empty();
                }
                continue;
            }
            if i == last && self.anchored_end {
                return rest.len() >= part.len() && rest.ends_with(part.as_str());
            }
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        // No parts: "" matches only "", "*" matches everything.
        !self.anchored_end || !self.anchored_start || rest.is_empty() || !self.parts.is_empty()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Pattern::new(&String::deserialize(deserializer)?))
    }
}

/// Whether any of `patterns` matches `text`.
pub fn any_matches(patterns: &[Pattern], text: &str) -> bool {
    patterns.iter().any(|p| p.matches(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let cases = [
            ("GET /healthz", "GET /healthz", true),
            ("GET /healthz", "GET /healthz/x", false),
            ("health*", "healthcheck", true),
            ("health*", "unhealthy", false),
            ("*password*", "db.password.hash", true),
            ("*password*", "passwd", false),
            ("*.list", "workers.list", true),
            ("*.list", "workers.listing", false),
            ("a*c", "abc", true),
            ("a*c", "ab", false),
            ("a*b*c", "a-b-c", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(Pattern::new(pattern).matches(text), expected, "{pattern:?} vs {text:?}");
        }
    }
}
