//! PEM in and out: certificates and private keys as rustls takes them.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A DER certificate.
pub type CertDer = CertificateDer<'static>;

/// Every certificate in `pem`, in order; an error when there is none.
pub fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("unreadable PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// The first private key in `pem` (PKCS#8, SEC1 or PKCS#1).
pub fn key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in it".to_string(),
        e => format!("unreadable PEM private key: {e}"),
    })
}

/// A DER certificate as PEM.
pub fn cert_pem(der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new("CERTIFICATE", der),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_certificates() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["x.example".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = cert.der().to_vec();
        let pem = cert_pem(&der);
        assert_eq!(pem, cert.pem().replace("\r\n", "\n"));
        let back = certs(&pem).expect("certs");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].as_ref(), der.as_slice());
        assert!(key_of(&key.serialize_pem()).is_ok());
        assert_eq!(
            certs("nothing").expect_err("no cert"),
            "no PEM certificate in it"
        );
        assert_eq!(
            super::key("nothing").expect_err("no key"),
            "no PEM private key in it"
        );
    }

    fn key_of(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
        super::key(pem)
    }
}
