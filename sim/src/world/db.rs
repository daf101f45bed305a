//! The `db` host: the database model ([`Database`]) behind a small JSON-lines
//! request/response protocol over simulated TCP, and the client every process uses to reach it.
//!
//! The database is the one thing a crash never loses. It is also the authority on what
//! happened to the stream: it records every allocation and every commit in the history at the
//! moment it performs it, so a writer that dies between its commit and the answer still leaves
//! a truthful history.
//!
//! Fencing: each request carries its process's incarnation; once a process has restarted, the
//! database refuses requests of its earlier incarnations (as if their sessions had been
//! terminated). Without it a commit sent just before a crash could land after the restarted
//! process read its start-up state, which Synapse rules out by assuming a dead process's
//! transactions are gone before it starts again.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use streamsim_models::db::{Database, StreamRow};
use streamsim_models::idgen::{read_startup_state, IdGenConfig, StartupState};
use streamsim_models::roomsync::{row_payload, split_row_payload};

use super::shared::Shared;
use crate::history::Event;
use crate::net::{FrameError, FramedStream, DB_PORT};

/// How long a process waits for the database before it treats the call as failed, in
/// milliseconds. Synapse has no such bound on a query; the simulation needs one because a
/// partitioned TCP stream waits as long as the partition lasts (a real one retransmits for
/// about a quarter of an hour before the kernel resets it).
pub const DB_CALL_TIMEOUT_MS: u64 = 10_000;

/// What a process asks of the database. (Externally tagged, serde's default: an internally
/// tagged enum is buffered whole before it is read, which made decoding database calls a
/// tenth of a run's wall time.)
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbRequest {
    /// The id generator's constructor reads (and its sequence repair); registers a new
    /// incarnation of the caller.
    Startup { writers: Vec<String> },
    /// `nextval` `count` times (one autocommit round trip).
    NextvalMany { count: u64 },
    /// Insert the rows in one transaction.
    Commit { rows: Vec<(i64, String)> },
    /// Upsert the caller's `stream_positions` row if greater (autocommit).
    UpsertPosition { position: i64 },
    /// `writer`'s rows with `from < id <= upto`, at most `limit` of them, in id order.
    RowsBetween {
        writer: String,
        from: i64,
        upto: i64,
        limit: usize,
    },
    /// Every row with `from < id <= upto`: (writer, id, event id), in id order.
    RowsInRange { from: i64, upto: i64 },
    /// The sequence's highest allocated value (`get_max_allocated_token`).
    MaxAllocated,
    /// `get_all_new_event_ids_stream`: every writer's rows with `from < id <= upto`, at most
    /// `limit`, in id order, as (id, event id).
    NewEventIds { from: i64, upto: i64, limit: usize },
    /// `get_federation_out_pos("events")` of the caller.
    FederationOutPos,
    /// `update_federation_out_pos("events", position)` of the caller (autocommit).
    UpdateFederationOutPos { position: i64 },
}

/// The database's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbResponse {
    Startup {
        state: StartupState,
        /// Each room's highest stream id in the table: `get_cache_dict`'s prefill of
        /// `_events_stream_cache`.
        latest_by_room: Vec<(String, i64)>,
    },
    Ids {
        ids: Vec<i64>,
    },
    Done,
    Rows {
        rows: Vec<(i64, String)>,
    },
    Range {
        rows: Vec<(String, i64, String)>,
    },
    Value {
        value: i64,
    },
    /// The request failed (a database error, or a fenced-off incarnation).
    Error {
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    owner: String,
    incarnation: u32,
    request: DbRequest,
}

/// The database host's state: the model and the latest incarnation of each process.
pub struct DbServer {
    database: Database,
    incarnations: BTreeMap<String, u32>,
    /// The switches the processes' start-up reads run with (bug B1 reads other rows).
    bugs: streamsim_models::bugs::Bugs,
    fixes: streamsim_models::fixes::Fixes,
}

/// The event every simulated homeserver already has when the run starts (its first room's
/// creation), written by `w1`. Synapse's generator starts at 1 on an empty table while the
/// first id the sequence hands out is also 1, so on an empty table token 1 "covers" an event
/// not yet written: an artefact of empty databases that no real deployment has.
pub const GENESIS_EVENT: &str = "$genesis";

/// The genesis event's room: the first room.
pub const GENESIS_ROOM: &str = "!r0";

impl DbServer {
    /// A database holding the genesis event; the event is recorded as committed at time 0.
    pub fn new(shared: &Shared) -> Self {
        let mut database = Database::new();
        let id = database.nextval().expect("a fresh sequence");
        let row = StreamRow {
            stream_id: id,
            instance_name: "w1".to_owned(),
            payload: Some(row_payload(GENESIS_EVENT, GENESIS_ROOM)),
        };
        database
            .insert_rows_autocommit("w1", vec![row])
            .expect("the genesis row is valid");
        shared.observer.record_at(
            streamsim_models::time::SimInstant::from_ms(0),
            Event::Committed {
                host: "w1".to_owned(),
                rows: vec![(id, GENESIS_EVENT.to_owned())],
            },
        );
        DbServer {
            database,
            incarnations: BTreeMap::new(),
            bugs: shared.bugs,
            fixes: shared.fixes,
        }
    }

