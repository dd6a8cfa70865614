//! Checks that span components: references, listen addresses, signals. Pure: it reads the
//! parsed tables and reports; nothing is bound or built.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use super::diagnostic::Diagnostic;
use super::parsed::{Component, Parsed};
use super::schema::*;

#[derive(Default)]
pub(super) struct Outcome {
    /// Spans here are in expanded-text coordinates; the caller maps them.
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<String>,
}

impl Outcome {
    fn error(&mut self, span: Option<Range<usize>>, message: String) {
        self.errors.push(Diagnostic::at(span, message));
    }
}

/// Defaults carry the empty span; report those against the component's header instead.
fn or_header(span: Range<usize>, header: &Option<Range<usize>>) -> Option<Range<usize>> {
    if span.is_empty() { header.clone() } else { Some(span) }
}

fn names<T>(map: &BTreeMap<ComponentId, Component<T>>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.keys().map(|id| format!("`{id}`")).collect::<Vec<_>>().join(", ")
}

fn signal_list(signals: &[Signal]) -> String {
    signals.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// An exporter aimed at one of this host's own receivers would feed its output back in forever.
fn check_loops(parsed: &Parsed, out: &mut Outcome) {
    let mut listeners: Vec<(std::net::SocketAddr, String)> = Vec::new();
    for (id, receiver) in &parsed.receivers {
        let Some(config) = &receiver.config else { continue };
        for (transport, address) in config.listens_on() {
            listeners.push((address.get_ref().0, format!("receiver `{id}` ({transport})")));
        }
    }
    let local = |host: &str| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
    };
    for (id, exporter) in &parsed.exporters {
        let Some(config) = &exporter.config else { continue };
        let urls = config.kind.endpoints();
        for url in urls {
            let Ok(uri) = url.get_ref().parse::<http::Uri>() else { continue };
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else { continue };
            if !local(host) {
                continue;
            }
            let own = listeners.iter().find(|(address, _)| {
                address.port() == port && (address.ip().is_loopback() || address.ip().is_unspecified())
            });
            if let Some((address, owner)) = own {
                out.error(
                    Some(url.span()),
                    format!("exporter `{id}` sends to {owner} on {address}, this host's own receiver: that would loop forever"),
                );
            }
        }
    }
}

pub(super) fn check(parsed: &Parsed) -> Outcome {
    let mut out = Outcome::default();
    check_service(parsed, &mut out);
    check_loops(parsed, &mut out);
    check_receivers(parsed, &mut out);
    check_exporters(parsed, &mut out);
    check_pipelines(parsed, &mut out);
    check_addresses(parsed, &mut out);
    out
}

fn check_service(parsed: &Parsed, out: &mut Outcome) {
    if let Some(limit) = &parsed.service.memory_limit
        && limit.get_ref().0 < 64 << 20
    {
        out.error(
            Some(limit.span()),
            "`service.memory_limit` must be at least 64MiB (the host alone needs tens of MiB)".into(),
        );
    }
    if let Some(crate::config::ReceiverAuthConfig::Bearer { token }) = &parsed.service.admin_auth {
        let what = "`service.admin_auth`";
        if matches!(token.get_ref(), Credential::Literal(_)) {
            out.error(Some(token.span()), format!("{what}: {}", written_secret("the bearer token")));
        } else {
            check_secret_available(what, token, "the bearer token", parsed.env, out);
        }
    }
}

fn check_receivers(parsed: &Parsed, out: &mut Outcome) {
    for (id, receiver) in &parsed.receivers {
        let Some(config) = &receiver.config else { continue };
        let what = format!("receiver `{id}`");
        for (span, message) in config.check(&what, &parsed.base_dir) {
            out.error(span.or_else(|| receiver.header.clone()), message);
        }
        for (name, value) in config.secrets() {
            check_secret_available(&what, value, name, parsed.env, out);
        }
    }
}

/// A list of signals that names one twice: `what: signal \`x\` is listed twice`, at the second.
pub(crate) fn duplicate_signals(signals: &[serde_spanned::Spanned<Signal>], what: &str) -> Vec<Problem> {
    let twice = signals
        .iter()
        .enumerate()
        .filter(|(i, signal)| signals[..*i].iter().any(|s| s.get_ref() == signal.get_ref()));
    twice
        .map(|(_, signal)| {
            (Some(signal.span()), format!("{what}: signal `{}` is listed twice", signal.get_ref()))
        })
        .collect()
}

