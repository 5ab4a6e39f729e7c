//! The wire data model of protocol v1, shared by the runner and the control
//! plane: operations, reports and the bodies of every runner API call.
//!
//! Field names are camelCase on the wire; unknown fields are ignored so that
//! either side can add fields without breaking the other.

mod address;
mod api;
mod error_code;
mod operation;
mod report;
mod tagged;
mod text;
mod time;

pub use address::{printable, Host, NodeAddress, NodeError};
pub use api::*;
pub use error_code::ErrorCode;
pub use operation::*;
pub use report::*;
pub use tagged::string_tagged;
pub use text::{escape_controls, first_control, is_control};
pub use time::{is_rfc3339, parse_rfc3339, rfc3339};
