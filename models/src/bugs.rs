//! The catalogue of known historical Synapse bugs, each a named switch that re-creates one
//! faulty behaviour in the models (research/synapse-model.md §5, and five more read in
//! Synapse's commits: B16, B22-B25). The default model has every
//! switch off, and then behaves as Synapse 1.163.2 does.
//!
//! A switch changes exactly the rule its bug broke, at the place the fix went in; each entry
//! says where the bug comes from and which invariant should catch it.

/// One historical bug, in catalogue order (research/synapse-model.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// B1: on start a writer's position was the MAX(stream_id) of its rows.
    RestartTakesMaxId,
    /// B2: a writer's position moved only when the id finishing was its lowest unfinished one.
    OutOfOrderFinishStalls,
    /// B4: an idle writer's position only moved when it wrote.
    IdleWriterNeverAnnounces,
    /// B5: no in-flight guard between the sequence answering and the ids becoming unfinished.
    AllocationRace,
    /// B6: a writer with no `stream_positions` row had no entry, so the minimum ignored it.
    NewWriterAdvancesTooQuickly,
    /// B7: a writer took its own position from its `stream_positions` row, not the sequence.
    OwnPositionNotFromSequence,
    /// B8: a /sync `since` token from the future was not bounded by the sequence.
    SyncWaitsOnFutureToken,
    /// B10: ids allocated for a request cancelled inside `enter` were never finished.
    CancelledEnterWedgesPosition,
    /// B12: waiters on one position were compared by their deferreds.
    WaitersCompareDeferreds,
    /// B13: a lost replication connection did not mark its streams disconnected.
    LostEventsOnReconnect,
    /// B14: RDATA was processed while a POSITION catch-up of its stream was running.
    UpdatesDuringCatchUp,
    /// B15: RDATA at or below the writer's current position was applied again.
    ReprocessingOldRdata,
    /// B16 (synapse PR #16639, commit fef08cbee8, v1.97): a REPLICATE was answered with
    /// `POSITION current current` ahead of the RDATA backlog (`send_positions_to_connection`).
    /// Rule: `StreamAnnouncer::handle_replicate`.
    PositionBeforeBacklog,
    /// B17: `wait_for_stream_position` compared the local instance's token, not the writer's.
    WaitChecksLocalToken,
    /// B18: the resume token after a partial read could go behind the `from` token.
    PartialReadTokenGoesBackwards,
    /// B20: the notifier announced with the events' own ids instead of the max token.
    NotifierGivenPerEventIds,
    /// B22 (synapse PR #8536, commit 921a3f8a59, v1.22): the federation sender was poked with
    /// each RDATA's (and POSITION's) own token, not the minimum persisted position. Rule:
    /// `Process::federation_replication_arrived` (sim/src/world/federation.rs).
    FederationPokedWithRdataToken,
    /// B23 (synapse PR #16555, commit 89dbbd68e1, v1.96): a POSITION started a catch-up
    /// whenever its `prev` differed from the reader's position, even when the reader was
    /// already past it. Rule: `StreamFollower::process_position`.
    CatchUpOnAnyPrevMismatch,
    /// B24 (synapse PR #16580, commit 408c13801a, v1.96): a POSITION below the reader's
    /// position still queried the database for the empty range. Rule:
    /// `StreamFollower::process_position`.
    CatchUpReadsEmptyRange,
    /// B25 (synapse PR #8670, commit 4215a3acd4, v1.23): every poke of the replication
    /// streamer started its background process, with or without anything to send. Rule:
    /// `Process::poke` (sim/src/world/process.rs).
    NotifierLoopOnEveryPoke,
}

/// What the catalogue says about a bug.
#[derive(Clone, Copy, Debug)]
pub struct BugInfo {
    pub bug: Bug,
    /// The switch's name on the command line (`--bug NAME`).
    pub name: &'static str,
    /// Its id in research/synapse-model.md §5.
    pub id: &'static str,
    /// Where it comes from.
    pub source: &'static str,
    /// What goes wrong, in one line.
    pub fault: &'static str,
    /// The invariant that should catch it.
    pub caught_by: &'static str,
}

