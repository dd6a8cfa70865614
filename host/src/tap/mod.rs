//! Taps: live samples of the items passing a point of a pipeline, with what each plugin did to
//! them, for `sluice tap` and `GET /tap`.
//!
//! Nothing is copied, rendered or even looked up while nobody taps: a pipeline reads one atomic
//! counter per batch ([`Taps::watching`]). While someone does, the pipeline follows each batch's
//! items through its chain (a [`Trail`]) and offers each watcher a [`Sample`] — shared bytes and
//! that trail — through a small bounded channel. A watcher that reads slower than the pipeline
//! runs loses samples, never the pipeline's time: a full channel refuses the sample and the
//! watcher is told how many it missed. Decoding and rendering happen on the watcher's side.

mod render;
mod trail;

pub use render::{DEFAULT_RATE, Format, Match, Request, missed_line, render};
pub use trail::{Action, Origin, Step, Trail, received};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::Signal;
use crate::metrics::Metrics;

/// Where in a pipeline a tap looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    /// Items as the pipeline received them, with every plugin's verdict.
    Receiver,
    /// Items as they leave the named plugin, and those it dropped.
    After(String),
    /// Items as they are handed to the named exporter.
    Exporter(String),
}

impl Point {
    /// Parses `receiver`, `after:PLUGIN` or `exporter:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "receiver" => Ok(Point::Receiver),
            Some(("after", plugin)) if !plugin.is_empty() => Ok(Point::After(plugin.to_string())),
            Some(("exporter", name)) if !name.is_empty() => Ok(Point::Exporter(name.to_string())),
            _ => Err(format!("stage `{text}` is none of `receiver`, `after:PLUGIN`, `exporter:NAME`")),
        }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Receiver => f.write_str("receiver"),
            Point::After(plugin) => write!(f, "after:{plugin}"),
            Point::Exporter(name) => write!(f, "exporter:{name}"),
        }
    }
}

/// What a pipeline hands a watcher: one batch's items at one point.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The pipeline.
    pub pipeline: Arc<str>,
    /// Where it was taken.
    pub point: Arc<str>,
    /// The items' signal.
    pub signal: Signal,
    /// The encoded request (shared with the pipeline, not copied).
    pub payload: Bytes,
    /// The route the items take (`None`: the default).
    pub route: Option<Arc<str>>,
    /// For each item of `payload`, its index in the batch as the pipeline received it.
    pub origin: Origin,
    /// Which items of `payload` to show, by index, ascending (`None`: all).
    pub only: Option<Vec<u32>>,
    /// What the plugins did to each received item (by its index as received).
    pub trail: Arc<Trail>,
}

/// Every pipeline of `config` and the points it has: `receiver`, `after:` each of its
/// processors, `exporter:` each exporter it or a route sends to.
pub fn points(config: &crate::config::Config) -> BTreeMap<String, Vec<Point>> {
    config
        .pipelines
        .iter()
        .map(|(id, pipeline)| {
            let mut points = vec![Point::Receiver];
            points.extend(pipeline.processors.iter().map(|p| Point::After(p.display_name())));
            let exporters = std::iter::once(&pipeline.exporters).chain(pipeline.routes.values());
            for exporter in exporters.flat_map(|list| list.get_ref()) {
                let point = Point::Exporter(exporter.get_ref().clone());
                if !points.contains(&point) {
                    points.push(point);
                }
            }
            (id.to_string(), points)
        })
        .collect()
}

/// One watcher: what it taps and where its samples go.
#[derive(Debug)]
struct Watcher {
    /// Which subscription it is.
    id: u64,
    pipeline: Option<String>,
    point: Point,
    signal: Option<Signal>,
    samples: mpsc::Sender<Sample>,
    /// Samples refused because its channel was full.
    missed: Arc<AtomicU64>,
    /// How many items it may still be handed this second.
    budget: Mutex<Budget>,
}

/// A watcher's items per second: what a tap costs the host is bounded by what it asked to see.
#[derive(Debug)]
struct Budget {
    per_second: u64,
    window: Instant,
    used: u64,
}

impl Watcher {
    /// Whether it may be handed more items this second.
    fn has_room(&self) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        if budget.window.elapsed() >= Duration::from_secs(1) {
            budget.window = Instant::now();
            budget.used = 0;
        }
        budget.used < budget.per_second
    }

    /// Counts `items` handed to it.
    fn charge(&self, items: u64) {
        self.budget.lock().unwrap_or_else(|p| p.into_inner()).used += items;
    }
}

