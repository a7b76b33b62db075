//! Tree blobs (format-spec/tree.md): one directory listing each, stored as a blob of kind tree
//! whose plaintext is `"CRNT" 0x01 bincode(Tree)`.

use super::{Kind, Timestamp, decode, encode, strip_header};
use crate::error::{Error, Result};
use crate::id::Id;

/// The largest tree blob plaintext we write or accept (about a million entries).
pub const MAX_TREE_BLOB: u32 = 128 * 1024 * 1024;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, bincode::Encode, bincode::Decode,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::CharDev => "chardev",
            NodeKind::BlockDev => "blockdev",
            NodeKind::Socket => "socket",
        }
    }
}

/// A piece of a regular file's contents, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Extent {
    /// A data blob and its plaintext length.
    Data { id: Id, len: u32 },
    /// A hole of this many bytes (a sparse region, restored as a hole).
    Hole(u64),
}

impl Extent {
    pub fn len(&self) -> u64 {
        match self {
            Extent::Data { len, .. } => *len as u64,
            Extent::Hole(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// One directory entry with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Node {
    /// The entry's name: any bytes but `/` and NUL, not empty, `.` or `..`.
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub dev: u64,
    pub inode: u64,
    pub links: u64,
    /// Device number of a character or block device.
    pub rdev: u64,
    /// Length of a regular file (the sum of its extents).
    pub size: u64,
    /// Contents of a regular file.
    pub content: Vec<Extent>,
    /// The tree of a directory.
    pub subtree: Option<Id>,
    /// Target of a symbolic link.
    pub target: Vec<u8>,
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// A node with the given name and kind and every other field zero or empty.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Node {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime: Timestamp::default(),
            atime: Timestamp::default(),
            ctime: Timestamp::default(),
            dev: 0,
            inode: 0,
            links: 0,
            rdev: 0,
            size: 0,
            content: Vec::new(),
            subtree: None,
            target: Vec::new(),
            xattrs: Vec::new(),
        }
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A directory listing, sorted by name bytes, names unique.
#[derive(Debug, Clone, PartialEq, Eq, Default, bincode::Encode)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

// Decoded by hand rather than derived: bincode's `Vec` decoder reserves the in-memory size of
// every element up front and counts it against the decode limit, so a large directory (a few
// hundred bytes of `Node` per entry, but only tens of bytes encoded) would be refused although
// it was written correctly. Here memory grows with the entries actually read; the bytes read
// are still bounded by the blob size.
impl<Context> bincode::Decode<Context> for Tree {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let len = u64::decode(decoder)?;
        let mut nodes = Vec::with_capacity(len.min(1024) as usize);
        for _ in 0..len {
            nodes.push(Node::decode(decoder)?);
        }
        Ok(Tree { nodes })
    }
}

impl<'de, Context> bincode::BorrowDecode<'de, Context> for Tree {
    fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        <Tree as bincode::Decode<Context>>::decode(decoder)
    }
}

/// Is `name` acceptable as one path component on restore? Rejecting `..`, `/` and NUL keeps a
/// hostile tree from writing outside the restore target.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// Sort nodes by name (the canonical order).
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// The blob plaintext.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Kind::Tree.header().to_vec();
        out.extend_from_slice(&encode(self));
        out
    }

    pub fn decode(data: &[u8], object: &str) -> Result<Tree> {
        if data.len() > MAX_TREE_BLOB as usize {
            return Err(Error::corrupt(object, "tree larger than the format allows"));
        }
        let body = strip_header(Kind::Tree, data, object)?;
        let t: Tree = decode(body, object)?;
        t.validate().map_err(|e| Error::corrupt(object, e))?;
        Ok(t)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        for (i, n) in self.nodes.iter().enumerate() {
            if !valid_name(&n.name) {
                return Err(format!("invalid entry name {:?}", n.name_lossy()));
            }
            if i > 0 && self.nodes[i - 1].name >= n.name {
                return Err(format!(
                    "entries not sorted or duplicated at {:?}",
                    n.name_lossy()
                ));
            }
            if n.kind != NodeKind::File && !n.content.is_empty() {
                return Err(format!("{:?}: content on a non-file", n.name_lossy()));
            }
            if (n.kind == NodeKind::Dir) != n.subtree.is_some() {
                return Err(format!("{:?}: subtree mismatch", n.name_lossy()));
            }
            if n.kind == NodeKind::File {
                let sum = n
                    .content
                    .iter()
                    .try_fold(0u64, |acc, e| acc.checked_add(e.len()));
                if sum != Some(n.size) {
                    return Err(format!(
                        "{:?}: extents do not add up to the size",
                        n.name_lossy()
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_directories_decode() {
        // 1.1 million entries: more than the generic Vec decoder's up-front reservation allows.
        let nodes: Vec<Node> = (0..1_100_000u32)
            .map(|i| Node::new(format!("{i:08}").into_bytes(), NodeKind::Fifo))
            .collect();
        let t = Tree { nodes };
        let data = t.encode();
        assert!(data.len() < MAX_TREE_BLOB as usize);
        let back = Tree::decode(&data, "t").unwrap();
        assert_eq!(back.nodes.len(), 1_100_000);
        assert_eq!(back.nodes[12345].name, b"00012345");
    }

    #[test]
    fn names_that_escape_are_rejected() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(!valid_name(bad));
            let t = Tree {
                nodes: vec![Node::new(bad.to_vec(), NodeKind::Fifo)],
            };
            assert!(Tree::decode(&t.encode(), "t").is_err());
        }
        assert!(valid_name(b"\xff\n ok"));
    }

    #[test]
    fn unsorted_and_inconsistent_trees_are_rejected() {
        let t = Tree {
            nodes: vec![
                Node::new(b"b".to_vec(), NodeKind::Fifo),
                Node::new(b"a".to_vec(), NodeKind::Fifo),
            ],
        };
        assert!(t.validate().is_err());
        let mut f = Node::new(b"f".to_vec(), NodeKind::File);
        f.size = 10;
        f.content = vec![Extent::Hole(9)];
        assert!(
            Tree {
                nodes: vec![f.clone()]
            }
            .validate()
            .is_err()
        );
        f.content = vec![
            Extent::Hole(4),
            Extent::Data {
                id: Id::default(),
                len: 6,
            },
        ];
        let t = Tree { nodes: vec![f] };
        assert_eq!(Tree::decode(&t.encode(), "t").unwrap(), t);
        let d = Node::new(b"d".to_vec(), NodeKind::Dir);
        assert!(Tree { nodes: vec![d] }.validate().is_err());
    }
}
