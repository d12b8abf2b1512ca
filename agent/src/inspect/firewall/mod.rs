//! Firewall inspector: nftables JSON, iptables-save text, change notifications.
//!
//! - `nft::parse_nft_json` and `iptables::parse_iptables_save` are pure
//!   parsers into the one model of `facts::firewall`.
//! - `reader::read_ruleset` runs the tools and merges what they report.
//! - `notify` watches the nftables netlink group: every committed transaction
//!   ends with a NEWGEN message naming the generation, pid and command.
//! - iptables-legacy has no notification; `reader::LegacyPoller` compares a
//!   content hash of `iptables-legacy-save` instead.

pub mod iptables;
pub mod nft;
pub mod notify;
pub mod reader;

pub use iptables::parse_iptables_save;
pub use nft::parse_nft_json;
pub use notify::{
    NftMonitor, Notification, Part, RulesetChange, Touched, Transaction, parse_nft_notification,
};
pub use reader::{LegacyPoller, ReadOptions, content_hash, read_ruleset, read_touched};

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("nft JSON: {0}")]
    Json(String),
    #[error("nft JSON: {0}")]
    NftDocument(String),
    #[error("iptables-save line {line}: {reason}")]
    IptablesSave { line: usize, reason: String },
    #[error("nftables notification: {0}")]
    Notification(String),
    #[error("running {program}: {reason}")]
    Command { program: String, reason: String },
    #[error("nftables netlink socket: {0}")]
    Socket(#[from] std::io::Error),
}
