//! What the stream sends, and how it is encoded.
//!
//! A message that carries a whole firewall ruleset (a snapshot, or a delta
//! whose change was too large for a patch) keeps the ruleset as the agent's
//! own shared model, and the encoder writes it into the stream's buffer one
//! chain at a time. 20,000 rules are 3.4 MB on the wire but some 8 MB as
//! protocol structs; built whole for every snapshot, those structs were freed
//! into the allocator's arenas and never went back to the kernel. Here the
//! largest struct that exists at once is one chain's.
//!
//! Protobuf lets a message's fields come in any order and repeated fields be
//! interleaved with others, so the firewall goes after the rest of the
//! snapshot (or delta), and each table's chains after its other fields; the
//! collector decodes the same message either way (tested below).

use super::firewall::{chain, firewall, firewall_head, table_head};
use crate::facts::firewall::Ruleset;
use prost::Message;
use prost::bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use reachmap_proto::v1 as pb;
use reachmap_proto::v1::agent_message::Body;
use std::sync::Arc;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};

/// `AgentMessage.seq`, `.snapshot` and `.delta`.
const SEQ_TAG: u32 = 1;
const SNAPSHOT_TAG: u32 = 11;
const DELTA_TAG: u32 = 12;
/// `Snapshot.firewall` and `Delta.firewall`.
const SNAPSHOT_FIREWALL_TAG: u32 = 6;
const DELTA_FIREWALL_TAG: u32 = 11;
/// `Firewall.tables` and `FirewallTable.chains`.
const TABLES_TAG: u32 = 4;
const CHAINS_TAG: u32 = 3;

/// A message body waiting to be sent. `firewall`, when set, is the whole
/// ruleset of a snapshot or delta `body`, whose own `firewall` is empty.
#[derive(Clone, Debug)]
pub struct Outbound {
    pub body: Body,
    pub firewall: Option<Arc<Ruleset>>,
}

impl From<Body> for Outbound {
    fn from(body: Body) -> Self {
        Outbound {
            body,
            firewall: None,
        }
    }
}

impl Outbound {
    /// The message to send as number `seq`.
    pub fn numbered(self, seq: u64) -> Outgoing {
        Outgoing {
            message: pb::AgentMessage {
                seq,
                body: Some(self.body),
            },
            firewall: self.firewall,
        }
    }
}

/// A message on the agent's stream. `firewall`, when set, is the whole
/// ruleset of the snapshot or delta in `message`.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub message: pb::AgentMessage,
    pub firewall: Option<Arc<Ruleset>>,
}

impl Outgoing {
    /// The message as protocol structs, firewall included: what the encoder's
    /// bytes decode to.
    pub fn into_message(self) -> pb::AgentMessage {
        let mut message = self.message;
        if let Some(r) = &self.firewall {
            match &mut message.body {
                Some(Body::Snapshot(s)) => s.firewall = Some(firewall(r)),
                Some(Body::Delta(d)) => d.firewall = Some(firewall(r)),
                _ => {}
            }
        }
        message
    }

    /// The tag of the message's body, that body's encoded length without the
    /// ruleset, and the tag of the body's firewall field; `None` when there is
    /// no ruleset to write.
    fn split(&self) -> Option<(u32, usize, u32, &Ruleset)> {
        let r = self.firewall.as_deref()?;
        match &self.message.body {
            Some(Body::Snapshot(s)) => {
                Some((SNAPSHOT_TAG, s.encoded_len(), SNAPSHOT_FIREWALL_TAG, r))
            }
            Some(Body::Delta(d)) => Some((DELTA_TAG, d.encoded_len(), DELTA_FIREWALL_TAG, r)),
            _ => None,
        }
    }

    /// Encodes the message as `AgentMessage` bytes; `layout` is the
    /// ruleset's, from `encoded_len`.
    fn encode(&self, layout: Option<&Layout>, buf: &mut impl BufMut) {
        let (Some((tag, head_len, fw_tag, ruleset)), Some(layout)) = (self.split(), layout) else {
            self.message.encode_raw(buf);
            return;
        };
        if self.message.seq != 0 {
            encode_key(SEQ_TAG, WireType::Varint, buf);
            encode_varint(self.message.seq, buf);
        }
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint((head_len + delimited_len(fw_tag, layout.len)) as u64, buf);
        match &self.message.body {
            Some(Body::Snapshot(s)) => s.encode_raw(buf),
            Some(Body::Delta(d)) => d.encode_raw(buf),
            _ => {}
        }
        encode_key(fw_tag, WireType::LengthDelimited, buf);
        encode_varint(layout.len as u64, buf);
        layout.write(ruleset, buf);
    }

    /// The length `encode` writes, and the ruleset's layout it needs, worked
    /// out without building the ruleset's protocol structs whole.
    fn encoded_len(&self) -> (usize, Option<Layout>) {
        let Some((tag, head_len, fw_tag, ruleset)) = self.split() else {
            return (self.message.encoded_len(), None);
        };
        let layout = Layout::of(ruleset);
        let seq_len = if self.message.seq == 0 {
            0
        } else {
            key_len(SEQ_TAG) + encoded_len_varint(self.message.seq)
        };
        let len = seq_len + delimited_len(tag, head_len + delimited_len(fw_tag, layout.len));
        (len, Some(layout))
    }

    /// The encoded message, as the stream sends it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (len, layout) = self.encoded_len();
        let mut buf = Vec::with_capacity(len);
        self.encode(layout.as_ref(), &mut buf);
        buf
    }
}

