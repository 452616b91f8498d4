//! A trie of path nodes keyed by [`Label`] (`spec/names-and-policies.md` §9), pure.
//!
//! Every node carries one value of type `T`; a node's children are the sub-paths one
//! label deeper. Unlike albatross's trie, this one has path nodes only: whatever is
//! *labelled* inside a path (unikernels, block devices) lives in the node's value, so
//! the path `foo:` and the root-level name `:foo` never share a key (Note N5).
//!
//! Children are kept in a hash map, so finding the node of a path costs O(depth)
//! whatever the fan-out (100 000 tenants below the root cost the same as ten).
//! Whatever is listed comes out in a fixed order: pre-order, children by ascending label.

use std::collections::HashMap;

use crate::name::{Label, Path};

/// A trie of path nodes, each holding a `T`. The root node always exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trie<T> {
    root: Node<T>,
}

/// One path node: its value and its child paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node<T> {
    value: T,
    children: HashMap<Label, Node<T>>,
}

impl<T: Default> Trie<T> {
    /// A trie holding only the root node, with `value` there.
    pub fn new(value: T) -> Self {
        Self {
            root: Node::new(value),
        }
    }

    /// The value at the root.
    pub fn root(&self) -> &T {
        &self.root.value
    }

    /// The value at `path`, if its node exists.
    pub fn value(&self, path: &Path) -> Option<&T> {
        self.node(path).map(|node| &node.value)
    }

    /// The value at `path`, mutable, if its node exists.
    pub fn value_mut(&mut self, path: &Path) -> Option<&mut T> {
        let mut node = &mut self.root;
        for label in path.labels() {
            node = node.children.get_mut(label)?;
        }
        Some(&mut node.value)
    }

    /// The node at `path`, if it exists.
    pub fn node(&self, path: &Path) -> Option<&Node<T>> {
        let mut node = &self.root;
        for label in path.labels() {
            node = node.children.get(label)?;
        }
        Some(node)
    }

    /// The values from the root down to `path`, as far as nodes exist: the first item is
    /// the root's value, the last the value at `path` if that node exists.
    pub fn along<'a>(&'a self, path: &'a Path) -> Along<'a, T> {
        Along {
            node: Some(&self.root),
            labels: path.labels(),
        }
    }

    /// The values from the root down to `path`, mutable, creating missing nodes with
    /// `T::default()`; yields exactly `depth + 1` values, the last one at `path`.
    pub fn along_mut_creating<'a>(&'a mut self, path: &'a Path) -> AlongMut<'a, T> {
        let mut node = &mut self.root;
        for label in path.labels() {
            node = node.children.entry(label.clone()).or_default();
        }
        self.along_mut(path)
    }

    /// The values from the root down to `path`, mutable, as far as nodes exist.
    pub fn along_mut<'a>(&'a mut self, path: &'a Path) -> AlongMut<'a, T> {
        AlongMut {
            value: Some(&mut self.root.value),
            children: Some(&mut self.root.children),
            labels: path.labels(),
        }
    }

    /// Removes the nodes on the way to `path`, deepest first, that hold no children and a
    /// value for which `unused` is true. The root is never removed. Costs O(depth²).
    pub fn prune(&mut self, path: &Path, unused: impl Fn(&T) -> bool) {
        let labels = path.labels();
        for depth in (1..=labels.len()).rev() {
            let Some((last, parent_labels)) = labels.get(..depth).and_then(<[Label]>::split_last)
            else {
                return;
            };
            let mut parent = &mut self.root;
            for label in parent_labels {
                match parent.children.get_mut(label) {
                    Some(child) => parent = child,
                    None => return,
                }
            }
            match parent.children.get(last) {
                Some(child) if child.children.is_empty() && unused(&child.value) => {
                    parent.children.remove(last);
                }
                Some(_) => return,
                None => continue,
            }
        }
    }

    /// Every node in the subtree of `path` (the node itself included) with its path
    /// relative to `path` (the node itself is the root path), in pre-order with children
    /// by ascending label. Empty if the node does not exist.
    pub fn subtree(&self, path: &Path) -> Vec<(Path, &T)> {
        let mut out = Vec::new();
        let Some(start) = self.node(path) else {
            return out;
        };
        let mut stack = vec![(Path::root(), start)];
        while let Some((rel, node)) = stack.pop() {
            let mut children: Vec<(&Label, &Node<T>)> = node.children.iter().collect();
            // Reverse order on the stack, so that the smallest label is visited first.
            children.sort_unstable_by(|a, b| b.0.cmp(a.0));
            for (label, child) in children {
                stack.push((rel.child(label.clone()), child));
            }
            out.push((rel, &node.value));
        }
        out
    }
}

