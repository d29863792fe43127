//! The metrics spool counts, registered for `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::traffic::Traffic;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

/// An origin's host (and port, when the URL names one), or `other` past
/// [`MAX_HOSTS`] of them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabel {
    pub host: String,
}

/// Distinct hosts labelled before the rest are `other`: the label set
/// stays bounded whatever the origins.
pub const MAX_HOSTS: usize = 64;

/// Upper bounds of the latency histograms, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Latency histograms by a label.
#[derive(Debug, Clone)]
pub struct Latency<L>(pub Family<L, Histogram, fn() -> Histogram>);

impl<L: Clone + std::hash::Hash + Eq> Default for Latency<L> {
    fn default() -> Self {
        Latency(Family::new_with_constructor(latency_histogram))
    }
}

/// Where served bytes came from: a chunk file, a chunk kept in memory, a
/// download under way, straight from the origin, multipart framing.
pub const SOURCES: [&str; 5] = ["cache", "memory", "download", "passthrough", "framing"];
/// Where a response's first byte came from: a chunk file, a chunk in
/// memory, the origin (a download or passthrough).
pub const FIRST_BYTE_SOURCES: [&str; 3] = ["cache", "memory", "origin"];
/// Why a connection was refused.
pub const REFUSALS: [&str; 2] = ["max_connections", "max_connections_per_client"];
/// Which limit held a request or stream back.
pub const LIMITS: [&str; 3] = ["max_downloads", "max_streams", "write_timeout"];
/// Classes of failed cache writes (`disk::WriteClass`).
pub const WRITE_CLASSES: [&str; 3] = ["DISK_FULL", "PERMISSION_DENIED", "IO"];
/// What start-up reconciliation fixes, by kind.
pub const RECOVERY_KINDS: [&str; 5] = ["temp_file", "orphan", "missing", "inconsistent", "corrupt"];

