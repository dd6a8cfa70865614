//! A series' label set in one shared allocation. A store of 100,000 series looked each point's
//! series up by a `Vec` of `String` pairs: built afresh per point and compared string by string,
//! one cache miss per label. Here a point's labels are written into a reused buffer, the series is
//! found by hashing and comparing those bytes, and only a new series allocates.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

/// Label pairs sorted by name, each name once, encoded as `len name len value …` with 32-bit
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
        // Written from `&str`s by `LabelsBuilder::encode_into` only.
        let text = |part| std::str::from_utf8(part).expect("label text is UTF-8");
        Some((text(name), text(value)))
    }
}

/// Builds label sets in reused buffers, one at a time: the resource's base pairs, set once, and
/// each point's attributes.
///
/// Pairs are kept sorted by name as they are added, and names are unique, so a set is written
/// out in one pass. Sorting the pairs' indices once a set was complete, comparing the names as
/// `str` slices, was a ninth of scrape ingest.
#[derive(Debug, Default)]
pub struct LabelsBuilder {
    text: String,
    /// The pairs, sorted by name, as ranges of `text`.
    pairs: Vec<Pair>,
    /// How much of `text` and `pairs` the base holds: [`clear`](Self::clear) goes back to it.
    base_text: usize,
    base_pairs: usize,
}

#[derive(Debug, Clone)]
struct Pair {
    name: Range<usize>,
    value: Range<usize>,
    /// From the base: an attribute of the same name is ignored.
    base: bool,
}

impl LabelsBuilder {
    /// Makes `pairs` the base of every set built until the next call; of two pairs with one
    /// name, the first is kept.
    pub fn set_base<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.text.clear();
        self.pairs.clear();
        for (name, value) in pairs {
            let name_at = self.push_text(|text| text.push_str(name));
            match self.position(name_at.clone()) {
                Ok(_) => self.text.truncate(name_at.start),
                Err(at) => {
                    let value = self.push_text(|text| text.push_str(value));
                    self.pairs.insert(at, Pair { name: name_at, value, base: true });
                }
            }
        }
        self.base_text = self.text.len();
        self.base_pairs = self.pairs.len();
    }

    /// Starts a new set: the base alone.
    pub fn clear(&mut self) {
        self.text.truncate(self.base_text);
        self.pairs.retain(|pair| pair.base);
        debug_assert_eq!(self.pairs.len(), self.base_pairs);
    }

    /// Where the pair named by `name` (a range of `text`, past every pair's own) is, or would go.
    fn position(&self, name: Range<usize>) -> Result<usize, usize> {
        let text = self.text.as_bytes();
        let name = &text[name];
        // A handful of pairs: a linear scan beats a binary search.
        for (at, pair) in self.pairs.iter().enumerate() {
            match text[pair.name.clone()].cmp(name) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(at),
                std::cmp::Ordering::Greater => return Err(at),
            }
        }
        Err(self.pairs.len())
    }

    /// Adds an attribute: `write_name` writes its label name, `write_value` its value. A name
    /// already taken by a base pair is ignored; one taken by another attribute (two keys that
    /// sanitize alike) gets this value joined to it with `;`, as the compatibility spec says.
    pub fn attribute(&mut self, write_name: impl FnOnce(&mut String), write_value: impl FnOnce(&mut String)) {
        let name_at = self.push_text(write_name);
        match self.position(name_at.clone()) {
            Ok(at) if self.pairs[at].base => self.text.truncate(name_at.start),
            Ok(at) => {
                // Rare: rewrite the joined value at the end of the text.
                self.text.truncate(name_at.start);
                let old = self.pairs[at].value.clone();
                let start = self.text.len();
                self.text.extend_from_within(old);
                self.text.push(';');
                write_value(&mut self.text);
                self.pairs[at].value = start..self.text.len();
            }
            Err(at) => {
                let value = self.push_text(write_value);
                self.pairs.insert(at, Pair { name: name_at, value, base: false });
            }
        }
    }

    fn push_text(&mut self, write: impl FnOnce(&mut String)) -> Range<usize> {
        let start = self.text.len();
        write(&mut self.text);
        start..self.text.len()
    }

    /// Appends the set built so far to `out`, encoded as [`LabelSet`] holds it.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let text = self.text.as_bytes();
        for pair in &self.pairs {
            for part in [&text[pair.name.clone()], &text[pair.value.clone()]] {
                let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&part[..len as usize]);
            }
        }
    }
}

/// A label set from encoded bytes (from [`LabelsBuilder::encode_into`]).
pub fn intern(encoded: &[u8]) -> LabelSet {
    LabelSet(Arc::from(encoded))
}

/// Writes `value` as a label value: integers and floats as Rust prints them, booleans as
/// `true`/`false`.
pub fn write_display(out: &mut String, value: impl std::fmt::Display) {
    let _ = write!(out, "{value}");
}

/// A label set of `pairs` (the first of a name kept), for tests.
#[cfg(test)]
pub fn from_pairs(pairs: &[(&str, &str)]) -> LabelSet {
    let mut builder = LabelsBuilder::default();
    builder.set_base(pairs.iter().copied());
    let mut encoded = Vec::new();
    builder.encode_into(&mut encoded);
    intern(&encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(base: &[(&str, &str)], attributes: &[(&str, &str)]) -> LabelSet {
        let mut builder = LabelsBuilder::default();
        builder.set_base(base.iter().copied());
        build_on(&mut builder, attributes)
    }

    fn build_on(builder: &mut LabelsBuilder, attributes: &[(&str, &str)]) -> LabelSet {
        builder.clear();
        for (k, v) in attributes {
            builder.attribute(|t| t.push_str(k), |t| t.push_str(v));
        }
        let mut encoded = Vec::new();
        builder.encode_into(&mut encoded);
        intern(&encoded)
    }

    #[test]
    fn each_set_starts_from_the_base_alone() {
        let mut builder = LabelsBuilder::default();
        builder.set_base([("job", "svc"), ("a", "1"), ("job", "second")]);
        let first = build_on(&mut builder, &[("z", "x"), ("b", "y"), ("b", "w"), ("a", "ignored")]);
        assert_eq!(first.pairs().collect::<Vec<_>>(), [("a", "1"), ("b", "y;w"), ("job", "svc"), ("z", "x")]);
        // Nothing of the last set's attributes, joins included, is left in the next.
        let second = build_on(&mut builder, &[("b", "v")]);
        assert_eq!(second.pairs().collect::<Vec<_>>(), [("a", "1"), ("b", "v"), ("job", "svc")]);
        assert_eq!(build_on(&mut builder, &[]), from_pairs(&[("job", "svc"), ("a", "1")]));
        builder.set_base([]);
        assert_eq!(build_on(&mut builder, &[]).pairs().count(), 0);
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
