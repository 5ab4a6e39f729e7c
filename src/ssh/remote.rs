//! The remote side of a node step: the shell wrapper every step runs in, and
//! the filter that takes the wrapper's own records back out of stdout.
//!
//! The command line the node's login shell runs is always [`LAUNCHER`], a
//! fixed line with nothing of the step in it: it reads the step's script
//! (the environment to export, the wrapper's marker, the command) from the
//! channel's stdin, to its end, and runs it. So no option value and no
//! marker is ever in a process's arguments, where `ps` shows them to every
//! user of the node; the step's own command runs with stdin from
//! `/dev/null`. The script is one brace group: cut short on the way, it is
//! a syntax error and nothing of it runs.
//!
//! OpenSSH starts the login shell as a session leader (`setsid`), so its
//! pid is the id of a process group of its own that holds every process of
//! the step: aborting kills that group. The wrapper prints two records on
//! stdout, each a line starting with a per-step random marker: the group id
//! first, then the step's exit code when the step's command ends. The
//! exit-code record is what tells a real exit 0 from a channel the server
//! closed without an exit status (libssh2 reports 0 for both). The marker is
//! in no argument list and is not exported, so the step cannot learn it to
//! forge a record before the real one; a record after the real one is
//! ignored ([`Records`]: the first of each kind counts).

use rdrunner_actors::context::shell_quote;
use rdrunner_actors::ExecutorError;
use rdrunner_actors::ExecutorErrorKind;

/// Record separator: the first byte of every marker, rare in real output.
const MARKER_START: u8 = 0x1e;
/// Longest record payload kept (`pgid=…` / `rc=…`); longer is not ours.
const MAX_RECORD: usize = 64;

/// The command line of every step: reads the step's script from stdin to
/// its end and runs it in the login shell. Fixed, so that it shows nothing.
pub(crate) const LAUNCHER: &str = "s=$(cat) && eval \"$s\"";

/// A fresh marker: the record separator, a tag and 128 random bits in hex.
pub(crate) fn new_marker() -> String {
    let bits: u128 = rand::random();
    format!("{}rdrunner-{bits:032x} ", MARKER_START as char)
}

/// Builds the script [`LAUNCHER`] reads for `command` (a shell command
/// line, run by the login shell `$SHELL` as a child so that an `exit` in it
/// cannot skip the exit record), with `env` exported first.
///
/// Every value reaches the shell single-quoted, so no value can change the
/// script's shape; names must be shell identifiers, and no text may hold a
/// NUL byte (the shell would drop it).
pub(crate) fn step_script(
    marker: &str,
    env: &[(String, String)],
    command: &str,
) -> Result<String, ExecutorError> {
    let config = |m: String| ExecutorError::new(ExecutorErrorKind::Config, m);
    // The marker starts with \036, which printf writes from its octal escape.
    let tag = &marker[1..];
    // `s` held this very text; the step has no use for it.
    let mut w = format!("{{\nunset s\nprintf '\\036{tag}pgid=%s\\n' \"$$\"\n");
    w.push_str(&exports(env)?);
    if command.contains('\0') {
        return Err(config(
            "the command holds a NUL byte, which no shell can run".to_owned(),
        ));
    }
    w.push_str(&format!(
        "\"${{SHELL:-/bin/sh}}\" -c {} </dev/null\nrc=$?\nprintf '\\036{tag}rc=%s\\n' \"$rc\"\nexit \"$rc\"\n}}\n",
        shell_quote(command)
    ));
    Ok(w)
}

/// What the detached wrapper prints, before the reason, when the node
/// cannot host it (then nothing of the step ran).
pub(crate) const CANNOT_DETACH: &str = "rdrunner-cannot-detach: ";

