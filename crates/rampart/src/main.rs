//! `rampart`: a self-hosted serverless platform that runs AWS Lambda functions unmodified.
//!
//! This binary holds the CLI (clap), the composition root ([`server`]) and the client commands.

mod client;
mod deploy;
mod manifest;
mod server;
mod watch;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::client::Client;
use crate::manifest::{Manifest, parse_duration};

#[derive(Parser)]
#[command(
    name = "rampart",
    version,
    about = "Run AWS Lambda functions on your own machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct EndpointArgs {
    /// The server to talk to.
    #[arg(
        long,
        env = "RAMPART_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    endpoint: String,
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port; see the ready line).
    #[arg(long, env = "RAMPART_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Address of the HTTP listener serving API routes (`[[api]]` in rampart.toml).
    #[arg(long, env = "RAMPART_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Directory holding the database, code bundles and instance temp dirs.
    #[arg(long, env = "RAMPART_DATA_DIR", default_value = "./.rampart")]
    data_dir: PathBuf,
    /// Region reported in ARNs and AWS_REGION.
    #[arg(long, env = "RAMPART_REGION", default_value = "us-east-1")]
    region: String,
    /// How long a request waits for a free instance before it gets 429.
    #[arg(long, env = "RAMPART_QUEUE_WAIT", default_value = "100ms", value_parser = parse_duration)]
    queue_wait: std::time::Duration,
    /// Log lines older than this are deleted.
    #[arg(long, env = "RAMPART_LOG_RETENTION", default_value = "168h", value_parser = parse_duration)]
    log_retention: std::time::Duration,
    /// At most this many log lines are kept per function.
    #[arg(long, env = "RAMPART_LOG_MAX_LINES", default_value_t = 100_000)]
    log_max_lines: usize,
    /// Longest init of an instance before it goes on inside the invocation (Lambda: 10 s).
    #[arg(long, env = "RAMPART_INIT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    init_timeout: std::time::Duration,
    /// How often alarms are evaluated.
    #[arg(long, env = "RAMPART_ALARM_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    alarm_interval: std::time::Duration,
    /// Longest a warm instance may take to ask for a delivered event before it is replaced
    /// (a wedged runtime) and the event retried on another instance.
    #[arg(long, env = "RAMPART_NEXT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    next_timeout: std::time::Duration,
    /// Delay before an asynchronous event's first retry; doubles for each further one.
    #[arg(long, env = "RAMPART_ASYNC_RETRY_BASE", default_value = "60s", value_parser = parse_duration)]
    async_retry_base: std::time::Duration,
    /// Oldest an asynchronous event may get when its function sets no MaximumEventAgeInSeconds.
    #[arg(long, env = "RAMPART_ASYNC_MAX_EVENT_AGE", default_value = "6h", value_parser = parse_duration)]
    async_max_event_age: std::time::Duration,
    /// How long an `x-rampart-idempotency-key` deduplicates asynchronous invocations.
    #[arg(long, env = "RAMPART_IDEMPOTENCY_WINDOW", default_value = "1h", value_parser = parse_duration)]
    idempotency_window: std::time::Duration,
    /// Memory limits: `auto` uses a cgroup (v2, else v1) when one is writable, else setrlimit;
    /// `rlimit` always uses setrlimit.
    #[arg(long, env = "RAMPART_SANDBOX", default_value = "auto", value_parser = ["auto", "rlimit"])]
    sandbox: String,
    /// Longest wait for in-flight invocations when shutting down.
    #[arg(long, env = "RAMPART_DRAIN_TIMEOUT", default_value = "15m", value_parser = parse_duration)]
    drain_timeout: std::time::Duration,
    /// Record metrics (`off` keeps only logs; the CloudWatch API still takes custom metrics).
    #[arg(long, env = "RAMPART_TELEMETRY", default_value = "on", value_parser = ["on", "off"])]
    telemetry: String,
    /// Export spans over OTLP/HTTP (protobuf) to this collector, e.g. http://127.0.0.1:4318.
    #[arg(long, env = "RAMPART_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled beyond the first each second (X-Ray's default rule);
    /// a caller's own decision is always kept.
    #[arg(long, env = "RAMPART_TRACE_SAMPLE_RATE", default_value_t = rampart_telemetry::trace::DEFAULT_SAMPLE_RATE)]
    trace_sample_rate: f64,
    /// How long 1-second metric points are kept (CloudWatch: 3 hours).
    #[arg(long, env = "RAMPART_METRICS_SECONDS_RETENTION", default_value = "3h", value_parser = parse_duration)]
    metrics_seconds_retention: std::time::Duration,
    /// How long 1-minute metric points are kept (CloudWatch: 15 days).
    #[arg(long, env = "RAMPART_METRICS_MINUTES_RETENTION", default_value = "360h", value_parser = parse_duration)]
    metrics_minutes_retention: std::time::Duration,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    #[command(
        after_help = "Example:\n  rampart serve --listen 127.0.0.1:9000 --data-dir /var/lib/rampart"
    )]
    Serve(ServeArgs),
    /// Run the server in the foreground with the project in DIR deployed (the quickstart).
    #[command(after_help = "Example:\n  rampart up examples/counter")]
    Up {
        /// Project directory holding rampart.toml.
        dir: PathBuf,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Deploy the functions of the project in DIR to a running server.
    #[command(
        after_help = "Example:\n  rampart deploy examples/counter --endpoint http://127.0.0.1:9000"
    )]
    #[command(
        after_help = "Examples:\n  rampart deploy examples/counter\n  rampart deploy rollback counter   # stop a gradual deployment: all traffic back to the old version"
    )]
    Deploy {
        /// Project directory holding rampart.toml (or `rollback`, then the function).
        dir: PathBuf,
        /// With `rollback`: the function whose deployment is stopped.
        function: Option<String>,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Show gradual deployments (newest first), or follow them until they end.
    #[command(
        after_help = "Examples:\n  rampart deployments\n  rampart deployments counter --watch"
    )]
    Deployments {
        /// Only this function's.
        function: Option<String>,
        /// Redraw every second until none is in progress.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Metric alarms: list, force a state, delete, history.
    #[command(subcommand)]
    Alarms(AlarmsCommand),
    /// Invoke a function synchronously and print its result.
    #[command(
        after_help = "Examples:\n  rampart invoke counter --payload '{\"counter\": 1, \"operation\": \"increment\"}'\n  rampart invoke counter:3 --payload @event.json --tail"
    )]
    Invoke {
        /// FUNCTION or FUNCTION:QUALIFIER ($LATEST or a version number).
        function: String,
        /// The event: JSON text, or @FILE to read it from a file.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Also print the last 4 KB of the invocation's log.
        #[arg(long, conflicts_with = "async_")]
        tail: bool,
        /// Queue the event (InvocationType Event) and print its request id once it is stored.
        #[arg(long = "async", id = "async_")]
        async_: bool,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// List, show or delete functions.
    #[command(
        subcommand,
        after_help = "Examples:\n  rampart functions list\n  rampart functions show counter\n  rampart functions delete counter"
    )]
    Functions(FunctionsCommand),
    /// Create, list or delete API keys (for routes with `api_key_required = true`).
    #[command(
        subcommand,
        after_help = "Examples:\n  rampart keys create mobile-app --plan basic\n  rampart keys list\n  rampart keys delete mobile-app"
    )]
    Keys(KeysCommand),
    /// Set, list or delete usage plans (rate, burst and quotas of the keys on them).
    #[command(
        subcommand,
        after_help = "Examples:\n  rampart plans set basic --rate 10 --burst 20 --quota-day 10000\n  rampart plans list"
    )]
    Plans(PlansCommand),
    /// Inspect, replay or purge dead-lettered asynchronous events.
    #[command(
        subcommand,
        after_help = "Examples:\n  rampart dlq list counter\n  rampart dlq show 6f1c...\n  rampart dlq replay counter --all\n  rampart dlq purge counter"
    )]
    Dlq(DlqCommand),
    /// Print one metric of a function as a table and a sparkline.
    #[command(
        after_help = "Examples:\n  rampart metrics counter\n  rampart metrics counter --metric Duration --stat p99 --period 1m --since 1h\n  rampart metrics counter-monitored --namespace counter --metric counter --stat Maximum --dimension operation=increment"
    )]
    Metrics {
        /// The function.
        function: String,
        /// The metric (Invocations, Errors, Throttles, Duration, ConcurrentExecutions,
        /// ColdStarts, InitDuration, Timeouts, the async metrics, or a custom one).
        #[arg(long, default_value = "Invocations")]
        metric: String,
        /// Sum, Average, Minimum, Maximum, SampleCount or a percentile such as p99.
        #[arg(long, default_value = "Sum")]
        stat: String,
        /// Bucket length (1s, 5s, 10s, 20s, 30s or whole minutes).
        #[arg(long, default_value = "1m", value_parser = parse_duration)]
        period: std::time::Duration,
        /// How far back.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        since: std::time::Duration,
        /// The namespace; custom namespaces take their dimensions from --dimension.
        #[arg(long, default_value = "AWS/Lambda")]
        namespace: String,
        /// A dimension `Name=Value` (repeatable).
        #[arg(long)]
        dimension: Vec<String>,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Live per-function request and error rates, p99 duration, concurrency and instances.
    #[command(after_help = "Examples:\n  rampart top\n  rampart top --once")]
    Top {
        /// How often the table is redrawn.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        interval: std::time::Duration,
        /// Print the table once and exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// List the audit trail of control-plane actions, or verify its hash chain.
    #[command(
        after_help = "Examples:\n  rampart audit --since 24h\n  rampart audit --action CreateFunction20150331\n  rampart audit verify"
    )]
    Audit(AuditArgs),
    /// Print a function's logs.
    #[command(
        after_help = "Examples:\n  rampart logs counter --since 10m\n  rampart logs counter --follow\n  rampart logs counter --request 6f1c...\n  rampart logs counter --level error --since 2026-11-25T10:00:00Z --until 1h\n  rampart logs counter --filter timeout"
    )]
    Logs {
        /// The function.
        function: String,
        /// Keep printing new lines as they arrive.
        #[arg(long, short)]
        follow: bool,
        /// Only lines from this time on: an age (30s, 10m, 2h) or a time (2026-11-25T10:00:00Z).
        #[arg(long, value_parser = parse_time)]
        since: Option<jiff::Timestamp>,
        /// Only lines before this time: an age or a time, as --since.
        #[arg(long, value_parser = parse_time)]
        until: Option<jiff::Timestamp>,
        /// Only the lines of one invocation.
        #[arg(long)]
        request: Option<String>,
        /// Only lines containing this text.
        #[arg(long)]
        filter: Option<String>,
        /// Only lines logged at this level or worse (TRACE, DEBUG, INFO, WARN, ERROR, FATAL).
        #[arg(long)]
        level: Option<String>,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only records newer than this (e.g. 30m, 24h).
    #[arg(long, value_parser = parse_duration)]
    since: Option<std::time::Duration>,
    /// Only records of one action (e.g. CreateFunction20150331, PutApi).
    #[arg(long)]
    action: Option<String>,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the whole hash chain: exits 1 naming each edited, removed or reordered record.
    #[command(after_help = "Example:\n  rampart audit verify")]
    Verify {
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

#[derive(Subcommand)]
enum AlarmsCommand {
    /// Create or replace a metric alarm (as a `[[alarm]]` entry of rampart.toml would).
    #[command(
        after_help = "Examples:\n  rampart alarms put errors-high --dimension FunctionName=counter --metric Errors --stat Sum --period 1m --threshold 0 --comparison GreaterThanThreshold\n  rampart alarms put slow --dimension FunctionName=counter --metric Duration --stat p99 --period 1m --evaluation-periods 5 --datapoints-to-alarm 3 --threshold 500 --comparison GreaterThanThreshold --action http://127.0.0.1:9999/hook"
    )]
    Put {
        /// The alarm.
        name: String,
        /// The metric.
        #[arg(long)]
        metric: String,
        /// Its namespace.
        #[arg(long, default_value = "AWS/Lambda")]
        namespace: String,
        /// A dimension `Name=Value` (repeatable).
        #[arg(long)]
        dimension: Vec<String>,
        /// Sum, Average, Minimum, Maximum, SampleCount or pNN.
        #[arg(long, default_value = "Sum")]
        stat: String,
        /// Seconds per datapoint (10s, 20s, 30s or whole minutes).
        #[arg(long, default_value = "1m")]
        period: String,
        /// N: the periods looked at.
        #[arg(long, default_value_t = 1)]
        evaluation_periods: u32,
        /// M: breaching datapoints among them that mean ALARM (default N).
        #[arg(long)]
        datapoints_to_alarm: Option<u32>,
        /// The threshold.
        #[arg(long)]
        threshold: f64,
        /// GreaterThanThreshold, GreaterThanOrEqualToThreshold, LessThanThreshold,
        /// LessThanOrEqualToThreshold.
        #[arg(long)]
        comparison: String,
        /// missing, ignore, breaching or notBreaching.
        #[arg(long, default_value = "missing")]
        treat_missing_data: String,
        /// An action on entering ALARM (repeatable): a function ARN, an http(s) URL,
        /// rampart:recycle:FN or rampart:rollback:FN.
        #[arg(long)]
        action: Vec<String>,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// List alarms with their state.
    #[command(after_help = "Example:\n  rampart alarms list")]
    List {
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Set an alarm's state until its next evaluation (runs its actions on a change).
    #[command(after_help = "Example:\n  rampart alarms set-state errors-high ALARM --reason drill")]
    SetState {
        /// The alarm.
        name: String,
        /// OK, ALARM or INSUFFICIENT_DATA.
        state: String,
        /// Why.
        #[arg(long, default_value = "set by rampart alarms set-state")]
        reason: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Delete an alarm.
    #[command(after_help = "Example:\n  rampart alarms delete errors-high")]
    Delete {
        /// The alarm.
        name: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// An alarm's history: configuration changes, state changes and actions.
    #[command(after_help = "Example:\n  rampart alarms history errors-high")]
    History {
        /// The alarm.
        name: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List a function's dead letters, newest first.
    #[command(after_help = "Example:\n  rampart dlq list counter")]
    List {
        /// The function.
        function: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Show one dead letter with its payload and last error.
    #[command(after_help = "Example:\n  rampart dlq show 6f1c0d2e-...")]
    Show {
        /// The event's request id.
        id: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Queue dead letters again (each leaves the DLQ only once its new event is stored).
    #[command(
        after_help = "Examples:\n  rampart dlq replay counter --id 6f1c0d2e-...\n  rampart dlq replay counter --all"
    )]
    Replay {
        /// The function.
        function: String,
        /// One event.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<String>,
        /// Every dead letter of the function.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Delete a function's dead letters.
    #[command(after_help = "Example:\n  rampart dlq purge counter")]
    Purge {
        /// The function.
        function: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed once and stored only as a hash.
    #[command(after_help = "Example:\n  rampart keys create mobile-app --plan basic")]
    Create {
        /// The key's name.
        name: String,
        /// The usage plan limiting it.
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// List keys with their plans and request counts (never their secrets).
    #[command(after_help = "Example:\n  rampart keys list")]
    List {
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Delete a key.
    #[command(after_help = "Example:\n  rampart keys delete mobile-app")]
    Delete {
        /// The key's name.
        name: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

#[derive(Subcommand)]
enum PlansCommand {
    /// Create or replace a usage plan.
    #[command(
        after_help = "Example:\n  rampart plans set basic --rate 10 --burst 20 --quota-day 10000 --quota-month 200000"
    )]
    Set {
        /// The plan's name.
        name: String,
        /// Sustained requests per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Requests allowed at once above the rate.
        #[arg(long)]
        burst: Option<u32>,
        /// Requests per UTC day.
        #[arg(long)]
        quota_day: Option<u64>,
        /// Requests per UTC month.
        #[arg(long)]
        quota_month: Option<u64>,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// List usage plans.
    #[command(after_help = "Example:\n  rampart plans list")]
    List {
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Delete a usage plan (its keys keep working, unlimited).
    #[command(after_help = "Example:\n  rampart plans delete basic")]
    Delete {
        /// The plan's name.
        name: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

#[derive(Subcommand)]
enum FunctionsCommand {
    /// List functions.
    #[command(after_help = "Example:\n  rampart functions list")]
    List {
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Show a function's configuration and instances.
    #[command(after_help = "Example:\n  rampart functions show counter")]
    Show {
        /// The function.
        function: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Delete a function.
    #[command(after_help = "Example:\n  rampart functions delete counter")]
    Delete {
        /// The function.
        function: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

fn main() -> ExitCode {
    // A pre-forked sandbox slot: exec the runtime it is sent, nothing else.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == rampart_runtime::STUB_ARG)
    {
        let error = rampart_runtime::run_stub();
        eprintln!("{error}");
        return ExitCode::from(127);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAMPART_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args, None).await,
        Command::Up { dir, serve: args } => {
            let manifest = Manifest::load(&dir)?;
            serve(args, Some(manifest)).await
        }
        Command::Deploy {
            dir,
            function: Some(function),
            endpoint,
        } if dir.as_os_str() == "rollback" => {
            let client = Client::new(&endpoint.endpoint)?;
            client
                .manage(
                    reqwest::Method::POST,
                    &format!("/rampart/v1/functions/{function}/deployments/rollback"),
                    None,
                    &format!("rolling back the deployment of {function}"),
                )
                .await?;
            println!("rolling back the deployment of {function}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Deployments {
            function,
            watch,
            endpoint,
        } => deployments(&endpoint.endpoint, function, watch).await,
        Command::Alarms(command) => alarms(command).await,
        Command::Deploy { dir, endpoint, .. } => {
            let manifest = Manifest::load(&dir)?;
            let client = Client::new(&endpoint.endpoint)?;
            for d in deploy::deploy(&client, &manifest).await? {
                println!("{}: {}", d.name, d.action);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Invoke {
            function,
            payload,
            tail,
            async_,
            endpoint,
        } => invoke(&endpoint.endpoint, &function, &payload, tail, async_).await,
        Command::Functions(command) => functions(command).await,
        Command::Keys(command) => keys(command).await,
        Command::Dlq(command) => dlq(command).await,
        Command::Audit(args) => audit(args).await,
        Command::Metrics {
            function,
            metric,
            stat,
            period,
            since,
            namespace,
            dimension,
            endpoint,
        } => {
            let client = Client::new(&endpoint.endpoint)?;
            let request = watch::MetricRequest {
                function,
                namespace,
                metric,
                stat,
                period,
                since,
                dimensions: dimension,
            };
            watch::metrics(&client, request).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Top {
            interval,
            once,
            endpoint,
        } => {
            let client = Client::new(&endpoint.endpoint)?;
            watch::top(&client, interval, once).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plans(command) => plans(command).await,
        Command::Logs {
            function,
            follow,
            since,
            until,
            request,
            filter,
            level,
            endpoint,
        } => {
            let mut query: Vec<(&str, String)> = Vec::new();
            let params = [
                ("since_ms", since.map(|t| t.as_millisecond().to_string())),
                ("until_ms", until.map(|t| t.as_millisecond().to_string())),
                ("request_id", request),
                ("filter", filter),
                ("level", level),
            ];
            for (key, value) in params {
                if let Some(value) = value {
                    query.push((key, value));
                }
            }
            logs(&endpoint.endpoint, &function, follow, query).await
        }
    }
}

async fn serve(args: ServeArgs, project: Option<Manifest>) -> Result<ExitCode> {
    let options = server::Options {
        listen: args.listen,
        http_listen: args.http_listen,
        data_dir: args.data_dir.clone(),
        region: args.region,
        queue_wait: args.queue_wait,
        log_retention: args.log_retention,
        log_max_lines: args.log_max_lines,
        drain_timeout: args.drain_timeout,
        force_rlimit: args.sandbox == "rlimit",
        init_timeout: args.init_timeout,
        next_timeout: args.next_timeout,
        alarm_interval: args.alarm_interval,
        telemetry: args.telemetry == "on",
        otlp_endpoint: args.otlp_endpoint,
        trace_sample_rate: args.trace_sample_rate,
        metrics_retention: rampart_telemetry::Retention {
            seconds: args.metrics_seconds_retention,
            minutes: args.metrics_minutes_retention,
        },
        async_settings: rampart_gateway::AsyncSettings {
            retry_base: args.async_retry_base,
            idempotency_window: args.idempotency_window,
            max_age: args.async_max_event_age,
            ..rampart_gateway::AsyncSettings::default()
        },
    };
    let mut signals = server::Signals::install()?;
    let running = server::start(options).await?;
    if let Some(manifest) = &project {
        let client = Client::new(&format!("http://{}", running.addr))?;
        match deploy::deploy(&client, manifest).await {
            Ok(done) => print_quickstart(running.addr, running.http_addr, manifest, &done),
            Err(e) => {
                running.stop();
                running.wait().await?;
                return Err(e.context("deploying the project"));
            }
        }
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}",
            server::ready_line(running.addr, running.http_addr, &args.data_dir)
        )
        .and_then(|()| out.flush())
        .context("printing the ready line")?;
    }
    signals.recv().await;
    running.stop();
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}

fn print_quickstart(
    addr: SocketAddr,
    http_addr: SocketAddr,
    manifest: &Manifest,
    deployed: &[deploy::Deployed],
) {
    println!("Deployed to http://{addr}:");
    for d in deployed {
        println!("  {} ({})", d.name, d.action);
    }
    if let Some(first) = deployed.first() {
        let name = &first.name;
        let event = r#"{"counter": 1, "operation": "increment"}"#;
        println!("\nInvoke it with the CLI:");
        println!("  rampart invoke {name} --endpoint http://{addr} --payload '{event}'");
        println!("with curl:");
        println!(
            "  curl -s -X POST http://{addr}/2015-03-31/functions/{name}/invocations -d '{event}'"
        );
        println!("with boto3:");
        println!(
            "  python3 -c \"import boto3, json; c = boto3.client('lambda', endpoint_url='http://{addr}', region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x'); print(c.invoke(FunctionName='{name}', Payload=json.dumps({{'counter': 1, 'operation': 'increment'}}))['Payload'].read())\""
        );
        println!();
    }
    for api in &manifest.apis {
        let prefix = match api.stage.as_str() {
            "$default" => String::new(),
            stage => format!("/{stage}"),
        };
        println!("API {} on http://{http_addr}{prefix}:", api.name);
        for route in &api.routes {
            println!("  {} -> {}", route.route, route.function);
        }
        println!();
    }
}

async fn invoke(
    endpoint: &str,
    function: &str,
    payload: &str,
    tail: bool,
    asynchronous: bool,
) -> Result<ExitCode> {
    let payload = match payload.strip_prefix('@') {
        Some(file) => tokio::fs::read(file)
            .await
            .with_context(|| format!("reading the payload file {file}"))?,
        None => payload.as_bytes().to_vec(),
    };
    let (name, qualifier) = match function.split_once(':') {
        Some((n, q)) if !function.starts_with("arn:") => (n, Some(q)),
        _ => (function, None),
    };
    let client = Client::new(endpoint)?;
    if asynchronous {
        let id = client.invoke_async(name, qualifier, payload).await?;
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let result = client.invoke(name, qualifier, payload, tail).await?;
    if let Some(tail) = &result.log_tail {
        eprintln!("{tail}");
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&result.body).context("printing the result")?;
    writeln!(out).context("printing the result")?;
    if let Some(kind) = result.function_error {
        eprintln!(
            "function error ({kind}) in version {}",
            result.executed_version.as_deref().unwrap_or("?")
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

async fn functions(command: FunctionsCommand) -> Result<ExitCode> {
    match command {
        FunctionsCommand::List { endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            let functions = client.list_functions().await?;
            println!(
                "{:<32} {:<16} {:>7} {:>8}  {:<9} LAST MODIFIED",
                "NAME", "RUNTIME", "MEMORY", "TIMEOUT", "STATE"
            );
            for f in functions {
                let name = f["FunctionName"].as_str().unwrap_or_default();
                // Degraded: its instances keep failing to start and are retried with backoff.
                let degraded = client.stats(name).await?["degraded"] == true;
                println!(
                    "{:<32} {:<16} {:>7} {:>7}s  {:<9} {}",
                    name,
                    f["Runtime"].as_str().unwrap_or_default(),
                    f["MemorySize"],
                    f["Timeout"],
                    if degraded { "degraded" } else { "active" },
                    f["LastModified"].as_str().unwrap_or_default()
                );
            }
        }
        FunctionsCommand::Show { function, endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            let Some(mut f) = client.get_function(&function).await? else {
                bail!("function {function} does not exist");
            };
            f["Instances"] = client.stats(&function).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&f).context("printing the function")?
            );
        }
        FunctionsCommand::Delete { function, endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            client.delete_function(&function).await?;
            println!("deleted {function}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn deployments(endpoint: &str, function: Option<String>, watch: bool) -> Result<ExitCode> {
    let client = Client::new(endpoint)?;
    let path = match &function {
        Some(f) => format!("/rampart/v1/deployments?function={f}"),
        None => "/rampart/v1/deployments".to_owned(),
    };
    loop {
        let list = client
            .manage(reqwest::Method::GET, &path, None, "listing deployments")
            .await?;
        let rows = list["Deployments"].as_array().cloned().unwrap_or_default();
        let mut table = format!(
            "{:<12} {:<20} {:<10} {:>5} {:>5} {:<11} {:>7}  REASON\n",
            "ID", "FUNCTION", "ALIAS", "FROM", "TO", "STATUS", "WEIGHT"
        );
        for d in &rows {
            let text = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            table.push_str(&format!(
                "{:<12} {:<20} {:<10} {:>5} {:>5} {:<11} {:>6.0}%  {}\n",
                text("DeploymentId"),
                text("FunctionName"),
                text("Alias"),
                text("FromVersion"),
                text("ToVersion"),
                text("Status"),
                d["Weight"].as_f64().unwrap_or(0.0) * 100.0,
                text("Reason")
            ));
        }
        let running = rows.iter().any(|d| d["Status"] == "InProgress");
        if !watch {
            print!("{table}");
            return Ok(ExitCode::SUCCESS);
        }
        print!("\x1b[H\x1b[2J{table}");
        std::io::stdout().flush().context("printing deployments")?;
        if !running {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn alarms(command: AlarmsCommand) -> Result<ExitCode> {
    match command {
        AlarmsCommand::Put {
            name,
            metric,
            namespace,
            dimension,
            stat,
            period,
            evaluation_periods,
            datapoints_to_alarm,
            threshold,
            comparison,
            treat_missing_data,
            action,
            endpoint,
        } => {
            let mut dimensions = std::collections::BTreeMap::new();
            for d in &dimension {
                let Some((k, v)) = d.split_once('=') else {
                    bail!("--dimension {d} must be Name=Value");
                };
                dimensions.insert(k.to_owned(), v.to_owned());
            }
            let entry = manifest::AlarmEntry::new(
                name.clone(),
                namespace,
                metric,
                dimensions,
                stat,
                period,
                evaluation_periods,
                datapoints_to_alarm,
                threshold,
                comparison,
                treat_missing_data,
                action,
            );
            let client = Client::new(&endpoint.endpoint)?;
            client
                .cloudwatch("PutMetricAlarm", &entry.put_metric_alarm()?)
                .await?;
            println!("put alarm {name}");
        }
        AlarmsCommand::List { endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            let list = client
                .cloudwatch("DescribeAlarms", &serde_json::json!({}))
                .await?;
            println!("{:<32} {:<18} {:<24} REASON", "NAME", "STATE", "METRIC");
            for a in list["MetricAlarms"].as_array().into_iter().flatten() {
                let text = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
                println!(
                    "{:<32} {:<18} {:<24} {}",
                    text("AlarmName"),
                    text("StateValue"),
                    text("MetricName"),
                    text("StateReason")
                );
            }
        }
        AlarmsCommand::SetState {
            name,
            state,
            reason,
            endpoint,
        } => {
            let client = Client::new(&endpoint.endpoint)?;
            client
                .cloudwatch(
                    "SetAlarmState",
                    &serde_json::json!({"AlarmName": name, "StateValue": state, "StateReason": reason}),
                )
                .await?;
            println!("{name} is {state}");
        }
        AlarmsCommand::Delete { name, endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            client
                .cloudwatch("DeleteAlarms", &serde_json::json!({"AlarmNames": [name]}))
                .await?;
            println!("deleted {name}");
        }
        AlarmsCommand::History { name, endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            let history = client
                .cloudwatch(
                    "DescribeAlarmHistory",
                    &serde_json::json!({"AlarmName": name}),
                )
                .await?;
            for item in history["AlarmHistoryItems"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let time = item["Timestamp"]
                    .as_f64()
                    .and_then(|t| jiff::Timestamp::from_millisecond((t * 1000.0) as i64).ok())
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                println!(
                    "{time}  {:<20} {}",
                    item["HistoryItemType"].as_str().unwrap_or_default(),
                    item["HistorySummary"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit(args: AuditArgs) -> Result<ExitCode> {
    use reqwest::Method;
    if let Some(AuditCommand::Verify { endpoint }) = args.command {
        let client = Client::new(&endpoint.endpoint)?;
        let check = client
            .manage(
                Method::GET,
                "/rampart/v1/audit/verify",
                None,
                "verifying the audit trail",
            )
            .await?;
        let problems = check["problems"].as_array().cloned().unwrap_or_default();
        if problems.is_empty() {
            println!(
                "audit trail intact: {} records, head {}",
                check["records"],
                check["head"].as_str().unwrap_or("(empty)")
            );
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("audit trail broken:");
        for p in problems {
            eprintln!("  {}", p.as_str().unwrap_or_default());
        }
        return Ok(ExitCode::FAILURE);
    }
    let client = Client::new(&args.endpoint.endpoint)?;
    let mut query = Vec::new();
    if let Some(since) = args.since {
        let since_ms = jiff::Timestamp::now().as_millisecond() - since.as_millis() as i64;
        query.push(format!("since_ms={since_ms}"));
    }
    if let Some(action) = &args.action {
        if !action.chars().all(|c| c.is_ascii_alphanumeric()) {
            anyhow::bail!("--action takes an action name such as CreateFunction20150331");
        }
        query.push(format!("action={action}"));
    }
    let list = client
        .manage(
            Method::GET,
            &format!("/rampart/v1/audit?{}", query.join("&")),
            None,
            "reading the audit trail",
        )
        .await?;
    println!(
        "{:>5}  {:<24}  {:<38} {:<20} {:<28} {:<12} SOURCE",
        "SEQ", "TIME", "ACTION", "RESOURCE", "RESULT", "PRINCIPAL"
    );
    for r in list["records"].as_array().into_iter().flatten() {
        let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
        println!(
            "{:>5}  {:<24}  {:<38} {:<20} {:<28} {:<12} {}",
            r["seq"],
            text("time"),
            text("action"),
            text("resource"),
            text("result"),
            text("principal"),
            text("source")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn dlq(command: DlqCommand) -> Result<ExitCode> {
    use reqwest::Method;
    match command {
        DlqCommand::List { function, endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            let list = client
                .manage(
                    Method::GET,
                    &format!("/rampart/v1/functions/{function}/dlq"),
                    None,
                    "listing dead letters",
                )
                .await?;
            println!("{:<36}  {:<18} {:>8}  FAILED", "ID", "REASON", "ATTEMPTS");
            for d in list["dead_letters"].as_array().into_iter().flatten() {
                let failed =
                    jiff::Timestamp::from_millisecond(d["failed_ms"].as_i64().unwrap_or(0))
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                println!(
                    "{:<36}  {:<18} {:>8}  {failed}",
                    d["id"].as_str().unwrap_or_default(),
                    d["reason"].as_str().unwrap_or_default(),
                    d["attempts"]
                );
            }
        }
        DlqCommand::Show { id, endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            let dead = client
                .manage(
                    Method::GET,
                    &format!("/rampart/v1/dlq/{id}"),
                    None,
                    "reading a dead letter",
                )
                .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&dead).context("printing the dead letter")?
            );
        }
        DlqCommand::Replay {
            function,
            id,
            all,
            endpoint,
        } => {
            let client = Client::new(&endpoint.endpoint)?;
            let body = serde_json::json!({"id": id, "all": all});
            let done = client
                .manage(
                    Method::POST,
                    &format!("/rampart/v1/functions/{function}/dlq/replay"),
                    Some(body),
                    "replaying dead letters",
                )
                .await?;
            println!("replayed {}", done["replayed"]);
        }
        DlqCommand::Purge { function, endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            let done = client
                .manage(
                    Method::DELETE,
                    &format!("/rampart/v1/functions/{function}/dlq"),
                    None,
                    "purging dead letters",
                )
                .await?;
            println!("purged {}", done["purged"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn keys(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Create {
            name,
            plan,
            endpoint,
        } => {
            let client = Client::new(&endpoint.endpoint)?;
            let created = client
                .manage(
                    reqwest::Method::POST,
                    "/rampart/v1/keys",
                    Some(serde_json::json!({"name": name, "plan": plan})),
                    "creating an API key",
                )
                .await?;
            println!("{}", created["key"].as_str().unwrap_or_default());
            eprintln!("key {name} created; this is the only time its secret is shown");
        }
        KeysCommand::List { endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            let list = client
                .manage(
                    reqwest::Method::GET,
                    "/rampart/v1/keys",
                    None,
                    "listing API keys",
                )
                .await?;
            println!(
                "{:<32} {:<16} {:>10} {:>12}",
                "NAME", "PLAN", "TODAY", "THIS MONTH"
            );
            for k in list["keys"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<16} {:>10} {:>12}",
                    k["name"].as_str().unwrap_or_default(),
                    k["plan"].as_str().unwrap_or("-"),
                    k["requests_today"],
                    k["requests_this_month"]
                );
            }
        }
        KeysCommand::Delete { name, endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            client
                .manage(
                    reqwest::Method::DELETE,
                    &format!("/rampart/v1/keys/{name}"),
                    None,
                    "deleting an API key",
                )
                .await?;
            println!("deleted key {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn plans(command: PlansCommand) -> Result<ExitCode> {
    match command {
        PlansCommand::Set {
            name,
            rate,
            burst,
            quota_day,
            quota_month,
            endpoint,
        } => {
            let client = Client::new(&endpoint.endpoint)?;
            let plan = serde_json::json!({
                "rate_per_second": rate, "burst": burst,
                "quota_per_day": quota_day, "quota_per_month": quota_month,
            });
            let plan: serde_json::Map<String, serde_json::Value> = plan
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            client
                .manage(
                    reqwest::Method::PUT,
                    &format!("/rampart/v1/plans/{name}"),
                    Some(plan.into()),
                    "setting a usage plan",
                )
                .await?;
            println!("plan {name} set");
        }
        PlansCommand::List { endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            let list = client
                .manage(
                    reqwest::Method::GET,
                    "/rampart/v1/plans",
                    None,
                    "listing usage plans",
                )
                .await?;
            for p in list["plans"].as_array().into_iter().flatten() {
                println!("{} {}", p["name"].as_str().unwrap_or_default(), p["plan"]);
            }
        }
        PlansCommand::Delete { name, endpoint } => {
            let client = Client::new(&endpoint.endpoint)?;
            client
                .manage(
                    reqwest::Method::DELETE,
                    &format!("/rampart/v1/plans/{name}"),
                    None,
                    "deleting a usage plan",
                )
                .await?;
            println!("deleted plan {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A time given as an age (`10m`: ten minutes ago) or as an RFC 3339 time.
fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let age = parse_duration(text).map_err(|_| {
        format!("'{text}' is neither an age (10m, 2h) nor a time (2026-11-25T10:00:00Z)")
    })?;
    let age = jiff::SignedDuration::try_from(age).map_err(|e| e.to_string())?;
    jiff::Timestamp::now()
        .checked_sub(age)
        .map_err(|e| format!("'{text}' reaches too far back: {e}"))
}

async fn logs(
    endpoint: &str,
    function: &str,
    follow: bool,
    query: Vec<(&str, String)>,
) -> Result<ExitCode> {
    let client = Client::new(endpoint)?;
    let mut signals = server::Signals::install()?;
    let mut after: Option<i64> = None;
    loop {
        let mut q = query.clone();
        if let Some(a) = after {
            q.push(("after_id", a.to_string()));
        }
        let lines = client.logs(function, &q).await?;
        {
            let mut out = std::io::stdout().lock();
            for l in &lines {
                let ts = jiff::Timestamp::from_millisecond(l["ts_ms"].as_i64().unwrap_or(0))
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                // Runtimes join multi-line messages with \r (as on AWS): show them as lines.
                let text = l["line"].as_str().unwrap_or_default().replace('\r', "\n");
                writeln!(out, "{ts} {text}").context("printing logs")?;
            }
            out.flush().context("printing logs")?;
        }
        if let Some(last) = lines.last() {
            after = last["id"].as_i64();
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            () = signals.recv() => return Ok(ExitCode::SUCCESS),
        }
    }
}
