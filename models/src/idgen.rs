//! Synapse's `MultiWriterIdGenerator` (synapse/storage/util/id_generators.py, 1.163.2) for
//! positive streams on PostgreSQL: one per (process, stream), tracking every writer's position
//! and the "persisted up to" position below which nothing is still being written anywhere.
//!
//! Each rule cites the behaviour it copies (research/synapse-model.md §1 gives the rules
//! in prose). The database round trips of Synapse are split into steps so that a simulation
//! can put time between them: allocation is [`MultiWriterIdGenerator::begin_fetch`] →
//! `nextval` → [`MultiWriterIdGenerator::complete_fetch`], and start-up is
//! [`read_startup_state`] (the database side) → [`MultiWriterIdGenerator::from_startup_state`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use crate::bugs::{Bug, Bugs};
use crate::db::{Database, DbError, SEQUENCE_NAME};
use crate::fixes::{Fix, Fixes};

/// Who this generator is and which instances may write the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdGenConfig {
    pub instance_name: String,
    /// Passed through verbatim. Empty is Synapse's "no explicit writers" mode: anyone may
    /// allocate and nothing is written to `stream_positions`.
    pub writers: Vec<String>,
    /// Historical-bug switches (all off: Synapse 1.163.2).
    pub bugs: Bugs,
    /// Proposed fixes (all off: Synapse 1.163.2); F1 and F3 act here.
    pub fixes: Fixes,
}

impl IdGenConfig {
    pub fn new(instance_name: &str, writers: &[&str]) -> Self {
        IdGenConfig {
            instance_name: instance_name.to_owned(),
            writers: writers.iter().map(|w| (*w).to_owned()).collect(),
            bugs: Bugs::NONE,
            fixes: Fixes::NONE,
        }
    }

    /// The config with historical-bug switches on.
    pub fn with_bugs(mut self, bugs: Bugs) -> Self {
        self.bugs = bugs;
        self
    }

    /// The config with proposed fixes on.
    pub fn with_fixes(mut self, fixes: Fixes) -> Self {
        self.fixes = fixes;
        self
    }

    fn is_writer(&self) -> bool {
        self.writers.contains(&self.instance_name)
    }

    /// `get_next` refuses when `writers` is non-empty and does not name us.
    pub fn may_allocate(&self) -> bool {
        self.writers.is_empty() || self.is_writer()
    }
}

/// Errors the generator raises, as Synapse does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdGenError {
    /// `check_consistency`: a `stream_positions` row is ahead of the sequence.
    /// The message's first non-blank line, as the op-script output gives it.
    #[error("IncorrectDatabaseSetup: Postgres sequence '{SEQUENCE_NAME}' is inconsistent with associated stream position")]
    IncorrectDatabaseSetup,
    #[error("Exception: Tried to allocate stream ID on non-writer")]
    NotAWriter,
    #[error(transparent)]
    Database(#[from] DbError),
}

/// What start-up reads from the database, in the one connection Synapse's constructor uses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartupState {
    /// `stream_positions` rows of configured writers, after stale rows were deleted.
    pub stored_positions: BTreeMap<String, i64>,
    /// The sequence's raw `last_value`, read only when we are a configured writer. Under fix
    /// F1, instead max(our stored `stream_positions` row (0 if none), the highest committed id
    /// `GREATEST(COALESCE(MAX(stream_id), 1), 1)`): what the writer takes as its own position.
    pub own_sequence_value: Option<i64>,
    /// `GREATEST(COALESCE(MAX(stream_id), 1), 1)`, used when no position is known at all.
    pub table_max_or_one: i64,
    /// `(instance_name, stream_id)` of every row with `stream_id >=` the minimum known position,
    /// in table order (not yet sorted).
    pub rows_from_minimum: Vec<(String, i64)>,
    /// Fix F5: when a configured writer other than us has no `stream_positions` row, the end
    /// of the gapless committed prefix ([`Database::committed_prefix_end`]), which caps the
    /// minimum the start-up takes as persisted. `None` unfixed or when every writer has a row.
    pub committed_prefix_cap: Option<i64>,
}

