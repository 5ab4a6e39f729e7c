//! An SSH session to one node, handshake done: what `connect` makes and
//! host key checking, authentication and the step run use. It sits below
//! all of them so that none of them imports another for it.

use std::os::unix::io::RawFd;

use ssh2::Session;

/// libssh2's error code for a blocking call that ran past `set_timeout`.
pub(crate) const LIBSSH2_ERROR_TIMEOUT: i32 = -9;

/// An SSH session to one node, handshake done, not yet authenticated.
pub(crate) struct Connection {
    pub session: Session,
    /// The socket under the session, for waiting on it in the output loop.
    pub fd: RawFd,
    pub host: String,
    pub port: u16,
    /// `host:port`, for messages.
    pub target: String,
    pub node: String,
}

impl Connection {
    /// Says goodbye politely; the socket closes when the session drops.
    pub fn disconnect(&self) {
        self.session.set_blocking(true);
        let _ = self.session.disconnect(None, "node step finished", None);
    }
}

/// A duration as libssh2's millisecond timeout (0 would mean "none").
pub(crate) fn millis(d: std::time::Duration) -> u32 {
    d.as_millis().clamp(1, u32::MAX as u128) as u32
}
