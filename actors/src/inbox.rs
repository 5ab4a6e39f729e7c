//! The registry's inbox: a named store the runtime owns, so that work handed
//! to the registry (claimed operations, cancels, finished operations) waits
//! there while no registry instance is alive and survives a registry that
//! dies mid-command.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::executor::AbortReason;
use crate::model::Operation;

/// A queue that outlives the actor reading it: producers push without
/// waiting; the current reader drains it when notified.
pub struct Mailbox<T> {
    queue: Mutex<VecDeque<T>>,
    notify: Notify,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
        }
    }
}

impl<T> Mailbox<T> {
    pub fn push(&self, item: T) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(item);
        self.notify.notify_one();
    }

    /// The oldest item, left in place until [`Mailbox::pop`]: a reader
    /// that dies while handling it leaves it for the next reader.
    pub fn front(&self) -> Option<T>
    where
        T: Clone,
    {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .cloned()
    }

    pub fn pop(&self) -> Option<T> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Waits until something was pushed since the last wait.
    pub async fn wait(&self) {
        self.notify.notified().await
    }
}

/// What the registry is asked to do. Handling a command twice changes
/// nothing the second time (the table refuses a second start), so a
/// registry that died mid-command can safely be handed it again.
#[derive(Debug, Clone)]
pub enum RegistryCommand {
    /// The Poller claimed this operation.
    Claimed(Box<Operation>),
    /// The control plane cancelled this operation.
    Cancel(String),
    /// An operation ended: a slot may be free.
    Finished(String),
    /// Abort everything (drain deadline or second signal).
    AbortAll(AbortReason),
}

/// The registry's inbox.
pub type RegistryInbox = Mailbox<RegistryCommand>;
