//! Notifier, `wait_for_stream_position` and /sync-wait tests, including regressions for the
//! historic bugs B8, B12, B17 and B20 of research/synapse-model.md §5.

use super::*;

fn t(stream: StreamId, ahead: &[(&str, StreamId)]) -> MultiWriterToken {
    MultiWriterToken::new(
        stream,
        ahead.iter().map(|(w, p)| ((*w).to_owned(), *p)).collect(),
    )
    .expect("valid token")
}

fn ms(ms: u64) -> SimInstant {
    SimInstant::from_ms(ms)
}

fn ev(instance: &str, stream_id: StreamId) -> RoomEvent {
    RoomEvent::new(instance, stream_id, &format!("${instance}_{stream_id}"))
}

// ---- pending room events -------------------------------------------------------------------

#[test]
fn out_of_order_event_is_released_only_once_covered_and_with_the_max_token() {
    // w1 is still persisting 11 when w2's 12 is persisted and announced; the room token read
    // then still has w1 at 10 and w2 at 10 (w2 has not yet been advanced past its 12 here).
    let mut notifier = Notifier::new(t(10, &[]));
    notifier
        .wait_for_events(1, &t(10, &[]), ms(0), 30_000)
        .unwrap();
    let out = notifier.on_new_room_events(vec![ev("w2", 12)], t(10, &[]));
    assert_eq!(out, RoomEventsOutcome::default(), "held back, nobody woken");
    assert_eq!(notifier.pending(), &[ev("w2", 12)]);

    // w1's 11 finishes and the token now covers both: released together, in list order, with
    // the max token rather than either event's own id (B20).
    let max = t(11, &[("w2", 12)]);
    let out = notifier.on_new_room_events(vec![ev("w1", 11)], max.clone());
    let announcement = out.announcement.expect("released");
    assert_eq!(announcement.events, vec![ev("w2", 12), ev("w1", 11)]);
    assert_eq!(announcement.token, max);
    assert_eq!(
        out.woken,
        vec![ListenerWakeup::Woken {
            listener: 1,
            token: max.clone()
        }]
    );
    assert!(notifier.pending().is_empty());
    assert_eq!(notifier.current_token(), &max);
}

#[test]
fn same_writer_out_of_order_finish_holds_the_later_event() {
    // w1 allocated 11 and 12; 12 finished first, so w1's position is still 10.
    let mut notifier = Notifier::new(t(10, &[]));
    let out = notifier.on_new_room_events(vec![ev("w1", 12)], t(10, &[]));
    assert_eq!(out.announcement, None);
    let out = notifier.on_new_room_events(vec![ev("w1", 11)], t(12, &[]));
    assert_eq!(
        out.announcement,
        Some(Announcement {
            events: vec![ev("w1", 12), ev("w1", 11)],
            token: t(12, &[]),
        })
    );
}

#[test]
fn event_ahead_of_its_writer_in_the_token_stays_pending_while_others_release() {
    let mut notifier = Notifier::new(t(10, &[]));
    // w1 at 11, w2 at 10: w2's 12 is ahead, w1's 11 is covered.
    let out = notifier.on_new_room_events(vec![ev("w2", 12), ev("w1", 11)], t(10, &[("w1", 11)]));
    assert_eq!(out.announcement.unwrap().events, vec![ev("w1", 11)]);
    assert_eq!(notifier.pending(), &[ev("w2", 12)]);
    // Another writer's higher position does not release w2's 12.
    let out = notifier.on_new_room_events(vec![], t(10, &[("w1", 20)]));
    assert_eq!(out.announcement, None);
    let out = notifier.on_new_room_events(vec![], t(10, &[("w1", 20), ("w2", 12)]));
    assert_eq!(out.announcement.unwrap().events, vec![ev("w2", 12)]);
}

#[test]
fn two_events_are_released_together_in_order() {
    let mut notifier = Notifier::new(t(5, &[]));
    assert_eq!(
        notifier.wait_for_events(1, &t(5, &[]), ms(0), 30_000),
        Ok(None)
    );
    let out = notifier.on_new_room_events(vec![ev("w1", 6), ev("w1", 7)], t(7, &[]));
    assert_eq!(
        out.announcement,
        Some(Announcement {
            events: vec![ev("w1", 6), ev("w1", 7)],
            token: t(7, &[]),
        })
    );
    assert_eq!(
        out.woken,
        vec![ListenerWakeup::Woken {
            listener: 1,
            token: t(7, &[])
        }],
        "one notification for the batch"
    );
}