fn check_duplicate_signals(signals: &[serde_spanned::Spanned<Signal>], what: &str, out: &mut Outcome) {
    for (span, message) in duplicate_signals(signals, what) {
        out.error(span, message);
    }
}

fn check_exporters(parsed: &Parsed, out: &mut Outcome) {
    for (id, exporter) in &parsed.exporters {
        let Some(config) = &exporter.config else { continue };
        let what = format!("exporter `{id}`");
        if let Some(settings) = &config.shared.client {
            let (urls, resolved) = (config.kind.endpoints(), config.kind.resolves_endpoints());
            let resolved_in_clear = config.kind.resolves_in_clear();
            let client = Client { urls, resolved, resolved_in_clear, settings, env: parsed.env };
            check_client(&what, client, &exporter.header, out);
        }
        for (span, message) in config.kind.check() {
            out.error(span.or_else(|| exporter.header.clone()), format!("{what}: {message}"));
        }
        for (name, value) in config.kind.secrets() {
            check_secret_available(&what, value, name, parsed.env, out);
        }
        // An exporter plugin is checked as every plugin reference is.
        if let Some(plugin) = &config.shared.plugin {
            check_plugin(&what, plugin, &parsed.base_dir, out);
        }
    }
    check_disk_queues(parsed, out);
}

/// A disk queue needs room for a batch, a directory of its own, and its own `on_full`.
fn check_disk_queues(parsed: &Parsed, out: &mut Outcome) {
    let mut directories: Vec<(&std::path::Path, &ComponentId)> = Vec::new();
    for (id, exporter) in &parsed.exporters {
        let Some(config) = &exporter.config else { continue };
        let QueueConfig::Disk(disk) = &config.queue else { continue };
        let what = format!("exporter `{id}`");
        if *disk.max_size.get_ref() < MIN_DISK_QUEUE_SIZE {
            out.error(
                or_header(disk.max_size.span(), &exporter.header),
                format!("{what}: the disk queue's `max_size` must be at least {MIN_DISK_QUEUE_SIZE}"),
            );
        }
        let directory = disk.directory.get_ref().as_path();
        if let Some((_, other)) = directories.iter().find(|(seen, _)| *seen == directory) {
            out.error(
                or_header(disk.directory.span(), &exporter.header),
                format!(
                    "{what}: exporter `{other}` already keeps its disk queue in `{}`; each needs a directory of its own",
                    directory.display()
                ),
            );
        }
        directories.push((directory, id));
        if config.shared.client.as_ref().is_some_and(|client| client.on_full == OnFull::Drop) {
            out.error(
                exporter.header.clone(),
                format!("{what}: with a disk queue, set `on_full` inside `queue` (the exporter's own `on_full` is for the memory queue)"),
            );
        }
    }
}

/// Header names whose values are credentials: they must come from `env` or `file`.
pub(crate) fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["authorization", "token", "key", "secret", "password", "auth"].iter().any(|s| name.contains(s))
}

/// What to say of the secret `name` written into the file itself.
pub(crate) fn written_secret(name: &str) -> String {
    format!(
        "{name} is a secret: write {{ env = \"NAME\" }} or {{ file = \"/run/secrets/name\" }}, never the value"
    )
}

/// Whether `host` (as a URI writes it) is this machine.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses credentials (auth, a credential-named header) on their way to a plain-text endpoint
/// off this machine, unless the config says the link is private.
fn check_credentials_in_clear(
    what: &str,
    client: &Client<'_>,
    header: &Option<Range<usize>>,
    out: &mut Outcome,
) {
    let settings = client.settings;
    let sensitive = settings.headers.keys().find(|name| is_sensitive_header(name));
    let carried = match (&settings.auth, sensitive) {
        (Some(_), _) => "its `auth` credentials".to_string(),
        (None, Some(name)) => format!("its `{name}` header"),
        (None, None) => return,
    };
    if settings.allow_plaintext_credentials {
        return;
    }
    let advice = "use https://, or set `allow_plaintext_credentials = true` if that link is private (a sidecar, a VPN)";
    for url in &client.urls {
        let Ok(uri) = url.get_ref().parse::<http::Uri>() else { continue };
        if uri.scheme_str() == Some("http") && !uri.host().is_some_and(is_loopback_host) {
            out.error(
                Some(url.span()),
                format!(
                    "{what}: {carried} would cross the network in clear text to `{}`: {advice}",
                    url.get_ref()
                ),
            );
        }
    }
    if client.resolved_in_clear {
        out.error(
            header.clone(),
            format!("{what}: {carried} would cross the network in clear text to the resolved http:// backends: {advice} (or `scheme = \"https\"`)"),
        );
    }
}

