//! Proposed fixes of findings F1-F5 (tools/synapse/FINDINGS.md), each a named switch parallel
//! to the historical-bug switches of [`crate::bugs`]. The default model has every fix off, and
//! then behaves as Synapse 1.163.2 does. Each fix changes exactly the rule
//! tools/synapse/FIXES.md states, as the oracle's monkeypatches (tools/synapse/fixes.py) do on
//! real Synapse; `tests/data/system/fix-all/` holds real Synapse's output with all four.

/// One proposed fix, in F1..F5 order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fix {
    /// F1 (finding F1, "a restarted idle writer's position covers another writer's event in
    /// flight"): the same rule as [`Fix::F2`] (see [`Fixes::position_is_not_persisted`]). The
    /// restarted writer still claims the sequence's `last_value` (id_generators.py lines
    /// 418-428, PR #17309, unchanged), but a POSITION's token is not counted as a persisted
    /// id, so `persisted_upto` stays below another writer's id in flight until its RDATA
    /// arrives. An earlier proposal changed the start-up claim to the highest committed id; it
    /// was withdrawn because it re-opens what #17309 fixed (a writer whose last ids were
    /// cancelled restarts below the token it announced, and clients holding that token get
    /// timed-out empty /syncs until a writer writes again; tools/synapse/FIXES.md).
    F1,
    /// F2 (finding F2, "a re-subscribed reader skips an event when the writers' POSITION
    /// answers race"): changes `MultiWriterIdGenerator.advance` (id_generators.py lines
    /// 775-787) when called from `ReplicationDataHandler.on_position`
    /// (replication/tcp/client.py lines 347-354): a POSITION's token updates the writer's
    /// position and `max_seen` but is not pushed on `_known_persisted_positions`. Correct
    /// because a POSITION bounds what its writer will write, it says nothing of whether the id
    /// itself was received here, and `persisted_upto` must only step over received ids.
    F2,
    /// F3 (finding F3, "a writer announces POSITION over its own row while one of its
    /// sequence fetches is held"): changes `MultiWriterIdGenerator._add_persisted_position`
    /// (id_generators.py lines 837-848): both raises of `_max_position_of_local_instance`
    /// (to `persisted_upto`, and the idle bump to `max_seen`) are capped at
    /// `min(_finished_ids) - 1`. Correct because the streamer sends `POSITION me last local`
    /// without reading rows when `last >= positions[me]`, so `local` must never cover an own
    /// finished row that `positions[me]` has not absorbed.
    F3,
    /// F4 (finding F4, "a re-subscribed reader applies a writer's RDATA before that writer's
    /// POSITION"): changes `ReplicationCommandHandler` (replication/tcp/handler.py:
    /// `_process_rdata` lines 582-597, `on_POSITION` / `_process_position` lines 653-665,
    /// 676-691, 745, `lost_connection` line 815): "connected" is tracked per (stream, writer)
    /// on a connection, set by a POSITION of that writer (processed, or dropped as redundant).
    /// Correct because only a writer's own POSITION catches a reader up on what that writer
    /// published while the reader was away.
    F4,
    /// F5 (finding F5, "a process that starts while a running writer has no
    /// `stream_positions` row covers that writer's ids in flight"): changes
    /// `MultiWriterIdGenerator._load_current_ids` (id_generators.py lines 392-484): when a
    /// configured writer other than this process has no `stream_positions` row, the minimum
    /// the start-up takes as persisted (`min(positions)`, or `MAX(id)` when there are none) is
    /// capped at the end of the gapless committed prefix. Correct because such a writer's ids
    /// in flight can be anywhere above that prefix; each writer's POSITION answer moves the
    /// positions on at once.
    F5,
}

/// What the catalogue says about a fix.
#[derive(Clone, Copy, Debug)]
pub struct FixInfo {
    pub fix: Fix,
    /// The switch's name on the command line (`--fix NAME`).
    pub name: &'static str,
    /// The finding it removes (tools/synapse/FINDINGS.md).
    pub finding: &'static str,
    /// The Synapse 1.163.2 code it changes.
    pub changes: &'static str,
    /// The rule, in one line.
    pub rule: &'static str,
}

/// Every fix, in F1..F5 order.
pub const CATALOGUE: &[FixInfo] = &[
    FixInfo {
        fix: Fix::F1,
        name: "f1",
        finding: "F1",
        changes: "as F2's: id_generators.py advance, lines 775-787, from client.py on_position, lines 347-354",
        rule: "F2's rule: a restarted writer's POSITION moves its position but is not counted as a persisted id",
    },
    FixInfo {
        fix: Fix::F2,
        name: "f2",
        finding: "F2",
        changes: "id_generators.py advance, lines 775-787, from client.py on_position, lines 347-354",
        rule: "a POSITION's token moves the writer's position but is not counted as a persisted id",
    },
    FixInfo {
        fix: Fix::F3,
        name: "f3",
        finding: "F3",
        changes: "id_generators.py _add_persisted_position, lines 837-848",
        rule: "the local position is never raised to or past an own finished id not yet absorbed",
    },
    FixInfo {
        fix: Fix::F4,
        name: "f4",
        finding: "F4",
        changes: "handler.py _process_rdata 582-597, on_POSITION/_process_position 653-691, 745, lost_connection 815",
        rule: "a writer's RDATA is applied on a connection only after a POSITION of that writer there",
    },
    FixInfo {
        fix: Fix::F5,
        name: "f5",
        finding: "F5",
        changes: "id_generators.py _load_current_ids, lines 392-484",
        rule: "while a writer has no stream_positions row, start-up takes nothing past the first uncommitted id as persisted",
    },
];

