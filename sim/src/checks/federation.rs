//! The invariants of a background consumer of the minimum, the federation sender
//! (`streamsim_models::fedsender`): it never moves its stored position past an event that is
//! not yet committed (it would never look there again, and the event would never reach other
//! servers), and it eventually sends every event below the tokens its notifier released.
//!
//! The sender reads `(position, token]` and stores `token`; it is poked with the token its
//! process's notifier releases events at. So a miss here is either the sender's own (poked
//! with a token that is not a minimum: bug B22) or its notifier's token covering an event
//! before it was committed, which `no_missed_event` and `notifier_announces_every_event`
//! judge and diagnose: such a miss carries the finding diagnosed there.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;
use streamsim_models::time::SimInstant;

use super::{
    convergence_cutoff, missed_events, violation, CheckContext, Facts, FederationRead, NOTIFIER,
};
use crate::history::Event;

/// How long after a notifier released a token its federation sender may still be reading up
/// to it, in milliseconds: a few database round trips, or a retry after one failed (1 s).
pub const FEDERATION_READ_GRACE_MS: u64 = 5_000;

/// The ids a sender's reads covered, merged into disjoint `(from, upto]` ranges sorted by
/// `from`.
fn covered_ranges(reads: &[FederationRead]) -> Vec<(i64, i64)> {
    let mut ranges: Vec<(i64, i64)> = reads
        .iter()
        .filter(|(_, from, upto, _)| from < upto)
        .map(|(_, from, upto, _)| (*from, *upto))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (from, upto) in ranges {
        match merged.last_mut() {
            Some((_, end)) if from <= *end => *end = (*end).max(upto),
            _ => merged.push((from, upto)),
        }
    }
    merged
}

fn covers(ranges: &[(i64, i64)], id: i64) -> bool {
    let index = ranges.partition_point(|(from, _)| *from < id);
    index > 0 && id <= ranges[index - 1].1
}

/// (host, event) → the finding a notifier miss of that event on that host was diagnosed as.
fn notifier_findings<'f>(
    facts: &'f Facts,
    context: &CheckContext,
) -> BTreeMap<(&'f str, &'f str), &'static str> {
    let (missed, unannounced) = facts
        .missed_walk
        .get_or_init(|| missed_events(facts, context));
    let mut findings = BTreeMap::new();
    for v in missed.iter().chain(unannounced) {
        let Some(finding) = v.finding else { continue };
        for host in &v.hosts {
            for event in &v.events {
                findings.insert((host.as_str(), event.as_str()), finding);
            }
        }
    }
    findings
}

/// Always: a federation sender never reads past an event that commits later. Every committed
/// event whose id a sender's read covered is one that sender sent (in some incarnation; a
/// restart may send some twice, as Synapse may).
pub fn never_passes_uncommitted(facts: &Facts, context: &CheckContext) -> Vec<super::Violation> {
    let mut violations = Vec::new();
    if facts.federation_sent.is_empty() {
        return violations;
    }
    let findings = notifier_findings(facts, context);
    for (host, reads) in &facts.federation_sent {
        let sent: FxHashSet<&str> = reads
            .iter()
            .flat_map(|(.., events)| events.iter().map(|(_, e)| e.as_str()))
            .collect();
        let ranges = covered_ranges(reads);
        for (event_id, commit) in &facts.commits {
            if sent.contains(event_id) || !covers(&ranges, commit.stream_id) {
                continue;
            }
            let (read_at, from, upto, _) = reads
                .iter()
                .find(|(_, from, upto, _)| *from < commit.stream_id && commit.stream_id <= *upto)
                .expect("a covered id has a covering read");
            let mut v = violation(
                "federation_never_passes_uncommitted",
                (*read_at).max(commit.at),
                &[host, commit.writer],
                &[event_id],
                &[],
                format!(
                    "{host}'s federation sender read ({from}, {upto}] at {read_at} and stored {upto}, but {event_id} at {} ({}) committed at {}: it is never sent",
                    commit.stream_id, commit.writer, commit.at
                ),
            );
            v.finding = findings.get(&(*host, *event_id)).copied();
            violations.push(v);
        }
    }
    violations.sort_by_key(|v| v.at);
    violations
}

/// Eventually: each running federation sender has sent every event committed by the
/// convergence cutoff below the last token its notifier released at least
/// [`FEDERATION_READ_GRACE_MS`] before the end (in its current incarnation: a restarted
/// sender is poked only by its notifier's next release, in Synapse too). Events it passed are
/// `never_passes_uncommitted`'s; whether the notifier released every event is `liveness`'s.
pub fn sends_every_event(facts: &Facts, context: &CheckContext) -> Vec<super::Violation> {
    let mut violations = Vec::new();
    let Some(cutoff) = convergence_cutoff(facts, context) else {
        return violations;
    };
    let Some(grace_end) = context
        .ended_at
        .as_ms()
        .checked_sub(FEDERATION_READ_GRACE_MS)
        .map(SimInstant::from_ms)
    else {
        return violations;
    };
    for host in &context.federation_senders {
        if context.is_down(host) {
            continue;
        }
        // The last token its current incarnation's notifier released by the grace end.
        let mut released: Option<(SimInstant, i64)> = None;
        for record in facts.history.records() {
            if record.at > grace_end {
                break;
            }
            match &record.event {
                Event::Started { host: h, .. } if h == host => released = None,
                Event::TokenHandedOut { reader, to, token } if reader == host && to == NOTIFIER => {
                    released = Some((record.at, token.stream()));
                }
                _ => {}
            }
        }
        let Some((released_at, released_upto)) = released else {
            continue;
        };
        let reads = facts
            .federation_sent
            .get(host.as_str())
            .map_or(&[][..], Vec::as_slice);
        let sent: FxHashSet<&str> = reads
            .iter()
            .flat_map(|(.., events)| events.iter().map(|(_, e)| e.as_str()))
            .collect();
        let ranges = covered_ranges(reads);
        let mut unsent: Vec<(&str, i64)> = facts
            .commits
            .iter()
            .filter(|(event_id, commit)| {
                commit.stream_id <= released_upto
                    && commit.at <= cutoff
                    && !sent.contains(*event_id)
                    && !covers(&ranges, commit.stream_id)
            })
            .map(|(event_id, commit)| (*event_id, commit.stream_id))
            .collect();
        unsent.sort_unstable_by_key(|(_, id)| *id);
        if let Some((first, id)) = unsent.first() {
            let events: Vec<&str> = unsent.iter().map(|(e, _)| *e).take(10).collect();
            violations.push(violation(
                "federation_sends_every_event",
                context.ended_at,
                &[host],
                &events,
                &[],
                format!(
                    "{host}'s notifier released up to {released_upto} at {released_at}, but its federation sender never sent {} event{} below it (first {first} at {id}); converge_within {}ms",
                    unsent.len(),
                    if unsent.len() == 1 { "" } else { "s" },
                    context.converge_within_ms
                ),
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_cover_their_ids_only() {
        let e: &[(i64, String)] = &[];
        let at = SimInstant::ZERO;
        let reads = vec![
            (at, 10, 20, e),
            (at, -1, 5, e),
            (at, 5, 8, e),
            (at, 15, 25, e),
        ];
        let ranges = covered_ranges(&reads);
        assert_eq!(ranges, vec![(-1, 8), (10, 25)]);
        assert!(covers(&ranges, 0) && covers(&ranges, 8) && covers(&ranges, 25));
        assert!(!covers(&ranges, -1) && !covers(&ranges, 9) && !covers(&ranges, 10));
        assert!(!covers(&ranges, 26));
    }
}
