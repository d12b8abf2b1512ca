//! The host's firewall ruleset, normalised into one model whether it comes
//! from nftables or iptables.
