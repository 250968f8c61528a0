//! Partition policies: which function bodies are compiled together, the first time any of
//! them is called.

/// A function with a body, as a policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    /// The function's symbol (promoted locals have their promoted name).
    pub name: String,
    /// Instructions in its body.
    pub instructions: usize,
    /// Whether it must stay with the module's variables (in partition 0): its blocks' addresses
    /// are taken, or it shares a comdat with a variable.
    pub pinned: bool,
}

/// Groups a module's functions into partitions.
///
/// Contract: deterministic (it runs again, in a later process, to find cached objects), and
/// `name` says what it does: two policies with one name must group alike. Indexes that no
/// group names get a partition each; an index named twice stays in its first group; groups
/// with a pinned function are merged into partition 0, with the module's variables.
pub trait PartitionPolicy: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn partition(&self, functions: &[FunctionInfo]) -> Vec<Vec<usize>>;
}

/// Each function alone (the default): a call compiles just the function called.
pub struct PerFunction;

impl PartitionPolicy for PerFunction {
    fn name(&self) -> &str {
        "per-function"
    }

    fn partition(&self, functions: &[FunctionInfo]) -> Vec<Vec<usize>> {
        (0..functions.len()).map(|i| vec![i]).collect()
    }
}

/// The whole module at once, the first time any of its functions is called.
pub struct WholeModule;

impl PartitionPolicy for WholeModule {
    fn name(&self) -> &str {
        "whole-module"
    }

    fn partition(&self, functions: &[FunctionInfo]) -> Vec<Vec<usize>> {
        vec![(0..functions.len()).collect()]
    }
}

/// The partition of each function: the policy's groups, numbered from 1 in the order given,
/// after partition 0 (the variables, pinned functions and their groups). A group holding every
/// function is partition 0 itself: one object for the module.
pub(crate) fn assign(policy: &dyn PartitionPolicy, functions: &[FunctionInfo]) -> Vec<usize> {
    let n = functions.len();
    let mut part: Vec<Option<usize>> = vec![None; n];
    let mut next = 1;
    for group in policy.partition(functions) {
        let members: Vec<usize> = group.into_iter().filter(|&i| i < n && part[i].is_none()).collect();
        if members.is_empty() {
            continue;
        }
        let to_first = members.len() == n || members.iter().any(|&i| functions[i].pinned);
        let p = if to_first {
            0
        } else {
            next += 1;
            next - 1
        };
        for i in members {
            part[i] = Some(p);
        }
    }
    part.into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.unwrap_or_else(|| {
                if functions[i].pinned {
                    0
                } else {
                    next += 1;
                    next - 1
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, pinned: bool) -> FunctionInfo {
        FunctionInfo { name: name.into(), instructions: 10, pinned }
    }

    struct Odd;
    impl PartitionPolicy for Odd {
        fn name(&self) -> &str {
            "odd"
        }
        fn partition(&self, _: &[FunctionInfo]) -> Vec<Vec<usize>> {
            vec![vec![0, 0, 9], vec![1, 0], vec![]]
        }
    }

    #[test]
    fn policies_group_functions_and_pinned_ones_join_the_variables() {
        let fs = [info("a", false), info("b", true), info("c", false)];
        assert_eq!(assign(&PerFunction, &fs), vec![1, 0, 2]);
        assert_eq!(assign(&WholeModule, &fs), vec![0, 0, 0]);
        // Out-of-range and repeated indexes are ignored; 'b' is pinned, so its group is 0;
        // 'c', named by no group, gets its own partition.
        assert_eq!(assign(&Odd, &fs), vec![1, 0, 2]);
    }
}
