//! The runtime's public API, one test binary: embedding it as a host does
//! (`embedding`), the protocol document's JSON against the data model
//! (`protocol_json`), and the crate layering on the dependency graph
//! (`layers`).

mod embedding;
mod layers;
mod protocol_json;
