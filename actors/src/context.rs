//! The data context of a node step: `${option.X}`, `${node.*}`, `${job.*}`
//! expansion in commands and arguments, `@option.X@` tokens in script
//! bodies, the `RD_*` environment, the checks a step must pass before any
//! executor sees it, and the masking of secure option values in output.
//! Executor-independent, so that every executor sees the same expanded step.
//!
//! Values are hostile: in a command each is quoted for the place its token
//! stands in (`shell`), and a copy destination may not leave its directory
//! through one. Script bodies are the exception: `@option.X@` there is a
//! raw substitution, as in Rundeck, and `$RD_OPTION_X` is the safe form.

mod masking;
mod shell;

use std::collections::BTreeMap;

use crate::model::{CommandStep, CopyStep, Node, Operation, ScriptStep, Step};

pub use masking::{MaskedLines, Masker, MASK, SECURE_NAME_ENDINGS};

/// Why a step was refused before anything ran. The messages name the token
/// or value at fault and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A command token stands where no value can be quoted safely.
    #[error(
        "the command's ${{{key}}} at byte offset {offset} stands {place}, where no value can be \
         quoted safely, so the step was not run; write \"${env}\" there instead (the step's \
         environment holds the value as is)"
    )]
    Unquotable {
        key: String,
        offset: usize,
        place: String,
        /// The variable holding the same value, e.g. `RD_OPTION_V`.
        env: String,
    },
    /// A copy destination that a substituted value moves out of its directory.
    #[error(
        "copy destination {template:?} expands to {expanded:?}, which {problem}; values \
         substituted into a destination may only name a file inside {dir:?}, so the step was \
         not run"
    )]
    DestinationEscapes {
        template: String,
        expanded: String,
        dir: String,
        problem: &'static str,
    },
    /// A copy destination with a NUL byte, which no path can hold.
    #[error("copy destination {template:?} expands to a path with a NUL byte, which no file name can hold; the step was not run")]
    DestinationNul { template: String },
    /// A copy mode that is not an octal mode.
    #[error("copy mode {mode:?} is not an octal file mode such as 0644; the step was not run")]
    BadMode { mode: String },
    /// A copy mode with setuid, setgid or sticky bits.
    #[error("copy mode {mode:?} sets the setuid, setgid or sticky bit, which copy steps refuse; use a mode from 0000 to 0777 (the step was not run)")]
    SpecialMode { mode: String },
}

/// What a step's tokens may refer to, flattened to `group.key` → value.
#[derive(Debug, Clone)]
pub struct DataContext {
    values: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    /// `option.X` → the `RD_OPTION_*` variable that holds its value, for the
    /// secure options: a command refers to the variable instead of holding
    /// the value, so that no secret is in a process's arguments.
    secure_vars: BTreeMap<String, String>,
}

impl DataContext {
    pub fn new(op: &Operation, node: &Node) -> Self {
        let mut values = BTreeMap::new();
        let mut env = Vec::new();

        for (name, value) in &op.options {
            values.insert(format!("option.{name}"), value.clone());
            env.push((format!("RD_OPTION_{}", env_name(name)), value.clone()));
        }

        let mut node_values: BTreeMap<String, String> = node
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for key in ["name", "hostname", "username", "port", "tags", "executor"] {
            if let Some(v) = node.attribute(key) {
                node_values.insert(key.to_owned(), v);
            }
        }
        node_values.entry("username".into()).or_default();
        for (key, value) in node_values {
            env.push((format!("RD_NODE_{}", env_name(&key)), value.clone()));
            values.insert(format!("node.{key}"), value);
        }

        let exec = &op.execution;
        let (group, name) = match exec.job.rsplit_once('/') {
            Some((g, n)) => (g.to_owned(), n.to_owned()),
            None => (String::new(), exec.job.clone()),
        };
        let job = [
            ("execid", exec.id.to_string()),
            ("name", name),
            ("group", group),
            ("project", exec.project.clone()),
            ("username", exec.user.clone()),
            ("user.name", exec.user.clone()),
        ];
        for (key, value) in job {
            if key != "user.name" {
                env.push((format!("RD_JOB_{}", env_name(key)), value.clone()));
            }
            values.insert(format!("job.{key}"), value);
        }
        env.sort();
        env.dedup_by(|a, b| a.0 == b.0);

        // Two option names can map to one variable (`a-b`, `a_b`); a secure
        // value is referred to only when the variable holds exactly it.
        let secure_vars = op
            .options
            .iter()
            .filter(|(name, _)| masking::is_secure_option(op, name))
            .filter_map(|(name, value)| {
                let var = format!("RD_OPTION_{}", env_name(name));
                env.iter()
                    .any(|(k, v)| *k == var && v == value)
                    .then(|| (format!("option.{name}"), var))
            })
            .collect();

        DataContext {
            values,
            env,
            secure_vars,
        }
    }

