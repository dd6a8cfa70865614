//! `sluice top`: a running host's receivers, pipelines, plugins and exporters on one screen,
//! refreshed every interval, from what its admin listener serves to anyone (`/metrics` and the
//! `GET /reload` status): rates are the difference between two scrapes.
//!
//! On a terminal it takes the full screen (Tab switches the component shown, `s` the sort, `q`
//! quits); otherwise, or with `--once`, it prints one table and exits, so it works in scripts
//! and over plain SSH.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::health;

/// One sample: a series' labels and value.
type Labels = BTreeMap<String, String>;

/// Every series of one scrape, by metric name.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    series: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Scrape {
    /// Reads the Prometheus text format.
    pub fn parse(text: &str) -> Self {
        let mut series: BTreeMap<String, Vec<(Labels, f64)>> = BTreeMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#') && !line.is_empty()) {
            let (head, value) = match line.rsplit_once(' ') {
                Some((head, value)) => (head, value),
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (head, Labels::new()),
            };
            series.entry(name.to_string()).or_default().push((labels, value));
        }
        Self { series }
    }

    /// The series of `name` whose labels include `matching`.
    fn each<'a>(
        &'a self,
        name: &str,
        matching: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a (Labels, f64)> {
        self.series.get(name).into_iter().flatten().filter(move |(labels, _)| {
            matching.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of `name`'s series, grouped by the value of label `by`.
    fn by(&self, name: &str, by: &str, matching: &[(&str, &str)]) -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for (labels, value) in self.each(name, matching) {
            *sums.entry(labels.get(by).cloned().unwrap_or_default()).or_insert(0.0) += value;
        }
        sums
    }
}

fn parse_labels(text: &str) -> Labels {
    let mut labels = Labels::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end.min(after.len())..];
    }
    labels
}

/// The component kinds, in the order Tab cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every kind, one section each.
    All,
    /// Receivers.
    Receivers,
    /// Pipelines.
    Pipelines,
    /// Plugins.
    Plugins,
    /// Exporters.
    Exporters,
}

impl View {
    fn next(self) -> Self {
        match self {
            View::All => View::Receivers,
            View::Receivers => View::Pipelines,
            View::Pipelines => View::Plugins,
            View::Plugins => View::Exporters,
            View::Exporters => View::All,
        }
    }

    fn shows(self, section: View) -> bool {
        self == View::All || self == section
    }
}

/// How rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// By name.
    Name,
    /// Busiest first (the first rate column).
    Rate,
}

/// One table: a title, column headers, and rows whose first cell is the name.
struct Table {
    title: &'static str,
    headers: &'static [&'static str],
    rows: Vec<Vec<String>>,
    /// Each row's first rate, for sorting.
    rates: Vec<f64>,
}

fn per_second(now: f64, before: f64, seconds: f64) -> f64 {
    ((now - before) / seconds).max(0.0)
}

fn rate(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.2}M/s", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k/s", v / 1e3),
        v => format!("{v:.0}/s"),
    }
}

