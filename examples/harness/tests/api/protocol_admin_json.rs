//! The admin API examples of docs/protocol.md (blocks labelled `admin:TYPE`)
//! parse into the harness's types and serialise back to the same JSON.

use rdrunner_harness::admin_api::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const PROTOCOL: &str = include_str!("../../../../docs/protocol.md");

fn admin_blocks(md: &str) -> Vec<(String, String, usize)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String, usize)> = None;
    for (i, line) in md.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(label) = trimmed.strip_prefix("```json admin:") {
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
    blocks
}

fn round_trip<T: DeserializeOwned + Serialize>(label: &str, line: usize, text: &str) {
    let original: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("docs/protocol.md:{line} ({label}) is not JSON: {e}"));
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("docs/protocol.md:{line} does not parse as {label}: {e}"));
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        original,
        "docs/protocol.md:{line} ({label}) does not serialise back to the same JSON"
    );
}

#[test]
fn every_admin_example_round_trips() {
    let blocks = admin_blocks(PROTOCOL);
    for (label, text, line) in &blocks {
        match label.as_str() {
            "CreateRunner" => round_trip::<CreateRunner>(label, *line, text),
            "RunnerCredentials" => round_trip::<RunnerCredentials>(label, *line, text),
            "RunnerInfo" => round_trip::<RunnerInfo>(label, *line, text),
            "ProjectAssignment" => round_trip::<ProjectAssignment>(label, *line, text),
            "SubmitExecution" => round_trip::<SubmitExecution>(label, *line, text),
            "ExecutionStatus" => round_trip::<ExecutionStatus>(label, *line, text),
            "OutputPage" => round_trip::<OutputPage>(label, *line, text),
            "RunnerObservation" => round_trip::<RunnerObservation>(label, *line, text),
            "PingStatus" => round_trip::<PingStatus>(label, *line, text),
            other => panic!("docs/protocol.md:{line}: unknown admin block label `{other}`"),
        }
    }
    assert!(blocks.len() >= 9, "admin examples found: {}", blocks.len());
}
