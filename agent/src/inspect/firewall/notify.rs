//! nftables change notifications.
//!
//! The kernel multicasts every committed nftables transaction on
//! NETLINK_NETFILTER group NFNLGRP_NFTABLES: one message per changed object,
//! then NFT_MSG_NEWGEN with the new generation id and the pid and command
//! name of the process that committed it. `parse_nft_notification` is the
//! pure parser of one received datagram; `NftMonitor` is the socket.
//! iptables-nft commits through the same path, so its changes show up too;
//! iptables-legacy does not (see `reader::LegacyPoller`).

use super::FirewallError;
use netlink_sys::{Socket, SocketAddr};
use serde::Serialize;
use std::collections::BTreeSet;
use tokio::io::unix::AsyncFd;

const NETLINK_NETFILTER: isize = 12;
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
// enum nf_tables_msg_types in linux/netfilter/nf_tables.h: NEWGEN follows
// DELSETELEM (14), so it is 15 and GETGEN 16, as the captured bytes show.
const NFT_MSG_NEWGEN: u8 = 15;
const NFT_MSG_GETGEN: u8 = 16;
const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_DELCHAIN: u8 = 5;
const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_DELRULE: u8 = 8;
const NFTA_GEN_ID: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;
const NLMSG_HDR_LEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 1;
/// NLA_F_NESTED | NLA_F_NET_BYTEORDER.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// One committed nftables transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RulesetChange {
    pub generation: u32,
    /// The process that committed it (kernels before 5.3 do not say).
    pub pid: Option<u32>,
    /// Its command name (`comm`, at most 15 bytes), e.g. `nft`, `iptables-nft`.
    pub command: Option<String>,
}

/// What a transaction (or several) changed, as far as its messages say.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Touched {
    /// Not known (notifications were lost): everything may have changed.
    #[default]
    Everything,
    Parts(BTreeSet<Part>),
}

/// A part of the ruleset that can be read again on its own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// Rules of one chain, or the chain itself, changed.
    Chain {
        family: u8,
        table: String,
        chain: String,
    },
    /// Anything else in the table: the table itself, sets, elements,
    /// objects, flowtables.
    Table { family: u8, table: String },
}

impl Touched {
    pub fn none() -> Self {
        Touched::Parts(BTreeSet::new())
    }

    /// Adds what one object message changed.
    pub fn add(&mut self, family: u8, table: Option<&str>, chain: Option<&str>) {
        let Touched::Parts(parts) = self else { return };
        let Some(table) = table else {
            *self = Touched::Everything;
            return;
        };
        parts.insert(match chain {
            Some(chain) => Part::Chain {
                family,
                table: table.to_string(),
                chain: chain.to_string(),
            },
            None => Part::Table {
                family,
                table: table.to_string(),
            },
        });
    }

    pub fn merge(&mut self, other: Touched) {
        match (&mut *self, other) {
            (Touched::Parts(a), Touched::Parts(b)) => a.extend(b),
            _ => *self = Touched::Everything,
        }
    }
}

/// One committed transaction and what it touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub change: RulesetChange,
    pub touched: Touched,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notification {
    /// The end of a transaction: the ruleset is now at this generation.
    NewGeneration(RulesetChange),
    /// An object changed within a transaction whose NEWGEN follows: its
    /// family (`nfgenmsg`'s, an NFPROTO_* value), the table it is in and,
    /// for a rule or a chain, the chain.
    Object {
        msg_type: u8,
        name: &'static str,
        family: u8,
        table: Option<String>,
        chain: Option<String>,
    },
    /// A netlink error reply (`errno` is positive; 0 is an ack).
    Error { errno: i32 },
    /// The kernel dropped notifications (socket buffer full): re-read.
    Lost,
}