/// The 99th percentile of the calls between two scrapes of a histogram, as "≤ bound".
fn p99(now: &Scrape, before: &Scrape, matching: &[(&str, &str)]) -> String {
    let buckets = |scrape: &Scrape| -> Vec<(f64, f64)> {
        let mut buckets: Vec<(f64, f64)> = scrape
            .each("sluice_plugin_call_duration_seconds_bucket", matching)
            .map(|(labels, count)| {
                let le = labels.get("le").map_or(f64::INFINITY, |le| le.parse().unwrap_or(f64::INFINITY));
                (le, *count)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    };
    let (now, before) = (buckets(now), buckets(before));
    let delta: Vec<(f64, f64)> = now
        .iter()
        .map(|(le, count)| (*le, count - before.iter().find(|(b, _)| b == le).map_or(0.0, |(_, c)| *c)))
        .collect();
    let Some(&(_, total)) = delta.last() else { return "-".into() };
    if total <= 0.0 {
        return "-".into();
    }
    match delta.iter().find(|(_, count)| *count >= 0.99 * total) {
        Some((le, _)) if le.is_finite() => format!("≤{:.2}ms", le * 1e3),
        _ => "slow".into(),
    }
}

/// The tables for two scrapes `seconds` apart.
fn tables(now: &Scrape, before: &Scrape, seconds: f64) -> Vec<(View, Table)> {
    let delta = |name: &str, by: &str, matching: &[(&str, &str)]| -> BTreeMap<String, f64> {
        let (n, b) = (now.by(name, by, matching), before.by(name, by, matching));
        n.iter()
            .map(|(k, v)| (k.clone(), per_second(*v, b.get(k).copied().unwrap_or(0.0), seconds)))
            .collect()
    };
    let gauge = |name: &str, by: &str, matching: &[(&str, &str)]| now.by(name, by, matching);
    let queue = |stage: &str, name: &str| {
        let m = [("stage", stage), ("name", name)];
        let depth = now.each("sluice_queue_depth", &m).map(|(_, v)| *v).sum::<f64>();
        let capacity = now.each("sluice_queue_capacity", &m).map(|(_, v)| *v).sum::<f64>();
        format!("{depth:.0}/{capacity:.0}")
    };
    let mut out = Vec::new();

    let accepted = delta("sluice_receiver_accepted_items_total", "receiver", &[]);
    let refused = delta("sluice_receiver_refused_items_total", "receiver", &[]);
    let refused_requests = delta("sluice_receiver_refused_requests_total", "receiver", &[]);
    let mut receivers = Table {
        title: "RECEIVERS",
        headers: &["receiver", "accepted", "refused items", "refused requests"],
        rows: vec![],
        rates: vec![],
    };
    for (name, accepted) in &accepted {
        receivers.rates.push(*accepted);
        receivers.rows.push(vec![
            name.clone(),
            rate(*accepted),
            rate(refused.get(name).copied().unwrap_or(0.0)),
            rate(refused_requests.get(name).copied().unwrap_or(0.0)),
        ]);
    }
    out.push((View::Receivers, receivers));

    let pending = gauge("sluice_pending_items", "name", &[("stage", "pipeline")]);
    let mut pipelines = Table {
        title: "PIPELINES",
        headers: &["pipeline", "queue", "pending items"],
        rows: vec![],
        rates: vec![],
    };
    for (name, pending) in &pending {
        pipelines.rates.push(*pending);
        pipelines.rows.push(vec![name.clone(), queue("pipeline", name), format!("{pending:.0}")]);
    }
    out.push((View::Pipelines, pipelines));

    let mut plugins = Table {
        title: "PLUGINS",
        headers: &["pipeline/plugin", "in", "out", "dropped", "faults", "p99 call"],
        rows: vec![],
        rates: vec![],
    };
    let mut keys: Vec<(String, String)> = now
        .each("sluice_plugin_calls_total", &[])
        .map(|(l, _)| {
            (l.get("pipeline").cloned().unwrap_or_default(), l.get("plugin").cloned().unwrap_or_default())
        })
        .collect();
    keys.dedup();
    for (pipeline, plugin) in keys {
        let m = [("pipeline", pipeline.as_str()), ("plugin", plugin.as_str())];
        let total = |scrape: &Scrape, name: &str| scrape.each(name, &m).map(|(_, v)| *v).sum::<f64>();
        let d = |name: &str| per_second(total(now, name), total(before, name), seconds);
        let faults = total(now, "sluice_plugin_faults_total") - total(before, "sluice_plugin_faults_total");
        plugins.rates.push(d("sluice_plugin_items_in_total"));
        let label =
            if pipeline.is_empty() { format!("(exporter)/{plugin}") } else { format!("{pipeline}/{plugin}") };
        plugins.rows.push(vec![
            label,
            rate(d("sluice_plugin_items_in_total")),
            rate(d("sluice_plugin_items_out_total")),
            rate(d("sluice_plugin_items_dropped_total")),
            format!("{faults:.0}"),
            p99(now, before, &m),
        ]);
    }
    out.push((View::Plugins, plugins));

    let sent = delta("sluice_exporter_sent_items_total", "exporter", &[]);
    let failed = delta("sluice_exporter_failed_items_total", "exporter", &[]);
    let retried = delta("sluice_exporter_retried_items_total", "exporter", &[]);
    let dropped = delta("sluice_exporter_dropped_items_total", "exporter", &[]);
    let mut exporters = Table {
        title: "EXPORTERS",
        headers: &["exporter", "sent", "failed", "retried", "dropped", "queue"],
        rows: vec![],
        rates: vec![],
    };
    for (name, sent) in &sent {
        let get = |m: &BTreeMap<String, f64>| rate(m.get(name).copied().unwrap_or(0.0));
        exporters.rates.push(*sent);
        exporters.rows.push(vec![
            name.clone(),
            rate(*sent),
            get(&failed),
            get(&retried),
            get(&dropped),
            queue("exporter", name),
        ]);
    }
    out.push((View::Exporters, exporters));
    out
}

/// The screen: the tables `view` shows, sorted by `sort`, with the header line.
pub fn render(now: &Scrape, before: &Scrape, seconds: f64, reload: &str, view: View, sort: Sort) -> String {
    let mut screen = String::new();
    let successes = now.by("sluice_reload_total", "result", &[]);
    let _ = writeln!(
        screen,
        "Sluice top — every {seconds:.1}s — view: {view:?} (Tab), sort: {sort:?} (s), quit: q\n\
         reloads: {:.0} ok, {:.0} failed — {reload}\n",
        successes.get("success").copied().unwrap_or(0.0),
        successes.get("failure").copied().unwrap_or(0.0),
    );
    for (section, mut table) in tables(now, before, seconds) {
        if !view.shows(section) {
            continue;
        }
        let mut order: Vec<usize> = (0..table.rows.len()).collect();
        match sort {
            Sort::Rate => order.sort_by(|a, b| table.rates[*b].total_cmp(&table.rates[*a])),
            Sort::Name => order.sort_by(|a, b| table.rows[*a][0].cmp(&table.rows[*b][0])),
        }
        let rows: Vec<Vec<String>> = order.into_iter().map(|i| std::mem::take(&mut table.rows[i])).collect();
        let mut widths: Vec<usize> = table.headers.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(
                    |(i, (cell, width))| {
                        if i == 0 { format!("{cell:<width$}") } else { format!("{cell:>width$}") }
                    },
                )
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(screen, "{}", table.title);
        let _ = writeln!(screen, "{}", line(table.headers.to_vec()));
        if rows.is_empty() {
            let _ = writeln!(screen, "(none)");
        }
        for row in &rows {
            let _ = writeln!(screen, "{}", line(row.iter().map(String::as_str).collect()));
        }
        screen.push('\n');
    }
    screen
}

/// Scrapes `/metrics` and the `GET /reload` status line.
fn scrape(address: SocketAddr) -> Result<(Scrape, String), String> {
    let (_, text) = health::get(address, "/metrics", Duration::from_secs(3))?;
    let reload = health::get(address, "/reload", Duration::from_secs(3))
        .map(|(_, body)| body.lines().next().unwrap_or("").to_string())
        .unwrap_or_else(|e| format!("reload status unavailable: {e}"));
    Ok((Scrape::parse(&text), reload))
}

/// Runs `sluice top` against the admin listener at `address`.
pub fn run(address: SocketAddr, interval: Duration, once: bool) -> Result<(), String> {
    let interval = interval.max(Duration::from_millis(100));
    let (mut before, _) = scrape(address)?;
    let mut taken = Instant::now();
    if once || !std::io::stdout().is_terminal() {
        std::thread::sleep(interval);
        let (now, reload) = scrape(address)?;
        print!("{}", render(&now, &before, taken.elapsed().as_secs_f64(), &reload, View::All, Sort::Name));
        return Ok(());
    }
    use crossterm::event::{Event, KeyCode, KeyEventKind, poll, read};
    use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
    terminal::enable_raw_mode().map_err(|e| format!("cannot use the terminal: {e}"))?;
    let mut out = std::io::stdout();
    let _ = crossterm::execute!(out, EnterAlternateScreen);
    let (mut view, mut sort) = (View::All, Sort::Name);
    // The last two scrapes, so that a key redraws at once instead of at the next interval.
    let mut frame: Option<(Scrape, Scrape, f64, String)> = None;
    let result = 'run: loop {
        let shown = match &frame {
            Some((now, before, seconds, reload)) => render(now, before, *seconds, reload, view, sort),
            None => "Sluice top: waiting for the first interval…\n".to_string(),
        };
        let _ = write!(out, "\x1b[2J\x1b[H{}", shown.replace('\n', "\r\n"));
        let _ = out.flush();
        let until = taken + interval;
        while Instant::now() < until {
            if !poll(until.saturating_duration_since(Instant::now())).unwrap_or(false) {
                continue;
            }
            let Ok(Event::Key(key)) = read() else { continue };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match key.code {
                KeyCode::Char('q') | KeyCode::Esc => break 'run Ok(()),
                KeyCode::Tab => view = view.next(),
                KeyCode::Char('s') => sort = if sort == Sort::Name { Sort::Rate } else { Sort::Name },
                _ => continue,
            }
            continue 'run;
        }
        match scrape(address) {
            Ok((now, reload)) => {
                let seconds = taken.elapsed().as_secs_f64();
                taken = Instant::now();
                let previous = std::mem::replace(&mut before, now.clone());
                frame = Some((now, previous, seconds, reload));
            }
            Err(error) => break Err(error),
        }
    };
    let _ = crossterm::execute!(out, LeaveAlternateScreen);
    let _ = terminal::disable_raw_mode();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# TYPE x counter\n\
        sluice_receiver_accepted_items_total{receiver=\"otlp\",transport=\"grpc\",signal=\"traces\"} 100\n\
        sluice_exporter_sent_items_total{exporter=\"out\",signal=\"traces\"} 50\n\
        sluice_plugin_calls_total{pipeline=\"all\",plugin=\"drop\"} 1\n\
        sluice_plugin_call_duration_seconds_bucket{pipeline=\"all\",plugin=\"drop\",le=\"0.001\"} 0\n\
        sluice_plugin_call_duration_seconds_bucket{pipeline=\"all\",plugin=\"drop\",le=\"+Inf\"} 0\n";
    const NOW: &str = "sluice_receiver_accepted_items_total{receiver=\"otlp\",transport=\"grpc\",signal=\"traces\"} 300\n\
        sluice_receiver_accepted_items_total{receiver=\"otlp\",transport=\"http\",signal=\"logs\"} 100\n\
        sluice_exporter_sent_items_total{exporter=\"out\",signal=\"traces\"} 250\n\
        sluice_queue_depth{stage=\"exporter\",name=\"out\"} 3\n\
        sluice_queue_capacity{stage=\"exporter\",name=\"out\"} 256\n\
        sluice_plugin_calls_total{pipeline=\"all\",plugin=\"drop\"} 101\n\
        sluice_plugin_items_in_total{pipeline=\"all\",plugin=\"drop\"} 1000\n\
        sluice_plugin_call_duration_seconds_bucket{pipeline=\"all\",plugin=\"drop\",le=\"0.001\"} 99\n\
        sluice_plugin_call_duration_seconds_bucket{pipeline=\"all\",plugin=\"drop\",le=\"+Inf\"} 100\n";

    #[test]
    fn rates_are_the_difference_of_two_scrapes() {
        let screen =
            render(&Scrape::parse(NOW), &Scrape::parse(BEFORE), 2.0, "no reload yet", View::All, Sort::Name);
        let line = |start: &str| {
            screen.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start}: {screen}"))
        };
        assert!(line("otlp").contains("150/s"), "(300 + 100 - 100) / 2 s: {screen}");
        assert!(line("out ").contains("100/s") && line("out ").contains("3/256"), "{screen}");
        assert!(line("all/drop").contains("500/s") && line("all/drop").contains("≤1.00ms"), "{screen}");
        let only = render(&Scrape::parse(NOW), &Scrape::parse(BEFORE), 2.0, "", View::Exporters, Sort::Rate);
        assert!(only.contains("EXPORTERS") && !only.contains("RECEIVERS"), "{only}");
    }

    #[test]
    fn labels_with_escapes_parse() {
        let labels = parse_labels(r#"a="x\"y",b="z""#);
        assert_eq!(labels.get("a").map(String::as_str), Some("x\"y"));
        assert_eq!(labels.get("b").map(String::as_str), Some("z"));
    }
}