#[test]
fn nothing_released_wakes_nobody() {
    let mut notifier = Notifier::new(t(5, &[]));
    notifier
        .wait_for_events(1, &t(5, &[]), ms(0), 1_000)
        .unwrap();
    let out = notifier.on_new_room_events(vec![ev("w1", 9)], t(5, &[("w1", 8)]));
    assert_eq!(out, RoomEventsOutcome::default());
    assert_eq!(notifier.listener_count(), 1);
    assert_eq!(notifier.current_token(), &t(5, &[]));
}

// ---- listeners -----------------------------------------------------------------------------

#[test]
fn many_listeners_on_one_token_are_all_woken_once() {
    let mut notifier = Notifier::new(t(5, &[]));
    for id in [3, 1, 2] {
        assert_eq!(
            notifier.wait_for_events(id, &t(5, &[]), ms(0), 30_000),
            Ok(None)
        );
    }
    let out = notifier.on_new_room_events(vec![ev("w1", 6)], t(6, &[]));
    let woken: Vec<ListenerId> = out.woken.iter().map(ListenerWakeup::listener).collect();
    assert_eq!(woken, vec![1, 2, 3], "each once, in id order");
    assert!(out
        .woken
        .iter()
        .all(|w| matches!(w, ListenerWakeup::Woken { token, .. } if *token == t(6, &[]))));
    assert_eq!(notifier.listener_count(), 0);
    let again = notifier.on_new_room_events(vec![ev("w1", 7)], t(7, &[]));
    assert!(again.woken.is_empty(), "woken listeners are gone");
    assert!(notifier.handle_timeout(ms(60_000)).is_empty());
}

#[test]
fn listener_with_a_stale_token_resolves_at_once() {
    let mut notifier = Notifier::new(t(5, &[]));
    notifier.on_new_room_events(vec![ev("w1", 6)], t(6, &[]));
    assert_eq!(
        notifier.wait_for_events(7, &t(5, &[]), ms(100), 30_000),
        Ok(Some(ListenerWakeup::Woken {
            listener: 7,
            token: t(6, &[])
        }))
    );
    assert_eq!(notifier.listener_count(), 0);
}

#[test]
fn listener_times_out_with_the_current_token() {
    let mut notifier = Notifier::new(t(5, &[]));
    notifier
        .wait_for_events(1, &t(5, &[]), ms(1_000), 2_000)
        .unwrap();
    notifier
        .wait_for_events(2, &t(5, &[]), ms(1_500), 2_000)
        .unwrap();
    assert_eq!(notifier.poll_timeout(), Some(ms(3_000)));
    assert!(notifier.handle_timeout(ms(2_999)).is_empty());
    assert_eq!(
        notifier.handle_timeout(ms(3_000)),
        vec![ListenerWakeup::TimedOut {
            listener: 1,
            token: t(5, &[])
        }]
    );
    assert_eq!(notifier.poll_timeout(), Some(ms(3_500)));
    assert_eq!(notifier.handle_timeout(ms(4_000)).len(), 1);
    assert_eq!(notifier.poll_timeout(), None);
}

#[test]
fn zero_timeout_answers_at_once_and_duplicate_listener_is_rejected() {
    let mut notifier = Notifier::new(t(5, &[]));
    assert_eq!(
        notifier.wait_for_events(1, &t(5, &[]), ms(0), 0),
        Ok(Some(ListenerWakeup::TimedOut {
            listener: 1,
            token: t(5, &[])
        }))
    );
    notifier.wait_for_events(1, &t(5, &[]), ms(0), 10).unwrap();
    assert_eq!(
        notifier.wait_for_events(1, &t(5, &[]), ms(0), 10),
        Err(NotifierError::ListenerInUse(1))
    );
    assert!(notifier.cancel_listener(1));
    assert!(!notifier.cancel_listener(1));
}

// ---- wait_for_stream_position --------------------------------------------------------------

fn positions(entries: &[(&str, StreamId)]) -> impl Fn(&str) -> StreamId {
    let map: BTreeMap<String, StreamId> =
        entries.iter().map(|(w, p)| ((*w).to_owned(), *p)).collect();
    move |w| map.get(w).copied().unwrap_or(0)
}

