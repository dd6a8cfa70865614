//! A series' label set in one shared allocation. A store of 100,000 series looked each point's
//! series up by a `Vec` of `String` pairs: built afresh per point and compared string by string,
//! one cache miss per label. Here a point's labels are written into a reused buffer, the series is
//! found by hashing and comparing those bytes, and only a new series allocates.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

/// Label pairs sorted by name (then value), encoded as `len name len value …` with 32-bit
/// little-endian lengths; cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct LabelSet(Arc<[u8]>);

impl std::fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.pairs()).finish()
    }
}

impl LabelSet {
    /// The pairs, sorted by name.
    pub fn pairs(&self) -> Pairs<'_> {
        Pairs(&self.0)
    }

    /// The pairs as bytes, for writers that copy them as they are (each part is UTF-8).
    pub fn raw_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        RawPairs(&self.0)
    }

    /// The encoding: what a set is hashed and compared by.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `other` is this very set (a clone of it), not merely an equal one.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Orders sets as their [`pairs`](Self::pairs) order, comparing bytes: `str` orders by bytes,
    /// and rendering sorts every series of a family by this on each scrape.
    pub fn cmp_pairs(&self, other: &Self) -> std::cmp::Ordering {
        RawPairs(&self.0).cmp(RawPairs(&other.0))
    }

    /// The value of the label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

/// The pairs of a [`LabelSet`] as bytes, in order.
struct RawPairs<'a>(&'a [u8]);

impl<'a> RawPairs<'a> {
    fn part(&mut self) -> &'a [u8] {
        let (len, rest) = self.0.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
        let (text, rest) = rest.split_at(len);
        self.0 = rest;
        text
    }
}

impl<'a> Iterator for RawPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        Some((self.part(), self.part()))
    }
}

/// The pairs of a [`LabelSet`], in order.
#[derive(Clone)]
pub struct Pairs<'a>(&'a [u8]);

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let mut raw = RawPairs(self.0);
        let (name, value) = raw.next()?;
        self.0 = raw.0;
        // Written from `&str`s by `LabelsBuilder::encode` only.
        let text = |part| std::str::from_utf8(part).expect("label text is UTF-8");
        Some((text(name), text(value)))
    }
}

/// Builds label sets in reused buffers: text and pairs for one set at a time.
#[derive(Debug, Default)]
pub struct LabelsBuilder {
    text: String,
    /// Name and value ranges in `text`, and whether the pair came from the base.
    pairs: Vec<(Range<usize>, Range<usize>, bool)>,
    order: Vec<usize>,
    encoded: Vec<u8>,
}

impl LabelsBuilder {
    /// Starts a new set.
    pub fn clear(&mut self) {
        self.text.clear();
        self.pairs.clear();
    }

    fn name_of(&self, pair: usize) -> &str {
        &self.text[self.pairs[pair].0.clone()]
    }

    /// Adds a base pair (an exporter or resource label): later pairs of that name are ignored.
    pub fn base(&mut self, name: &str, value: &str) {
        let name_at = self.push_text(|text| text.push_str(name));
        let value_at = self.push_text(|text| text.push_str(value));
        self.pairs.push((name_at, value_at, true));
    }

    /// Adds an attribute: `write_name` writes its label name, `write_value` its value. A name
    /// already taken by a base pair is ignored; one taken by another attribute (two keys that
    /// sanitize alike) gets this value joined to it with `;`, as the compatibility spec says.
    pub fn attribute(&mut self, write_name: impl FnOnce(&mut String), write_value: impl FnOnce(&mut String)) {
        let name_at = self.push_text(write_name);
        let name = &self.text[name_at.clone()];
        let existing = (0..self.pairs.len()).find(|&i| self.name_of(i) == name);
        match existing {
            Some(i) if self.pairs[i].2 => self.text.truncate(name_at.start),
            Some(i) => {
                // Rare: rewrite the joined value at the end of the text.
                self.text.truncate(name_at.start);
                let old = self.pairs[i].1.clone();
                let start = self.text.len();
                self.text.extend_from_within(old);
                self.text.push(';');
                write_value(&mut self.text);
                self.pairs[i].1 = start..self.text.len();
            }
            None => {
                let value_at = self.push_text(write_value);
                self.pairs.push((name_at, value_at, false));
            }
        }
    }

