//! The series a Prometheus scrape sees: OTLP metrics translated per the OpenTelemetry
//! "Prometheus and OpenMetrics compatibility" spec, accumulated (delta → cumulative) and expired
//! when their source stops sending.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use super::labels::{LabelSet, intern, write_display};
use super::translate::{FamilyUpdate, PointUpdate, Target, Updates};
use crate::batch::{DecodeError, Decoded};
use crate::config::{SeriesConfig, Signal};

/// A family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// A series' value. The rare, large kinds are boxed so a number series' entry stays small: a
/// store of 100,000 new series spent a third of its time having the kernel zero the pages its
/// growing table took.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Number(f64),
    Histogram(Box<HistogramValue>),
    Summary(Box<SummaryValue>),
}

/// A classic histogram.
#[derive(Debug, Clone)]
pub(super) struct HistogramValue {
    /// Upper bounds.
    pub bounds: Vec<f64>,
    /// Per-bucket (not cumulative) counts; the last count is the +Inf bucket.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// A summary: `(quantile, value)` pairs, sum and count.
#[derive(Debug, Clone)]
pub(super) struct SummaryValue {
    pub quantiles: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: u64,
}

#[derive(Debug)]
struct Series {
    value: Value,
    updated: Instant,
    /// Updated since the last [`Store::take_updated`] (and so listed in `touched` once).
    pending: bool,
}

/// A series updated since the last [`Store::take_updated`]: its family's name, its label set (the
/// one its family holds, so it is found again by pointer) and its position there. Taking an
/// update finds its series without hashing or comparing label bytes again (that second lookup
/// was a tenth of remote write), and where no series expired since, at its position, without
/// probing the family's table (the probe's cache miss was a sixth).
#[derive(Debug)]
struct Touched {
    family: Arc<str>,
    labels: LabelSet,
    at: u32,
}

/// A series with what finds it: its label set, and the memo of the point that named it last.
/// Its hash is kept in the family's table, not here: every byte of an entry is paid for in
/// copying as the family's `Vec` grows, and in the pages it touches.
#[derive(Debug)]
struct Entry {
    labels: LabelSet,
    series: Series,
    /// The entry whose point came right after this one's in the last request: the guess for
    /// the next point (or [`NO_ENTRY`]).
    next: u32,
    memo: Option<Memo>,
}

/// What named an entry's series last: the resource's base label set (encoded as a
/// [`LabelSet`]) and the point's attributes as sent, both held by the family's [`Memos`]. A
/// point with the same attributes under the same base names the same series, so its label set
/// is not built again: building it was 40% of scrape ingest.
#[derive(Debug, Clone, Copy)]
struct Memo {
    /// One past the base's position in [`Memos::bases`] (so that `Option<Memo>` takes no more
    /// room than a memo).
    base: NonZeroU32,
    /// Where the attribute bytes lie in [`Memos::bytes`].
    start: u32,
    len: u32,
}

/// The memos of a family's series side by side: attribute bytes in one buffer (a series once
/// took an allocation of its own for them), and each base once.
#[derive(Debug, Default)]
struct Memos {
    bytes: Vec<u8>,
    bases: Vec<Arc<[u8]>>,
    /// Each base's position (plus one) in `bases`: a family can be fed by thousands of
    /// resources, and each family update looks its base up.
    positions: HashMap<Arc<[u8]>, NonZeroU32>,
    /// What memos no entry holds any more take: their bytes, and one for each memo. When it
    /// outweighs the rest, the memos held are written out again without them.
    stale: usize,
}

impl Memos {
    /// Whether `memo` says a point with `attributes` under `base` names its series.
    fn names(&self, memo: Memo, base: &Arc<[u8]>, attributes: &[u8]) -> bool {
        // `Arc`'s `==` compares pointers first.
        self.attributes(memo) == attributes && self.bases[memo.base.get() as usize - 1] == *base
    }

    /// The attribute bytes `memo` holds.
    fn attributes(&self, memo: Memo) -> &[u8] {
        let start = memo.start as usize;
        &self.bytes[start..start + memo.len as usize]
    }