/// The detached step's own shell, in a session of its own: writes its pid
/// (the process group's id) by rename, runs the command with stdout and
/// stderr through a `cat` each into the directory's files (so that, as on
/// an attached channel, the output ends when the last process holding it
/// closes it), then writes the exit status by rename, so that neither is
/// ever read half written; `none` when the command's shell was killed
/// before it could say. Fixed text: the directory and the command are its
/// arguments.
const DETACHED_BODY: &str = r#"d=$1
echo $$ >"$d/pgid.new" && mv -f "$d/pgid.new" "$d/pgid"
{ { "${SHELL:-/bin/sh}" -c "$2" </dev/null 3>&-; echo "$?" >"$d/rc"; } 2>&1 >&3 3>&- | cat >>"$d/err"; } 3>&1 | cat >>"$d/out"
if [ -s "$d/rc" ]; then cat "$d/rc"; else echo none; fi >"$d/status.new" && mv -f "$d/status.new" "$d/status""#;

/// Builds the script [`LAUNCHER`] reads to start `command` detached from
/// the SSH session: checks that the node can host it (`setsid`, a temp dir
/// `base` that is safe to create in), creates the private directory `dir`
/// (mkdir 0700 of a fresh random name, then checked), starts the step with
/// `setsid` and stdin from `/dev/null`, and prints the group id record once
/// the step wrote it. When the node cannot host the step it prints
/// [`CANNOT_DETACH`] and the reason, and runs nothing.
pub(crate) fn detached_script(
    marker: &str,
    base: &str,
    dir: &str,
    env: &[(String, String)],
    command: &str,
) -> Result<String, ExecutorError> {
    // The same checks of names, values and command as the attached wrapper.
    step_script(marker, env, command)?;
    let exports = exports(env)?;
    let tag = &marker[1..];
    let (b, d) = (shell_quote(base), shell_quote(dir));
    Ok(format!(
        "{{\nunset s\numask 077\n\
         no() {{ printf '{CANNOT_DETACH}%s\\n' \"$1\"; exit 0; }}\n\
         command -v setsid >/dev/null 2>&1 || no 'no setsid command on the node'\n\
         [ -d {b} ] || no 'the remote temp dir '{b}' is not a directory'\n\
         case $(ls -ld {b} 2>/dev/null) in\n\
         d????w???[tT]*|d???????w[tT]*) ;;\n\
         d????w*|d???????w*) no 'the remote temp dir '{b}' is writable by others and has no sticky bit' ;;\n\
         esac\n\
         mkdir -m 700 {d} 2>/dev/null || no 'cannot create a directory in the remote temp dir '{b}\n\
         if [ ! -d {d} ] || [ -h {d} ] || [ ! -O {d} ] || ! : >{d}/out || ! : >{d}/err; then rm -rf {d}; no 'cannot write a private directory in the remote temp dir '{b}; fi\n\
         {exports}\
         setsid /bin/sh -c {body} rdrunner-step {d} {c} </dev/null >/dev/null 2>&1 &\n\
         i=0\n\
         while [ ! -s {d}/pgid ] && [ $i -lt 3000 ]; do sleep 0.01 2>/dev/null || sleep 1; i=$((i+1)); done\n\
         [ -s {d}/pgid ] && printf '\\036{tag}pgid=%s\\n' \"$(cat {d}/pgid)\"\n\
         exit 0\n}}\n",
        body = shell_quote(DETACHED_BODY),
        c = shell_quote(command),
    ))
}

/// The remote command that ends process group `pgid`: TERM, up to
/// `grace_tenths` tenths of a second for the group to go, then KILL.
pub(crate) fn terminate_group(pgid: u32, grace_tenths: u64) -> String {
    format!(
        "kill -TERM -{pgid} 2>/dev/null; i=0; \
         while kill -0 -{pgid} 2>/dev/null && [ $i -lt {grace_tenths} ]; do \
         sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done; \
         if kill -0 -{pgid} 2>/dev/null; then kill -KILL -{pgid} 2>/dev/null; echo killed; fi; exit 0"
    )
}