/// The database side of the constructor (`check_consistency` + `_load_current_ids` reads).
///
/// Side effects, committed together as the constructor's connection is: the sequence is moved
/// up to `MAX(stream_id)` if it is behind (a repair with a warning in Synapse), and the
/// `stream_positions` rows of instances not in a non-empty `writers` are deleted. When the
/// consistency check fails only the sequence repair stays (sequences ignore rollbacks).
pub fn read_startup_state(
    db: &mut Database,
    config: &IdGenConfig,
) -> Result<StartupState, IdGenError> {
    // check_consistency: repair a sequence that is behind the table, then compare
    // `stream_positions` with the sequence as it was *before* the repair.
    let table_max = db.max_row_id();
    let max_allocated = db.sequence().max_allocated();
    let max_stored = db.stream_positions().values().copied().max();
    if table_max > max_allocated {
        // `setval(seq, GREATEST(last_value, MAX(id)))`. Sequence changes are not transactional,
        // so the repair stays even when the check below makes the constructor raise.
        db.setval(db.sequence().last_value().max(table_max))?;
    }
    if max_stored.is_some_and(|stored| stored != 0 && stored > max_allocated) {
        return Err(IdGenError::IncorrectDatabaseSetup);
    }
    if !config.writers.is_empty() {
        db.check_text(config.writers.iter().map(String::as_str))?;
    }

    let mut stored_positions = BTreeMap::new();
    if !config.writers.is_empty() {
        db.prune_stream_positions(&config.writers);
        stored_positions = db.stream_positions().clone();
        if config.bugs.on(Bug::RestartTakesMaxId) {
            // Bug B1 (PR #8374): before `stream_positions`, each writer was taken to be at its
            // highest row, even with lower ids of it still in flight.
            stored_positions = db
                .max_row_id_per_instance()
                .into_iter()
                .filter(|(instance, _)| config.writers.contains(instance))
                .collect();
        }
    }
    // Bug B7 (before PR #17309): a writer's own position was its `stream_positions` row like
    // everyone else's, so the minimum the rows are read from includes that row.
    let own_position_from_sequence =
        config.is_writer() && !config.bugs.on(Bug::OwnPositionNotFromSequence);
    let own_sequence_value = own_position_from_sequence.then(|| db.sequence().last_value());
    // Our own sequence value replaces our stored row before the minimum is taken.
    let minimum = stored_positions
        .iter()
        .filter(|(instance, _)| own_sequence_value.is_none() || **instance != config.instance_name)
        .map(|(_, position)| *position)
        .chain(own_sequence_value)
        .min();
    // Fix F5: a writer without a row may have ids in flight anywhere above the committed
    // prefix (its row is upserted after its commit, or an operator deleted the rows), so the
    // start-up may not take anything past the first uncommitted id as persisted.
    let committed_prefix_cap = (config.fixes.on(Fix::F5)
        && config
            .writers
            .iter()
            .any(|w| *w != config.instance_name && !stored_positions.contains_key(w)))
    .then(|| db.committed_prefix_end());
    let minimum = cap_minimum(minimum, committed_prefix_cap);
    Ok(StartupState {
        stored_positions,
        own_sequence_value,
        table_max_or_one: db.max_row_id().max(1),
        rows_from_minimum: minimum.map(|m| db.rows_from(m)).unwrap_or_default(),
        committed_prefix_cap,
    })
}

/// The start-up minimum under fix F5's cap: the lower of the two, whichever is known.
fn cap_minimum(minimum: Option<i64>, cap: Option<i64>) -> Option<i64> {
    match (minimum, cap) {
        (Some(minimum), Some(cap)) => Some(minimum.min(cap)),
        (minimum, cap) => minimum.or(cap),
    }
}

/// A fetch of ids from the sequence that has begun but not yet completed: while it is
/// outstanding the local position may not pass `guard` (the fix of bug B5, PR #11045).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a fetch must be completed or abandoned, or the position is pinned forever"]
pub struct Fetch {
    guard: i64,
}

/// The generator's state, field for field as in Synapse (positive streams only).
#[derive(Clone, Debug)]
pub struct MultiWriterIdGenerator {
    config: IdGenConfig,
    /// `_current_positions`: last known position of each writer (may be below
    /// `persisted_upto`; never pruned).
    current_positions: BTreeMap<String, i64>,
    /// `_unfinished_ids`: local ids allocated and not yet finished.
    unfinished_ids: BTreeSet<i64>,
    /// `_in_flight_fetches`: a multiset of guards, one per fetch in progress.
    in_flight_fetches: BTreeMap<i64, usize>,
    /// `_finished_ids`: local finished ids not yet foldable into our position.
    finished_ids: BTreeSet<i64>,
    /// `_persisted_upto_position`: everything at or below is persisted everywhere. Monotone.
    persisted_upto: i64,
    /// `_known_persisted_positions`: a min-heap of positions seen persisted but not yet folded.
    known_persisted: BinaryHeap<Reverse<i64>>,
    /// `_max_seen_allocated_stream_id`.
    max_seen_allocated: i64,
    /// `_max_position_of_local_instance`: what we announce for ourselves; exceeds our own
    /// position when idle (the fix of bug B4, PR #8499).
    max_local: i64,
}

