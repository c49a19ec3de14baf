//! From parsed inputs to the outcome every output format renders: located
//! findings, problems, totals and the exit code. Pure.

use std::collections::HashMap;

use super::{
    finding::{Container, Finding, Severity, Workload},
    input::{InputProblem, Source},
    walk::check_object,
    yaml::parse_documents,
};

/// The lowest severity that makes `lint` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailLevel {
    /// Fail on errors only (Always, implicit or explicit; invalid images).
    Error,
    /// Fail on warnings too (tags instead of digests, short names).
    Warning,
    /// Never fail on findings; unreadable input still exits 2.
    None,
}

impl FailLevel {
    pub fn fails(self, severity: Severity) -> bool {
        match self {
            FailLevel::Error => severity >= Severity::Error,
            FailLevel::Warning => severity >= Severity::Warning,
            FailLevel::None => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailLevel::Error => "error",
            FailLevel::Warning => "warning",
            FailLevel::None => "none",
        }
    }
}

/// Where in the input something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    /// 1-based index among the file's non-empty documents.
    pub document: usize,
    pub line: usize,
}

/// A checked container and what was found on it, with source lines.
#[derive(Debug, Clone)]
pub struct LocatedContainer {
    pub location: Location,
    pub workload: Workload,
    pub container: Container,
    /// Each finding with the line of the field it is about.
    pub findings: Vec<(usize, Finding)>,
    /// How many pods this entry stands for: more than 1 when `--cluster`
    /// folded the pods of one controller together.
    pub pods: usize,
}

/// What makes two pods' containers the same finding: namespace, owner,
/// container list, container name, image and the rules that fired.
type FoldKey = (
    Option<String>,
    String,
    &'static str,
    String,
    String,
    Vec<&'static str>,
);

/// Everything `lint` learned from its inputs.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each input's name and how many documents it held.
    pub inputs: Vec<(String, usize)>,
    pub containers: Vec<LocatedContainer>,
    pub problems: Vec<InputProblem>,
}

impl Outcome {
    /// Parses and checks every source; `problems` are carried over from
    /// reading.
    pub fn check(sources: &[Source], problems: Vec<InputProblem>) -> Self {
        let mut outcome = Outcome {
            problems,
            ..Outcome::default()
        };
        for source in sources {
            let documents = parse_documents(&source.text);
            outcome.inputs.push((source.name.clone(), documents.len()));
            for document in documents {
                let document = match document {
                    Ok(document) => document,
                    Err(error) => {
                        outcome.problems.push(InputProblem {
                            file: source.name.clone(),
                            document: Some(error.index),
                            line: Some(error.line),
                            column: Some(error.column),
                            message: format!("cannot parse: {}", error.message),
                        });
                        continue;
                    }
                };
                for checked in check_object(&document.value) {
                    let findings = checked
                        .findings
                        .into_iter()
                        .map(|f| (document.line_of(&f.path), f))
                        .collect();
                    outcome.containers.push(LocatedContainer {
                        location: Location {
                            file: source.name.clone(),
                            document: document.index,
                            line: document.line_of(&checked.container.path),
                        },
                        workload: checked.workload,
                        container: checked.container,
                        findings,
                        pods: 1,
                    });
                }
            }
        }
        outcome
    }

    /// Folds the pods of one controller into one entry per container, so a
    /// DaemonSet on 100 nodes is reported once, not 100 times. Only pods
    /// with a controlling owner whose containers have the same image and
    /// findings are folded.
    pub fn fold_owned_pods(&mut self) {
        let mut kept: Vec<LocatedContainer> = Vec::with_capacity(self.containers.len());
        let mut first_of: HashMap<FoldKey, usize> = HashMap::new();
        for container in std::mem::take(&mut self.containers) {
            let Some(owner) = container.workload.owner.clone() else {
                kept.push(container);
                continue;
            };
            let key = (
                container.workload.namespace.clone(),
                owner,
                container.container.list.field(),
                container.container.name.clone(),
                container.container.image.clone(),
                container
                    .findings
                    .iter()
                    .map(|(_, f)| f.rule.id())
                    .collect(),
            );
            match first_of.get(&key) {
                Some(&i) => kept[i].pods += 1,
                None => {
                    first_of.insert(key, kept.len());
                    kept.push(container);
                }
            }
        }
        self.containers = kept;
    }