impl Fix {
    pub fn info(self) -> &'static FixInfo {
        CATALOGUE
            .iter()
            .find(|info| info.fix == self)
            .expect("every fix is in the catalogue")
    }

    /// The fix called `name` (`--fix NAME`, case-insensitive), if there is one.
    pub fn from_name(name: &str) -> Option<Fix> {
        CATALOGUE
            .iter()
            .find(|info| info.name.eq_ignore_ascii_case(name))
            .map(|info| info.fix)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// The fixes that are on; none by default (Synapse as it is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fixes(u32);

impl Fixes {
    pub const NONE: Fixes = Fixes(0);

    /// Every fix.
    pub fn all() -> Fixes {
        CATALOGUE
            .iter()
            .fold(Fixes::NONE, |set, info| set.with(info.fix))
    }

    /// The set `name` stands for: one fix, or `all`.
    pub fn from_name(name: &str) -> Option<Fixes> {
        if name.eq_ignore_ascii_case("all") {
            return Some(Fixes::all());
        }
        Fix::from_name(name).map(|fix| Fixes::NONE.with(fix))
    }

    pub fn with(self, fix: Fix) -> Fixes {
        Fixes(self.0 | fix.bit())
    }

    pub fn union(self, other: Fixes) -> Fixes {
        Fixes(self.0 | other.0)
    }

    pub fn on(self, fix: Fix) -> bool {
        self.0 & fix.bit() != 0
    }

    /// Whether a POSITION's token is kept off `_known_persisted_positions`: the rule of F2's
    /// fix, which is also F1's (a restarted writer's claim is a POSITION's token like any other).
    pub fn position_is_not_persisted(self) -> bool {
        self.on(Fix::F1) || self.on(Fix::F2)
    }

    /// These fixes plus the catalogue's fix of each of `findings` (`"F1"`..`"F4"`; others are
    /// ignored): what to add to a run whose violations are those findings.
    pub fn with_fixes_of<'a>(self, findings: impl IntoIterator<Item = &'a str>) -> Fixes {
        findings.into_iter().fold(self, |set, finding| {
            CATALOGUE
                .iter()
                .find(|info| info.finding == finding)
                .map_or(set, |info| set.with(info.fix))
        })
    }

    /// Whether the fixes that are on remove finding `finding` (`"F1"`..`"F4"`): a violation
    /// with that finding's shape is then a failure, not a known bug.
    pub fn remove_finding(self, finding: &str) -> bool {
        match finding {
            // F1's shape (a start-up claim covering an id in flight) is also F5's when the
            // claim came from a start without the writer's stored row: only both rules remove
            // every violation of that shape.
            "F1" => self.position_is_not_persisted() && self.on(Fix::F5),
            "F2" => self.position_is_not_persisted(),
            "F3" => self.on(Fix::F3),
            "F4" => self.on(Fix::F4),
            "F5" => self.on(Fix::F5),
            _ => false,
        }
    }

    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The `--fix` flags that turn these fixes on: ` --fix all` for all of them, else one
    /// ` --fix NAME` each, in F1..F5 order (empty for none).
    pub fn flags(self) -> String {
        if self == Fixes::all() {
            return " --fix all".to_owned();
        }
        self.names().iter().map(|n| format!(" --fix {n}")).collect()
    }

    /// The fixes that are on, in F1..F5 order.
    pub fn names(self) -> Vec<&'static str> {
        CATALOGUE
            .iter()
            .filter(|info| self.on(info.fix))
            .map(|info| info.name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_find_their_fix_and_all_holds_every_one() {
        for info in CATALOGUE {
            assert_eq!(Fix::from_name(info.name), Some(info.fix));
            assert_eq!(Fix::from_name(&info.finding.to_lowercase()), Some(info.fix));
            assert_eq!(info.fix.info().name, info.name);
        }
        assert_eq!(Fix::from_name("f6"), None);
        assert_eq!(Fixes::from_name("all"), Some(Fixes::all()));
        assert_eq!(Fixes::all().names(), vec!["f1", "f2", "f3", "f4", "f5"]);
        let fixes = Fixes::NONE.with(Fix::F3);
        assert!(fixes.on(Fix::F3) && !fixes.on(Fix::F1));
        assert!(Fixes::default().is_none());
        // F1's fix is F2's rule: either removes both findings.
        assert!(Fixes::NONE.with(Fix::F1).remove_finding("F2"));
        assert!(!Fixes::NONE.with(Fix::F2).remove_finding("F1"));
        assert!(Fixes::NONE.with(Fix::F2).with(Fix::F5).remove_finding("F1"));
        assert!(!fixes.remove_finding("F1") && fixes.remove_finding("F3"));
        assert!(CATALOGUE
            .iter()
            .all(|info| Fixes::all().remove_finding(info.finding)));
        let named = Fixes::NONE.with_fixes_of(["F3", "F1", "F9"]);
        assert_eq!(named.names(), vec!["f1", "f3"]);
        assert!(named.remove_finding("F3") && !named.remove_finding("F4"));
    }
}