    /// The position (plus one) of `base` in [`Memos::bases`], if held.
    fn find_base(&self, base: &Arc<[u8]>) -> Option<NonZeroU32> {
        self.positions.get(&**base).copied()
    }

    /// The position (plus one) of `base` in [`Memos::bases`], added if new. A family update has
    /// one base, so this runs at most once per family and request.
    fn base(&mut self, base: &Arc<[u8]>) -> Option<NonZeroU32> {
        if let Some(at) = self.find_base(base) {
            return Some(at);
        }
        let at = NonZeroU32::new(u32::try_from(self.bases.len() + 1).ok()?)?;
        self.bases.push(base.clone());
        self.positions.insert(base.clone(), at);
        Some(at)
    }

    /// A memo of `attributes` under the base at `base`; none past 4 GiB of memo bytes, where
    /// the series is simply looked up by its label set.
    fn add(&mut self, base: NonZeroU32, attributes: &[u8]) -> Option<Memo> {
        let start = u32::try_from(self.bytes.len()).ok()?;
        let len = u32::try_from(attributes.len()).ok()?;
        start.checked_add(len)?;
        self.bytes.extend_from_slice(attributes);
        Some(Memo { base, start, len })
    }

    /// Counts `memo` as no longer held.
    fn retire(&mut self, memo: Option<Memo>) {
        if let Some(memo) = memo {
            self.stale += memo.len as usize + 1;
        }
    }

    /// Writes the memos `entries` hold out again, without the stale ones, once those outweigh
    /// the rest (and a page's worth at least, so a small family is not rewritten for each
    /// retired memo).
    fn compact(&mut self, entries: &mut [Entry]) {
        let held = (self.bytes.len() + entries.len()).saturating_sub(self.stale);
        if self.stale < held.max(4096) {
            return;
        }
        let (old_bytes, old_bases) = (std::mem::take(&mut self.bytes), std::mem::take(&mut self.bases));
        self.positions.clear();
        // The new position (plus one) of each old base, once some memo is found to hold it.
        let mut moved: Vec<Option<NonZeroU32>> = vec![None; old_bases.len()];
        for entry in entries {
            let Some(memo) = entry.memo else { continue };
            let old_base = memo.base.get() as usize - 1;
            let base = *moved[old_base].get_or_insert_with(|| {
                let base = &old_bases[old_base];
                self.bases.push(base.clone());
                let at = NonZeroU32::new(self.bases.len() as u32).expect("one past a position");
                self.positions.insert(base.clone(), at);
                at
            });
            let start = memo.start as usize;
            // Fewer bytes than were held before: still within 4 GiB.
            let new_start = self.bytes.len() as u32;
            self.bytes.extend_from_slice(&old_bytes[start..start + memo.len as usize]);
            entry.memo = Some(Memo { base, start: new_start, len: memo.len });
        }
        self.stale = 0;
    }
}

/// A position in a family's `entries`, with (half) the hash of its label set: the table grows
/// and is probed without reading the entries it points at.
#[derive(Debug, Clone, Copy)]
struct Slot {
    at: u32,
    hash: u32,
}

/// The hash a family's table files a label set of hash `hash` under. hashbrown takes a
/// bucket from the low bits and a tag from the top seven; both come from the 32 kept.
fn spread(hash: u32) -> u64 {
    u64::from(hash) << 32 | u64::from(hash)
}

/// No entry: past any position [`Family::index`] holds.
const NO_ENTRY: u32 = u32::MAX;

/// The series of one metric family.
#[derive(Debug)]
pub(super) struct Family {
    /// Its name, shared with the list of series updated since the last take.
    name: Arc<str>,
    kind: Kind,
    help: String,
    /// The series, in the order they first came.
    entries: Vec<Entry>,
    /// Positions in `entries`, by label set, hashed with hashbrown's seeded foldhash (SipHash
    /// was a sixth of remote write's time).
    ///
    /// A client sends its series in the same order request after request, so a point's series
    /// is first looked for where the last point's series' [`Entry::next`] says, by its
    /// [`Memo`], and the table is probed only when that guess is wrong. A probe lands at a
    /// random place in a table larger than the cache: one miss per point was a fifth of scrape
    /// ingest.
    index: HashTable<Slot>,
    hasher: DefaultHashBuilder,
    memos: Memos,
    /// Positions in `entries` in label order, as a scrape writes them, kept between scrapes:
    /// sorting 100,000 series again on every scrape was most of a scrape's time. It covers
    /// the entries before its length; series that came since are sorted and merged in at the
    /// next scrape, and an expiry (which moves positions) empties it.
    scrape_order: Vec<u32>,
}

impl Family {
    fn new(name: Arc<str>, kind: Kind, help: String) -> Self {
        Family {
            name,
            kind,
            help,
            entries: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            memos: Memos::default(),
            scrape_order: Vec::new(),
        }
    }

