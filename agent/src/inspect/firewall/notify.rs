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
use tokio::io::unix::AsyncFd;

const NETLINK_NETFILTER: isize = 12;
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
// enum nf_tables_msg_types in linux/netfilter/nf_tables.h: NEWGEN follows
// DELSETELEM (14), so it is 15 and GETGEN 16, as the captured bytes show.
const NFT_MSG_NEWGEN: u8 = 15;
const NFT_MSG_GETGEN: u8 = 16;
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notification {
    /// The end of a transaction: the ruleset is now at this generation.
    NewGeneration(RulesetChange),
    /// An object changed within a transaction whose NEWGEN follows.
    Object { msg_type: u8, name: &'static str },
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
                    out.push(Notification::Object {
                        msg_type: msg,
                        name: message_name(msg),
                    });
                }
            }
            _ => {}
        }
        off += align4(len);
    }
    Ok(out)
}

fn parse_newgen(payload: &[u8]) -> Result<RulesetChange, FirewallError> {
    let err = |s: &str| FirewallError::Notification(format!("NEWGEN: {s}"));
    if payload.len() < NFGENMSG_LEN {
        return Err(err("no nfgenmsg header"));
    }
    let mut attrs = &payload[NFGENMSG_LEN..];
    let (mut generation, mut pid, mut command) = (None, None, None);
    while !attrs.is_empty() {
        if attrs.len() < 4 {
            return Err(err("truncated attribute header"));
        }
        let len = usize::from(u16_ne(&attrs[0..2]));
        let ty = u16_ne(&attrs[2..4]) & NLA_TYPE_MASK;
        if len < 4 || len > attrs.len() {
            return Err(err("attribute length outside the message"));
        }
        let value = &attrs[4..len];
        match ty {
            NFTA_GEN_ID => {
                generation = Some(be32(value).ok_or_else(|| err("generation is not 4 bytes"))?)
            }
            NFTA_GEN_PROC_PID => pid = Some(be32(value).ok_or_else(|| err("pid is not 4 bytes"))?),
            NFTA_GEN_PROC_NAME => {
                let name = value.split(|b| *b == 0).next().unwrap_or_default();
                command = Some(String::from_utf8_lossy(name).into_owned());
            }
            _ => {}
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
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

    /// Waits for the end of the next transaction. Object messages are
    /// skipped; after an overrun the generation is unknown, so the change
    /// is reported with generation 0 and no process.
    pub async fn next_change(&mut self) -> Result<RulesetChange, FirewallError> {
        loop {
            for n in self.recv().await? {
                match n {
                    Notification::NewGeneration(c) => return Ok(c),
                    Notification::Lost => {
                        return Ok(RulesetChange {
                            generation: 0,
                            pid: None,
                            command: None,
                        });
                    }
                    _ => {}
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
