//! TLS as every child serves it: made once by the parent at startup (`setup::tls`: the
//! certificates, the rustls configuration), read by each child after fork (`child::tls`: the
//! handshake, then the echo through the session). Nothing here changes after startup; each child
//! gets the configuration by inheritance, and with it the keys, without reading a file.

use std::sync::Arc;

/// What `--tls` and its options set up, for every connection.
#[derive(Debug)]
pub struct Tls {
    /// Certificates, versions, ALPN and client verification: the rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// `--tls-fault stall-handshake` or `reset-in-handshake`: no handshake is done at all.
    pub handshake_fault: Option<HandshakeFault>,
}

/// A handshake broken on purpose (`--tls-fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFault {
    /// Accept, then say nothing: the client waits until the idle timeout (or its own) ends it.
    Stall,
    /// Read the ClientHello, then reset the connection.
    Reset,
}

/// The crypto provider every TLS side uses: ring's.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