impl MultiWriterIdGenerator {
    /// Constructs the generator from the database, as `MultiWriterIdGenerator.__init__` does.
    pub fn start(db: &mut Database, config: IdGenConfig) -> Result<Self, IdGenError> {
        let state = read_startup_state(db, &config)?;
        Ok(Self::from_startup_state(config, state))
    }

    /// The in-memory half of the constructor, `_load_current_ids` and what follows it.
    pub fn from_startup_state(config: IdGenConfig, state: StartupState) -> Self {
        let mut generator = MultiWriterIdGenerator {
            current_positions: BTreeMap::new(),
            unfinished_ids: BTreeSet::new(),
            in_flight_fetches: BTreeMap::new(),
            finished_ids: BTreeSet::new(),
            persisted_upto: 1,
            known_persisted: BinaryHeap::new(),
            max_seen_allocated: 1,
            max_local: 1,
            config,
        };
        let me = generator.config.instance_name.clone();
        // Stored rows of configured writers (stale ones were deleted by the database side).
        generator.current_positions = state.stored_positions;
        // A writer assumes it is at the head of the sequence, including ids allocated but never
        // written (fix of bug B7, PR #17309; the switch keeps the stored row instead).
        if let Some(sequence_value) = state
            .own_sequence_value
            .filter(|_| !generator.config.bugs.on(Bug::OwnPositionNotFromSequence))
        {
            generator
                .current_positions
                .insert(me.clone(), sequence_value);
        }
        match cap_minimum(
            generator.current_positions.values().copied().min(),
            state.committed_prefix_cap,
        ) {
            None => generator.persisted_upto = state.table_max_or_one,
            Some(minimum) => {
                generator.persisted_upto = minimum;
                if state.committed_prefix_cap.is_some()
                    && !generator.config.bugs.on(Bug::NewWriterAdvancesTooQuickly)
                {
                    // Fix F5: the writers without a row are placed at the capped minimum
                    // before the rows are read, so that reading them cannot lift the
                    // persisted position over those writers' ids in flight. (Bug B6 is the
                    // code before writers without a row were placed at all.)
                    for writer in generator.config.writers.clone() {
                        generator.current_positions.entry(writer).or_insert(minimum);
                    }
                }
                let mut rows = state.rows_from_minimum;
                // Stable sort by id, as Python's `rows.sort(key=...)`.
                rows.sort_by_key(|(_, stream_id)| *stream_id);
                for (instance, stream_id) in rows {
                    generator.add_persisted_position(stream_id);
                    // Overwritten, not maxed: a restarted writer ends at its highest written row.
                    if instance == me {
                        generator.current_positions.insert(instance, stream_id);
                    }
                }
            }
        }
        // New writers start at the persisted-up-to position (fix of bug B6, PR #16473; with the
        // switch a writer without a row has no entry, so the minimum ignores it).
        let new_writers = if generator.config.bugs.on(Bug::NewWriterAdvancesTooQuickly) {
            Vec::new()
        } else {
            generator.config.writers.clone()
        };
        for writer in new_writers {
            generator
                .current_positions
                .entry(writer)
                .or_insert(generator.persisted_upto);
        }
        generator.max_seen_allocated = generator
            .current_positions
            .values()
            .copied()
            .max()
            .unwrap_or(1)
            .max(generator.persisted_upto);
        generator.max_local = generator.max_seen_allocated;
        if generator.config.writers.is_empty() {
            generator
                .current_positions
                .insert(me, generator.persisted_upto);
        }
        generator
    }

    pub fn config(&self) -> &IdGenConfig {
        &self.config
    }

    pub fn instance_name(&self) -> &str {
        &self.config.instance_name
    }

    /// First half of `_load_next_mult_id_txn`: records the guard before the sequence is asked.
    pub fn begin_fetch(&mut self) -> Result<Fetch, IdGenError> {
        if !self.config.may_allocate() {
            return Err(IdGenError::NotAWriter);
        }
        let guard = self.max_seen_allocated;
        // Bug B5 (PR #11045): without the guard, an advance between `nextval` and the ids
        // becoming unfinished moves the position past them.
        if !self.config.bugs.on(Bug::AllocationRace) {
            *self.in_flight_fetches.entry(guard).or_insert(0) += 1;
        }
        Ok(Fetch { guard })
    }

