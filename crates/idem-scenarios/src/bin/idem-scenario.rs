//! `idem-scenario`: reproduces a scenario (S1–S5, docs/scenarios.md) naive
//! vs idem against the real engines, and prints its lines.
//!
//! ```text
//! idem-scenario s1|s2|s3|s4|s5 [--size N] [--idem redis://host:port] [--mysql URL] [--pg URL] ...
//! cargo run --release -p idem-scenarios --bin idem-scenario -- s1 --size 10000
//! ```
//!
//! A binary of its own, not a subcommand of `idem`: the server then links
//! none of the scenarios' clients (NATS, AMQP, HTTP, the naive engines').
//! `idem-scenario s2-worker` (hidden) is one consumer process of
//! `s2 --broker`, started by the scenario itself from this same binary.

use anyhow::Context;
use clap::Parser;

/// Reproduce a scenario (s1..s5) naive vs idem against the real engines.
#[derive(Parser, Debug)]
#[command(name = "idem-scenario", version)]
struct Cli {
    #[command(flatten)]
    args: ScenarioArgs,
}

/// One consumer process of `s2 --broker` (started by the scenario itself).
#[derive(Parser, Debug)]
#[command(name = "idem-scenario s2-worker")]
struct WorkerCli {
    #[command(flatten)]
    args: idem_broker::s2::WorkerArgs,
}

#[derive(clap::Args, Debug)]
struct ScenarioArgs {
    /// Which scenario: s1, s2, s3, s4 or s5.
    name: String,
    /// Problem size (scenario-specific: users, products, pairs, bookings, scale).
    #[arg(long)]
    size: Option<usize>,
    /// An external idem server (redis://host:port); default: one in-process on the embedded store in a temp dir.
    #[arg(long)]
    idem: Option<String>,
    /// MariaDB/MySQL URL [default: mysql://root@127.0.0.1:3306/test].
    #[arg(long)]
    mysql: Option<String>,
    /// PostgreSQL URL [default: postgres://postgres@127.0.0.1:5432/test].
    #[arg(long)]
    pg: Option<String>,
    /// Redis URL for the naive locks [default: redis://127.0.0.1:6379].
    #[arg(long)]
    redis: Option<String>,
    /// NATS JetStream URL [default: nats://127.0.0.1:4222].
    #[arg(long)]
    nats: Option<String>,
    /// RabbitMQ URL [default: amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(long)]
    amqp: Option<String>,
    /// S2 only: run S2 through the broker adapters on this broker (naive, adapter and inbox consumer processes) instead of the product copy.
    #[arg(long, value_enum)]
    broker: Option<idem_broker::s2::Broker>,
    /// S2 only: SIGKILL and restart consumer processes while the producer runs (with --broker; alone, on jetstream).
    #[arg(long)]
    kill: bool,
}

fn main() -> anyhow::Result<()> {
    let worker = std::env::args_os().nth(1).is_some_and(|a| a == "s2-worker");
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if worker {
        let cli = WorkerCli::parse_from(std::env::args_os().enumerate().filter(|(i, _)| *i != 1).map(|(_, a)| a));
        return runtime.block_on(idem_broker::s2::worker(cli.args));
    }
    let cli = Cli::parse();
    runtime.block_on(scenario(cli.args))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn scenario(args: ScenarioArgs) -> anyhow::Result<()> {
    let which: idem_scenarios::Scenario = args.name.parse()?;
    let mut opts = idem_scenarios::ScenarioOpts { size: args.size, idem_url: args.idem, ..Default::default() };
    if let Some(u) = args.mysql {
        opts.mysql_url = u;
    }
    if let Some(u) = args.pg {
        opts.pg_url = u;
    }
    if let Some(u) = args.redis {
        opts.redis_url = u;
    }
    if let Some(u) = args.nats {
        opts.nats_url = u;
    }
    if let Some(u) = args.amqp {
        opts.amqp_url = u;
    }
    let broker = match (args.broker, args.kill) {
        (Some(b), kill) => Some((b, kill)),
        (None, true) => Some((idem_broker::s2::Broker::Jetstream, true)),
        (None, false) => None,
    };
    if let Some((broker, kill)) = broker {
        anyhow::ensure!(which == idem_scenarios::Scenario::S2, "--broker and --kill are options of scenario s2");
        let worker = idem_broker::s2::WorkerCommand {
            program: std::env::current_exe().context("finding this binary to start consumer processes")?,
            args: vec!["s2-worker".into()],
        };
        opts.s2_broker = Some(idem_scenarios::s2_broker::BrokerRun { broker, kill, worker });
    }
    let reports = idem_scenarios::run(which, opts).await.with_context(|| format!("scenario {which} could not run"))?;
    for r in &reports {
        println!("{r}");
    }
    Ok(())
}