#[test]
fn two_waiters_on_the_same_position_are_both_woken() {
    // B12: the sorted list compared (position, deferred) and raised on a tie.
    let mut waiters = PositionWaiters::new("reader");
    let current = positions(&[("w2", 5)]);
    assert_eq!(
        waiters.wait_for_stream_position(1, "w2", 8, &current, ms(0)),
        Ok(None)
    );
    assert_eq!(
        waiters.wait_for_stream_position(2, "w2", 8, &current, ms(0)),
        Ok(None)
    );
    assert_eq!(
        waiters.wait_for_stream_position(3, "w2", 7, &current, ms(0)),
        Ok(None)
    );
    assert_eq!(
        waiters.wait_for_stream_position(4, "w2", 9, &current, ms(0)),
        Ok(None)
    );
    assert_eq!(
        waiters.on_rdata("w2", 8),
        vec![
            PositionWakeup::Reached { waiter: 3 },
            PositionWakeup::Reached { waiter: 1 },
            PositionWakeup::Reached { waiter: 2 },
        ]
    );
    assert_eq!(waiters.waiting_count(), 1);
    assert_eq!(
        waiters.on_position("w2", 9),
        vec![PositionWakeup::Reached { waiter: 4 }]
    );
    assert_eq!(waiters.waiting_count(), 0);
}

#[test]
fn waiter_times_out_after_five_seconds() {
    let mut waiters = PositionWaiters::new("reader");
    let current = positions(&[("w2", 5)]);
    waiters
        .wait_for_stream_position(1, "w2", 8, &current, ms(1_000))
        .unwrap();
    assert_eq!(waiters.poll_timeout(), Some(ms(6_000)));
    assert!(waiters.handle_timeout(ms(5_999)).is_empty());
    assert_eq!(
        waiters.handle_timeout(ms(6_000)),
        vec![PositionWakeup::TimedOut { waiter: 1 }]
    );
    assert!(
        waiters.on_rdata("w2", 8).is_empty(),
        "a timed-out waiter is not woken again"
    );
    assert_eq!(waiters.poll_timeout(), None);
}

#[test]
fn waiter_for_a_position_already_reached_returns_at_once() {
    let mut waiters = PositionWaiters::new("reader");
    let current = positions(&[("w2", 8)]);
    for position in [7, 8] {
        assert_eq!(
            waiters.wait_for_stream_position(1, "w2", position, &current, ms(0)),
            Ok(Some(PositionWakeup::Reached { waiter: 1 }))
        );
    }
    // Our own writes are never waited for.
    assert_eq!(
        waiters.wait_for_stream_position(2, "reader", 100, &current, ms(0)),
        Ok(Some(PositionWakeup::Reached { waiter: 2 }))
    );
    assert_eq!(waiters.waiting_count(), 0);
}

#[test]
fn waiting_for_w2_is_not_satisfied_by_another_writers_higher_position() {
    // B17: the check used the local instance's token (9) instead of W2's (7).
    let mut waiters = PositionWaiters::new("reader");
    let current = positions(&[("reader", 9), ("w1", 9), ("w2", 7)]);
    assert_eq!(
        waiters.wait_for_stream_position(1, "w2", 8, &current, ms(0)),
        Ok(None)
    );
    assert!(waiters.on_rdata("w1", 20).is_empty());
    assert!(waiters.on_position("reader", 20).is_empty());
    assert_eq!(
        waiters.on_rdata("w2", 8),
        vec![PositionWakeup::Reached { waiter: 1 }]
    );
}

#[test]
fn duplicate_waiter_is_rejected() {
    let mut waiters = PositionWaiters::new("reader");
    let current = positions(&[]);
    waiters
        .wait_for_stream_position(1, "w2", 8, &current, ms(0))
        .unwrap();
    assert_eq!(
        waiters.wait_for_stream_position(1, "w1", 3, &current, ms(0)),
        Err(NotifierError::WaiterInUse(1))
    );
}

// ---- /sync with since ----------------------------------------------------------------------

fn ready(poll: SyncPoll) -> SyncResponse {
    match poll {
        SyncPoll::Ready(response) => response,
        SyncPoll::Pending { next_poll_at } => panic!("pending until {next_poll_at}"),
    }
}

#[test]
fn since_token_from_the_future_is_bounded_by_max_allocated() {
    // B8: a client holds w1 at 100; after a restart the database has allocated only 90.
    let mut notifier = Notifier::new(t(90, &[]));
    let since = t(50, &[("w1", 100)]);
    let current = t(90, &[]);
    let mut request = SyncRequest::new(Some(since), &current, 90, ms(0));
    assert_eq!(request.since(), Some(&t(50, &[("w1", 90)])));
    let events = [ev("w1", 90), ev("w2", 60)];
    let response = ready(notifier.poll_sync(&mut request, ms(0), &current, &events));
    assert_eq!(
        response.events,
        vec![ev("w2", 60)],
        "w2's rows above 50 only"
    );
    assert_eq!(response.next_batch, current);
    assert!(!response.timed_out);
    assert_eq!(notifier.wait_for_stream_token_timeouts(), 0);
}

