//! Runs the demo's code (`examples/demo.rs`, included) so that what a
//! newcomer runs first keeps working: the job succeeds on every node and
//! the copy step left its file on each.

#[path = "../../examples/demo.rs"]
mod example;

#[actix_rt::test]
async fn the_demo_job_succeeds() {
    let work = tempfile::tempdir().unwrap();
    let ok = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        example::demo(work.path()),
    )
    .await
    .expect("the demo ends within 60 s")
    .expect("the demo runs");
    assert!(ok, "the demo's job did not succeed");
    let copied: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("app-") && n.ends_with(".conf"))
        .collect();
    // This host, plus two SSH nodes when sshd is installed (scripts/test.sh
    // installs it).
    let expected = if std::path::Path::new("/usr/sbin/sshd").is_file() {
        3
    } else {
        1
    };
    assert_eq!(copied.len(), expected, "{copied:?}");
}