/// Every switch, in catalogue order.
pub const CATALOGUE: &[BugInfo] = &[
    BugInfo {
        bug: Bug::RestartTakesMaxId,
        name: "restart-takes-max-id",
        id: "B1",
        source: "synapse PR #8374 (2020)",
        fault: "a restarted process sets each writer's position to MAX(stream_id) of its rows, past its ids still in flight",
        caught_by: "no_missed_event",
    },
    BugInfo {
        bug: Bug::OutOfOrderFinishStalls,
        name: "out-of-order-finish-stalls",
        id: "B2",
        source: "synapse PR #8257 (2020)",
        fault: "finishing 9 before 8 leaves the writer at 8 until another id finishes (the 2020 generator, without the idle bump)",
        caught_by: "liveness",
    },
    BugInfo {
        bug: Bug::IdleWriterNeverAnnounces,
        name: "idle-writer-never-announces",
        id: "B4",
        source: "synapse PR #8499 (2020)",
        fault: "an idle writer sends no POSITION, so readers' minimum stays behind the first gap",
        caught_by: "minimum_converges",
    },
    BugInfo {
        bug: Bug::AllocationRace,
        name: "allocation-race",
        id: "B5",
        source: "synapse PR #11045 (2021), issue #9424",
        fault: "no in-flight guard: an advance between nextval and the ids becoming unfinished lets the position pass them",
        caught_by: "no_missed_event",
    },
    BugInfo {
        bug: Bug::NewWriterAdvancesTooQuickly,
        name: "new-writer-advances-too-quickly",
        id: "B6",
        source: "synapse PR #16473 (2023)",
        fault: "a writer without a stream_positions row gets no position, so the minimum ignores its in-flight ids",
        caught_by: "no_missed_event",
    },
    BugInfo {
        bug: Bug::OwnPositionNotFromSequence,
        name: "own-position-not-from-sequence",
        id: "B7",
        source: "synapse PR #17309 (2024)",
        fault: "a restarted writer takes its position from its stream_positions row, below ids it cancelled and announced, stranding clients that hold them",
        caught_by: "sync_answers",
    },
    BugInfo {
        bug: Bug::SyncWaitsOnFutureToken,
        name: "sync-waits-on-future-token",
        id: "B8",
        source: "synapse PR #17386 (2024), issue #17274",
        fault: "a since token ahead of the sequence is not bounded, so every /sync waits 10 s and answers empty",
        caught_by: "sync_answers",
    },
    BugInfo {
        bug: Bug::CancelledEnterWedgesPosition,
        name: "cancelled-enter-wedges-position",
        id: "B10",
        source: "synapse PR #20090 (2026), issue #19800",
        fault: "ids allocated for a request cancelled before enter returned stay unfinished, pinning the position",
        caught_by: "liveness",
    },
    BugInfo {
        bug: Bug::WaitersCompareDeferreds,
        name: "waiters-compare-deferreds",
        id: "B12",
        source: "synapse 2020 (research/synapse-model.md §5, PR number unverified)",
        fault: "a second waiter on the same writer position raises, failing a send that was persisted",
        caught_by: "sends_answered",
    },
    BugInfo {
        bug: Bug::LostEventsOnReconnect,
        name: "lost-events-on-reconnect",
        id: "B13",
        source: "synapse PR #7427 (2020), issue #7409",
        fault: "streams stay connected over a lost connection, so RDATA after the reconnect skips the rows missed meanwhile",
        caught_by: "notifier_announces_every_event",
    },
    BugInfo {
        bug: Bug::UpdatesDuringCatchUp,
        name: "updates-during-catch-up",
        id: "B14",
        source: "synapse PRs #7185, #7226 (2020)",
        fault: "RDATA is handled while a POSITION catch-up runs instead of queueing behind it, so rows arriving during the catch-up are lost",
        caught_by: "notifier_announces_every_event",
    },
    BugInfo {
        bug: Bug::ReprocessingOldRdata,
        name: "reprocessing-old-rdata",
        id: "B15",
        source: "synapse PR #7648 (2020), issue #7360",
        fault: "RDATA at or below the writer's current position is applied again",
        caught_by: "notifier_in_order",
    },
    BugInfo {
        bug: Bug::PositionBeforeBacklog,
        name: "position-before-backlog",
        id: "B16",
        source: "synapse PR #16639 (v1.97, 2023)",
        fault: "a REPLICATE (a reader's restart or re-subscription) is answered at once with POSITION current current, ahead of the RDATA the streamer has still to send, so readers read those rows from the database and then receive them again",
        caught_by: "rdata_never_behind_position",
    },
    BugInfo {
        bug: Bug::WaitChecksLocalToken,
        name: "wait-checks-local-token",
        id: "B17",
        source: "synapse PR #14856 (2023)",
        fault: "wait_for_stream_position compares the local instance's token, so a send returns before its event is readable there",
        caught_by: "read_your_writes",
    },
    BugInfo {
        bug: Bug::PartialReadTokenGoesBackwards,
        name: "partial-read-token-goes-backwards",
        id: "B18",
        source: "synapse 1.163 line, sharded-token helpers (research/synapse-model.md §5, PR number unverified)",
        fault: "the resume token after a limited read drops the max with the from token, so a writer's position goes back",
        caught_by: "tokens_never_regress",
    },
    BugInfo {
        bug: Bug::NotifierGivenPerEventIds,
        name: "notifier-given-per-event-ids",
        id: "B20",
        source: "synapse 2020 notifier/pusher change (research/synapse-model.md §5, PR number unverified)",
        fault: "released events are announced with their own highest id, not the max token",
        caught_by: "tokens_never_regress",
    },
    BugInfo {
        bug: Bug::FederationPokedWithRdataToken,
        name: "federation-poked-with-rdata-token",
        id: "B22",
        source: "synapse PR #8536 (v1.22, 2020)",
        fault: "the federation sender is poked with one persister's RDATA token as if it were the minimum, stores a position past events still in flight on other persisters, and never sends them",
        caught_by: "federation_never_passes_uncommitted",
    },
    BugInfo {
        bug: Bug::CatchUpOnAnyPrevMismatch,
        name: "catch-up-on-any-prev-mismatch",
        id: "B23",
        source: "synapse PR #16555 (v1.96, 2023)",
        fault: "a POSITION whose prev is below the reader's position of its writer still starts a catch-up read (missing_updates = prev != current): a database query for rows the POSITION says do not exist",
        caught_by: "metrics_cost_justified",
    },
    BugInfo {
        bug: Bug::CatchUpReadsEmptyRange,
        name: "catch-up-reads-empty-range",
        id: "B24",
        source: "synapse PR #16580 (v1.96, 2023)",
        fault: "a POSITION whose new token is below the reader's position of its writer (processed while the stream is not connected) queries the database for the empty range (current, new]",
        caught_by: "metrics_cost_justified",
    },
    BugInfo {
        bug: Bug::NotifierLoopOnEveryPoke,
        name: "notifier-loop-on-every-poke",
        id: "B25",
        source: "synapse PR #8670 (v1.23, 2020)",
        fault: "every poke of the replication streamer (each own write, the 1 s timer) starts a replication_notifier background process, even when its position has not moved and there is nothing to send",
        caught_by: "metrics_cost_justified",
    },
];

