//! Memory per record: idem's done idempotency records against Redis keys of
//! the same sizes.
//!
//! - idem: a fresh `idem serve` (durable default mode, temp data dir) takes
//!   N × `IDEM.BEGIN key` then `IDEM.COMMIT key fence result`, pipelined in
//!   chunks (BEGINs first: a COMMIT needs the fence from its BEGIN's reply);
//! - Redis: a fresh `redis-server` (no persistence) takes N × `SET key result
//!   PX 86400000` (the dedup use has a TTL), and another fresh one N × `SET
//!   key result` (no TTL).
//!
//! Keys are 16 bytes, results 32 bytes. Reported: the growth of VmRSS
//! (/proc/<pid>/status) per record for each server, and for Redis also the
//! growth of `used_memory` (what its allocator handed out) per key.
//!
//! Usage: `cargo run --release -p idem-bench --bin memory -- [--records N] [--idem-bin PATH]`

use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use idem_bench::{free_port, key, result_value, rss_bytes, Guard};
use redis::Value;

#[derive(Parser, Debug)]
#[command(about = "Bytes per record: idem done records vs Redis SET keys (16-byte keys, 32-byte values).")]
struct Args {
    /// Records to load into each server.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Commands per pipelined round trip.
    #[arg(long, default_value_t = 1000)]
    pipeline: u64,
    /// The idem binary (build it with `cargo build --release -p idem`).
    #[arg(long, default_value = "target/release/idem")]
    idem_bin: PathBuf,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
}

/// Time given to a server after loading, so that background work (the
/// ticker, the log writer, Redis's incremental rehashing) settles before RSS
/// is read.
const SETTLE: Duration = Duration::from_secs(2);

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One server's figures.
struct Figures {
    name: &'static str,
    rss_before: u64,
    rss_after: u64,
    used_before: Option<u64>,
    used_after: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.records == 0 || args.pipeline == 0 {
        bail!("--records and --pipeline must be at least 1");
    }
    let tmp = std::env::temp_dir().join(format!("idem-memory-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = run(&args, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    let figures = result?;

    let n = args.records as f64;
    println!(
        "records: {} (keys {} bytes, values/results {} bytes)",
        args.records,
        idem_bench::KEY_BYTES,
        idem_bench::RESULT_BYTES
    );
    println!("| server | VmRSS before | VmRSS after | RSS bytes/record | used_memory bytes/key |");
    println!("|---|---:|---:|---:|---:|");
    for f in &figures {
        let per = f.rss_after.saturating_sub(f.rss_before) as f64 / n;
        let used = match (f.used_before, f.used_after) {
            (Some(b), Some(a)) => format!("{:.1}", a.saturating_sub(b) as f64 / n),
            _ => "-".to_string(),
        };
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {per:.1} | {used} |",
            f.name,
            f.rss_before as f64 / 1048576.0,
            f.rss_after as f64 / 1048576.0
        );
    }
    if let [idem, with_px, without_px] = &figures[..] {
        let per = |f: &Figures| f.rss_after.saturating_sub(f.rss_before) as f64;
        println!(
            "idem RSS/record ÷ Redis RSS/key: {:.2} (vs SET PX), {:.2} (vs SET)",
            per(idem) / per(with_px),
            per(idem) / per(without_px)
        );
    }
    Ok(())
}

fn run(args: &Args, tmp: &std::path::Path) -> anyhow::Result<Vec<Figures>> {
    Ok(vec![
        measure_idem(args, &tmp.join("idem-data"))?,
        measure_redis(args, &tmp.join("redis-px"), "redis SET PX", true)?,
        measure_redis(args, &tmp.join("redis"), "redis SET", false)?,
    ])
}

fn connect(port: u16) -> anyhow::Result<redis::Connection> {
    Ok(redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()?)
}

fn measure_idem(args: &Args, data: &std::path::Path) -> anyhow::Result<Figures> {
    let port = free_port()?;
    let mut server = Guard::spawn(
        "idem",
        Process::new(&args.idem_bin)
            .args(["serve", "--port", &port.to_string(), "--http-port", "0", "--log", "warn", "--data"])
            .arg(data)
            .stdout(Stdio::null()),
    )?;
    server.wait_ready(port, READY_TIMEOUT)?;
    let mut con = connect(port)?;
    std::thread::sleep(SETTLE);
    let rss_before = rss_bytes(server.pid())?;

    let result = result_value();
    let mut first = 0;
    while first < args.records {
        let last = (first + args.pipeline).min(args.records);
        let mut begins = redis::pipe();
        for i in first..last {
            begins.cmd("IDEM.BEGIN").arg(key(i).as_ref());
        }
        let replies: Vec<Value> = begins.query(&mut con).context("IDEM.BEGIN pipeline")?;
        let mut commits = redis::pipe();
        for (i, reply) in (first..last).zip(replies) {
            let fence = started_fence(&reply).with_context(|| format!("IDEM.BEGIN of key {i} replied {reply:?}"))?;
            commits.cmd("IDEM.COMMIT").arg(key(i).as_ref()).arg(fence).arg(result.as_ref()).ignore();
        }
        commits.query::<()>(&mut con).context("IDEM.COMMIT pipeline")?;
        first = last;
    }
    let rss_after = settled_rss(&mut con, &server, "idem", args.records)?;
    Ok(Figures { name: "idem (done records)", rss_before, rss_after, used_before: None, used_after: None })
}

/// Checks that the server holds `records` keys, lets it settle, and returns its RSS.
fn settled_rss(con: &mut redis::Connection, server: &Guard, name: &str, records: u64) -> anyhow::Result<u64> {
    let dbsize: u64 = redis::cmd("DBSIZE").query(con)?;
    if dbsize != records {
        bail!("{name} holds {dbsize} keys after loading {records}");
    }
    std::thread::sleep(SETTLE);
    Ok(rss_bytes(server.pid())?)
}

/// The fence of a `["started", fence, attempt]` reply.
fn started_fence(reply: &Value) -> Option<u64> {
    let Value::Array(items) = reply else { return None };
    match (items.first(), items.get(1)) {
        (Some(Value::BulkString(w)), Some(Value::Int(f))) if w == b"started" => u64::try_from(*f).ok(),
        _ => None,
    }
}

fn used_memory(con: &mut redis::Connection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query(con)?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory has no used_memory")
}

fn measure_redis(args: &Args, dir: &std::path::Path, name: &'static str, px: bool) -> anyhow::Result<Figures> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let mut server = Guard::spawn(
        name,
        Process::new(&args.redis_server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null()),
    )?;
    server.wait_ready(port, READY_TIMEOUT)?;
    let mut con = connect(port)?;
    std::thread::sleep(SETTLE);
    let rss_before = rss_bytes(server.pid())?;
    let used_before = used_memory(&mut con)?;

    let value = result_value();
    let mut first = 0;
    while first < args.records {
        let last = (first + args.pipeline).min(args.records);
        let mut sets = redis::pipe();
        for i in first..last {
            let cmd = sets.cmd("SET").arg(key(i).as_ref()).arg(value.as_ref());
            if px {
                cmd.arg("PX").arg(86_400_000u64);
            }
            cmd.ignore();
        }
        sets.query::<()>(&mut con).context("SET pipeline")?;
        first = last;
    }
    let rss_after = settled_rss(&mut con, &server, name, args.records)?;
    let used_after = used_memory(&mut con)?;
    Ok(Figures { name, rss_before, rss_after, used_before: Some(used_before), used_after: Some(used_after) })
}
