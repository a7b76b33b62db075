//! Splitting a `mariadb-dump`/`mysqldump` stream into its sections as it streams: the header
//! (session settings), each database's CREATE, each table (structure, data and triggers), the
//! database's views, events and routines, and the trailer that restores the session settings.
//!
//! The dump tool frames every section with a comment block such as
//! ```text
//! --
//! -- Table structure for table `name`
//! --
//! ```
//! with backticks in the name doubled and newlines in it continued as `\n-- `. Those blocks
//! are only recognised at the top level: a `DELIMITER ;;` block (trigger, routine and event
//! bodies, which may hold any text) is never split. Everything else is passed through byte for
//! byte, without holding a whole line in memory (a row with a large BLOB is one long line).
//! While a table's data streams, its rows are counted (tuples of `INSERT` statements, with
//! quoting and escapes followed), so the snapshot can record exact row counts from the same
//! transaction as the data, and hashed: the table checksum (format-spec/mysql.md, "Table
//! checksums") is BLAKE3 over its `INSERT` statements, each from `INSERT` to its closing `;`
//! followed by one newline, so a reload and a re-dump with the same options give it back.

use std::io::{self, Read};

/// How far ahead a line start is examined for a marker block (names are at most 64
/// characters, so a marker block is far shorter).
const MARKER_PEEK: usize = 16 * 1024;
/// The first line of the dump tool's trailer (it restores the session time zone first).
const TRAILER_START: &[u8] = b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n";

/// A section of the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// Before the first marker: the session settings (and comments).
    Header,
    /// `Current Database`: the database's CREATE DATABASE and USE statements.
    Database(String),
    /// A table's structure, then its data and triggers.
    Table(String),
    /// Views (stand-ins and final definitions), events or routines of the current database.
    Schema,
    /// The statements that restore the session settings, and the closing comment.
    Trailer,
}

/// Facts read from the dump's comments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpInfo {
    pub binlog_file: Option<String>,
    pub binlog_position: Option<u64>,
    pub gtid: Option<String>,
    /// The closing `-- Dump completed` comment was seen: the dump was not cut short.
    pub completed: bool,
}

