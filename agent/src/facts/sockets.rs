//! Sockets: listeners with their bind scope and owning process, and
//! established-connection counts per listening port.
