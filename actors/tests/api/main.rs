//! The runtime's public API, one test binary: embedding it as a host does
//! (`embedding`), and the protocol document's JSON against the data model
//! (`protocol_json`).

mod embedding;
mod protocol_json;