    /// The value of `group.key`, e.g. `option.service`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The `RD_*` environment of the step (names are valid shell identifiers,
    /// values raw).
    pub fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    /// The step with its tokens expanded, or why it must not run.
    ///
    /// In a command each `${group.key}` value is quoted for the place it
    /// stands in (unquoted, in `"..."`, in `'...'`) so that it reaches the
    /// command as exactly its bytes; a token where that cannot be done
    /// (backticks, arithmetic, `${...}`, a here-document, ...) refuses the
    /// step, naming the `RD_*` variable to use instead. A token escaped as
    /// `\${option.X}` (outside single quotes) is left as it is. Script
    /// arguments and copy destinations get raw values (the executor passes
    /// each argument as one word). Script bodies get `@group.key@` tokens
    /// raw: a value there is script text, as in Rundeck, so scripts should
    /// read `$RD_OPTION_X` instead. A copy destination may not leave the
    /// directory its template names before the first token, nor get a `..`
    /// component from a value; a copy mode must be at most 0777.
    pub fn expand_step(&self, step: &Step) -> Result<Step, ExpandError> {
        Ok(match step {
            Step::Command(c) => Step::Command(CommandStep {
                command: self.expand_command(&c.command)?,
            }),
            Step::Script(s) => Step::Script(ScriptStep {
                script: self.expand_at_tokens(&s.script),
                args: s.args.iter().map(|a| self.expand_raw(a).0).collect(),
                interpreter: s.interpreter.clone(),
                file_extension: s.file_extension.clone(),
            }),
            Step::Copy(c) => {
                check_mode(c)?;
                Step::Copy(CopyStep {
                    content_base64: c.content_base64.clone(),
                    destination: self.expand_destination(&c.destination)?,
                    mode: c.mode.clone(),
                })
            }
        })
    }

    /// Expands the tokens of a shell command, each quoted for its place.
    /// A secure option's token becomes a reference to its `RD_OPTION_*`
    /// variable (`"${RD_OPTION_X}"`, the same bytes once the shell expands
    /// it), so the value is never part of the command line a process runs
    /// with.
    fn expand_command(&self, command: &str) -> Result<String, ExpandError> {
        let word = |key: &str| match self.secure_vars.get(key) {
            Some(var) => format!("\"${{{var}}}\""),
            None => shell::single_quoted(self.get(key).unwrap_or("")),
        };
        shell::substitute(command, &word).map_err(|r| ExpandError::Unquotable {
            env: env_var_for(&r.key),
            key: r.key,
            offset: r.offset,
            place: r.place,
        })
    }

    /// Expands `${group.key}` tokens raw; a token of a known group with no
    /// value expands to the empty string; other `${...}` text (shell
    /// parameter expansions such as `${HOME}`) is left alone. Also returns
    /// the byte ranges of the result that came from values.
    fn expand_raw(&self, text: &str) -> (String, Vec<(usize, usize)>) {
        let mut out = String::with_capacity(text.len());
        let mut from_values = Vec::new();
        let mut at = 0;
        while let Some(i) = text[at..].find("${") {
            let start = at + i;
            out.push_str(&text[at..start]);
            match context_token_at(text, start) {
                Some((key, end)) => {
                    let value = self.get(key).unwrap_or("");
                    from_values.push((out.len(), out.len() + value.len()));
                    out.push_str(value);
                    at = end;
                }
                None => {
                    out.push_str("${");
                    at = start + 2;
                }
            }
        }
        out.push_str(&text[at..]);
        (out, from_values)
    }

