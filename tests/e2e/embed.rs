//! Runs `examples/embed.rs` (the same code, included) and checks that the
//! custom executor's output came back through the real transport.

#[path = "../../examples/embed.rs"]
mod example;

#[actix_rt::test]
async fn the_embedding_example_runs_a_job_on_its_own_executor() {
    let lines = tokio::time::timeout(std::time::Duration::from_secs(60), example::run())
        .await
        .expect("the example ends within 60 s")
        .expect("the example's job succeeds");
    let mut lines = lines;
    lines.sort();
    assert_eq!(
        lines,
        [
            "thermo-1: thermometer: `read 'thermo-1'` -> 21.5 C",
            "thermo-2: thermometer: `read 'thermo-2'` -> 21.5 C",
            "valve-1: valve: `read 'valve-1'` -> closed",
        ]
    );
}