#[derive(Default, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Bytes served in each of the last minutes, for the status page.
    pub traffic: Traffic,
    /// Events not written to the index's history yet.
    pub history: crate::history::History,
    /// Totals at the last day's rollup (`take_daily`).
    daily_last: std::sync::Mutex<Option<[[u64; 3]; 2]>>,
    /// Media responses by where their first body byte came from.
    pub responses: Family<SourceLabel, Counter>,
    /// From a media request's headers to its first body byte, by source.
    pub time_to_first_byte: Latency<SourceLabel>,
    /// From a request to an origin to its answer's headers, by host.
    pub upstream_time_to_first_byte: Latency<HostLabel>,
    /// Responses streaming now, by the host of their origin.
    pub streams_by_host: Family<HostLabel, Gauge>,
    /// Download runs alive now, by the host of their origin.
    pub downloads_by_host: Family<HostLabel, Gauge>,
    /// Streams one media may take from an origin now (lowered while it
    /// answers 429 or 503 with Retry-After), by host; and those answers.
    pub origin_streams: Family<HostLabel, Gauge>,
    pub origin_busy: Family<HostLabel, Counter>,
    /// The hosts labelled so far.
    hosts: std::sync::Mutex<std::collections::HashSet<String>>,
    pub client_requests: Counter,
    pub open_connections: Gauge,
    pub connections_refused: Family<ReasonLabel, Counter>,
    pub limited: Family<ReasonLabel, Counter>,
    pub active_streams: Gauge,
    pub active_downloads: Gauge,
    pub downloads_transferring: Gauge,
    pub served_bytes: Family<SourceLabel, Counter>,
    /// Bytes of cached chunks sent with sendfile, never copied into spool.
    pub sendfile_bytes: Counter,
    pub upstream_requests: Counter,
    pub upstream_bytes: Counter,
    pub upstream_errors: Counter,
    pub upstream_resumes: Counter,
    pub seek_requests: Counter,
    pub chunks_written: Counter,
    pub cache_write_errors: Family<ClassLabel, Counter>,
    pub cache_read_errors: Counter,
    pub corrupt_chunks: Counter,
    pub recovery_fixed: Family<KindLabel, Counter>,
    pub index_recreated: Counter,
    pub cleanups: Counter,
    pub evicted_chunks: Counter,
    pub evicted_bytes: Counter,
    pub disk_free_bytes: Gauge,
    pub disk_total_bytes: Gauge,
    pub disk_level: Gauge,
    pub caching_paused: Gauge,
    pub memory_cache_bytes: Gauge,
    pub chunks_kept_in_memory: Counter,
    /// Write transactions the index committed.
    pub index_commits: Counter,
    /// What the index counts as cached: bytes and chunks.
    pub cache_bytes: Gauge,
    pub cache_chunks: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics::default();
        let r = &mut m.registry;
        r.register(
            "spool_client_requests",
            "Stream requests received",
            m.client_requests.clone(),
        );
        r.register(
            "spool_responses",
            "Media responses that sent a body, by where its first byte came from (cache, memory, origin)",
            m.responses.clone(),
        );
        r.register(
            "spool_time_to_first_byte_seconds",
            "Time from a media request's headers to its first body byte, by where the byte came from",
            m.time_to_first_byte.0.clone(),
        );
        r.register(
            "spool_upstream_time_to_first_byte_seconds",
            "Time from a request to an origin to its answer's headers, by origin host",
            m.upstream_time_to_first_byte.0.clone(),
        );
        r.register(
            "spool_active_streams_by_host",
            "Responses currently streaming, by the host of their origin",
            m.streams_by_host.clone(),
        );
        r.register(
            "spool_active_downloads_by_host",
            "Download runs alive, by the host of their origin",
            m.downloads_by_host.clone(),
        );
        r.register(
            "spool_origin_streams",
            "Streams one media may fetch over from an origin now (--streams-per-media, halved by each 429 or 503 with Retry-After, one back per 30 s), by host; hosts that answered so only",
            m.origin_streams.clone(),
        );
        r.register(
            "spool_origin_busy",
            "Answers 429, or 503 with Retry-After, by origin host",
            m.origin_busy.clone(),
        );
        r.register(
            "spool_open_connections",
            "Client connections open now",
            m.open_connections.clone(),
        );
        r.register(
            "spool_connections_refused",
            "Client connections closed at once because a limit was reached",
            m.connections_refused.clone(),
        );
        r.register(
            "spool_limited",
            "Requests or transfers held back by a limit, by limit",
            m.limited.clone(),
        );
        r.register(
            "spool_active_streams",
            "Responses currently streaming",
            m.active_streams.clone(),
        );
        r.register(
            "spool_active_downloads",
            "Download runs alive: transferring, or waiting for a player to want their next chunk",
            m.active_downloads.clone(),
        );
        r.register(
            "spool_downloads_transferring",
            "Download runs holding a --max-downloads place (transferring now)",
            m.downloads_transferring.clone(),
        );
        r.register(
            "spool_served_bytes",
            "Body bytes sent to players, by where they came from",
            m.served_bytes.clone(),
        );
        r.register(
            "spool_upstream_requests",
            "Requests sent to origins",
            m.upstream_requests.clone(),
        );
        r.register(
            "spool_upstream_bytes",
            "Body bytes received from origins",
            m.upstream_bytes.clone(),
        );
        r.register(
            "spool_upstream_errors",
            "Failed origin requests and broken transfers",
            m.upstream_errors.clone(),
        );
        r.register(
            "spool_upstream_resumes",
            "Broken transfers resumed from the byte they reached",
            m.upstream_resumes.clone(),
        );
        r.register(
            "spool_seek_requests",
            "Requests started at a waiting player's byte because the running transfer would reach it later",
            m.seek_requests.clone(),
        );
        r.register(
            "spool_chunks_written",
            "Chunks written to the cache",
            m.chunks_written.clone(),
        );
        r.register(
            "spool_cache_write_errors",
            "Failed cache writes by class (DISK_FULL, PERMISSION_DENIED, IO)",
            m.cache_write_errors.clone(),
        );
        r.register(
            "spool_sendfile_bytes",
            "Bytes of cached chunks sent from their files with sendfile(2), never read into spool (counted as the socket takes them; spool_served_bytes counts them as they are queued)",
            m.sendfile_bytes.clone(),
        );
        r.register(
            "spool_cache_read_errors",
            "Cached chunks that could not be read back",
            m.cache_read_errors.clone(),
        );
        r.register(
            "spool_corrupt_chunks",
            "Cached chunks whose checksum or length was wrong (never served)",
            m.corrupt_chunks.clone(),
        );
        r.register(
            "spool_recovery_fixed",
            "Inconsistencies fixed by start-up reconciliation, by kind",
            m.recovery_fixed.clone(),
        );
        r.register(
            "spool_cleanups",
            "Cache cleanups run (disk critical or a write found it full)",
            m.cleanups.clone(),
        );
        r.register(
            "spool_evicted_chunks",
            "Chunks evicted by cleanups",
            m.evicted_chunks.clone(),
        );
        r.register(
            "spool_evicted_bytes",
            "Bytes evicted by cleanups",
            m.evicted_bytes.clone(),
        );
        r.register(
            "spool_disk_free_bytes",
            "Free bytes on the cache's filesystem (as df shows them)",
            m.disk_free_bytes.clone(),
        );
        r.register(
            "spool_disk_total_bytes",
            "Size of the cache's filesystem",
            m.disk_total_bytes.clone(),
        );
        r.register(
            "spool_disk_level",
            "Disk level: 0 healthy, 1 info, 2 warning, 3 critical",
            m.disk_level.clone(),
        );
        r.register(
            "spool_caching_paused",
            "1 while cache writes are paused (disk full or breaker open)",
            m.caching_paused.clone(),
        );
        r.register(
            "spool_memory_cache_bytes",
            "Bytes of chunks held in memory because they could not be written",
            m.memory_cache_bytes.clone(),
        );
        r.register(
            "spool_chunks_kept_in_memory",
            "Chunks kept in memory instead of on disk",
            m.chunks_kept_in_memory.clone(),
        );
        r.register(
            "spool_index_recreated",
            "Times an unusable index was moved aside and recreated",
            m.index_recreated.clone(),
        );
        r.register(
            "spool_index_commits",
            "Write transactions the index committed (as of the last disk check): read times are batched, not one per read",
            m.index_commits.clone(),
        );
        r.register(
            "spool_cache_bytes",
            "Bytes cached (chunk files the index counts), as of the last disk check",
            m.cache_bytes.clone(),
        );
        r.register(
            "spool_cache_chunks",
            "Chunks cached, as of the last disk check",
            m.cache_chunks.clone(),
        );
        // Every labelled series exists from the start, at zero, so that
        // dashboards and rate() see a family before its first event.
        for source in SOURCES {
            let _ = m.served_bytes.get_or_create(&SourceLabel { source });
        }
        for source in FIRST_BYTE_SOURCES {
            let _ = m.responses.get_or_create(&SourceLabel { source });
            let _ = m
                .time_to_first_byte
                .0
                .get_or_create(&SourceLabel { source });
        }
        for reason in REFUSALS {
            let _ = m.connections_refused.get_or_create(&ReasonLabel { reason });
        }
        for reason in LIMITS {
            let _ = m.limited.get_or_create(&ReasonLabel { reason });
        }
        for class in WRITE_CLASSES {
            let _ = m.cache_write_errors.get_or_create(&ClassLabel { class });
        }
        for kind in RECOVERY_KINDS {
            let _ = m.recovery_fixed.get_or_create(&KindLabel { kind });
        }
        m
    }

    pub fn served(&self, source: &'static str, bytes: usize) {
        debug_assert!(SOURCES.contains(&source), "unlisted source {source}");
        self.served_bytes
            .get_or_create(&SourceLabel { source })
            .inc_by(bytes as u64);
    }

    pub fn refused(&self, reason: &'static str) {
        debug_assert!(REFUSALS.contains(&reason), "unlisted refusal {reason}");
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn limited(&self, reason: &'static str) {
        debug_assert!(LIMITS.contains(&reason), "unlisted limit {reason}");
        self.limited.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn write_error(&self, class: &'static str) {
        debug_assert!(WRITE_CLASSES.contains(&class), "unlisted class {class}");
        self.cache_write_errors
            .get_or_create(&ClassLabel { class })
            .inc();
    }

    /// Bytes served so far by where they came from: chunk files, chunks
    /// in memory, the origin (downloads and passthrough).
    fn served_totals(&self) -> [u64; 3] {
        let get = |source| {
            self.served_bytes
                .get_or_create(&SourceLabel { source })
                .get()
        };
        [
            get("cache"),
            get("memory"),
            get("download") + get("passthrough"),
        ]
    }

    /// A media response's first body byte, from `source` (one of
    /// [`SOURCES`]).
    /// `waited` is the time since the request's headers.
    pub fn first_byte(&self, source: &'static str, waited: std::time::Duration) {
        let label = SourceLabel {
            source: first_byte_source(source),
        };
        self.responses.get_or_create(&label).inc();
        self.time_to_first_byte
            .0
            .get_or_create(&label)
            .observe(waited.as_secs_f64());
    }

    /// The label of `url`'s origin host: `host` or `host:port` as the URL
    /// spells it; `other` once [`MAX_HOSTS`] hosts have labels.
    pub fn host(&self, url: &url::Url) -> HostLabel {
        let mut host = url.host_str().unwrap_or("").to_owned();
        if let Some(port) = url.port() {
            host = format!("{host}:{port}");
        }
        let mut hosts = self.hosts.lock().unwrap();
        if !hosts.contains(&host) {
            if hosts.len() >= MAX_HOSTS {
                return HostLabel {
                    host: "other".into(),
                };
            }
            hosts.insert(host.clone());
        }
        HostLabel { host }
    }

    /// An origin's answer headers arrived `took` after its request left.
    pub fn upstream_answered(&self, host: &HostLabel, took: std::time::Duration) {
        self.upstream_time_to_first_byte
            .0
            .get_or_create(host)
            .observe(took.as_secs_f64());
    }

    /// Requests and bytes by where they came from (cache, memory,
    /// origin) since the last call: what the day's rollup adds. The first
    /// call counts everything since start.
    pub fn take_daily(&self) -> [(u64, u64); 3] {
        let requests = FIRST_BYTE_SOURCES
            .map(|source| self.responses.get_or_create(&SourceLabel { source }).get());
        let now = [requests, self.served_totals()];
        let mut last = self.daily_last.lock().unwrap();
        let before = last.replace(now).unwrap_or([[0; 3]; 2]);
        std::array::from_fn(|i| {
            (
                now[0][i].saturating_sub(before[0][i]),
                now[1][i].saturating_sub(before[1][i]),
            )
        })
    }

    /// Adds what was served since the last sample to the minute `now`
    /// (unix seconds) falls in.
    pub fn sample_traffic(&self, now: i64) {
        self.traffic.add(self.served_totals(), now);
    }

    /// The Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The first-byte source of a served-bytes source.
pub fn first_byte_source(source: &'static str) -> &'static str {
    match source {
        "cache" | "memory" => source,
        _ => "origin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_labels_up_to_a_bound() {
        let m = Metrics::new();
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(m.host(&url("http://a.example/x")).host, "a.example");
        assert_eq!(
            m.host(&url("http://a.example:8096/x")).host,
            "a.example:8096"
        );
        for i in 0..MAX_HOSTS {
            m.host(&url(&format!("http://h{i}.example/")));
        }
        assert_eq!(m.host(&url("http://new.example/")).host, "other");
        assert_eq!(m.host(&url("http://a.example/y")).host, "a.example", "kept");
    }

    #[test]
    fn first_bytes_count_and_time_by_source() {
        let m = Metrics::new();
        m.first_byte("download", std::time::Duration::from_millis(30));
        m.first_byte("cache", std::time::Duration::from_micros(500));
        let text = m.encode();
        for line in [
            "spool_responses_total{source=\"origin\"} 1",
            "spool_responses_total{source=\"cache\"} 1",
            "spool_time_to_first_byte_seconds_bucket{le=\"0.001\",source=\"cache\"} 1",
            "spool_time_to_first_byte_seconds_bucket{le=\"0.025\",source=\"origin\"} 0",
            "spool_time_to_first_byte_seconds_bucket{le=\"0.05\",source=\"origin\"} 1",
            "spool_time_to_first_byte_seconds_count{source=\"memory\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn traffic_is_bytes_per_minute_over_the_last_hour() {
        let m = Metrics::new();
        let t0 = 1_000_000 * 60;
        m.sample_traffic(t0);
        m.served("cache", 100);
        m.served("download", 7);
        m.served("passthrough", 3);
        m.sample_traffic(t0 + 10);
        m.served("memory", 5);
        m.sample_traffic(t0 + 70);
        let h = m.traffic.last_hour(t0 + 70);
        assert_eq!(h.len(), 60);
        let minute = |at: i64| *h.iter().find(|x| x.at_unix == at).unwrap();
        assert_eq!(
            minute(t0),
            crate::metrics::traffic::Minute {
                at_unix: t0,
                cache_bytes: 100,
                memory_bytes: 0,
                origin_bytes: 10
            }
        );
        assert_eq!(minute(t0 + 60).memory_bytes, 5);
        // An hour later the old minutes are gone.
        m.sample_traffic(t0 + 3700);
        assert!(m
            .traffic
            .last_hour(t0 + 3700)
            .iter()
            .all(|x| x.cache_bytes == 0));
        assert!(m.traffic.minutes_kept() <= 60);
    }
}