    fn push_text(&mut self, write: impl FnOnce(&mut String)) -> Range<usize> {
        let start = self.text.len();
        write(&mut self.text);
        start..self.text.len()
    }

    /// The set built so far, encoded (sorted by name, then value); valid until the next change.
    pub fn encode(&mut self) -> &[u8] {
        let Self { text, pairs, order, encoded } = self;
        order.clear();
        order.extend(0..pairs.len());
        let pair = |i: usize| (&text[pairs[i].0.clone()], &text[pairs[i].1.clone()]);
        order.sort_unstable_by(|&a, &b| pair(a).cmp(&pair(b)));
        encoded.clear();
        for &i in order.iter() {
            let (name, value) = pair(i);
            for part in [name, value] {
                let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
                encoded.extend_from_slice(&len.to_le_bytes());
                encoded.extend_from_slice(&part.as_bytes()[..len as usize]);
            }
        }
        encoded
    }
}

/// A label set from encoded bytes (from [`LabelsBuilder::encode`]).
pub fn intern(encoded: &[u8]) -> LabelSet {
    LabelSet(Arc::from(encoded))
}

/// Writes `value` as a label value: integers and floats as Rust prints them, booleans as
/// `true`/`false`.
pub fn write_display(out: &mut String, value: impl std::fmt::Display) {
    let _ = write!(out, "{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(base: &[(&str, &str)], attributes: &[(&str, &str)]) -> LabelSet {
        let mut builder = LabelsBuilder::default();
        for (k, v) in base {
            builder.base(k, v);
        }
        for (k, v) in attributes {
            builder.attribute(|t| t.push_str(k), |t| t.push_str(v));
        }
        intern(builder.encode())
    }

    #[test]
    fn pairs_come_back_sorted_with_joins_and_base_precedence() {
        let set = build(
            &[("job", "svc"), ("instance", "")],
            &[("zone", "b"), ("job", "ignored"), ("gpu", "0"), ("zone", "c"), ("a", "é\u{0}x")],
        );
        let pairs: Vec<_> = set.pairs().collect();
        assert_eq!(
            pairs,
            [("a", "é\u{0}x"), ("gpu", "0"), ("instance", ""), ("job", "svc"), ("zone", "b;c")]
        );
        assert_eq!(set.get("zone"), Some("b;c"));
        assert_eq!(set.get("missing"), None);
    }

    #[test]
    fn equal_sets_are_equal_however_they_were_built() {
        let one = build(&[("job", "x")], &[("b", "2"), ("a", "1")]);
        let other = build(&[], &[("a", "1"), ("job", "x"), ("b", "2")]);
        assert_eq!(one, other);
        assert_ne!(one, build(&[("job", "x")], &[("b", "2"), ("a", "11")]));
        // Lengths keep "ab"+"c" apart from "a"+"bc".
        assert_ne!(build(&[], &[("ab", "c")]), build(&[], &[("a", "bc")]));
        assert_eq!(build(&[], &[]).pairs().count(), 0);
    }

    #[test]
    fn sets_order_as_their_pairs_do() {
        let sets = [
            build(&[], &[]),
            build(&[], &[("a", "1")]),
            build(&[], &[("a", "1"), ("b", "")]),
            build(&[], &[("a", "10")]),
            build(&[], &[("a", "2")]),
            build(&[], &[("ab", "")]),
            build(&[], &[("b", "é")]),
            build(&[], &[("b", "z")]),
        ];
        for one in &sets {
            for other in &sets {
                assert_eq!(one.cmp_pairs(other), one.pairs().cmp(other.pairs()), "{one:?} vs {other:?}");
            }
        }
    }
}
