//! The one walk over a snapshot's trees, shared by restore, check, prune, copy, repair, ls and
//! stats (and what comes after them: find, diff, mount).
//!
//! Iterative: the directories being walked are an explicit stack on the heap, so a snapshot
//! whose trees nest 20,000 directories deep costs memory in proportion and never the thread's
//! stack (recursive walks aborted with "stack overflow" at a few thousand levels).
//!
//! The walk is a cursor the caller drives: [`TreeWalk::step`] reads the next tree and says
//! [`Step::Enter`] (pre-order: the tree, or why it could not be read), and once everything
//! below a tree is done, [`Step::Leave`] (post-order: the tree again, owned), so a caller can
//! compute a result per tree from its subtrees' results. Which subtrees are entered is the
//! caller's choice: `skip` is asked for each one (a tree already done, a path excluded), and
//! [`TreeWalk::skip_children`] skips all of the tree just entered. Subtrees are entered in the
//! order of their nodes (name order).

use crate::error::Error;
use crate::format::tree::{Node, Tree};
use crate::id::Id;
use crate::repo::Repository;

/// A walk of the trees below one tree.
pub struct TreeWalk {
    /// The tree to start with, until the first step.
    start: Option<Id>,
    stack: Vec<Frame>,
    /// The path of the tree on top of the stack, relative to the start: names joined by `/`.
    path: Vec<u8>,
    /// After a [`Step::Leave`], the length `path` goes back to at the next step.
    truncate_to: Option<usize>,
}

struct Frame {
    id: Id,
    tree: Option<Tree>,
    /// Index of the next node to look at for a subtree.
    next: usize,
    /// `path`'s length before this tree's name was added.
    parent_path_len: usize,
}

/// A tree just reached.
pub struct Entered<'a> {
    pub id: Id,
    /// Trees above this one in the walk (0: the start).
    pub depth: usize,
    /// The tree's path relative to the start: node names joined by `/` (empty at the start).
    pub path: &'a [u8],
    /// The tree, or why it could not be read (then it has no subtrees to enter).
    pub tree: Result<&'a Tree, Error>,
}

/// A tree whose subtrees have all been left (or skipped).
pub struct Left<'a> {
    pub id: Id,
    pub depth: usize,
    pub path: &'a [u8],
    /// The tree, if it could be read.
    pub tree: Option<Tree>,
}

pub enum Step<'a> {
    Enter(Entered<'a>),
    Leave(Left<'a>),
}

impl TreeWalk {
    /// A walk starting at tree `start`.
    pub fn new(start: Id) -> TreeWalk {
        TreeWalk {
            start: Some(start),
            stack: Vec::new(),
            path: Vec::new(),
            truncate_to: None,
        }
    }

    /// Do not enter the subtrees of the tree just entered.
    pub fn skip_children(&mut self) {
        if let Some(top) = self.stack.last_mut() {
            top.next = usize::MAX;
        }
    }

    /// How deep the walk is now (the trees on its stack).
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// The next step, or `None` once the start has been left. `skip(path, node)` is asked for
    /// every subtree before it is read, with the subtree's path; `true` leaves it out.
    pub async fn step(
        &mut self,
        repo: &Repository,
        mut skip: impl FnMut(&[u8], &Node) -> bool,
    ) -> Option<Step<'_>> {
        if let Some(len) = self.truncate_to.take() {
            self.path.truncate(len);
        }
        if let Some(start) = self.start.take() {
            return Some(self.enter(repo, start, 0).await);
        }
        let top = self.stack.last_mut()?;
        let mut child = None;
        if let Some(tree) = &top.tree {
            while top.next < tree.nodes.len() {
                let n = &tree.nodes[top.next];
                top.next += 1;
                let Some(sub) = n.subtree else { continue };
                let base = self.path.len();
                if base > 0 {
                    self.path.push(b'/');
                }
                self.path.extend_from_slice(&n.name);
                if skip(&self.path, n) {
                    self.path.truncate(base);
                    continue;
                }
                child = Some((sub, base));
                break;
            }
        }
        if let Some((sub, base)) = child {
            return Some(self.enter(repo, sub, base).await);
        }
        let f = self.stack.pop()?;
        self.truncate_to = Some(f.parent_path_len);
        Some(Step::Leave(Left {
            id: f.id,
            depth: self.stack.len(),
            path: &self.path,
            tree: f.tree,
        }))
    }

    async fn enter(&mut self, repo: &Repository, id: Id, parent_path_len: usize) -> Step<'_> {
        let (tree, error) = match repo.load_tree(&id).await {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e)),
        };
        let depth = self.stack.len();
        self.stack.push(Frame {
            id,
            tree,
            next: 0,
            parent_path_len,
        });
        let tree = match (&self.stack[depth].tree, error) {
            (Some(t), _) => Ok(t),
            (None, e) => Err(e.unwrap_or_else(|| Error::Other(format!("tree {id} not read")))),
        };
        Step::Enter(Entered {
            id,
            depth,
            path: &self.path,
            tree,
        })
    }
}