/// A buffered reader that can look ahead without consuming.
struct Input<R> {
    r: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Input<R> {
    fn new(r: R) -> Self {
        Input {
            r,
            buf: vec![0; 1 << 20],
            pos: 0,
            end: 0,
            eof: false,
        }
    }

    /// At least `n` bytes (fewer only at the end of the stream), without consuming them.
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        let n = n.min(self.buf.len());
        if self.end - self.pos < n && !self.eof {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
            while self.end < n && !self.eof {
                match self.r.read(&mut self.buf[self.end..]) {
                    Ok(0) => self.eof = true,
                    Ok(k) => self.end += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.pos..self.end])
    }

    /// What is buffered (reading more only when nothing is).
    fn available(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end {
            self.peek(1)?;
        }
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// Counts the tuples of `INSERT INTO `t` VALUES (...),(...);` statements fed to it, and
/// hashes the statements (each up to its closing `;`, then a newline).
#[derive(Debug, Default)]
struct RowCounter {
    state: RowState,
    rows: u64,
    hash: blake3::Hasher,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum RowState {
    #[default]
    Off,
    /// Skipping `INSERT INTO ` up to the opening backtick of the table name.
    Prefix,
    /// Inside the backquoted table name.
    Name,
    /// Saw a backtick in the name: the end, or the first of a doubled pair.
    NameTick,
    /// In the tuples.
    Values {
        depth: u32,
        quote: u8,
        escaped: bool,
    },
}

impl RowCounter {
    fn begin(&mut self) {
        self.state = RowState::Prefix;
    }

    fn feed(&mut self, data: &[u8]) {
        if self.state == RowState::Off {
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            self.state = match self.state {
                // Not reached: the loop ends when the statement does.
                RowState::Off => RowState::Off,
                RowState::Prefix if b == b'`' => RowState::Name,
                RowState::Prefix => RowState::Prefix,
                RowState::Name if b == b'`' => RowState::NameTick,
                RowState::Name => RowState::Name,
                RowState::NameTick if b == b'`' => RowState::Name,
                RowState::NameTick => Self::value_byte(&mut self.rows, 0, 0, false, b),
                RowState::Values {
                    depth,
                    quote,
                    escaped,
                } => Self::value_byte(&mut self.rows, depth, quote, escaped, b),
            };
            if self.state == RowState::Off {
                // The statement's closing `;`: the rest of the line is not hashed.
                self.hash.update(&data[..=i]);
                self.hash.update(b"\n");
                return;
            }
        }
        self.hash.update(data);
    }

    fn value_byte(rows: &mut u64, depth: u32, quote: u8, escaped: bool, b: u8) -> RowState {
        let v = |depth, quote, escaped| RowState::Values {
            depth,
            quote,
            escaped,
        };
        if quote != 0 {
            return if escaped {
                v(depth, quote, false)
            } else if b == b'\\' {
                v(depth, quote, true)
            } else if b == quote {
                v(depth, 0, false)
            } else {
                v(depth, quote, false)
            };
        }
        match b {
            b'\'' | b'"' => v(depth, b, false),
            b'(' => {
                if depth == 0 {
                    *rows += 1;
                }
                v(depth + 1, 0, false)
            }
            b')' => v(depth.saturating_sub(1), 0, false),
            b';' if depth == 0 => RowState::Off,
            _ => v(depth, 0, false),
        }
    }
}

/// A marker block recognised at a line start.
#[derive(Debug, PartialEq, Eq)]
enum Marker {
    Table(String),
    Data(String),
    Database(String),
    Schema,
}

/// Parse a marker block at the start of `buf` (which starts with `--\n`). Returns the marker
/// and the length of the block, or `None` if this is not a complete marker block.
fn parse_marker(buf: &[u8]) -> Option<(Marker, usize)> {
    let rest = buf.strip_prefix(b"--\n")?;
    type Make = fn(String) -> Marker;
    const NAMED: &[(&[u8], Make)] = &[
        (b"-- Table structure for table `", Marker::Table),
        (b"-- Dumping data for table `", Marker::Data),
        (b"-- Current Database: `", Marker::Database),
    ];
    const SCHEMA: &[&[u8]] = &[
        b"-- Temporary table structure for view `",
        b"-- Temporary view structure for view `",
        b"-- Final view structure for view `",
        b"-- Dumping events for database '",
        b"-- Dumping routines for database '",
    ];
    for (prefix, make) in NAMED {
        if let Some(after) = rest.strip_prefix(*prefix) {
            let (name, used) = parse_comment_ident(after)?;
            let tail = &after[used..];
            if !tail.starts_with(b"\n--\n") {
                return None;
            }
            return Some((make(name), 3 + prefix.len() + used + 4));
        }
    }
    for prefix in SCHEMA {
        if rest.starts_with(prefix) {
            let end = memchr::memmem::find(&rest[prefix.len()..], b"\n--\n")?;
            return Some((Marker::Schema, 3 + prefix.len() + end + 4));
        }
    }
    None
}

/// A backquoted identifier as the dump tool writes it in a comment, after the opening
/// backtick: doubled backticks are one, `\n-- ` is a newline. Returns the name and the bytes
/// used, including the closing backtick.
fn parse_comment_ident(buf: &[u8]) -> Option<(String, usize)> {
    let mut name = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'`' if buf.get(i + 1) == Some(&b'`') => {
                name.push(b'`');
                i += 2;
            }
            b'`' => return Some((String::from_utf8_lossy(&name).into_owned(), i + 1)),
            b'\n' if buf[i..].starts_with(b"\n-- ") => {
                name.push(b'\n');
                i += 4;
            }
            b'\n' => return None,
            b => {
                name.push(b);
                i += 1;
            }
        }
    }
    None
}

/// Splits a dump into [`Section`]s. Call [`Splitter::next_section`], then read the section's
/// bytes through `Read` until it returns 0; repeat until `next_section` returns `None`.
pub struct Splitter<R> {
    input: Input<R>,
    /// The section being read, and whether its end was reached.
    current: Option<Section>,
    ended: bool,
    /// The next section, found at the end of the current one, with its marker block.
    next: Option<(Section, Vec<u8>)>,
    /// Bytes to hand out before reading more (a marker block).
    pending: Vec<u8>,
    pending_pos: usize,
    /// Inside a line (passing it through).
    mid_line: bool,
    /// Inside a `DELIMITER ;;` block.
    delimited: bool,
    /// Rows are counted (in a table's data).
    counting: bool,
    rows: RowCounter,
    info: DumpInfo,
    started: bool,
}

impl<R: Read> Splitter<R> {
    pub fn new(r: R) -> Self {
        Splitter {
            input: Input::new(r),
            current: None,
            ended: true,
            next: None,
            pending: Vec::new(),
            pending_pos: 0,
            mid_line: false,
            delimited: false,
            counting: false,
            rows: RowCounter::default(),
            info: DumpInfo::default(),
            started: false,
        }
    }

    /// What the dump's comments said so far.
    pub fn info(&self) -> &DumpInfo {
        &self.info
    }

    /// Rows counted in the current table's data.
    pub fn rows(&self) -> u64 {
        self.rows.rows
    }

    /// The checksum of the current table's data so far: BLAKE3 over its `INSERT` statements
    /// (format-spec/mysql.md, "Table checksums").
    pub fn checksum(&self) -> [u8; 32] {
        *self.rows.hash.finalize().as_bytes()
    }

    /// Move to the next section (skipping what is left of the current one).
    pub fn next_section(&mut self) -> io::Result<Option<Section>> {
        if !self.started {
            self.started = true;
            self.current = Some(Section::Header);
            self.ended = false;
            return Ok(self.current.clone());
        }
        if !self.ended {
            io::copy(self, &mut io::sink())?;
        }
        let Some((section, marker)) = self.next.take() else {
            self.current = None;
            return Ok(None);
        };
        self.current = Some(section.clone());
        self.ended = false;
        self.pending = marker;
        self.pending_pos = 0;
        // A table section that starts at its data (no structure before it) counts at once.
        self.counting = self.pending.starts_with(b"--\n-- Dumping data for table");
        self.rows = RowCounter::default();
        Ok(Some(section))
    }

    /// End the current section; the next one starts with `marker`.
    fn boundary(&mut self, section: Section, marker: Vec<u8>) {
        self.next = Some((section, marker));
        self.ended = true;
    }

    /// Examine a line start; returns bytes to hand out first (a consumed marker block) or
    /// `None` to pass the line through. May end the section.
    fn line_start(&mut self) -> io::Result<Option<Vec<u8>>> {
        let peek = self.input.peek(MARKER_PEEK)?;
        let line_end = memchr::memchr(b'\n', peek).map(|i| i + 1);
        // Marker and comment lines are short; a long line is data and is passed through.
        let line: Vec<u8> = peek[..line_end.unwrap_or(peek.len()).min(256)].to_vec();
        let line = line.as_slice();
        if self.delimited {
            if line == b"DELIMITER ;\n" {
                self.delimited = false;
            }
            return Ok(None);
        }
        if line.starts_with(b"DELIMITER ") && line != b"DELIMITER ;\n" {
            self.delimited = true;
            return Ok(None);
        }
        if line == b"--\n" {
            let peek = self.input.peek(MARKER_PEEK)?;
            if let Some((marker, len)) = parse_marker(peek) {
                let block = peek[..len].to_vec();
                self.input.consume(len);
                match (marker, &self.current) {
                    (Marker::Data(d), Some(Section::Table(t))) if &d == t => {
                        self.counting = true;
                        return Ok(Some(block));
                    }
                    // Data without its structure (--no-create-info): a table section.
                    (Marker::Data(d), _) => self.boundary(Section::Table(d), block),
                    (Marker::Table(t), _) => self.boundary(Section::Table(t), block),
                    (Marker::Database(d), _) => self.boundary(Section::Database(d), block),
                    (Marker::Schema, _) => self.boundary(Section::Schema, block),
                }
                return Ok(Some(Vec::new()));
            }
            return Ok(None);
        }
        if line == TRAILER_START && self.current != Some(Section::Trailer) {
            self.boundary(Section::Trailer, Vec::new());
            return Ok(Some(Vec::new()));
        }
        if let Some(rest) = line.strip_prefix(b"-- CHANGE MASTER TO MASTER_LOG_FILE='") {
            let text = String::from_utf8_lossy(rest);
            if let Some((file, after)) = text.split_once("', MASTER_LOG_POS=") {
                self.info.binlog_file = Some(file.to_string());
                let pos: String = after.chars().take_while(char::is_ascii_digit).collect();
                self.info.binlog_position = pos.parse().ok();
            }
        } else if let Some(rest) = line.strip_prefix(b"-- SET GLOBAL gtid_slave_pos='") {
            let text = String::from_utf8_lossy(rest);
            if let Some((gtid, _)) = text.split_once('\'')
                && !gtid.is_empty()
            {
                self.info.gtid = Some(gtid.to_string());
            }
        } else if line.starts_with(b"-- Dump completed") {
            self.info.completed = true;
        } else if self.counting && line.starts_with(b"INSERT INTO `") {
            self.rows.begin();
        }
        Ok(None)
    }
}

impl<R: Read> Read for Splitter<R> {
    /// Fills `out` with as many whole lines (and pieces of a long one) of the current section
    /// as fit: the chunker reads in large batches, and a line per call would be slow.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            if self.pending_pos < self.pending.len() {
                let k = (out.len() - n).min(self.pending.len() - self.pending_pos);
                out[n..n + k]
                    .copy_from_slice(&self.pending[self.pending_pos..self.pending_pos + k]);
                self.pending_pos += k;
                n += k;
                continue;
            }
            if self.ended {
                break;
            }
            if !self.mid_line {
                let Some(&first) = self.input.peek(1)?.first() else {
                    self.ended = true;
                    break;
                };
                // Only these can start a line that matters (markers, DELIMITER, the trailer,
                // INSERT); rows and the rest of the SQL pass straight through.
                if matches!(first, b'-' | b'D' | b'/' | b'I')
                    && let Some(block) = self.line_start()?
                {
                    self.pending = block;
                    self.pending_pos = 0;
                    continue;
                }
                self.mid_line = true;
            }
            let avail = self.input.available()?;
            if avail.is_empty() {
                self.ended = true;
                break;
            }
            let limit = avail.len().min(out.len() - n);
            let k = match memchr::memchr(b'\n', &avail[..limit]) {
                Some(i) => {
                    self.mid_line = false;
                    i + 1
                }
                None => limit,
            };
            out[n..n + k].copy_from_slice(&avail[..k]);
            self.input.consume(k);
            if self.counting {
                self.rows.feed(&out[n..n + k]);
            }
            n += k;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n\
-- MariaDB dump 10.19\n\
--\n\
-- Host: localhost    Database: app\n\
-- ------------------------------------------------------\n\
/*!40101 SET NAMES utf8mb4 */;\n\
-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000001', MASTER_LOG_POS=3073;\n\
\n\
--\n\
-- Current Database: `app`\n\
--\n\
\n\
CREATE DATABASE `app`;\n\
\n\
USE `app`;\n\
\n\
--\n\
-- Table structure for table `new\n\
-- l``ine`\n\
--\n\
\n\
CREATE TABLE `new\nl``ine` (a int);\n\
\n\
--\n\
-- Dumping data for table `new\n\
-- l``ine`\n\
--\n\
\n\
INSERT INTO `new\nl``ine` VALUES\n\
(1,'a;(b'),\n\
(2,'it\\'s ) ('),\n\
(3,NULL);\n\
INSERT INTO `new\nl``ine` VALUES (4,\"x\"),(5,0x00);\n\
DELIMITER ;;\n\
--\n\
-- Table structure for table `fake`\n\
--\n\
DELIMITER ;\n\
\n\
--\n\
-- Dumping routines for database 'app'\n\
--\n\
CREATE PROCEDURE p() SELECT 1;\n\
-- SET GLOBAL gtid_slave_pos='0-1-15';\n\
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n\
\n\
-- Dump completed\n";

    type Split = (Vec<(Section, Vec<u8>, u64, [u8; 32])>, DumpInfo);

    fn split(data: &[u8], read_size: usize) -> Split {
        /// Hands out at most `n` bytes per read, to exercise buffer edges.
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut s = Splitter::new(Trickle(data, read_size));
        let mut out = Vec::new();
        while let Some(sec) = s.next_section().unwrap() {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 7];
            loop {
                let n = s.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            out.push((sec, buf, s.rows(), s.checksum()));
        }
        (out, s.info().clone())
    }

    #[test]
    fn sections_rows_and_info() {
        for read_size in [1, 3, 64, 1 << 20] {
            let (secs, info) = split(DUMP.as_bytes(), read_size);
            let kinds: Vec<&Section> = secs.iter().map(|s| &s.0).collect();
            assert_eq!(
                kinds,
                [
                    &Section::Header,
                    &Section::Database("app".into()),
                    &Section::Table("new\nl`ine".into()),
                    &Section::Schema,
                    &Section::Trailer
                ]
            );
            // Nothing lost or reordered.
            let all: Vec<u8> = secs.iter().flat_map(|s| s.1.clone()).collect();
            assert_eq!(String::from_utf8(all).unwrap(), DUMP);
            let table = String::from_utf8(secs[2].1.clone()).unwrap();
            assert!(table.starts_with("--\n-- Table structure for table `new\n-- l``ine`"));
            assert!(table.contains("-- Table structure for table `fake`"));
            assert!(table.ends_with("DELIMITER ;\n\n"));
            assert_eq!(secs[2].2, 5, "rows");
            // The statements, each to its `;` and a newline (the DELIMITER block after
            // them is not data).
            let inserts = "INSERT INTO `new\nl``ine` VALUES\n(1,'a;(b'),\n(2,'it\\'s ) ('),\n(3,NULL);\n\
                           INSERT INTO `new\nl``ine` VALUES (4,\"x\"),(5,0x00);\n";
            assert_eq!(secs[2].3, *blake3::hash(inserts.as_bytes()).as_bytes());
            assert!(secs[4].1.starts_with(TRAILER_START));
            assert_eq!(info.binlog_file.as_deref(), Some("binlog.000001"));
            assert_eq!(info.binlog_position, Some(3073));
            assert_eq!(info.gtid.as_deref(), Some("0-1-15"));
            assert!(info.completed);
        }
    }

    #[test]
    fn truncated_dump_is_not_completed() {
        let cut = &DUMP.as_bytes()[..DUMP.len() / 2];
        let (secs, info) = split(cut, 5);
        assert!(!info.completed);
        let all: Vec<u8> = secs.iter().flat_map(|s| s.1.clone()).collect();
        assert_eq!(all, cut);
    }

    #[test]
    fn markers_need_their_closing_line() {
        assert_eq!(
            parse_marker(b"--\n-- Table structure for table `a``b`\n--\n"),
            Some((Marker::Table("a`b".into()), 42))
        );
        assert_eq!(
            parse_marker(b"--\n-- Table structure for table `ab`\nx\n"),
            None
        );
        assert_eq!(parse_marker(b"--\n-- Table structure for table `ab"), None);
        assert_eq!(parse_marker(b"--\n-- Something else\n--\n"), None);
    }

    #[test]
    fn long_lines_stream_through() {
        let mut dump = String::from("--\n-- Current Database: `d`\n--\n");
        dump.push_str("--\n-- Table structure for table `t`\n--\n");
        dump.push_str("--\n-- Dumping data for table `t`\n--\n");
        dump.push_str("INSERT INTO `t` VALUES (1,'");
        dump.push_str(&"x".repeat(3 << 20));
        dump.push_str("'),(2,'');\n");
        let (secs, _) = split(dump.as_bytes(), 1 << 16);
        assert_eq!(secs[2].0, Section::Table("t".into()));
        assert_eq!(secs[2].2, 2);
        assert_eq!(
            secs[0].1.len() + secs[1].1.len() + secs[2].1.len(),
            dump.len()
        );
    }
}

#[cfg(test)]
mod checksum_vector {
    use super::*;

    /// The test vector of format-spec/mysql.md, "Table checksums".
    const VECTOR_DUMP: &str = "--\n\
-- Current Database: `shop`\n\
--\n\
\n\
--\n\
-- Table structure for table `orders`\n\
--\n\
\n\
CREATE TABLE `orders` (`id` int NOT NULL, `item` varchar(20), PRIMARY KEY (`id`));\n\
\n\
--\n\
-- Dumping data for table `orders`\n\
--\n\
\n\
LOCK TABLES `orders` WRITE;\n\
INSERT INTO `orders` VALUES (1,'tea'),(2,'it\\'s; (cake)');\n\
INSERT INTO `orders` VALUES (3,NULL);\n\
UNLOCK TABLES;\n";

    const VECTOR_HEX: &str = "c760f6b48c5aaea2431c4dce6891f790f54f91b1cb7d5f445d97528763971a08";

    #[test]
    fn the_spec_vector() {
        let mut s = Splitter::new(VECTOR_DUMP.as_bytes());
        let mut found = None;
        while let Some(sec) = s.next_section().unwrap() {
            io::copy(&mut s, &mut io::sink()).unwrap();
            if sec == Section::Table("orders".into()) {
                found = Some((s.rows(), hex::encode(s.checksum())));
            }
        }
        let (rows, sum) = found.expect("the table's section");
        assert_eq!(rows, 3);
        // Computed independently: the two statements, each with its newline.
        let statements = "INSERT INTO `orders` VALUES (1,'tea'),(2,'it\\'s; (cake)');\n\
                          INSERT INTO `orders` VALUES (3,NULL);\n";
        assert_eq!(sum, blake3::hash(statements.as_bytes()).to_hex().as_str());
        assert_eq!(sum, VECTOR_HEX);
    }
}