/// All nftables messages in one datagram; messages of other netfilter
/// subsystems are skipped. Lengths are checked before every read, so
/// malformed input is an error value, never a panic or an endless loop.
pub fn parse_nft_notification(bytes: &[u8]) -> Result<Vec<Notification>, FirewallError> {
    let err = |s: String| FirewallError::Notification(s);
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let rest = &bytes[off..];
        if rest.len() < NLMSG_HDR_LEN {
            return Err(err(format!(
                "{} trailing bytes are too short for a message header",
                rest.len()
            )));
        }
        let len = u32_ne(&rest[0..4]) as usize;
        let msg_type = u16_ne(&rest[4..6]);
        if len < NLMSG_HDR_LEN || len > rest.len() {
            return Err(err(format!(
                "message length {len} outside 16..={} bytes left",
                rest.len()
            )));
        }
        let payload = &rest[NLMSG_HDR_LEN..len];
        match msg_type {
            NLMSG_ERROR => {
                if payload.len() < 4 {
                    return Err(err("error message without an error code".into()));
                }
                let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                out.push(Notification::Error {
                    errno: code.saturating_neg(),
                });
            }
            NLMSG_OVERRUN => out.push(Notification::Lost),
            t if t >> 8 == NFNL_SUBSYS_NFTABLES => {
                let msg = (t & 0xff) as u8;
                if msg == NFT_MSG_NEWGEN {
                    out.push(Notification::NewGeneration(parse_newgen(payload)?));
                } else {
                    let (family, table, chain) = parse_object(msg, payload)?;
                    out.push(Notification::Object {
                        msg_type: msg,
                        name: message_name(msg),
                        family,
                        table,
                        chain,
                    });
                }
            }
            _ => {}
        }
        off += align4(len);
    }
    Ok(out)
}

/// The attributes after a message's nfgenmsg header, as (type, value);
/// the lengths checked before every read.
fn attributes(payload: &[u8]) -> Result<Vec<(u16, &[u8])>, &'static str> {
    if payload.len() < NFGENMSG_LEN {
        return Err("no nfgenmsg header");
    }
    let mut out = Vec::new();
    let mut attrs = &payload[NFGENMSG_LEN..];
    while !attrs.is_empty() {
        if attrs.len() < 4 {
            return Err("truncated attribute header");
        }
        let len = usize::from(u16_ne(&attrs[0..2]));
        let ty = u16_ne(&attrs[2..4]) & NLA_TYPE_MASK;
        if len < 4 || len > attrs.len() {
            return Err("attribute length outside the message");
        }
        out.push((ty, &attrs[4..len]));
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    Ok(out)
}

/// A NUL-terminated name.
fn name_text(value: &[u8]) -> String {
    let name = value.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(name).into_owned()
}

/// The family, table and chain an object message names. Every object
/// message carries its table as attribute 1 (NFTA_TABLE_NAME,
/// NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE, ...); a rule names
/// its chain in NFTA_RULE_CHAIN (2), a chain its name in NFTA_CHAIN_NAME (3).
fn parse_object(
    msg: u8,
    payload: &[u8],
) -> Result<(u8, Option<String>, Option<String>), FirewallError> {
    let attrs = attributes(payload)
        .map_err(|s| FirewallError::Notification(format!("{}: {s}", message_name(msg))))?;
    let chain_attr = match msg {
        NFT_MSG_NEWRULE | NFT_MSG_DELRULE => Some(2),
        NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN => Some(3),
        _ => None,
    };
    let (mut table, mut chain) = (None, None);
    for (ty, value) in attrs {
        if ty == 1 {
            table = Some(name_text(value));
        } else if Some(ty) == chain_attr {
            chain = Some(name_text(value));
        }
    }
    Ok((payload[0], table, chain))
}

fn parse_newgen(payload: &[u8]) -> Result<RulesetChange, FirewallError> {
    let err = |s: &str| FirewallError::Notification(format!("NEWGEN: {s}"));
    let (mut generation, mut pid, mut command) = (None, None, None);
    for (ty, value) in attributes(payload).map_err(err)? {
        match ty {
            NFTA_GEN_ID => {
                generation = Some(be32(value).ok_or_else(|| err("generation is not 4 bytes"))?)
            }
            NFTA_GEN_PROC_PID => pid = Some(be32(value).ok_or_else(|| err("pid is not 4 bytes"))?),
            NFTA_GEN_PROC_NAME => command = Some(name_text(value)),
            _ => {}
        }
    }
    Ok(RulesetChange {
        generation: generation.ok_or_else(|| err("no NFTA_GEN_ID"))?,
        pid,
        command,
    })
}

