//! Token tests, including the ShardedTokenHelpers test cases of Synapse 1.163.2's
//! tests/storage/test_id_generators.py, read from the tables in
//! tests/data/idgen/synapse_ports/INDEX.md (values computed with the real Synapse functions).

use super::*;

const INDEX: &str = include_str!("../../../tests/data/idgen/synapse_ports/INDEX.md");

/// Reads `(S; {worker1: 9, worker2: 8})`.
fn token(text: &str) -> MultiWriterToken {
    let inner = text
        .trim()
        .trim_matches('`')
        .trim_start_matches('(')
        .trim_end_matches(')');
    let (stream, map) = inner.split_once(';').expect("(S; {...})");
    let map = map.trim().trim_start_matches('{').trim_end_matches('}');
    let instance_map = map
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|entry| {
            let (w, p) = entry.split_once(':').expect("writer: pos");
            (w.trim().to_owned(), p.trim().parse().expect("position"))
        })
        .collect();
    MultiWriterToken::new(stream.trim().parse().expect("stream"), instance_map)
        .expect("valid token")
}

/// Reads `8/w2 6/-` into `(instance, id)` rows.
fn rows(text: &str) -> Vec<(Option<String>, StreamId)> {
    if text.trim() == "(none)" {
        return Vec::new();
    }
    text.split_whitespace()
        .map(|row| {
            let (id, w) = row.split_once('/').expect("id/wN");
            let instance = (w != "-").then(|| format!("worker{}", w.trim_start_matches('w')));
            (instance, id.parse().expect("id"))
        })
        .collect()
}