    /// Whether new points join this family: a name used again with another type keeps its
    /// first type, and the newcomer's points are skipped.
    pub(super) fn takes(&self, kind: Kind) -> bool {
        self.kind == kind
    }

    /// Where this family's memos hold `base`, if any does: a memo names a point's series only
    /// under the base the point's family update has, found once per update this way, not
    /// compared per point.
    pub(super) fn memo_base(&self, base: &Arc<[u8]>) -> Option<NonZeroU32> {
        self.memos.find_base(base)
    }

    /// The entry that came right after `last`'s in the last request, if a point with
    /// `attributes` under the base [`Family::memo_base`] found names its series.
    pub(super) fn follows(&self, last: u32, base: NonZeroU32, attributes: &[u8]) -> Option<u32> {
        let next = self.entries.get(last as usize)?.next;
        let memo = self.entries.get(next as usize)?.memo?;
        (memo.base == base && self.memos.attributes(memo) == attributes).then_some(next)
    }

    /// Where the series `labels` is, and whether its memo is not `memo` (a base and attributes
    /// that name it, or none); or, when the family doesn't hold it, the set's hash here.
    pub(super) fn position(
        &self,
        labels: &[u8],
        memo: Option<(&Arc<[u8]>, &[u8])>,
    ) -> Result<(u32, bool), u32> {
        let hash = self.hash(labels);
        let at = find(&self.index, &self.entries, hash, labels).ok_or(hash)?;
        let stale = match (self.entries[at as usize].memo, memo) {
            (Some(held), Some((base, attributes))) => !self.memos.names(held, base, attributes),
            (held, memo) => held.is_some() != memo.is_some(),
        };
        Ok((at, stale))
    }

    /// The hash `labels` is filed under in this family.
    fn hash(&self, labels: &[u8]) -> u32 {
        set_hash(&self.hasher, labels)
    }

