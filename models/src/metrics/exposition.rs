//! Prometheus text exposition (format 0.0.4, what Synapse's `/metrics` serves) of node
//! datasets, each series with a `node` label, through the `prometheus` crate's
//! `TextEncoder`.
//!
//! Why not `prometheus-client`: its encoder writes OpenMetrics, where a counter's `# TYPE`
//! line names `foo` and its sample `foo_total`. promtool's `check metrics` (2.42) and Python's
//! Prometheus text parser read that as two families and reject or mistype the sample. In
//! the 0.0.4 format both name `foo_total`, as Python's prometheus_client (and so Synapse)
//! exposes a counter.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use super::node::{Dataset, HistogramCounts};
use super::series::{Family, Kind, SeriesKey, FAMILIES};

/// The name a family's samples carry in the text format.
pub fn exposed_name(family: &Family) -> String {
    match family.kind {
        Kind::Counter => format!("{}_total", family.name),
        Kind::Gauge | Kind::Histogram => family.name.to_owned(),
    }
}

fn labels(series: &SeriesKey, node: &str) -> Vec<LabelPair> {
    series
        .labels
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .chain([("node", node)])
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_owned());
            pair.set_value(value.to_owned());
            pair
        })
        .collect()
}

fn in_units(family: &Family, raw: i64) -> f64 {
    raw as f64 / family.raw_per_unit as f64
}

fn histogram(family: &Family, counts: &HistogramCounts) -> Histogram {
    let mut histogram = Histogram::default();
    histogram.set_sample_count(u64::try_from(counts.count).unwrap_or(0));
    histogram.set_sample_sum(in_units(family, counts.sum));
    // The encoder adds `+Inf` (the sample count) itself.
    let buckets = family
        .buckets
        .iter()
        .zip(&counts.cumulative)
        .map(|(bound, cumulative)| {
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(in_units(family, *bound));
            bucket.set_cumulative_count(u64::try_from(*cumulative).unwrap_or(0));
            bucket
        })
        .collect();
    histogram.set_bucket(buckets);
    histogram
}

fn metric(family: &Family, series: &SeriesKey, dataset: &Dataset) -> Option<Metric> {
    let mut metric = Metric::default();
    match family.kind {
        Kind::Counter => {
            let mut counter = Counter::default();
            counter.set_value(in_units(family, *dataset.counters.get(series)?));
            metric.set_counter(counter);
        }
        Kind::Gauge => {
            let mut gauge = Gauge::default();
            gauge.set_value(in_units(family, *dataset.gauges.get(series)?));
            metric.set_gauge(gauge);
        }
        Kind::Histogram => metric.set_histogram(histogram(family, dataset.histograms.get(series)?)),
    }
    metric.set_label(labels(series, &dataset.node));
    Some(metric)
}

/// Every series of `datasets`, family by family in [`FAMILIES`] order, then node by node
/// (in the order given), then series by series in label order.
pub fn render<'a>(datasets: impl IntoIterator<Item = &'a Dataset> + Clone) -> String {
    let mut families = Vec::new();
    for family in FAMILIES {
        let mut metrics = Vec::new();
        for dataset in datasets.clone() {
            let series: Vec<&SeriesKey> = match family.kind {
                Kind::Counter => dataset.counters.keys().collect(),
                Kind::Gauge => dataset.gauges.keys().collect(),
                Kind::Histogram => dataset.histograms.keys().collect(),
            };
            metrics.extend(
                series
                    .into_iter()
                    .filter(|series| series.family == family.name)
                    .filter_map(|series| metric(family, series, dataset)),
            );
        }
        if metrics.is_empty() {
            // The encoder refuses a family without samples, as Prometheus would.
            continue;
        }
        let mut exposed = MetricFamily::default();
        exposed.set_name(exposed_name(family));
        exposed.set_help(family.help.to_owned());
        exposed.set_field_type(match family.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
            Kind::Histogram => MetricType::HISTOGRAM,
        });
        exposed.set_metric(metrics);
        families.push(exposed);
    }
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .expect("every family has samples and a name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::node::NodeMetrics;
    use crate::metrics::series::{
        BACKGROUND_PROCESS_DB_TXN_DURATION, BACKGROUND_PROCESS_IN_FLIGHT_COUNT,
        BACKGROUND_PROCESS_START_COUNT, REPLICATION_LAG,
    };
    use crate::metrics::store::MetricsStore;
    use crate::time::SimInstant;

    #[test]
    fn renders_counters_gauges_and_histograms_with_a_node_label() {
        let mut store = MetricsStore::new();
        let mut metrics = NodeMetrics::new("r1", 1);
        metrics.inc(
            &BACKGROUND_PROCESS_START_COUNT,
            &["process-replication-data", "hs"],
            2,
        );
        metrics.inc(
            &BACKGROUND_PROCESS_DB_TXN_DURATION,
            &["process-replication-data", "hs"],
            1_500,
        );
        metrics.set(
            &BACKGROUND_PROCESS_IN_FLIGHT_COUNT,
            &["process-replication-data", "hs"],
            1,
        );
        metrics.observe(&REPLICATION_LAG, &["w1", "hs"], 30_000);
        let dataset = store
            .apply(&metrics.begin_flush(SimInstant::ZERO), SimInstant::ZERO)
            .dataset;
        let text = render([&dataset]);
        assert!(text.contains("# TYPE synapse_background_process_start_count_total counter\n"));
        assert!(text.contains(
            "synapse_background_process_start_count_total{name=\"process-replication-data\",server_name=\"hs\",node=\"r1\"} 2\n"
        ));
        assert!(text.contains(
            "synapse_background_process_db_txn_duration_seconds_total{name=\"process-replication-data\",server_name=\"hs\",node=\"r1\"} 0.0015\n"
        ));
        assert!(text.contains(
            "synapse_background_process_in_flight{name=\"process-replication-data\",server_name=\"hs\",node=\"r1\"} 1\n"
        ));
        assert!(text.contains(
            "streamsim_replication_lag_seconds_bucket{writer=\"w1\",server_name=\"hs\",node=\"r1\",le=\"0.05\"} 1\n"
        ));
        assert!(text.contains(
            "streamsim_replication_lag_seconds_bucket{writer=\"w1\",server_name=\"hs\",node=\"r1\",le=\"0.025\"} 0\n"
        ));
        assert!(text.contains("streamsim_replication_lag_seconds_count{writer=\"w1\",server_name=\"hs\",node=\"r1\"} 1\n"));
    }

    #[test]
    fn nothing_to_render_is_empty_text() {
        assert_eq!(render(std::iter::empty::<&Dataset>()), "");
    }
}