    /// Second half: the sequence returned `ids`; they become unfinished, then the guard goes.
    pub fn complete_fetch(&mut self, fetch: Fetch, ids: &[i64]) {
        assert!(!ids.is_empty(), "a fetch returns at least one id");
        self.unfinished_ids.extend(ids.iter().copied());
        let highest = *self.unfinished_ids.last().expect("just extended");
        self.max_seen_allocated = self.max_seen_allocated.max(highest);
        self.remove_fetch_guard(fetch);
    }

    /// The sequence call failed: only the guard goes (`finally:`).
    pub fn abandon_fetch(&mut self, fetch: Fetch) {
        self.remove_fetch_guard(fetch);
    }

    fn remove_fetch_guard(&mut self, fetch: Fetch) {
        if self.config.bugs.on(Bug::AllocationRace) {
            return;
        }
        let count = self
            .in_flight_fetches
            .get_mut(&fetch.guard)
            .expect("guard of an outstanding fetch");
        *count -= 1;
        if *count == 0 {
            self.in_flight_fetches.remove(&fetch.guard);
        }
    }

    /// `get_next_mult(n).__aenter__()` in one step: begin, `nextval` n times, complete.
    pub fn allocate(&mut self, db: &mut Database, n: u64) -> Result<Vec<i64>, IdGenError> {
        assert!(n >= 1, "allocate at least one id");
        let fetch = self.begin_fetch()?;
        match db.nextval_many(n) {
            Ok(ids) => {
                self.complete_fetch(fetch, &ids);
                Ok(ids)
            }
            Err(error) => {
                self.abandon_fetch(fetch);
                Err(error.into())
            }
        }
    }

    /// `_mark_ids_as_finished`: runs on every context exit, successful or not.
    pub fn mark_finished(&mut self, ids: &[i64]) {
        if self.config.bugs.on(Bug::OutOfOrderFinishStalls) {
            self.mark_finished_as_in_2020(ids);
            return;
        }
        for id in ids {
            self.unfinished_ids.remove(id);
            self.finished_ids.insert(*id);
        }
        let new_current = if !self.unfinished_ids.is_empty() || !self.in_flight_fetches.is_empty() {
            // Only finished ids below every unfinished id and every in-flight guard count.
            let min_unfinished = self
                .unfinished_ids
                .first()
                .copied()
                .into_iter()
                .chain(self.in_flight_fetches.keys().next().map(|guard| guard + 1))
                .min()
                .expect("something is unfinished or in flight");
            let foldable = self
                .finished_ids
                .range(..min_unfinished)
                .next_back()
                .copied();
            self.finished_ids = self.finished_ids.split_off(&min_unfinished);
            foldable
        } else {
            let highest = self.finished_ids.last().copied();
            self.finished_ids.clear();
            highest
        };
        // `if new_cur:` in Python also skips 0.
        if let Some(new_current) = new_current.filter(|id| *id != 0) {
            let me = self.config.instance_name.clone();
            let current = self.current_positions.get(&me).copied().unwrap_or(0);
            self.current_positions.insert(me, current.max(new_current));
            self.max_local = self.max_local.max(current).max(new_current);
        }
        for id in ids {
            self.add_persisted_position(*id);
        }
    }

    /// Bug B2 (PR #8257): `_mark_id_as_finished` of August 2020. The position moves to a
    /// finishing id only if every id still unfinished is above it, so ids finished earlier
    /// out of order are forgotten until another id finishes.
    fn mark_finished_as_in_2020(&mut self, ids: &[i64]) {
        for id in ids {
            self.unfinished_ids.remove(id);
        }
        let lowest_pending = self
            .unfinished_ids
            .first()
            .copied()
            .into_iter()
            .chain(self.in_flight_fetches.keys().next().map(|guard| guard + 1))
            .min();
        let new_current = ids
            .iter()
            .copied()
            .filter(|id| lowest_pending.is_none_or(|lowest| *id < lowest))
            .max();
        if let Some(new_current) = new_current {
            let me = self.config.instance_name.clone();
            let current = self.current_positions.get(&me).copied().unwrap_or(0);
            self.current_positions.insert(me, current.max(new_current));
        }
        for id in ids {
            self.add_persisted_position(*id);
        }
    }

    /// The position `__aexit__` upserts into `stream_positions` after a successful exit:
    /// `get_current_token_for_writer(me)` at upsert time. `None` without configured writers.
    pub fn position_to_persist(&self) -> Option<i64> {
        (!self.config.writers.is_empty())
            .then(|| self.current_token_for_writer(&self.config.instance_name))
    }

    /// `advance(instance, position)`: what replication calls for rows (RDATA, or rows a
    /// POSITION's catch-up fetched), and in 1.163.2 for a POSITION too. Never moves a position
    /// back.
    pub fn advance(&mut self, instance: &str, position: i64) {
        self.advance_bounds(instance, position);
        self.add_persisted_position(position);
    }

