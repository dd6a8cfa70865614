//! `sluice tap`: streams the items passing one point of a running host's pipelines, with what
//! each plugin did to them, from the admin listener's `GET /tap`.
//!
//! The host renders the lines (so any HTTP client gets the same); this side builds the query,
//! sends the admin token, and copies lines to stdout until the host's `limit` ends the stream,
//! the host goes away, or the reader does (`sluice tap | head` ends quietly).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::health;

/// What to tap, and how to reach the host: `sluice tap`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Tap {
    /// The host's admin listener.
    #[arg(long, env = "SLUICE_ADMIN_ADDRESS", default_value = "127.0.0.1:8888")]
    pub address: SocketAddr,
    /// Only this pipeline [default: every pipeline].
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Where to look: `receiver` (as received, with every plugin's verdict),
    /// `after:PLUGIN` (what leaves that plugin, and what it dropped) or `exporter:NAME`.
    #[arg(long, default_value = "receiver")]
    pub stage: String,
    /// Only this signal.
    #[arg(long, value_parser = ["traces", "metrics", "logs"])]
    pub signal: Option<String>,
    /// Only items where FIELD matches PATTERN (`*` is a wildcard); FIELD is `name`,
    /// `resource.KEY` or `attr.KEY` (also `span.name`, `service.name`). Repeatable: all must hold.
    #[arg(long = "match", value_name = "FIELD=PATTERN")]
    pub matches: Vec<String>,
    /// Stop after this many items.
    #[arg(long)]
    pub limit: Option<u64>,
    /// At most this many items a second; batches past it pass untapped, so a tap costs the
    /// host no more than it shows.
    #[arg(long, default_value_t = sluice::tap::DEFAULT_RATE)]
    pub rate: u64,
    /// `pretty`: one readable line per item; `json`: OTLP JSON with each item's fate.
    #[arg(long, default_value = "pretty", value_parser = ["pretty", "json"])]
    pub format: String,
    /// A file holding the admin bearer token, for a listener with `service.admin_auth`.
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The admin bearer token itself; prefer the environment or --token-file, since a
    /// value on the command line shows in `ps`.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Tap {
    /// The request's path and query string.
    pub fn path(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(pipeline) = &self.pipeline {
            query.append_pair("pipeline", pipeline);
        }
        query.append_pair("stage", &self.stage);
        if let Some(signal) = &self.signal {
            query.append_pair("signal", signal);
        }
        for condition in &self.matches {
            query.append_pair("match", condition);
        }
        if let Some(limit) = self.limit {
            query.append_pair("limit", &limit.to_string());
        }
        query.append_pair("rate", &self.rate.to_string());
        query.append_pair("format", &self.format);
        format!("/tap?{}", query.finish())
    }

    /// The bearer token to send: `--token-file`'s content without the whitespace a secret
    /// file often ends with, else `--token` (or `SLUICE_ADMIN_TOKEN`).
    fn bearer(&self) -> Result<Option<String>, String> {
        match &self.token_file {
            Some(file) => std::fs::read_to_string(file)
                .map(|text| Some(text.trim().to_string()))
                .map_err(|e| format!("cannot read {}: {e}", file.display())),
            None => Ok(self.token.clone().filter(|t| !t.is_empty())),
        }
    }
}

/// Streams `tap`'s lines to `out` until the stream ends.
pub fn run(tap: &Tap, out: &mut impl Write) -> Result<(), String> {
    let authorization = tap.bearer()?.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    // No read timeout: a tap may wait as long as its pipeline is quiet.
    let (target, stream) = health::ask(tap.address, &tap.path(), &authorization, Duration::from_secs(3))?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(|e| format!("no answer from {target}: {e}"))?;
    let status = status.trim_end().to_string();
    loop {
        let mut header = String::new();
        let read = reader.read_line(&mut header).map_err(|e| format!("no answer from {target}: {e}"))?;
        if read == 0 || header.trim_end().is_empty() {
            break;
        }
    }
    if status.split_whitespace().nth(1) != Some("200") {
        let mut body = String::new();
        let _ = reader.read_to_string(&mut body);
        if status.is_empty() {
            return Err(format!("{target} closed the connection without answering"));
        }
        return Err(format!("{target}/tap answered `{status}`: {}", body.trim_end()));
    }
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("the stream from {target} broke: {e}")),
        }
        match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader left (`| head`): that ends the tap, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("cannot write: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_carries_every_choice_encoded() {
        let tap = Tap {
            address: "127.0.0.1:8888".parse().expect("address"),
            pipeline: Some("traces".into()),
            stage: "after:drop-spans".into(),
            signal: Some("traces".into()),
            matches: vec!["span.name=*check out*".into(), "resource.service.name=api".into()],
            limit: Some(5),
            rate: 20,
            format: "pretty".into(),
            token_file: None,
            token: None,
        };
        let path = tap.path();
        assert_eq!(
            path,
            "/tap?pipeline=traces&stage=after%3Adrop-spans&signal=traces&match=span.name%3D*check+out*\
             &match=resource.service.name%3Dapi&limit=5&rate=20&format=pretty"
        );
        let request =
            sluice::tap::Request::parse(path.trim_start_matches("/tap?")).expect("the host reads it");
        assert_eq!(request.matches.len(), 2);
        assert_eq!((request.limit, request.rate), (Some(5), 20));
    }
}
