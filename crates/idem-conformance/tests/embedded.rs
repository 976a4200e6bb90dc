//! The conformance suite against the embedded store (in memory), one test per case.

use std::sync::Arc;

use idem_conformance::Backend;

/// A fresh in-memory store per test: each test has its own runtime, and the
/// store's background tasks belong to the runtime that opened it.
async fn backend() -> Arc<dyn Backend> {
    idem_store::Store::open(idem_store::StoreConfig::default()).expect("open the in-memory store")
}

idem_conformance::conformance_tests!(backend());

/// The runner form works too and every case is listed once.
#[test]
fn case_names_are_unique() {
    let mut names: Vec<&str> = idem_conformance::CASES.iter().map(|c| c.name).collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate case names");
    assert!(n >= 40, "the suite lists {n} cases");
}
