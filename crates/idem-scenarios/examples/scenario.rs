//! Runs one scenario and prints its lines, like `idem scenario`:
//!
//! ```text
//! cargo run --release -p idem-scenarios --example scenario -- s1 [--size N] [--idem redis://host:port]
//! ```

use idem_scenarios::{run, Scenario, ScenarioOpts};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut which: Option<Scenario> = None;
    let mut opts = ScenarioOpts::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--size" => opts.size = Some(args.next().ok_or_else(|| anyhow::anyhow!("--size needs a value"))?.parse()?),
            "--idem" => opts.idem_url = Some(args.next().ok_or_else(|| anyhow::anyhow!("--idem needs a URL"))?),
            s => which = Some(s.parse()?),
        }
    }
    let which = which.ok_or_else(|| anyhow::anyhow!("usage: scenario <s1|s2|s3|s4|s5> [--size N] [--idem URL]"))?;
    for line in run(which, opts).await? {
        println!("{line}");
    }
    Ok(())
}
