//! Events waiting for the collector's ack.
//!
//! Every event gets an id that stays the same across resends; the sequence
//! number of the message that carried it changes with every stream. The
//! buffer is bounded: when full the oldest event is dropped (DropOldest — the
//! newest facts matter most to a person asking "why now?"), the loss is
//! counted, and a `Dropped` event reporting it is sent ahead of the rest.

use crate::events::{EventKind, HostEvent};
use std::collections::VecDeque;
use std::time::SystemTime;

#[derive(Debug)]
pub struct Entry {
    id: Option<u64>,
    pub event: HostEvent,
    /// Sequence number of the message that last carried it on the current
    /// stream; `None` when not yet sent on it.
    sent_seq: Option<u64>,
}

impl Entry {
    /// Stable across resends; 0 only before the first send.
    pub fn id(&self) -> u64 {
        self.id.unwrap_or(0)
    }
}

#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    next_id: u64,
    entries: VecDeque<Entry>,
    /// Entries before this index have been sent on the current stream.
    sent: usize,
    dropped_total: u64,
    /// Drops not yet reported in a `Dropped` event: count, first, last.
    unreported: Option<(u64, SystemTime, SystemTime)>,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Outbox {
            capacity: capacity.max(1),
            next_id: 1,
            entries: VecDeque::new(),
            sent: 0,
            dropped_total: 0,
            unreported: None,
        }
    }

    pub fn push(&mut self, event: HostEvent) {
        if self.entries.len() >= self.capacity {
            self.drop_oldest();
        }
        self.entries.push_back(Entry {
            id: None,
            event,
            sent_seq: None,
        });
    }

    fn drop_oldest(&mut self) {
        let Some(old) = self.entries.pop_front() else {
            return;
        };
        self.sent = self.sent.saturating_sub(1);
        self.dropped_total += 1;
        let t = old.event.time;
        self.unreported = Some(match self.unreported {
            None => (1, t, t),
            Some((n, first, _)) => (n + 1, first, t),
        });
    }

    /// The next event to send on the current stream, marked as carried by
    /// `seq`. Ids are given on first send, so they increase in delivery
    /// order; a pending drop report goes right after what was sent before.
    pub fn next_unsent(&mut self, seq: u64) -> Option<&Entry> {
        let before_new = self.entries.get(self.sent).is_none_or(|e| e.id.is_none());
        if before_new && let Some((count, first, last)) = self.unreported.take() {
            // May hold the buffer one over capacity until acked.
            let report = HostEvent {
                time: SystemTime::now(),
                kind: EventKind::Dropped { count, first, last },
            };
            self.entries.insert(
                self.sent,
                Entry {
                    id: None,
                    event: report,
                    sent_seq: None,
                },
            );
        }
        let entry = self.entries.get_mut(self.sent)?;
        if entry.id.is_none() {
            entry.id = Some(self.next_id);
            self.next_id += 1;
        }
        entry.sent_seq = Some(seq);
        self.sent += 1;
        self.entries.get(self.sent - 1)
    }

    pub fn has_unsent(&self) -> bool {
        self.unreported.is_some() || self.sent < self.entries.len()
    }

    /// The collector stored everything up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        while let Some(front) = self.entries.front() {
            match front.sent_seq {
                Some(s) if s <= seq => {
                    self.entries.pop_front();
                    self.sent = self.sent.saturating_sub(1);
                }
                _ => break,
            }
        }
    }

    /// The stream ended: everything unacked is sent again on the next one.
    pub fn rewind(&mut self) {
        for e in &mut self.entries {
            e.sent_seq = None;
        }
        self.sent = 0;
    }

    pub fn unacked(&self) -> usize {
        self.entries.len()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::OperState;

    fn ev(n: u32) -> HostEvent {
        HostEvent {
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(n)),
            kind: EventKind::LinkAdded {
                interface: format!("eth{n}"),
                admin_up: true,
                oper_state: OperState::Up,
            },
        }
    }

    fn name(e: &Entry) -> String {
        match &e.event.kind {
            EventKind::LinkAdded { interface, .. } => interface.clone(),
            EventKind::Dropped { count, .. } => format!("dropped:{count}"),
            other => format!("{other:?}"),
        }
    }

    fn drain(o: &mut Outbox, seq: &mut u64) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while o.has_unsent() {
            *seq += 1;
            let e = o.next_unsent(*seq).expect("unsent entry");
            out.push((e.id(), name(e)));
        }
        out
    }

    #[test]
    fn acked_events_leave_unacked_are_resent_with_the_same_id() {
        let mut o = Outbox::new(10);
        let mut seq = 0;
        for n in 0..3 {
            o.push(ev(n));
        }
        let first = drain(&mut o, &mut seq);
        assert_eq!(first.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
        o.ack(seq - 1); // the last one's ack was lost
        o.rewind();
        let again = drain(&mut o, &mut seq);
        assert_eq!(again, vec![(3, "eth2".to_string())]);
        o.ack(seq);
        assert_eq!(o.unacked(), 0);
        assert!(!o.has_unsent());
    }

    #[test]
    fn overflow_drops_oldest_counts_and_reports_first() {
        let mut o = Outbox::new(3);
        for n in 0..5 {
            o.push(ev(n));
        }
        assert_eq!(o.dropped_total(), 2);
        let mut seq = 0;
        let sent = drain(&mut o, &mut seq);
        assert_eq!(sent[0].1, "dropped:2");
        let names: Vec<&str> = sent.iter().map(|e| e.1.as_str()).collect();
        assert!(names.ends_with(&["eth3", "eth4"]), "{names:?}");
        let ids: Vec<u64> = sent.iter().map(|e| e.0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
        // The drop report may hold the buffer one over capacity.
        assert!(o.unacked() <= 4);
    }

    #[test]
    fn overflow_after_a_lost_stream_keeps_ids_in_delivery_order() {
        let mut o = Outbox::new(3);
        let mut seq = 0;
        o.push(ev(0));
        o.push(ev(1));
        let first = drain(&mut o, &mut seq);
        o.rewind(); // stream lost before any ack
        for n in 2..6 {
            o.push(ev(n));
        }
        let second = drain(&mut o, &mut seq);
        let ids: Vec<u64> = second.iter().map(|e| e.0).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids increase: {second:?}"
        );
        assert!(
            second.iter().any(|e| e.1.starts_with("dropped:")),
            "{second:?}"
        );
        // Anything resent keeps the id it had the first time.
        for (id, name) in &second {
            if let Some((first_id, _)) = first.iter().find(|f| &f.1 == name) {
                assert_eq!(id, first_id);
            }
        }
    }

    #[test]
    fn ack_of_unknown_seq_removes_nothing_unsent() {
        let mut o = Outbox::new(4);
        o.push(ev(1));
        o.ack(100);
        assert_eq!(o.unacked(), 1);
    }
}
