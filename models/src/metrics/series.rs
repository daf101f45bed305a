//! Metric families and series: what is measured, under which name, with which labels.
//!
//! Names follow Synapse where Synapse has the metric (background processes, replication
//! commands, stream positions); what only streamsim measures starts with `streamsim_`.
//! One name differs: see [`BACKGROUND_PROCESS_IN_FLIGHT_COUNT`].
//! Values are integers in raw units: a family whose name ends in `_seconds` counts
//! microseconds and is rendered divided by a million.

use serde::{Deserialize, Serialize};

/// The three kinds of metric the models keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Only ever increases (AWX's `IntM`/`FloatM`: flushes add to the store).
    Counter,
    /// Set to a value (AWX's `SetIntM`/`SetFloatM`: flushes overwrite the store).
    Gauge,
    /// Observations in fixed buckets (AWX's `HistogramM`: flushes add bucket counts).
    Histogram,
}

/// A metric family: one name, one help text, one kind, fixed label names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    /// Raw units per rendered unit: 1 for counts, 1 000 000 for seconds kept in microseconds.
    pub raw_per_unit: i64,
    /// Upper bounds of a histogram's buckets, in raw units (`+Inf` is implied).
    pub buckets: &'static [i64],
}

const MICROS: i64 = 1_000_000;

/// Commit-to-delivery lag buckets, in microseconds: 5 ms to a minute.
const LAG_BUCKETS_US: &[i64] = &[
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000, 60_000_000,
];

const fn counter(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> Family {
    Family {
        name,
        help,
        kind: Kind::Counter,
        labels,
        raw_per_unit: 1,
        buckets: &[],
    }
}

const fn seconds(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> Family {
    Family {
        name,
        help,
        kind: Kind::Counter,
        labels,
        raw_per_unit: MICROS,
        buckets: &[],
    }
}

const fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Family {
    Family {
        name,
        help,
        kind: Kind::Gauge,
        labels,
        raw_per_unit: 1,
        buckets: &[],
    }
}

pub const BACKGROUND_PROCESS_START_COUNT: Family = counter(
    "synapse_background_process_start_count",
    "Number of background processes started",
    &["name", "server_name"],
);
/// Synapse calls this gauge `synapse_background_process_in_flight_count`; promtool's linter
/// rejects a `_count` suffix on anything but a histogram or summary, so streamsim drops it.
pub const BACKGROUND_PROCESS_IN_FLIGHT_COUNT: Family = gauge(
    "synapse_background_process_in_flight",
    "Number of background processes in flight",
    &["name", "server_name"],
);
pub const BACKGROUND_PROCESS_RU_UTIME: Family = seconds(
    "synapse_background_process_ru_utime_seconds",
    "User CPU time used by background processes, in seconds",
    &["name", "server_name"],
);
pub const BACKGROUND_PROCESS_DB_TXN_COUNT: Family = counter(
    "synapse_background_process_db_txn_count",
    "Number of database transactions done by background processes",
    &["name", "server_name"],
);
pub const BACKGROUND_PROCESS_DB_TXN_DURATION: Family = seconds(
    "synapse_background_process_db_txn_duration_seconds",
    "Seconds spent by background processes waiting for database transactions, excluding scheduling time",
    &["name", "server_name"],
);
pub const REPLICATION_INBOUND_COMMANDS: Family = counter(
    "synapse_replication_tcp_protocol_inbound_commands",
    "Number of commands received from replication, by command and name of process connected to",
    &["command", "name", "server_name"],
);
pub const REPLICATION_OUTBOUND_COMMANDS: Family = counter(
    "synapse_replication_tcp_protocol_outbound_commands",
    "Number of commands sent to replication, by command and name of process connected to",
    &["command", "name", "server_name"],
);
pub const REPLICATION_PENDING_COMMANDS: Family = gauge(
    "synapse_replication_tcp_protocol_pending_commands",
    "Commands a replication connection queued while its transport was paused",
    &["name", "server_name"],
);
pub const REPLICATION_INBOUND_RDATA: Family = counter(
    "synapse_replication_tcp_protocol_inbound_rdata_count",
    "RDATA commands received, by stream",
    &["stream_name", "server_name"],
);
pub const STREAM_CURRENT_POSITION: Family = gauge(
    "synapse_storage_stream_current_position",
    "The stream's current position as this process sees it.Note, these are always positive, even for negative streams.",
    &["stream_name", "server_name"],
);
pub const REPLICATION_COMMAND_QUEUE: Family = gauge(
    "synapse_replication_tcp_command_queue",
    "Number of inbound RDATA/POSITION commands queued for processing",
    &["stream_name", "server_name"],
);
pub const REPLICATION_LAG: Family = Family {
    name: "streamsim_replication_lag_seconds",
    help: "Simulated time from an event's commit to its delivery to this reader's notifier",
    kind: Kind::Histogram,
    labels: &["writer", "server_name"],
    raw_per_unit: MICROS,
    buckets: LAG_BUCKETS_US,
};

/// Every family, in the order the endpoint renders them.
pub const FAMILIES: &[Family] = &[
    BACKGROUND_PROCESS_START_COUNT,
    BACKGROUND_PROCESS_IN_FLIGHT_COUNT,
    BACKGROUND_PROCESS_RU_UTIME,
    BACKGROUND_PROCESS_DB_TXN_COUNT,
    BACKGROUND_PROCESS_DB_TXN_DURATION,
    REPLICATION_INBOUND_COMMANDS,
    REPLICATION_OUTBOUND_COMMANDS,
    REPLICATION_PENDING_COMMANDS,
    REPLICATION_INBOUND_RDATA,
    REPLICATION_COMMAND_QUEUE,
    STREAM_CURRENT_POSITION,
    REPLICATION_LAG,
];

/// The family of that name.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|family| family.name == name)
}

/// One series: a family and its label values, in the family's label order. Ordered, so
/// every map of series iterates (and renders) the same way on every run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    pub family: String,
    pub labels: Vec<(String, String)>,
}

