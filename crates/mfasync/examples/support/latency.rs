//! The latency table of the password-check benchmarks (bench_auth, bench_radius).

use std::time::Duration;

/// The `p` quantile of sorted latencies, in milliseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// One table row; checks/s from the time the checks themselves took (the
/// kinds of check take turns, so the run's wall time is shared). Returns the p50.
pub fn report(name: &str, mut lat: Vec<Duration>) -> f64 {
    let total: Duration = lat.iter().sum();
    lat.sort();
    let p50 = pct(&lat, 0.5);
    println!(
        "| {name} | {:.0} | {p50:.2} ms | {:.2} ms |",
        lat.len() as f64 / total.as_secs_f64(),
        pct(&lat, 0.99)
    );
    p50
}
