//! The `sluice` command: parses the CLI, sets up logging, and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::{self, LoadError};
use tracing_subscriber::EnvFilter;

mod cli;

/// glibc's malloc gives each thread that allocates its own arena and rarely hands freed memory
/// back, so batches decoded on the file exporter's blocking threads kept tens of MiB resident.
/// mimalloc keeps RSS near the data actually held and is faster on the small allocations an
/// owned decode makes. It is built without asking for transparent huge pages (the workspace's
/// `no_thp` feature, where the reason is written down).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice: a telemetry pipeline host for OTLP, NVIDIA GPUs and WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipelines described by a config file until SIGTERM or SIGINT.
    ///
    /// Which file: a value on the command line wins over one from the environment; at the same
    /// level a config path (`--config`, `SLUICE_CONFIG`) wins over a mode (`--mode`,
    /// `SLUICE_MODE`); with neither, `pipelines/default.toml`. The choice is logged at start.
    #[command(verbatim_doc_comment)]
    Run {
        /// The pipeline TOML [default: pipelines/default.toml, or the mode's pipeline].
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        /// Run a deployment mode's pipeline, `<pipelines-dir>/<mode>.toml`.
        #[arg(long, env = "SLUICE_MODE", value_enum)]
        mode: Option<Mode>,
        /// Where the modes' pipelines are.
        #[arg(long, env = "SLUICE_PIPELINES_DIR", default_value = "pipelines")]
        pipelines_dir: PathBuf,
    },
    /// Ask a running host whether it is healthy (exit 0) or not (exit 1): for container health checks.
    Health {
        /// The host's admin listener.
        #[arg(long, env = "SLUICE_ADMIN_ADDRESS", default_value = "127.0.0.1:8888")]
        address: std::net::SocketAddr,
        /// Ask `/readyz` (serving) instead of `/healthz` (alive).
        #[arg(long)]
        ready: bool,
    },
    /// Check a config file and print every problem in it; exit 0 when it is valid.
    Validate {
        /// The pipeline TOML.
        file: PathBuf,
    },
    /// Show a running host's receivers, pipelines, plugins and exporters with their rates,
    /// refreshed every interval (full screen on a terminal; one table otherwise or with --once).
    Top {
        /// The host's admin listener.
        #[arg(long, env = "SLUICE_ADMIN_ADDRESS", default_value = "127.0.0.1:8888")]
        address: std::net::SocketAddr,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print one table (rates over one interval) and exit.
        #[arg(long)]
        once: bool,
    },
    /// Stream the items passing one point of a running host's pipelines, each with what the
    /// plugins did to it (kept, dropped by, attribute set by, routed to).
    Tap(cli::tap::Tap),
    /// Work with WebAssembly plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

/// The deployment modes: one setting picks the pipeline.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// Everything to external OTLP services.
    Forward,
    /// A local Prometheus, Grafana and Jaeger, GPU metrics included.
    Packaged,
    /// Both, plus custom collectors and per-tenant routing.
    Hybrid,
}