    /// Stores `points`, of the family update `meta` (label sets of new series in `labels`,
    /// attributes in `request`), adding deltas to what their series hold; lists each series
    /// updated in `touched` once, when remote write tracks them.
    fn put(
        &mut self,
        points: impl Iterator<Item = PointUpdate>,
        meta: &FamilyUpdate<'_>,
        labels: &[u8],
        request: &[u8],
        now: Instant,
        mut touched: Option<&mut Vec<Touched>>,
    ) {
        let delta = meta.delta;
        // The update's base in `memos`, found when a first memo is written.
        let mut base = None;
        let mut memo = |memos: &mut Memos, attributes: Option<&[u8]>| {
            // No attributes (`target_info`), no memo: its base would be held for nothing.
            let attributes = attributes?;
            let base = match base {
                Some(base) => base,
                None => *base.insert(memos.base(&meta.base)?),
            };
            memos.add(base, attributes)
        };
        // The entry of the point before, if it had one.
        let mut last: Option<u32> = None;
        for PointUpdate { target, attributes, value } in points {
            let attributes = attributes.map(|range| &request[range]);
            let (at, fresh) = match target {
                Target::Held { at, remember } => {
                    if remember {
                        let memo = memo(&mut self.memos, attributes);
                        let old = std::mem::replace(&mut self.entries[at as usize].memo, memo);
                        self.memos.retire(old);
                    }
                    (at, false)
                }
                Target::New { labels: range, hash } => {
                    let labels = &labels[range];
                    let hash = hash.unwrap_or_else(|| self.hash(labels));
                    let Self { name, entries, index, .. } = self;
                    // Sent twice in this request: stored by the first.
                    match find(index, entries, hash, labels) {
                        Some(at) => (at, false),
                        None => {
                            // Past 2^32 series a family's entries alone would fill 256 GiB.
                            let Ok(at) = u32::try_from(entries.len()) else {
                                tracing::warn!(family = %name, "a metric family holds 2^32 series: a new series is not stored");
                                continue;
                            };
                            // Its value and its listing are set below, as an update's are.
                            let series = Series { value: Value::Number(0.0), updated: now, pending: false };
                            let memo = memo(&mut self.memos, attributes);
                            entries.push(Entry { labels: intern(labels), series, next: NO_ENTRY, memo });
                            index.insert_unique(spread(hash), Slot { at, hash }, |slot| spread(slot.hash));
                            (at, true)
                        }
                    }
                }
            };
            let entries = &mut self.entries;
            if let Some(last) = last {
                entries[last as usize].next = at;
            }
            last = Some(at);
            let Entry { labels: interned, series, .. } = &mut entries[at as usize];
            series.value = match (&series.value, value) {
                (_, value) if fresh => value,
                (Value::Number(old), Value::Number(add)) if delta => Value::Number(old + add),
                (Value::Histogram(old), Value::Histogram(mut new)) if delta && old.bounds == new.bounds => {
                    // Counts come off the wire as any u64: saturate rather than wrap.
                    for (count, old) in new.counts.iter_mut().zip(&old.counts) {
                        *count = count.saturating_add(*old);
                    }
                    new.sum += old.sum;
                    new.count = new.count.saturating_add(old.count);
                    Value::Histogram(new)
                }
                (_, value) => value,
            };
            series.updated = now;
            // A series is listed once however often a batch updates it: no sorting or
            // deduplicating when the updates are taken (a sort of every touched label set was
            // 40% of remote write).
            if let Some(touched) = touched.as_deref_mut()
                && !std::mem::replace(&mut series.pending, true)
            {
                touched.push(Touched { family: self.name.clone(), labels: interned.clone(), at });
            }
        }
        self.memos.compact(&mut self.entries);
    }

    /// The series `touched` lists, if this family still holds it: where it was listed, or,
    /// when series expired since and positions moved, wherever its label set's hash finds it.
    fn listed(&mut self, touched: &Touched) -> Option<&mut Series> {
        let holds = |entries: &[Entry], at: u32| {
            entries.get(at as usize).is_some_and(|entry| entry.labels.same(&touched.labels))
        };
        let at = if holds(&self.entries, touched.at) {
            touched.at
        } else {
            let hash = self.hash(touched.labels.bytes());
            self.index.find(spread(hash), |slot| holds(&self.entries, slot.at))?.at
        };
        Some(&mut self.entries[at as usize].series)
    }

    /// Brings [`Self::scrape_order`] up to every entry: the series that came since the last
    /// scrape are sorted among themselves and merged in.
    fn order_for_scrape(&mut self) {
        let Self { entries, scrape_order, .. } = self;
        let sorted = scrape_order.len();
        if sorted == entries.len() {
            return;
        }
        let order = |a: &u32, b: &u32| entries[*a as usize].labels.cmp_pairs(&entries[*b as usize].labels);
        // Positions fit in a u32: `position` refuses a family's 2^32nd series.
        let mut came: Vec<u32> = (sorted..entries.len()).map(|at| at as u32).collect();
        came.sort_unstable_by(order);
        let (mut old, mut came) =
            (std::mem::take(scrape_order).into_iter().peekable(), came.into_iter().peekable());
        scrape_order.reserve(entries.len());
        while let (Some(o), Some(c)) = (old.peek(), came.peek()) {
            let next = if order(c, o).is_lt() { came.next() } else { old.next() };
            scrape_order.extend(next);
        }
        scrape_order.extend(old.chain(came));
    }