    /// Fix F2: `advance` for a POSITION's token (`on_position`): the writer's position and
    /// `max_seen` move as for a row, but the token is not a persisted id, so it is not pushed
    /// on the known-persisted heap (the oracle's patch adds `persisted_upto`, popped at once:
    /// the min update, the raises of `local` and the skip-forward run over what the heap
    /// already holds).
    pub fn advance_from_position(&mut self, instance: &str, position: i64) {
        self.advance_bounds(instance, position);
        self.add_persisted_position(self.persisted_upto);
    }

    fn advance_bounds(&mut self, instance: &str, position: i64) {
        let known = self.current_positions.get(instance).copied().unwrap_or(0);
        self.current_positions
            .insert(instance.to_owned(), known.max(position));
        self.max_seen_allocated = self.max_seen_allocated.max(position);
    }

    /// `_add_persisted_position`, the heart of the generator.
    fn add_persisted_position(&mut self, position: i64) {
        self.known_persisted.push(Reverse(position));
        let me = &self.config.instance_name;
        let ours = self.current_positions.get(me).copied().unwrap_or(0);
        // A writer with nothing in flight leaves itself out: anything it writes later will be
        // above every current position.
        let mut min_current = self
            .current_positions
            .iter()
            .filter(|(name, _)| *name != me)
            .map(|(_, p)| *p)
            .min()
            .unwrap_or(ours);
        let busy = !self.unfinished_ids.is_empty() || !self.in_flight_fetches.is_empty();
        if ours != 0 && busy {
            min_current = min_current.min(ours);
        }
        self.persisted_upto = self.persisted_upto.max(min_current);
        // Fix F3: neither raise of the local position may cover one of our own finished ids
        // that our position has not absorbed (the streamer would send POSITION over it).
        let cap = |value: i64| match self.finished_ids.first() {
            Some(lowest) if self.config.fixes.on(Fix::F3) => value.min(lowest - 1),
            _ => value,
        };
        self.max_local = self.max_local.max(cap(self.persisted_upto));
        if !busy {
            // The idle bump: an idle writer follows everyone else (fix of bug B4).
            self.max_local = self.max_local.max(cap(self.max_seen_allocated));
        }
        // Gapless skip-forward over positions known to be persisted (PR #8164).
        while let Some(Reverse(lowest)) = self.known_persisted.peek().copied() {
            if lowest <= self.persisted_upto {
                self.known_persisted.pop();
            } else if lowest == self.persisted_upto + 1 {
                self.known_persisted.pop();
                self.persisted_upto += 1;
            } else {
                break;
            }
        }
    }

    /// `get_current_token()` = `get_persisted_upto_position()`.
    pub fn current_token(&self) -> i64 {
        self.persisted_upto
    }

    pub fn persisted_upto(&self) -> i64 {
        self.persisted_upto
    }

    /// `get_current_token_for_writer(w)`: our `max_local` for ourselves; for anyone else their
    /// position, but never below `persisted_upto` (an unknown writer is assumed to start there).
    pub fn current_token_for_writer(&self, writer: &str) -> i64 {
        if writer == self.config.instance_name {
            if self.config.bugs.on(Bug::OutOfOrderFinishStalls) {
                // The 2020 generator had no `_max_position_of_local_instance` (PR #8499 came a
                // month after #8257): a writer announced its own position as it was.
                return self.minimal_local_current_token();
            }
            return self.max_local;
        }
        self.current_positions
            .get(writer)
            .copied()
            .unwrap_or(self.persisted_upto)
            .max(self.persisted_upto)
    }

    /// `get_minimal_local_current_token()`: our own position without the idle bump.
    pub fn minimal_local_current_token(&self) -> i64 {
        self.current_positions
            .get(&self.config.instance_name)
            .copied()
            .unwrap_or(self.persisted_upto)
    }

    /// `get_positions()`: may omit writers that never wrote and hold entries below
    /// `persisted_upto`.
    pub fn positions(&self) -> &BTreeMap<String, i64> {
        &self.current_positions
    }

    /// Whether any local id is allocated and unfinished, or a fetch is outstanding.
    pub fn has_work_in_flight(&self) -> bool {
        !self.unfinished_ids.is_empty() || !self.in_flight_fetches.is_empty()
    }

    /// Local ids allocated and not yet finished, ascending.
    pub fn unfinished_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.unfinished_ids.iter().copied()
    }
}

#[cfg(test)]
mod tests;
