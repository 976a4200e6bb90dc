//! One line of a scenario's outcome.

use std::fmt;

use crate::Scenario;

/// One variant's outcome (or, with `variant == "summary"`, the scenario's
/// summary), printed as one line of `key=value` pairs:
/// - a variant: `scenario=s1 variant=naive ops=100 ... anomalies=38 ...`;
/// - the summary: `scenario=s1 naive_anomalies=38 idem_anomalies=0
///   naive_ops_per_s=.. idem_ops_per_s=.. ...` (no `variant=` field).
///
/// Values never contain spaces, so a line splits on whitespace and then on
/// the first `=`.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantReport {
    /// The scenario this line belongs to.
    pub scenario: Scenario,
    /// `naive`, `idem`, another variant's name, or `summary`.
    pub variant: String,
    /// The fields after `scenario=` (and `variant=`), in print order.
    pub fields: Vec<(String, String)>,
}

impl VariantReport {
    /// The name of the summary pseudo-variant.
    pub const SUMMARY: &'static str = "summary";

    pub(crate) fn new(scenario: Scenario, variant: impl Into<String>) -> Self {
        VariantReport { scenario, variant: variant.into(), fields: Vec::new() }
    }

    /// Appends `key=value`; spaces in the value are replaced by `_` so the
    /// line stays splittable.
    pub(crate) fn with(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.push(key, value);
        self
    }

    /// Appends `key=value` (see [`VariantReport::with`]).
    pub(crate) fn push(&mut self, key: &str, value: impl fmt::Display) {
        let v = value.to_string().replace(char::is_whitespace, "_");
        self.fields.push((key.to_string(), v));
    }

    /// Appends a rate rounded to one decimal.
    pub(crate) fn with_rate(self, key: &str, value: f64) -> Self {
        self.with(key, format!("{value:.1}"))
    }

    /// Whether this is the scenario's summary line.
    pub fn is_summary(&self) -> bool {
        self.variant == Self::SUMMARY
    }

    /// The value of a field, if present.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A field parsed as an unsigned integer.
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.field(key)?.parse().ok()
    }

    /// A field parsed as a float.
    pub fn f64(&self, key: &str) -> Option<f64> {
        self.field(key)?.parse().ok()
    }
}

impl fmt::Display for VariantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenario={}", self.scenario)?;
        if !self.is_summary() {
            write!(f, " variant={}", self.variant)?;
        }
        for (k, v) in &self.fields {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// Builds the summary line from the naive and idem variant lines: the four
/// fixed fields first, then `extra`.
pub(crate) fn summary(
    scenario: Scenario,
    naive: &VariantReport,
    idem: &VariantReport,
    extra: Vec<(String, String)>,
) -> VariantReport {
    let get = |r: &VariantReport, k: &str| r.field(k).unwrap_or("na").to_string();
    let mut s = VariantReport::new(scenario, VariantReport::SUMMARY)
        .with("naive_anomalies", get(naive, "anomalies"))
        .with("idem_anomalies", get(idem, "anomalies"))
        .with("naive_ops_per_s", get(naive, "ops_per_s"))
        .with("idem_ops_per_s", get(idem, "ops_per_s"));
    for (k, v) in extra {
        s.push(&k, v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_and_summary_lines() {
        let n = VariantReport::new(Scenario::S1, "naive").with("anomalies", 38).with_rate("ops_per_s", 1234.56);
        let i = VariantReport::new(Scenario::S1, "idem").with("anomalies", 0).with_rate("ops_per_s", 999.0);
        assert_eq!(n.to_string(), "scenario=s1 variant=naive anomalies=38 ops_per_s=1234.6");
        let s = summary(Scenario::S1, &n, &i, vec![("ratio".into(), "0.8".into())]);
        assert_eq!(
            s.to_string(),
            "scenario=s1 naive_anomalies=38 idem_anomalies=0 naive_ops_per_s=1234.6 idem_ops_per_s=999.0 ratio=0.8"
        );
        assert_eq!(s.u64("naive_anomalies"), Some(38));
        assert!(s.is_summary());
        let spaced = VariantReport::new(Scenario::S2, "x").with("err", "a b");
        assert_eq!(spaced.field("err"), Some("a_b"));
    }
}