    /// Drops the series that `expired` picks.
    fn expire(&mut self, expired: impl Fn(&Series) -> bool) {
        let before = self.entries.len();
        let Self { entries, index, memos, hasher, scrape_order, .. } = self;
        entries.retain(|entry| {
            let expired = expired(&entry.series);
            if expired {
                memos.retire(entry.memo);
            }
            !expired
        });
        if entries.len() == before {
            return;
        }
        // Positions moved: index them again, forget the guesses and the scrape order.
        scrape_order.clear();
        index.clear();
        for (at, entry) in (0..).zip(entries.iter_mut()) {
            entry.next = NO_ENTRY;
            let hash = set_hash(hasher, entry.labels.bytes());
            index.insert_unique(spread(hash), Slot { at, hash }, |slot| spread(slot.hash));
        }
        memos.compact(entries);
    }
}

/// The hash a label set is filed under with `hasher`: half of foldhash's, which mixes every bit
/// into either half.
fn set_hash(hasher: &DefaultHashBuilder, labels: &[u8]) -> u32 {
    hasher.hash_one(labels) as u32
}

/// The position of the series `labels` (of hash `hash`) in a family's `entries`, by its `index`.
fn find(index: &HashTable<Slot>, entries: &[Entry], hash: u32, labels: &[u8]) -> Option<u32> {
    let holds = |slot: &Slot| slot.hash == hash && entries[slot.at as usize].labels.bytes() == labels;
    index.find(spread(hash), holds).map(|slot| slot.at)
}

/// What the exporter's settings add to every series.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Resource attributes copied onto every series as labels.
    pub resource_to_labels: Vec<String>,
    /// Labels added to every series.
    pub const_labels: Vec<(String, String)>,
    /// How long a series lives without an update.
    pub expiry: Duration,
    /// Remember which series each update touched (remote write sends just those).
    pub track_updates: bool,
}

impl Options {
    /// The options `series` sets, each constant label's name passed through `label_name`;
    /// `track_updates` as remote write needs it.
    pub fn of(series: &SeriesConfig, label_name: impl Fn(&str) -> String, track_updates: bool) -> Self {
        Options {
            resource_to_labels: series.resource_to_labels.clone(),
            const_labels: series.const_labels.iter().map(|(k, v)| (label_name(k), v.clone())).collect(),
            expiry: series.expiry.0,
            track_updates,
        }
    }
}

/// Every series, by family.
#[derive(Debug, Default)]
pub struct Store {
    families: BTreeMap<Arc<str>, Family>,
    options: Options,
    touched: Vec<Touched>,
    /// The buffers a request is read into, kept for the next one.
    updates: Updates,
}

/// One flat sample as the store holds it: the family's name and the suffix (`_bucket`, `_sum`,
/// `_count` or none) that make the metric's name, the series' labels sorted by name, the extra
/// label a bucket or quantile adds (`le`, `quantile`), and the value.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The family's name.
    pub name: &'a str,
    /// What follows the family's name in this sample's metric name.
    pub suffix: &'static str,
    /// The series' labels, sorted by name.
    pub labels: &'a LabelSet,
    /// `le` or `quantile` and its value, for a bucket or a quantile.
    pub extra: Option<(&'static str, &'a str)>,
    /// The sample's value.
    pub value: f64,
}

/// The family `meta` names, created if new; `None` when the name is taken by another type.
fn family<'a>(
    families: &'a mut BTreeMap<Arc<str>, Family>,
    meta: &FamilyUpdate<'_>,
) -> Option<&'a mut Family> {
    // Look up by `&str` first: the name is only allocated when the family is new.
    if !families.contains_key(&*meta.name) {
        let name: Arc<str> = (*meta.name).into();
        families.insert(name.clone(), Family::new(name, meta.kind, meta.help.to_string()));
    }
    let family = families.get_mut(&*meta.name)?;
    family.takes(meta.kind).then_some(family)
}

