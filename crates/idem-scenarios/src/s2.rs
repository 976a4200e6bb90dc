//! placeholder
use crate::harness::Ctx;
use crate::report::VariantReport;
pub(crate) async fn run(_ctx: &Ctx) -> anyhow::Result<Vec<VariantReport>> {
    anyhow::bail!("not yet")
}
