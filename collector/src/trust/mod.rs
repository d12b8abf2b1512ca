//! Trust: the collector's certificate authority and the certificates it
//! issues. See `ca` for the files under the data directory and the pin.

pub mod ca;

pub use ca::{
    Authority, COLLECTOR_ROLE_URI, Made, TrustError, cert_facts, is_server_name, pin_of_der,
    read_pin,
};