    pub fn findings(&self) -> impl Iterator<Item = (&LocatedContainer, usize, &Finding)> {
        self.containers
            .iter()
            .flat_map(|c| c.findings.iter().map(move |(line, f)| (c, *line, f)))
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.findings()
            .filter(|(_, _, f)| f.severity == severity)
            .count()
    }

    pub fn documents(&self) -> usize {
        self.inputs.iter().map(|(_, n)| n).sum()
    }

    /// 2 when any input could not be read (whatever was found elsewhere:
    /// a gate must not pass on input it did not check), 1 when a finding is
    /// at or above `fail_level`, else 0.
    pub fn exit_code(&self, fail_level: FailLevel) -> u8 {
        if !self.problems.is_empty() {
            2
        } else if self
            .findings()
            .any(|(_, _, f)| fail_level.fails(f.severity))
        {
            1
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, text: &str) -> Source {
        Source {
            name: name.to_owned(),
            text: text.to_owned(),
        }
    }

    const DS_POD: &str = "
  - kind: Pod
    metadata:
      namespace: ns
      name: NAME
      ownerReferences: [{kind: DaemonSet, name: ds, controller: true}]
    spec:
      containers:
      - name: c
        image: quay.io/t/a:1
        imagePullPolicy: Always
";

    #[test]
    fn locates_findings_and_sets_the_exit_code() {
        let text = "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: quay.io/t/a:1\n    imagePullPolicy: IfNotPresent\n---\nkind: [\n";
        let outcome = Outcome::check(&[source("a.yaml", text)], Vec::new());
        assert_eq!(outcome.inputs, vec![("a.yaml".to_owned(), 2)]);
        assert_eq!(outcome.containers.len(), 1);
        let c = &outcome.containers[0];
        assert_eq!(
            c.location,
            Location {
                file: "a.yaml".into(),
                document: 1,
                line: 5
            }
        );
        assert_eq!(c.findings.len(), 1);
        assert_eq!(c.findings[0].0, 6, "the line of `image:`");
        assert_eq!(outcome.problems.len(), 1);
        assert_eq!(outcome.problems[0].document, Some(2));
        assert_eq!(outcome.exit_code(FailLevel::None), 2);

        let clean = Outcome::check(
            &[source("b.yaml", &text[..text.find("---").unwrap()])],
            Vec::new(),
        );
        assert_eq!(clean.count(Severity::Warning), 1);
        assert_eq!(clean.exit_code(FailLevel::Error), 0);
        assert_eq!(clean.exit_code(FailLevel::Warning), 1);
        assert_eq!(clean.exit_code(FailLevel::None), 0);
    }

    #[test]
    fn folds_pods_of_one_controller() {
        let text = format!(
            "kind: PodList\nitems:{}{}{}",
            DS_POD.replace("NAME", "ds-1"),
            DS_POD.replace("NAME", "ds-2"),
            DS_POD.replace("NAME", "ds-3").replace("a:1", "b:1"),
        );
        let mut outcome = Outcome::check(&[source("-", &text)], Vec::new());
        assert_eq!(outcome.containers.len(), 3);
        outcome.fold_owned_pods();
        let pods: Vec<(String, usize)> = outcome
            .containers
            .iter()
            .map(|c| (c.workload.name.clone(), c.pods))
            .collect();
        assert_eq!(pods, vec![("ds-1".to_owned(), 2), ("ds-3".to_owned(), 1)]);
        assert_eq!(outcome.count(Severity::Error), 2);
    }
}
