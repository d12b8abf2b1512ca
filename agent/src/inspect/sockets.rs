//! Sockets inspector: netlink sock_diag dumps plus /proc fd inode maps.