/// The markdown table rows after the heading line `heading` (up to the next blank line).
fn table_after<'a>(heading: &str) -> Vec<Vec<&'a str>> {
    let start = INDEX
        .find(heading)
        .unwrap_or_else(|| panic!("INDEX.md has {heading:?}"));
    INDEX[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

fn select(
    all: &[(Option<String>, StreamId)],
    from: &MultiWriterToken,
    to: &MultiWriterToken,
) -> Vec<(Option<String>, StreamId)> {
    all.iter()
        .filter(|(w, id)| MultiWriterToken::row_in_range(from, to, w.as_deref(), *id))
        .cloned()
        .collect()
}

/// A `(from, to]` range with the rows Synapse selects for it.
type Range = (
    MultiWriterToken,
    MultiWriterToken,
    Vec<(Option<String>, StreamId)>,
);

fn check_partial_reads(table_rows: &str, ranges_heading: &str, reads_heading: &str) {
    let all = rows(table_rows);
    let ranges: BTreeMap<String, Range> = table_after(ranges_heading)
        .into_iter()
        .map(|cells| {
            (
                cells[0].to_owned(),
                (token(cells[1]), token(cells[2]), rows(cells[3])),
            )
        })
        .collect();
    assert_eq!(ranges.len(), 5);
    for (name, (from, to, expected)) in &ranges {
        assert_eq!(&select(&all, from, to), expected, "rows of {name}");
    }
    let reads = table_after(reads_heading);
    assert!(reads.len() > 25, "the partial-read table has every limit");
    for cells in reads {
        let (from, to, in_range) = &ranges[cells[0]];
        let limit: usize = cells[1].parse().unwrap();
        let read = &in_range[..limit];
        assert_eq!(read, rows(cells[2]).as_slice());
        let last = read.last().unwrap().1;
        let resume = MultiWriterToken::after_partial_read(from, to, last);
        assert_eq!(resume, token(cells[4]), "{} limit {limit}", cells[0]);
        assert!(from.is_before_or_eq(&resume) && resume.is_before_or_eq(to));
        assert_eq!(
            select(&all, &resume, to),
            rows(cells[5]),
            "{} limit {limit}: remaining",
            cells[0]
        );
    }
}

#[test]
fn synapse_token_after_partial_read_database() {
    check_partial_reads(
        "6/w1 7/w1 8/w2 9/w1 10/w3 11/w1 12/w2 13/w3 14/w2",
        "Database:\n\n| range | from",
        "Database:\n\n| range | limit",
    );
}

#[test]
fn synapse_token_after_partial_read_database_null() {
    check_partial_reads(
        "4/- 5/- 6/- 7/- 8/w2 9/w1 10/w3 11/w1 12/w2 13/w3 14/w2",
        "DatabaseNull:\n\n| range | from",
        "DatabaseNull:\n\n| range | limit",
    );
}

#[test]
fn synapse_token_after_partial_read_does_not_go_backwards() {
    let from = token("(60; {})");
    let resume = MultiWriterToken::after_partial_read(&from, &token("(10; {worker2: 70})"), 64);
    assert_eq!(resume, token("(60; {worker2: 64})"));
    assert!(from.is_before_or_eq(&resume));
}

#[test]
fn constructor_rejects_entries_not_ahead() {
    let map = BTreeMap::from([("w1".to_owned(), 5)]);
    assert!(matches!(
        MultiWriterToken::new(5, map),
        Err(TokenError::EntryNotAhead { .. })
    ));
}

#[test]
fn order_is_partial_and_max_is_the_join() {
    let a = token("(5; {w1: 9})");
    let b = token("(6; {w2: 8})");
    assert!(!a.is_before_or_eq(&b) && !b.is_before_or_eq(&a));
    let joined = a.max(&b);
    assert_eq!(joined, token("(6; {w1: 9, w2: 8})"));
    assert!(a.is_before_or_eq(&joined) && b.is_before_or_eq(&joined));
    assert_eq!(
        token("(7; {w1: 9})").max(&token("(9; {})")),
        token("(9; {})")
    );
}

#[test]
fn bounding_clamps_tokens_from_the_future() {
    assert_eq!(token("(5; {w1: 9})").bounded(9), token("(5; {w1: 9})"));
    assert_eq!(
        token("(5; {w1: 9, w2: 7})").bounded(6),
        token("(5; {w1: 6, w2: 6})")
    );
    assert_eq!(token("(100; {})").bounded(90), token("(90; {})"));
}

#[test]
fn text_forms_round_trip() {
    let mut ids = InstanceIds::default();
    let t = token("(56; {w2: 58, w3: 59})");
    assert_eq!(ids.id_for("w1"), 1);
    assert_eq!(t.to_room_text(&mut ids), "m56~2.58~3.59");
    assert_eq!(MultiWriterToken::parse("m56~2.58~3.59~", &ids).unwrap(), t);
    assert_eq!(token("(42; {})").to_multiwriter_text(&mut ids), "42");
    assert_eq!(token("(42; {})").to_room_text(&mut ids), "s42");
    assert_eq!(
        MultiWriterToken::parse("s42", &ids).unwrap(),
        token("(42; {})")
    );
    assert_eq!(
        MultiWriterToken::parse("t7-42", &ids).unwrap(),
        token("(42; {})")
    );
    for bad in ["", "m", "mx", "m5~9.7", "m5~2.4", "s-1", "q5"] {
        assert!(MultiWriterToken::parse(bad, &ids).is_err(), "{bad:?}");
    }
}

fn arbitrary_token() -> impl proptest::strategy::Strategy<Value = MultiWriterToken> {
    use proptest::prelude::*;
    (
        0i64..20,
        proptest::collection::btree_map("w[1-4]", 0i64..25, 0..4),
    )
        .prop_map(|(stream, positions)| {
            let positions: BTreeMap<String, StreamId> = positions.into_iter().collect();
            MultiWriterToken::from_positions(stream, &positions)
        })
}

proptest::proptest! {
    /// The shortcut for ordered tokens gives exactly the positionwise join.
    #[test]
    fn max_is_the_positionwise_join(a in arbitrary_token(), b in arbitrary_token()) {
        let writers: BTreeMap<String, StreamId> = a
            .instance_map
            .keys()
            .chain(b.instance_map.keys())
            .map(|w| (w.clone(), a.pos_for(w).max(b.pos_for(w))))
            .collect();
        let join = MultiWriterToken::from_positions(a.stream.max(b.stream), &writers);
        proptest::prop_assert_eq!(a.max(&b), join.clone());
        proptest::prop_assert_eq!(b.max(&a), join);
    }
}