impl Store {
    /// A store applying `options`.
    pub fn new(options: Options) -> Self {
        Self { families: BTreeMap::new(), options, touched: Vec::new(), updates: Updates::default() }
    }

    /// Adds a batch of metrics: an encoded `ExportMetricsServiceRequest`. The store is left as
    /// it was when the request cannot be decoded.
    pub fn update(&mut self, request: &[u8], now: Instant) -> Result<(), DecodeError> {
        let mut updates = std::mem::take(&mut self.updates);
        let result = match updates.read(request, &self.options, &self.families) {
            Ok(families) => {
                self.apply(families, &mut updates, request, now);
                Ok(())
            }
            Err(_) => self.update_merged(request, &mut updates, now),
        };
        self.updates = updates;
        result
    }

    /// A request that leans on protobuf's merge rules (or is malformed): the owned decoder
    /// applies them (or reports the error), and its encoding, canonical, is read instead.
    fn update_merged(
        &mut self,
        request: &[u8],
        updates: &mut Updates,
        now: Instant,
    ) -> Result<(), DecodeError> {
        let canonical = Decoded::from_protobuf(Signal::Metrics, request)?.encode();
        let families = updates
            .read(&canonical, &self.options, &self.families)
            .map_err(|_| DecodeError("a metrics request not readable even as re-encoded".into()))?;
        self.apply(families, updates, &canonical, now);
        Ok(())
    }

    /// Stores what a request was read into, each family looked up once for all its points.
    fn apply(
        &mut self,
        families: Vec<FamilyUpdate<'_>>,
        updates: &mut Updates,
        request: &[u8],
        now: Instant,
    ) {
        let Updates { points, labels, .. } = updates;
        let mut points = points.drain(..);
        let mut touched = self.options.track_updates.then_some(&mut self.touched);
        for meta in &families {
            let family_points = points.by_ref().take(meta.points.len());
            match family(&mut self.families, meta) {
                Some(family) => family.put(family_points, meta, labels, request, now, touched.as_deref_mut()),
                None => family_points.for_each(drop),
            }
        }
    }

