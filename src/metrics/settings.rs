//! `MetricsSettings`: where the metrics endpoint listens, with its default
//! (off) written once.

use std::net::SocketAddr;

/// The metrics endpoint's settings (`[metrics]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Address and port of `/metrics`, `/health` and `/ready`; `None` (the
    /// default) serves nothing. Plain HTTP: keep it on loopback or a
    /// monitoring network.
    pub listen: Option<SocketAddr>,
}

impl MetricsSettings {
    /// `listen` as the file spells it (empty when off).
    pub fn listen_text(&self) -> String {
        self.listen.map(|a| a.to_string()).unwrap_or_default()
    }
}