impl Mode {
    fn file_name(self) -> &'static str {
        match self {
            Mode::Forward => "forward.toml",
            Mode::Packaged => "packaged.toml",
            Mode::Hybrid => "hybrid.toml",
        }
    }
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Run a plugin on an OTLP JSON batch and show what it kept, dropped, changed and routed.
    Test {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// OTLP JSON: one Export*ServiceRequest per line (the file exporter's format) or one object.
        #[arg(long)]
        input: PathBuf,
        /// A config entry, `key=value`; values that parse as JSON keep their type. Repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// The whole config as a JSON object (instead of --config pairs).
        #[arg(long, conflicts_with = "config")]
        config_json: Option<String>,
        /// Write the resulting batches here as OTLP JSON Lines.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Create a plugin project: a working filter, a sample batch, a test and a README.
    New {
        /// The plugin's name (lowercase letters, digits, `-`): its folder and its `.wasm`.
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: cli::plugin_new::Lang,
        /// The folder to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The Sluice SDK folder (`sdk/` of a checkout) [default: the one this binary was built from].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// Where a setting came from, in the order that decides between a config path and a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    Environment,
    CommandLine,
}

impl Origin {
    fn of(matches: &clap::ArgMatches, id: &str) -> Option<Origin> {
        match matches.value_source(id)? {
            clap::parser::ValueSource::CommandLine => Some(Origin::CommandLine),
            clap::parser::ValueSource::EnvVariable => Some(Origin::Environment),
            _ => None,
        }
    }
}

/// The pipeline file `sluice run` serves, and why that one.
#[derive(Debug, PartialEq, Eq)]
struct Chosen {
    path: PathBuf,
    reason: &'static str,
}

/// A command-line value wins over the environment; at the same level a config path wins over a
/// mode. (The image sets `SLUICE_MODE`; a Kubernetes agent that sets `SLUICE_CONFIG` means it.)
fn choose_config(
    config: Option<(PathBuf, Origin)>,
    mode: Option<(Mode, Origin)>,
    pipelines_dir: &std::path::Path,
) -> Chosen {
    let by_mode = |mode: Mode| pipelines_dir.join(mode.file_name());
    match (config, mode) {
        (Some((path, _)), None) => Chosen { path, reason: "config path" },
        (None, Some((mode, _))) => Chosen { path: by_mode(mode), reason: "mode" },
        (Some((_, config_origin)), Some((mode, mode_origin))) if mode_origin > config_origin => {
            Chosen { path: by_mode(mode), reason: "mode on the command line wins over SLUICE_CONFIG" }
        }
        (Some((path, _)), Some(_)) => Chosen { path, reason: "config path wins over mode" },
        (None, None) => Chosen { path: PathBuf::from("pipelines/default.toml"), reason: "default" },
    }
}

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Run { config, mode, pipelines_dir } => {
            let run_matches = matches.subcommand_matches("run").expect("the run subcommand matched");
            let chosen = choose_config(
                config.zip(Origin::of(run_matches, "config")),
                mode.zip(Origin::of(run_matches, "mode")),
                &pipelines_dir,
            );
            run(&chosen)
        }
        Command::Health { address, ready } => health(address, ready),
        Command::Plugin(PluginCommand::Test { plugin, input, config, config_json, output }) => {
            plugin_test(plugin, input, &config, config_json, output)
        }
        Command::Top { address, interval, once } => {
            let interval = std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
            match cli::top::run(address, interval, once) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Tap(tap) => match cli::tap::run(&tap, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Plugin(PluginCommand::New { name, lang, dir, sdk }) => {
            let scaffold = cli::plugin_new::Scaffold { name, lang, parent: dir, sdk };
            match cli::plugin_new::create(&scaffold) {
                Ok(dir) => {
                    println!(
                        "Created {}: `cd` there and follow README.md (make build, make test).",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn health(address: std::net::SocketAddr, ready: bool) -> ExitCode {
    let path = if ready { "/readyz" } else { "/healthz" };
    match cli::health::probe(address, path, std::time::Duration::from_secs(3)) {
        Ok(status) => {
            println!("{status}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("unhealthy: {error}");
            ExitCode::FAILURE
        }
    }
}

fn plugin_test(
    plugin: PathBuf,
    input: PathBuf,
    pairs: &[String],
    config_json: Option<String>,
    output: Option<PathBuf>,
) -> ExitCode {
    init_logging(config::LogLevel::Warn);
    let config_json = match config_json.map(Ok).unwrap_or_else(|| cli::plugin_test::config_from_pairs(pairs))
    {
        Ok(json) => json,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let trial = cli::plugin_test::Trial { plugin, input, config_json, output };
    match cli::plugin_test::run(&trial) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn validate(file: &std::path::Path) -> ExitCode {
    match config::load_file(file, Some(&sluice::plugins::runner::Preflight)) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            let c = &loaded.config;
            println!(
                "{} is valid: {} receivers, {} exporters, {} pipelines",
                file.display(),
                c.receivers.len(),
                c.exporters.len(),
                c.pipelines.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn run(chosen: &Chosen) -> ExitCode {
    let path = chosen.path.as_path();
    let loaded = match config::load_file(path, Some(&sluice::plugins::runner::Preflight)) {
        Ok(loaded) => loaded,
        Err(error @ (LoadError::Read { .. } | LoadError::Invalid(_))) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(loaded.config.service.log_level);
    tracing::info!(
        config = %path.display(), chosen_by = chosen.reason, version = env!("CARGO_PKG_VERSION"),
        gzip = sluice::gzip::ENGINE, "Starting Sluice"
    );
    for warning in &loaded.warnings {
        tracing::warn!(config = %path.display(), "{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async { sluice::topology::run(&loaded, path, shutdown_signal()).await });
    // When the grace period ran out, an exporter may still be stuck in a blocking call (a hung
    // disk or pipe): don't let it hold the process up after the error is reported.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `SLUICE_LOG` (or `RUST_LOG`) overrides the config's level, with the usual filter syntax.
fn init_logging(level: config::LogLevel) {
    let filter = std::env::var("SLUICE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(level.as_str()));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed when this is called,
/// not when the future is first polled: a SIGTERM that arrives as soon as the host reports ready
/// must start a graceful shutdown, not kill the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers =
            signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
        async move {
            match handlers {
                Ok((mut terminate, mut interrupt)) => tokio::select! {
                    _ = interrupt.recv() => tracing::info!("Received SIGINT"),
                    _ = terminate.recv() => tracing::info!("Received SIGTERM"),
                },
                Err(error) => {
                    tracing::warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops the host");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(config: Option<Origin>, mode: Option<Origin>) -> PathBuf {
        let config = config.map(|origin| (PathBuf::from("agent.toml"), origin));
        let mode = mode.map(|origin| (Mode::Packaged, origin));
        choose_config(config, mode, std::path::Path::new("modes")).path
    }

    #[test]
    fn a_config_path_wins_over_a_mode_from_the_same_place() {
        use Origin::*;
        assert_eq!(choose(Some(Environment), Some(Environment)), PathBuf::from("agent.toml"));
        assert_eq!(choose(Some(CommandLine), Some(CommandLine)), PathBuf::from("agent.toml"));
    }

    #[test]
    fn the_command_line_wins_over_the_environment() {
        use Origin::*;
        assert_eq!(choose(Some(CommandLine), Some(Environment)), PathBuf::from("agent.toml"));
        assert_eq!(choose(Some(Environment), Some(CommandLine)), PathBuf::from("modes/packaged.toml"));
    }

    #[test]
    fn alone_each_is_taken_and_neither_means_the_default() {
        assert_eq!(choose(None, Some(Origin::Environment)), PathBuf::from("modes/packaged.toml"));
        assert_eq!(choose(Some(Origin::Environment), None), PathBuf::from("agent.toml"));
        assert_eq!(choose(None, None), PathBuf::from("pipelines/default.toml"));
    }
}
