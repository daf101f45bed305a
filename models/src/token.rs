//! Stream positions and Synapse's multi-writer token (synapse/types/__init__.py,
//! `AbstractMultiWriterStreamToken`): a minimum position every writer has reached, plus the
//! writers that are strictly ahead of it, a vector clock over writers.
//!
//! Also the sharded-token helpers of synapse/storage/util/id_generators.py used when reading a
//! stream between two tokens, and the text forms clients see (`s5`, `m5~1.7~2.9`, `42`).

use std::collections::BTreeMap;
use std::fmt;

mod instance_map;
pub use instance_map::InstanceMap;

/// A position in one stream.
pub type StreamId = i64;

/// `MultiWriterStreamToken`: `stream` plus the writers ahead of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MultiWriterToken {
    stream: StreamId,
    /// Only writers strictly ahead of `stream`.
    instance_map: InstanceMap,
}

/// Why a token could not be built or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The constructor's check: every map entry must be ahead of the minimum.
    #[error("instance_map {instance} position {position} must be greater than the stream position {stream}")]
    EntryNotAhead {
        instance: String,
        position: StreamId,
        stream: StreamId,
    },
    /// Synapse answers such a token with HTTP 400 "Invalid stream token".
    #[error("Invalid stream token {0:?}")]
    Invalid(String),
}

impl MultiWriterToken {
    /// A token with no writer ahead of `stream`.
    pub fn at(stream: StreamId) -> Self {
        MultiWriterToken {
            stream,
            instance_map: InstanceMap::default(),
        }
    }

    /// Rejects entries at or below `stream`, as Synapse's constructor does.
    pub fn new(
        stream: StreamId,
        instance_map: BTreeMap<String, StreamId>,
    ) -> Result<Self, TokenError> {
        if let Some((instance, position)) = instance_map.iter().find(|(_, p)| **p <= stream) {
            return Err(TokenError::EntryNotAhead {
                instance: instance.clone(),
                position: *position,
                stream,
            });
        }
        Ok(MultiWriterToken {
            stream,
            instance_map: instance_map.into(),
        })
    }

    /// Drops entries at or below `stream` instead of rejecting them (`from_generator` does
    /// this with `get_positions()`).
    pub fn from_positions<'a>(
        stream: StreamId,
        positions: impl IntoIterator<Item = (&'a String, &'a StreamId)>,
    ) -> Self {
        let instance_map = positions
            .into_iter()
            .filter(|(_, p)| **p > stream)
            .map(|(w, p)| (w.clone(), *p))
            .collect();
        MultiWriterToken {
            stream,
            instance_map,
        }
    }

    pub fn stream(&self) -> StreamId {
        self.stream
    }

    pub fn instance_map(&self) -> &InstanceMap {
        &self.instance_map
    }

    /// `get_stream_pos_for_instance`: a writer not in the map is at `stream`.
    pub fn pos_for(&self, instance: &str) -> StreamId {
        self.instance_map
            .get(instance)
            .copied()
            .unwrap_or(self.stream)
    }

    /// `get_max_stream_pos`.
    pub fn max_pos(&self) -> StreamId {
        self.instance_map
            .values()
            .copied()
            .max()
            .unwrap_or(self.stream)
    }

    /// `is_before_or_eq`: a partial order; `!a.is_before_or_eq(b)` does not make `b <= a`.
    pub fn is_before_or_eq(&self, other: &MultiWriterToken) -> bool {
        if self.stream > other.stream {
            return false;
        }
        self.instance_map
            .keys()
            .chain(other.instance_map.keys())
            .all(|w| self.pos_for(w) <= other.pos_for(w))
    }

    /// `copy_and_advance`: the least token at or after both (the merge of two vector clocks).
    pub fn max(&self, other: &MultiWriterToken) -> MultiWriterToken {
        // Most merges are with a token at or after this one (a notifier's next token): no
        // position map to rebuild then.
        if self.is_before_or_eq(other) {
            return other.clone();
        }
        if other.is_before_or_eq(self) {
            return self.clone();
        }
        let stream = self.stream.max(other.stream);
        let positions: BTreeMap<String, StreamId> = self
            .instance_map
            .keys()
            .chain(other.instance_map.keys())
            .map(|w| (w.clone(), self.pos_for(w).max(other.pos_for(w))))
            .collect();
        MultiWriterToken::from_positions(stream, &positions)
    }

    /// `bound_stream_token(max)`: clamps a token from the future to `max_stream_id`.
    pub fn bounded(&self, max_stream_id: StreamId) -> MultiWriterToken {
        if self.max_pos() <= max_stream_id {
            return self.clone();
        }
        let stream = self.stream.min(max_stream_id);
        let positions: BTreeMap<String, StreamId> = self
            .instance_map
            .iter()
            .map(|(w, p)| (w.clone(), (*p).min(max_stream_id)))
            .collect();
        MultiWriterToken::from_positions(stream, &positions)
    }

    /// `is_stream_position_in_range(low, high, instance, pos)`: is row `(instance, pos)` in
    /// `(low, high]`? Rows without an instance use `stream`.
    pub fn row_in_range(
        low: &MultiWriterToken,
        high: &MultiWriterToken,
        instance: Option<&str>,
        pos: StreamId,
    ) -> bool {
        let low_pos = instance.map_or(low.stream, |w| low.pos_for(w));
        let high_pos = instance.map_or(high.stream, |w| high.pos_for(w));
        low_pos < pos && pos <= high_pos
    }

    /// `advance_multiwriter_sharded_token_after_partial_read`: where to resume after reading
    /// rows of `(from, to]` in id order up to `last_read`. Never behind `from` (bug B18).
    pub fn after_partial_read(
        from: &MultiWriterToken,
        to: &MultiWriterToken,
        last_read: StreamId,
    ) -> MultiWriterToken {
        assert!(from.stream < last_read, "read was out of bounds");
        let baseline = from.stream.max(last_read.min(to.stream));
        let positions: BTreeMap<String, StreamId> = from
            .instance_map
            .keys()
            .chain(to.instance_map.keys())
            .map(|w| (w.clone(), from.pos_for(w).max(last_read.min(to.pos_for(w)))))
            .collect();
        MultiWriterToken::from_positions(baseline, &positions)
    }

    /// Every position moved `distance` ahead: a token from the future for tests and faults.
    pub fn ahead_by(&self, distance: StreamId) -> MultiWriterToken {
        let positions: BTreeMap<String, StreamId> = self
            .instance_map
            .iter()
            .map(|(w, p)| (w.clone(), p + distance))
            .collect();
        MultiWriterToken::from_positions(self.stream + distance, &positions)
    }

    /// Bug B18: [`MultiWriterToken::after_partial_read`] without its "doesn't go backwards"
    /// floors (`max(from, ...)`), so a writer that `from` had ahead of `last_read` goes back.
    pub fn after_partial_read_unfloored(
        from: &MultiWriterToken,
        to: &MultiWriterToken,
        last_read: StreamId,
    ) -> MultiWriterToken {
        let baseline = last_read.min(to.stream);
        let positions: BTreeMap<String, StreamId> = from
            .instance_map
            .keys()
            .chain(to.instance_map.keys())
            .map(|w| (w.clone(), last_read.min(to.pos_for(w))))
            .collect();
        MultiWriterToken::from_positions(baseline, &positions)
    }
}