#[test]
fn bounded_future_token_does_not_wait_forever() {
    // Bounded to 90, but this process is only at 80: it waits, and gives up.
    let mut notifier = Notifier::new(t(80, &[]));
    let current = t(80, &[]);
    let mut request = SyncRequest::new(Some(t(100, &[])), &current, 90, ms(0));
    assert_eq!(request.since(), Some(&t(90, &[])));
    let mut now = ms(0);
    let response = loop {
        match notifier.poll_sync(&mut request, now, &current, &[]) {
            SyncPoll::Pending { next_poll_at } => now = next_poll_at,
            SyncPoll::Ready(response) => break response,
        }
    };
    assert!(response.timed_out);
    assert_eq!(
        response.next_batch,
        t(90, &[]),
        "next_batch is the bounded since"
    );
    assert_eq!(now, ms(10_500));
}

#[test]
fn sync_waits_polling_every_500ms_and_gives_up_after_10s() {
    let mut notifier = Notifier::new(t(5, &[]));
    let current = t(5, &[]);
    let since = t(5, &[("w2", 8)]);
    let mut request = SyncRequest::new(Some(since.clone()), &current, 8, ms(1_000));
    assert_eq!(
        request.since(),
        Some(&since),
        "not from the future: nothing to bound"
    );
    let mut polls = Vec::new();
    let mut now = ms(1_000);
    let response = loop {
        polls.push(now.as_ms());
        match notifier.poll_sync(&mut request, now, &current, &[ev("w1", 4)]) {
            SyncPoll::Pending { next_poll_at } => {
                // An early poll does not look at the token.
                assert_eq!(
                    notifier.poll_sync(&mut request, now + 1, &t(8, &[]), &[]),
                    SyncPoll::Pending { next_poll_at }
                );
                now = next_poll_at;
            }
            SyncPoll::Ready(response) => break response,
        }
    };
    let expected: Vec<u64> = (0..=21)
        .map(|k| 1_000 + k * SYNC_TOKEN_POLL_INTERVAL_MS)
        .collect();
    assert_eq!(
        polls, expected,
        "polls at 0, 0.5 s, ..., 10 s, gives up at 10.5 s"
    );
    assert_eq!(
        response,
        SyncResponse {
            events: vec![],
            next_batch: since,
            limited: false,
            timed_out: true
        }
    );
    assert_eq!(request.poll_timeout(), None);
    assert_eq!(notifier.wait_for_stream_token_timeouts(), 1);
}

#[test]
fn sync_that_waits_answers_once_the_process_catches_up() {
    let mut request = SyncRequest::new(Some(t(5, &[("w2", 8)])), &t(5, &[]), 8, ms(0));
    assert_eq!(
        request.poll(ms(0), &t(5, &[]), &[]),
        SyncPoll::Pending {
            next_poll_at: ms(500)
        }
    );
    let current = t(5, &[("w2", 9)]);
    let events = [ev("w2", 8), ev("w2", 9), ev("w1", 5)];
    let response = ready(request.poll(ms(500), &current, &events));
    assert_eq!(response.events, vec![ev("w2", 9)]);
    assert_eq!(response.next_batch, current);
}

#[test]
fn successive_pages_return_exactly_the_events_in_range_without_duplicates() {
    // Events from two writers, persisted out of order; each page is (since, current].
    let all = [
        ev("w1", 2),
        ev("w2", 3),
        ev("w1", 4),
        ev("w2", 5),
        ev("w1", 6),
        ev("w2", 7),
        ev("w1", 8),
    ];
    let currents = [
        t(1, &[]),
        t(2, &[("w2", 3)]),
        t(2, &[("w2", 5)]),
        t(4, &[("w2", 7)]),
        t(8, &[]),
    ];
    let mut seen: Vec<RoomEvent> = Vec::new();
    let mut since: Option<MultiWriterToken> = None;
    for current in &currents {
        // The process only knows the events its token covers.
        let known: Vec<RoomEvent> = all
            .iter()
            .filter(|e| e.stream_id <= current.pos_for(&e.instance))
            .cloned()
            .collect();
        let mut request = SyncRequest::new(since.clone(), current, 8, ms(0));
        let response = ready(request.poll(ms(0), current, &known));
        for event in &response.events {
            assert!(!seen.contains(event), "{event:?} sent twice");
            if let Some(since) = &since {
                assert!(event.persisted_after(since));
            }
            assert!(!event.persisted_after(current));
        }
        seen.extend(response.events);
        since = Some(response.next_batch);
    }
    seen.sort();
    let mut expected = all.to_vec();
    expected.sort();
    assert_eq!(seen, expected, "every event exactly once");
}