fn message_name(msg: u8) -> &'static str {
    match msg {
        0 => "newtable",
        2 => "deltable",
        3 => "newchain",
        5 => "delchain",
        6 => "newrule",
        8 => "delrule",
        9 => "newset",
        11 => "delset",
        12 => "newsetelem",
        14 => "delsetelem",
        18 => "newobj",
        20 => "delobj",
        22 => "newflowtable",
        24 => "delflowtable",
        _ => "other",
    }
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn u16_ne(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

fn u32_ne(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

const RECV_BUF: usize = 256 * 1024;

/// A NETLINK_NETFILTER socket in group NFNLGRP_NFTABLES of the calling
/// thread's network namespace. Needs CAP_NET_ADMIN; must be opened inside a
/// tokio runtime.
pub struct NftMonitor {
    socket: AsyncFd<Socket>,
    buf: Vec<u8>,
    /// What the transaction being received has touched so far.
    touched: Touched,
}

impl NftMonitor {
    pub fn open() -> Result<Self, FirewallError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        socket.add_membership(NFNLGRP_NFTABLES)?;
        // A big transaction sends one message per object; give bursts room.
        // Failing to grow the buffer only makes `Lost` likelier.
        let _ = socket.set_rx_buf_sz(4 * 1024 * 1024);
        socket.set_non_blocking(true)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(FirewallError::Notification(
                "the monitor needs a tokio runtime".into(),
            ));
        }
        // `new` is deprecated because a caller could close the fd behind the
        // reactor's back; here the AsyncFd owns the Socket (and so the fd)
        // for its whole life, which is the contract `register` asks for.
        #[allow(deprecated)]
        let socket = AsyncFd::new(socket)?;
        Ok(NftMonitor {
            socket,
            buf: Vec::with_capacity(RECV_BUF),
            touched: Touched::none(),
        })
    }

    /// The next datagram, as the kernel sent it (for fixtures and debugging).
    /// An overrun (ENOBUFS) is returned as an empty datagram.
    pub async fn recv_raw(&mut self) -> Result<Vec<u8>, FirewallError> {
        loop {
            let mut guard = self.socket.readable().await?;
            self.buf.clear();
            let buf = &mut self.buf;
            match guard.try_io(|s| s.get_ref().recv(buf, 0)) {
                Ok(Ok(_)) => return Ok(self.buf.clone()),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Vec::new()),
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        }
    }

    /// The notifications of the next datagram; `[Lost]` after an overrun.
    pub async fn recv(&mut self) -> Result<Vec<Notification>, FirewallError> {
        let raw = self.recv_raw().await?;
        if raw.is_empty() {
            return Ok(vec![Notification::Lost]);
        }
        parse_nft_notification(&raw)
    }

    /// Waits for the end of the next transaction, with what its object
    /// messages touched. After an overrun the generation and the parts are
    /// unknown: the change is reported with generation 0, no process, and
    /// everything touched.
    pub async fn next_change(&mut self) -> Result<Transaction, FirewallError> {
        loop {
            for n in self.recv().await? {
                match n {
                    Notification::Object {
                        family,
                        table,
                        chain,
                        ..
                    } => self.touched.add(family, table.as_deref(), chain.as_deref()),
                    Notification::NewGeneration(change) => {
                        let touched = std::mem::replace(&mut self.touched, Touched::none());
                        return Ok(Transaction { change, touched });
                    }
                    Notification::Lost => {
                        self.touched = Touched::none();
                        return Ok(Transaction {
                            change: RulesetChange {
                                generation: 0,
                                pid: None,
                                command: None,
                            },
                            touched: Touched::Everything,
                        });
                    }
                    Notification::Error { .. } => {}
                }
            }
        }
    }
}

/// The current nftables generation (NFT_MSG_GETGEN), blocking. Two equal
/// answers around a read of the ruleset mean the read is of that generation.
pub fn current_generation() -> Result<u32, FirewallError> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut req = Vec::with_capacity(NLMSG_HDR_LEN + NFGENMSG_LEN);
    let msg_type = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(NFT_MSG_GETGEN);
    req.extend_from_slice(&((NLMSG_HDR_LEN + NFGENMSG_LEN) as u32).to_ne_bytes());
    req.extend_from_slice(&msg_type.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(&[0, 0, 0, 0]); // nfgenmsg: AF_UNSPEC, v0, res_id 0
    socket.send(&req, 0)?;
    let mut buf = Vec::with_capacity(8192);
    socket.recv(&mut buf, 0)?;
    for n in parse_nft_notification(&buf)? {
        match n {
            Notification::NewGeneration(c) => return Ok(c.generation),
            Notification::Error { errno } if errno != 0 => {
                return Err(FirewallError::Socket(std::io::Error::from_raw_os_error(
                    errno,
                )));
            }
            _ => {}
        }
    }
    Err(FirewallError::Notification(
        "GETGEN: the reply carried no generation".into(),
    ))
}
