//! Metric and label names as the OpenTelemetry "Prometheus and OpenMetrics compatibility" spec
//! maps them: invalid characters to `_`, the unit as a suffix, `_total` for counters.

/// A Prometheus-safe name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, runs of `_` collapsed.
pub fn sanitize_metric(name: &str) -> String {
    sanitize(name, true)
}

/// A Prometheus-safe label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn sanitize_label(name: &str) -> String {
    let mut out = String::new();
    write_label(&mut out, name);
    out
}

/// Appends `name` as [`sanitize_label`] makes it.
pub fn write_label(out: &mut String, name: &str) {
    let start = out.len();
    sanitize_into(out, name, false);
    if out[start..].starts_with("__") {
        out.insert_str(start, "key");
    }
}

fn sanitize(name: &str, allow_colon: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    sanitize_into(&mut out, name, allow_colon);
    out
}

fn sanitize_into(out: &mut String, name: &str, allow_colon: bool) {
    // Most names are already valid: copy them whole (a label name is written per data point).
    // One pass over the bytes: `str::contains("__")` set up a substring search per label.
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (allow_colon && b == b':');
    let already_valid = name.bytes().next().is_some_and(|first| !first.is_ascii_digit())
        && name.bytes().all(valid)
        && !name.as_bytes().windows(2).any(|pair| pair == b"__");
    if already_valid {
        out.push_str(name);
        return;
    }
    let start = out.len();
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && out[start..].ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out[start..].starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(start, '_');
    }
    if out.len() == start {
        out.push('_');
    }
}

fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

/// The unit suffix for a UCUM unit: `s` → `seconds`, `By/s` → `bytes_per_second`, annotations
/// in braces (`{requests}`) → nothing, `1` → `ratio` for gauges only.
pub fn unit_suffix(unit: &str, is_gauge: bool) -> Option<String> {
    let unit = unit.trim();
    if unit.is_empty() || unit.starts_with('{') {
        return None;
    }
    if unit == "1" {
        return is_gauge.then(|| "ratio".to_string());
    }
    if let Some((num, per)) = unit.split_once('/') {
        let num = unit_word(num)
            .map(str::to_string)
            .or_else(|| (!num.starts_with('{')).then(|| sanitize_metric(num)));
        let per = match per {
            "s" => "second".to_string(),
            "m" => "minute".to_string(),
            "h" => "hour".to_string(),
            "d" => "day".to_string(),
            other => unit_word(other).map_or_else(|| sanitize_metric(other), str::to_string),
        };
        return Some(match num {
            Some(num) => format!("{num}_per_{per}"),
            None => format!("per_{per}"),
        });
    }
    Some(unit_word(unit).map_or_else(|| sanitize_metric(unit), str::to_string))
}

/// The full metric name: sanitized, with the unit suffix and (for counters) `_total`.
pub fn metric_name(name: &str, unit: &str, is_gauge: bool, is_counter: bool) -> String {
    let mut out = sanitize_metric(name);
    if let Some(suffix) = unit_suffix(unit, is_gauge) {
        let suffix = sanitize_metric(&suffix);
        if !out.ends_with(&suffix) && !out.contains(&format!("_{suffix}_")) {
            out = format!("{out}_{suffix}");
        }
    }
    if is_counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_spec() {
        assert_eq!(metric_name("http.server.duration", "s", false, false), "http_server_duration_seconds");
        assert_eq!(metric_name("jobs.done", "{jobs}", false, true), "jobs_done_total");
        assert_eq!(metric_name("process.memory.usage", "By", true, false), "process_memory_usage_bytes");
        assert_eq!(metric_name("gpu.utilization", "1", true, false), "gpu_utilization_ratio");
        assert_eq!(metric_name("net.io", "By/s", true, false), "net_io_bytes_per_second");
        assert_eq!(metric_name("requests_total", "", false, true), "requests_total");
        assert_eq!(metric_name("latency_seconds", "s", false, false), "latency_seconds");
        assert_eq!(metric_name("2xx.count", "", true, false), "_2xx_count");
        assert_eq!(sanitize_label("http.method"), "http_method");
        assert_eq!(sanitize_label("__reserved"), "_reserved");
        // Names already valid are copied whole; the others take the character-by-character way.
        for (name, label, metric) in [
            ("gpu", "gpu", "gpu"),
            ("_x9", "_x9", "_x9"),
            ("a__b", "a_b", "a_b"),
            ("a:b", "a_b", "a:b"),
            ("9x", "_9x", "_9x"),
            ("", "_", "_"),
            ("é", "_", "_"),
        ] {
            assert_eq!(
                (sanitize_label(name), sanitize_metric(name)),
                (label.into(), metric.into()),
                "{name:?}"
            );
        }
    }
}