    /// Expands a copy destination, refusing one that a value moves out of
    /// the directory the template names before its first token.
    fn expand_destination(&self, template: &str) -> Result<String, ExpandError> {
        let (expanded, from_values) = self.expand_raw(template);
        if expanded.contains('\0') {
            return Err(ExpandError::DestinationNul {
                template: template.to_owned(),
            });
        }
        let Some(first) = (0..template.len()).find(|i| context_token_at(template, *i).is_some())
        else {
            return Ok(expanded);
        };
        let dir = &template[..template[..first].rfind('/').map_or(0, |i| i + 1)];
        let escapes = |problem| ExpandError::DestinationEscapes {
            template: template.to_owned(),
            expanded: expanded.clone(),
            dir: dir.to_owned(),
            problem,
        };
        let mut at = 0;
        for component in expanded.split('/') {
            let range = (at, at + component.len());
            at = range.1 + 1;
            let from_value = from_values.iter().any(|v| v.0 < range.1 && range.0 < v.1);
            if component == ".." && from_value {
                return Err(escapes("gets a \"..\" component from a substituted value"));
            }
        }
        let (dir_absolute, dir_parts) = normalise(dir);
        let (absolute, parts) = normalise(&expanded);
        if !dir.is_empty() && (absolute != dir_absolute || !parts.starts_with(&dir_parts)) {
            return Err(escapes("is outside that directory"));
        }
        Ok(expanded)
    }

