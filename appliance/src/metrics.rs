//! Prometheus metrics (`GET /metrics`, text format, `rackboot_` prefix).
//!
//! Counters are bumped where things happen; gauges that describe state (leases, pool use,
//! nodes per stage) are computed from the store when scraped.
//!
//! Owns: `/metrics` (every Prometheus metric). May call: `store`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DhcpLabels {
    /// Message received (discover, request, …).
    r#type: String,
    /// What rackboot did: the reply sent (offer, ack, nak), "silent" or "dropped".
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImageLabel {
    image: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
    ok: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsLabels {
    transport: &'static str,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    state: String,
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn stage_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Every metric rackboot exports. Shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    dhcp_packets: Family<DhcpLabels, Counter>,
    dhcp_drops: Family<Reason, Counter>,
    dhcp_leases: Gauge,
    dhcp_pool: Family<PoolLabel, Gauge>,
    tftp_transfers: Family<Outcome, Counter>,
    tftp_bytes: Counter,
    tftp_retransmits: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistFamily<RouteLabel>,
    image_bytes: Family<ImageLabel, Counter>,
    boot_events: Family<StageLabels, Counter>,
    stage_duration: HistFamily<StageLabel>,
    nodes_by_stage: Family<StageLabel, Gauge>,
    timeline_dropped: Counter,
    timeline_unattributed: Counter,
    dhcp_static_unrecorded: Counter,
    store_state: Family<PoolLabel, Gauge>,
    store_free_bytes: Gauge,
    identity_token_refusals: Family<Reason, Counter>,
    backup_last_success: Gauge,
    backup_failures: Counter,
    upstream_lookups: Family<Outcome, Counter>,
    upstream_lookups_in_flight: Gauge,
    tasks: Gauge,
    /// Runtimes besides the scraping one whose tasks `tasks` counts (the packet runtime).
    other_runtimes: std::sync::Mutex<Vec<tokio::runtime::Handle>>,
    dns_responses: Family<DnsLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rackboot");
        let m = Metrics {
            dhcp_packets: Family::default(),
            dhcp_drops: Family::default(),
            dhcp_leases: Gauge::default(),
            dhcp_pool: Family::default(),
            tftp_transfers: Family::default(),
            tftp_bytes: Counter::default(),
            tftp_retransmits: Counter::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency),
            image_bytes: Family::default(),
            boot_events: Family::default(),
            stage_duration: Family::new_with_constructor(stage_seconds),
            nodes_by_stage: Family::default(),
            timeline_dropped: Counter::default(),
            timeline_unattributed: Counter::default(),
            dhcp_static_unrecorded: Counter::default(),
            store_state: Family::default(),
            store_free_bytes: Gauge::default(),
            identity_token_refusals: Family::default(),
            backup_last_success: Gauge::default(),
            backup_failures: Counter::default(),
            upstream_lookups: Family::default(),
            upstream_lookups_in_flight: Gauge::default(),
            tasks: Gauge::default(),
            other_runtimes: std::sync::Mutex::default(),
            dns_responses: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "dhcp_packets",
            "DHCP messages handled, by message type and outcome",
            m.dhcp_packets.clone(),
        );
        registry.register(
            "dhcp_drops",
            "DHCP datagrams dropped without a reply, by reason",
            m.dhcp_drops.clone(),
        );
        registry.register(
            "dhcp_active_leases",
            "Leases (static and dynamic) not yet expired",
            m.dhcp_leases.clone(),
        );
        registry.register(
            "dhcp_pool_addresses",
            "Dynamic pool addresses by state (size, leased)",
            m.dhcp_pool.clone(),
        );
        registry.register(
            "tftp_transfers",
            "TFTP read requests by how they ended: complete, failed, abandoned (the client asked for another file), refused, duplicate (a retransmitted RRQ of a running transfer), busy (left unanswered at listen.tftp_max_transfers; the client retries)",
            m.tftp_transfers.clone(),
        );
        registry.register("tftp_bytes", "TFTP file bytes sent", m.tftp_bytes.clone());
        registry.register(
            "tftp_retransmits",
            "TFTP DATA/OACK packets sent again",
            m.tftp_retransmits.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route class and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response headers, by route class",
            m.http_duration.clone(),
        );
        registry.register(
            "image_bytes",
            "Image bytes served, by image name",
            m.image_bytes.clone(),
        );
        registry.register(
            "boot_events",
            "Boot timeline events, by stage and success",
            m.boot_events.clone(),
        );
        registry.register(
            "boot_stage_duration_seconds",
            "Time from a node's previous boot event to this stage",
            m.stage_duration.clone(),
        );
        registry.register(
            "nodes_by_stage",
            "Nodes whose latest boot is at this stage",
            m.nodes_by_stage.clone(),
        );
        registry.register(
            "timeline_dropped_events",
            "Boot events dropped because the timeline writer fell behind or could not store them",
            m.timeline_dropped.clone(),
        );
        registry.register(
            "timeline_unattributed_events",
            "Boot events not stored because no node matches their subject (a request from an address with no lease, an xname with no interface)",
            m.timeline_unattributed.clone(),
        );
        registry.register(
            "dhcp_static_acks_unrecorded",
            "Static (inventory) leases acknowledged although their record could not be stored",
            m.dhcp_static_unrecorded.clone(),
        );
        registry.register(
            "store_state",
            "1 for the store's current state (ok, full, failing), 0 for the others",
            m.store_state.clone(),
        );
        registry.register(
            "store_free_bytes",
            "Bytes free on the data partition",
            m.store_free_bytes.clone(),
        );
        registry.register(
            "identity_token_refusals",
            "Boot scripts of known nodes served without a join token, by reason (rate_limited, no_mac, wrong_source, no_lease, already_issued, …)",
            m.identity_token_refusals.clone(),
        );
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the last scheduled backup ([backup]) finished, in seconds since the epoch; 0 before the first",
            m.backup_last_success.clone(),
        );
        registry.register(
            "backup_failures",
            "Scheduled backups that failed",
            m.backup_failures.clone(),
        );
        registry.register(
            "upstream_lookups",
            "On-demand upstream lookups of unknown MACs, by outcome: found, unknown, error (asked); dropped_busy, dropped_rate, cached_negative, in_flight (not asked: a limit, a MAC unknown within the negative TTL, or one already being asked about)",
            m.upstream_lookups.clone(),
        );
        registry.register(
            "upstream_lookups_in_flight",
            "On-demand upstream lookups running now",
            m.upstream_lookups_in_flight.clone(),
        );
        registry.register(
            "tasks",
            "Tasks alive in rackboot's async runtimes, the main one and DHCP/TFTP's (at scrape time)",
            m.tasks.clone(),
        );
        registry.register(
            "dns_responses",
            "DNS requests by transport and what was answered: the response code (FORMERR for malformed requests), axfr, or dropped (too short, a response, or over the concurrency cap)",
            m.dns_responses.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn dhcp_packet(&self, r#type: &str, outcome: &str) {
        self.dhcp_packets
            .get_or_create(&DhcpLabels {
                r#type: r#type.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn dhcp_drop(&self, reason: &str) {
        self.dhcp_drops
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn dns_response(&self, transport: &'static str, rcode: &'static str) {
        self.dns_responses(transport, rcode, 1);
    }

    /// `n` responses at once (the UDP threads count per batch, not per query).
    pub fn dns_responses(&self, transport: &'static str, rcode: &'static str, n: u64) {
        self.dns_responses
            .get_or_create(&DnsLabels { transport, rcode })
            .inc_by(n);
    }

    pub fn tftp_done(&self, outcome: &str, bytes: u64, retransmits: u64) {
        self.tftp_transfers
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.tftp_bytes.inc_by(bytes);
        self.tftp_retransmits.inc_by(retransmits);
    }

    pub fn http_request(&self, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub fn image_bytes(&self, image: &str, bytes: u64) {
        self.image_bytes
            .get_or_create(&ImageLabel {
                image: image.to_owned(),
            })
            .inc_by(bytes);
    }

    pub fn stage_event(&self, stage: &str, ok: bool) {
        self.boot_events
            .get_or_create(&StageLabels {
                stage: stage.to_owned(),
                ok: ok.to_string(),
            })
            .inc();
    }

    pub fn stage_duration(&self, stage: &str, millis: i64) {
        self.stage_duration
            .get_or_create(&StageLabel {
                stage: stage.to_owned(),
            })
            .observe(millis.max(0) as f64 / 1000.0);
    }

    pub fn timeline_dropped(&self) {
        self.timeline_dropped.inc();
    }

    pub fn timeline_unattributed(&self) {
        self.timeline_unattributed.inc();
    }

    pub fn identity_token_refusal(&self, reason: &str) {
        self.identity_token_refusals
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn upstream_lookup(&self, outcome: &str) {
        self.upstream_lookups
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// One more (`up`) or one fewer on-demand lookup running.
    pub fn upstream_lookup_running(&self, up: bool) {
        if up {
            self.upstream_lookups_in_flight.inc();
        } else {
            self.upstream_lookups_in_flight.dec();
        }
    }

    /// Counts the tasks of `runtime` in `rackboot_tasks` too.
    pub fn count_tasks_of(&self, runtime: tokio::runtime::Handle) {
        self.other_runtimes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(runtime);
    }

    /// Sets the task gauge (called at scrape time): `alive` in the scraping runtime, plus the
    /// tasks of the runtimes given to [`Metrics::count_tasks_of`].
    pub fn set_tasks(&self, alive: usize) {
        let others: usize = self
            .other_runtimes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|h| h.metrics().num_alive_tasks())
            .sum();
        self.tasks
            .set(i64::try_from(alive + others).unwrap_or(i64::MAX));
    }

    pub fn dhcp_static_unrecorded(&self) {
        self.dhcp_static_unrecorded.inc();
    }

    /// Sets the store gauges (called at scrape time).
    /// A scheduled backup finished at `unix_seconds`.
    pub fn backup_succeeded(&self, unix_seconds: i64) {
        self.backup_last_success.set(unix_seconds);
    }

    /// A scheduled backup failed.
    pub fn backup_failed(&self) {
        self.backup_failures.inc();
    }

    pub fn set_store(&self, h: &crate::store::StoreHealth) {
        use crate::store::StoreState;
        for st in [StoreState::Ok, StoreState::Full, StoreState::Failing] {
            self.store_state
                .get_or_create(&PoolLabel {
                    state: st.as_str().to_owned(),
                })
                .set(i64::from(h.state == st));
        }
        self.store_free_bytes.set(
            h.free_bytes
                .map_or(-1, |f| i64::try_from(f).unwrap_or(i64::MAX)),
        );
    }

    /// Sets the state gauges (called at scrape time).
    pub fn set_state(
        &self,
        active_leases: i64,
        pool_size: i64,
        pool_leased: i64,
        stages: &[(String, i64)],
    ) {
        self.dhcp_leases.set(active_leases);
        for (state, v) in [("size", pool_size), ("leased", pool_leased)] {
            self.dhcp_pool
                .get_or_create(&PoolLabel {
                    state: state.to_owned(),
                })
                .set(v);
        }
        self.nodes_by_stage.clear();
        for (stage, n) in stages {
            self.nodes_by_stage
                .get_or_create(&StageLabel {
                    stage: stage.clone(),
                })
                .set(*n);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The route class of a path, for HTTP metrics (bounded label values).
pub fn route_class(path: &str) -> &'static str {
    let p = path.trim_start_matches('/');
    match p.split('/').next().unwrap_or("") {
        "boot" => "bss",
        "hsm" => "smd",
        "images" => "images",
        "ipxe" => "ipxe",
        "cloud-init" => "cloud-init",
        "metrics" => "metrics",
        "rackboot" => "rackboot",
        "openapi.json" | ".well-known" => "meta",
        _ => "other",
    }
}