#[test]
fn initial_sync_returns_everything_up_to_current() {
    let current = t(3, &[("w2", 5)]);
    let mut request = SyncRequest::new(None, &current, 5, ms(0));
    let events = [ev("w2", 5), ev("w1", 4), ev("w1", 2), ev("w2", 3)];
    let response = ready(request.poll(ms(0), &current, &events));
    assert_eq!(response.events, vec![ev("w1", 2), ev("w2", 3), ev("w2", 5)]);
    assert_eq!(response.next_batch, current);
}

// ---- historical-bug switches ---------------------------------------------------------------

#[test]
fn switch_b12_fails_the_second_waiter_on_one_position() {
    let mut waiters =
        PositionWaiters::new("reader").with_bugs(Bugs::NONE.with(Bug::WaitersCompareDeferreds));
    let current = positions(&[("w2", 5)]);
    assert_eq!(
        waiters.wait_for_stream_position(1, "w2", 8, &current, ms(0)),
        Ok(None)
    );
    assert_eq!(
        waiters.wait_for_stream_position(2, "w2", 8, &current, ms(0)),
        Err(NotifierError::WaitersCompared(2))
    );
    assert_eq!(waiters.waiting_count(), 1, "the second waiter is lost");
}

#[test]
fn switch_b17_returns_when_the_local_token_is_past_the_position() {
    let mut waiters =
        PositionWaiters::new("reader").with_bugs(Bugs::NONE.with(Bug::WaitChecksLocalToken));
    let current = positions(&[("reader", 9), ("w2", 7)]);
    assert_eq!(
        waiters.wait_for_stream_position(1, "w2", 8, &current, ms(0)),
        Ok(Some(PositionWakeup::Reached { waiter: 1 })),
        "w2 is at 7, but the local 9 is compared"
    );
}

#[test]
fn switch_b8_waits_on_a_future_token_and_gives_up_empty() {
    let options = SyncOptions {
        timeline_limit: None,
        bugs: Bugs::NONE.with(Bug::SyncWaitsOnFutureToken),
    };
    let since = t(50, &[("w1", 100)]);
    let current = t(90, &[]);
    let mut request = SyncRequest::with_options(Some(since.clone()), &current, 90, ms(0), options);
    assert_eq!(request.since(), Some(&since), "not bounded");
    let mut notifier = Notifier::new(current.clone());
    let mut now = 0;
    let response = loop {
        match notifier.poll_sync(&mut request, ms(now), &current, &[]) {
            SyncPoll::Ready(response) => break response,
            SyncPoll::Pending { next_poll_at } => now = next_poll_at.as_ms(),
        }
    };
    assert!(response.timed_out);
    assert_eq!(
        response.next_batch, since,
        "the client keeps its future token"
    );
}

#[test]
fn limited_page_resumes_from_a_partial_read_token_and_switch_b18_goes_backwards() {
    // from: w2 ahead at 70; rows above: w1 at 61..=64, w2 at 71; limit 2 stops at 62.
    let since = t(60, &[("w2", 70)]);
    let current = t(64, &[("w2", 71)]);
    let events = [ev("w1", 61), ev("w1", 62), ev("w1", 63), ev("w2", 71)];
    for (bugs, expected_w2) in [
        (Bugs::NONE, 70),
        (Bugs::NONE.with(Bug::PartialReadTokenGoesBackwards), 62),
    ] {
        let options = SyncOptions {
            timeline_limit: Some(2),
            bugs,
        };
        let mut request =
            SyncRequest::with_options(Some(since.clone()), &current, 71, ms(0), options);
        let response = ready(request.poll(ms(0), &current, &events));
        assert!(response.limited);
        assert_eq!(response.events, vec![ev("w1", 61), ev("w1", 62)]);
        assert_eq!(response.next_batch.stream(), 62);
        assert_eq!(response.next_batch.pos_for("w2"), expected_w2, "{bugs:?}");
    }
}