impl SeriesKey {
    /// The series of `family` with `values` for its labels, in order.
    ///
    /// Panics if the number of values is not the family's number of labels: that is a
    /// broken call site, not bad input.
    pub fn new(family: &Family, values: &[&str]) -> SeriesKey {
        assert_eq!(
            family.labels.len(),
            values.len(),
            "{} takes labels {:?}",
            family.name,
            family.labels
        );
        SeriesKey {
            family: family.name.to_owned(),
            labels: family
                .labels
                .iter()
                .zip(values)
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

    /// Whether this is the series of `family` with `values` (what [`SeriesKey::new`] would
    /// build), compared in place.
    pub fn is(&self, family: &Family, values: &[&str]) -> bool {
        self.family == family.name
            && self.labels.len() == values.len()
            && self
                .labels
                .iter()
                .zip(family.labels.iter().zip(values))
                .all(|((label, value), (name, wanted))| label == name && value == wanted)
    }

    /// The value of one label, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
    }
}

impl std::fmt::Display for SeriesKey {
    /// `name{label="value",...}`, as Prometheus writes a series.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.family)?;
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(name, value)| format!("{name}=\"{value}\""))
                .collect();
            write!(f, "{{{}}}", labels.join(","))?;
        }
        Ok(())
    }
}

/// Serde for maps keyed by series: JSON objects want string keys, so the map travels as a
/// list of `[series, value]` pairs (in key order, so the bytes are deterministic).
pub mod series_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::SeriesKey;

    pub fn serialize<S: Serializer, V: Serialize>(
        map: &BTreeMap<SeriesKey, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<SeriesKey, V>, D::Error> {
        let pairs: Vec<(SeriesKey, V)> = Vec::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_are_unique_and_seconds_families_count_microseconds() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|family| family.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        for family in FAMILIES {
            assert_eq!(
                family.name.ends_with("_seconds"),
                family.raw_per_unit == MICROS,
                "{}",
                family.name
            );
            assert_eq!(family.kind == Kind::Histogram, !family.buckets.is_empty());
            assert!(family.buckets.windows(2).all(|pair| pair[0] < pair[1]));
        }
    }

    #[test]
    fn series_keys_keep_the_family_label_order() {
        let key = SeriesKey::new(&REPLICATION_INBOUND_COMMANDS, &["RDATA", "w1", "hs"]);
        assert_eq!(
            key.to_string(),
            "synapse_replication_tcp_protocol_inbound_commands{command=\"RDATA\",name=\"w1\",server_name=\"hs\"}"
        );
        assert_eq!(key.label("name"), Some("w1"));
    }

    #[test]
    fn maps_of_series_round_trip_through_json() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Holder {
            #[serde(with = "series_map")]
            values: std::collections::BTreeMap<SeriesKey, i64>,
        }
        let holder = Holder {
            values: [(
                SeriesKey::new(&BACKGROUND_PROCESS_START_COUNT, &["a", "hs"]),
                3,
            )]
            .into_iter()
            .collect(),
        };
        let text = serde_json::to_string(&holder).unwrap();
        assert_eq!(serde_json::from_str::<Holder>(&text).unwrap(), holder);
    }
}
