//! What an agent (or anything pretending to be one) sends the collector:
//! protobuf decoding, then the collector's validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use reachmap_proto::v1::AgentMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = AgentMessage::decode(data) {
        let _ = reachmap_collector::validate::any(&msg);
    }
});
