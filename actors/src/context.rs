//! The data context of a node step: `${option.X}`, `${node.*}`, `${job.*}`
//! expansion in commands and arguments, `@option.X@` tokens in script
//! bodies, the `RD_*` environment, shell quoting, and the masking of secure
//! option values in output. Executor-independent, so that every executor
//! sees the same expanded step.

use std::collections::BTreeMap;

use crate::model::{CommandStep, CopyStep, Node, Operation, ScriptStep, Step};

/// What a step's tokens may refer to, flattened to `group.key` → value.
#[derive(Debug, Clone)]
pub struct DataContext {
    values: BTreeMap<String, String>,
    env: Vec<(String, String)>,
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

        DataContext { values, env }
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

    /// The step with its tokens expanded: in a command every `${..}` value is
    /// shell-quoted, so that no value can change the command's shape; script
    /// arguments and copy destinations get raw values (the executor quotes
    /// each argument whole); script bodies get `@group.key@` tokens raw.
    pub fn expand_step(&self, step: &Step) -> Step {
        match step {
            Step::Command(c) => Step::Command(CommandStep {
                command: self.expand(&c.command, Quote::Shell),
            }),
            Step::Script(s) => Step::Script(ScriptStep {
                script: self.expand_at_tokens(&s.script),
                args: s.args.iter().map(|a| self.expand(a, Quote::Raw)).collect(),
                interpreter: s.interpreter.clone(),
                file_extension: s.file_extension.clone(),
            }),
            Step::Copy(c) => Step::Copy(CopyStep {
                content_base64: c.content_base64.clone(),
                destination: self.expand(&c.destination, Quote::Raw),
                mode: c.mode.clone(),
            }),
        }
    }

    /// Expands `${group.key}` tokens; a token of a known group with no value
    /// expands to the empty string; other `${...}` text (shell parameter
    /// expansions such as `${HOME}`) is left alone.
    fn expand(&self, text: &str, quote: Quote) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) if is_context_key(&after[..end]) => {
                    let value = self.get(&after[..end]).unwrap_or("");
                    match quote {
                        Quote::Shell => out.push_str(&shell_quote(value)),
                        Quote::Raw => out.push_str(value),
                    }
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push_str("${");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
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

#[derive(Clone, Copy)]
enum Quote {
    Shell,
    Raw,
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

/// The text secure option values are replaced with.
pub const MASK: &str = "[SECURE]";

/// Replaces secure option values in output before it is reported or written.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so that a secret containing another is masked whole.
    secrets: Vec<String>,
}

impl Masker {
    pub fn new(mut secrets: Vec<String>) -> Self {
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Masker { secrets }
    }

    /// A masker for an operation's secure options.
    pub fn for_operation(op: &Operation) -> Self {
        Self::new(op.secure_values())
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn mask(&self, text: String) -> String {
        if self.secrets.iter().all(|s| !text.contains(s.as_str())) {
            return text;
        }
        let mut text = text;
        for s in &self.secrets {
            if text.contains(s.as_str()) {
                text = text.replace(s.as_str(), MASK);
            }
        }
        text
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

    #[test]
    fn expands_command_tokens_quoted() {
        let ctx = DataContext::new(&op(&[("service", "nginx")]), &node());
        let step = Step::Command(CommandStep {
            command: "restart ${option.service} on ${node.name} as ${job.username} (${job.execid}) ${HOME} ${option.missing}".into(),
        });
        let Step::Command(c) = ctx.expand_step(&step) else {
            unreachable!()
        };
        assert_eq!(c.command, "restart nginx on web1 as alice (42) ${HOME} ''");
    }

    #[test]
    fn hostile_option_values_stay_data() {
        let hostile = [
            "x'; touch /tmp/pwned; echo '",
            "$(echo injected)",
            "`echo injected`",
            "a;b|c&d>e",
            "line1\nline2",
            "\"double\" 'single' \\back",
            "",
        ];
        for value in hostile {
            let ctx = DataContext::new(&op(&[("v", value)]), &node());
            let Step::Command(c) = ctx.expand_step(&Step::Command(CommandStep {
                command: "printf %s ${option.v}".into(),
            })) else {
                unreachable!()
            };
            assert_eq!(sh(&c.command, &[]), value, "command {:?}", c.command);
            // The environment carries the same value untouched.
            let env = ctx.env();
            assert_eq!(sh("printf %s \"$RD_OPTION_V\"", &env), value);
        }
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
        let Step::Script(s) = ctx.expand_step(&step) else {
            unreachable!()
        };
        assert_eq!(
            s.script,
            "#!/bin/sh\necho web1 nginx user@example.com @nope@\n"
        );
        assert_eq!(s.args, vec!["nginx", "-v"]);
        let Step::Copy(c) = ctx.expand_step(&Step::Copy(CopyStep {
            content_base64: String::new(),
            destination: "/etc/${option.service}.conf".into(),
            mode: None,
        })) else {
            unreachable!()
        };
        assert_eq!(c.destination, "/etc/nginx.conf");
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
    fn masks_secure_values_longest_first() {
        let o = op(&[("dbpass", "s3cret"), ("service", "nginx")]);
        let m = Masker::for_operation(&o);
        assert_eq!(
            m.mask("pw=s3cret and s3cret".into()),
            "pw=[SECURE] and [SECURE]"
        );
        assert_eq!(m.mask("nginx".into()), "nginx");
        let m = Masker::new(vec!["ab".into(), "abcd".into(), String::new()]);
        assert_eq!(m.mask("xabcdx ab".into()), "x[SECURE]x [SECURE]");
        assert!(Masker::new(vec![String::new()]).is_empty());
    }
}
