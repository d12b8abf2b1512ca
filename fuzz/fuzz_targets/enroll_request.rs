//! An enrolment request as anyone on the network may send it: protobuf
//! decoding, then the CSR check the collector runs before its CA signs
//! anything (size, PKCS#10 structure and signature, key strength, the one
//! node URI), for the name the request asks for. Also the certificate
//! reader every TLS peer's certificate goes through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use reachmap_proto::v1::EnrollRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = EnrollRequest::decode(data) {
        let node = if req.node.is_empty() { "n1" } else { req.node.as_str() };
        if let Ok(checked) = reachmap_collector::trust::csr::check_csr(&req.csr_der, node) {
            assert_eq!(checked.node, node);
        }
    }
    let _ = reachmap_collector::trust::csr::check_csr(data, "n1");
    if let Ok(info) = reachmap_tls::cert_info(data) {
        let _ = info.identity();
    }
});
