//! Prometheus metrics, kept by hand (a few counters, gauges and histograms) and written in the text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::cache::Stats;

const SECONDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    /// `name_bucket{labels,le=...}` (cumulative), `name_sum`, `name_count`.
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Everything `/metrics` reports except the cache's figures, which the cache keeps itself ([`Stats`]).
#[derive(Debug)]
pub struct Metrics {
    /// (route, method, status) -> request durations.
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    time_to_first_token: Mutex<Histogram>,
    batch_size: Mutex<Histogram>,
    pub tokens_generated: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cancelled: AtomicU64,
    /// Requests waiting for the engine (not yet in a batch).
    pub queue_depth: AtomicU64,
    /// Requests admitted and not yet answered (queued or generating).
    pub in_flight: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            time_to_first_token: Mutex::new(Histogram::new(SECONDS)),
            batch_size: Mutex::new(Histogram::new(BATCH)),
            tokens_generated: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests
            .entry((route.to_string(), method.to_string(), status))
            .or_insert_with(|| Histogram::new(SECONDS))
            .observe(seconds);
    }

    pub fn observe_first_token(&self, seconds: f64) {
        self.time_to_first_token.lock().unwrap_or_else(|e| e.into_inner()).observe(seconds);
    }

    pub fn observe_batch(&self, size: usize) {
        self.batch_size.lock().unwrap_or_else(|e| e.into_inner()).observe(size as f64);
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self, cache: &Stats) -> String {
        let mut out = String::new();
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(out, "# HELP deepsynth_requests_total HTTP requests by route, method and status.");
        let _ = writeln!(out, "# TYPE deepsynth_requests_total counter");
        for ((route, method, status), h) in &requests {
            let _ = writeln!(
                out,
                "deepsynth_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP deepsynth_request_duration_seconds Time to the response's headers (a stream's \
            body goes on after)."
        );
        let _ = writeln!(out, "# TYPE deepsynth_request_duration_seconds histogram");
        for ((route, method, status), h) in &requests {
            let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{status}\"");
            h.write(&mut out, "deepsynth_request_duration_seconds", &labels);
        }
        let ttft = self.time_to_first_token.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(
            out,
            "# HELP deepsynth_time_to_first_token_seconds From admission to the first generated \
            token (queue, vision and prefill)."
        );
        let _ = writeln!(out, "# TYPE deepsynth_time_to_first_token_seconds histogram");
        ttft.write(&mut out, "deepsynth_time_to_first_token_seconds", "");
        let batch = self.batch_size.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(out, "# HELP deepsynth_batch_size Requests decoded together per engine batch.");
        let _ = writeln!(out, "# TYPE deepsynth_batch_size histogram");
        batch.write(&mut out, "deepsynth_batch_size", "");
        let counters: [(&str, &str, u64); 5] = [
            ("deepsynth_generated_tokens_total", "Tokens generated.", self.tokens_generated.load(Ordering::Relaxed)),
            ("deepsynth_prompt_tokens_total", "Prompt tokens prefilled.", self.prompt_tokens.load(Ordering::Relaxed)),
            (
                "deepsynth_cancelled_total",
                "Generations stopped early (client gone, timeout, shutdown).",
                self.cancelled.load(Ordering::Relaxed),
            ),
            ("deepsynth_cache_hits_total", "Documents whose visual tokens came from the cache.", cache.hits),
            ("deepsynth_cache_misses_total", "Documents run through the vision encoder.", cache.misses),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let gauges: [(&str, &str, u64); 4] = [
            ("deepsynth_queue_depth", "Requests waiting for a batch.", self.queue_depth.load(Ordering::Relaxed)),
            ("deepsynth_in_flight", "Requests admitted and not answered yet.", self.in_flight.load(Ordering::Relaxed)),
            ("deepsynth_cache_entries", "Documents in the visual-token cache.", cache.entries as u64),
            ("deepsynth_cache_bytes", "Bytes of visual tokens in the cache.", cache.bytes as u64),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_labelled() {
        let m = Metrics::default();
        m.observe_request("/health", "GET", 200, 0.003);
        m.observe_request("/health", "GET", 200, 0.2);
        m.observe_batch(3);
        let text = m.render(&Stats { hits: 2, misses: 1, entries: 1, bytes: 64, capacity_bytes: 128 });
        assert!(text.contains("deepsynth_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 2"));
        assert!(text.contains(
            "deepsynth_request_duration_seconds_bucket{route=\"/health\",method=\"GET\",status=\"200\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "deepsynth_request_duration_seconds_bucket{route=\"/health\",method=\"GET\",status=\"200\",le=\"0.25\"} 2"
        ));
        assert!(text.contains("deepsynth_batch_size_bucket{le=\"2\"} 0\ndeepsynth_batch_size_bucket{le=\"4\"} 1"));
        assert!(text.contains("deepsynth_cache_hits_total 2"));
    }
}