/// What every network exporter's client settings must satisfy.
struct Client<'a> {
    urls: Vec<&'a serde_spanned::Spanned<String>>,
    /// Its endpoints come from a resolver, which checks its own list.
    resolved: bool,
    /// The resolver makes plain-text URLs to addresses nobody knows yet.
    resolved_in_clear: bool,
    settings: &'a ClientConfig,
    env: &'a dyn Fn(&str) -> Option<String>,
}

fn check_client(what: &str, client: Client<'_>, header: &Option<Range<usize>>, out: &mut Outcome) {
    if client.urls.is_empty() && !client.resolved {
        out.error(
            header.clone(),
            format!("{what} has no `endpoint`: give a base URL such as \"https://otlp.example.com:4317\""),
        );
    }
    let mut plaintext = false;
    for url in &client.urls {
        match url.get_ref().parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
                plaintext |= uri.scheme_str() == Some("http");
            }
            _ => out.error(
                Some(url.span()),
                format!("{what}: `{}` is not an http:// or https:// URL with a host", url.get_ref()),
            ),
        }
    }
    check_credentials_in_clear(what, &client, header, out);
    let tls = &client.settings.tls;
    if plaintext && (tls.ca_file.is_some() || tls.cert_file.is_some()) {
        out.error(header.clone(), format!("{what}: `tls` settings need https:// endpoints"));
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        out.error(header.clone(), format!("{what}: `tls.cert_file` and `tls.key_file` go together"));
    }
    for file in [&tls.ca_file, &tls.cert_file, &tls.key_file].into_iter().flatten() {
        if !file.get_ref().is_file() {
            out.error(Some(file.span()), format!("{what}: {} does not exist", file.get_ref().display()));
        }
    }
    let literal_secret = |value: &serde_spanned::Spanned<Credential>, name: &str, out: &mut Outcome| {
        if matches!(value.get_ref(), Credential::Literal(_)) {
            out.error(Some(value.span()), format!("{what}: {}", written_secret(name)));
        }
    };
    for (name, value) in &client.settings.headers {
        if is_sensitive_header(name) {
            literal_secret(value, &format!("header `{name}`"), out);
        }
        check_secret_available(what, value, &format!("header `{name}`"), client.env, out);
    }
    match &client.settings.auth {
        Some(AuthConfig::Basic { username, password }) => {
            literal_secret(password, "the basic auth password", out);
            check_secret_available(what, username, "the basic auth username", client.env, out);
            check_secret_available(what, password, "the basic auth password", client.env, out);
        }
        Some(AuthConfig::Bearer { token }) => {
            literal_secret(token, "the bearer token", out);
            check_secret_available(what, token, "the bearer token", client.env, out);
        }
        None => {}
    }
}

/// A secret whose variable or file is missing would otherwise surface only as failed deliveries,
/// retried as if the network were at fault; it is a config problem, reported as one.
fn check_secret_available(
    what: &str,
    value: &serde_spanned::Spanned<Credential>,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Outcome,
) {
    // Resolved as delivery resolves it, with the environment substitution saw.
    let problem = match crate::secret::locate(value.get_ref(), env) {
        Err(why) => Some(why),
        Ok(crate::secret::Located::Value(_)) => None,
        Ok(crate::secret::Located::File { path, named_by }) => {
            std::fs::File::open(&path).err().map(|error| {
                let why = format!("cannot read {}: {error}", path.display());
                named_by.map_or(why.clone(), |variable| format!("`{variable}`: {why}"))
            })
        }
    };
    if let Some(why) = problem {
        out.error(
            Some(value.span()),
            format!("{what}: {name} cannot be read: {why} (set it before starting; deliveries would fail)"),
        );
    }
}