    /// Hands `emit` the current samples of every series updated since the last call, each
    /// series once; returns how many series that was.
    pub fn take_updated(&mut self, mut emit: impl FnMut(Sample<'_>)) -> usize {
        let touched = std::mem::take(&mut self.touched);
        let mut series_taken = 0;
        // A family's updates are listed together: it is looked up once for all of them.
        for updates in touched.chunk_by(|a, b| Arc::ptr_eq(&a.family, &b.family)) {
            let name = &updates[0].family;
            let Some(family) = self.families.get_mut(name) else { continue };
            for update in updates {
                // A series that expired since it was listed is gone, or holds another set now.
                let Some(series) = family.listed(update) else { continue };
                let labels = &update.labels;
                // Listed twice only if it expired and came back since: send it once.
                if !std::mem::replace(&mut series.pending, false) {
                    continue;
                }
                series_taken += 1;
                flatten(&series.value, |suffix, extra, value| {
                    emit(Sample { name, suffix, labels, extra, value })
                });
            }
        }
        // Keep the list's allocation for the next batch.
        self.touched = touched;
        self.touched.clear();
        series_taken
    }

    /// Drops series not updated within the expiry, and families left empty.
    pub fn expire(&mut self, now: Instant) {
        let expiry = self.options.expiry;
        for family in self.families.values_mut() {
            family.expire(|series| now.duration_since(series.updated) > expiry);
        }
        self.families.retain(|_, f| !f.entries.is_empty());
    }

    /// Number of live series.
    pub fn len(&self) -> usize {
        self.families.values().map(|f| f.entries.len()).sum()
    }

    /// Whether there are no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Prometheus text exposition format (0.0.4), each family's series in label order.
    pub fn render(&mut self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let mut out = String::with_capacity(self.len() * 96);
        for (name, family) in &mut self.families {
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            family.order_for_scrape();
            for &at in &family.scrape_order {
                let Entry { labels, series, .. } = &family.entries[at as usize];
                flatten(&series.value, |suffix, extra, value| {
                    sample(&mut out, name, suffix, labels, extra, value)
                });
            }
        }
        out
    }
}

/// Every sample of one series value: `(suffix, extra label, value)` — a number as itself, a
/// histogram as cumulative `_bucket{le}`s, `_sum` and `_count`, a summary as `{quantile}`s,
/// `_sum` and `_count`. The scrape text and remote write both read series through this.
fn flatten(value: &Value, mut emit: impl FnMut(&'static str, Option<(&'static str, &str)>, f64)) {
    // A bound's or quantile's text, written into one buffer for the whole series.
    let mut text = String::new();
    let label = |text: &mut String, v: f64| {
        text.clear();
        write_float(text, v);
    };
    match value {
        Value::Number(v) => emit("", None, *v),
        Value::Histogram(histogram) => {
            let HistogramValue { bounds, counts, sum, count } = &**histogram;
            let mut cumulative: u64 = 0;
            for (bound, c) in bounds.iter().zip(counts) {
                cumulative = cumulative.saturating_add(*c);
                label(&mut text, *bound);
                emit("_bucket", Some(("le", &text)), cumulative as f64);
            }
            emit("_bucket", Some(("le", "+Inf")), *count as f64);
            emit("_sum", None, *sum);
            emit("_count", None, *count as f64);
        }
        Value::Summary(summary) => {
            let SummaryValue { quantiles, sum, count } = &**summary;
            for (q, v) in quantiles {
                label(&mut text, *q);
                emit("", Some(("quantile", &text)), *v);
            }
            emit("_sum", None, *sum);
            emit("_count", None, *count as f64);
        }
    }
}

/// Appends `v` as the text format writes values and bounds.
fn write_float(out: &mut String, v: f64) {
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.is_nan() {
        out.push_str("NaN");
    } else {
        write_display(out, v);
    }
}

