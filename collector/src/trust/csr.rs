//! Pure: a node's certificate signing request, checked before the CA signs
//! it. Fuzzed (`fuzz/fuzz_targets/enroll_request.rs`): any bytes give a
//! checked request or a one-line reason, never a panic.

use rcgen::{CertificateSigningRequestParams, SanType};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// A CSR larger than this is refused before it is parsed.
pub const MAX_CSR_BYTES: usize = 8 * 1024;
/// RSA keys shorter than this are weak.
const MIN_RSA_BITS: usize = 2048;

/// A request that may be signed: its signature holds, its key is strong
/// enough and it names exactly `node`.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    pub node: String,
    pub(crate) request: CertificateSigningRequestParams,
}

/// Checks that `der` is a CSR for node `node` (by its single URI SAN
/// `reachmap:node:NAME`) with a strong key and a valid signature.
pub fn check_csr(der: &[u8], node: &str) -> Result<CheckedCsr, String> {
    if der.is_empty() {
        return Err("the CSR is empty".into());
    }
    if der.len() > MAX_CSR_BYTES {
        return Err(format!(
            "the CSR is {} bytes (at most {MAX_CSR_BYTES})",
            der.len()
        ));
    }
    let (rest, parsed) = X509CertificationRequest::from_der(der)
        .map_err(|e| format!("the CSR is not a PKCS#10 request: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the CSR", rest.len()));
    }
    match parsed.certification_request_info.subject_pki.parsed() {
        Ok(PublicKey::EC(ec)) => {
            let bits = ec.key_size();
            if bits < 256 {
                return Err(format!(
                    "the CSR's key is weak: EC with {bits} bits (at least 256)"
                ));
            }
        }
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "the CSR's key is weak: RSA with {bits} bits (at least {MIN_RSA_BITS})"
                ));
            }
        }
        Ok(PublicKey::Unknown(_)) | Err(_) => {
            // Ed25519 and other keys rcgen knows are judged by rcgen below.
        }
        Ok(_) => return Err("the CSR's key is of a kind not accepted (use ECDSA P-256)".into()),
    }
    let request = CertificateSigningRequestParams::from_der(&der.to_vec().into())
        .map_err(|e| format!("the CSR is not acceptable: {e}"))?;
    let alg = request.public_key.algorithm();
    let accepted = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_RSA_SHA384,
        &rcgen::PKCS_RSA_SHA512,
    ];
    if !accepted.contains(&alg) {
        return Err(format!(
            "the CSR is signed with {alg:?}, which is not accepted"
        ));
    }
    let wanted = reachmap_tls::node_uri(node);
    let uris: Vec<String> = request
        .params
        .subject_alt_names
        .iter()
        .map(|san| match san {
            SanType::URI(u) => u.as_str().to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    match uris.as_slice() {
        [one] if *one == wanted => {}
        [] => return Err(format!("the CSR names no node (expected the URI {wanted})")),
        names => {
            return Err(format!(
                "the CSR asks for {} (expected only {wanted})",
                names.join(", ")
            ));
        }
    }
    if !matches!(
        request.params.is_ca,
        rcgen::IsCa::NoCa | rcgen::IsCa::ExplicitNoCa
    ) {
        return Err("the CSR asks for a CA certificate".into());
    }
    Ok(CheckedCsr {
        node: node.to_string(),
        request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_with(sans: Vec<SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = sans;
        p.serialize_request(&key).expect("csr").der().to_vec()
    }

    fn uri(u: &str) -> SanType {
        SanType::URI(u.to_string().try_into().expect("uri"))
    }

    #[test]
    fn a_node_csr_is_accepted_for_its_own_name_only() {
        let (_, der) = reachmap_tls::csr::node_key_and_csr("db-1").expect("csr");
        assert_eq!(check_csr(&der, "db-1").expect("ok").node, "db-1");
        let e = check_csr(&der, "db-2").expect_err("other name");
        assert_eq!(
            e,
            "the CSR asks for reachmap:node:db-1 (expected only reachmap:node:db-2)"
        );
    }

    #[test]
    fn bad_requests_get_one_line_reasons() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "the CSR is empty"),
            (vec![0u8; MAX_CSR_BYTES + 1], "the CSR is 8193 bytes"),
            (b"garbage".to_vec(), "not a PKCS#10 request"),
            (csr_with(vec![]), "names no node"),
            (
                csr_with(vec![uri("reachmap:node:n1"), uri("reachmap:collector")]),
                "expected only reachmap:node:n1",
            ),
            (
                csr_with(vec![SanType::DnsName("n1".try_into().expect("dns"))]),
                "expected only reachmap:node:n1",
            ),
        ];
        for (der, want) in cases {
            let e = check_csr(&der, "n1").expect_err(want);
            assert!(e.contains(want), "{e:?} does not say {want:?}");
            assert!(!e.contains('\n'), "{e:?}");
        }
        // A flipped bit in the signature.
        let (_, mut der) = reachmap_tls::csr::node_key_and_csr("n1").expect("csr");
        let last = der.len() - 1;
        der[last] ^= 1;
        assert!(check_csr(&der, "n1").is_err());
    }

    #[test]
    fn a_weak_rsa_key_is_refused() {
        // An RSA-1024 CSR made once with `openssl req -newkey rsa:1024`.
        let pem = include_str!("../../tests/fixtures/csr-rsa1024.pem");
        let der = ::pem::parse(pem).expect("pem").into_contents();
        let e = check_csr(&der, "n1").expect_err("weak");
        assert_eq!(
            e,
            "the CSR's key is weak: RSA with 1024 bits (at least 2048)"
        );
    }
}