/// `export NAME='value'` lines for `env`, every value single-quoted; names
/// must be shell identifiers and no value may hold a NUL byte.
fn exports(env: &[(String, String)]) -> Result<String, ExecutorError> {
    let config = |m: String| ExecutorError::new(ExecutorErrorKind::Config, m);
    let mut w = String::new();
    for (name, value) in env {
        if !is_identifier(name) {
            return Err(config(format!(
                "environment variable name {name:?} is not a shell identifier"
            )));
        }
        if value.contains('\0') {
            return Err(config(format!(
                "environment variable {name} holds a NUL byte, which no environment can carry"
            )));
        }
        w.push_str(&format!("export {name}={}\n", shell_quote(value)));
    }
    Ok(w)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A record the wrapper printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// The id of the step's process group.
    ProcessGroup(u32),
    /// The step's command ended with this exit code.
    ExitCode(i32),
}

/// What the wrapper's records said. The wrapper prints each kind once, so
/// the first of each kind counts: a later one is not the wrapper's (a
/// process the step left behind cannot change how the step ended).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Records {
    pub pgid: Option<u32>,
    pub exit: Option<i32>,
}

impl Records {
    pub(crate) fn take(&mut self, record: Record) {
        match record {
            Record::ProcessGroup(g) => self.pgid = self.pgid.or(Some(g)),
            Record::ExitCode(c) => self.exit = self.exit.or(Some(c)),
        }
    }
}

/// Takes marker records out of a byte stream, passing every other byte
/// through unchanged and in order.
#[derive(Debug)]
pub(crate) struct MarkerFilter {
    marker: Vec<u8>,
    /// A tail that may be the start of a marker cut by a chunk boundary.
    held: Vec<u8>,
    /// Payload of a record being read, up to its newline.
    record: Option<Vec<u8>>,
}

impl MarkerFilter {
    pub(crate) fn new(marker: &str) -> Self {
        MarkerFilter {
            marker: marker.as_bytes().to_vec(),
            held: Vec::new(),
            record: None,
        }
    }

    /// Feeds `data`: output bytes go to `out`, records to `rec`.
    pub(crate) fn push(
        &mut self,
        data: &[u8],
        out: &mut dyn FnMut(&[u8]),
        rec: &mut dyn FnMut(Record),
    ) {
        let joined;
        let mut buf: &[u8] = if self.held.is_empty() {
            data
        } else {
            let mut j = std::mem::take(&mut self.held);
            j.extend_from_slice(data);
            joined = j;
            &joined
        };
        while !buf.is_empty() {
            if let Some(payload) = &mut self.record {
                match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        extend_bounded(payload, &buf[..i]);
                        if let Some(r) = parse_record(payload) {
                            rec(r);
                        }
                        self.record = None;
                        buf = &buf[i + 1..];
                    }
                    None => {
                        extend_bounded(payload, buf);
                        return;
                    }
                }
                continue;
            }
            match buf.iter().position(|b| *b == MARKER_START) {
                None => {
                    out(buf);
                    return;
                }
                Some(i) => {
                    if i > 0 {
                        out(&buf[..i]);
                    }
                    let rest = &buf[i..];
                    if rest.starts_with(&self.marker) {
                        self.record = Some(Vec::new());
                        buf = &rest[self.marker.len()..];
                    } else if rest.len() < self.marker.len() && self.marker.starts_with(rest) {
                        self.held = rest.to_vec();
                        return;
                    } else {
                        out(&rest[..1]);
                        buf = &rest[1..];
                    }
                }
            }
        }
    }

    /// Passes on what is held back at the end of the stream.
    pub(crate) fn finish(&mut self, out: &mut dyn FnMut(&[u8])) {
        if !self.held.is_empty() {
            out(&std::mem::take(&mut self.held));
        }
    }
}