/// The host's taps: who watches, and which points each pipeline has.
#[derive(Debug, Default)]
pub struct Taps {
    /// How many watchers there are: the only thing a pipeline reads while there are none.
    count: AtomicUsize,
    watchers: Mutex<Vec<Arc<Watcher>>>,
    /// Pipeline → the points it has, for checking a request and listing the choices.
    points: Mutex<BTreeMap<String, Vec<Point>>>,
    /// `sluice_tap_watchers`.
    open: Gauge,
    /// The next subscription's id.
    next_id: AtomicU64,
    /// Set when the host stops: no new taps.
    closed: std::sync::atomic::AtomicBool,
    /// `sluice_tap_missed_samples_total`.
    missed: Counter,
}

/// The most batches a watcher may have waiting: more, and new samples are refused (counted).
pub const SAMPLES_WAITING: usize = 16;

impl Taps {
    /// No taps yet, counted in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            open: metrics.tap_watchers.clone(),
            missed: metrics.tap_missed_samples.clone(),
            ..Self::default()
        }
    }

    /// Whether anyone watches at all: one atomic load, all a pipeline pays while nobody does.
    #[inline]
    pub fn watching(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Records the points each pipeline of the serving topology has (after every change).
    pub fn set_points(&self, points: BTreeMap<String, Vec<Point>>) {
        *self.points.lock().unwrap_or_else(|p| p.into_inner()) = points;
    }

    /// The watchers of `pipeline` that may be handed more items this second, if any: with
    /// none, the batch runs as if nobody watched.
    pub fn on(&self, pipeline: &str) -> Option<Watchers> {
        if !self.watching() {
            return None;
        }
        let watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        let list: Vec<Arc<Watcher>> = watchers
            .iter()
            .filter(|w| w.pipeline.as_deref().is_none_or(|p| p == pipeline) && w.has_room())
            .cloned()
            .collect();
        (!list.is_empty()).then(|| Watchers {
            pipeline: Arc::from(pipeline),
            list,
            missed: self.missed.clone(),
        })
    }

    /// Starts watching what `request` asks for: its point of its pipeline (every pipeline that
    /// has it when `None`), for its signal (all when `None`), at most its `rate` items a second.
    /// Refuses a pipeline or point the serving topology doesn't have, listing those it does.
    pub fn watch(self: &Arc<Self>, request: &Request) -> Result<Subscription, String> {
        let (pipeline, point) = (request.pipeline.as_deref(), request.point.clone());
        if self.closed.load(Ordering::Relaxed) {
            return Err("the host is shutting down".into());
        }
        let points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let known = |list: &Vec<Point>| list.contains(&point);
        let found = match pipeline {
            Some(name) => {
                let list = points.get(name).ok_or_else(|| {
                    let names: Vec<&str> = points.keys().map(String::as_str).collect();
                    format!("no pipeline `{name}`; the pipelines are: {}", names.join(", "))
                })?;
                known(list).then_some(()).ok_or_else(|| {
                    let list: Vec<String> = list.iter().map(Point::to_string).collect();
                    format!("pipeline `{name}` has no stage `{point}`; its stages are: {}", list.join(", "))
                })
            }
            None => points.values().any(known).then_some(()).ok_or_else(|| {
                format!("no pipeline has a stage `{point}`; name one with `pipeline` to see its stages")
            }),
        };
        drop(points);
        found?;
        let (samples, receiver) = mpsc::channel(SAMPLES_WAITING);
        let missed = Arc::new(AtomicU64::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let watcher = Arc::new(Watcher {
            id,
            pipeline: pipeline.map(str::to_string),
            point,
            signal: request.signal,
            budget: Mutex::new(Budget { per_second: request.rate, window: Instant::now(), used: 0 }),
            samples,
            missed: missed.clone(),
        });
        self.watchers.lock().unwrap_or_else(|p| p.into_inner()).push(watcher);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.open.inc();
        // The subscription holds no sender: once the taps let go of the watcher (on close), its
        // stream ends.
        Ok(Subscription { taps: self.clone(), id, receiver, missed })
    }

    /// Ends every tap and refuses new ones: the host is stopping (an open tap's stream would
    /// otherwise keep the admin listener from closing).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        // Dropping the senders ends each watcher's stream once the pipelines let go of theirs.
        for _ in watchers.drain(..) {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.open.dec();
        }
    }

    fn unwatch(&self, id: u64) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = watchers.iter().position(|w| w.id == id) {
            watchers.swap_remove(at);
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.open.dec();
        }
    }
}

