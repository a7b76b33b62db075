//! The assembler: receives the walk's events in order and writes a tree blob as each
//! directory is left.

use std::sync::Mutex;
use std::sync::mpsc::Receiver;

use super::{Event, JobError, Pending, SourceProblem};
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::repo::packer::BlobSink;

/// Serialise, id and store a tree blob.
pub(crate) fn save_tree(sink: &BlobSink, mut nodes: Vec<Node>) -> Result<Id> {
    let mut tree = Tree {
        nodes: std::mem::take(&mut nodes),
    };
    tree.sort();
    tree.nodes.dedup_by(|a, b| a.name == b.name);
    let data = tree.encode();
    if data.len() > crate::format::tree::MAX_TREE_BLOB as usize {
        return Err(Error::invalid(format!(
            "a directory with {} entries is too large for one tree ({} bytes; the format allows {})",
            tree.nodes.len(),
            data.len(),
            crate::format::tree::MAX_TREE_BLOB
        )));
    }
    let id = sink.repo().keys().blob_id(&data);
    sink.save(BlobKind::Tree, id, &data)?;
    Ok(id)
}

pub(super) struct Assembled {
    pub(super) root: Id,
    pub(super) total_files: u64,
    pub(super) total_bytes: u64,
}

pub(super) fn assemble(
    sink: &BlobSink,
    events: Receiver<Vec<Event>>,
    errors: &Mutex<Vec<SourceProblem>>,
) -> Result<Assembled> {
    let mut stack: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    let mut total_files = 0u64;
    let mut total_bytes = 0u64;
    for batch in events {
        // Readers finish files roughly in the order they were handed out, so once the batch's
        // last file is read most of the others are too: waiting for it first makes about one
        // wake-up per batch instead of one per file.
        let mut early = batch.iter().enumerate().rev().find_map(|(i, ev)| match ev {
            Event::Leaf(Pending::Reading(_, rx)) => Some((i, rx.recv())),
            _ => None,
        });
        for (i, ev) in batch.into_iter().enumerate() {
            let (mut node, outcome) = match ev {
                Event::Enter(node) => {
                    stack.push((Some(node), Vec::new()));
                    continue;
                }
                Event::Leave => {
                    let (node, children) = stack.pop().expect("balanced walk");
                    let mut node = node.expect("non-root frame");
                    node.subtree = Some(save_tree(sink, children)?);
                    stack.last_mut().expect("root frame").1.push(node);
                    continue;
                }
                Event::Leaf(Pending::Ready(node)) => {
                    if node.kind == NodeKind::File {
                        total_files += 1;
                        total_bytes += node.size;
                    }
                    stack.last_mut().expect("root frame").1.push(node);
                    continue;
                }
                Event::Leaf(Pending::Reading(node, rx)) => match early.take_if(|(j, _)| *j == i) {
                    Some((_, outcome)) => (node, outcome),
                    None => (node, rx.recv()),
                },
            };
            match outcome {
                Ok(Ok(r)) => {
                    node.content = r.extents;
                    node.size = r.size;
                    total_files += 1;
                    total_bytes += node.size;
                    stack.last_mut().expect("root frame").1.push(node);
                }
                Ok(Err(JobError::Source(p))) => {
                    tracing::warn!("{p}");
                    errors.lock().unwrap_or_else(|e| e.into_inner()).push(p);
                }
                Ok(Err(JobError::Fatal(e))) => return Err(e),
                Err(_) => return Err(Error::Other("a file reader stopped unexpectedly".into())),
            }
        }
    }
    let (_, children) = stack.pop().expect("root frame");
    Ok(Assembled {
        root: save_tree(sink, children)?,
        total_files,
        total_bytes,
    })
}