fn extend_bounded(payload: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_RECORD.saturating_sub(payload.len());
    payload.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

fn parse_record(payload: &[u8]) -> Option<Record> {
    let text = std::str::from_utf8(payload).ok()?;
    if let Some(v) = text.strip_prefix("pgid=") {
        v.parse().ok().map(Record::ProcessGroup)
    } else if let Some(v) = text.strip_prefix("rc=") {
        v.parse().ok().map(Record::ExitCode)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(marker: &str, chunks: &[&[u8]]) -> (Vec<u8>, Vec<Record>) {
        let mut f = MarkerFilter::new(marker);
        let mut out = Vec::new();
        let mut recs = Vec::new();
        for c in chunks {
            f.push(c, &mut |b| out.extend_from_slice(b), &mut |r| recs.push(r));
        }
        f.finish(&mut |b| out.extend_from_slice(b));
        (out, recs)
    }

    #[test]
    fn records_are_taken_out_and_output_kept() {
        let m = "\x1eMK ";
        let (out, recs) = run(m, &[b"\x1eMK pgid=42\nhello\nwor", b"ld\x1eMK rc=3\n"]);
        assert_eq!(out, b"hello\nworld");
        assert_eq!(recs, vec![Record::ProcessGroup(42), Record::ExitCode(3)]);
    }

    #[test]
    fn marker_split_across_every_chunk_boundary() {
        let m = "\x1eMARK ";
        let input = b"ab\x1eMARK pgid=7\ncd\x1e\x1eMARX\x1eMARK rc=0\n";
        for cut in 0..input.len() {
            let (out, recs) = run(m, &[&input[..cut], &input[cut..]]);
            assert_eq!(out, b"abcd\x1e\x1eMARX", "cut at {cut}");
            assert_eq!(
                recs,
                vec![Record::ProcessGroup(7), Record::ExitCode(0)],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_partial_marker_at_the_end_is_output() {
        let (out, recs) = run("\x1eMARK ", &[b"x\x1eMA"]);
        assert_eq!(out, b"x\x1eMA");
        assert!(recs.is_empty());
    }

    #[test]
    fn script_quotes_values_and_rejects_bad_names() {
        let env = vec![("RD_OPTION_X".to_owned(), "a'b; $(id)".to_owned())];
        let w = step_script("\x1eM ", &env, "echo hi").unwrap();
        assert!(w.contains("export RD_OPTION_X='a'\\''b; $(id)'\n"), "{w}");
        assert!(
            w.contains("\"${SHELL:-/bin/sh}\" -c 'echo hi' </dev/null\n"),
            "{w}"
        );
        assert!(w.starts_with("{\n") && w.ends_with("\n}\n"), "{w}");
        let bad = vec![("X;rm".to_owned(), "v".to_owned())];
        assert_eq!(
            step_script("\x1eM ", &bad, "true").unwrap_err().kind,
            ExecutorErrorKind::Config
        );
        let nul = vec![("X".to_owned(), "a\0b".to_owned())];
        assert!(step_script("\x1eM ", &nul, "true").is_err());
        assert!(step_script("\x1eM ", &[], "a\0b").is_err());
    }

    #[test]
    fn the_command_line_holds_nothing_of_the_step() {
        let marker = new_marker();
        let env = vec![("RD_OPTION_PW".to_owned(), "s3cret".to_owned())];
        let script = step_script(&marker, &env, "echo hi").unwrap();
        assert!(script.contains("s3cret") && script.contains(&marker[1..]));
        assert!(!LAUNCHER.contains("rdrunner") && !LAUNCHER.contains("export"));
    }

    #[test]
    fn the_first_record_of_each_kind_counts() {
        let mut r = Records::default();
        for rec in [
            Record::ProcessGroup(7),
            Record::ExitCode(0),
            Record::ExitCode(9),
            Record::ProcessGroup(1),
        ] {
            r.take(rec);
        }
        assert_eq!(
            r,
            Records {
                pgid: Some(7),
                exit: Some(0)
            }
        );
    }

    #[test]
    fn markers_differ() {
        assert_ne!(new_marker(), new_marker());
        assert!(new_marker().starts_with('\x1e'));
    }
}