impl fmt::Display for MultiWriterToken {
    /// `(stream; {writer: pos, ...})`, for reports and tests; not a wire form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}; {{", self.stream)?;
        for (i, (writer, pos)) in self.instance_map.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{writer}: {pos}")?;
        }
        f.write_str("})")
    }
}

/// The `instance_map` table: stable small integers for instance names in token texts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceIds {
    by_name: BTreeMap<String, u32>,
    by_id: BTreeMap<u32, String>,
}

impl InstanceIds {
    /// `get_id_for_instance`: assigns the next id on first use, as the table's serial does.
    pub fn id_for(&mut self, name: &str) -> u32 {
        if let Some(id) = self.by_name.get(name) {
            return *id;
        }
        let id = self.by_id.len() as u32 + 1;
        self.by_name.insert(name.to_owned(), id);
        self.by_id.insert(id, name.to_owned());
        id
    }

    pub fn name_for(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }
}

impl MultiWriterToken {
    fn vector_text(&self, ids: &mut InstanceIds) -> String {
        let mut entries: Vec<(u32, StreamId)> = self
            .instance_map
            .iter()
            .map(|(w, p)| (ids.id_for(w), *p))
            .collect();
        // Synapse prints map order; ordering by instance id keeps one text per token.
        entries.sort_unstable();
        let mut text = format!("m{}", self.stream);
        for (id, pos) in entries {
            text.push_str(&format!("~{id}.{pos}"));
        }
        text
    }

    /// RoomStreamToken text: `s<stream>` when no writer is ahead, else `m<stream>~<id>.<pos>...`.
    pub fn to_room_text(&self, ids: &mut InstanceIds) -> String {
        if self.instance_map.is_empty() {
            format!("s{}", self.stream)
        } else {
            self.vector_text(ids)
        }
    }

    /// MultiWriterStreamToken text (receipts, device lists): a bare decimal or `m...`.
    pub fn to_multiwriter_text(&self, ids: &mut InstanceIds) -> String {
        if self.instance_map.is_empty() {
            self.stream.to_string()
        } else {
            self.vector_text(ids)
        }
    }

    /// Parses `s<n>`, `<n>` or `m<n>~<id>.<pos>...` (empty parts ignored, as Synapse does for
    /// tokens like `m5~`). Historic `t<topo>-<stream>` tokens carry no map and read as `stream`.
    pub fn parse(text: &str, ids: &InstanceIds) -> Result<MultiWriterToken, TokenError> {
        let invalid = || TokenError::Invalid(text.to_owned());
        let number = |s: &str| -> Result<StreamId, TokenError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            s.parse().map_err(|_| invalid())
        };
        if let Some(rest) = text.strip_prefix('s') {
            return Ok(MultiWriterToken::at(number(rest)?));
        }
        if let Some(rest) = text.strip_prefix('t') {
            let (_, stream) = rest.split_once('-').ok_or_else(invalid)?;
            return Ok(MultiWriterToken::at(number(stream)?));
        }
        let Some(rest) = text.strip_prefix('m') else {
            return Ok(MultiWriterToken::at(number(text)?));
        };
        let mut parts = rest.split('~');
        let stream = number(parts.next().ok_or_else(invalid)?)?;
        let mut instance_map = BTreeMap::new();
        for part in parts.filter(|p| !p.is_empty()) {
            let (id, pos) = part.split_once('.').ok_or_else(invalid)?;
            let id: u32 = id.parse().map_err(|_| invalid())?;
            let name = ids.name_for(id).ok_or_else(invalid)?;
            instance_map.insert(name.to_owned(), number(pos)?);
        }
        MultiWriterToken::new(stream, instance_map).map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests;