impl Bug {
    pub fn info(self) -> &'static BugInfo {
        CATALOGUE
            .iter()
            .find(|info| info.bug == self)
            .expect("every bug is in the catalogue")
    }

    /// The switch called `name` (`--bug NAME`), if there is one.
    pub fn from_name(name: &str) -> Option<Bug> {
        CATALOGUE
            .iter()
            .find(|info| info.name == name || info.id.eq_ignore_ascii_case(name))
            .map(|info| info.bug)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// The switches that are on; none by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bugs(u32);

impl Bugs {
    pub const NONE: Bugs = Bugs(0);

    pub fn with(self, bug: Bug) -> Bugs {
        Bugs(self.0 | bug.bit())
    }

    pub fn on(self, bug: Bug) -> bool {
        self.0 & bug.bit() != 0
    }

    pub fn is_clean(self) -> bool {
        self.0 == 0
    }

    /// The switches that are on, in catalogue order.
    pub fn names(self) -> Vec<&'static str> {
        CATALOGUE
            .iter()
            .filter(|info| self.on(info.bug))
            .map(|info| info.name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_find_their_switch_and_sets_hold_them() {
        for info in CATALOGUE {
            assert_eq!(Bug::from_name(info.name), Some(info.bug));
            assert_eq!(Bug::from_name(&info.id.to_lowercase()), Some(info.bug));
            assert_eq!(info.bug.info().name, info.name);
        }
        assert_eq!(Bug::from_name("no-such-bug"), None);
        let bugs = Bugs::NONE.with(Bug::AllocationRace);
        assert!(bugs.on(Bug::AllocationRace) && !bugs.on(Bug::ReprocessingOldRdata));
        assert_eq!(bugs.names(), vec!["allocation-race"]);
        assert!(Bugs::default().is_clean());
    }
}
