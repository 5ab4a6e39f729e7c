//! The whole system end to end, one test binary: the `rdrunner` binary in a
//! working directory of its own against the reference control plane and a
//! private sshd (`dispatch`, `abort`, `secure`, `restart`, `metrics`, and
//! `fleet`: status, ping and the control plane's metrics, on the shared setup in
//! `support`), the same binary against a hostile control plane (`hostile`),
//! the demo and the embedding example run as tests (`demo`, `embed`), and
//! the Runner Management page in headless chromium (`browser`).

mod support;

mod abort;
mod browser;
mod demo;
mod dispatch;
mod embed;
mod fleet;
mod hostile;
mod metrics;
mod restart;
mod secure;
