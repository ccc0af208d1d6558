//! A failed TLS handshake, said so a user can act on it: rustls and webpki name what is wrong
//! with a certificate in their own terms (`UnsupportedCertVersion`, `CaUsedAsEndEntity`); the
//! certificates people make with `openssl` hit those most, and the fix is in how they are made.
//! Read by both TLS sides: a child's close line (`child::tls_session`) and `forkecho ping
//! --tls` (`ping::link`).

/// What went wrong, in words, and how to make the certificate instead, where the error is one
/// of those; then rustls' own text, in parentheses. Other errors are rustls' text alone.
pub fn explain(err: &rustls::Error) -> String {
    let text = err.to_string();
    // webpki's error is inside rustls' `Other`, not a type this crate names: its name is what
    // the text carries.
    let known = KNOWN.iter().find(|(name, _)| text.contains(name));
    match known {
        Some((_, words)) => format!("{words} ({text})"),
        None => text,
    }
}

/// webpki's names, and what each means to whoever made the certificate.
const KNOWN: [(&str, &str); 4] = [
    (
        "UnsupportedCertVersion",
        "the certificate is X.509 version 1 (as `openssl x509 -req` makes it without -extfile); \
         rustls takes version 3 only: sign it again with extensions (basicConstraints=CA:FALSE, \
         keyUsage, and extendedKeyUsage clientAuth or serverAuth)",
    ),
    (
        "CaUsedAsEndEntity",
        "the certificate is a CA's (basicConstraints CA:TRUE, as `openssl req -x509` makes it) \
         used as the end certificate: make one with CA:FALSE and have the CA sign it",
    ),
    (
        "EndEntityUsedAsCa",
        "a certificate that is no CA's (CA:FALSE, or no basicConstraints) signed another: trust, \
         or sign with, a CA certificate (CA:TRUE)",
    ),
    (
        "UnknownIssuer",
        "the certificate is signed by a CA not trusted here: pass that CA (--tls-ca for ping, \
         --tls-client-ca for the server)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{CertificateError, Error, OtherError};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Webpki(&'static str);
    impl std::fmt::Display for Webpki {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Webpki {}

    #[test]
    fn the_certificate_errors_people_meet_are_said_in_words() {
        let other = |name| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Webpki(name)))))
        };
        let v1 = explain(&other("UnsupportedCertVersion"));
        assert!(v1.starts_with("the certificate is X.509 version 1"), "{v1}");
        // rustls' own text stays, after the words.
        assert!(v1.contains("(invalid peer certificate: "), "{v1}");
        let ca = explain(&other("CaUsedAsEndEntity"));
        assert!(
            ca.contains("CA:TRUE") && ca.contains("CaUsedAsEndEntity"),
            "{ca}"
        );
        let plain = explain(&Error::General("something else".into()));
        assert_eq!(plain, "unexpected error: something else");
    }
}
