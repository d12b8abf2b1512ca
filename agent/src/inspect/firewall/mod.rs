//! Firewall inspector: nftables JSON, iptables-save text, change notifications.