    /// `get_cache_dict(db_conn, "events", entity_column="room_id",
    /// stream_column="stream_ordering", ...)` (synapse/storage/database.py): the rows in
    /// descending stream order (its limit of 100 000 never binds here), each room's first,
    /// i.e. its highest stream id.
    fn latest_by_room(&self) -> Vec<(String, i64)> {
        let mut latest: BTreeMap<String, i64> = BTreeMap::new();
        for row in self.database.rows() {
            let payload = row.payload.as_deref().unwrap_or_default();
            if let (_, Some(room)) = split_row_payload(payload) {
                let entry = latest.entry(room.to_owned()).or_insert(row.stream_id);
                *entry = (*entry).max(row.stream_id);
            }
        }
        latest.into_iter().collect()
    }

    fn handle(&mut self, shared: &Shared, envelope: Envelope) -> DbResponse {
        let Envelope {
            owner,
            incarnation,
            request,
        } = envelope;
        let latest = self
            .incarnations
            .entry(owner.clone())
            .or_insert(incarnation);
        if let DbRequest::Startup { .. } = request {
            *latest = (*latest).max(incarnation);
        }
        if incarnation < *latest {
            return DbResponse::Error {
                message: format!("{owner} incarnation {incarnation} was terminated"),
            };
        }
        let result = match request {
            DbRequest::Startup { writers } => {
                let names: Vec<&str> = writers.iter().map(String::as_str).collect();
                let config = IdGenConfig::new(&owner, &names)
                    .with_bugs(self.bugs)
                    .with_fixes(self.fixes);
                read_startup_state(&mut self.database, &config)
                    .map(|state| DbResponse::Startup {
                        state,
                        latest_by_room: self.latest_by_room(),
                    })
                    .map_err(|e| e.to_string())
            }
            DbRequest::NextvalMany { count } => self
                .database
                .nextval_many(count)
                .map(|ids| {
                    shared.observer.record(Event::Allocated {
                        host: owner.clone(),
                        ids: ids.clone(),
                    });
                    DbResponse::Ids { ids }
                })
                .map_err(|e| e.to_string()),
            DbRequest::Commit { rows } => self.commit(shared, &owner, rows),
            DbRequest::UpsertPosition { position } => self
                .database
                .upsert_position_if_greater_autocommit(&owner, &owner, position)
                .map(|()| DbResponse::Done)
                .map_err(|e| e.to_string()),
            DbRequest::RowsBetween {
                writer,
                from,
                upto,
                limit,
            } => Ok(DbResponse::Rows {
                rows: self
                    .database
                    .rows_between(&writer, from, upto, limit)
                    .into_iter()
                    .map(|row| (row.stream_id, row.payload.unwrap_or_default()))
                    .collect(),
            }),
            DbRequest::RowsInRange { from, upto } => {
                let rows = self
                    .database
                    .rows_in_range(from, upto)
                    .into_iter()
                    .map(|row| {
                        let payload = row.payload.clone().unwrap_or_default();
                        (row.instance_name.clone(), row.stream_id, payload)
                    })
                    .collect();
                Ok(DbResponse::Range { rows })
            }
            DbRequest::MaxAllocated => Ok(DbResponse::Value {
                value: self.database.sequence().max_allocated(),
            }),
            DbRequest::NewEventIds { from, upto, limit } => Ok(DbResponse::Rows {
                rows: self
                    .database
                    .new_event_ids(from, upto, limit)
                    .into_iter()
                    .map(|(id, payload)| (id, split_row_payload(&payload).0.to_owned()))
                    .collect(),
            }),
            DbRequest::FederationOutPos => Ok(DbResponse::Value {
                value: self.database.federation_out_pos(&owner),
            }),
            DbRequest::UpdateFederationOutPos { position } => {
                self.database.update_federation_out_pos(&owner, position);
                Ok(DbResponse::Done)
            }
        };
        result.unwrap_or_else(|message| DbResponse::Error { message })
    }

    fn commit(
        &mut self,
        shared: &Shared,
        owner: &str,
        rows: Vec<(i64, String)>,
    ) -> Result<DbResponse, String> {
        let txn = self.database.begin(owner);
        for (stream_id, payload) in &rows {
            let row = StreamRow {
                stream_id: *stream_id,
                instance_name: owner.to_owned(),
                payload: Some(payload.clone()),
            };
            if let Err(error) = self.database.insert_row(txn, row) {
                self.database.rollback(txn).map_err(|e| e.to_string())?;
                return Err(error.to_string());
            }
        }
        self.database.commit(txn).map_err(|e| e.to_string())?;
        shared.note_committed(&rows);
        // The history names events by their ids; their rooms travel in the payloads.
        let rows = rows
            .into_iter()
            .map(|(id, payload)| (id, split_row_payload(&payload).0.to_owned()))
            .collect();
        shared.observer.record(Event::Committed {
            host: owner.to_owned(),
            rows,
        });
        Ok(DbResponse::Done)
    }
}

