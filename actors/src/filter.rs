//! Node filters (protocol v1 §5): the Rundeck-style text that selects nodes,
//! parsed once into terms and matched against [`Node`]s.
//!
//! The control plane uses filters to map nodes to runners; the runner uses
//! them for its own `allowedNodes` guard. Every regular expression is matched
//! against the WHOLE value (it is anchored), so `web` does not match `web9`.

use std::fmt;

use regex::Regex;

use crate::model::Node;

/// A parsed node filter: space-separated terms, all of which must match.
#[derive(Clone, Debug)]
pub struct NodeFilter {
    source: String,
    terms: Vec<Term>,
}

/// One `key: value` term (or a bare word, which means `name: word`).
#[derive(Clone, Debug)]
struct Term {
    negated: bool,
    key: String,
    matcher: Matcher,
}

#[derive(Clone, Debug)]
enum Matcher {
    /// The whole attribute value matches this anchored regex.
    Value(Regex),
    /// `tags:` — any of the alternatives (`,`), each needing all its tags (`+`).
    Tags(Vec<Vec<Regex>>),
}

/// Why a filter text did not parse: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node filter `{source_text}`: at column {column}: expected {expected}{}", found.as_ref().map(|f| format!(", found `{f}`")).unwrap_or_default())]
pub struct FilterError {
    /// The filter text as given.
    pub source_text: String,
    /// 1-based column (in characters) where the problem starts.
    pub column: usize,
    /// What the parser needed at that column.
    pub expected: String,
    /// What it found instead, when there was something.
    pub found: Option<String>,
}

impl NodeFilter {
    /// Parses `text`. An empty filter is an error: a filter that selects
    /// nothing is always a mistake, and `.*` says "every node" explicitly.
    pub fn parse(text: &str) -> Result<NodeFilter, FilterError> {
        let err = |column: usize, expected: &str, found: Option<&str>| FilterError {
            source_text: text.to_owned(),
            column,
            expected: expected.to_owned(),
            found: found.map(str::to_owned),
        };
        let words = split_words(text);
        if words.is_empty() {
            return Err(err(
                1,
                "at least one term, such as `.*` or `tags: web`",
                None,
            ));
        }
        let mut terms = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let (col, word) = words[i];
            i += 1;
            let (negated, body, body_col) = match word.strip_prefix('!') {
                Some(rest) => (true, rest, col + 1),
                None => (false, word, col),
            };
            if body.is_empty() {
                return Err(err(
                    body_col,
                    "a key or a node name after `!`",
                    words.get(i).map(|w| w.1),
                ));
            }
            let (key, value, value_col) = match key_prefix(body) {
                Some((key, rest)) if !rest.is_empty() => {
                    (key, rest, body_col + key.chars().count() + 1)
                }
                Some((key, _)) => match words.get(i) {
                    Some(&(vcol, v)) => {
                        i += 1;
                        (key, v, vcol)
                    }
                    None => {
                        return Err(err(
                            body_col + key.chars().count() + 1,
                            &format!("a value after `{key}:`"),
                            None,
                        ))
                    }
                },
                None => ("name", body, body_col),
            };
            let matcher = if key == "tags" {
                parse_tags(value, value_col, &err)?
            } else {
                Matcher::Value(anchored(value).map_err(|e| {
                    err(
                        value_col,
                        &format!("a valid regular expression for `{key}` ({e})"),
                        Some(value),
                    )
                })?)
            };
            terms.push(Term {
                negated,
                key: key.to_owned(),
                matcher,
            });
        }
        Ok(NodeFilter {
            source: text.to_owned(),
            terms,
        })
    }

    /// Whether `node` passes every term.
    pub fn matches(&self, node: &Node) -> bool {
        self.terms.iter().all(|t| t.matches(node) != t.negated)
    }

    /// The filter text as it was given.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl Term {
    fn matches(&self, node: &Node) -> bool {
        match &self.matcher {
            Matcher::Value(re) => node.attribute(&self.key).is_some_and(|v| re.is_match(&v)),
            Matcher::Tags(alternatives) => alternatives.iter().any(|all| {
                all.iter()
                    .all(|re| node.tags.iter().any(|t| re.is_match(t)))
            }),
        }
    }
}

impl fmt::Display for NodeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for NodeFilter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeFilter::parse(s)
    }
}

/// Whitespace-separated words with their 1-based character column.
fn split_words(text: &str) -> Vec<(usize, &str)> {
    let mut words = Vec::new();
    let mut start: Option<(usize, usize)> = None; // (byte, column)
    let mut column = 0;
    for (byte, ch) in text.char_indices() {
        column += 1;
        if ch.is_whitespace() {
            if let Some((b, c)) = start.take() {
                words.push((c, &text[b..byte]));
            }
        } else if start.is_none() {
            start = Some((byte, column));
        }
    }
    if let Some((b, c)) = start {
        words.push((c, &text[b..]));
    }
    words
}

/// `key:` at the start of a word: a key is letters, digits, `_`, `-`, `.`
/// followed by `:`. Anything else is a bare word (a node name regex).
fn key_prefix(word: &str) -> Option<(&str, &str)> {
    let colon = word.find(':')?;
    let key = &word[..colon];
    let is_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    is_key.then(|| (key, &word[colon + 1..]))
}

fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

fn parse_tags(
    value: &str,
    value_col: usize,
    err: &dyn Fn(usize, &str, Option<&str>) -> FilterError,
) -> Result<Matcher, FilterError> {
    let mut alternatives = Vec::new();
    let mut col = value_col;
    for alt in value.split(',') {
        let mut all = Vec::new();
        for tag in alt.split('+') {
            if tag.is_empty() {
                return Err(err(col, "a tag name between `+` and `,`", None));
            }
            let re = anchored(tag).map_err(|e| {
                err(
                    col,
                    &format!("a valid regular expression for a tag ({e})"),
                    Some(tag),
                )
            })?;
            all.push(re);
            col += tag.chars().count() + 1;
        }
        alternatives.push(all);
    }
    Ok(Matcher::Tags(alternatives))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, host: &str, tags: &[&str]) -> Node {
        let mut n = Node::new(name, host);
        n.tags = tags.iter().map(|t| t.to_string()).collect();
        n.attributes.insert("osFamily".into(), "unix".into());
        n
    }

    fn f(text: &str) -> NodeFilter {
        NodeFilter::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn dot_star_and_bare_words_match_the_whole_name() {
        let web1 = node("web1", "10.1.0.5", &[]);
        assert!(f(".*").matches(&web1));
        assert!(f("web1").matches(&web1));
        assert!(f("web.*").matches(&web1));
        assert!(!f("web").matches(&web1), "bare words are anchored");
        assert!(!f("eb1").matches(&web1));
    }

    #[test]
    fn tags_plus_needs_all_and_comma_needs_any() {
        let both = node("a", "h", &["web", "prod"]);
        let web = node("b", "h", &["web"]);
        let db = node("c", "h", &["db"]);
        let all = f("tags: web+prod");
        assert!(all.matches(&both));
        assert!(!all.matches(&web));
        let any = f("tags: web,db");
        assert!(any.matches(&web) && any.matches(&db) && any.matches(&both));
        assert!(!any.matches(&node("d", "h", &["cache"])));
        assert!(f("tags:prod").matches(&both), "`key:value` without a space");
        assert!(!f("tags: we").matches(&web), "tags are whole-value matches");
    }

    #[test]
    fn attribute_keys_match_the_whole_value() {
        let n = node("web1", "10.1.0.5", &[]);
        assert!(f(r"hostname: 10\.1\..*").matches(&n));
        assert!(!f(r"hostname: 10\.1").matches(&n));
        assert!(f("osFamily: unix").matches(&n));
        assert!(!f("osFamily: uni").matches(&n));
        assert!(
            !f("missing: .*").matches(&n),
            "an absent attribute never matches"
        );
    }

    #[test]
    fn bang_negates_a_term_and_terms_are_anded() {
        let web1 = node("web1", "h", &["web", "prod"]);
        let web9 = node("web9", "h", &["web", "prod"]);
        let filter = f("tags: web+prod !name: web9");
        assert!(filter.matches(&web1));
        assert!(!filter.matches(&web9));
        assert!(f("!web9").matches(&web1));
        assert!(
            f("!missing: x").matches(&web1),
            "negating an absent attribute"
        );
        assert!(!f("web1 tags: db").matches(&web1), "every term must match");
    }

    #[test]
    fn executor_and_port_are_keys_like_any_other() {
        let mut ssh = node("web1", "10.1.0.5", &["web"]);
        ssh.port = Some(22);
        let local = Node::local("web1");
        let f1 = f("tags: web executor: ssh port: 22");
        assert!(f1.matches(&ssh));
        assert!(!f1.matches(&local), "a local node is not executor ssh");
        ssh.port = Some(2222);
        assert!(!f1.matches(&ssh));
        assert!(f("!executor: local").matches(&ssh));
        assert!(!f("!executor: local").matches(&local));
    }

    #[test]
    fn display_gives_back_the_source() {
        let text = "tags: web+prod  !name: web9";
        assert_eq!(f(text).to_string(), text);
        assert_eq!(f(text).as_str(), text);
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        let e = NodeFilter::parse("tags: web hostname:").unwrap_err();
        assert_eq!(e.column, 20);
        assert!(e.expected.contains("value after `hostname:`"), "{e}");
        let e = NodeFilter::parse("name: web[").unwrap_err();
        assert_eq!(e.column, 7);
        assert!(e.to_string().contains("regular expression"), "{e}");
        assert_eq!(e.found.as_deref(), Some("web["));
        let e = NodeFilter::parse("  ").unwrap_err();
        assert_eq!(e.column, 1);
        let e = NodeFilter::parse("a ! b").unwrap_err();
        assert_eq!(e.column, 4);
        let e = NodeFilter::parse("tags: a++b").unwrap_err();
        assert_eq!(e.column, 9);
    }

    #[test]
    fn filters_are_shareable_across_threads() {
        fn assert_traits<T: Clone + Send + Sync + fmt::Debug>() {}
        assert_traits::<NodeFilter>();
    }
}
