//! Scenario S2 over a real broker with consumer processes killed and
//! restarted (`run`, one variant), and the adapter's throughput benchmark
//! (`bench`). The code is `idem_broker::s2`; `idem-scenario s2 --broker B
//! [--kill]` runs every variant of the same scenario.

use std::time::Duration;

use clap::{Parser, Subcommand};
use idem_broker::s2::{self, Broker, DurableIdem, Engines, IdemAt, Plan, Variant, WorkerArgs, WorkerCommand};

#[derive(Parser)]
#[command(about = "Scenario S2 with killed consumer processes, and the broker adapter benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The scenario: publish, kill and restart workers, count the table.
    Run {
        #[arg(long, value_enum)]
        broker: Broker,
        #[arg(long, value_enum)]
        variant: Variant,
        #[arg(long, default_value_t = 2_000)]
        messages: usize,
        /// Every N-th order is published twice (0: none).
        #[arg(long, default_value_t = 5)]
        dup_every: usize,
        #[arg(long, default_value_t = 3)]
        workers: usize,
        /// SIGKILL a random worker this often (0: never).
        #[arg(long, default_value_t = 300)]
        kill_every_ms: u64,
        /// Orders published per second (0: as fast as the broker takes them).
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// The first run of this order aborts its process after its effect.
        #[arg(long)]
        crash_after_effect: Option<String>,
        /// Handlers per worker process.
        #[arg(long, default_value_t = 16)]
        concurrency: u32,
        /// Give up waiting for the effects after this long.
        #[arg(long, default_value_t = 120)]
        deadline_s: u64,
        #[command(flatten)]
        engines: Engines,
    },
    /// One consumer process (started by `run`).
    Worker(WorkerArgs),
    /// Messages per second through one consumer, `naive` (raw) or `adapter`.
    Bench {
        #[arg(long, value_enum)]
        broker: Broker,
        #[arg(long, value_enum)]
        variant: Variant,
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
        /// The handler inserts a row into PostgreSQL (else it does nothing).
        #[arg(long)]
        pg_effect: bool,
        /// The adapter's idem commands per pipeline.
        #[arg(long, default_value_t = idem_broker::PIPELINE_COMMANDS_MAX)]
        pipeline_commands: usize,
        /// The adapter's pipelines out at once.
        #[arg(long, default_value_t = idem_broker::PIPELINES_IN_FLIGHT_MAX)]
        pipelines: usize,
        /// How the adapter reaches its records (the embedded durable store
        /// in this process either way): through an idem server over
        /// loopback RESP, or by calling the store directly.
        #[arg(long, value_enum, default_value_t = IdemAt::Server)]
        idem: IdemAt,
        #[command(flatten)]
        engines: Engines,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run {
                broker,
                variant,
                messages,
                dup_every,
                workers,
                kill_every_ms,
                rate,
                crash_after_effect,
                concurrency,
                deadline_s,
                engines,
            } => {
                let idem = match variant {
                    Variant::Adapter => Some(DurableIdem::start().await?),
                    _ => None,
                };
                let plan = Plan {
                    broker,
                    variant,
                    orders: messages,
                    dup_every,
                    workers,
                    kill_every_ms,
                    rate,
                    crash_after_effect,
                    concurrency,
                    deadline: Duration::from_secs(deadline_s),
                    idem_url: idem.as_ref().and_then(|i| i.url()).map(str::to_string),
                    worker: WorkerCommand { program: std::env::current_exe()?, args: vec!["worker".into()] },
                };
                let report = s2::run(&plan, &engines).await;
                if let Some(i) = idem {
                    i.stop().await;
                }
                println!("{}", report?);
                Ok(())
            }
            Cmd::Worker(args) => s2::worker(args).await,
            Cmd::Bench {
                broker,
                variant,
                messages,
                concurrency,
                pg_effect,
                pipeline_commands,
                pipelines,
                idem,
                engines,
            } => {
                let limits = idem_broker::PipelineLimits::new(pipeline_commands, pipelines)?;
                let idem = match variant {
                    Variant::Adapter => Some(DurableIdem::open(idem).await?),
                    _ => None,
                };
                let report =
                    s2::bench(broker, variant, messages, concurrency, pg_effect, idem.as_ref(), limits, &engines).await;
                if let Some(i) = idem {
                    i.stop().await;
                }
                println!("{}", report?);
                Ok(())
            }
        }
    })
}