/// Appends a label value with `\`, `"` and newlines escaped.
fn write_escaped(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(at) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'\\' => r"\\",
            b'"' => r#"\""#,
            _ => r"\n",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &LabelSet,
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut pairs = labels.pairs().filter(|(_, v)| !v.is_empty()).chain(extra).peekable();
    if pairs.peek().is_some() {
        out.push('{');
        for (i, (k, v)) in pairs.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            write_escaped(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_float(out, value);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message as _;

    use super::*;

    /// Memos replaced round after round, each under a base of its own: once the stale outweigh
    /// the held, they are written out again, so bytes and bases stay bounded, and every memo
    /// held still names what it named.
    #[test]
    fn stale_memos_are_dropped_and_held_ones_kept() {
        let mut memos = Memos::default();
        let series = || Series { value: Value::Number(0.0), updated: Instant::now(), pending: false };
        let mut entries: Vec<Entry> = (0..3)
            .map(|_| Entry { labels: intern(b""), series: series(), next: NO_ENTRY, memo: None })
            .collect();
        let attributes = |round: u32, entry: usize| format!("{round}:{entry}");
        let mut previous_base: Option<Arc<[u8]>> = None;
        for round in 0..5_000 {
            let base: Arc<[u8]> = format!("base {round}").as_bytes().into();
            let at = memos.base(&base).expect("room for the base");
            for (i, entry) in entries.iter_mut().enumerate() {
                let memo = memos.add(at, attributes(round, i).as_bytes());
                let old = std::mem::replace(&mut entry.memo, memo);
                memos.retire(old);
            }
            memos.compact(&mut entries);
            assert!(memos.bytes.len() < 4096 + 64, "round {round}: {} bytes", memos.bytes.len());
            assert!(memos.bases.len() < 4096, "round {round}: {} bases", memos.bases.len());
            assert_eq!(memos.positions.len(), memos.bases.len(), "round {round}");
            for (i, entry) in entries.iter().enumerate() {
                let memo = entry.memo.expect("a memo");
                assert_eq!(memos.find_base(&base), Some(memo.base), "round {round}");
                assert!(memos.names(memo, &base, attributes(round, i).as_bytes()), "round {round}");
                assert!(!memos.names(memo, &base, attributes(round + 1, i).as_bytes()));
                if let Some(previous) = &previous_base {
                    assert!(!memos.names(memo, previous, attributes(round, i).as_bytes()));
                }
            }
            previous_base = Some(base);
        }
    }

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..Default::default()
        }
    }

    /// One gauge point from the resource `instance`.
    fn request(instance: &str) -> Vec<u8> {
        let point = NumberDataPoint { attributes: vec![text("gpu", "0")], ..Default::default() };
        let metric = Metric {
            name: "gpu.temperature".into(),
            data: Some(metric::Data::Gauge(Gauge { data_points: vec![point] })),
            ..Default::default()
        };
        let attributes = vec![text("service.name", "api"), text("service.instance.id", instance)];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource { attributes, ..Default::default() }),
                scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    /// Resources come and go (pods, say): a family keeps only the bases its memos name. A
    /// `target_info` series has no memo, so its family keeps none.
    #[test]
    fn a_family_keeps_only_the_bases_its_memos_name() {
        let mut store = Store::new(Options { expiry: Duration::from_secs(60), ..Options::default() });
        let now = Instant::now();
        for instance in 0..2_000 {
            store.update(&request(&instance.to_string()), now).expect("decodes");
        }
        let target_info = &store.families["target_info"];
        assert_eq!(target_info.memos.bases.len(), 0);
        let gauge = &store.families["gpu_temperature"];
        let memos = gauge.entries.iter().filter(|entry| entry.memo.is_some()).count();
        assert_eq!(memos, 2_000);
        assert!(gauge.memos.bases.len() <= memos, "{} bases", gauge.memos.bases.len());
    }

    /// A scrape writes a family's series in label order whether they came before the last
    /// scrape (its kept order), since (sorted and merged in) or survived an expiry.
    #[test]
    fn scrapes_write_series_in_label_order_as_series_come_and_expire() {
        let mut store = Store::new(Options { expiry: Duration::from_secs(60), ..Options::default() });
        let start = Instant::now();
        let instances = |seed: u32, count: u32| (0..count).map(move |i| (i * 7919 + seed * 104_729) % 1_000);
        let mut expected = std::collections::BTreeSet::new();
        let check = |store: &mut Store, expected: &std::collections::BTreeSet<String>| {
            let text = store.render();
            let lines: Vec<&str> = text.lines().filter(|line| line.starts_with("gpu_temperature{")).collect();
            assert!(lines.is_sorted(), "{lines:#?}");
            let instances: std::collections::BTreeSet<String> = lines
                .iter()
                .map(|line| line.split("instance=\"").nth(1).expect("instance"))
                .map(|rest| rest.split('"').next().expect("quoted").to_string())
                .collect();
            assert_eq!(&instances, expected);
        };
        for (round, seconds) in [(0, 0), (1, 0), (2, 40)] {
            for instance in instances(round, 150) {
                store
                    .update(&request(&instance.to_string()), start + Duration::from_secs(seconds))
                    .expect("decodes");
                expected.insert(instance.to_string());
            }
            check(&mut store, &expected);
        }
        // Rounds 0 and 1 are 70 s old and expire; round 2's series stay, joined by new ones.
        let later = start + Duration::from_secs(70);
        store.expire(later);
        expected = instances(2, 150).map(|instance| instance.to_string()).collect();
        check(&mut store, &expected);
        for instance in instances(3, 150) {
            store.update(&request(&instance.to_string()), later).expect("decodes");
            expected.insert(instance.to_string());
        }
        check(&mut store, &expected);
    }
}
