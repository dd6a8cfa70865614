//! `sluice-loadgen`: a closed-loop OTLP trace load generator.
//!
//! Each of `--connections` workers sends one export request, waits for the answer, and sends the
//! next, for `--duration`. Payloads are encoded once up front (a pool of distinct batches with
//! their own trace IDs), so the generator spends its time on the wire, not on protobuf. It prints
//! one JSON object: requests, spans, spans per second, errors, and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sluice_bench::make_batch;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Protocol {
    /// OTLP/gRPC (HTTP/2, prior knowledge).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (HTTP/1.1 keep-alive).
    Http,
}

/// Closed-loop OTLP load: N workers, each waiting for its answer before sending again.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Transport.
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// Base address, e.g. http://127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318 (HTTP).
    #[arg(long)]
    endpoint: String,
    /// Concurrent workers (one request in flight each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Spans per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// String attributes per span.
    #[arg(long, default_value_t = 10)]
    attributes: usize,
    /// Traces the spans of a request belong to (round-robin; `--batch` gives every span its own).
    #[arg(long, default_value_t = 1)]
    traces: usize,
    /// Distinct pre-encoded batches to cycle through.
    #[arg(long, default_value_t = 64)]
    pool: usize,
    /// Send gzip-compressed bodies (compressed once up front, as an SDK's default level would).
    #[arg(long)]
    gzip: bool,
}

fn gzip(message: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(message).expect("in memory");
    encoder.finish().expect("in memory")
}

fn grpc_frame(message: &[u8], compressed: bool) -> Bytes {
    let mut frame = BytesMut::with_capacity(message.len() + 5);
    frame.put_u8(u8::from(compressed));
    frame.put_u32(message.len() as u32);
    frame.put_slice(message);
    frame.freeze()
}

struct Worker {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: http::Uri,
    protocol: Protocol,
    gzip: bool,
}

impl Worker {
    async fn send(&self, body: Bytes) -> anyhow::Result<()> {
        let mut request = http::Request::post(self.uri.clone());
        request = match self.protocol {
            Protocol::Grpc => request.header("content-type", "application/grpc").header("te", "trailers"),
            Protocol::Http => request.header("content-type", "application/x-protobuf"),
        };
        if self.gzip {
            request = match self.protocol {
                Protocol::Grpc => request.header("grpc-encoding", "gzip"),
                Protocol::Http => request.header("content-encoding", "gzip"),
            };
        }
        let response = self.client.request(request.body(Full::new(body))?).await?;
        let status = response.status();
        let header_status = response.headers().get("grpc-status").cloned();
        let collected = response.into_body().collect().await?;
        match self.protocol {
            Protocol::Http if !status.is_success() => bail!("HTTP {status}"),
            Protocol::Http => Ok(()),
            Protocol::Grpc => {
                let grpc_status =
                    collected.trailers().and_then(|t| t.get("grpc-status").cloned()).or(header_status);
                match grpc_status.as_ref().map(|v| v.as_bytes()) {
                    Some(b"0") => Ok(()),
                    Some(other) => bail!("grpc-status {}", String::from_utf8_lossy(other)),
                    None => bail!("no grpc-status (HTTP {status})"),
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = rand::rng();
    let pool: Arc<Vec<Bytes>> = Arc::new(
        (0..args.pool)
            .map(|_| {
                let mut message = make_batch(&mut rng, args.batch, args.attributes, args.traces);
                if args.gzip {
                    message = gzip(&message);
                }
                match args.protocol {
                    Protocol::Grpc => grpc_frame(&message, args.gzip),
                    Protocol::Http => Bytes::from(message),
                }
            })
            .collect(),
    );
    let base = args.endpoint.trim_end_matches('/');
    let uri: http::Uri = match args.protocol {
        Protocol::Grpc => format!("{base}/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
        Protocol::Http => format!("{base}/v1/traces"),
    }
    .parse()
    .context("invalid --endpoint")?;

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for index in 0..args.connections {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(matches!(args.protocol, Protocol::Grpc))
            .build::<_, Full<Bytes>>(connector);
        let worker = Worker { client, uri: uri.clone(), protocol: args.protocol, gzip: args.gzip };
        let (pool, measuring, stop) = (pool.clone(), measuring.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut next = index;
            while !stop.load(Ordering::Relaxed) {
                let body = pool[next % pool.len()].clone();
                next += 1;
                let started = Instant::now();
                let result = worker.send(body).await;
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match result {
                    Ok(()) => {
                        ok += 1;
                        let _ = histogram.record(started.elapsed().as_micros().max(1) as u64);
                    }
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| error.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (histogram, ok, errors, first_error)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for worker in workers {
        let (h, o, e, f) = worker.await?;
        histogram.add(&h)?;
        ok += o;
        errors += e;
        first_error = first_error.or(f);
    }
    let spans = ok * args.batch as u64;
    let report = serde_json::json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "connections": args.connections,
        "batch": args.batch,
        "attributes": args.attributes,
        "bytes_per_request": pool.iter().map(|b| b.len()).sum::<usize>() / pool.len(),
        "seconds": elapsed,
        "requests": ok,
        "errors": errors,
        "first_error": first_error,
        "spans": spans,
        "spans_per_second": spans as f64 / elapsed,
        "p50_ms": histogram.value_at_quantile(0.50) as f64 / 1000.0,
        "p99_ms": histogram.value_at_quantile(0.99) as f64 / 1000.0,
    });
    println!("{report}");
    Ok(())
}
