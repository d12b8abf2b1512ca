//! Why an HTTPS probe's handshake failed, as the agent reported it: kept on
//! the cell so `why` can say "the certificate expired …".

/// The kind of TLS failure (`TlsErrorKind` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsKind {
    Expired,
    NotYetValid,
    WrongName,
    UnknownIssuer,
    Revoked,
    BadCertificate,
    Handshake,
}

impl TlsKind {
    pub const ALL: [TlsKind; 7] = [
        TlsKind::Expired,
        TlsKind::NotYetValid,
        TlsKind::WrongName,
        TlsKind::UnknownIssuer,
        TlsKind::Revoked,
        TlsKind::BadCertificate,
        TlsKind::Handshake,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsKind::Expired => "expired",
            TlsKind::NotYetValid => "not_yet_valid",
            TlsKind::WrongName => "wrong_name",
            TlsKind::UnknownIssuer => "unknown_issuer",
            TlsKind::Revoked => "revoked",
            TlsKind::BadCertificate => "bad_certificate",
            TlsKind::Handshake => "handshake",
        }
    }

    pub fn parse(s: &str) -> Option<TlsKind> {
        TlsKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A TLS failure: its kind and the agent's words for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsNote {
    pub kind: TlsKind,
    pub detail: Box<str>,
}