impl<T> Node<T> {
    fn new(value: T) -> Self {
        Self {
            value,
            children: HashMap::new(),
        }
    }

    /// The node's value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// Number of child path nodes.
    pub fn child_count(&self) -> usize {
        self.children.len()
    }
}

/// Iterator over the values from the root down a path; see [`Trie::along`].
#[derive(Debug)]
pub struct Along<'a, T> {
    node: Option<&'a Node<T>>,
    labels: &'a [Label],
}

impl<'a, T> Iterator for Along<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        let node = self.node.take()?;
        if let Some((label, rest)) = self.labels.split_first() {
            self.node = node.children.get(label);
            self.labels = rest;
        }
        Some(&node.value)
    }
}

/// Iterator over mutable values from the root down a path; see [`Trie::along_mut`].
#[derive(Debug)]
pub struct AlongMut<'a, T> {
    value: Option<&'a mut T>,
    children: Option<&'a mut HashMap<Label, Node<T>>>,
    labels: &'a [Label],
}

impl<'a, T> Iterator for AlongMut<'a, T> {
    type Item = &'a mut T;

    fn next(&mut self) -> Option<&'a mut T> {
        let value = self.value.take()?;
        if let (Some((label, rest)), Some(children)) =
            (self.labels.split_first(), self.children.take())
        {
            if let Some(node) = children.get_mut(label) {
                self.value = Some(&mut node.value);
                self.children = Some(&mut node.children);
            }
            self.labels = rest;
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    #[test]
    fn creates_walks_and_prunes() {
        let mut trie: Trie<u32> = Trie::new(1);
        for v in trie.along_mut_creating(&path("a:b:c")) {
            *v += 10;
        }
        assert_eq!(trie.root(), &11);
        assert_eq!(trie.value(&path("a:b")), Some(&10));
        assert_eq!(trie.value(&path("a:x")), None);
        let along: Vec<u32> = trie.along(&path("a:b:c:d:e")).copied().collect();
        assert_eq!(along, vec![11, 10, 10, 10]);
        let along: Vec<u32> = trie.along_mut(&path("a:z")).map(|v| *v).collect();
        assert_eq!(along, vec![11, 10]);

        *trie.value_mut(&path("a")).unwrap() = 0;
        *trie.value_mut(&path("a:b")).unwrap() = 0;
        // c holds 10: nothing is pruned.
        trie.prune(&path("a:b:c"), |v| *v == 0);
        assert_eq!(trie.value(&path("a:b:c")), Some(&10));
        *trie.value_mut(&path("a:b:c")).unwrap() = 0;
        trie.prune(&path("a:b:c"), |v| *v == 0);
        assert_eq!(trie.node(&path("a")).map(Node::child_count), None);
        assert_eq!(trie.node(&Path::root()).map(Node::child_count), Some(0));
        assert_eq!(trie.root(), &11, "the root is never pruned");
    }

    #[test]
    fn prune_keeps_branches_in_use() {
        let mut trie: Trie<u32> = Trie::new(0);
        trie.along_mut_creating(&path("a:b")).for_each(|_| ());
        trie.along_mut_creating(&path("a:c")).for_each(|_| ());
        trie.prune(&path("a:b"), |v| *v == 0);
        assert_eq!(trie.node(&path("a")).map(Node::child_count), Some(1));
        assert!(trie.value(&path("a:c")).is_some());
        // Pruning a path that does not exist changes nothing.
        trie.prune(&path("x:y"), |v| *v == 0);
        assert_eq!(trie.node(&Path::root()).map(Node::child_count), Some(1));
    }

    #[test]
    fn subtree_is_relative_and_ordered() {
        let mut trie: Trie<u32> = Trie::new(0);
        for (p, v) in [("a:c", 3), ("a:b:d", 4), ("b", 5), ("a", 1)] {
            *trie.along_mut_creating(&path(p)).last().unwrap() = v;
        }
        let all: Vec<(String, u32)> = trie
            .subtree(&Path::root())
            .into_iter()
            .map(|(p, v)| (p.text(), *v))
            .collect();
        let expected = [
            ("", 0),
            ("a", 1),
            ("a:b", 0),
            ("a:b:d", 4),
            ("a:c", 3),
            ("b", 5),
        ];
        assert_eq!(
            all,
            expected.map(|(p, v)| (p.to_string(), v)).to_vec(),
            "pre-order, ascending labels"
        );
        let below_a: Vec<(String, u32)> = trie
            .subtree(&path("a"))
            .into_iter()
            .map(|(p, v)| (p.text(), *v))
            .collect();
        let expected = [("", 1), ("b", 0), ("b:d", 4), ("c", 3)];
        assert_eq!(below_a, expected.map(|(p, v)| (p.to_string(), v)).to_vec());
        assert!(trie.subtree(&path("q")).is_empty());
    }
}
