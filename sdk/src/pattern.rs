//! Name patterns for plugin configs: `*` matches any run of characters, everything else matches
//! itself. `"GET /healthz"`, `"health*"`, `"*password*"`.
//!
//! A rule usually holds a list of them; [`PatternSet`] compiles the list into one matcher, so a
//! text is read once however many patterns there are.

use aho_corasick::AhoCorasick;
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

/// Whether any of `patterns` matches `text`, trying them one by one (a [`PatternSet`] does it
/// in one pass).
pub fn any_matches(patterns: &[Pattern], text: &str) -> bool {
    patterns.iter().any(|p| p.matches(text))
}

/// Where a pattern's one literal must stand in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    /// `literal`: the whole text.
    Whole,
    /// `literal*`
    Start,
    /// `*literal`
    End,
    /// `*literal*`
    Anywhere,
}

/// A list of patterns compiled into one matcher: [`PatternSet::matches`] answers "does any of
/// them match" in one pass over the text, whatever the list's length. Patterns with one literal
/// (`abc`, `abc*`, `*abc`, `*abc*` — nearly all of them) go into one Aho-Corasick automaton,
/// whose matches are then checked for their anchor; `""` and `*` are flags; the rare pattern
/// with several literals (`a*b*c`) is tried on its own.
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    matches_empty: bool,
    matches_everything: bool,
    literals: Option<AhoCorasick>,
    anchors: Vec<Anchor>,
    general: Vec<Pattern>,
    len: usize,
}

impl PatternSet {
    /// Compiles `patterns`.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = Self::default();
        let mut one_literal = Vec::new();
        for text in patterns {
            set.len += 1;
            let pattern = Pattern::new(text);
            match (pattern.parts.as_slice(), pattern.anchored_start, pattern.anchored_end) {
                ([], true, true) => set.matches_empty = true,
                ([], _, _) => set.matches_everything = true,
                ([_], start, end) => {
                    set.anchors.push(match (start, end) {
                        (true, true) => Anchor::Whole,
                        (true, false) => Anchor::Start,
                        (false, true) => Anchor::End,
                        (false, false) => Anchor::Anywhere,
                    });
                    one_literal.push(pattern);
                }
                _ => set.general.push(pattern),
            }
        }
        if !one_literal.is_empty() {
            // Literals are plain strings, so building can't fail short of a pattern list too
            // large for the automaton; those patterns then match one by one.
            match AhoCorasick::new(one_literal.iter().map(|pattern| &pattern.parts[0])) {
                Ok(automaton) => set.literals = Some(automaton),
                Err(_) => {
                    set.general.extend(one_literal);
                    set.anchors.clear();
                }
            }
        }
        set
    }

    /// How many patterns it was compiled from.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it was compiled from no pattern (and so matches nothing).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether any of the patterns matches `text`.
    pub fn matches(&self, text: &str) -> bool {
        if self.matches_everything || (self.matches_empty && text.is_empty()) {
            return true;
        }
        if let Some(automaton) = &self.literals {
            let found =
                automaton.find_overlapping_iter(text).any(|m| match self.anchors[m.pattern().as_usize()] {
                    Anchor::Whole => m.start() == 0 && m.end() == text.len(),
                    Anchor::Start => m.start() == 0,
                    Anchor::End => m.end() == text.len(),
                    Anchor::Anywhere => true,
                });
            if found {
                return true;
            }
        }
        self.general.iter().any(|pattern| pattern.matches(text))
    }
}

impl<'de> Deserialize<'de> for PatternSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        Ok(PatternSet::new(texts.iter().map(String::as_str)))
    }
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

    /// Every pattern and text over a small alphabet, up to four characters: a set of one pattern,
    /// and of that pattern with each other one, answers as the patterns one by one do.
    #[test]
    fn a_set_answers_as_its_patterns_one_by_one() {
        fn words(alphabet: &[char], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last.iter().flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}"))).collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let patterns = words(&['a', 'b', '*'], 4);
        let texts = words(&['a', 'b'], 4);
        let compiled: Vec<Pattern> = patterns.iter().map(|p| Pattern::new(p)).collect();
        for (i, first) in patterns.iter().enumerate() {
            for (j, second) in patterns.iter().enumerate().step_by(7) {
                let set = PatternSet::new([first.as_str(), second.as_str()]);
                let one_by_one = [compiled[i].clone(), compiled[j].clone()];
                for text in &texts {
                    assert_eq!(
                        set.matches(text),
                        any_matches(&one_by_one, text),
                        "{first:?}, {second:?} vs {text:?}"
                    );
                }
            }
        }
        assert!(!PatternSet::default().matches(""), "an empty set matches nothing");
    }

    #[test]
    fn graphistry_noise_names() {
        let set = PatternSet::new(["*health*", "*.list", "*list_*", "*.read", "*read_*", "*check_workers*"]);
        for (name, dropped) in [
            ("GET /healthz", true),
            ("workers.list", true),
            ("workers.listing", false),
            ("list_jobs", true),
            ("dataset.read", true),
            ("dataset.reader", false),
            ("upload", false),
        ] {
            assert_eq!(set.matches(name), dropped, "{name}");
        }
        assert_eq!(set.len(), 6);
    }
}