    /// Expands `@group.key@` tokens (script bodies); unknown keys of a known
    /// group expand to the empty string, anything else is left alone.
    fn expand_at_tokens(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find('@') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            match after.find('@') {
                Some(end) if is_context_key(&after[..end]) => {
                    out.push_str(self.get(&after[..end]).unwrap_or(""));
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push('@');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// The context token (`${group.key}`) starting at `i`, if one does: its
/// key and the offset after its `}`.
fn context_token_at(text: &str, i: usize) -> Option<(&str, usize)> {
    let after = text.get(i..)?.strip_prefix("${")?;
    let end = after.find('}')?;
    let key = &after[..end];
    is_context_key(key).then_some((key, i + 2 + end + 1))
}

/// The `RD_*` variable that holds the value of `key`, for messages.
fn env_var_for(key: &str) -> String {
    match key.split_once('.') {
        Some(("job", "user.name")) => "RD_JOB_USERNAME".into(),
        Some((group, name)) => format!("RD_{}_{}", env_name(group), env_name(name)),
        None => format!("RD_{}", env_name(key)),
    }
}

/// A path lexically normalised: whether it is absolute, and its components
/// with `.` and empty ones dropped and `..` applied (`/..` is `/`).
fn normalise(path: &str) -> (bool, Vec<&str>) {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if absolute => {}
                _ => parts.push(".."),
            },
            c => parts.push(c),
        }
    }
    (absolute, parts)
}

/// Refuses a copy mode that is not octal or has bits above 0777.
fn check_mode(c: &CopyStep) -> Result<(), ExpandError> {
    let mode = || c.mode.clone().unwrap_or_default();
    match c.mode_bits() {
        None => Err(ExpandError::BadMode { mode: mode() }),
        Some(bits) if bits > 0o777 => Err(ExpandError::SpecialMode { mode: mode() }),
        Some(_) => Ok(()),
    }
}

/// `option.x`, `node.name`, `job.execid`: a known group, a dot, then a key of
/// word characters, dots and dashes.
fn is_context_key(s: &str) -> bool {
    let Some((group, key)) = s.split_once('.') else {
        return false;
    };
    matches!(group, "option" | "node" | "job")
        && !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `ssh-key-storage-path` → `SSH_KEY_STORAGE_PATH`.
fn env_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Quotes `s` for a POSIX shell: left as is when it is made only of
/// characters no shell treats specially, else wrapped in single quotes.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '-' | '.' | '/' | ':' | '=' | '@' | '%' | '+' | ',')
        });
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dispatch, ExecutionInfo};
    use std::process::Command;

    fn op(options: &[(&str, &str)]) -> Operation {
        Operation {
            id: "op-1".into(),
            execution: ExecutionInfo {
                id: 42,
                project: "ops".into(),
                job: "web/restart".into(),
                user: "alice".into(),
            },
            steps: vec![],
            nodes: vec![],
            dispatch: Dispatch::default(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secure_options: vec!["dbpass".into()],
            timeout_ms: None,
            step_timeout_ms: None,
        }
    }

    fn node() -> Node {
        let mut n = Node::new("web1", "10.1.0.5");
        n.username = Some("deploy".into());
        n.attributes
            .insert("ssh-key-storage-path".into(), "keys/deploy".into());
        n
    }

    fn sh(command: &str, env: &[(String, String)]) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env_clear()
            .envs(env.iter().cloned())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    /// The expanded step, or the refusal's message.
    fn expand(ctx: &DataContext, step: Step) -> Result<Step, String> {
        ctx.expand_step(&step).map_err(|e| e.to_string())
    }

    fn command(ctx: &DataContext, command: &str) -> Result<String, String> {
        match expand(
            ctx,
            Step::Command(CommandStep {
                command: command.into(),
            }),
        )? {
            Step::Command(c) => Ok(c.command),
            other => panic!("{other:?}"),
        }
    }

    fn copy(ctx: &DataContext, destination: &str, mode: Option<&str>) -> Result<String, String> {
        let step = Step::Copy(CopyStep {
            content_base64: String::new(),
            destination: destination.into(),
            mode: mode.map(str::to_owned),
        });
        match expand(ctx, step)? {
            Step::Copy(c) => Ok(c.destination),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expands_command_tokens_quoted() {
        let ctx = DataContext::new(&op(&[("service", "nginx")]), &node());
        assert_eq!(
            command(&ctx, "restart ${option.service} on ${node.name} as ${job.username} (${job.execid}) ${HOME} ${option.missing}").unwrap(),
            "restart 'nginx' on 'web1' as 'alice' ('42') ${HOME} ''"
        );
        assert_eq!(
            command(
                &ctx,
                "echo \"at ${node.name}: $HOME\" 'x${job.execid}y' \\${option.service}"
            )
            .unwrap(),
            "echo \"at \"'web1'\": $HOME\" 'x''42''y' \\${option.service}"
        );
    }

    #[test]
    fn hostile_option_values_stay_data_in_every_quoting_context() {
        let hostile = [
            "x'; touch /tmp/pwned; echo '",
            "$(echo injected)",
            "`echo injected`",
            "\"; echo injected; echo \"",
            "a;b|c&d>e && f",
            "line1\nline2",
            "\"double\" 'single' \\back",
            "$HOME ${HOME} *",
            "",
        ];
        let contexts = [
            "printf %s ${option.v}",
            "printf %s \"${option.v}\"",
            "printf %s '${option.v}'",
            "printf '%s' \"$(printf %s \"${option.v}\")\"",
        ];
        for value in hostile {
            let ctx = DataContext::new(&op(&[("v", value)]), &node());
            for template in contexts {
                let c = command(&ctx, template).unwrap();
                assert_eq!(sh(&c, &[]), value, "{template} as {c:?}");
            }
            // The environment carries the same value untouched.
            let env = ctx.env();
            assert_eq!(sh("printf %s \"$RD_OPTION_V\"", &env), value);
        }
    }

    #[test]
    fn secure_values_are_referred_to_never_written_into_the_command() {
        let secret = "it's $(touch /tmp/pwned) s3cret";
        let ctx = DataContext::new(
            &op(&[("dbpass", secret), ("api_token", "t0k"), ("user", "app")]),
            &node(),
        );
        let env = ctx.env();
        for template in [
            "printf %s ${option.dbpass}",
            "printf %s \"${option.dbpass}\"",
            "printf %s '${option.dbpass}'",
            "printf %s x${option.dbpass}'-'\"${option.dbpass}\"y",
        ] {
            let c = command(&ctx, template).unwrap();
            assert!(!c.contains("s3cret"), "{template} as {c:?}");
            assert!(c.contains("RD_OPTION_DBPASS"), "{template} as {c:?}");
            let want = template
                .trim_start_matches("printf %s ")
                .replace(['\'', '"'], "")
                .replace("${option.dbpass}", secret);
            assert_eq!(sh(&c, &env), want, "{template} as {c:?}");
        }
        // Secure by its name; a plain option is still written in.
        assert_eq!(
            command(&ctx, "echo ${option.api_token} ${option.user}").unwrap(),
            "echo \"${RD_OPTION_API_TOKEN}\" 'app'"
        );
    }

    #[test]
    fn tokens_that_cannot_be_quoted_refuse_the_step() {
        let ctx = DataContext::new(&op(&[("v", "x")]), &node());
        let refused = [
            ("echo `echo ${option.v}`", 11, "inside backticks"),
            ("echo $(( ${option.v} + 1 ))", 9, "inside arithmetic"),
            ("echo ${X:-${option.v}}", 10, "parameter expansion"),
            ("cat <<EOF\n${option.v}\nEOF", 10, "here-document"),
            ("cat <<'EOF'\na ${option.v}\nEOF", 14, "here-document"),
            ("echo $${option.v}", 6, "right after a $"),
            ("echo $'a\\'${option.v}'", 10, "$'...'"),
            (
                "echo $(case a in a) echo;; esac) ${option.v}",
                33,
                "case statement",
            ),
        ];
        for (template, offset, place) in refused {
            let e = command(&ctx, template).expect_err(template);
            assert!(
                e.contains(&format!("${{option.v}} at byte offset {offset} ")) && e.contains(place),
                "{template}: {e}"
            );
            assert!(e.contains("\"$RD_OPTION_V\""), "{e}");
        }
        let e = command(&ctx, "echo `${node.name}`").unwrap_err();
        assert!(e.contains("\"$RD_NODE_NAME\""), "{e}");
        // What comes before and after such constructs is still quoted.
        let ok = command(
            &ctx,
            "cat <<EOF\n$HOME\nEOF\necho ${option.v} `date` $((1+2)) # ${option.v}",
        )
        .unwrap();
        assert_eq!(
            ok,
            "cat <<EOF\n$HOME\nEOF\necho 'x' `date` $((1+2)) # ${option.v}"
        );
    }

    #[test]
    fn script_bodies_args_and_destinations() {
        let ctx = DataContext::new(&op(&[("service", "nginx")]), &node());
        let step = Step::Script(ScriptStep {
            script: "#!/bin/sh\necho @node.name@ @option.service@ user@example.com @nope@\n".into(),
            args: vec!["${option.service}".into(), "-v".into()],
            interpreter: Some("sh".into()),
            file_extension: Some(".sh".into()),
        });
        let Ok(Step::Script(s)) = expand(&ctx, step) else {
            unreachable!()
        };
        assert_eq!(
            s.script,
            "#!/bin/sh\necho web1 nginx user@example.com @nope@\n"
        );
        assert_eq!(s.args, vec!["nginx", "-v"]);
        assert_eq!(
            copy(&ctx, "/etc/${option.service}.conf", None).unwrap(),
            "/etc/nginx.conf"
        );
    }

    #[test]
    fn copy_destinations_stay_in_their_directory() {
        let cases = [
            ("/srv/app/${option.v}.conf", "a/b", Ok("/srv/app/a/b.conf")),
            ("/srv/app/${option.v}", "x/./y", Ok("/srv/app/x/./y")),
            (
                "/srv/${option.v}/../shared/f",
                "a",
                Ok("/srv/a/../shared/f"),
            ),
            ("conf/${option.v}", "a..b", Ok("conf/a..b")),
            ("${option.v}", "/etc/motd", Ok("/etc/motd")),
            (
                "/srv/app/${option.v}.conf",
                "../../etc/passwd",
                Err("\"..\" component"),
            ),
            ("/srv/app/${option.v}", "..", Err("\"..\" component")),
            ("/srv/app/x${option.v}/f", "/..", Err("\"..\" component")),
            ("${option.v}", "../etc", Err("\"..\" component")),
            (
                "/srv/${option.v}/../../etc/f",
                "",
                Err("outside that directory"),
            ),
            ("/srv/${option.v}", "a\0b", Err("NUL byte")),
        ];
        for (template, value, expected) in cases {
            let ctx = DataContext::new(&op(&[("v", value)]), &node());
            match (copy(&ctx, template, None), expected) {
                (Ok(path), Ok(want)) => assert_eq!(path, want, "{template}"),
                (Err(e), Err(want)) => {
                    assert!(e.contains(want), "{template} with {value:?}: {e}");
                    assert!(e.contains("not run"), "{e}");
                }
                (got, want) => panic!("{template} with {value:?}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn copy_modes_above_0777_are_refused() {
        let ctx = DataContext::new(&op(&[]), &node());
        for mode in [None, Some("0644"), Some("0777"), Some("600"), Some("0o755")] {
            assert!(copy(&ctx, "/tmp/f", mode).is_ok(), "{mode:?}");
        }
        for mode in ["4755", "2755", "1777", "0o4755", "07777"] {
            let e = copy(&ctx, "/tmp/f", Some(mode)).unwrap_err();
            assert!(e.contains(mode) && e.contains("setuid"), "{e}");
        }
        for mode in ["rwx", "0999", "", "10000"] {
            let e = copy(&ctx, "/tmp/f", Some(mode)).unwrap_err();
            assert!(e.contains("not an octal file mode"), "{mode}: {e}");
        }
    }

    #[test]
    fn environment_names_and_values() {
        let ctx = DataContext::new(&op(&[("service", "nginx"), ("db-pass", "x")]), &node());
        let env: BTreeMap<_, _> = ctx.env().into_iter().collect();
        assert_eq!(env["RD_OPTION_SERVICE"], "nginx");
        assert_eq!(env["RD_OPTION_DB_PASS"], "x");
        assert_eq!(env["RD_NODE_NAME"], "web1");
        assert_eq!(env["RD_NODE_HOSTNAME"], "10.1.0.5");
        assert_eq!(env["RD_NODE_USERNAME"], "deploy");
        assert_eq!(env["RD_NODE_SSH_KEY_STORAGE_PATH"], "keys/deploy");
        assert_eq!(env["RD_JOB_EXECID"], "42");
        assert_eq!(env["RD_JOB_NAME"], "restart");
        assert_eq!(env["RD_JOB_GROUP"], "web");
        assert_eq!(env["RD_JOB_PROJECT"], "ops");
        assert_eq!(env["RD_JOB_USERNAME"], "alice");
        assert!(env.keys().all(|k| k
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')));
    }

    #[test]
    fn shell_quote_forms() {
        assert_eq!(shell_quote("plain-word_1.2/x"), "plain-word_1.2/x");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("a b"), "'a b'");
    }

    #[test]
    fn options_named_like_credentials_are_secure() {
        let o = op(&[
            ("dbpass", "s3cret"),
            ("api-token", "tok-1"),
            ("ssh_key", "key-2"),
            ("Admin.Password", "pw-3"),
            ("client-secret", "sec-4"),
            ("keys", "plain-5"),
            ("token-count", "plain-6"),
        ]);
        let m = Masker::for_operation(&o);
        assert_eq!(
            m.mask("s3cret tok-1 key-2 pw-3 sec-4 plain-5 plain-6".into()),
            "[SECURE] [SECURE] [SECURE] [SECURE] [SECURE] plain-5 plain-6"
        );
    }
}