fn check_pipelines(parsed: &Parsed, out: &mut Outcome) {
    if parsed.pipelines.is_empty() {
        out.error(
            None,
            "nothing is wired: add a `[pipelines.NAME]` table with `receivers` and `exporters`".into(),
        );
    }
    let mut used_receivers = Vec::new();
    let mut used_exporters = Vec::new();
    for (id, pipeline) in &parsed.pipelines {
        let Some(config) = &pipeline.config else { continue };
        let what = format!("pipeline `{id}`");
        if config.signals.is_empty() {
            out.error(pipeline.header.clone(), format!("{what} carries no signals: list some in `signals`"));
        }
        check_duplicate_signals(&config.signals, &what, out);
        if *config.queue_size.get_ref() == 0 {
            out.error(Some(config.queue_size.span()), format!("{what}: `queue_size` must be at least 1"));
        }
        if config.receivers.get_ref().is_empty() {
            out.error(
                Some(config.receivers.span()),
                format!("{what} has no receivers: name at least one in `receivers`"),
            );
        }
        if config.exporters.get_ref().is_empty() {
            out.error(
                Some(config.exporters.span()),
                format!("{what} has no exporters: name at least one in `exporters`"),
            );
        }
        let signals: Vec<Signal> = config.signals.iter().map(|s| *s.get_ref()).collect();
        for (i, name) in config.receivers.get_ref().iter().enumerate() {
            let span = Some(name.span());
            if config.receivers.get_ref()[..i].iter().any(|n| n.get_ref() == name.get_ref()) {
                out.error(span, format!("{what}: receiver `{}` is listed twice", name.get_ref()));
                continue;
            }
            let Some((rid, receiver)) = parsed.receivers.get_key_value(name.get_ref().as_str()) else {
                if parsed.declared_receivers.contains(name.get_ref()) {
                    continue;
                }
                out.error(
                    span,
                    format!(
                        "{what}: unknown receiver `{}` (defined receivers: {})",
                        name.get_ref(),
                        names(&parsed.receivers)
                    ),
                );
                continue;
            };
            used_receivers.push(rid.clone());
            let Some(receiver) = &receiver.config else { continue };
            // A pipeline may mix receivers (OTLP for everything, GPUs for metrics); only a
            // receiver that can feed it nothing at all is a mistake.
            let produced = receiver.signals();
            if !signals.iter().any(|s| produced.contains(s)) {
                out.error(
                    span.clone(),
                    format!(
                        "{what}: receiver `{rid}` produces none of its signals ({}); it produces {}",
                        signal_list(&signals),
                        signal_list(&produced)
                    ),
                );
            }
        }
        let mut exporter_lists = vec![(String::new(), &config.exporters)];
        exporter_lists
            .extend(config.routes.iter().map(|(route, list)| (format!(" in route `{route}`"), list)));
        for (list_name, list) in exporter_lists {
            if list.get_ref().is_empty() && !list_name.is_empty() {
                out.error(
                    Some(list.span()),
                    format!("{what}:{} names no exporters", list_name.trim_start_matches(" in")),
                );
            }
            for (i, name) in list.get_ref().iter().enumerate() {
                let span = Some(name.span());
                if list.get_ref()[..i].iter().any(|n| n.get_ref() == name.get_ref()) {
                    out.error(
                        span,
                        format!("{what}: exporter `{}` is listed twice{list_name}", name.get_ref()),
                    );
                    continue;
                }
                match parsed.exporters.get_key_value(name.get_ref().as_str()) {
                    Some((eid, _)) => used_exporters.push(eid.clone()),
                    None if parsed.declared_exporters.contains(name.get_ref()) => {}
                    None => out.error(
                        span,
                        format!(
                            "{what}: unknown exporter `{}`{list_name} (defined exporters: {})",
                            name.get_ref(),
                            names(&parsed.exporters)
                        ),
                    ),
                }
            }
        }
        check_processors(&what, config, &parsed.base_dir, out);
    }
    for id in parsed.receivers.keys().filter(|id| !used_receivers.contains(id)) {
        out.warnings.push(format!("receiver `{id}` is not used by any pipeline and will not be started"));
    }
    for id in parsed.exporters.keys().filter(|id| !used_exporters.contains(id)) {
        out.warnings.push(format!("exporter `{id}` is not used by any pipeline and will not be started"));
    }
}