/// A watcher's end: its samples, until it is dropped.
#[derive(Debug)]
pub struct Subscription {
    taps: Arc<Taps>,
    id: u64,
    receiver: mpsc::Receiver<Sample>,
    missed: Arc<AtomicU64>,
}

impl Subscription {
    /// The next sample; `None` once the host stops.
    pub async fn next(&mut self) -> Option<Sample> {
        self.receiver.recv().await
    }

    /// How many samples were refused since the last call, because this watcher was behind.
    pub fn take_missed(&self) -> u64 {
        self.missed.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.taps.unwatch(self.id);
    }
}

/// The watchers of one pipeline, for one batch.
#[derive(Debug)]
pub struct Watchers {
    pipeline: Arc<str>,
    list: Vec<Arc<Watcher>>,
    missed: Counter,
}

impl Watchers {
    /// Whether anyone watches `point`.
    pub fn want(&self, point: &Point) -> bool {
        self.list.iter().any(|w| &w.point == point)
    }

    /// Whether anyone watches the items after any plugin.
    pub fn want_any_plugin(&self) -> bool {
        self.list.iter().any(|w| matches!(w.point, Point::After(_)))
    }

    /// Offers those watching `point` for `signal` a sample, made only if someone does (shared
    /// bytes and trail, cloned per watcher). A watcher whose channel is full misses it, and
    /// counts that.
    pub fn offer(&self, point: &Point, signal: Signal, sample: impl FnOnce(Arc<str>, Arc<str>) -> Sample) {
        let mut watching =
            self.list.iter().filter(|w| &w.point == point && w.signal.is_none_or(|s| s == signal)).peekable();
        if watching.peek().is_none() {
            return;
        }
        let sample = sample(self.pipeline.clone(), Arc::from(point.to_string()));
        let items = sample.only.as_ref().map_or(sample.origin.len(), Vec::len) as u64;
        for watcher in watching {
            if watcher.samples.try_send(sample.clone()).is_ok() {
                watcher.charge(items);
            } else {
                watcher.missed.fetch_add(1, Ordering::Relaxed);
                self.missed.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;
    use crate::plugins::testing::spans;

    fn wanting(pipeline: Option<&str>, point: Point, signal: Option<Signal>) -> Request {
        Request {
            pipeline: pipeline.map(str::to_string),
            point,
            signal,
            ..Request::parse("").expect("the defaults")
        }
    }

    fn taps() -> Arc<Taps> {
        let taps = Arc::new(Taps::new(&Metrics::new()));
        let points =
            |extra: &str| vec![Point::Receiver, Point::After(extra.into()), Point::Exporter("out".into())];
        taps.set_points(BTreeMap::from([
            ("one".into(), points("drop-spans")),
            ("two".into(), points("tag")),
        ]));
        taps
    }

    fn sample(pipeline: Arc<str>, point: Arc<str>) -> Sample {
        let batch = spans(&["a"]);
        Sample {
            pipeline,
            point,
            signal: Signal::Traces,
            payload: batch.payload().clone(),
            route: None,
            origin: Arc::from([0]),
            only: None,
            trail: Arc::new(Trail::new(1)),
        }
    }

    #[test]
    fn a_tap_names_a_pipeline_and_stage_the_host_has() {
        let taps = taps();
        let error = taps.watch(&wanting(Some("three"), Point::Receiver, None)).expect_err("no such pipeline");
        assert!(error.contains("the pipelines are: one, two"), "{error}");
        let error =
            taps.watch(&wanting(Some("one"), Point::After("tag".into()), None)).expect_err("not in `one`");
        assert!(error.contains("its stages are: receiver, after:drop-spans, exporter:out"), "{error}");
        assert!(taps.watch(&wanting(None, Point::After("tag".into()), None)).is_ok(), "some pipeline has it");
        assert!(taps.watch(&wanting(None, Point::Exporter("gone".into()), None)).is_err());
        assert_eq!(Point::parse("exporter:out"), Ok(Point::Exporter("out".into())));
        assert!(Point::parse("after:").is_err() && Point::parse("sender").is_err());
    }

    #[test]
    fn samples_reach_only_the_watchers_of_their_pipeline_point_and_signal() {
        let taps = taps();
        assert!(!taps.watching() && taps.on("one").is_none(), "nobody watches: nothing to look up");
        let mut receiver_of_one = taps.watch(&wanting(Some("one"), Point::Receiver, None)).expect("watch");
        let mut logs_anywhere =
            taps.watch(&wanting(None, Point::Receiver, Some(Signal::Logs))).expect("watch");
        let mut exporter_of_any =
            taps.watch(&wanting(None, Point::Exporter("out".into()), None)).expect("watch");
        assert!(taps.watching());
        for pipeline in ["one", "two"] {
            let watchers = taps.on(pipeline).expect("watched");
            watchers.offer(&Point::Receiver, Signal::Traces, sample);
            watchers.offer(&Point::Exporter("out".into()), Signal::Traces, sample);
        }
        let got = |s: &mut Subscription| {
            let mut seen = Vec::new();
            while let Some(Some(sample)) = s.next().now_or_never() {
                seen.push(format!("{} {}", sample.pipeline, sample.point));
            }
            seen
        };
        assert_eq!(got(&mut receiver_of_one), ["one receiver"]);
        assert!(got(&mut logs_anywhere).is_empty(), "traces only were offered");
        assert_eq!(got(&mut exporter_of_any), ["one exporter:out", "two exporter:out"]);
    }

    #[test]
    fn a_watcher_that_falls_behind_misses_samples_and_is_told_how_many() {
        let metrics = Metrics::new();
        let taps = Arc::new(Taps::new(&metrics));
        taps.set_points(BTreeMap::from([("one".into(), vec![Point::Receiver])]));
        let mut slow = taps.watch(&wanting(None, Point::Receiver, None)).expect("watch");
        let watchers = taps.on("one").expect("watched");
        for _ in 0..SAMPLES_WAITING + 5 {
            // Never waits: a full channel refuses at once.
            watchers.offer(&Point::Receiver, Signal::Traces, sample);
        }
        assert_eq!(slow.take_missed(), 5);
        assert_eq!(slow.take_missed(), 0, "told once");
        assert_eq!(metrics.tap_missed_samples.get(), 5);
        assert!(slow.next().now_or_never().flatten().is_some(), "the first ones are kept");
    }

    #[test]
    fn a_watcher_is_handed_no_more_than_its_rate() {
        let taps = taps();
        let request = Request { rate: 150, ..wanting(None, Point::Receiver, None) };
        let mut watched = taps.watch(&request).expect("watch");
        let mut offered = 0;
        for _ in 0..5 {
            // 100 items a batch: the second batch passes the 150 a second, the third is not offered.
            if let Some(watchers) = taps.on("one") {
                watchers.offer(&Point::Receiver, Signal::Traces, |pipeline, point| Sample {
                    origin: (0..100).collect(),
                    ..sample(pipeline, point)
                });
                offered += 1;
            }
        }
        assert_eq!(offered, 2, "past its rate the pipeline runs as if nobody watched");
        assert_eq!(watched.take_missed(), 0, "sampled out, not missed");
        assert!(watched.next().now_or_never().flatten().is_some());
    }

    #[test]
    fn leaving_or_closing_ends_the_watch() {
        let metrics = Metrics::new();
        let taps = Arc::new(Taps::new(&metrics));
        taps.set_points(BTreeMap::from([("one".into(), vec![Point::Receiver])]));
        let left = taps.watch(&wanting(None, Point::Receiver, None)).expect("watch");
        let mut stays = taps.watch(&wanting(None, Point::Receiver, None)).expect("watch");
        assert_eq!(metrics.tap_watchers.get(), 2);
        drop(left);
        assert_eq!(metrics.tap_watchers.get(), 1);
        taps.close();
        assert!(!taps.watching());
        assert_eq!(metrics.tap_watchers.get(), 0);
        assert!(matches!(stays.next().now_or_never(), Some(None)), "the stream ends");
        assert!(taps.watch(&wanting(None, Point::Receiver, None)).is_err(), "no new taps while stopping");
        drop(stays);
        assert_eq!(metrics.tap_watchers.get(), 0, "not counted down twice");
    }
}
