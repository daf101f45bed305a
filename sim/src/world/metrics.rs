//! The AWX-style aggregation as hosts: each process's flush loop (`pipe_execute` to the
//! shared store, then a broadcast of its dataset), the store host, and the endpoint host with
//! a scraper that reads it as Prometheus would.
//!
//! The store's and the endpoint's data live outside their hosts (like the database's): the
//! store is durable, and the run reads both at the end. A crash of either host only breaks
//! its connections.

use std::rc::Rc;
use std::time::Duration;

use streamsim_models::metrics::node::increments;
use streamsim_models::metrics::series::BACKGROUND_PROCESS_IN_FLIGHT_COUNT;
use streamsim_models::metrics::{Dataset, FlushBatch};

use super::observer::{Scrape, ScrapedNode};
use super::process::Process;
use super::shared::Shared;
use crate::net::{
    accept_each, answer_each, now, FramedStream, METRICS_ENDPOINT_PORT, METRICS_STORE_PORT,
};
use crate::scenario::{METRICS_ENDPOINT_HOST, METRICS_STORE_HOST};

/// Connects for a metrics exchange, giving up after `timeout_ms`.
async fn connect(
    host: &str,
    port: u16,
    timeout_ms: u64,
    cuts: &crate::net::OneWayCuts,
) -> Option<FramedStream> {
    tokio::time::timeout(
        Duration::from_millis(timeout_ms),
        crate::engine::tcp::TcpStream::connect((host, port)),
    )
    .await
    .ok()?
    .ok()
    .map(|stream| FramedStream::new(stream, cuts))
}

/// `should_pipe_execute` / `pipe_execute` / `send_metrics`, every flush interval, for the
/// life of the process. A flush (or broadcast) that goes unanswered within the interval
/// drops its connection (an answer arriving later must not be taken for the next one's) and
/// is sent again next time.
pub async fn flush_loop(process: Rc<Process>) {
    let interval_ms = process.shared.scenario.metrics.flush_interval_ms;
    let mut store: Option<FramedStream> = None;
    let mut endpoint: Option<FramedStream> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        process.sample_gauges();
        let batch = {
            let metrics = &mut *process.metrics.borrow_mut();
            metrics.processes.collect(&mut metrics.node);
            metrics.node.begin_flush(now())
        };
        if store.is_none() {
            store = connect(
                METRICS_STORE_HOST,
                METRICS_STORE_PORT,
                interval_ms,
                &process.shared.cuts,
            )
            .await;
        }
        let Some(connection) = &mut store else {
            continue;
        };
        let dataset = match connection.call::<_, Dataset>(&batch, interval_ms).await {
            Ok(dataset) => dataset,
            Err(error) => {
                tracing::debug!(host = %process.name, %error, "metrics flush unanswered");
                store = None;
                continue;
            }
        };
        process.metrics.borrow_mut().node.flush_answered(batch.seq);
        if endpoint.is_none() {
            endpoint = connect(
                METRICS_ENDPOINT_HOST,
                METRICS_ENDPOINT_PORT,
                interval_ms,
                &process.shared.cuts,
            )
            .await;
        }
        if let Some(connection) = &mut endpoint {
            // The endpoint acknowledges each dataset: a broadcast into a connection that
            // a partition or a crash holds must not go unnoticed forever.
            if connection
                .call::<_, bool>(&dataset, interval_ms)
                .await
                .is_err()
            {
                endpoint = None;
            }
        }
    }
}

/// The shared store: applies each batch once and answers with the node's dataset.
pub async fn serve_store(shared: Rc<Shared>) -> crate::engine::HostResult {
    let Err(error) = accept_each(METRICS_STORE_PORT, |stream, _| {
        let shared = shared.clone();
        let cuts = shared.cuts.clone();
        answer_each(stream, cuts, move |batch: FlushBatch| {
            let applied = shared.metrics_store.borrow_mut().apply(&batch, now());
            if applied.fresh {
                shared.observer.note_applied(&batch);
            } else {
                shared.observer.note_duplicate_batch();
            }
            std::future::ready(applied.dataset)
        })
    })
    .await;
    Err(error.into())
}

/// The endpoint: keeps each node's newest dataset, and scrapes itself every flush interval.
pub async fn serve_endpoint(shared: Rc<Shared>) -> crate::engine::HostResult {
    crate::engine::spawn_local(scraper(shared.clone()));
    let Err(error) = accept_each(METRICS_ENDPOINT_PORT, |stream, _| {
        let shared = shared.clone();
        let cuts = shared.cuts.clone();
        answer_each(stream, cuts, move |dataset: Dataset| {
            shared.metrics_endpoint.borrow_mut().receive(dataset, now());
            std::future::ready(true)
        })
    })
    .await;
    Err(error.into())
}

async fn scraper(shared: Rc<Shared>) {
    let interval_ms = shared.scenario.metrics.flush_interval_ms;
    loop {
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        let nodes = shared
            .metrics_endpoint
            .borrow()
            .instances()
            .values()
            .map(|held| ScrapedNode {
                node: held.dataset.node.clone(),
                version: held.dataset.version,
                updated_at: held.dataset.updated_at,
                received_at: held.received_at,
                increments: increments(&held.dataset.counters, &held.dataset.histograms)
                    .into_iter()
                    .collect(),
                in_flight: held
                    .dataset
                    .gauges
                    .iter()
                    .filter(|(series, _)| series.family == BACKGROUND_PROCESS_IN_FLIGHT_COUNT.name)
                    .map(|(_, value)| value)
                    .sum(),
            })
            .collect();
        shared.observer.note_scrape(Scrape { at: now(), nodes });
    }
}