/// The `db` host: accepts connections forever and answers each request at once, in order.
pub async fn serve(shared: Rc<Shared>, server: Rc<RefCell<DbServer>>) -> crate::engine::HostResult {
    let Err(error) = crate::net::accept_each(DB_PORT, |stream, _| {
        let shared = shared.clone();
        let server = server.clone();
        let cuts = shared.cuts.clone();
        crate::net::answer_each(stream, cuts, move |envelope: Envelope| {
            let response = server.borrow_mut().handle(&shared, envelope);
            std::future::ready(response)
        })
    })
    .await;
    Err(error.into())
}

/// Why a database call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbCallError {
    /// The database answered with an error: the outcome is known (nothing happened).
    #[error("database error: {0}")]
    Rejected(String),
    /// No answer: the outcome is unknown (a commit may or may not have happened).
    #[error("database unreachable: {0}")]
    Unreachable(#[from] FrameError),
}

/// A process's connection pool to the database.
pub struct DbClient {
    owner: String,
    incarnation: u32,
    idle: RefCell<Vec<FramedStream>>,
    cuts: crate::net::OneWayCuts,
}

impl DbClient {
    pub fn new(owner: &str, incarnation: u32, cuts: &crate::net::OneWayCuts) -> Self {
        DbClient {
            owner: owner.to_owned(),
            incarnation,
            idle: RefCell::new(Vec::new()),
            cuts: cuts.clone(),
        }
    }

    /// One request on an idle pooled connection (or a new one); a connection that failed is
    /// dropped, not reused.
    pub async fn call(&self, request: DbRequest) -> Result<DbResponse, DbCallError> {
        let pooled = self.idle.borrow_mut().pop();
        let mut stream = match pooled {
            Some(stream) => stream,
            None => FramedStream::new(
                crate::net::connect("db", DB_PORT)
                    .await
                    .map_err(FrameError::from)?,
                &self.cuts,
            ),
        };
        let envelope = Envelope {
            owner: self.owner.clone(),
            incarnation: self.incarnation,
            request,
        };
        let response: DbResponse = stream.call(&envelope, DB_CALL_TIMEOUT_MS).await?;
        self.idle.borrow_mut().push(stream);
        match response {
            DbResponse::Error { message } => Err(DbCallError::Rejected(message)),
            other => Ok(other),
        }
    }

    /// The id generator's start-up state and each room's latest stream id.
    pub async fn startup(
        &self,
        writers: &[String],
    ) -> Result<(StartupState, Vec<(String, i64)>), DbCallError> {
        match self
            .call(DbRequest::Startup {
                writers: writers.to_vec(),
            })
            .await?
        {
            DbResponse::Startup {
                state,
                latest_by_room,
            } => Ok((state, latest_by_room)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn nextval_many(&self, count: u64) -> Result<Vec<i64>, DbCallError> {
        match self.call(DbRequest::NextvalMany { count }).await? {
            DbResponse::Ids { ids } => Ok(ids),
            other => Err(unexpected(other)),
        }
    }

    pub async fn commit(&self, rows: Vec<(i64, String)>) -> Result<(), DbCallError> {
        match self.call(DbRequest::Commit { rows }).await? {
            DbResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn upsert_position(&self, position: i64) -> Result<(), DbCallError> {
        match self.call(DbRequest::UpsertPosition { position }).await? {
            DbResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// `writer`'s rows in `(from, upto]`, and whether the read stopped at `limit`.
    pub async fn rows_between(
        &self,
        writer: &str,
        from: i64,
        upto: i64,
        limit: usize,
    ) -> Result<(Vec<(i64, String)>, bool), DbCallError> {
        let request = DbRequest::RowsBetween {
            writer: writer.to_owned(),
            from,
            upto,
            limit,
        };
        match self.call(request).await? {
            DbResponse::Rows { rows } => {
                let limited = rows.len() >= limit;
                Ok((rows, limited))
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn rows_in_range(
        &self,
        from: i64,
        upto: i64,
    ) -> Result<Vec<(String, i64, String)>, DbCallError> {
        match self.call(DbRequest::RowsInRange { from, upto }).await? {
            DbResponse::Range { rows } => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    pub async fn new_event_ids(
        &self,
        from: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, DbCallError> {
        match self
            .call(DbRequest::NewEventIds { from, upto, limit })
            .await?
        {
            DbResponse::Rows { rows } => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    pub async fn federation_out_pos(&self) -> Result<i64, DbCallError> {
        match self.call(DbRequest::FederationOutPos).await? {
            DbResponse::Value { value } => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    pub async fn update_federation_out_pos(&self, position: i64) -> Result<(), DbCallError> {
        match self
            .call(DbRequest::UpdateFederationOutPos { position })
            .await?
        {
            DbResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn max_allocated(&self) -> Result<i64, DbCallError> {
        match self.call(DbRequest::MaxAllocated).await? {
            DbResponse::Value { value } => Ok(value),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(response: DbResponse) -> DbCallError {
    DbCallError::Rejected(format!("unexpected answer {response:?}"))
}
