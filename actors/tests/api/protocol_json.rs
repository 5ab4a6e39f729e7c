//! The JSON examples of docs/protocol.md against the data model: every
//! fenced block labelled with a model type parses into that type and
//! serialises back to the same JSON (so the document and the code agree).

use rdrunner_actors::model::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const PROTOCOL: &str = include_str!("../../../docs/protocol.md");

/// Fenced blocks opened with "```json LABEL", as (label, body, line).
fn labelled_blocks(md: &str) -> Vec<(String, String, usize)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String, usize)> = None;
    for (i, line) in md.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(label) = trimmed.strip_prefix("```json ") {
                    open = Some((label.trim().to_owned(), String::new(), i + 1));
                }
            }
            Some(_) if trimmed.starts_with("```") => blocks.push(open.take().unwrap()),
            Some((_, body, _)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(open.is_none(), "an unclosed json block in docs/protocol.md");
    blocks
}

fn round_trip<T: DeserializeOwned + Serialize>(label: &str, line: usize, text: &str) {
    let original: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("docs/protocol.md:{line} ({label}) is not JSON: {e}"));
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("docs/protocol.md:{line} does not parse as {label}: {e}"));
    let again = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        again, original,
        "docs/protocol.md:{line} ({label}) does not serialise back to the same JSON"
    );
}

#[test]
fn every_model_example_round_trips() {
    let mut checked = Vec::new();
    for (label, text, line) in labelled_blocks(PROTOCOL) {
        if label.starts_with("admin:") {
            continue; // checked by the harness's own test
        }
        match label.as_str() {
            "ErrorBody" => round_trip::<ErrorBody>(&label, line, &text),
            "StartupRequest" => round_trip::<StartupRequest>(&label, line, &text),
            "StartupResponse" => round_trip::<StartupResponse>(&label, line, &text),
            "CheckinRequest" => round_trip::<CheckinRequest>(&label, line, &text),
            "CheckinResponse" => round_trip::<CheckinResponse>(&label, line, &text),
            "ClaimRequest" => round_trip::<ClaimRequest>(&label, line, &text),
            "ClaimResponse" => round_trip::<ClaimResponse>(&label, line, &text),
            "ReportsRequest" => round_trip::<ReportsRequest>(&label, line, &text),
            "ReportsResponse" => round_trip::<ReportsResponse>(&label, line, &text),
            "ShutdownRequest" => round_trip::<ShutdownRequest>(&label, line, &text),
            "ResumeRequest" => round_trip::<ResumeRequest>(&label, line, &text),
            "ResumeResponse" => round_trip::<ResumeResponse>(&label, line, &text),
            "Report" => round_trip::<Report>(&label, line, &text),
            "Operation" => round_trip::<Operation>(&label, line, &text),
            "Node" => round_trip::<Node>(&label, line, &text),
            other => panic!("docs/protocol.md:{line}: unknown block label `{other}`"),
        }
        checked.push(label);
    }
    for must in [
        "StartupRequest",
        "StartupResponse",
        "CheckinRequest",
        "CheckinResponse",
        "ClaimRequest",
        "ReportsRequest",
        "ReportsResponse",
        "ShutdownRequest",
        "ResumeRequest",
        "ResumeResponse",
        "Operation",
        "Report",
        "ErrorBody",
    ] {
        assert!(
            checked.iter().any(|l| l == must),
            "no {must} example in docs/protocol.md"
        );
    }
}

#[test]
fn reports_of_every_kind_parse_with_their_fields() {
    let blocks = labelled_blocks(PROTOCOL);
    let (_, text, _) = blocks.iter().find(|b| b.0 == "ReportsRequest").unwrap();
    let req: ReportsRequest = serde_json::from_str(text).unwrap();
    assert_eq!(req.reports.len(), 4);
    assert!(matches!(&req.reports[1].body, ReportBody::Log(l) if l.stream == Stream::Stdout));
    assert!(matches!(&req.reports[2].body, ReportBody::Node(n) if n.exit_code == Some(0)));
    assert!(req.reports[3].is_terminal());
    let (_, text, _) = blocks.iter().find(|b| b.0 == "Operation").unwrap();
    let op: Operation = serde_json::from_str(text).unwrap();
    assert_eq!(op.steps.len(), 3);
    assert_eq!(op.secure_values(), vec!["s3cret".to_string()]);
    assert_eq!(
        op.nodes[0].attribute("ssh-key-storage-path").as_deref(),
        Some("keys/deploy")
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let req: ClaimRequest =
        serde_json::from_str(r#"{"replicaId": "r", "futureField": [1, 2]}"#).unwrap();
    assert_eq!(req.replica_id, "r");
}
