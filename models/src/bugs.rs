//! The catalogue of known historical Synapse bugs, each a named switch that re-creates one
//! faulty behaviour in the models (research/synapse-model.md §5). The default model has every
//! switch off, and then behaves as Synapse 1.163.2 does.
//!
//! A switch changes exactly the rule its bug broke, at the place the fix went in; each entry
//! says where the bug comes from and which invariant should catch it.

/// One historical bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// B4: an idle writer's position only moved when it wrote.
    IdleWriterNeverAnnounces,
    /// B5: no in-flight guard between the sequence answering and the ids becoming unfinished.
    AllocationRace,
    /// B6: a writer with no `stream_positions` row had no entry, so the minimum ignored it.
    NewWriterAdvancesTooQuickly,
    /// B7: a writer took its own position from its `stream_positions` row, not the sequence.
    OwnPositionNotFromSequence,
    /// B15: RDATA at or below the writer's current position was applied again.
    ReprocessingOldRdata,
    /// B20: the notifier announced with the events' own ids instead of the max token.
    NotifierGivenPerEventIds,
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
        fault: "a restarted writer takes its position from its stale stream_positions row",
        caught_by: "tokens_never_regress",
    },
    BugInfo {
        bug: Bug::ReprocessingOldRdata,
        name: "reprocessing-old-rdata",
        id: "B15",
        source: "synapse PR #7648 (2020), issue #7360",
        fault: "RDATA at or below the writer's current position is applied again",
        caught_by: "no_duplicate",
    },
    BugInfo {
        bug: Bug::NotifierGivenPerEventIds,
        name: "notifier-given-per-event-ids",
        id: "B20",
        source: "synapse 2020 notifier/pusher change (research/synapse-model.md §5, PR number unverified)",
        fault: "released events are announced with their own highest id, not the max token",
        caught_by: "tokens_never_regress",
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
