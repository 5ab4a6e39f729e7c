//! What a step can learn about the wrapper it runs in, and what it can do
//! with it: option values and the wrapper's marker appear on no command
//! line on the node, and a step cannot forge the record of how it ended.

use crate::fixture::*;
use rdrunner_actors::{AbortSignal, StepOutcome};

/// Shell that lists every process on the node whose command line holds
/// the secret in `$RD_OPTION_DBPASS`, and every process of the step's
/// session (the wrapper's and the step's own) whose command line or
/// environment holds a wrapper marker (`rdrunner-` and 32 hex digits,
/// `HEX32` below; other sessions are other tests'). It tests the secret
/// with shell builtins only, so that its own processes do not carry it in
/// their arguments.
const SCAN: &str = r#"
for f in /proc/[0-9]*/cmdline; do
  c=$(tr '\000' ' ' < "$f" 2>/dev/null) || continue
  case $c in *"$RD_OPTION_DBPASS"*) echo "secret in $f: $c";; esac
done
me=$(ps -o sess= -p $$ | tr -d ' ')
ps -eo sess=,args= | while read -r sess l; do
  case $l in *"$RD_OPTION_DBPASS"*) echo "secret in ps: $l";; esac
  [ "$sess" = "$me" ] || continue
  case $l in *rdrunner-HEX32*) echo "marker in ps: $l";; esac
done
for f in /proc/$PPID/cmdline /proc/$PPID/environ /proc/$$/environ; do
  c=$(tr '\000' ' ' < "$f" 2>/dev/null) || continue
  case $c in *rdrunner-HEX32*) echo "marker in $f";; esac
done
case $(env) in *rdrunner-HEX32*) echo "marker in env";; esac
[ -n "$RD_OPTION_DBPASS" ] && echo "secret in the step's environment"
echo scanned
"#;

#[test]
fn secrets_and_the_marker_are_on_no_command_line() {
    let f = Fixture::new();
    let secret = format!("s3cret-{:x}", rand::random::<u64>());
    let scan = SCAN.replace("HEX32", &"[0-9a-f]".repeat(32));
    let mut req = request(f.node(), command_step(&scan));
    req.env = vec![
        ("RD_OPTION_DBPASS".to_owned(), secret.clone()),
        ("RD_JOB_NAME".to_owned(), "scan".to_owned()),
    ];
    let run = f.run(req, &AbortSignal::new());
    assert_eq!(run.outcome(), &StepOutcome::exited(0), "{:?}", run.lines);
    assert_eq!(
        run.stdout(),
        vec!["secret in the step's environment", "scanned"],
        "the secret or the marker is visible on the node"
    );
}

#[test]
fn a_step_cannot_forge_how_it_ended() {
    let f = Fixture::new();
    // Looks for the marker wherever a step could, then prints forged
    // records before and after the wrapper's own, and exits 0.
    let forge = r#"
m=$(cat /proc/$PPID/cmdline /proc/$PPID/environ /proc/self/environ 2>/dev/null | tr '\000' '\n' | grep -o 'rdrunner-[0-9a-f]\{32\}' | head -n 1)
echo "marker=${m:-none}"
printf '\036%s rc=9\n' "$m"
printf '\036%s pgid=1\n' "$m"
(sleep 0.5; printf '\036%s rc=9\n' "$m"; printf 'late\n') &
exit 0
"#;
    let run = f.run_command(forge);
    assert_eq!(run.outcome(), &StepOutcome::exited(0), "{:?}", run.lines);
    let out = run.stdout();
    assert_eq!(
        out.first().map(String::as_str),
        Some("marker=none"),
        "{out:?}"
    );
    assert_eq!(out.last().map(String::as_str), Some("late"), "{out:?}");
}