fn check_processors(what: &str, config: &PipelineConfig, base_dir: &std::path::Path, out: &mut Outcome) {
    let mut names: Vec<String> = Vec::new();
    for processor in &config.processors {
        let name = processor.display_name();
        let span = Some(processor.plugin.plugin.span());
        if names.contains(&name) {
            out.error(
                processor.name.as_ref().map(|n| n.span()).or(span.clone()),
                format!("{what}: two processors are named `{name}`; give one a `name`"),
            );
        }
        names.push(name.clone());
        check_plugin(&format!("{what}: processor `{name}`"), &processor.plugin, base_dir, out);
    }
}

/// What every plugin reference — a processor or a plugin exporter — must satisfy.
fn check_plugin(what: &str, plugin: &PluginRef, base_dir: &std::path::Path, out: &mut Outcome) {
    let span = Some(plugin.plugin.span());
    // `join` keeps an absolute path as it is.
    let resolved = base_dir.join(plugin.plugin.get_ref());
    if !resolved.is_file() {
        out.error(
            span.clone(),
            format!("{what}: plugin file {} does not exist (run `make plugins`?)", resolved.display()),
        );
    }
    if let Some(pin) = &plugin.sha256
        && (pin.get_ref().len() != 64 || !pin.get_ref().chars().all(|c| c.is_ascii_hexdigit()))
    {
        out.error(Some(pin.span()), format!("{what}: `sha256` must be 64 hex digits"));
    }
    if plugin.limits.memory.get_ref().0 < 1 << 20 {
        let span = or_header(plugin.limits.memory.span(), &span);
        out.error(span, format!("{what}: `limits.memory` must be at least 1MiB"));
    }
    for (timeout, key) in [(&plugin.limits.timeout, "timeout"), (&plugin.limits.init_timeout, "init_timeout")]
    {
        let duration = timeout.get_ref().0;
        if duration.is_zero() || duration > std::time::Duration::from_secs(60) {
            let span = or_header(timeout.span(), &span);
            out.error(span, format!("{what}: `limits.{key}` must be between 1ms and 60s"));
        }
    }
    for (size, key) in [(&plugin.limits.key_size, "key_size"), (&plugin.limits.value_size, "value_size")] {
        if size.get_ref().0 == 0 {
            out.error(or_header(size.span(), &span), format!("{what}: `limits.{key}` must be at least 1B"));
        }
    }
    let growth = &plugin.limits.growth;
    if !(growth.get_ref().is_finite() && *growth.get_ref() >= 1.0) {
        let span = or_header(growth.span(), &span);
        out.error(
            span,
            format!("{what}: `limits.growth` must be a number of at least 1 (times the batch's size)"),
        );
    }
    // (A `config` table carries no span of its own, so this points at `plugin`.)
    if let Some(config) = &plugin.config
        && !config.is_object()
    {
        out.error(span, format!("{what}: `config` must be a table"));
    }
}

/// Two listeners on one address would fail at bind time, after other parts had started;
/// catching it here keeps "validate" a promise that "run" will start.
fn check_addresses(parsed: &Parsed, out: &mut Outcome) {
    let mut seen: HashMap<ListenAddress, String> = HashMap::new();
    let mut claim =
        |address: &serde_spanned::Spanned<ListenAddress>, header: &Option<Range<usize>>, owner: String| {
            let addr = *address.get_ref();
            if addr.0.port() == 0 {
                return;
            }
            if let Some(first) = seen.get(&addr) {
                out.error(
                    or_header(address.span(), header),
                    format!("{owner}: address {addr} is already used by {first}"),
                );
            } else {
                seen.insert(addr, owner);
            }
        };
    claim(&parsed.service.admin_address, &None, "the admin listener".to_string());
    for (id, exporter) in &parsed.exporters {
        if let Some(address) = exporter.config.as_ref().and_then(|c| c.kind.listens_on()) {
            claim(address, &exporter.header, format!("exporter `{id}`"));
        }
    }
    for (id, receiver) in &parsed.receivers {
        let Some(config) = &receiver.config else { continue };
        for (transport, address) in config.listens_on() {
            claim(address, &receiver.header, format!("receiver `{id}` ({transport})"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts_are_this_machine_and_nothing_else() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.9.9.9", "[::1]", "::1"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in
            ["10.0.0.1", "0.0.0.0", "vendor.example.com", "localhost.example.com", "[::]", "127.example"]
        {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