/// A length-delimited field of `len` bytes under `tag`.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The encoded lengths of a ruleset's tables and chains, worked out chain by
/// chain, so the writer can put each length before its message.
struct Layout {
    len: usize,
    /// Per table: its encoded length and its chains'.
    tables: Vec<(usize, Vec<usize>)>,
}

impl Layout {
    fn of(r: &Ruleset) -> Layout {
        let mut len = firewall_head(r).encoded_len();
        let tables: Vec<(usize, Vec<usize>)> = r
            .tables
            .iter()
            .map(|t| {
                let chains: Vec<usize> = t.chains.iter().map(|c| chain(c).encoded_len()).collect();
                let table_len = table_head(t).encoded_len()
                    + chains
                        .iter()
                        .map(|&c| delimited_len(CHAINS_TAG, c))
                        .sum::<usize>();
                len += delimited_len(TABLES_TAG, table_len);
                (table_len, chains)
            })
            .collect();
        Layout { len, tables }
    }

    fn write(&self, r: &Ruleset, buf: &mut impl BufMut) {
        firewall_head(r).encode_raw(buf);
        for (t, (table_len, chain_lens)) in r.tables.iter().zip(&self.tables) {
            encode_key(TABLES_TAG, WireType::LengthDelimited, buf);
            encode_varint(*table_len as u64, buf);
            table_head(t).encode_raw(buf);
            for (c, len) in t.chains.iter().zip(chain_lens) {
                encode_key(CHAINS_TAG, WireType::LengthDelimited, buf);
                encode_varint(*len as u64, buf);
                chain(c).encode_raw(buf);
            }
        }
    }
}

/// The agent stream's codec: `Outgoing` out, `CollectorMessage` in.
#[derive(Debug, Default, Clone, Copy)]
pub struct AgentCodec;

impl Codec for AgentCodec {
    type Encode = Outgoing;
    type Decode = pb::CollectorMessage;
    type Encoder = OutgoingEncoder;
    type Decoder = tonic_prost::ProstDecoder<pb::CollectorMessage>;

    fn encoder(&mut self) -> Self::Encoder {
        OutgoingEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

#[derive(Debug)]
pub struct OutgoingEncoder;

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // One allocation of the right size instead of doubling up to it.
        let (len, layout) = item.encoded_len();
        buf.reserve(len);
        item.encode(layout.as_ref(), buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::firewall::{Backend, Family};
    use crate::inspect::firewall::iptables::parse_iptables_save;
    use crate::inspect::firewall::nft::parse_nft_json;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/firewall/");

    /// Rules captured from real hosts: iptables-nft (with Docker's chains)
    /// and a native nftables ruleset with sets, in one reading.
    fn ruleset() -> Arc<Ruleset> {
        let read = |f: &str| std::fs::read_to_string(format!("{DIR}{f}")).expect("fixture");
        let mut tables =
            parse_iptables_save(&read("iptables_nft.txt"), Family::Ip, Backend::IptablesNft)
                .expect("iptables-nft fixture");
        tables.extend(parse_nft_json(&read("nft_ruleset.json")).expect("nft fixture"));
        let mut r = Ruleset {
            tables,
            generation: Some(7),
            ..Default::default()
        };
        r.finish();
        assert!(
            r.tables.iter().any(|t| !t.sets.is_empty()),
            "fixture has sets"
        );
        Arc::new(r)
    }

    fn roundtrip(out: &Outgoing) -> pb::AgentMessage {
        let bytes = out.to_bytes();
        assert_eq!(bytes.len(), out.encoded_len().0, "encoded_len is exact");
        pb::AgentMessage::decode(bytes.as_slice()).expect("decodes")
    }

    #[test]
    fn a_snapshot_written_chain_by_chain_decodes_to_the_whole_message() {
        let r = ruleset();
        let snapshot = pb::Snapshot {
            version: 42,
            host: Some(pb::HostInfo {
                hostname: "web-1".into(),
                ..Default::default()
            }),
            sources: vec![pb::SourceHealth::default()],
            ..Default::default()
        };
        for seq in [0, 1, 300, u64::MAX] {
            let out = Outbound {
                body: Body::Snapshot(snapshot.clone()),
                firewall: Some(r.clone()),
            }
            .numbered(seq);
            let decoded = roundtrip(&out);
            let whole = out.into_message();
            let Some(Body::Snapshot(s)) = &whole.body else {
                panic!("not a snapshot")
            };
            assert!(s.firewall.as_ref().expect("firewall").tables.len() >= 2);
            assert_eq!(decoded, whole);
        }
    }

    #[test]
    fn a_delta_carrying_the_whole_ruleset_decodes_to_the_whole_message() {
        let delta = pb::Delta {
            base_version: 3,
            version: 4,
            routes_replaced: true,
            ..Default::default()
        };
        let out = Outbound {
            body: Body::Delta(delta),
            firewall: Some(ruleset()),
        }
        .numbered(9);
        let decoded = roundtrip(&out);
        assert_eq!(decoded, out.into_message());
    }

    #[test]
    fn an_empty_ruleset_and_other_messages_encode_as_prost_does() {
        let mut empty = Ruleset::default();
        empty.finish();
        let out = Outbound {
            body: Body::Snapshot(pb::Snapshot::default()),
            firewall: Some(Arc::new(empty)),
        }
        .numbered(1);
        assert_eq!(roundtrip(&out), out.clone().into_message());

        let heartbeat = Outbound::from(Body::Heartbeat(pb::Heartbeat {
            unacked_events: 5,
            ..Default::default()
        }))
        .numbered(2);
        assert_eq!(
            heartbeat.to_bytes(),
            heartbeat.clone().into_message().encode_to_vec()
        );
    }
}
